"""What scripts and a first run rely on (issue 11): JSON even when a job fails, a closed pipe
that is not a failed job, stdin left to a `while read` loop, waits that say why they may never
end and cost what changes (not what is queued), help with no arguments, options before the
command, shell completion with values, Go durations and clock times, and a mistyped
--data-dir that is an error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ollama_cli import follow
from ollama_cli.jobs import JobSpec, JobType
from ollama_cli.store.base import Engine
from ollama_cli.timefmt import parse_duration, parse_time
from tests.emulator import Emulator
from tests.helpers.cli import assert_one_error, cli_env, ok_json, run_cli, run_main

ROOT = Path(__file__).resolve().parent.parent


def spec(prompt: str = "hi", **fields: Any) -> JobSpec:
    return JobSpec(model="m", type=JobType.GENERATE, request={"prompt": prompt}, **fields)


# ------------------------------------------------------------- --json when a job fails (item 8)


def test_a_failed_wait_still_prints_the_result_object(data_dir: Path, emulator: Emulator, start_daemon: Any) -> None:
    start_daemon(emulator.url)
    res = run_cli(data_dir, "submit", "no-such-model", "hi", "--wait", "--json")
    line = assert_one_error(res, 1, stdout_empty=False)
    out = json.loads(res.stdout)
    assert out["id"] == 1 and out["status"] == "failed" and out["response"] is None
    assert out["error"]["type"] == "model_not_found" and "model_not_found" in line


def test_result_json_of_a_pending_or_cancelled_job_says_its_status(data_dir: Path) -> None:
    ok_json(run_main("submit", "m", "hi", "--json"))
    res = run_main("result", "1", "--json")
    assert_one_error(res, 1, stdout_empty=False)
    assert json.loads(res.stdout)["status"] == "pending"
    run_main("cancel", "1")
    out = json.loads(run_main("result", "1", "--json").stdout)
    assert out["status"] == "cancelled" and out["error"]["type"] == "cancelled"


# ------------------------------------------------------------------- a closed pipe (item 9)


def closed_early(data_dir: Path, *args: str) -> int:
    """The exit status of the CLI when its reader takes 10 bytes and goes away (`| head -c 10`)."""
    proc = subprocess.Popen([sys.executable, "-m", "ollama_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=cli_env(data_dir))
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) is not None
    assert err == b"", err  # no traceback, no error line: the reader chose to stop
    return proc.returncode


def test_a_reader_that_goes_away_is_exit_141_not_a_failed_job(store: Engine, data_dir: Path) -> None:
    # Enough output that it cannot all sit in the pipe before the reader leaves.
    store.submit_batch([spec(f"prompt {i}", custom_id=f"c{i}") for i in range(3000)], 0.0, name="B")
    store.close()
    assert closed_early(data_dir, "batch", "results", "B") == 141  # many writes
    assert closed_early(data_dir, "list", "--json") == 141  # one large write


# ------------------------------------------------------------- stdin and `while read` (item 12)


@pytest.mark.parametrize("submit", [
    'submit m -t chat -m "user:$c"',
    'submit m -t embed --input "$c"',
])
def test_a_submit_in_a_while_read_loop_leaves_the_loop_its_lines(data_dir: Path, submit: str) -> None:
    script = f'printf "a\\nb\\nc\\n" | while read c; do "$PY" -m ollama_cli {submit} >/dev/null || exit 9; done'
    proc = subprocess.run(["bash", "-c", script], env=cli_env(data_dir, PY=sys.executable), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert ok_json(run_main("info", "--json"))["jobs"]["total"] == 3


def test_a_dash_still_reads_stdin_beside_messages(data_dir: Path) -> None:
    ok_json(run_main("submit", "m", "-", "-t", "chat", "-m", "system:be brief", "--json", input="from stdin"))
    from ollama_cli.store import open_store

    with open_store(data_dir) as store:
        assert store.get_request(1)["messages"][-1] == {"role": "user", "content": "from stdin"}


# --------------------------------------------------- waits: what they say, what they cost (7, 11)


def test_a_wait_says_once_that_no_daemon_runs_and_that_the_queue_is_paused(data_dir: Path) -> None:
    ok_json(run_main("submit", "m", "hi", "--json"))
    run_main("pause")
    res = run_main("wait", "1", "--timeout", "300ms")
    assert res.returncode == 1
    assert [line.split(":")[0] for line in res.stderr.splitlines()] == ["warning", "warning", "error"]
    assert "paused" in res.stderr and "no daemon is running" in res.stderr


def test_a_wait_for_finished_jobs_says_nothing(data_dir: Path) -> None:
    ok_json(run_main("submit", "m", "hi", "--json"))
    run_main("cancel", "1")
    res = run_main("wait", "1", "--json")
    assert res.returncode == 1 and res.stderr == ""  # cancelled: not completed, but nothing to wait for


def test_submit_wait_timeout_bounds_the_wait_not_the_attempt(data_dir: Path) -> None:
    res = run_main("submit", "m", "hi", "--wait-timeout", "200ms", "--json")
    assert res.returncode == 1 and res.stderr.splitlines()[-1] == "error: job 1 is still pending after the timeout"
    assert json.loads(res.stdout)["status"] == "pending"
    from ollama_cli.store import open_store

    with open_store(data_dir) as store:
        job = store.get_job(1)
        assert job is not None and job.timeout is None  # the attempt keeps no limit


class Scripted:
    """A notifier that, instead of sleeping, runs the next step of a script, and keeps how
    many job records each poll read and how long it would have paused."""

    def __init__(self, store: Engine, steps: list[Any]) -> None:
        self.steps = iter(steps)
        self.reads: list[int] = [0]
        self.pauses: list[float] = []
        real = store.get_jobs

        def counting(ids: Any) -> Any:
            ids = list(ids)
            self.reads[-1] += len(ids)
            return real(ids)

        store.get_jobs = counting  # type: ignore[method-assign]

    def wait(self, timeout: float) -> None:
        self.pauses.append(timeout)
        next(self.steps)()
        self.reads.append(0)


def test_wait_at_50000_jobs_reads_what_changed_not_the_queue(store: Engine) -> None:
    ids = [job.id for job in store.submit_many([spec(str(i)) for i in range(50_000)], 0.0)]
    cancel = lambda chosen: lambda: store.cancel(chosen, 1.0)  # noqa: E731
    idle = lambda: None  # noqa: E731
    script = Scripted(store, [idle] * 5 + [cancel(ids[:1000]), idle, cancel(ids[1000:])])
    store.notifier = script  # type: ignore[misc]

    jobs, done = follow.wait_for(store, ids)

    assert done and len(jobs) == 50_000 and all(j.status.value == "cancelled" for j in jobs)
    first, polls = script.reads[0], script.reads[1:]
    assert first == 50_000  # each job once, to begin
    idle_polls = polls[:5] + polls[6:7]
    assert max(idle_polls) <= 2 * follow.CHUNK  # not 50,000 a poll, taking a core from the daemon
    assert polls[5] <= 1000 + 3 * follow.CHUNK  # what finished, and a little more
    assert sum(script.reads) <= 2 * 50_000 + 2 * follow.CHUNK * len(polls)  # each job about twice in all
    # While nothing changes, it waits longer each time; a change brings it back.
    assert script.pauses[:5] == [0.1, 0.2, 0.4, 0.5, 0.5] and script.pauses[6] == follow.POLL


def test_wait_finds_a_job_that_finished_out_of_order(store: Engine) -> None:
    ids = [job.id for job in store.submit_many([spec(str(i)) for i in range(2000)], 0.0)]
    store.cancel([ids[1500]], 1.0)  # far from the front: the roaming chunk finds it
    steps = [lambda: None] * 20 + [lambda: store.cancel(ids, 1.0)]
    script = Scripted(store, steps)
    store.notifier = script  # type: ignore[misc]
    seen: list[int] = []
    follow.wait_for(store, ids, on_progress=lambda done, total: seen.append(done))
    assert 1 in seen[:10] and seen[-1] == 2000


# ------------------------------------------------------------------------ the first run (14, 19)


def test_no_arguments_print_the_help_and_exit_0(data_dir: Path) -> None:
    for args in ([], ["batch"], ["cache"]):
        res = run_main(*args)
        assert res.returncode == 0 and res.stdout.startswith("Usage: ollama-q") and "Commands:" in res.stdout
        assert res.stderr == ""


def test_data_dir_and_json_before_the_command(tmp_path: Path) -> None:
    where = str(tmp_path / "elsewhere")
    submitted = ok_json(run_main("--data-dir", where, "--json", "submit", "m", "hi"))
    assert submitted["id"] == 1
    assert [j["id"] for j in ok_json(run_main("--json", "--data-dir", where, "list"))] == [1]
    assert ok_json(run_main("--data-dir", where, "batch", "submit", "-", "--json",
                            input='{"model": "m", "prompt": "x"}\n'))["jobs"] == 1
    # After the name, as before; there it wins.
    assert ok_json(run_main("--data-dir", str(tmp_path / "nowhere"), "list", "--data-dir", where, "--json"))


def test_a_read_only_command_with_a_mistyped_data_dir_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "stroe"
    for args in (["list"], ["info", "--json"], ["status", "1"], ["wait", "--all"], ["batch", "status", "B"]):
        line = assert_one_error(run_main(*args, "--data-dir", str(typo)), 1)
        assert line == f"error: no store in {typo} (nothing was ever submitted there: is the data dir right?)"
    assert not typo.exists()


# ---------------------------------------------------------------------- help and names (item 6)


def test_list_finds_jobs_by_name(data_dir: Path) -> None:
    for name in ("nightly", "other", "nightly"):
        ok_json(run_main("submit", "m", "hi", "--name", name, "--json"))
    ok_json(run_main("submit", "m", "hi", "--json"))
    assert [j["id"] for j in ok_json(run_main("list", "--name", "nightly", "--json"))] == [3, 1]
    assert ok_json(run_main("list", "--name", "none", "--json")) == []


def test_help_says_what_the_options_take() -> None:
    submit = run_main("submit", "--help").stdout
    assert "--messages FILE" in submit and "list --name finds it" in submit and "--wait-timeout" in submit
    assert "JSON lines on stderr" in run_main("daemon", "--help").stdout


# -------------------------------------------------------------------- completion (item 13)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_shipped_script(shell: str) -> None:
    res = run_main("completion", shell)
    assert res.returncode == 0
    assert res.stdout == (ROOT / "completions" / f"ollama-q.{shell}").read_text()


@pytest.mark.parametrize(("words", "expected"), [
    ("ollama-q submit m -p ", ["urgent", "high", "medium", "low"]),
    ("ollama-q submit m --type ", ["generate", "chat", "embed"]),
    ("ollama-q list -t ", ["generate", "chat", "embed"]),
    ("ollama-q list --status ", ["pending", "running", "completed", "failed", "cancelled"]),
    ("ollama-q clean --status ", ["pending", "running", "completed", "failed", "cancelled"]),
    ("ollama-q batch submit f.jsonl -p ", ["urgent", "high", "medium", "low"]),
    ("ollama-q completion ", ["bash", "zsh", "fish"]),
    ("ollama-q --data-dir /x li", ["list"]),
])
def test_completion_offers_the_values_of_choices(words: str, expected: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_OLLAMA_Q", "_TYPER"))}
    env.update(COMP_WORDS=words, COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)),
               _OLLAMA_Q_COMPLETE="complete_bash")
    proc = subprocess.run([sys.executable, "-m", "ollama_cli"], capture_output=True, text=True, env=env,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.stdout.split() == expected, proc.stderr


def test_choices_take_any_case_and_refuse_others_with_one_line(data_dir: Path) -> None:
    assert ok_json(run_main("submit", "m", "hi", "-p", "HIGH", "-t", "Generate", "--json"))["id"] == 1
    assert_one_error(run_main("submit", "m", "hi", "-p", "critical"), 2)
    assert_one_error(run_main("list", "--status", "lost"), 2)


# ------------------------------------------------------------------ durations and times (item 15)


@pytest.mark.parametrize(("text", "seconds"), [
    ("1h30m", 5400.0), ("1.5h", 5400.0), ("2h45m30s", 9930.0), ("1m30.5s", 90.5), ("1d12h", 129600.0),
    ("300ms", 0.3), ("1500us", 0.0015), ("90", 90.0), ("10m", 600.0), (" 2h ", 7200.0), (".5s", 0.5),
])
def test_durations_as_go_writes_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1h30", "h", "1x", "", "-1s", "1h-30m", "1e3s", "m1"])
def test_durations_refused(text: str) -> None:
    with pytest.raises(Exception, match="invalid duration"):
        parse_duration(text)


def test_every_duration_option_takes_a_go_duration(data_dir: Path) -> None:
    ok_json(run_main("submit", "m", "hi", "--delay", "1h30m", "--keep-alive", "2h45m", "--timeout", "1m30s",
                     "--json"))
    from ollama_cli.store import open_store

    with open_store(data_dir) as store:
        job = store.get_job(1)
        assert job is not None and job.keep_alive == 9900.0 and job.timeout == 90.0
        assert job.run_at is not None and job.run_at - job.created_at == pytest.approx(5400.0, abs=0.01)
    assert run_main("clean", "--older-than", "1h30m").returncode == 0
    assert ok_json(run_main("submit", "m", "x", "--keep-alive", "-1h30m", "--json"))["id"] == 2


@pytest.fixture
def utc_plus_3() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "XYZ-3")
        time.tzset()
        yield
    time.tzset()


def local(*fields: int) -> float:
    return time.mktime((*fields, 0, 0, -1))  # type: ignore[arg-type]


def test_at_a_clock_time_is_the_next_one_today_or_tomorrow(utc_plus_3: None) -> None:
    morning = local(2026, 11, 24, 1, 0, 0)
    assert parse_time("03:00", morning) == local(2026, 11, 24, 3, 0, 0)  # today, still ahead
    evening = local(2026, 11, 24, 22, 15, 0)
    assert parse_time("03:00", evening) == local(2026, 11, 25, 3, 0, 0)  # tomorrow
    assert parse_time("22:15", evening) == local(2026, 11, 25, 22, 15, 0)  # now is not ahead
    assert parse_time("22:15:30", evening) == local(2026, 11, 24, 22, 15, 30)
    for bad in ("24:00", "3:60", "03:00:61"):
        with pytest.raises(Exception, match="invalid time"):
            parse_time(bad, evening)


def test_submit_at_a_clock_time_says_when(data_dir: Path) -> None:
    res = run_main("submit", "m", "hi", "--at", "03:00")
    assert res.returncode == 0 and "held until " in res.stdout


def python310() -> str | None:
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.10*/bin/python"))  # pyenv's shims may refuse
    found = shutil.which("python3.10")
    return str(pyenv[-1]) if pyenv else found if found and "shims" not in found else None


@pytest.mark.skipif(python310() is None, reason="no Python 3.10 on this machine")
def test_fractions_of_any_length_on_python_310() -> None:
    # 3.10's fromisoformat takes 3 or 6 digits only; RFC 3339 allows any number.
    code = ("from ollama_cli.timefmt import parse_time; "
            "print(parse_time('2026-11-24T03:00:00.5Z', 0.0), parse_time('2026-11-24T03:00:00.1234567+00:00', 0.0))")
    proc = subprocess.run([python310(), "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert [float(x) for x in proc.stdout.split()] == [1795489200.5, pytest.approx(1795489200.123456)]


def test_batch_wait_says_too_that_no_daemon_runs(data_dir: Path) -> None:
    ok_json(run_main("batch", "submit", "-", "--name", "B", "--json", input='{"model": "m", "prompt": "x"}\n'))
    res = run_main("batch", "wait", "B", "--timeout", "200ms", "--json")
    assert res.returncode == 1 and res.stderr.startswith("warning: no daemon is running")
