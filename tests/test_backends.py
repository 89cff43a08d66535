"""Client behaviour that the emulator cannot provoke on demand: replies no Ollama sends,
served over real HTTP by the hostile double (tests/hostile.py) — endless, slowloris,
bad-typed, escape-laden, prompt-echoing, 429 — and, where only a transport exception can
stand in for a server, httpx's MockTransport."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from ollama_cli.clients import base, client_for
from ollama_cli.clients.base import BackendError
from ollama_cli.clients.ollama import OllamaClient
from ollama_cli.settings.hosts import Backend
from ollama_cli.jobs import ErrorType, JobStatus, JobType
from ollama_cli.store.base import Engine
from tests.helpers.cli import run_cli
from tests.hostile import Hostile, answer, body, echo, embeddings, endless, lines, raw, slowloris, status
from tests.helpers.daemon import drain
from tests.helpers.jobs import make_job, make_spec, read_job, submit_spec

STREAM = b'{"response":"Hi","done":false}\n{"response":"","done":true,"eval_count":1}\n'


def run_with(handler) -> dict:  # type: ignore[no-untyped-def]
    async def go() -> dict:
        client = OllamaClient(Backend("http://ollama.test"), transport=httpx.MockTransport(handler))
        try:
            return await client.run(make_job(), {"prompt": "x"})
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_a_pooled_connection_closed_by_the_server_is_retried_once_at_no_cost() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:  # what httpcore raises when a kept-alive socket was closed
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, content=STREAM)

    assert run_with(handler)["response"] == "Hi"
    assert len(calls) == 2


def test_a_server_that_keeps_disconnecting_fails_the_attempt() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    with pytest.raises(BackendError) as err:
        run_with(handler)
    assert err.value.kind is ErrorType.BACKEND_ERROR and err.value.transient


# ------------------------------------------------------------------ hostile replies: bounded cost


def run_against(url: str, request: dict[str, Any] | None = None, kind: JobType = JobType.GENERATE,
                backend: str = "ollama") -> dict[str, Any]:
    job = make_job(model="all-minilm" if kind is JobType.EMBED else "llama3.2", type=kind)
    request = request or make_spec("x", job_type=kind).request

    async def go() -> dict[str, Any]:
        client = client_for(Backend(url, backend))
        try:
            return await client.run(job, request)
        finally:
            await client.aclose()

    return asyncio.run(go())


def failure_against(url: str, request: dict[str, Any] | None = None, kind: JobType = JobType.GENERATE,
                    backend: str = "ollama") -> BackendError:
    with pytest.raises(BackendError) as info:
        run_against(url, request, kind, backend)
    return info.value


@pytest.mark.parametrize("line, bound", [
    (b'{"response":"' + b"x" * 1000 + b'","done":false}\n', {}),  # MAX_TEXT at its real size
    (b'{"done":false}\n', {"MAX_LINES": 1000}),
    (b"x" * 4096, {"MAX_LINE": 2**20}),  # one line that never ends
])
def test_an_endless_stream_is_cut_at_a_bound_and_closed(monkeypatch: pytest.MonkeyPatch, line: bytes,
                                                        bound: dict[str, int]) -> None:
    for name, value in bound.items():
        monkeypatch.setattr(base, name, value)
    with Hostile(endless(line)) as h:
        err = failure_against(h.url)
        assert err.kind is ErrorType.INVALID_RESPONSE and err.transient
        assert h.wait_hangups(1)
        # What it read: the bound, and what was in flight (socket buffers), not more.
        assert h.sent < 4 * base.MAX_TEXT


@pytest.mark.parametrize("backend", ["ollama", "openai"])
def test_an_embed_reply_beyond_its_bound_is_invalid(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    # The bound grows with the inputs asked for: MAX_BODY, and room for one vector each.
    monkeypatch.setattr(base, "MAX_BODY", 2**20)
    monkeypatch.setattr(base, "VECTOR_BYTES", 2**16, raising=False)
    big = body(b'{"embeddings": [[' + b"0.5, " * 2**18 + b'0.5]], "data": []}')  # 1.25 MiB
    with Hostile(big) as h:
        err = failure_against(h.url, kind=JobType.EMBED, backend=backend)
    assert err.kind is ErrorType.INVALID_RESPONSE and f"larger than {2**20 + 2**16} bytes" in err.message


def test_a_slowloris_stream_is_bounded_by_the_default_attempt_timeout(
        store: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from ollama_cli.daemon import attempt

    monkeypatch.setattr(attempt, "DEFAULT_ATTEMPT_TIMEOUT", 0.2)
    with Hostile(slowloris(every=0.01)) as h:
        job_id = submit_spec(store, max_attempts=1)  # no --timeout
        drain(store, h.url)
        j = read_job(store, job_id)
        assert j.status is JobStatus.FAILED and j.error.type is ErrorType.TIMEOUT
        assert "without --timeout" in j.error.message
        assert h.wait_hangups(1)


# ------------------------------------------------------------------ hostile replies: types


NAN_EMBEDDING = b'{"embeddings":[[NaN]]}'
DEEP = b'{"response":' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # json.loads: RecursionError
NESTED: Any = 1
for _ in range(64):  # deeper than MAX_DEPTH
    NESTED = [NESTED]


@pytest.mark.parametrize("kind, act", [
    (JobType.GENERATE, lines(*answer(eval_count="abc"))),
    (JobType.GENERATE, lines(*answer(eval_count=-1))),
    (JobType.GENERATE, lines(*answer(eval_count=True))),
    (JobType.GENERATE, lines(*answer(eval_duration=1.5))),
    (JobType.GENERATE, lines(*answer(total_duration=2**70))),
    (JobType.GENERATE, lines({"response": 5, "done": False}, {"done": True})),
    (JobType.GENERATE, lines(b'{"response":"\\ud800","done":false}', {"done": True})),  # a lone surrogate
    (JobType.GENERATE, lines({"response": "", "thinking": {"a": 1}, "done": False}, {"done": True})),
    (JobType.GENERATE, lines(b'{"response":"a","done":false}', b'{"done":true,"eval_count":NaN}')),
    (JobType.GENERATE, lines(DEEP)),
    (JobType.GENERATE, lines(b"[1, 2]")),
    (JobType.CHAT, lines({"message": "hello", "done": True})),
    (JobType.CHAT, lines({"message": {"role": "assistant", "content": ["a"]}, "done": True})),
    (JobType.CHAT, lines({"message": {"role": "assistant", "content": "", "tool_calls": "f()"}, "done": True})),
    (JobType.CHAT, lines({"message": {"content": "", "tool_calls": [{"function": {"arguments": {"x": 10**30}}}]},
                          "done": True})),
    (JobType.CHAT, lines({"message": {"content": "", "tool_calls": [{"f": NESTED}]}, "done": True})),
    (JobType.EMBED, embeddings([["a"]])),
    (JobType.EMBED, embeddings([[True]])),
    (JobType.EMBED, embeddings([[1e308 * 10]])),
    (JobType.EMBED, body(NAN_EMBEDDING)),
    (JobType.EMBED, embeddings([[0.1], [0.2]])),  # two vectors for one input
    (JobType.EMBED, embeddings([[0.1]], prompt_eval_count="1")),
    (JobType.EMBED, embeddings("AAAAPw==")),
])
def test_a_reply_of_the_wrong_types_is_invalid_and_nothing_of_it_is_kept(kind: JobType, act: Any) -> None:
    with Hostile(act) as h:
        err = failure_against(h.url, kind=kind)
    assert err.kind is ErrorType.INVALID_RESPONSE and err.transient, err.message


@pytest.mark.parametrize("kind, act", [
    (JobType.GENERATE, lines({"choices": [{"index": 0, "text": 5, "finish_reason": "stop"}]}, "[DONE]", sse=True)),
    (JobType.CHAT, lines({"choices": [{"index": 0, "delta": {"content": {"a": 1}}, "finish_reason": "stop"}]},
                         "[DONE]", sse=True)),
    (JobType.GENERATE, lines({"choices": [{"index": 0, "text": "a", "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 1, "completion_tokens": "abc"}}, "[DONE]", sse=True)),
    (JobType.EMBED, body({"data": [{"embedding": [0.1], "index": "0"}]})),
    (JobType.EMBED, body({"data": [{"embedding": [0.1], "index": 0}, {"embedding": [0.2], "index": 1}]})),
])
def test_an_openai_reply_of_the_wrong_types_is_invalid(kind: JobType, act: Any) -> None:
    with Hostile(act) as h:
        err = failure_against(h.url, kind=kind, backend="openai")
    assert err.kind is ErrorType.INVALID_RESPONSE, err.message


def test_a_bad_typed_final_line_fails_the_job_and_the_daemon_goes_on(store: Engine) -> None:
    surrogate = lines(b'{"response":"\\ud800","done":false}', {"done": True})
    with Hostile(lines(*answer(eval_count="abc")), surrogate, lines(*answer("fine"))) as h:
        bad, worse = submit_spec(store, "one", max_attempts=1), submit_spec(store, "two", max_attempts=1)
        good = submit_spec(store, "three")
        drain(store, h.url)
    for job_id in (bad, worse):
        j = read_job(store, job_id)
        assert j.status is JobStatus.FAILED and j.error.type is ErrorType.INVALID_RESPONSE
        assert store.get_result(job_id) is None
    assert store.get_result(good) == {"response": "fine", "stats": {"eval_count": 1, "prompt_eval_count": 1}}


def test_results_that_older_daemons_stored_unchecked_are_read_without_a_crash(
        store: Engine, data_dir: Path) -> None:
    from ollama_cli import batch
    from ollama_cli.jobs import result_stats
    from ollama_cli.store.records import Placement, Plan, Settle, SettleKind

    specs = batch.parse("".join(json.dumps(line) + "\n" for line in [
        {"custom_id": "gen", "model": "m", "prompt": "p"},
        {"custom_id": "chat", "model": "m", "messages": [{"role": "user", "content": "c"}]},
        {"custom_id": "emb", "model": "m", "input": ["e"]},
    ]))
    batch.submit(store, specs, 0.0, name="old")
    stored = {1: {"response": 5, "stats": {"eval_count": "abc", "prompt_eval_count": -3, "junk": 1}},
              2: {"message": "not an object", "stats": "none"},
              3: {"embeddings": 7, "stats": {"prompt_eval_count": 2.5}}}

    # Claimed and completed as an old daemon did, which stored what the backend sent.
    tick = store.settle_and_claim([], 1.0, owner="old-daemon",
                                  planner=lambda jobs, _: Plan([Placement(0, "old", tuple(jobs))]))
    claims = [c for _, cs in tick.claimed for c in cs]
    assert all(store.settle_and_claim([Settle(SettleKind.COMPLETE, c.job.id, c.job.lease.token, stored[c.job.id])
                                       for c in claims], 1.0, owner="old-daemon").settled)
    lines_out = list(batch.results(store, "old"))
    assert [line["response"]["body"]["usage"]["prompt_tokens"] for line in lines_out] == [0, 0, 0]
    assert lines_out[0]["response"]["body"]["choices"][0]["text"] == ""
    assert lines_out[1]["response"]["body"]["choices"][0]["message"]["content"] == ""
    assert lines_out[2]["response"]["body"]["data"] == []
    assert result_stats(stored[1]) == {}
    for args in (("result", "1"), ("result", "2"), ("result", "3", "--json")):
        proc = run_cli(data_dir, *args)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


# ------------------------------------------------------------------ 429 and 408: retry later


@pytest.mark.parametrize("backend", ["ollama", "openai"])
@pytest.mark.parametrize("code, kind", [(429, ErrorType.BACKEND_ERROR), (408, ErrorType.TIMEOUT)])
def test_429_and_408_are_transient_and_carry_retry_after(backend: str, code: int, kind: ErrorType) -> None:
    with Hostile(status(code, "slow down", headers={"Retry-After": "7"})) as h:
        for job_type in (JobType.GENERATE, JobType.EMBED):
            err = failure_against(h.url, kind=job_type, backend=backend)
            assert (err.kind, err.transient, err.retry_after) == (kind, True, 7.0)
            assert err.message == f"HTTP {code}: slow down"


@pytest.mark.parametrize("header, seconds", [
    ("120", 120.0),
    (" 0 ", 0.0),
    ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),  # an HTTP-date, 30 s after `now`
    ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # already past
    ("99999999", "the cap"),
    ("-5", None),
    ("1.5", None),
    ("soon", None),
    ("", None),
    (None, None),
])
def test_retry_after_reads_seconds_or_an_http_date_within_a_cap(header: str | None, seconds: float | str | None) -> None:
    now = 1445412480.0  # 2015-10-21T07:28:00Z
    assert base.retry_after(header, now) == (base.RETRY_AFTER_CAP if seconds == "the cap" else seconds)


def test_a_429_is_retried_and_the_job_completes(store: Engine) -> None:
    with Hostile(status(429, headers={"Retry-After": "0"}), lines(*answer("later"))) as h:
        job_id = submit_spec(store)
        drain(store, h.url)
    j = read_job(store, job_id)
    assert j.status is JobStatus.COMPLETED and j.attempts == 2
    assert store.get_result(job_id)["response"] == "later"


# ------------------------------------------------------------------ backend text in logs, jobs, terminals


ESCAPES = "\x1b[2J\x1b]0;owned\x07first line\nT 2025-01-01 job 7 completed in 0.1s\r\u202eevil\ud800 end"
HUGE = ESCAPES + "x" * 10_000_000


def clean(message: str) -> bool:
    return len(message) <= base.MAX_ERROR and message.isprintable()


@pytest.mark.parametrize("act", [
    status(500, ESCAPES),
    body(ESCAPES.encode("utf-8", "surrogatepass"), 502),
    lines(*answer("partial")[:1], {"error": ESCAPES}),
])
def test_error_text_is_one_clean_line(act: Any) -> None:
    with Hostile(act) as h:
        err = failure_against(h.url)
    assert clean(err.message) and "first line T 2025-01-01 job 7 completed in 0.1s evil" in err.message, \
        repr(err.message)


@pytest.mark.parametrize("act", [status(500, HUGE), body(HUGE.encode("utf-8", "surrogatepass"), 502),
                                 lines({"error": HUGE})])
def test_error_text_of_megabytes_is_cut_short(act: Any) -> None:
    with Hostile(act) as h:
        err = failure_against(h.url)
    assert clean(err.message) and err.message.endswith("…"), repr(err.message)


@pytest.mark.parametrize("act", [
    lines(b'{"response":"THE SECRET ANSWER IS 42","done":false', {"done": True}),  # not JSON
    raw(b"THE SECRET ANSWER IS 42\r\n\r\n"),  # not even HTTP
    raw(b"HTTP/1.1 200 OK\r\nthe secret answer is 42\r\n\r\n"),
])
def test_a_reply_that_cannot_be_read_is_not_quoted(act: Any) -> None:
    with Hostile(act) as h:
        err = failure_against(h.url)
    assert err.transient and "SECRET" not in err.message.upper(), err.message


PROMPT = "Summarise the merger talks between Acme and Globex, which are not public yet."


@pytest.mark.parametrize("backend", ["ollama", "openai"])
def test_an_error_that_echoes_the_request_does_not_quote_the_prompt(backend: str) -> None:
    with Hostile(echo(422)) as h:
        err = failure_against(h.url, {"prompt": PROMPT, "system": "You are the CFO's assistant, be precise."},
                              backend=backend)
    assert err.kind is ErrorType.BAD_REQUEST and err.message.startswith("HTTP 422: invalid request:")
    assert not any(PROMPT[i:i + base.ECHO] in err.message for i in range(len(PROMPT) - base.ECHO + 1))
    assert "CFO" not in err.message and "[…]" in err.message


def test_the_daemon_log_and_the_stored_error_never_carry_the_prompt_or_escapes(
        store: Engine, caplog: pytest.LogCaptureFixture) -> None:
    with Hostile(echo(400), status(503, HUGE)) as h:
        echoed = submit_spec(store, PROMPT, max_attempts=1)
        escaped = submit_spec(store, "other", max_attempts=1)
        with caplog.at_level("INFO", logger="ollama_q.daemon"):
            drain(store, h.url)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"job {echoed} failed (bad_request: HTTP 400: invalid request:" in logged  # the log saw them
    assert f"job {escaped} failed (backend_error: HTTP 503:" in logged
    assert "Acme" not in logged and "\x1b" not in logged and "\ufffd" not in logged
    assert all(r.getMessage().count("\n") == 0 for r in caplog.records)
    assert "Acme" not in read_job(store, echoed).error.message
    assert clean(read_job(store, escaped).error.message)


def test_models_with_a_malformed_listing_say_what_they_can(data_dir: Path) -> None:
    listing = {"models": [1, None, {"name": 5}, {"name": "ok:latest", "size": "big", "details": "x",
                                                 "modified_at": 3}]}
    with Hostile(listing=body(listing)) as h:
        proc = run_cli(data_dir, "models", "--host", h.url, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"name": "ok:latest", "size": None, "modified_at": None, "family": None,
                                        "parameter_size": None, "quantization_level": None, "loaded": True,
                                        "host": h.url}]
    with Hostile(listing=body({"models": "abc"})) as h:
        proc = run_cli(data_dir, "models", "--host", h.url)
    assert proc.returncode == 3 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
