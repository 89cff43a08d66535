"""The client for OpenAI-compatible servers (`openai+` URLs): llama.cpp's llama-server,
vLLM, LM Studio, or Ollama's own /v1.

Jobs are stored in Ollama's shape (see `submission.build_request`); this module maps
them onto /v1/completions, /v1/chat/completions and /v1/embeddings, reads the SSE
streams, and gives back result bodies in exactly the shape `OllamaClient` gives, with
`stats` under Ollama's names, so nothing downstream knows which kind of server ran a job."""

from __future__ import annotations

import time
from typing import Any

import httpx

from ollama_cli.clients.base import (
    Answer,
    BackendError,
    Client,
    OnText,
    classify_transport,
    listing_entries,
    error_body,
    error_text,
    parse_json,
    read_lines,
    text_of,
    checked_vectors,
    whole_body,
    whole_number,
    classify_status,
    invalid,
)
from ollama_cli.settings.hosts import Backend
from ollama_cli.jobs import ErrorType, Job, JobType
from ollama_cli.timefmt import format_time
from ollama_cli.wire import openai as wire

# Not OpenAI's, but llama-server (and vLLM) accept them at the top level; the rest of
# Ollama's options (num_ctx, num_gpu, ...) are load-time settings a request cannot change.
EXTRA_SAMPLING = ("top_k", "min_p", "repeat_penalty")


class OpenAIClient(Client):
    def __init__(self, backend: Backend, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(backend, transport=transport)
        # OpenAI SDKs take a base URL that ends in /v1 (LM Studio's docs show one): accept
        # it as well as the bare server address, rather than asking for /v1/v1/...
        self._v1 = "" if httpx.URL(backend.url).path.rstrip("/").endswith("/v1") else "/v1"
        self._probe_path = self._v1 + "/models"

    async def _run(self, job: Job, request: dict[str, Any], on_text: OnText | None) -> dict[str, Any]:
        started = time.perf_counter_ns()
        if job.type is JobType.EMBED:
            return await self._embed(job, request, started)
        body = _generation_body(job, request)
        path = "/chat/completions" if "messages" in body else "/completions"
        answer = Answer(on_text)
        usage: dict[str, Any] = {}
        finished = False
        pieces, first, last = 0, 0, 0
        async with self.http.stream("POST", self._v1 + path, json=body) as resp:
            if resp.status_code != 200:
                raise _status_error(resp.status_code, await error_body(resp), resp.headers)
            async for raw in read_lines(resp):
                # One JSON event per `data:` line, as every one of these servers sends it;
                # blank separators, `:` comments (keep-alives) and other fields are skipped.
                field, _, value = raw.partition(b":")
                if field != b"data":
                    continue
                value = value.strip()
                if value == b"[DONE]":
                    if not finished:
                        raise BackendError(ErrorType.BACKEND_ERROR, "the stream ended without a finish_reason",
                                           transient=True)
                    stats = _usage_stats(usage, time.perf_counter_ns() - started,
                                         last - first if pieces >= 2 else None)
                    return answer.result(job.type, stats)
                chunk = parse_json(value)
                # OpenAI, Ollama and llama-server send {"error": ...}; vLLM {"object": "error", ...}.
                if "error" in chunk or chunk.get("object") == "error":
                    raise BackendError(ErrorType.BACKEND_ERROR, error_text(value), transient=True)
                if isinstance(chunk.get("usage"), dict):  # vLLM sends "usage": null on the others
                    usage = chunk["usage"]
                choices = chunk.get("choices")
                if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
                    continue  # the usage-only event that include_usage adds has no choices
                piece, think = _choice_text(choices[0])
                finished = finished or bool(choices[0].get("finish_reason"))
                answer.add(piece, think)
                if piece:
                    last = time.perf_counter_ns()
                    first = first or last
                    pieces += 1
        raise BackendError(ErrorType.BACKEND_ERROR, "the stream ended before data: [DONE]", transient=True)

    async def _embed(self, job: Job, request: dict[str, Any], started: int) -> dict[str, Any]:
        inputs = list(request.get("input") or [])
        body = {"model": job.model, "input": inputs}
        async with self.http.stream("POST", self._v1 + "/embeddings", json=body) as resp:
            if resp.status_code != 200:
                raise _status_error(resp.status_code, await error_body(resp), resp.headers)
            data = parse_json(await whole_body(resp, embeddings=len(inputs)))
        items = data.get("data")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise invalid("no embeddings in the reply")
        if not all(i.get("index") is None or type(i.get("index")) is int for i in items):
            raise invalid("embeddings whose index is not a number")
        # The spec does not promise the order of `data`: `index` does.
        vectors = checked_vectors([i.get("embedding") for i in sorted(items, key=lambda i: i.get("index") or 0)],
                           len(inputs))
        usage = data.get("usage")
        stats = _usage_stats(usage if isinstance(usage, dict) else {}, time.perf_counter_ns() - started, None)
        return {"embeddings": vectors, "stats": stats}

    async def models(self) -> list[dict[str, Any]]:
        # The server serves what it has loaded, and says nothing of sizes or families.
        out = []
        for m in await self._ids():
            created = m.get("created")
            out.append({
                "name": m["id"],
                "size": None,
                "modified_at": format_time(created) if _epoch(created) else None,
                "family": None,
                "parameter_size": None,
                "quantization_level": None,
                "loaded": True,
            })
        return out

    async def loaded(self) -> set[str]:
        """The ids the server lists: it serves only what it has loaded."""
        try:
            return {m["id"] for m in await self._ids()}
        except BackendError:
            return set()

    async def _ids(self) -> list[dict[str, Any]]:
        try:
            return listing_entries(await self._listing(self._probe_path), "data", "id")
        except httpx.HTTPError as exc:
            raise classify_transport(exc) from None


def _generation_body(job: Job, request: dict[str, Any]) -> dict[str, Any]:
    """The /v1 body of a generate or chat job (the stored request is Ollama-shaped)."""
    body: dict[str, Any] = {"model": job.model}
    fmt = wire.response_format_from_format(request.get("format"))
    if job.type is JobType.CHAT:
        # Only role and content: Ollama's images (bare base64, no MIME type) and tool
        # fields have no lossless OpenAI spelling.
        body["messages"] = [{"role": m.get("role"), "content": m.get("content") or ""}
                            for m in request.get("messages") or []]
    elif request.get("system") or fmt:
        # /v1/completions has no system prompt, and Ollama's takes no response_format:
        # such a generate job is sent as a system+user conversation, which is what
        # Ollama's /api/generate builds from system and prompt with the model's template.
        system = [{"role": "system", "content": request["system"]}] if request.get("system") else []
        body["messages"] = [*system, {"role": "user", "content": request.get("prompt") or ""}]
    else:
        body["prompt"] = request.get("prompt") or ""
    if fmt:
        body["response_format"] = fmt
    options = request.get("options") or {}
    body.update({k: options[k] for k in wire.SAME_NAME_OPTIONS + EXTRA_SAMPLING if options.get(k) is not None})
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and num_predict > 0:  # Ollama's -1/-2 mean "no limit"
        body["max_tokens"] = num_predict
    body.update(stream=True, stream_options={"include_usage": True})
    return body


def _choice_text(choice: dict[str, Any]) -> tuple[str, str]:
    """(content, reasoning) of one streamed choice: `delta` in chat, `text` in completions.
    Reasoning is `reasoning_content` on llama-server and vLLM, `reasoning` on Ollama."""
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return text_of(delta, "content"), text_of(delta, "reasoning_content") or text_of(delta, "reasoning")
    return text_of(choice, "text"), ""


def _usage_stats(usage: dict[str, Any], total_ns: int, eval_ns: int | None) -> dict[str, Any]:
    """Ollama's stat names from OpenAI's usage and the client's own clock. eval_duration
    spans first to last token, so it exists only once two arrived."""
    stats: dict[str, Any] = {"total_duration": total_ns}
    if usage.get("prompt_tokens") is not None:
        stats["prompt_eval_count"] = whole_number(usage["prompt_tokens"], "prompt_tokens")
    if usage.get("completion_tokens") is not None:
        stats["eval_count"] = whole_number(usage["completion_tokens"], "completion_tokens")
    if eval_ns is not None:
        stats["eval_duration"] = eval_ns
    return stats


def _status_error(status: int, body: bytes, headers: httpx.Headers) -> BackendError:
    err = classify_status(status, body, headers)
    # vLLM words a missing model "The model `x` does not exist." (404), which
    # classify_status, looking for "not found", would call a bad request.
    if status == 404 and err.kind is ErrorType.BAD_REQUEST:
        return BackendError(ErrorType.MODEL_NOT_FOUND, err.message, transient=False)
    return err


def _epoch(value: Any) -> bool:
    """A `created` time that can be shown: seconds between 1970 and 9999."""
    return type(value) in (int, float) and 0 <= value < 253402300800
