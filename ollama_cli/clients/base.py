"""HTTP clients for the servers that run jobs: Ollama's native API, and OpenAI-compatible
servers (llama.cpp's llama-server, vLLM, LM Studio) for `openai+` URLs.

Streams every generation so that cancelling the task closes the connection, which makes
the server stop. Classifies failures into the contract's error types, each transient
(worth a retry) or permanent. Knows nothing of LMDB."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from ollama_cli.settings.hosts import Backend
from ollama_cli.jobs import ErrorType, Job, JobType

STAT_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)

# No overall timeout: a job's own --timeout bounds an attempt. The read timeout only
# catches a server that went silent (a model load can legitimately take minutes).
TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=60.0, pool=None)

OnText = Callable[[str], None]


class BackendError(Exception):
    """A failed request: `kind` is the contract's error type; `transient` says whether
    trying again may help."""

    def __init__(self, kind: ErrorType, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.transient = transient


def unreachable(message: str) -> BackendError:
    return BackendError(ErrorType.UNREACHABLE, message, transient=True)


def _error_text(body: bytes) -> str:
    try:
        err = json.loads(body).get("error")
        if isinstance(err, dict):  # OpenAI's shape
            err = err.get("message")
        if err:
            return str(err)
    except (ValueError, AttributeError):
        pass
    return body.decode("utf-8", "replace").strip()[:300] or "(empty body)"


def classify_status(status: int, body: bytes) -> BackendError:
    text = _error_text(body)
    if status == 404 and "not found" in text.lower():
        return BackendError(ErrorType.MODEL_NOT_FOUND, text, transient=False)
    if 400 <= status < 500:
        return BackendError(ErrorType.BAD_REQUEST, f"HTTP {status}: {text}", transient=False)
    return BackendError(ErrorType.BACKEND_ERROR, f"HTTP {status}: {text}", transient=True)


def _classify_transport(exc: httpx.HTTPError) -> BackendError:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return unreachable(f"cannot connect: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return BackendError(ErrorType.TIMEOUT, f"the server went silent: {exc}", transient=True)
    return BackendError(ErrorType.BACKEND_ERROR,
                        f"the connection broke before the answer ended: {exc!r}", transient=True)


class Client:
    """One backend, asynchronously. Subclasses speak a wire format."""

    def __init__(self, backend: Backend, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.backend = backend
        self.http = httpx.AsyncClient(base_url=backend.url, timeout=TIMEOUT, transport=transport,
                                      follow_redirects=False)

    async def run(self, job: Job, request: dict[str, Any], on_text: OnText | None = None) -> dict[str, Any]:
        """The result body of one attempt; raises BackendError."""
        for attempt in (1, 2):
            try:
                return await self._run(job, request, on_text)
            except httpx.RemoteProtocolError as exc:
                # A pooled connection the server had just closed (llama-server closes one
                # after every stream): no model saw the request, so resend at once on a
                # fresh connection rather than spend one of the job's attempts.
                if attempt == 1 and "without sending a response" in str(exc):
                    continue
                raise _classify_transport(exc) from None
            except httpx.HTTPError as exc:
                raise _classify_transport(exc) from None
        raise AssertionError("unreachable")

    async def _run(self, job: Job, request: dict[str, Any], on_text: OnText | None) -> dict[str, Any]:
        raise NotImplementedError

    async def ping(self) -> bool:
        """Liveness probe."""
        try:
            resp = await self.http.get(self._probe_path, timeout=5.0)
            return resp.status_code < 500
        except httpx.HTTPError:
            return False

    _probe_path = "/"

    async def models(self) -> list[dict[str, Any]]:
        """Installed models, each with a `loaded` flag where the server can tell."""
        try:
            return await self._models()
        except httpx.HTTPError as exc:
            raise _classify_transport(exc) from None

    async def loaded(self) -> set[str]:
        """Names of the models in memory now."""
        try:
            return await self._loaded()
        except httpx.HTTPError as exc:
            raise _classify_transport(exc) from None

    async def _models(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def _loaded(self) -> set[str]:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.http.aclose()


class OllamaClient(Client):
    async def _run(self, job: Job, request: dict[str, Any], on_text: OnText | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": job.model, **request}
        if job.keep_alive is not None:
            body["keep_alive"] = job.keep_alive
        if job.type is JobType.EMBED:
            resp = await self.http.post("/api/embed", json=body)
            if resp.status_code != 200:
                raise classify_status(resp.status_code, resp.content)
            data = _json(resp.content)
            vectors = data.get("embeddings")
            if not isinstance(vectors, list):
                raise BackendError(ErrorType.INVALID_RESPONSE, "no embeddings in the reply", transient=True)
            return {"embeddings": vectors, "stats": _stats(data)}
        body["stream"] = True
        path = "/api/chat" if job.type is JobType.CHAT else "/api/generate"
        text: list[str] = []
        thinking: list[str] = []
        tool_calls: list[Any] = []
        final: dict[str, Any] | None = None
        async with self.http.stream("POST", path, json=body) as resp:
            if resp.status_code != 200:
                raise classify_status(resp.status_code, await resp.aread())
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                chunk = _json(line)
                if "error" in chunk:
                    raise BackendError(ErrorType.BACKEND_ERROR, str(chunk["error"]), transient=True)
                piece, think = _piece(job.type, chunk, tool_calls)
                if think:
                    thinking.append(think)
                if piece:
                    text.append(piece)
                    if on_text is not None:
                        on_text(piece)
                if chunk.get("done"):
                    final = chunk  # read on to the end of the body, so the connection is reused
        if final is None:
            raise BackendError(ErrorType.BACKEND_ERROR, "the stream ended before its final line", transient=True)
        return _result(job.type, "".join(text), "".join(thinking), tool_calls, _stats(final))

    async def _models(self) -> list[dict[str, Any]]:
        tags = await self.http.get("/api/tags", timeout=10.0)
        if tags.status_code != 200:
            raise classify_status(tags.status_code, tags.content)
        loaded: set[str] = set()
        ps = await self.http.get("/api/ps", timeout=10.0)
        if ps.status_code == 200:
            loaded = {m.get("name") for m in _json(ps.content).get("models") or []}
        out = []
        for m in _json(tags.content).get("models") or []:
            details = m.get("details") or {}
            out.append({
                "name": m.get("name"),
                "size": m.get("size"),
                "modified_at": m.get("modified_at"),
                "family": details.get("family"),
                "parameter_size": details.get("parameter_size"),
                "quantization_level": details.get("quantization_level"),
                "loaded": m.get("name") in loaded,
            })
        return out

    async def _loaded(self) -> set[str]:
        resp = await self.http.get("/api/ps", timeout=10.0)
        if resp.status_code != 200:
            return set()
        return {m.get("name") for m in _json(resp.content).get("models") or []}


def _json(raw: bytes | str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        raise BackendError(ErrorType.INVALID_RESPONSE, f"not JSON: {text[:80]!r}", transient=True) from None
    if not isinstance(data, dict):
        raise BackendError(ErrorType.INVALID_RESPONSE, "a JSON value that is not an object", transient=True)
    return data


def _piece(job_type: JobType, chunk: dict[str, Any], tool_calls: list[Any]) -> tuple[str, str]:
    if job_type is JobType.CHAT:
        msg = chunk.get("message") or {}
        tool_calls.extend(msg.get("tool_calls") or [])
        return msg.get("content") or "", msg.get("thinking") or ""
    return chunk.get("response") or "", chunk.get("thinking") or ""


def _stats(chunk: dict[str, Any]) -> dict[str, Any]:
    # Ollama omits zero-valued stats, so every field is optional.
    return {k: chunk[k] for k in STAT_FIELDS if k in chunk}


def _result(job_type: JobType, text: str, thinking: str, tool_calls: list[Any],
            stats: dict[str, Any]) -> dict[str, Any]:
    if job_type is JobType.CHAT:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {"message": message, "stats": stats}
    result: dict[str, Any] = {"response": text, "stats": stats}
    if thinking:
        result["thinking"] = thinking
    return result


def client_for(backend: Backend, *, transport: httpx.AsyncBaseTransport | None = None) -> Client:
    if backend.kind == "openai":
        from ollama_cli.clients.openai import OpenAIClient

        return OpenAIClient(backend, transport=transport)
    return OllamaClient(backend, transport=transport)
