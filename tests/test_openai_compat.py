"""The client for OpenAI-compatible servers, against the emulator's /v1 endpoints (which
answer exactly as its native ones for the same input), plus a few stream shapes only
other servers send, served by httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from ollama_cli.clients import client_for
from ollama_cli.clients.base import BackendError
from ollama_cli.settings.hosts import Backend
from ollama_cli.jobs import ErrorType, JobStatus, JobType
from ollama_cli.clients.openai import OpenAIClient
from ollama_cli.store.base import Engine
from tests.helpers.cli import run_cli
from tests.emulator import Emulator
from tests.helpers.jobs import make_job, read_job, submit_spec

pytestmark = pytest.mark.usefixtures("rerun_writes")


async def _with_client(url: str, transport: httpx.AsyncBaseTransport | None, call: Any) -> Any:
    client = client_for(Backend(url, "openai"), transport=transport)
    assert isinstance(client, OpenAIClient)
    try:
        return await call(client)
    finally:
        await client.aclose()


def run(url: str, request: dict[str, Any], kind: JobType = JobType.GENERATE, model: str = "llama3.2",
        transport: httpx.AsyncBaseTransport | None = None) -> dict[str, Any]:
    return asyncio.run(_with_client(url, transport, lambda c: c.run(make_job(model=model, type=kind), request)))


def failure(url: str, request: dict[str, Any], kind: JobType = JobType.GENERATE, model: str = "llama3.2",
            transport: httpx.AsyncBaseTransport | None = None) -> BackendError:
    with pytest.raises(BackendError) as info:
        run(url, request, kind, model, transport)
    return info.value


def native(emu: Emulator, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(f"{emu.url}{path}", json={**body, "stream": False})
    assert resp.status_code == 200, resp.text
    return resp.json()


def sent(emu: Emulator) -> list[tuple[str, dict[str, Any]]]:
    return [(path, body) for _, path, body in emu.requests if path.startswith("/v1/") and body is not None]


# ------------------------------------------------------------------ each job type


def test_generate_streams_the_same_text_as_native_and_maps_usage(emulator: Emulator) -> None:
    out = run(emulator.url, {"prompt": "Why is the sky blue?"})
    whole = native(emulator, "/api/generate", {"model": "llama3.2", "prompt": "Why is the sky blue?"})
    assert set(out) == {"response", "stats"} and out["response"] == whole["response"]
    stats = out["stats"]
    assert stats["prompt_eval_count"] == whole["prompt_eval_count"]
    assert stats["eval_count"] == whole["eval_count"]
    assert isinstance(stats["total_duration"], int) and isinstance(stats["eval_duration"], int)
    assert set(stats) == {"total_duration", "prompt_eval_count", "eval_count", "eval_duration"}
    [(path, body)] = sent(emulator)
    assert path == "/v1/completions"
    assert body == {"model": "llama3.2", "prompt": "Why is the sky blue?", "stream": True,
                    "stream_options": {"include_usage": True}}


def test_chat_streams_the_same_message_as_native(emulator: Emulator) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "again"}]
    out = run(emulator.url, {"messages": messages}, JobType.CHAT)
    whole = native(emulator, "/api/chat", {"model": "llama3.2", "messages": messages})
    assert out["message"] == {"role": "assistant", "content": whole["message"]["content"]}
    assert out["stats"]["eval_count"] == whole["eval_count"]
    assert out["stats"]["prompt_eval_count"] == whole["prompt_eval_count"]
    [(path, body)] = sent(emulator)
    assert path == "/v1/chat/completions" and body["messages"] == messages


def test_generate_with_a_system_prompt_goes_as_a_conversation(emulator: Emulator) -> None:
    out = run(emulator.url, {"prompt": "hi", "system": "Be brief."})
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    whole = native(emulator, "/api/chat", {"model": "llama3.2", "messages": messages})
    assert set(out) == {"response", "stats"} and out["response"] == whole["message"]["content"]
    [(path, body)] = sent(emulator)
    assert path == "/v1/chat/completions" and body["messages"] == messages and "prompt" not in body


def test_embed_gives_the_native_vectors_in_input_order(emulator: Emulator) -> None:
    inputs = ["first text", "second text", "third"]
    out = run(emulator.url, {"input": inputs}, JobType.EMBED, model="all-minilm")
    whole = native(emulator, "/api/embed", {"model": "all-minilm", "input": inputs})
    assert out["embeddings"] == whole["embeddings"]
    assert out["stats"]["prompt_eval_count"] == whole["prompt_eval_count"]
    assert set(out["stats"]) == {"total_duration", "prompt_eval_count"}
    [(path, body)] = sent(emulator)
    assert path == "/v1/embeddings" and body == {"model": "all-minilm", "input": inputs}


# ------------------------------------------------------------------ options and format


def test_options_are_mapped_and_unknown_ones_dropped(emulator: Emulator) -> None:
    options = {"temperature": 0.2, "top_p": 0.9, "seed": 7, "stop": ["zz"], "frequency_penalty": 0.1,
               "presence_penalty": 0.3, "num_predict": 5, "top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1,
               "num_ctx": 8192, "mirostat": 1}
    out = run(emulator.url, {"prompt": "count", "options": options})
    [(_, body)] = sent(emulator)
    assert body == {"model": "llama3.2", "prompt": "count", "stream": True,
                    "stream_options": {"include_usage": True},
                    "temperature": 0.2, "top_p": 0.9, "seed": 7, "stop": ["zz"], "frequency_penalty": 0.1,
                    "presence_penalty": 0.3, "max_tokens": 5, "top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1}
    # The server honoured them: the same text as native Ollama with the same options.
    whole = native(emulator, "/api/generate", {"model": "llama3.2", "prompt": "count", "options": options})
    assert out["response"] == whole["response"] and out["stats"]["eval_count"] == 5


def test_unlimited_num_predict_sends_no_max_tokens(emulator: Emulator) -> None:
    run(emulator.url, {"prompt": "go on", "options": {"num_predict": -1}})
    [(_, body)] = sent(emulator)
    assert "max_tokens" not in body


def test_json_format_becomes_a_json_object_response_format(emulator: Emulator) -> None:
    out = run(emulator.url, {"prompt": "give json", "format": "json"})
    [(path, body)] = sent(emulator)
    assert path == "/v1/chat/completions" and body["response_format"] == {"type": "json_object"}
    whole = native(emulator, "/api/chat", {"model": "llama3.2", "format": "json",
                                           "messages": [{"role": "user", "content": "give json"}]})
    assert out["response"] == whole["message"]["content"]
    assert isinstance(json.loads(out["response"]), dict)


def test_schema_format_becomes_a_json_schema_response_format(emulator: Emulator) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    run(emulator.url, {"messages": [{"role": "user", "content": "x"}], "format": schema}, JobType.CHAT)
    [(_, body)] = sent(emulator)
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "schema", "schema": schema}}


# ------------------------------------------------------------------ failures


@pytest.mark.parametrize("kind, model", [(JobType.GENERATE, "llama3.2"), (JobType.CHAT, "llama3.2"),
                                         (JobType.EMBED, "all-minilm")])
def test_missing_model_is_permanent(emulator: Emulator, kind: JobType, model: str) -> None:
    request = {"input": ["x"]} if kind is JobType.EMBED else \
        {"messages": [{"role": "user", "content": "x"}]} if kind is JobType.CHAT else {"prompt": "x"}
    err = failure(emulator.url, request, kind, model="no-such-model")
    assert err.kind is ErrorType.MODEL_NOT_FOUND and not err.transient
    assert "no-such-model" in err.message


@pytest.mark.parametrize("status, kind, transient", [
    (400, ErrorType.BAD_REQUEST, False),
    (500, ErrorType.BACKEND_ERROR, True),
    (503, ErrorType.BACKEND_ERROR, True),
])
def test_http_errors_are_classified(emulator: Emulator, status: int, kind: ErrorType, transient: bool) -> None:
    emulator.fail_next(kind="status", status=status, message="boom")
    err = failure(emulator.url, {"prompt": "x"})
    assert (err.kind, err.transient) == (kind, transient) and "boom" in err.message


def test_embed_http_error_is_classified(emulator: Emulator) -> None:
    emulator.fail_next(kind="status", status=503)
    err = failure(emulator.url, {"input": ["x"]}, JobType.EMBED, model="all-minilm")
    assert err.kind is ErrorType.BACKEND_ERROR and err.transient and "server busy" in err.message


@pytest.mark.parametrize("kind", [JobType.GENERATE, JobType.CHAT])
def test_a_dropped_stream_is_transient(emulator: Emulator, kind: JobType) -> None:
    emulator.fail_next(kind="drop", after_chunks=2)
    request = {"messages": [{"role": "user", "content": "x"}]} if kind is JobType.CHAT else {"prompt": "x"}
    err = failure(emulator.url, request, kind)
    assert err.kind is ErrorType.BACKEND_ERROR and err.transient


def test_an_error_event_in_the_stream_is_transient(emulator: Emulator) -> None:
    emulator.fail_next(kind="stream_error", after_chunks=2, message="runner crashed mid-answer")
    err = failure(emulator.url, {"prompt": "x"})
    assert err.kind is ErrorType.BACKEND_ERROR and err.transient
    assert err.message == "runner crashed mid-answer"


def sse(*events: str | dict[str, Any]) -> bytes:
    return b"".join(b"data: " + (e.encode() if isinstance(e, str) else json.dumps(e).encode()) + b"\n\n"
                    for e in events)


def serving(status: int, content: bytes) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=content))


def test_a_stream_without_done_is_transient() -> None:
    body = sse({"choices": [{"index": 0, "text": "Hel", "finish_reason": None}]},
               {"choices": [{"index": 0, "text": "lo", "finish_reason": "stop"}]})
    err = failure("http://server:8080", {"prompt": "x"}, transport=serving(200, body))
    assert err.kind is ErrorType.BACKEND_ERROR and err.transient and "[DONE]" in err.message


def test_done_without_a_finish_reason_is_transient() -> None:
    body = sse({"choices": [{"index": 0, "text": "Hel", "finish_reason": None}]}, "[DONE]")
    err = failure("http://server:8080", {"prompt": "x"}, transport=serving(200, body))
    assert err.kind is ErrorType.BACKEND_ERROR and err.transient and "finish_reason" in err.message


def test_other_servers_stream_shapes() -> None:
    """llama-server/vLLM: keep-alive comments, `data:` without a space, a role-only first
    delta, reasoning in `reasoning_content`, usage on the finishing chunk, null usage."""
    body = (b": keep-alive\n\n"
            + b'data:{"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}],"usage":null}\n\n'
            + sse({"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}, "finish_reason": None}]},
                  {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
                  {"choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
                  "[DONE]"))
    out = run("http://server:8080", {"messages": [{"role": "user", "content": "x"}]}, JobType.CHAT,
              transport=serving(200, body))
    assert out["message"] == {"role": "assistant", "content": "Hi!", "thinking": "hmm"}
    assert out["stats"]["prompt_eval_count"] == 3 and out["stats"]["eval_count"] == 2


def test_vllm_error_event_and_missing_model_wording() -> None:
    body = sse({"object": "error", "message": "CUDA out of memory", "type": "InternalServerError", "code": 500})
    err = failure("http://server:8000", {"prompt": "x"}, transport=serving(200, body))
    assert err.kind is ErrorType.BACKEND_ERROR and err.transient and "CUDA out of memory" in err.message
    missing = json.dumps({"object": "error", "message": "The model `x` does not exist.",
                          "type": "NotFoundError", "code": 404}).encode()
    err = failure("http://server:8000", {"prompt": "x"}, transport=serving(404, missing))
    assert err.kind is ErrorType.MODEL_NOT_FOUND and not err.transient


def test_embeddings_are_ordered_by_index() -> None:
    body = json.dumps({"object": "list", "data": [
        {"object": "embedding", "embedding": [0.2], "index": 1},
        {"object": "embedding", "embedding": [0.1], "index": 0}], "usage": {"prompt_tokens": 4}}).encode()
    out = run("http://server:8080", {"input": ["a", "b"]}, JobType.EMBED, transport=serving(200, body))
    assert out["embeddings"] == [[0.1], [0.2]] and out["stats"]["prompt_eval_count"] == 4


def test_embeddings_that_do_not_match_the_inputs_are_invalid() -> None:
    body = json.dumps({"data": [{"embedding": "AAAAPw==", "index": 0}]}).encode()  # base64, unasked
    err = failure("http://server:8080", {"input": ["a"]}, JobType.EMBED, transport=serving(200, body))
    assert err.kind is ErrorType.INVALID_RESPONSE


# ------------------------------------------------------------------ models, ping, base URL


def test_models_loaded_and_ping(emulator: Emulator) -> None:
    async def calls(client: OpenAIClient) -> tuple[Any, Any, Any]:
        return await client.models(), await client.loaded(), await client.ping()

    models, loaded, alive = asyncio.run(_with_client(emulator.url, None, calls))
    listing = httpx.get(f"{emulator.url}/v1/models").json()["data"]
    assert [m["name"] for m in models] == [m["id"] for m in listing]
    assert loaded == {m["id"] for m in listing} and alive is True
    for m in models:
        assert m["loaded"] is True and m["modified_at"].endswith("Z")
        assert m["size"] is m["family"] is m["parameter_size"] is m["quantization_level"] is None


def test_ping_of_a_closed_port_is_false() -> None:
    async def ping(client: OpenAIClient) -> bool:
        return await client.ping()

    assert asyncio.run(_with_client("http://127.0.0.1:1", None, ping)) is False


def test_a_base_url_ending_in_v1_is_accepted(emulator: Emulator) -> None:
    out = run(emulator.url + "/v1", {"prompt": "hello"})
    whole = native(emulator, "/api/generate", {"model": "llama3.2", "prompt": "hello"})
    assert out["response"] == whole["response"]
    assert [p for p, _ in sent(emulator)] == ["/v1/completions"]


# ------------------------------------------------------------------ through the daemon and the CLI


def test_daemon_drains_every_type_through_an_openai_backend(store: Engine, emulator: Emulator) -> None:
    from ollama_cli.daemon.loop import Daemon
    from ollama_cli.settings import DaemonSettings

    ids = [submit_spec(store, "hello"), submit_spec(store, "hi", job_type=JobType.CHAT),
           submit_spec(store, "vector me", model="all-minilm", job_type=JobType.EMBED)]
    emulator.fail_next(kind="drop", after_chunks=2, model="llama3.2")  # one transient failure on the way
    daemon = Daemon(store, [Backend(emulator.url, "openai")],
                    DaemonSettings(concurrency=2, drain=True, retry_backoff=0.01, poll=0.02))
    asyncio.run(daemon.run())
    assert {p for _, p, body in emulator.requests if body is not None} == {
        "/v1/completions", "/v1/chat/completions", "/v1/embeddings"}
    for job_id in ids:
        j = read_job(store, job_id)
        assert j.status is JobStatus.COMPLETED and j.host == f"openai+{emulator.url}" and j.error is None
    assert sum(read_job(store, i).attempts for i in ids) == 4
    gen, chat, emb = (store.get_result(i) for i in ids)
    whole = native(emulator, "/api/generate", {"model": "llama3.2", "prompt": "hello"})
    assert gen["response"] == whole["response"]
    assert chat["message"]["content"] == native(emulator, "/api/chat", {
        "model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})["message"]["content"]
    assert emb["embeddings"] == native(emulator, "/api/embed", {"model": "all-minilm", "input": ["vector me"]})[
        "embeddings"]


def test_cli_models_lists_an_openai_backend(data_dir: Path, emulator: Emulator) -> None:
    proc = run_cli(data_dir, "models", "--host", f"openai+{emulator.url}", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    listing = httpx.get(f"{emulator.url}/v1/models").json()["data"]
    assert [r["name"] for r in rows] == [m["id"] for m in listing]
    assert all(r["loaded"] is True and r["size"] is None for r in rows)
