"""Reading the queue as people and scripts do (issue 11): `list` at 80 columns and at 50,000
jobs, id-only output, several ids at once, what a job was asked, reruns, batches listed and
cancelled, every backend's models, one clock for people. The real CLI in this process
(`main(argv)`) over a real store; subprocesses where a pipe matters."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_cli.jobs import JobSpec, JobType, Priority
from ollama_cli.store import open_store
from tests.helpers.cli import assert_one_error, cli_env, ok_json, run_main

LONG_MODEL = "hf.co/bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M"


@pytest.fixture
def columns(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set the terminal width the table is made for (rich reads COLUMNS)."""
    def set_to(value: str) -> None:
        monkeypatch.setenv("COLUMNS", value)

    yield set_to


def queue(data_dir: Path, *specs: JobSpec, cancel: tuple[int, ...] = ()) -> None:
    """Jobs in the store, written through the engine; the store is closed again for the CLI."""
    with open_store(data_dir) as store:
        store.submit_many(list(specs), 1_000_000.0)
        if cancel:
            store.cancel(list(cancel), 1_000_001.0)


def job(model: str = "llama3.2", prompt: str = "hi", **kw: Any) -> JobSpec:
    return JobSpec(model=model, type=JobType.GENERATE, request={"prompt": prompt}, use_cache=False, **kw)


def lines(text: str) -> list[str]:
    return text.splitlines()


# ---------------------------------------------------------------------------- list: the table


@pytest.mark.parametrize("width", ["80", ""], ids=["COLUMNS=80", "pipe"])
def test_list_at_80_columns_keeps_id_and_status_whole(data_dir: Path, columns: Any, width: str) -> None:
    # A pipe without COLUMNS is 80 columns too: `ollama-q list | awk '{print $1}'` prints ids.
    queue(data_dir, job(LONG_MODEL, name="the nightly summary of everything"), job(),
          job(LONG_MODEL, name="x" * 60), cancel=(3,))
    columns(width)
    res = run_main("list")
    assert res.returncode == 0, res.stderr
    header, *rows = lines(res.stdout)
    assert header.split()[:2] == ["ID", "STATUS"]
    assert [r.split()[:2] for r in rows] == [["3", "cancelled"], ["2", "pending"], ["1", "pending"]]
    assert all(len(line) <= 80 for line in lines(res.stdout)), res.stdout
    assert "hf.co/" in rows[0] and "…" in rows[0]  # the model, shortened
    assert "the nightly" in rows[2]  # and the name
    assert "cancelled: " in rows[0] or "cancel" in rows[0]  # the error, shortened


def test_list_drops_optional_columns_before_it_cuts_id_or_status(data_dir: Path, columns: Any) -> None:
    queue(data_dir, job(LONG_MODEL, name="n" * 40, priority=Priority.URGENT))
    columns("30")
    header, row = lines(run_main("list").stdout)
    assert header.split() == ["ID", "STATUS", "MODEL"]
    assert row.split()[:2] == ["1", "pending"] and row.endswith("…")
    columns("200")  # room for everything: nothing shortened or left out
    header, row = lines(run_main("list").stdout)
    assert header.split() == ["ID", "STATUS", "PRIORITY", "TYPE", "MODEL", "NAME", "POS", "TRIES", "AGE"]
    assert LONG_MODEL in row and "n" * 40 in row and "…" not in row


def test_a_piped_list_prints_ids_through_awk(data_dir: Path) -> None:
    queue(data_dir, job(LONG_MODEL, name="a name with spaces"), job())
    out = subprocess.run(f"{sys.executable} -m ollama_cli list | awk '{{print $1}}'", shell=True,
                         capture_output=True, text=True, env=cli_env(data_dir, COLUMNS=""), timeout=60)
    assert out.stdout.split() == ["ID", "2", "1"], out


def test_list_shows_50_rows_and_says_how_many_more(data_dir: Path, columns: Any) -> None:
    queue(data_dir, *(job(prompt=str(i)) for i in range(60)), cancel=(1, 2))
    columns("100")
    res = run_main("list")
    assert len(lines(res.stdout)) == 1 + 50
    assert lines(res.stdout)[1].split()[0] == "60"
    assert res.stderr == "… 10 more; --limit 0 for all\n"
    res = run_main("list", "--limit", "0")
    assert len(lines(res.stdout)) == 1 + 60 and res.stderr == ""
    res = run_main("list", "--status", "pending", "--offset", "5")
    assert lines(res.stdout)[1].split()[0] == "55" and res.stderr == "… 3 more; --limit 0 for all\n"
    res = run_main("list", "--model", "llama3.2")  # no counter for a model: only that there are more
    assert len(lines(res.stdout)) == 1 + 50 and res.stderr == "… more; --limit 0 for all\n"
    res = run_main("list", "--limit", "20")  # a limit asked for is told the same
    assert len(lines(res.stdout)) == 1 + 20 and res.stderr == "… 40 more; --limit 0 for all\n"
    assert len(ok_json(run_main("list", "--json"))) == 60  # scripts get every job, as before
    assert len(ok_json(run_main("list", "--json", "--limit", "0"))) == 60


def test_list_prints_its_first_rows_before_it_reads_the_last(
        data_dir: Path, columns: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from ollama_cli.store.lmdb_engine import LmdbEngine

    queue(data_dir, *(job(prompt=str(i)) for i in range(2000)))
    read: list[int] = []
    list_jobs = LmdbEngine.list_jobs

    def counting(self: LmdbEngine, **kw: Any) -> Any:
        jobs, corrupt = list_jobs(self, **kw)
        read.append(len(jobs))
        return jobs, corrupt

    monkeypatch.setattr(LmdbEngine, "list_jobs", counting)

    class FirstWrite:
        """stdout that notes how many jobs had been read when the first row came."""

        def __init__(self) -> None:
            self.text, self.read_then = "", None

        def write(self, s: str) -> int:
            if self.read_then is None and "pending" in s:
                self.read_then = sum(read)
            self.text += s
            return len(s)

        def flush(self) -> None:
            pass

    out = FirstWrite()
    monkeypatch.setattr(sys, "stdout", out)
    columns("100")
    from ollama_cli.cli import main

    with pytest.raises(SystemExit):
        main(["list", "--limit", "0"])
    monkeypatch.undo()
    assert len(lines(out.text)) == 1 + 2000
    assert out.read_then is not None and out.read_then <= 400
    assert len(read) <= 6  # pages that grow: a few reads, not one per 100 rows


def test_list_by_model_takes_the_name_as_ollama_does(data_dir: Path) -> None:
    queue(data_dir, job("llama3.2"), job("llama3.2:latest"), job("llama3.2:1b"), job(LONG_MODEL))
    for name in ("llama3.2", "llama3.2:latest", "LLAMA3.2", "Llama3.2:Latest"):
        assert [r["id"] for r in ok_json(run_main("list", "--model", name, "--json"))] == [2, 1], name
    assert [r["id"] for r in ok_json(run_main("list", "--model", LONG_MODEL.lower(), "--json"))] == [4]
    assert "invalid model name" in assert_one_error(run_main("list", "--model", "no such model"), 2)


# ------------------------------------------------------------------------------ list -q


def test_list_quiet_prints_every_matching_id(data_dir: Path) -> None:
    queue(data_dir, *(job(prompt=str(i)) for i in range(120)), cancel=(7, 8))
    res = run_main("list", "-q")
    assert res.stdout == "".join(f"{i}\n" for i in range(120, 0, -1)) and res.stderr == ""
    assert run_main("list", "--quiet", "--status", "cancelled").stdout == "8\n7\n"
    assert run_main("list", "-q", "--limit", "2", "--offset", "1").stdout == "119\n118\n"
    assert_one_error(run_main("list", "-q", "--json"), 2)


# ------------------------------------------------------------------ one clock for people

ZONE = "XYZ-5:30"  # a POSIX TZ five and a half hours east of UTC: no tz database needed
LOCAL = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+05:30"


@pytest.fixture
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process, and those it starts, in ZONE."""
    import time

    monkeypatch.setenv("TZ", ZONE)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def run_one(data_dir: Path, spec: JobSpec, started: float, took: float,
            result: dict[str, Any] | None = None) -> int:
    """Submit a job, then claim it at `started` and complete it `took` seconds later, as a
    daemon would (`result` None: it fails)."""
    from ollama_cli.jobs import ErrorType, JobError
    from ollama_cli.store.records import Placement, Plan, Settle, SettleKind

    with open_store(data_dir) as store:
        submitted = store.submit(spec, started)
        tick = store.settle_and_claim([], started, owner="d1", planner=lambda jobs, _: Plan(
            [Placement(0, "http://h:1", (j,)) for j in jobs if j.id == submitted.id]))
        claimed = tick.claimed[0][1][0].job
        assert claimed.lease is not None
        settle = Settle(SettleKind.COMPLETE, claimed.id, claimed.lease.token, result=result, host="http://h:1") \
            if result is not None else \
            Settle(SettleKind.FAIL, claimed.id, claimed.lease.token, error=JobError(ErrorType.BAD_REQUEST, "no"),
                   host="http://h:1")
        store.settle_and_claim([settle], started + took, owner="d1")
    return submitted.id


def test_status_shows_local_times_run_time_and_no_python_reprs(data_dir: Path, local_zone: None) -> None:
    import re

    run_one(data_dir, job(), 1_700_000_000.0, 12.5, {"response": "hello"})
    out = run_main("status", "1").stdout
    assert re.search(rf"created_at +{LOCAL}", out) and re.search(rf"finished_at +{LOCAL}", out), out
    assert "2023-11-15T03:43:20+05:30" in out  # 22:13:20 UTC
    assert re.search(r"run time +12s\b", out), out
    assert re.search(r"cached +no\b", out) and "False" not in out and "None" not in out
    # JSON keeps UTC with Z, as the contract says.
    assert ok_json(run_main("status", "1", "--json"))["created_at"] == "2023-11-14T22:13:20.000Z"


def test_the_daemon_log_and_info_use_the_same_clock(data_dir: Path, local_zone: None, emulator: Any,
                                                    start_daemon: Any) -> None:
    import re

    from tests.emulator import Emulator

    with Emulator(models=["other"]) as second:
        daemon = start_daemon(emulator.url, "--host", second.url)
        assert re.match(rf"{LOCAL} INFO  daemon \S+ started", daemon.log()), daemon.log()
        res = subprocess.run([sys.executable, "-m", "ollama_cli", "info"], capture_output=True, text=True,
                             env=cli_env(data_dir, COLUMNS="80"), timeout=60)
    out = res.stdout
    assert res.returncode == 0, res.stderr
    assert re.search(rf"since {LOCAL}", out) and re.search(r"heartbeat \d+s ago", out), out
    # 80 columns: a section goes on to the next line between items, never inside one.
    assert all(len(line) <= 80 for line in lines(out)), out
    assert emulator.url in out and second.url in out


# ---------------------------------------------------------------------------------- models


def test_models_lists_every_backend_with_its_host(data_dir: Path, emulator: Any, columns: Any) -> None:
    from tests.emulator import Emulator

    with Emulator(models=["alpha"]) as second:
        rows = ok_json(run_main("models", "--host", emulator.url, "--host", second.url, "--json"))
        assert {(r["name"], r["host"]) for r in rows} == \
            {(m.name, emulator.url) for m in emulator.models.values()} | {("alpha:latest", second.url)}
        columns("200")
        header, *table = lines(run_main("models", "--host", emulator.url, "--host", second.url).stdout)
        assert header.split()[:3] == ["NAME", "HOST", "SIZE"]
        assert any(line.split()[:2] == ["alpha:latest", second.url] for line in table), table
    header, *_ = lines(run_main("models", "--host", emulator.url).stdout)
    assert "HOST" not in header.split()  # one backend: no column to tell them apart


def test_models_prints_sizes_as_ollama_does(data_dir: Path, emulator: Any, columns: Any) -> None:
    columns("200")
    table = {line.split()[0]: line for line in lines(run_main("models", "--host", emulator.url).stdout)[1:]}
    assert " 2.0 GB " in table["llama3.2:latest"]  # 2,019,393,189 bytes
    assert " 397 MB " in table["qwen2.5:0.5b"]
    assert " 45 MB " in table["all-minilm:latest"]  # was 0.0 GB
    from ollama_cli.render import human_bytes

    assert [human_bytes(n) for n in (0, 999, 1000, 1500, 10_500, 999_999_999, 10**12)] == \
        ["0 B", "999 B", "1 KB", "1.5 KB", "10 KB", "999 MB", "1 TB"]


def test_models_with_one_backend_down_lists_the_other_and_exits_3(data_dir: Path, emulator: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    res = run_main("models", "--host", emulator.url, "--host", down, "--json")
    assert res.returncode == 3
    assert {r["host"] for r in ok_json(subprocess.CompletedProcess([], 0, res.stdout, ""))} == {emulator.url}
    assert lines(res.stderr) == [lines(res.stderr)[0]] and res.stderr.startswith(f"error: {down}: ")


# ---------------------------------------------------------------------------- scripts: ids


def test_submit_quiet_prints_only_the_id(data_dir: Path) -> None:
    assert run_main("submit", "llama3.2", "hi", "-q").stdout == "1\n"
    assert run_main("submit", "llama3.2", "hi", "--quiet", "-p", "high").stdout == "2\n"
    assert_one_error(run_main("submit", "llama3.2", "hi", "-q", "--json"), 2)
    assert ok_json(run_main("list", "--json"))[0]["id"] == 2  # the refused one wrote nothing


def test_status_takes_several_ids(data_dir: Path) -> None:
    queue(data_dir, job(prompt="a"), job(prompt="b"), job(prompt="c"))
    one = ok_json(run_main("status", "2", "--json"))
    assert isinstance(one, dict) and one["id"] == 2  # one id: the object, as before
    assert [j["id"] for j in ok_json(run_main("status", "3", "1", "--json"))] == [3, 1]
    res = run_main("status", "3", "9", "1", "--json")
    assert res.returncode == 1 and res.stderr == "error: job 9 not found\n"
    assert [j["id"] for j in ok_json(subprocess.CompletedProcess([], 0, res.stdout, ""))] == [3, 1]
    human = run_main("status", "1", "2").stdout
    assert human.count("\nid ") + human.startswith("id ") == 2 and "\n\n" in human


def test_status_input_shows_what_a_job_was_asked_only_when_asked(data_dir: Path) -> None:
    queue(data_dir, job(prompt="a private\nquestion\x1b[2J"),
          JobSpec(model="m", type=JobType.CHAT, request={"messages": [{"role": "system", "content": "be brief"},
                                                                      {"role": "user", "content": "hello"}],
                                                         "options": {"temperature": 0.2}}),
          JobSpec(model="e", type=JobType.EMBED, request={"input": ["one", "two"]}))
    assert "private" not in run_main("status", "1").stdout
    assert "input" not in ok_json(run_main("status", "1", "--json"))
    assert ok_json(run_main("status", "1", "--input", "--json"))["input"] == {"prompt": "a private\nquestion\x1b[2J"}
    out = run_main("status", "1", "2", "3", "--input").stdout
    assert "prompt: a private\nquestion [2J" in out  # line breaks kept, escapes not sent to the terminal
    assert "system: be brief\nuser: hello\noptions: {\"temperature\": 0.2}" in out
    assert "input 1: one\ninput 2: two" in out


def test_result_takes_several_ids(data_dir: Path) -> None:
    first = run_one(data_dir, job(prompt="a"), 1_700_000_000.0, 1.0, {"response": "one"})
    second = run_one(data_dir, job(prompt="b"), 1_700_000_000.0, 1.0, {"response": "two\n"})
    failed = run_one(data_dir, job(prompt="c"), 1_700_000_000.0, 1.0, None)
    assert ok_json(run_main("result", str(first), "--json"))["response"] == "one"
    both = ok_json(run_main("result", str(first), str(second), "--json"))
    assert [(r["id"], r["response"]) for r in both] == [(first, "one"), (second, "two\n")]
    assert run_main("result", str(second), str(first)).stdout == \
        f"==> job {second} <==\ntwo\n\n==> job {first} <==\none\n"
    res = run_main("result", str(first), str(failed), "--wait")
    assert res.returncode == 1 and res.stderr == f"error: job {failed} failed: bad_request: no\n"
    assert res.stdout == f"==> job {first} <==\none\n"


# ---------------------------------------------------------------------------------- rerun


def test_rerun_queues_the_same_request_again_as_a_new_job(data_dir: Path) -> None:
    spec = job(prompt="again", priority=Priority.HIGH, name="n", max_attempts=2, timeout=30.0, keep_alive=60.0)
    done = run_one(data_dir, spec, 1_700_000_000.0, 1.0, {"response": "first answer"})
    assert run_main("submit", "llama3.2", "again", "--json").returncode == 0  # the cache would answer it
    reruns = ok_json(run_main("rerun", str(done), "--json"))
    assert [(r["rerun_of"], r["status"], r["name"]) for r in reruns] == [(done, "pending", "n")]
    new = reruns[0]["id"]
    with open_store(data_dir) as store:
        old_job, new_job = store.get_job(done), store.get_job(new)
        assert store.get_request(new) == store.get_request(done) == {"prompt": "again"}
        assert store.get_result(done) == {"response": "first answer"}  # the old job is left as it was
    assert (new_job.model, new_job.priority, new_job.max_attempts, new_job.timeout, new_job.keep_alive) == \
        (old_job.model, old_job.priority, old_job.max_attempts, old_job.timeout, old_job.keep_alive)
    assert not new_job.cached and new_job.cache_key is None  # asked again, not answered from the cache
    res = run_main("rerun", str(done), "99")
    assert res.returncode == 1 and res.stderr == "error: job 99 not found\n"
    assert res.stdout.startswith(f"job {new + 1} queued (rerun of job {done};")


# -------------------------------------------------------------------------------- batches


def test_batch_list_and_cancel(data_dir: Path, tmp_path: Path) -> None:
    lines_file = tmp_path / "b.jsonl"
    lines_file.write_text('{"model": "m", "prompt": "a"}\n{"model": "m", "prompt": "b"}\n'
                          '{"model": "m", "prompt": "c"}\n')
    assert run_main("batch", "list").stdout == "no batches\n"
    assert ok_json(run_main("batch", "list", "--json")) == []
    run_main("batch", "submit", str(lines_file), "--name", "nightly")
    run_main("batch", "submit", str(lines_file))
    run_main("cancel", "1")
    listed = ok_json(run_main("batch", "list", "--json"))
    assert [(b["batch"], b["total"], b["pending"], b["cancelled"]) for b in listed] == \
        [("batch-1", 3, 3, 0), ("nightly", 3, 2, 1)]
    assert [line.split()[0] for line in lines(run_main("batch", "list").stdout)] == ["BATCH", "batch-1", "nightly"]
    res = run_main("batch", "cancel", "nightly")
    assert res.stdout == "batch nightly: 2 jobs cancelled, 1 had finished\n"
    after = ok_json(run_main("batch", "cancel", "nightly", "--json"))  # again: nothing left to cancel
    assert (after["batch"], after["cancelled"], after["pending"]) == ("nightly", 3, 0)
    assert ok_json(run_main("batch", "status", "batch-1", "--json"))["pending"] == 3  # the other batch untouched
    assert "not found" in assert_one_error(run_main("batch", "cancel", "nope"), 1)
