"""HTTP clients for the servers that run jobs: Ollama's native API, and OpenAI-compatible
servers (llama.cpp's llama-server, vLLM, LM Studio) for `openai+` URLs.

Streams every generation so that cancelling the task closes the connection, which makes
the server stop. Classifies failures into the contract's error types, each transient
(worth a retry) or permanent. Trusts no reply: its size is bounded (a server that streams
forever costs bounded memory), the types of what it carries are checked before anyone
stores them, and error text is cut to one clean line that never quotes the request.
Knows nothing of LMDB."""

from __future__ import annotations

import io
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import Any

import httpx

from ollama_cli.jobs import STAT_FIELDS, ErrorType, Job, JobType
from ollama_cli.sanitize import one_line
from ollama_cli.settings.hosts import Backend

# No overall timeout: a job's own --timeout (or the daemon's default bound) limits an
# attempt. The read timeout only catches a server that went silent (a model load can
# legitimately take minutes).
TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=60.0, pool=None)
PROBE_TIMEOUT = 5.0  # is a server that went down answering again?
LISTING_TIMEOUT = 10.0  # /api/tags, /api/ps, /v1/models: a server that cannot list in 10 s is down

# What one reply may cost, far beyond any real answer (a 128k-token answer is about
# 0.5 M characters in 128k lines): past these it is `invalid_response`.
MAX_TEXT = 4 * 2**20  # characters of answer and thinking together
MAX_LINE = 16 * 2**20  # bytes of one stream line (generate's final line carries the whole context)
MAX_LINES = 2**20  # lines of one stream
MAX_BODY = 64 * 2**20  # bytes of a reply read whole (listings; embeddings get more per input)
MAX_DIMENSIONS = 2**16  # numbers in one embedding vector
VECTOR_BYTES = MAX_DIMENSIONS * 25  # such a vector as JSON text, at most ("-1.2345678901234567e-308,")
MAX_DEPTH = 32  # nesting of JSON kept as it is (tool calls)
MAX_ERROR = 300  # characters of an error message, as stored and logged
MAX_ERROR_BODY = 16 * 2**10  # bytes read of an error reply
RETRY_AFTER_CAP = 300.0  # seconds: a Retry-After longer than this is not obeyed in full
ECHO = 16  # characters: a stretch of the request this long quoted in an error is cut out

OnText = Callable[[str], None]
_SURROGATE = re.compile("[\ud800-\udfff]")  # valid JSON escapes, but no valid text
_SECONDS = re.compile(r"[0-9]{1,10}")


class BackendError(Exception):
    """A failed request: `kind` is the contract's error type; `transient` says whether
    trying again may help; `retry_after`, how long the server asked us to wait (seconds).
    The message is cut to one clean line here, at the source: it is stored and logged."""

    def __init__(self, kind: ErrorType, message: str, *, transient: bool,
                 retry_after: float | None = None) -> None:
        message = one_line(message, MAX_ERROR)
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.transient = transient
        self.retry_after = retry_after


def unreachable(message: str) -> BackendError:
    return BackendError(ErrorType.UNREACHABLE, message, transient=True)


def invalid(message: str) -> BackendError:
    return BackendError(ErrorType.INVALID_RESPONSE, message, transient=True)


def error_text(body: bytes) -> str:
    try:
        err = parse_json(body).get("error")
        if isinstance(err, dict):  # OpenAI's shape
            err = err.get("message")
        if err:
            return str(err)
    except BackendError:
        pass
    return body.decode("utf-8", "replace").strip() or "(empty body)"


def classify_status(status: int, body: bytes, headers: httpx.Headers | None = None) -> BackendError:
    text = error_text(body)
    wait = retry_after(headers.get("retry-after")) if headers is not None else None
    if status == 404 and "not found" in text.lower():
        return BackendError(ErrorType.MODEL_NOT_FOUND, text, transient=False)
    if status in (408, 429):  # the server timed out waiting for us, or asks us to slow down
        kind = ErrorType.TIMEOUT if status == 408 else ErrorType.BACKEND_ERROR
        return BackendError(kind, f"HTTP {status}: {text}", transient=True, retry_after=wait)
    if 400 <= status < 500:
        return BackendError(ErrorType.BAD_REQUEST, f"HTTP {status}: {text}", transient=False)
    return BackendError(ErrorType.BACKEND_ERROR, f"HTTP {status}: {text}", transient=True, retry_after=wait)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """The seconds a Retry-After header asks for (delay-seconds or an HTTP-date), at most
    RETRY_AFTER_CAP; None when there is none or it cannot be read."""
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        seconds = float(value)
    else:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        seconds = when - (time.time() if now is None else now)
    return min(RETRY_AFTER_CAP, max(0.0, seconds))


def classify_transport(exc: httpx.HTTPError) -> BackendError:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return unreachable(f"cannot connect: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return BackendError(ErrorType.TIMEOUT, f"the server went silent ({type(exc).__name__})", transient=True)
    # Only what precedes a colon: h11 follows it with the offending bytes of the reply.
    what = str(exc).partition(":")[0]
    return BackendError(ErrorType.BACKEND_ERROR,
                        f"the connection broke before the answer ended ({type(exc).__name__}: {what})",
                        transient=True)


class Client:
    """One backend, asynchronously. Subclasses speak a wire format."""

    def __init__(self, backend: Backend, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.backend = backend
        # Replies are read in bounded pieces; a compressed one could inflate past the
        # bounds in one piece, so ask for none (Ollama never compresses anyway).
        self.http = httpx.AsyncClient(base_url=backend.url, timeout=TIMEOUT, transport=transport,
                                      follow_redirects=False, headers={"Accept-Encoding": "identity"})

    async def run(self, job: Job, request: dict[str, Any], on_text: OnText | None = None) -> dict[str, Any]:
        """The result body of one attempt; raises BackendError, whose message never
        quotes the request (servers that echo it in errors would put the prompt in the log).
        `on_text` gets each piece of text as it streams in (the daemon keeps it for
        `result --follow`)."""
        try:
            return await self._run_once(job, request, on_text)
        except BackendError as err:
            message = _redacted(err.message, request)
            if message == err.message:
                raise
            raise BackendError(err.kind, message, transient=err.transient, retry_after=err.retry_after) from None

    async def _run_once(self, job: Job, request: dict[str, Any], on_text: OnText | None) -> dict[str, Any]:
        for attempt in (1, 2):
            try:
                return await self._run(job, request, on_text)
            except httpx.RemoteProtocolError as exc:
                # A pooled connection the server had just closed (llama-server closes one
                # after every stream): no model saw the request, so resend at once on a
                # fresh connection rather than spend one of the job's attempts.
                if attempt == 1 and "without sending a response" in str(exc):
                    continue
                raise classify_transport(exc) from None
            except httpx.HTTPError as exc:
                raise classify_transport(exc) from None
        raise AssertionError("unreachable")

    async def _run(self, job: Job, request: dict[str, Any], on_text: OnText | None) -> dict[str, Any]:
        raise NotImplementedError

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """The vectors of `texts` by `model` (`/api/embed`, or `/v1/embeddings` for an
        OpenAI-compatible server), as an embed job's would be: the semantic cache's lookups
        are no jobs of their own. Raises BackendError."""
        from ollama_cli.jobs import JobStatus, Priority

        job = Job(id=0, model=model, type=JobType.EMBED, priority=Priority.MEDIUM, status=JobStatus.RUNNING,
                  created_at=0.0)
        return (await self.run(job, {"input": texts}))["embeddings"]

    async def ping(self) -> bool:
        """Liveness probe: the server answers with a status, whatever its body."""
        try:
            async with self.http.stream("GET", self._probe_path, timeout=PROBE_TIMEOUT) as resp:
                return resp.status_code < 500
        except httpx.HTTPError:
            return False

    _probe_path = "/"

    async def models(self) -> list[dict[str, Any]]:
        """Installed models, each with a `loaded` flag where the server can tell."""
        try:
            return await self._models()
        except httpx.HTTPError as exc:
            raise classify_transport(exc) from None

    async def loaded(self) -> set[str]:
        """Names of the models in memory now."""
        try:
            return await self._loaded()
        except httpx.HTTPError as exc:
            raise classify_transport(exc) from None

    async def _models(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def _loaded(self) -> set[str]:
        raise NotImplementedError

    async def _listing(self, path: str) -> dict[str, Any]:
        """The JSON object of a listing (GET), within LISTING_TIMEOUT and MAX_BODY."""
        async with self.http.stream("GET", path, timeout=LISTING_TIMEOUT) as resp:
            if resp.status_code != 200:
                raise classify_status(resp.status_code, await error_body(resp), resp.headers)
            return parse_json(await whole_body(resp))

    async def aclose(self) -> None:
        await self.http.aclose()


# ------------------------------------------------------------------ reading replies within bounds


async def read_lines(resp: httpx.Response) -> AsyncIterator[bytes]:
    """The reply's lines without their line ends, each within MAX_LINE, at most MAX_LINES:
    httpx's own line reader holds a line in memory however long it grows."""
    held: list[bytes] = []  # the start of a line not yet ended
    size = count = 0
    async with aclosing(resp.aiter_bytes()) as chunks:
        async for chunk in chunks:
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                if size + end - start > MAX_LINE:
                    raise invalid(f"a reply line longer than {MAX_LINE} bytes")
                line = b"".join([*held, chunk[start:end]]) if held else chunk[start:end]
                held, size, start = [], 0, end + 1
                count += 1
                if count > MAX_LINES:
                    raise invalid(f"a reply of more than {MAX_LINES} lines")
                yield line.removesuffix(b"\r")
            if start < len(chunk):
                size += len(chunk) - start
                if size > MAX_LINE:
                    raise invalid(f"a reply line longer than {MAX_LINE} bytes")
                held.append(chunk[start:])
    if held:
        yield b"".join(held)  # a last line without its line end


async def whole_body(resp: httpx.Response, *, embeddings: int = 0) -> bytes:
    """A reply read whole, within MAX_BODY and room for this many embedding vectors."""
    limit = MAX_BODY + embeddings * VECTOR_BYTES
    parts: list[bytes] = []
    size = 0
    async with aclosing(resp.aiter_bytes()) as chunks:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise invalid(f"a reply larger than {limit} bytes")
            parts.append(chunk)
    return b"".join(parts)


async def error_body(resp: httpx.Response) -> bytes:
    """The start of an error reply: its text is cut to MAX_ERROR characters anyway."""
    parts: list[bytes] = []
    size = 0
    async with aclosing(resp.aiter_bytes()) as chunks:
        async for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
            if size >= MAX_ERROR_BODY:
                break
    return b"".join(parts)[:MAX_ERROR_BODY]


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


# One decoder for every line: json.loads with an option builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def parse_json(raw: bytes) -> dict[str, Any]:
    """A reply's JSON object. Never quotes the reply: its text is the job's answer."""
    try:
        data = _DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise invalid(f"a reply of {len(raw)} bytes that is not JSON") from None
    if not isinstance(data, dict):
        raise invalid("a JSON value that is not an object")
    return data


class Answer:
    """The text, thinking and tool calls of a streamed reply so far, within MAX_TEXT."""

    def __init__(self, on_text: OnText | None = None) -> None:
        # StringIO, not a list of pieces: a million two-character pieces cost 80 MB as
        # str objects in a list, 20 in a StringIO.
        self.text = io.StringIO()
        self.thinking = io.StringIO()
        self.tool_calls: list[Any] = []
        self.size = 0
        self.on_text = on_text

    def add(self, piece: str, think: str = "", calls: Sequence[Any] = (), calls_size: int = 0) -> None:
        self.size += len(piece) + len(think) + calls_size
        if self.size > MAX_TEXT:
            raise invalid(f"an answer longer than {MAX_TEXT} characters")
        self.thinking.write(think)
        if piece:
            self.text.write(piece)
            if self.on_text is not None:
                self.on_text(piece)
        self.tool_calls.extend(calls)

    def result(self, job_type: JobType, stats: dict[str, Any]) -> dict[str, Any]:
        text, thinking = self.text.getvalue(), self.thinking.getvalue()
        if job_type is JobType.CHAT:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if self.tool_calls:
                message["tool_calls"] = self.tool_calls
            return {"message": message, "stats": stats}
        result: dict[str, Any] = {"response": text, "stats": stats}
        if thinking:
            result["thinking"] = thinking
        return result


# ------------------------------------------------------------------ the types of what a reply carries


def text_of(obj: dict[str, Any], key: str) -> str:
    """A text field of a reply line: a string (valid Unicode) or absent."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or _SURROGATE.search(value):
        raise invalid(f"a reply whose {key} is not text")
    return value


def whole_number(value: Any, name: str) -> int:
    """A token count or a duration in nanoseconds: an integer that fits 63 bits, not below 0."""
    if type(value) is not int or not 0 <= value < 2**63:
        raise invalid(f"a reply whose {name} is not a count")
    return value


def number_or_none(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value < 2**63 else None


def string_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and not _SURROGATE.search(value) else None


def checked_stats(chunk: dict[str, Any]) -> dict[str, Any]:
    # Ollama omits zero-valued stats, so every field is optional; null is read as omitted.
    return {k: whole_number(chunk[k], k) for k in STAT_FIELDS if chunk.get(k) is not None}


def checked_vectors(value: Any, expected: int) -> list[list[float]]:
    """Embeddings: `expected` lists of at most MAX_DIMENSIONS finite numbers."""
    if not isinstance(value, list) or len(value) != expected:
        raise invalid(f"expected {expected} embedding vectors, got "
                      f"{len(value) if isinstance(value, list) else 'none'}")
    for vector in value:
        if not isinstance(vector, list) or len(vector) > MAX_DIMENSIONS or not all(
                type(x) is float and math.isfinite(x) or type(x) is int and -2**63 <= x < 2**63 for x in vector):
            raise invalid("an embedding that is not a list of finite numbers")
    return value


def checked_tool_calls(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value) or not _plain(value, 0):
        raise invalid("tool calls that are not a list of plain JSON objects")
    return value


def _plain(value: Any, depth: int) -> bool:
    """Whether a JSON value can be stored and printed as it is: text without lone
    surrogates, integers within 64 bits, finite numbers, at most MAX_DEPTH deep."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return not _SURROGATE.search(value)
    if isinstance(value, int):
        return -2**63 <= value < 2**64
    if isinstance(value, float):
        return math.isfinite(value)
    if depth >= MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    return isinstance(value, dict) and all(_plain(k, depth) and _plain(v, depth + 1) for k, v in value.items())


def listing_entries(listing: dict[str, Any], key: str, name: str) -> list[dict[str, Any]]:
    """The objects of a listing that carry a text `name`; other entries are skipped."""
    items = listing.get(key)
    if items is None:
        return []  # Go encodes an empty list as null
    if not isinstance(items, list):
        raise invalid(f"a listing whose {key} is not a list")
    return [m for m in items if isinstance(m, dict) and isinstance(m.get(name), str)
            and m[name] and not _SURROGATE.search(m[name])]


def inputs_of(request: dict[str, Any]) -> list[Any]:
    texts = request.get("input")
    return texts if isinstance(texts, list) else [texts]


def _redacted(message: str, request: dict[str, Any]) -> str:
    """`message` with every stretch of ECHO or more characters that it quotes from the
    request's text cut out."""
    texts = [" ".join(t.split()) for t in _strings(request)]
    texts = [t for t in texts if len(t) >= ECHO]
    if not texts or len(message) < ECHO:
        return message
    quoted = [False] * len(message)
    for i in range(len(message) - ECHO + 1):
        window = message[i:i + ECHO]
        if any(window in t for t in texts):
            quoted[i:i + ECHO] = [True] * ECHO
    out: list[str] = []
    for i, ch in enumerate(message):
        if not quoted[i]:
            out.append(ch)
        elif i == 0 or not quoted[i - 1]:
            out.append("[…]")
    return "".join(out)


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
