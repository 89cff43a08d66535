"""Batches: JSONL lines (OpenAI's and native) to jobs, a bad line rejecting the whole
file, and results in the shape of OpenAI's batch output file after a daemon drain
against the emulator."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from ollama_cli import batch
from ollama_cli.errors import UsageError
from ollama_cli.jobs import JobSpec, JobStatus, JobType, Priority
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from tests.helpers.cli import jobs_total, ok_json, run_cli, run_main
from tests.emulator import Emulator
from tests.helpers.daemon import drain
from tests.helpers.invariants import check_invariants

pytestmark = pytest.mark.usefixtures("rerun_writes")


def openai(custom_id: str, url: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def chat(custom_id: str, content: str, **body: Any) -> dict[str, Any]:
    return openai(custom_id, "/v1/chat/completions", model="llama3.2",
                  messages=[{"role": "user", "content": content}], **body)


def jsonl(*lines: dict[str, Any] | str) -> str:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)


def parse(*lines: dict[str, Any] | str, **options: Any) -> list[JobSpec]:
    return batch.parse(jsonl(*lines), **options)


# ------------------------------------------------------------------------ mapping


def test_openai_chat_line_maps_body_to_a_chat_request() -> None:
    [spec] = parse(chat("q1", "hi", temperature=0.2, top_p=0.9, seed=7, stop="END", frequency_penalty=0.1,
                        presence_penalty=0.3, max_tokens=64, response_format={"type": "json_object"},
                        n=1, user="ignored"))
    assert (spec.model, spec.type, spec.custom_id, spec.priority) == ("llama3.2", JobType.CHAT, "q1", Priority.MEDIUM)
    assert spec.request == {
        "messages": [{"role": "user", "content": "hi"}],
        "options": {"temperature": 0.2, "top_p": 0.9, "seed": 7, "stop": ["END"], "frequency_penalty": 0.1,
                    "presence_penalty": 0.3, "num_predict": 64},
        "format": "json",
    }


def test_openai_chat_content_parts_developer_role_and_json_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    [spec] = parse(openai("q", "/v1/chat/completions", model="llama3.2", messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
    ], response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}))
    assert spec.request == {"messages": [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": "one\ntwo"}], "format": schema}


def test_openai_completions_and_embeddings_lines() -> None:
    gen, one, many = parse(
        openai("g", "/v1/completions", model="qwen2.5:0.5b", prompt="Once", max_tokens=16),
        openai("e1", "/v1/embeddings", model="all-minilm", input="a"),
        openai("e2", "/v1/embeddings", model="all-minilm", input=["a", "b"], dimensions=8),
    )
    assert (gen.type, gen.model, gen.request) == (JobType.GENERATE, "qwen2.5:0.5b",
                                                  {"prompt": "Once", "options": {"num_predict": 16}})
    assert (one.type, one.request) == (JobType.EMBED, {"input": ["a"]})
    assert (many.type, many.request) == (JobType.EMBED, {"input": ["a", "b"], "dimensions": 8})


def test_native_lines_infer_their_type_and_take_submits_fields() -> None:
    gen, conv, emb, typed = parse(
        {"custom_id": "n1", "model": "llama3.2", "prompt": "p", "system": "s", "options": {"num_ctx": 512},
         "format": "json", "priority": "urgent", "keep_alive": "5m"},
        {"model": "llama3.2", "messages": [{"role": "user", "content": "m", "images": ["aGk="]}]},
        {"model": "all-minilm", "input": ["x"]},
        {"model": "llama3.2", "type": "chat", "prompt": "hello", "system": "sys"},
    )
    assert (gen.type, gen.custom_id, gen.priority, gen.keep_alive) == (JobType.GENERATE, "n1", Priority.URGENT, 300.0)
    assert gen.request == {"prompt": "p", "system": "s", "options": {"num_ctx": 512}, "format": "json"}
    assert (conv.type, conv.custom_id) == (JobType.CHAT, "request-2")
    assert conv.request == {"messages": [{"role": "user", "content": "m", "images": ["aGk="]}]}
    assert (emb.type, emb.request) == (JobType.EMBED, {"input": ["x"]})
    assert typed.request == {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}]}


def test_model_auto_as_the_default_is_refused_at_the_first_line_it_reaches() -> None:
    with pytest.raises(UsageError, match=r"^line 2: model auto needs routing"):
        parse({"model": "llama3.2", "prompt": "p"}, {"prompt": "p"}, model="auto")


def test_model_is_a_default_and_priority_applies_to_every_line() -> None:
    own, default = parse({"model": "all-minilm", "input": "x", "priority": "low"}, {"prompt": "p"},
                         model="llama3.2", priority=Priority.HIGH)
    assert (own.model, default.model) == ("all-minilm", "llama3.2")
    assert own.priority is default.priority is Priority.HIGH


@pytest.mark.parametrize("line, message", [
    ('{"custom_id": "x", ', "not JSON"),
    ('{"model": "llama3.2", "prompt": "p"} {"x": 1}', "extra data"),
    ('{"model": "llama3.2", "prompt": "p", "options": {"temperature": NaN}}', "NaN is Python's extension"),
    ('["not", "an", "object"]', "not a JSON object"),
    (openai("x", "/v1/responses", model="llama3.2", input="hi"), "unknown url '/v1/responses'"),
    ({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions"}, "no body"),
    (openai("x", "/v1/chat/completions", model="llama3.2", messages=[]), "body.messages"),
    (openai("x", "/v1/chat/completions", model="llama3.2", messages=[{"role": "system", "content": "s"}]),
     "a chat needs a message"),
    (openai("x", "/v1/completions", model="llama3.2", prompt=["a", "b"]), "body.prompt must be a string"),
    (openai("x", "/v1/embeddings", model="all-minilm", input=[1, 2]), "body.input"),
    (openai("x", "/v1/chat/completions", model="llama3.2", messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]),
     "only text content parts"),
    ({**chat("x", "hi"), "method": "GET"}, "method must be POST"),
    ({"prompt": "no model here"}, "no model"),
    ({"model": "llama3.2", "promt": "typo"}, "unknown field 'promt'"),
    ({"model": "llama3.2", "type": "generate", "messages": [{"role": "user", "content": "m"}]},
     "messages need type chat"),
    ({"model": "bad model name!", "prompt": "p"}, "invalid model name"),
    ({"model": "auto", "prompt": "p", "custom_id": "a"}, "model auto needs routing: use submit auto --category"),
    ({"model": "llama3.2", "prompt": "p", "custom_id": 7}, "custom_id must be a non-empty string"),
])
def test_a_bad_line_is_named(line: dict[str, Any] | str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse(chat("ok-1", "fine"), "", line)
    assert exc.value.message.startswith("line 3: ") and message in exc.value.message


def test_duplicate_custom_ids_name_both_lines_and_generated_ids_count_too() -> None:
    with pytest.raises(UsageError, match=r"^line 3: custom_id 'a' is already used on line 1$"):
        parse(chat("a", "x"), chat("b", "y"), chat("a", "z"))
    with pytest.raises(UsageError, match=r"^line 2: custom_id 'request-2' is already used on line 1$"):
        parse(chat("request-2", "x"), {"model": "llama3.2", "prompt": "p"})


def test_blank_lines_crlf_and_a_bom_are_fine_but_an_empty_file_is_not() -> None:
    text = "\ufeff" + json.dumps(chat("a", "x")) + "\r\n\r\n  \n" + json.dumps(chat("b", "y")) + "\r\n"
    assert [s.custom_id for s in batch.parse(batch.decode(text.encode()))] == ["a", "b"]
    with pytest.raises(UsageError, match="no requests"):
        batch.parse("\n \n")


def test_not_utf8_names_its_line() -> None:
    with pytest.raises(UsageError, match=r"^line 2: not UTF-8"):
        batch.decode(jsonl(chat("a", "x")).encode() + b'{"prompt": "\xff"}\n')


# ----------------------------------------------------------------- submit_many


def test_submit_many_keeps_the_invariants_and_answers_from_the_cache(store: Engine, emulator: Emulator) -> None:
    first = store.submit(JobSpec(model="llama3.2", type=JobType.GENERATE, request={"prompt": "again"}), 1.0)
    drain(store, emulator.url)
    specs = parse({"model": "llama3.2", "prompt": "again"}, {"model": "llama3.2", "prompt": "new", "priority": "low"},
                  {"model": "llama3.2", "prompt": "newer", "priority": "urgent"})
    sub = batch.submit(store, specs, 2.0)
    assert (sub.batch, sub.jobs, sub.first_id, sub.last_id) == ("batch-1", 3, first.id + 1, first.id + 3)
    check_invariants(store)
    hit, low, urgent = store.get_jobs(range(sub.first_id, sub.last_id + 1))
    assert hit.status is JobStatus.COMPLETED and hit.cached
    assert store.get_result(hit.id) == store.get_result(first.id)
    assert (low.status, urgent.status) == (JobStatus.PENDING, JobStatus.PENDING)
    assert store.positions([urgent, low], 2.0) == {urgent.id: 1, low.id: 2}
    assert (store.cache_stats()["hits"], store.cache_stats()["misses"]) == (1, 3)
    assert store.submit(JobSpec(model="m", type=JobType.GENERATE, request={"prompt": "x"}), 3.0).id == sub.last_id + 1


def test_names_are_generated_past_taken_ones_and_a_used_name_is_refused(store: Engine) -> None:
    specs = parse({"model": "llama3.2", "prompt": "p"})
    assert batch.submit(store, specs, 1.0, name="batch-2").batch == "batch-2"
    assert batch.submit(store, specs, 1.0).batch == "batch-1"
    assert batch.submit(store, specs, 1.0).batch == "batch-3"  # batch-2 is the user's
    with pytest.raises(UsageError, match="already used"):
        batch.submit(store, specs, 1.0, name="batch-3")
    with pytest.raises(UsageError, match="invalid batch name"):
        batch.submit(store, specs, 1.0, name="-x")
    assert store.counts()["total"] == 3


# --------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("bad, message", [
    ('{"custom_id": "x", "url": ', "not JSON"),
    (json.dumps(openai("x", "/v1/images/generations", prompt="cat")), "unknown url"),
    (json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/completions"}), "no body"),
    (json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}}),
     "no body.model"),
    (json.dumps(chat("ok-1", "again")), "custom_id 'ok-1' is already used on line 1"),
    (json.dumps(openai("x", "/v1/chat/completions", model="llama3.2")), "body.messages"),
    # "auto" is routed by submit only: queued as it is, the job would fail later as model_not_found.
    (json.dumps(openai("x", "/v1/chat/completions", model="auto", messages=[{"role": "user", "content": "m"}])),
     "body.model auto needs routing: use submit auto --category NAME"),
])
def test_cli_rejects_the_whole_file_for_one_bad_line(data_dir: Path, tmp_path: Path, bad: str, message: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(jsonl(chat("ok-1", "one"), chat("ok-2", "two"), bad, chat("ok-3", "three")))
    proc = run_cli(data_dir, "batch", "submit", str(path), "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: line 3: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert jobs_total(data_dir) == 0


def test_cli_reads_stdin_and_rejects_bytes_that_are_not_utf8(data_dir: Path) -> None:
    proc = run_cli(data_dir, "batch", "submit", "-", input=jsonl(chat("a", "x")).encode() + b"\xfe\xff\n")
    assert proc.returncode == 2 and proc.stderr.startswith("error: line 2: not UTF-8")
    assert jobs_total(data_dir) == 0


def test_cli_submits_1000_lines_in_one_step(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text(jsonl(*(chat(f"q{i}", f"question {i}") for i in range(1000))))
    proc = run_cli(data_dir, "batch", "submit", str(path), "--priority", "low", "--name", "nightly", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"batch": "nightly", "jobs": 1000, "first_id": 1, "last_id": 1000}
    status = run_cli(data_dir, "batch", "status", "nightly", "--json")
    assert json.loads(status.stdout) == {"batch": "nightly", "total": 1000, "pending": 1000, "running": 0,
                                         "completed": 0, "failed": 0, "cancelled": 0}
    again = run_cli(data_dir, "batch", "submit", str(path), "--name", "nightly")
    assert again.returncode == 2 and "already used" in again.stderr
    assert jobs_total(data_dir) == 1000
    check_invariants(data_dir)


def test_cli_lines_without_a_priority_take_the_config_files_and_priority_still_takes_every_line(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text('priority = "high"\n')
    monkeypatch.setenv("OLLAMA_Q_CONFIG", str(config))
    path = tmp_path / "in.jsonl"
    path.write_text(jsonl(chat("plain", "x"), {"model": "llama3.2", "prompt": "p"},
                          {"model": "llama3.2", "prompt": "p", "priority": "low", "custom_id": "own"}))
    for args, expected in (((), [Priority.HIGH, Priority.HIGH, Priority.LOW]),
                           (("--priority", "urgent"), [Priority.URGENT] * 3)):
        out = ok_json(run_main("batch", "submit", str(path), "--json", *args))
        with open_store(data_dir) as store:
            got = [store.get_job(i).priority for i in range(out["first_id"], out["last_id"] + 1)]
        assert got == expected  # the file's default is below a line's own, --priority above both


def test_cli_unknown_batch_exits_1_with_one_error_line(data_dir: Path) -> None:
    for args in (["status", "nope", "--json"], ["results", "nope"], ["wait", "nope"]):
        proc = run_cli(data_dir, "batch", *args)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr == "error: batch 'nope' not found\n"


def test_cli_unfinished_batch_times_out_and_its_results_say_not_finished(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(jsonl(chat("a", "x")))
    assert run_cli(data_dir, "batch", "submit", str(path)).returncode == 0
    proc = run_cli(data_dir, "batch", "wait", "batch-1", "--timeout", "0", "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["pending"] == 1
    assert "timed out" in proc.stderr
    results = run_cli(data_dir, "batch", "results", "batch-1")
    assert results.returncode == 0 and "have not finished" in results.stderr
    [line] = [json.loads(x) for x in results.stdout.splitlines()]
    assert line["custom_id"] == "a" and line["response"] is None and line["error"]["code"] == "not_finished"


def test_cli_submit_wait_returns_once_a_daemon_has_run_the_batch(
        data_dir: Path, tmp_path: Path, emulator: Emulator, start_daemon: Any) -> None:
    start_daemon(emulator.url)
    path = tmp_path / "in.jsonl"
    path.write_text(jsonl(*(chat(f"q{i}", f"question {i}") for i in range(5))))
    proc = run_cli(data_dir, "batch", "submit", str(path), "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"batch": "batch-1", "jobs": 5, "first_id": 1, "last_id": 5}
    status = json.loads(run_cli(data_dir, "batch", "status", "batch-1", "--json").stdout)
    assert status["completed"] == status["total"] == 5


# ------------------------------------------------------- results after a drain


def test_results_after_a_drain_have_openais_shape(data_dir: Path, tmp_path: Path, emulator: Emulator) -> None:
    conversation = [{"role": "user", "content": "Why is the sky blue?"}]
    lines = [
        openai("chat-1", "/v1/chat/completions", model="llama3.2", messages=conversation, max_tokens=12),
        openai("gen-1", "/v1/completions", model="llama3.2", prompt="Once upon a time"),
        openai("emb-1", "/v1/embeddings", model="all-minilm", input=["first", "second"]),
        {"custom_id": "native-1", "model": "llama3.2", "messages": conversation},
        openai("lost-1", "/v1/chat/completions", model="no-such-model", messages=conversation),
    ]
    path = tmp_path / "in.jsonl"
    path.write_text(jsonl(*lines))
    other = run_cli(data_dir, "submit", "llama3.2", "not in the batch", "--json")
    assert other.returncode == 0, other.stderr
    sub = run_cli(data_dir, "batch", "submit", str(path), "--json")
    assert sub.returncode == 0, sub.stderr
    name = json.loads(sub.stdout)["batch"]

    with open_store(data_dir) as store:
        drain(store, emulator.url, concurrency=2)
    check_invariants(data_dir)

    proc = run_cli(data_dir, "batch", "results", name)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    by_id = {row["custom_id"]: row for row in rows}
    assert [row["custom_id"] for row in rows] == [line["custom_id"] for line in lines]
    assert all(row["id"].startswith("batch_req_") for row in rows)

    expected = httpx.post(f"{emulator.url}/api/chat", json={
        "model": "llama3.2", "messages": conversation, "options": {"num_predict": 12}, "stream": False}).json()
    body = by_id["chat-1"]["response"]["body"]
    assert by_id["chat-1"]["error"] is None and by_id["chat-1"]["response"]["status_code"] == 200
    assert body["object"] == "chat.completion" and body["model"] == "llama3.2"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": expected["message"]["content"]}
    assert body["usage"] == {"prompt_tokens": expected["prompt_eval_count"], "completion_tokens":
                             expected["eval_count"], "total_tokens": expected["prompt_eval_count"] +
                             expected["eval_count"]}
    native = by_id["native-1"]["response"]["body"]
    assert native["object"] == "chat.completion" and native["choices"][0]["message"]["content"]

    text = by_id["gen-1"]["response"]["body"]
    assert text["object"] == "text_completion" and text["choices"][0]["text"]

    emb = by_id["emb-1"]["response"]["body"]
    assert emb["object"] == "list" and [d["index"] for d in emb["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and d["embedding"] and isinstance(d["embedding"][0], float)
               for d in emb["data"])

    lost = by_id["lost-1"]
    assert lost["response"] is None and lost["error"]["code"] == "model_not_found" and lost["error"]["message"]

    listed = json.loads(run_cli(data_dir, "list", "--batch", name, "--json").stdout)
    assert sorted(j["custom_id"] for j in listed) == sorted(by_id) and {j["batch"] for j in listed} == {name}
    status = json.loads(run_cli(data_dir, "batch", "status", name, "--json").stdout)
    assert status == {"batch": name, "total": 5, "pending": 0, "running": 0, "completed": 4, "failed": 1,
                      "cancelled": 0}
    waited = run_cli(data_dir, "batch", "wait", name, "--json")
    assert waited.returncode == 1 and json.loads(waited.stdout) == status  # one failed

    out = tmp_path / "out.jsonl"
    written = run_cli(data_dir, "batch", "results", name, "--output", str(out))
    assert written.returncode == 0 and written.stdout == ""
    assert out.read_text() == proc.stdout
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.jsonl.")] == []
