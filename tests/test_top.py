"""`top`: one frame (`--once`, and whenever stdout is no terminal) read from a store built with
known jobs and what a living daemon reported, at a fixed width, on both engines; the
throughput and ETA it derives; the terminal restored however the live view ends."""

from __future__ import annotations

import io
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_cli.insight.live import throughput
from ollama_cli.jobs import Priority
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from ollama_cli.store.records import BackendState, DaemonInfo, Placement, Plan, RunProgress
from tests.helpers.cli import assert_one_error, run_cli, run_main
from tests.helpers.jobs import make_spec

WIDTH = 100


@pytest.fixture(params=["lmdb", "postgresql"])
def store(request: pytest.FixtureRequest, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The test's store, which `top` opens too (in a process of its own: LMDB opens a store once
    per process)."""
    location: str | Path = data_dir
    if request.param == "postgresql":
        location = request.getfixturevalue("pg_store_url")
        monkeypatch.setenv("OLLAMA_Q_STORE", str(location))
    with open_store(location) as engine:
        yield engine


def top(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(Path(os.environ["OLLAMA_Q_DATA_DIR"]), "top", *args, COLUMNS=str(WIDTH))


def claim_one(store: Engine, owner: str, host: str, now: float) -> int:
    """The next ready job, started on `host` by `owner`; its id."""
    def plan(ready, request_of):  # type: ignore[no-untyped-def]
        job = next(iter(ready))
        return Plan([Placement(0, host, (job,))])

    [(_, [c])] = store.settle_and_claim([], now, owner=owner, planner=plan).claimed
    return c.job.id


def test_once_shows_counts_throughput_running_jobs_queue_and_backends(store: Engine) -> None:
    now = store.now()
    lock = store.daemon_lock()
    store.register(DaemonInfo(lock.id, os.getpid(), ["http://gpu-1:11434"], 2, now, now))
    for _ in range(2):
        store.submit(make_spec(model="qwen3:8b", priority=Priority.HIGH), now)
    finished = store.submit(make_spec(model="llama3.2"), now).id
    for _ in range(3):
        store.submit(make_spec(model="llama3.2"), now)
    store.submit(make_spec(model="phi4", priority=Priority.LOW), now)
    first = claim_one(store, lock.id, "http://gpu-1:11434", now - 100)  # started 100 s ago
    second = claim_one(store, lock.id, "http://gpu-1:11434", now - 100)
    store.cancel([finished], now - 20)  # one finished lately: a rate, and an ETA
    store.record_backends(lock.id, [
        BackendState("http://gpu-1:11434", "", True, ("qwen3:8b", "llama3.2:latest"), ("qwen3:8b",), 2, 2, 0.0),
        BackendState("http://gpu-2:11434", "", False, None, (), 2, 0, 0.0)], now)
    store.record_progress(lock.id, [RunProgress(first, "", 500, now - 100, 0.0)], now)

    res = top("--once")
    assert res.returncode == 0 and res.stderr == ""
    out = res.stdout
    assert max(len(line) for line in out.splitlines()) <= WIDTH
    assert "queue taking jobs  1 daemon" in out
    assert "jobs  pending 4  running 2  completed 0  failed 0  cancelled 1" in out
    assert re.search(r"finished  [\d.]+/min \(last 5 min\)  1 in the last hour  ETA of the queue \d", out)
    assert re.search(rf"^ *{first}  qwen3:8b  http://gpu-1:11434 +1m4\ds +500 +5\.0$", out, re.MULTILINE)
    assert re.search(rf"^ *{second}  qwen3:8b  http://gpu-1:11434 +1m4\ds +— +—$", out, re.MULTILINE)
    assert re.search(r"^medium +llama3\.2:latest +3$", out, re.MULTILINE)
    assert re.search(r"^low +phi4:latest +1$", out, re.MULTILINE)
    assert "qwen3:8b" not in out.split("ready per priority and model")[1].split("backends")[0]  # all running
    assert re.search(r"^http://gpu-1:11434 +up +2/2 +qwen3:8b +2$", out, re.MULTILINE)
    assert re.search(r"^http://gpu-2:11434 +down +0/2 +— +\?$", out, re.MULTILINE)

    lock.release()  # the daemon dies: what it reported goes from the view
    out = top("--once").stdout
    assert "no daemon" in out and "no backend reported" in out
    assert re.search(rf"^ *{first}  qwen3:8b  http://gpu-1:11434 +1m4\ds +— +—$", out, re.MULTILINE)


def test_an_empty_paused_store_says_so_and_no_throughput_is_a_dash(store: Engine) -> None:
    store.submit(make_spec(), store.now())
    store.pause()
    out = top().stdout  # stdout is no terminal: one frame, as with --once
    assert "queue paused  no daemon" in out
    assert "finished  — (last 5 min)  0 in the last hour  ETA of the queue —" in out
    assert "running 0  no job running" in out
    store.cancel([1], store.now())
    assert re.search(r"finished  [\d.]+/min \(last 5 min\)  1 in the last hour  ETA of the queue none pending$",
                     top().stdout, re.MULTILINE)


@pytest.mark.parametrize("args, message", [
    (["--json"], "--json"),  # top has no JSON form: no such option
    (["--interval", "0"], "--interval"),
    (["--interval", "nan"], "--interval"),
    (["-d", "61"], "--interval"),
])
def test_bad_options_are_one_error_line_and_exit_2(args: list[str], message: str) -> None:
    assert message in assert_one_error(run_main("top", *args), 2)


def test_json_before_the_command_is_refused_too() -> None:
    assert "no JSON form" in assert_one_error(run_main("--json", "top", "--once"), 2)


def test_throughput_counts_from_the_first_recent_minute_with_finishes() -> None:
    quiet = [0] * 60
    assert throughput(quiet, 600.0) is None
    assert throughput(quiet[:-1] + [30], 630.0) == 60.0  # 30 in the 30 s of this minute
    assert throughput(quiet[:-1] + [1], 601.0) == 6.0  # a second is not a rate: ten at least
    assert throughput(quiet[:-3] + [10, 0, 20], 630.0) == 30 * 60 / 150  # two minutes and a half
    assert throughput([5] * 60, 630.0) == 30 * 60 / 330  # only the last five minutes and this one count


def _live_top(data_dir: Path) -> tuple[subprocess.Popen[bytes], int, int, list]:
    """`top` live on a pseudo-terminal, once it has drawn its first frame: the process, the
    terminal's master end (what the screen shows comes out there), its slave end, and the
    terminal's settings before `top` started."""
    import pty
    import select
    import sys
    import termios

    from tests.helpers.cli import cli_env

    master, slave = pty.openpty()
    original = termios.tcgetattr(slave)
    proc = subprocess.Popen([sys.executable, "-m", "ollama_cli", "top", "--interval", "0.1"], stdin=slave,
                            stdout=slave, stderr=slave, env=cli_env(data_dir, COLUMNS=str(WIDTH), LINES="40"))
    seen = b""
    while b"ollama-q top" not in seen:  # the first frame, on the alternate screen
        ready, _, _ = select.select([master], [], [], 30)
        assert ready, seen
        seen += os.read(master, 65536)
    return proc, master, slave, original


def _settled(proc: subprocess.Popen[bytes], master: int) -> int:
    """The exit code, reading what the screen gets meanwhile (a full pty would stop it)."""
    import select

    while proc.poll() is None:
        if select.select([master], [], [], 0.1)[0]:
            try:
                os.read(master, 65536)
            except OSError:
                break
    return proc.wait(timeout=30)


@pytest.mark.parametrize("how", ["q", "ctrl-c"])
def test_the_live_view_quits_on_q_or_ctrl_c_with_the_terminal_as_it_was(data_dir: Path, how: str) -> None:
    import signal
    import termios

    with open_store(data_dir) as engine:
        engine.submit(make_spec(), engine.now())
    proc, master, slave, original = _live_top(data_dir)
    try:
        assert not termios.tcgetattr(slave)[3] & termios.ICANON  # keys one at a time while it runs
        if how == "q":
            os.write(master, b"x")  # other keys do nothing
            os.write(master, b"q")
        else:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends the foreground process
        assert _settled(proc, master) == 0
        assert termios.tcgetattr(slave) == original
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)


def test_while_the_store_cannot_be_reached_the_last_frame_stays_marked_stale() -> None:
    from rich.console import Console

    from ollama_cli.cli.top import frame_or_stale
    from ollama_cli.errors import StoreUnavailable

    def unreachable() -> str:
        raise StoreUnavailable("lost the connection to the store at postgresql://db")

    shown, last = frame_or_stale(unreachable, "the frame before")
    console = Console(file=io.StringIO(), width=WIDTH)
    console.print(shown)
    assert console.file.getvalue().splitlines() == [
        "stale: lost the connection to the store at postgresql://db; trying again", "the frame before"]
    assert last == "the frame before"
    assert frame_or_stale(lambda: "a new frame", last) == ("a new frame", "a new frame")
