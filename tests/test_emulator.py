"""Tests of the Ollama emulator itself: wire shapes, faults, scheduling and the test hooks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulator import BUSY_MESSAGE, CRASH_MESSAGE, Emulator


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as e:
        yield e


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=10) as c:
        yield c


def ndjson(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.text.endswith("\n")
    return [json.loads(line) for line in resp.text.split("\n")[:-1]]


def test_stream_and_non_stream_give_the_same_text(client: httpx.Client) -> None:
    body = {"model": "llama3.2", "prompt": "Why is the sky blue?", "options": {"seed": 1}}
    r = client.post("/api/generate", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.headers["transfer-encoding"] == "chunked"
    chunks = ndjson(r)
    final = chunks[-1]
    assert [c["done"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert final["done_reason"] == "stop" and final["eval_count"] == len(chunks) - 1
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int) and final[key] > 0, key  # the first request loaded the model

    one = client.post("/api/generate", json={**body, "stream": False})
    assert one.headers["content-type"] == "application/json; charset=utf-8"
    assert not one.text.endswith("\n")
    assert one.json()["response"] == "".join(c["response"] for c in chunks)
    assert "load_duration" not in one.json()  # already loaded: omitted, like Go's omitempty

    # Case-insensitive names with the default tag; the model is echoed as sent.
    capped = client.post("/api/generate", json={**body, "model": "LLAMA3.2:latest", "stream": False,
                                                 "options": {"seed": 1, "num_predict": 3}}).json()
    assert capped["model"] == "LLAMA3.2:latest"
    assert capped["eval_count"] == 3 and capped["done_reason"] == "length"


def test_chat_and_v1_chat_agree(client: httpx.Client) -> None:
    messages = [{"role": "user", "content": "hello"}]
    chat = client.post("/api/chat", json={"model": "llama3.2", "messages": messages, "stream": False}).json()
    assert chat["message"]["role"] == "assistant" and chat["message"]["content"]
    assert "context" not in chat

    r = client.post("/v1/chat/completions", json={"model": "llama3.2", "messages": messages, "stream": True,
                                                  "stream_options": {"include_usage": True}})
    assert r.headers["content-type"] == "text/event-stream"
    events = r.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
    usage = payloads[-1]["usage"]
    assert usage["completion_tokens"] == len(payloads) - 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    text = "".join(p["choices"][0]["delta"]["content"] for p in payloads if p["choices"])
    assert text == chat["message"]["content"]

    plain = client.post("/v1/chat/completions", json={"model": "llama3.2", "messages": messages}).json()
    assert plain["object"] == "chat.completion"
    assert plain["choices"][0]["message"]["content"] == text


@pytest.mark.parametrize("path,body,status,error", [
    ("/api/generate", {"model": "nope"}, 404, "model 'nope' not found"),
    ("/api/generate", {}, 404, "model '' not found"),
    ("/api/chat", {"model": "nope", "messages": []}, 404, "model 'nope' not found"),
    ("/api/chat", {"messages": []}, 400, "model is required"),
    ("/api/embed", {"model": "nope", "input": "x"}, 404, 'model "nope" not found, try pulling it first'),
    ("/api/show", {"model": "nope"}, 404, "model 'nope:latest' not found"),
    ("/api/generate", {"model": "all-minilm", "prompt": "x"}, 400, '"all-minilm" does not support generate'),
    ("/api/chat", {"model": "all-minilm", "messages": [{"role": "user", "content": "x"}]}, 400,
     '"all-minilm" does not support chat'),
    ("/api/generate", {"model": "llama3.2", "keep_alive": "300"}, 400, 'time: missing unit in duration "300"'),
    ("/api/generate", {"model": "llama3.2", "prompt": "x", "options": {"num_ctx": "big"}}, 500,
     'option "num_ctx" must be of type integer'),
])
def test_error_bodies(client: httpx.Client, path: str, body: dict[str, Any], status: int, error: str) -> None:
    r = client.post(path, json=body)
    assert (r.status_code, r.json()) == (status, {"error": error})


def test_non_json_errors(client: httpx.Client) -> None:
    r = client.get("/api/nothing")
    assert (r.status_code, r.headers["content-type"], r.text) == (404, "text/plain", "404 page not found")
    assert client.get("/api/generate").status_code == 405
    missing = client.post("/api/generate")
    assert (missing.status_code, missing.json()) == (400, {"error": "missing request body"})
    v1 = client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert v1.status_code == 404
    assert v1.json()["error"] == {"message": "model 'nope' not found", "type": "not_found_error",
                                  "param": None, "code": None}
    assert client.get("/").text == "Ollama is running"


def test_embed_is_normalised_and_in_input_order(client: httpx.Client) -> None:
    r = client.post("/api/embed", json={"model": "all-minilm", "input": ["a", "b", "a"]}).json()
    a, b, a2 = r["embeddings"]
    assert a == a2 and a != b
    for vec in (a, b):
        assert math.isclose(math.fsum(v * v for v in vec), 1.0, abs_tol=1e-6)
    single = client.post("/api/embed", json={"model": "all-minilm", "input": "b"}).json()
    assert single["embeddings"] == [b] and single["prompt_eval_count"] > 0
    short = client.post("/api/embed", json={"model": "all-minilm", "input": "b", "dimensions": 4}).json()
    assert len(short["embeddings"][0]) == 4
    assert client.post("/api/embed", json={"model": "all-minilm", "input": []}).json() == \
        {"model": "all-minilm", "embeddings": []}


def test_fail_next_status_and_model_filter(emu: Emulator, client: httpx.Client) -> None:
    emu.fail_next(kind="status", status=503)
    r = client.post("/api/generate", json={"model": "llama3.2", "prompt": "x"})
    assert r.status_code == 503
    assert r.text == '{"error":"server busy, please try again.  maximum pending requests exceeded"}'
    assert r.json()["error"] == BUSY_MESSAGE

    emu.fail_next(2, model="qwen2.5:0.5b")
    assert client.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False}).status_code == 200
    for _ in range(2):
        r = client.post("/api/generate", json={"model": "qwen2.5:0.5b", "prompt": "x", "stream": False})
        assert (r.status_code, r.json()) == (500, {"error": CRASH_MESSAGE})
    assert client.post("/api/generate", json={"model": "qwen2.5:0.5b", "prompt": "x"}).status_code == 200


def test_fail_next_stream_error(emu: Emulator, client: httpx.Client) -> None:
    emu.fail_next(kind="stream_error", after_chunks=2, message="boom")
    r = client.post("/api/chat", json={"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]})
    lines = ndjson(r)
    assert r.status_code == 200 and len(lines) == 3
    assert lines[2] == {"error": "boom"} and lines[1]["done"] is False
    # Before anything is written Ollama turns the error into a status code.
    emu.fail_next(kind="stream_error")
    r = client.post("/api/generate", json={"model": "llama3.2", "prompt": "x"})
    assert (r.status_code, r.json()) == (500, {"error": CRASH_MESSAGE})


@pytest.mark.parametrize("after", [0, 2])
def test_fail_next_drop_truncates(emu: Emulator, client: httpx.Client, after: int) -> None:
    emu.fail_next(kind="drop", after_chunks=after)
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/api/generate", json={"model": "llama3.2", "prompt": "x"})
    assert client.post("/api/generate", json={"model": "llama3.2", "prompt": "x"}).status_code == 200


def test_failure_rate_is_reproducible() -> None:
    def outcomes() -> list[int]:
        with Emulator(seed=7) as e, httpx.Client(base_url=e.url, timeout=10) as c:
            e.failure_rate(0.5, kinds=("status500", "status503"))
            return [c.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False}).status_code
                    for _ in range(20)]

    first = outcomes()
    assert first == outcomes()
    assert {200, 500, 503} <= set(first)


def test_loads_with_max_loaded_1() -> None:
    with Emulator(max_loaded=1) as e, httpx.Client(base_url=e.url, timeout=10) as c:
        for model in ("llama3.2", "llama3.2:latest", "qwen2.5:0.5b", "llama3.2"):
            assert c.post("/api/generate", json={"model": model, "prompt": "x", "stream": False}).status_code == 200
        assert e.loads == 3
        assert e.load_log == ["llama3.2:latest", "qwen2.5:0.5b", "llama3.2:latest"]
        ps = c.get("/api/ps").json()["models"]
        assert [(m["name"], m["size_vram"] > 0) for m in ps] == [("llama3.2:latest", True)]
        unload = c.post("/api/generate", json={"model": "llama3.2", "keep_alive": 0}).json()
        assert unload["done_reason"] == "unload"
        assert c.get("/api/ps").json() == {"models": []}
        load = c.post("/api/chat", json={"model": "qwen2.5:0.5b"}).json()
        assert load["done_reason"] == "load" and e.loads == 4


def test_hold_release_and_disconnect(emu: Emulator, client: httpx.Client) -> None:
    emu.hold()
    with client.stream("POST", "/api/generate", json={"model": "llama3.2", "prompt": "held"}) as r:
        lines = r.iter_lines()
        assert json.loads(next(lines))["done"] is False  # first chunk arrives, then the job is parked
        assert emu.wait_in_flight(1) and emu.in_flight == 1
        assert emu.wait_requests(1) and emu.requests[-1] == ("POST", "/api/generate",
                                                             {"model": "llama3.2", "prompt": "held"})
        emu.release()
        assert json.loads(list(lines)[-1])["done"] is True

    emu.hold()
    with client.stream("POST", "/api/generate", json={"model": "llama3.2", "prompt": "gone"}) as r:
        next(r.iter_lines())
    # Leaving the block closed the connection mid-stream: the emulator stops generating.
    assert emu.wait_idle()
    assert emu.disconnects == 1 and emu.max_concurrent_seen == 1


def test_overlaps_are_identical_requests_answered_at_once(emu: Emulator) -> None:
    from contextlib import ExitStack

    def answering(stack: ExitStack, client: httpx.Client, sent: dict[str, Any]) -> Iterator[str]:
        """A request answered up to its first line (the emulator holds the rest)."""
        lines = stack.enter_context(client.stream("POST", "/api/generate", json=sent)).iter_lines()
        next(lines)
        return lines  # to be kept: a line iterator collected closes its stream

    body = {"model": "llama3.2", "prompt": "twice"}
    emu.hold()
    with httpx.Client(base_url=emu.url, timeout=10) as a, httpx.Client(base_url=emu.url, timeout=10) as b:
        with ExitStack() as stack:
            kept = [answering(stack, a, body), answering(stack, b, {**body, "prompt": "other"})]
            assert emu.overlaps == []  # another body
        # The first client hung up: a request of the same body is no overlap, even before the
        # emulator's handler of the first has noticed.
        with ExitStack() as stack:
            kept = [answering(stack, b, body)]
            assert emu.overlaps == []
            kept.append(answering(stack, a, body))
            assert emu.overlaps == [body]


def test_stop_releases_held_and_hanging_requests() -> None:
    emu = Emulator().start()
    emu.hold()
    emu.fail_next(kind="hang", model="qwen2.5:0.5b")
    errors: list[BaseException] = []

    def call(model: str) -> None:
        try:
            httpx.post(f"{emu.url}/api/generate", json={"model": model, "prompt": "x"}, timeout=30)
        except httpx.HTTPError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(m,)) for m in ("llama3.2", "qwen2.5:0.5b")]
    for t in threads:
        t.start()
    assert emu.wait_in_flight(2)
    emu.stop()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads) and len(errors) == 2


def test_command_line() -> None:
    script = Path(__file__).with_name("emulator.py")
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0", "--models", "a,b"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url).text == "Ollama is running"
        names = [m["name"] for m in httpx.get(f"{url}/api/tags").json()["models"]]
        assert names == ["a:latest", "b:latest"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
