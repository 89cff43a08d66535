"""The script-facing contract of the CLI (/work/shared/cli-contract.md), checked from outside:
the real `python -m ollama_cli` in subprocesses, a real store, the Ollama emulator over HTTP
and a real `ollama-q daemon` process. Every test runs on both engines: LMDB in a temporary
folder, and PostgreSQL in a fresh database of the session's server, named by OLLAMA_Q_STORE,
which every process a test starts inherits (tests about the LMDB data dir are `lmdb_only`)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ollama_cli import __version__
from ollama_cli.store import open_store
from tests.emulator import Emulator
from tests.helpers.backend import generation_requests
from tests.helpers.cli import assert_one_error, cli_env, jobs_total, ok_json, one_json, run_cli, submit_id
from tests.helpers.processes import acknowledged, free_port, start_submitter

# ------------------------------------------------------------------------------ the contract

JOB_KEYS = {
    "id", "name", "batch", "custom_id", "model", "type", "priority", "status", "position", "attempts",
    "max_attempts", "run_at", "after", "host", "created_at", "started_at", "finished_at", "error", "cached",
}
TYPES = {"generate", "chat", "embed"}
PRIORITIES = {"urgent", "high", "medium", "low"}
STATUSES = {"pending", "running", "completed", "failed", "cancelled"}
ERROR_TYPES = {
    "model_not_found", "bad_request", "backend_error", "unreachable", "timeout", "cancelled",
    "dependency_failed", "abandoned", "invalid_response",
}
STAT_FIELDS = {
    "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration",
}
RESULT_KEYS = {"id", "status", "model", "type", "stats", "cached"}
INFO_KEYS = {"jobs", "paused", "daemon", "cache", "store", "data_dir", "version"}
INFO_JOB_KEYS = {"pending", "running", "completed", "failed", "cancelled", "total"}
INFO_DAEMON_KEYS = {"running", "pid", "concurrency", "hosts", "started_at", "last_heartbeat"}
MODEL_KEYS = {"name", "size", "modified_at", "family", "parameter_size", "quantization_level", "loaded"}
# Every command this version ships, written out: one that goes missing from the CLI (and
# from cli/app.py's COMMANDS with it) fails the help test.
SHIPPED_COMMANDS = ("submit", "status", "result", "list", "wait", "cancel", "retry", "info", "top", "pause",
                    "resume", "clean", "batch", "cache", "models", "daemon")
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

# ------------------------------------------------------------------------------ helpers


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    lmdb_only = metafunc.definition.get_closest_marker("lmdb_only") is not None
    metafunc.parametrize("engine", ["lmdb"] if lmdb_only else ["lmdb", "postgresql"], indirect=True)


@pytest.fixture(autouse=True)
def engine(request: pytest.FixtureRequest, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "postgresql":
        monkeypatch.setenv("OLLAMA_Q_STORE", request.getfixturevalue("pg_store_url"))
    return request.param


@pytest.fixture
def location(engine: str, data_dir: Path) -> str | Path:
    """Where the test's store is: the data dir, or the database's URL."""
    return os.environ["OLLAMA_Q_STORE"] if engine == "postgresql" else data_dir


def stored_request(location: str | Path, job_id: int) -> dict[str, Any]:
    """The request as the store holds it, read through a store opened after the CLI exited."""
    with open_store(location) as store:
        return store.get_request(job_id)


def check_job(job: dict[str, Any]) -> None:
    """The contract's job object: every documented key, with its type (more keys may come)."""
    assert JOB_KEYS <= set(job), JOB_KEYS - set(job)
    assert type(job["id"]) is int and job["id"] > 0
    for key in ("name", "batch", "custom_id", "host"):
        assert job[key] is None or isinstance(job[key], str), key
    assert isinstance(job["model"], str) and job["model"]
    assert job["type"] in TYPES
    assert job["priority"] in PRIORITIES
    assert job["status"] in STATUSES
    if job["status"] == "pending":
        assert job["position"] is None or (type(job["position"]) is int and job["position"] >= 1)
    else:
        assert job["position"] is None
    assert type(job["attempts"]) is int and job["attempts"] >= 0
    assert type(job["max_attempts"]) is int and job["max_attempts"] >= 1
    assert isinstance(job["after"], list) and all(type(a) is int for a in job["after"])
    assert isinstance(job["created_at"], str) and TIME.match(job["created_at"]), job["created_at"]
    for key in ("run_at", "started_at", "finished_at"):
        assert job[key] is None or (isinstance(job[key], str) and TIME.match(job[key])), (key, job[key])
    if job["error"] is not None:
        assert set(job["error"]) == {"type", "message"}
        assert job["error"]["type"] in ERROR_TYPES and isinstance(job["error"]["message"], str)
    assert type(job["cached"]) is bool


def check_result(res: dict[str, Any], kind: str) -> None:
    assert RESULT_KEYS <= set(res), RESULT_KEYS - set(res)
    assert res["type"] == kind and res["status"] == "completed"
    assert type(res["cached"]) is bool
    assert isinstance(res["stats"], dict) and set(res["stats"]) <= STAT_FIELDS, res["stats"]
    assert all(type(v) is int and v >= 0 for v in res["stats"].values()), res["stats"]


# ------------------------------------------------------------------------------ 1. bad input and unknown ids

# The table of bad input runs in process (tests/test_bad_input.py); these few go through the
# real entry point, where argv bytes, stdin and the exit status are the operating system's.
ENTRY_POINT_ERRORS = [
    pytest.param(["submit", "--no-such-flag", "llama3.2", "hi"], None, id="click-usage-error"),
    pytest.param(["no-such-command"], None, id="unknown-command"),
    pytest.param(["submit", "llama3.2", "hi", "-p", "asap", "--json"], None, id="validation-error"),
    pytest.param(["submit", "llama3.2", b"caf\xff"], None, id="argument-not-utf8"),
    pytest.param(["submit", "llama3.2", "hi", "--name", b"\xc3\x28"], None, id="name-not-utf8"),
    pytest.param(["submit", "llama3.2", "--json"], b"\xff\xfe not utf-8", id="stdin-not-utf8"),
    pytest.param(["status", "\u0661"], None, id="id-not-ascii-digits"),
    pytest.param(["models", "--host", "http://user:s3cret@127.0.0.1:1"], None, id="host-with-credentials"),
]


@pytest.mark.parametrize("args, stdin", ENTRY_POINT_ERRORS)
def test_the_entry_point_reports_bad_input_in_one_line(
        data_dir: Path, args: list[str | bytes], stdin: bytes | None) -> None:
    res = run_cli(data_dir, *args, input=stdin)
    assert "s3cret" not in assert_one_error(res, 2)
    assert not data_dir.exists()  # refused before the store was opened


def test_the_entry_point_exits_1_for_an_unknown_id(data_dir: Path) -> None:
    submit_id(data_dir, "llama3.2", "the only job")
    assert "job 2 " in assert_one_error(run_cli(data_dir, "status", "2"), 1)
    assert jobs_total(data_dir) == 1


# ------------------------------------------------------------------------------ 2. JSON shapes


def test_submit_json_is_exactly_id_name_status_position(data_dir: Path) -> None:
    first = ok_json(run_cli(data_dir, "submit", "llama3.2", "one", "--json"))
    assert first == {"id": 1, "name": None, "status": "pending", "position": 1}
    second = ok_json(run_cli(data_dir, "submit", "llama3.2", "two", "--name", "nightly", "--json"))
    assert second == {"id": 2, "name": "nightly", "status": "pending", "position": 2}
    urgent = ok_json(run_cli(data_dir, "submit", "llama3.2", "three", "-p", "urgent", "--json"))
    assert urgent == {"id": 3, "name": None, "status": "pending", "position": 1}
    later = ok_json(run_cli(data_dir, "submit", "llama3.2", "four", "--delay", "1h", "--json"))
    assert set(later) == {"id", "name", "status", "position"}
    assert later["id"] == 4 and later["status"] == "pending" and later["position"] is None


def test_status_json_is_the_contract_job_object(data_dir: Path) -> None:
    submit_id(data_dir, "llama3.2", "first")
    jid = submit_id(data_dir, "qwen2.5:0.5b", "-t", "chat", "second", "--name", "n1", "-p", "high",
                    "--retries", "0")
    late = submit_id(data_dir, "llama3.2", "late", "--at", "2099-01-02T03:04:05Z", "--after", "1",
                     "--after", str(jid))

    job = ok_json(run_cli(data_dir, "status", str(jid), "--json"))
    check_job(job)
    assert job["id"] == jid and job["name"] == "n1" and job["model"] == "qwen2.5:0.5b"
    assert job["type"] == "chat" and job["priority"] == "high" and job["status"] == "pending"
    assert job["position"] == 1  # high goes ahead of the medium job 1
    assert job["attempts"] == 0 and job["max_attempts"] == 1
    assert job["run_at"] is None and job["after"] == [] and job["host"] is None
    assert job["started_at"] is None and job["finished_at"] is None
    assert job["error"] is None and job["cached"] is False
    assert ok_json(run_cli(data_dir, "status", "1", "--json"))["position"] == 2

    held = ok_json(run_cli(data_dir, "status", str(late), "--json"))
    check_job(held)
    assert held["run_at"].startswith("2099-01-02T03:04:05") and held["after"] == [1, jid]
    assert held["max_attempts"] == 4 and held["position"] is None  # waits: not among ready jobs


def test_list_json_newest_first_with_filters(data_dir: Path) -> None:
    a = submit_id(data_dir, "llama3.2", "a")
    b = submit_id(data_dir, "qwen2.5:0.5b", "-t", "chat", "b")
    c = submit_id(data_dir, "all-minilm", "-t", "embed", "c")
    d = submit_id(data_dir, "llama3.2", "d")
    assert run_cli(data_dir, "cancel", str(d)).returncode == 0

    def ids(*args: str) -> list[int]:
        rows = ok_json(run_cli(data_dir, "list", *args, "--json"))
        assert isinstance(rows, list)
        for row in rows:
            check_job(row)
        return [r["id"] for r in rows]

    everything = ok_json(run_cli(data_dir, "list", "--json"))
    assert [r["id"] for r in everything] == [d, c, b, a]
    assert [r["status"] for r in everything] == ["cancelled", "pending", "pending", "pending"]
    assert [r["position"] for r in everything] == [None, 3, 2, 1]
    assert ids("--status", "cancelled") == [d]
    assert ids("--status", "pending") == [c, b, a]
    assert ids("--status", "cancelled", "--status", "pending") == [d, c, b, a]
    assert ids("--status", "completed") == []
    assert ids("--model", "llama3.2") == [d, a]
    assert ids("--type", "chat") == [b]
    assert ids("--type", "embed", "--status", "pending") == [c]
    assert ids("--limit", "2") == [d, c]
    assert ids("--offset", "1", "--limit", "2") == [c, b]
    assert ids("--offset", "3") == [a]
    assert ids("--status", "pending", "--offset", "1", "--limit", "1") == [b]


def test_list_limit_zero_is_every_job(data_dir: Path) -> None:
    submit_id(data_dir, "llama3.2", "a")
    assert [r["id"] for r in ok_json(run_cli(data_dir, "list", "--limit", "0", "--json"))] == [1]


def test_info_json_has_the_contract_keys(data_dir: Path, engine: str, location: str | Path) -> None:
    submit_id(data_dir, "llama3.2", "x")
    info = ok_json(run_cli(data_dir, "info", "--json"))
    assert INFO_KEYS <= set(info)
    assert INFO_JOB_KEYS <= set(info["jobs"])
    assert info["jobs"]["pending"] == 1 and info["jobs"]["total"] == 1
    assert all(type(info["jobs"][k]) is int for k in INFO_JOB_KEYS)
    assert info["paused"] is False
    assert INFO_DAEMON_KEYS <= set(info["daemon"])
    assert info["daemon"]["running"] is False and info["daemon"]["pid"] is None
    assert isinstance(info["daemon"]["hosts"], list)
    assert {"entries", "hits", "misses"} <= set(info["cache"])
    assert all(type(info["cache"][k]) is int for k in ("entries", "hits", "misses"))
    assert info["store"] == {"engine": engine, "location": str(location)} and info["data_dir"] == str(location)
    assert info["version"] == __version__


def test_cache_stats_and_clear_json_on_an_empty_cache(data_dir: Path) -> None:
    stats = ok_json(run_cli(data_dir, "cache", "stats", "--json"))
    assert {"entries", "hits", "misses", "bytes"} <= set(stats)
    assert stats["entries"] == 0 and stats["bytes"] == 0 and stats["hits"] == 0
    assert ok_json(run_cli(data_dir, "cache", "clear", "--json")) == {"cleared": 0}


# ------------------------------------------------------------------------------ 3. input forms

INPUT_FORMS = [
    pytest.param(["llama3.2", "hello there"], None, {"prompt": "hello there"}, id="prompt-argument"),
    pytest.param(["llama3.2", "-"], "line one\nline two", {"prompt": "line one\nline two"}, id="dash-reads-stdin"),
    pytest.param(["llama3.2"], "piped prompt", {"prompt": "piped prompt"}, id="piped-stdin-no-prompt"),
    pytest.param(["llama3.2", "the argument"], "not read", {"prompt": "the argument"}, id="argument-beats-stdin"),
    pytest.param(["llama3.2", "caf\u00e9 \u2603"], None, {"prompt": "caf\u00e9 \u2603"}, id="unicode-prompt"),
    pytest.param(["llama3.2", "-"], "stdin \u00fcml\u00e4ut", {"prompt": "stdin \u00fcml\u00e4ut"}, id="utf8-stdin"),
    pytest.param(["llama3.2", "hi", "--system", "be terse"], None, {"prompt": "hi", "system": "be terse"},
                 id="generate-system"),
    pytest.param(["llama3.2", "-t", "chat", "-m", "user:a:b:c"], "",
                 {"messages": [{"role": "user", "content": "a:b:c"}]}, id="message-splits-at-first-colon"),
    pytest.param(["llama3.2", "-t", "chat", "--system", "S"], "from the pipe",
                 {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "from the pipe"}]},
                 id="chat-stdin-prompt"),
    pytest.param(["all-minilm", "-t", "embed", "one", "--input", "two", "--input", "three"], None,
                 {"input": ["one", "two", "three"]}, id="embed-prompt-and-inputs"),
    pytest.param(["all-minilm", "-t", "embed", "--input", "only"], "", {"input": ["only"]},
                 id="embed-input-empty-stdin"),
    pytest.param(["llama3.2", "hi", "-o", "temperature=0.2", "-o", 'stop=["x"]', "-o", "name=bob",
                  "-o", "num_ctx=4096", "-o", "flag=true", "-o", "eq=a=b", "-o", "nothing=null",
                  "-o", 'obj={"k": [1, 2]}'], None,
                 {"prompt": "hi", "options": {"temperature": 0.2, "stop": ["x"], "name": "bob", "num_ctx": 4096,
                                              "flag": True, "eq": "a=b", "nothing": None, "obj": {"k": [1, 2]}}},
                 id="options-json-else-string"),
    pytest.param(["llama3.2", "hi", "-o", "x=NaN", "-o", "y=-Infinity"], None,
                 {"prompt": "hi", "options": {"x": "NaN", "y": "-Infinity"}}, id="options-nan-is-not-json"),
    pytest.param(["llama3.2", "hi", "--format", "json"], None, {"prompt": "hi", "format": "json"},
                 id="format-json"),
]


@pytest.mark.parametrize("args, stdin, expected", INPUT_FORMS)
def test_input_forms_store_the_request(data_dir: Path, location: str | Path, args: list[str], stdin: str | None,
                                       expected: dict[str, Any]) -> None:
    jid = submit_id(data_dir, *args, input=stdin)
    request = stored_request(location, jid)
    for key, value in expected.items():
        assert request.get(key) == value, (key, request)
    for absent in {"prompt", "system", "messages", "input", "options", "format"} - set(expected):
        assert absent not in request, (absent, request)


def test_format_schema_file_is_stored_as_the_schema(data_dir: Path, location: str | Path, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    jid = submit_id(data_dir, "llama3.2", "how old?", "--format", f"@{path}")
    assert stored_request(location, jid)["format"] == schema


def test_chat_messages_in_the_contract_order(data_dir: Path, location: str | Path, tmp_path: Path) -> None:
    from_file = [{"role": "user", "content": "F1"}, {"role": "assistant", "content": "F2"}]
    path = tmp_path / "history.json"
    path.write_text(json.dumps(from_file))
    jid = submit_id(data_dir, "llama3.2", "-t", "chat", "--system", "SYS", "-m", "user:M1",
                    "--messages", str(path), "-m", "assistant:M2: with colon", "FINAL")
    messages = stored_request(location, jid)["messages"]
    assert messages[0] == {"role": "system", "content": "SYS"}  # --system leads
    assert messages[-1] == {"role": "user", "content": "FINAL"}  # PROMPT ends
    middle = messages[1:-1]
    assert len(middle) == 4
    from_m = [{"role": "user", "content": "M1"}, {"role": "assistant", "content": "M2: with colon"}]
    assert [m for m in middle if m in from_file] == from_file  # each group keeps its own order
    assert [m for m in middle if m in from_m] == from_m


# ------------------------------------------------------------------------------ 4. end to end


def test_generate_end_to_end_with_cache(data_dir: Path, emulator: Emulator, start_daemon: Any) -> None:
    daemon = start_daemon(emulator.url)
    prompt = "Why is the sky blue?"
    first = run_cli(data_dir, "submit", "llama3.2", prompt, "--wait")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip()
    sent = generation_requests(emulator, "/api/generate")
    assert len(sent) == 1
    assert sent[0]["model"] == "llama3.2" and sent[0]["prompt"] == prompt

    res = ok_json(run_cli(data_dir, "result", "1", "--json"))
    check_result(res, "generate")
    assert res["id"] == 1 and res["model"] == "llama3.2" and res["cached"] is False
    assert isinstance(res["response"], str) and res["response"]
    assert first.stdout == res["response"] + ("" if res["response"].endswith("\n") else "\n")
    assert {"total_duration", "eval_count", "prompt_eval_count"} <= set(res["stats"])
    assert res["stats"]["eval_count"] > 0
    assert run_cli(data_dir, "result", "1").stdout == first.stdout

    job = ok_json(run_cli(data_dir, "status", "1", "--json"))
    check_job(job)
    assert job["status"] == "completed" and job["attempts"] == 1 and job["error"] is None
    assert job["started_at"] and job["finished_at"] and job["host"] and str(emulator.port) in job["host"]

    # The same request again: answered from the cache at submit, the backend sees nothing.
    again = ok_json(run_cli(data_dir, "submit", "llama3.2", prompt, "--wait", "--json"))
    check_result(again, "generate")
    assert again["id"] == 2 and again["cached"] is True and again["response"] == res["response"]
    assert len(generation_requests(emulator, "/api/generate")) == 1
    assert ok_json(run_cli(data_dir, "status", "2", "--json"))["cached"] is True
    human = run_cli(data_dir, "submit", "llama3.2", prompt, "--wait")
    assert human.returncode == 0 and human.stdout == first.stdout
    assert len(generation_requests(emulator, "/api/generate")) == 1

    # --no-cache goes to the backend again.
    fresh = ok_json(run_cli(data_dir, "submit", "llama3.2", prompt, "--no-cache", "--wait", "--json"))
    check_result(fresh, "generate")
    assert fresh["id"] == 4 and fresh["cached"] is False
    assert emulator.wait_requests(2)
    assert len(generation_requests(emulator, "/api/generate")) == 2

    info = ok_json(run_cli(data_dir, "info", "--json"))
    assert info["daemon"]["running"] is True and info["daemon"]["pid"] == daemon.pid
    assert info["daemon"]["concurrency"] == 1 and any(str(emulator.port) in h for h in info["daemon"]["hosts"])
    assert info["jobs"]["completed"] == 4 and info["jobs"]["total"] == 4
    stats = ok_json(run_cli(data_dir, "cache", "stats", "--json"))
    assert stats["entries"] == 1 and stats["hits"] == 2 and stats["bytes"] > 0
    assert ok_json(run_cli(data_dir, "cache", "clear", "--json")) == {"cleared": 1}
    stats = ok_json(run_cli(data_dir, "cache", "stats", "--json"))
    assert stats["entries"] == 0 and stats["bytes"] == 0
    after_clear = ok_json(run_cli(data_dir, "submit", "llama3.2", prompt, "--json"))
    assert after_clear["status"] == "pending"  # nothing cached any more

    # The answer is the backend's own text.
    direct = httpx.post(f"{emulator.url}/api/generate", json={"model": "llama3.2", "prompt": prompt,
                                                              "stream": False}, timeout=10).json()
    assert direct["response"] == res["response"]


def test_chat_and_embed_end_to_end(data_dir: Path, emulator: Emulator, start_daemon: Any) -> None:
    start_daemon(emulator.url)
    chat = ok_json(run_cli(data_dir, "submit", "llama3.2", "-t", "chat", "--system", "Be brief.", "-o", "seed=7",
                       "Hello", "--wait", "--json"))
    check_result(chat, "chat")
    assert chat["message"]["role"] == "assistant"
    assert isinstance(chat["message"]["content"], str) and chat["message"]["content"]
    body = generation_requests(emulator, "/api/chat")[-1]
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert body["options"] == {"seed": 7} and body["model"] == "llama3.2"
    text = run_cli(data_dir, "result", str(chat["id"]))
    assert text.returncode == 0 and text.stdout.rstrip("\n") == chat["message"]["content"].rstrip("\n")

    emb = ok_json(run_cli(data_dir, "submit", "all-minilm", "-t", "embed", "first", "--input", "second",
                      "--wait", "--json"))
    check_result(emb, "embed")
    vectors = emb["embeddings"]
    assert isinstance(vectors, list) and len(vectors) == 2
    assert all(isinstance(v, list) and v and all(isinstance(x, float) for x in v) for v in vectors)
    assert len(vectors[0]) == len(vectors[1]) and vectors[0] != vectors[1]
    assert generation_requests(emulator, "/api/embed")[-1]["input"] == ["first", "second"]
    human = run_cli(data_dir, "result", str(emb["id"]))
    assert human.returncode == 0 and json.loads(human.stdout) == vectors


def test_result_wait_blocks_until_the_job_is_done(data_dir: Path, emulator: Emulator, start_daemon: Any) -> None:
    start_daemon(emulator.url)
    emulator.hold()
    jid = submit_id(data_dir, "llama3.2", "a held job")
    waiter = subprocess.Popen([sys.executable, "-m", "ollama_cli", "result", str(jid), "--wait", "--json"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=cli_env(data_dir))
    try:
        assert emulator.wait_in_flight(1)
        running = ok_json(run_cli(data_dir, "status", str(jid), "--json"))
        check_job(running)
        assert running["status"] == "running" and running["attempts"] == 1 and running["started_at"]
        assert running["finished_at"] is None and running["position"] is None
        assert_one_error(run_cli(data_dir, "result", str(jid)), 1)  # not done: no output, exit 1
        assert waiter.poll() is None  # the job is held by the backend: the waiter cannot be done
        emulator.release()
        out, err = waiter.communicate(timeout=60)
    finally:
        emulator.release()
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, err
    res = json.loads(out)
    check_result(res, "generate")
    assert res["id"] == jid and res["response"]


def test_result_wait_timeout_exits_1(data_dir: Path) -> None:
    jid = submit_id(data_dir, "llama3.2", "no daemon runs this")
    res = run_cli(data_dir, "result", str(jid), "--wait", "--timeout", "300ms", "--json")
    warning, line = res.stderr.splitlines()
    assert res.returncode == 1 and warning.startswith("warning: no daemon is running")
    assert line.startswith("error: ") and "pending" in line
    assert json.loads(res.stdout)["status"] == "pending"  # with --json, the object says so too
    assert ok_json(run_cli(data_dir, "status", str(jid), "--json"))["status"] == "pending"


def test_failed_job_result_exits_1(data_dir: Path, emulator: Emulator, start_daemon: Any) -> None:
    start_daemon(emulator.url)
    res = run_cli(data_dir, "submit", "no-such-model", "hi", "--wait")
    line = assert_one_error(res, 1)
    assert "model_not_found" in line
    job = ok_json(run_cli(data_dir, "status", "1", "--json"))
    check_job(job)
    assert job["status"] == "failed" and job["error"]["type"] == "model_not_found"
    assert job["attempts"] == 1 and job["finished_at"] is not None  # permanent: no retry
    assert_one_error(run_cli(data_dir, "result", "1"), 1)
    res = run_cli(data_dir, "result", "1", "--json")
    assert_one_error(res, 1, stdout_empty=False)
    assert json.loads(res.stdout)["error"] == job["error"]
    assert_one_error(run_cli(data_dir, "result", "1", "--wait"), 1)
    assert len(generation_requests(emulator, "/api/generate")) == 1


def test_cancel_pending_then_again(data_dir: Path) -> None:
    jid = submit_id(data_dir, "llama3.2", "never runs")
    keep = submit_id(data_dir, "llama3.2", "stays")
    res = run_cli(data_dir, "cancel", str(jid))
    assert res.returncode == 0 and res.stderr == "", res.stderr
    job = ok_json(run_cli(data_dir, "status", str(jid), "--json"))
    check_job(job)
    assert job["status"] == "cancelled" and job["error"]["type"] == "cancelled"
    assert job["finished_at"] is not None and job["position"] is None
    assert ok_json(run_cli(data_dir, "status", str(keep), "--json"))["position"] == 1  # moved up
    assert_one_error(run_cli(data_dir, "cancel", str(jid)), 1)
    again = run_cli(data_dir, "cancel", str(jid), "--json")
    assert_one_error(again, 1, stdout_empty=False)
    assert one_json(again) == [{"id": jid, "status": "cancelled"}]
    assert_one_error(run_cli(data_dir, "result", str(jid)), 1)
    both = run_cli(data_dir, "cancel", str(keep), "--json")
    assert ok_json(both) == [{"id": keep, "status": "cancelled"}]
    info = ok_json(run_cli(data_dir, "info", "--json"))
    assert info["jobs"]["cancelled"] == 2 and info["jobs"]["pending"] == 0


def test_models_json_lists_the_backend_models(data_dir: Path, emulator: Emulator) -> None:
    r = httpx.post(f"{emulator.url}/api/generate", json={"model": "llama3.2", "prompt": "load", "stream": False},
                   timeout=10)
    assert r.status_code == 200
    rows = ok_json(run_cli(data_dir, "models", "--host", emulator.url, "--json"))
    assert isinstance(rows, list)
    assert {r["name"] for r in rows} == {spec.name for spec in emulator.models.values()}
    for row in rows:
        assert MODEL_KEYS <= set(row)
        assert type(row["loaded"]) is bool and type(row["size"]) is int
    assert {r["name"] for r in rows if r["loaded"]} == {"llama3.2:latest"}
    # OLLAMA_HOST in Ollama's host:port form, and the flag winning over it.
    via_env = ok_json(run_cli(data_dir, "models", "--json", OLLAMA_HOST=f"127.0.0.1:{emulator.port}"))
    assert via_env == rows
    flag_wins = ok_json(run_cli(data_dir, "models", "--json", "--host", emulator.url,
                            OLLAMA_HOST=f"127.0.0.1:{free_port()}"))
    assert {r["name"] for r in flag_wins} == {r["name"] for r in rows}
    human = run_cli(data_dir, "models", "--host", emulator.url)
    assert human.returncode == 0 and "llama3.2:latest" in human.stdout


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["human", "json"])
def test_models_against_a_closed_port_exits_3(data_dir: Path, json_flag: list[str]) -> None:
    port = free_port()
    assert_one_error(run_cli(data_dir, "models", "--host", f"http://127.0.0.1:{port}", *json_flag), 3)
    assert_one_error(run_cli(data_dir, "models", *json_flag, OLLAMA_HOST=f"127.0.0.1:{port}"), 3)


# ------------------------------------------------------------------------------ 5. across processes


def test_a_job_is_seen_by_other_processes(data_dir: Path, location: str | Path) -> None:
    submit_id(data_dir, "llama3.2", "makes the store")
    with open_store(location) as store:  # a long-lived handle in this process
        jid = submit_id(data_dir, "qwen2.5:0.5b", "from another process", "--name", "xproc")
        job = store.get_job(jid)
        assert job is not None and job.name == "xproc" and job.model == "qwen2.5:0.5b"
    rows = ok_json(run_cli(data_dir, "list", "--json"))
    assert [r["id"] for r in rows] == [jid, 1] and rows[0]["name"] == "xproc"
    status = ok_json(run_cli(data_dir, "status", str(jid), "--json"))
    assert status == rows[0]


def test_concurrent_submitters_get_distinct_ids_without_gaps(data_dir: Path, location: str | Path) -> None:
    workers, per_worker, cli_workers = 8, 25, 8
    env = cli_env(data_dir)
    procs = [start_submitter(location, f"w{w}", per_worker) for w in range(workers)]
    procs += [subprocess.Popen([sys.executable, "-m", "ollama_cli", "submit", "llama3.2", f"cli-{w}", "--json"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
              for w in range(cli_workers)]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
        outputs.append(out.decode())
    core_acks, cli_ids = [acknowledged(o) for o in outputs[:workers]], [json.loads(o)["id"] for o in outputs[workers:]]
    for acks in core_acks:
        assert len(acks) == per_worker and list(acks) == sorted(acks)  # each process sees its ids grow
    every = [i for acks in core_acks for i in acks] + cli_ids
    total = workers * per_worker + cli_workers
    assert len(every) == total and sorted(every) == list(range(1, total + 1))

    with open_store(location) as store:  # no job overwrote another
        for acks in core_acks:
            assert {i: store.get_request(i)["prompt"] for i in acks} == acks
        assert sorted(store.get_request(i)["prompt"] for i in cli_ids) == sorted(
            f"cli-{w}" for w in range(cli_workers))
    rows = ok_json(run_cli(data_dir, "list", "--json"))
    assert [r["id"] for r in rows] == list(range(total, 0, -1))
    assert ok_json(run_cli(data_dir, "info", "--json"))["jobs"] == {
        "pending": total, "running": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": total}
    assert submit_id(data_dir, "llama3.2", "next") == total + 1


# ------------------------------------------------------------------------------ 6. the data dir


@pytest.mark.lmdb_only
def test_data_dir_is_private_even_under_an_open_umask(tmp_path: Path, data_dir: Path) -> None:
    target = tmp_path / "nested" / "queue"
    proc = subprocess.run([sys.executable, "-m", "ollama_cli", "submit", "llama3.2", "secret", "--data-dir",
                           str(target)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=cli_env(data_dir), preexec_fn=lambda: os.umask(0), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for name in ("data.mdb", "lock.mdb"):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600, name


@pytest.mark.lmdb_only
def test_data_dir_flag_wins_over_the_variable(tmp_path: Path, data_dir: Path) -> None:
    flagged = tmp_path / "flagged"
    jid = submit_id(data_dir, "llama3.2", "where am I", "--data-dir", str(flagged))
    assert (flagged / "data.mdb").exists()
    assert not data_dir.exists()  # OLLAMA_Q_DATA_DIR was not touched
    info = ok_json(run_cli(data_dir, "info", "--json", "--data-dir", str(flagged)))
    assert Path(info["data_dir"]) == flagged and info["jobs"]["total"] == 1
    assert ok_json(run_cli(data_dir, "status", str(jid), "--json", "--data-dir", str(flagged)))["id"] == jid
    assert jobs_total(data_dir) == 0
    assert Path(ok_json(run_cli(data_dir, "info", "--json"))["data_dir"]) == data_dir


# ------------------------------------------------------------------------------ 7. version, help, script


def test_version(data_dir: Path) -> None:
    res = run_cli(data_dir, "--version")
    assert res.returncode == 0 and res.stderr == ""
    assert res.stdout == f"ollama-q {__version__}\n"
    assert ok_json(run_cli(data_dir, "info", "--json"))["version"] == __version__


def test_help_lists_every_command(data_dir: Path) -> None:
    from ollama_cli.cli.app import COMMANDS

    res = run_cli(data_dir, "--help")
    assert res.returncode == 0, res.stderr
    listed = set(re.findall(r"^\s{2}([a-z][a-z-]*)\s", res.stdout, re.M))
    assert set(SHIPPED_COMMANDS) <= listed, set(SHIPPED_COMMANDS) - listed
    assert set(COMMANDS) <= listed
    sub = run_cli(data_dir, "submit", "--help")
    assert sub.returncode == 0 and "--priority" in sub.stdout and "--wait" in sub.stdout


def test_console_script(data_dir: Path) -> None:
    script = Path(sys.executable).parent / "ollama-q"
    if not script.exists():
        pytest.skip("the ollama-q console script is not installed in this environment")
    env = cli_env(data_dir)
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=env, timeout=60)
    assert version.returncode == 0 and version.stdout == f"ollama-q {__version__}\n"
    sub = subprocess.run([str(script), "submit", "llama3.2", "via the script", "--json"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, env=env, timeout=60)
    assert sub.returncode == 0, sub.stderr
    assert json.loads(sub.stdout)["id"] == 1
    bad = subprocess.run([str(script), "status", "abc"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1
