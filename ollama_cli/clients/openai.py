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
    BackendError,
    Client,
    OnText,
    _classify_transport,
    _error_text,
    _json,
    _result,
    classify_status,
)
from ollama_cli.settings.hosts import Backend
from ollama_cli.jobs import ErrorType, Job, JobType
from ollama_cli.timefmt import format_time

# Ollama options that OpenAI's API names the same way.
SAME_NAME = ("temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty")
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
        text: list[str] = []
        thinking: list[str] = []
        usage: dict[str, Any] = {}
        finished = False
        pieces, first, last = 0, 0, 0
        async with self.http.stream("POST", self._v1 + path, json=body) as resp:
            if resp.status_code != 200:
                raise _status_error(resp.status_code, await resp.aread())
            async for line in resp.aiter_lines():
                # One JSON event per `data:` line, as every one of these servers sends it;
                # blank separators, `:` comments (keep-alives) and other fields are skipped.
                field, _, value = line.partition(":")
                if field != "data":
                    continue
                value = value.strip()
                if value == "[DONE]":
                    if not finished:
                        raise BackendError(ErrorType.BACKEND_ERROR, "the stream ended without a finish_reason",
                                           transient=True)
                    stats = _usage_stats(usage, time.perf_counter_ns() - started,
                                         last - first if pieces >= 2 else None)
                    return _result(job.type, "".join(text), "".join(thinking), [], stats)
                raw = value.encode()
                chunk = _json(raw)
                # OpenAI, Ollama and llama-server send {"error": ...}; vLLM {"object": "error", ...}.
                if "error" in chunk or chunk.get("object") == "error":
                    raise BackendError(ErrorType.BACKEND_ERROR, _error_text(raw), transient=True)
                if isinstance(chunk.get("usage"), dict):  # vLLM sends "usage": null on the others
                    usage = chunk["usage"]
                choices = chunk.get("choices")
                if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
                    continue  # the usage-only event that include_usage adds has no choices
                piece, think = _choice_text(choices[0])
                finished = finished or bool(choices[0].get("finish_reason"))
                if think:
                    thinking.append(think)
                if piece:
                    last = time.perf_counter_ns()
                    first = first or last
                    pieces += 1
                    text.append(piece)
                    if on_text is not None:
                        on_text(piece)
        raise BackendError(ErrorType.BACKEND_ERROR, "the stream ended before data: [DONE]", transient=True)

    async def _embed(self, job: Job, request: dict[str, Any], started: int) -> dict[str, Any]:
        inputs = list(request.get("input") or [])
        resp = await self.http.post(self._v1 + "/embeddings", json={"model": job.model, "input": inputs})
        if resp.status_code != 200:
            raise _status_error(resp.status_code, resp.content)
        data = _json(resp.content)
        items = data.get("data")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise BackendError(ErrorType.INVALID_RESPONSE, "no embeddings in the reply", transient=True)
        # The spec does not promise the order of `data`: `index` does.
        vectors = [i.get("embedding") for i in sorted(items, key=lambda i: i.get("index") or 0)]
        if len(vectors) != len(inputs) or not all(isinstance(v, list) for v in vectors):
            raise BackendError(ErrorType.INVALID_RESPONSE,
                               f"expected {len(inputs)} vectors of floats, got {len(vectors)} items",
                               transient=True)
        usage = data.get("usage")
        stats = _usage_stats(usage if isinstance(usage, dict) else {}, time.perf_counter_ns() - started, None)
        return {"embeddings": vectors, "stats": stats}

    async def models(self) -> list[dict[str, Any]]:
        # The server serves what it has loaded, and says nothing of sizes or families.
        out = []
        for m in await self._listing():
            created = m.get("created")
            out.append({
                "name": m.get("id"),
                "size": None,
                "modified_at": format_time(created) if isinstance(created, (int, float)) else None,
                "family": None,
                "parameter_size": None,
                "quantization_level": None,
                "loaded": True,
            })
        return out

    async def loaded(self) -> set[str]:
        """The ids the server lists: it serves only what it has loaded."""
        try:
            return {m.get("id") for m in await self._listing()}
        except BackendError:
            return set()

    async def _listing(self) -> list[dict[str, Any]]:
        try:
            resp = await self.http.get(self._probe_path, timeout=10.0)
        except httpx.HTTPError as exc:
            raise _classify_transport(exc) from None
        if resp.status_code != 200:
            raise classify_status(resp.status_code, resp.content)
        data = _json(resp.content).get("data")
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []


def _generation_body(job: Job, request: dict[str, Any]) -> dict[str, Any]:
    """The /v1 body of a generate or chat job (the stored request is Ollama-shaped)."""
    body: dict[str, Any] = {"model": job.model}
    fmt = _response_format(request.get("format"))
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
    body.update({k: options[k] for k in SAME_NAME + EXTRA_SAMPLING if options.get(k) is not None})
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and num_predict > 0:  # Ollama's -1/-2 mean "no limit"
        body["max_tokens"] = num_predict
    body.update(stream=True, stream_options={"include_usage": True})
    return body


def _response_format(fmt: Any) -> dict[str, Any] | None:
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "schema", "schema": fmt}}
    return None


def _choice_text(choice: dict[str, Any]) -> tuple[str, str]:
    """(content, reasoning) of one streamed choice: `delta` in chat, `text` in completions.
    Reasoning is `reasoning_content` on llama-server and vLLM, `reasoning` on Ollama."""
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return delta.get("content") or "", delta.get("reasoning_content") or delta.get("reasoning") or ""
    return choice.get("text") or "", ""


def _usage_stats(usage: dict[str, Any], total_ns: int, eval_ns: int | None) -> dict[str, Any]:
    """Ollama's stat names from OpenAI's usage and the client's own clock. eval_duration
    spans first to last token, so it exists only once two arrived."""
    stats: dict[str, Any] = {"total_duration": total_ns}
    if isinstance(usage.get("prompt_tokens"), int):
        stats["prompt_eval_count"] = usage["prompt_tokens"]
    if isinstance(usage.get("completion_tokens"), int):
        stats["eval_count"] = usage["completion_tokens"]
    if eval_ns is not None:
        stats["eval_duration"] = eval_ns
    return stats


def _status_error(status: int, body: bytes) -> BackendError:
    err = classify_status(status, body)
    # vLLM words a missing model "The model `x` does not exist." (404), which
    # classify_status, looking for "not found", would call a bad request.
    if status == 404 and err.kind is ErrorType.BAD_REQUEST:
        return BackendError(ErrorType.MODEL_NOT_FOUND, err.message, transient=False)
    return err
