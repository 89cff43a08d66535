"""The client for Ollama's native API (/api/generate, /api/chat, /api/embed, /api/tags,
/api/ps): streams every generation, and checks each reply line before it becomes a result."""

from __future__ import annotations

from typing import Any

from ollama_cli.clients.base import (
    Answer,
    BackendError,
    Client,
    OnText,
    classify_status,
    listing_entries,
    error_body,
    error_text,
    inputs_of,
    invalid,
    number_or_none,
    parse_json,
    read_lines,
    checked_stats,
    string_or_none,
    text_of,
    checked_tool_calls,
    checked_vectors,
    whole_body,
)
from ollama_cli.jobs import ErrorType, Job, JobType


class OllamaClient(Client):
    async def _run(self, job: Job, request: dict[str, Any], on_text: OnText | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": job.model, **request}
        if job.keep_alive is not None:
            body["keep_alive"] = job.keep_alive
        if job.type is JobType.EMBED:
            async with self.http.stream("POST", "/api/embed", json=body) as resp:
                if resp.status_code != 200:
                    raise classify_status(resp.status_code, await error_body(resp), resp.headers)
                data = parse_json(await whole_body(resp, embeddings=len(inputs_of(request))))
            return {"embeddings": checked_vectors(data.get("embeddings"), len(inputs_of(request))), "stats": checked_stats(data)}
        body["stream"] = True
        path = "/api/chat" if job.type is JobType.CHAT else "/api/generate"
        answer = Answer(on_text)
        final: dict[str, Any] | None = None
        async with self.http.stream("POST", path, json=body) as resp:
            if resp.status_code != 200:
                raise classify_status(resp.status_code, await error_body(resp), resp.headers)
            async for line in read_lines(resp):
                if not line.strip():
                    continue
                chunk = parse_json(line)
                if "error" in chunk:
                    raise BackendError(ErrorType.BACKEND_ERROR, error_text(line), transient=True)
                if job.type is JobType.CHAT:
                    message = chunk.get("message")
                    if message is not None and not isinstance(message, dict):
                        raise invalid("a reply line whose message is not an object")
                    message = message or {}
                    calls = message.get("tool_calls")
                    answer.add(text_of(message, "content"), text_of(message, "thinking"), checked_tool_calls(calls),
                               len(line) if calls else 0)
                else:
                    answer.add(text_of(chunk, "response"), text_of(chunk, "thinking"))
                if chunk.get("done"):
                    final = chunk  # read on to the end of the body, so the connection is reused
        if final is None:
            raise BackendError(ErrorType.BACKEND_ERROR, "the stream ended before its final line", transient=True)
        return answer.result(job.type, checked_stats(final))

    async def _models(self) -> list[dict[str, Any]]:
        tags = await self._listing("/api/tags")
        loaded = await self._loaded()
        out = []
        for m in listing_entries(tags, "models", "name"):
            details = m.get("details") if isinstance(m.get("details"), dict) else {}
            out.append({
                "name": m["name"],
                "size": number_or_none(m.get("size")),
                "modified_at": string_or_none(m.get("modified_at")),
                "family": string_or_none(details.get("family")),
                "parameter_size": string_or_none(details.get("parameter_size")),
                "quantization_level": string_or_none(details.get("quantization_level")),
                "loaded": m["name"] in loaded,
            })
        return out

    async def _loaded(self) -> set[str]:
        try:
            ps = await self._listing("/api/ps")
        except BackendError as err:
            if err.kind in (ErrorType.UNREACHABLE, ErrorType.TIMEOUT):
                raise
            return set()  # an old server without /api/ps, or a refusing proxy: nothing known loaded
        return {m["name"] for m in listing_entries(ps, "models", "name")}
