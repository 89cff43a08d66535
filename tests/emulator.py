#!/usr/bin/env python3
"""Ollama-compatible HTTP server emulator for the ollama-q tests and benchmarks.

Follows the contract in ``ollama-api.md``: native ``/api/*`` endpoints (NDJSON
streaming over chunked HTTP/1.1, Go-style error bodies, omitempty stats in
nanoseconds), a small scheduler (``max_loaded`` resident models with LRU
eviction and serialised loads, ``num_parallel`` slots per loaded model) and
the OpenAI-compatible ``/v1/*`` endpoints (JSON and SSE).

Generated text and embeddings are deterministic hashes of the request, so the
same request always gets the same answer.  Faults (HTTP errors, in-stream
errors, dropped connections, hangs) are injected with :meth:`Emulator.fail_next`
or :meth:`Emulator.failure_rate`; :meth:`Emulator.hold` parks requests after
their first chunk so a test can observe a job "running" without sleeping.

Standard library only.  Command line::

    python tests/emulator.py --port 0 --load-time 2 --token-delay 0.01 \\
        --max-loaded 1 --num-parallel 4 --models a,b,c

prints the base URL on one line, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import json
import math
import random
import re
import select
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, NoReturn, Sequence

VERSION = "0.12.6"
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
CRASH_MESSAGE = "model runner has unexpectedly stopped"
DEFAULT_NUM_CTX = 4096
DEFAULT_KEEP_ALIVE = 300.0  # OLLAMA_KEEP_ALIVE default, seconds
FAULT_KINDS = ("status", "stream_error", "drop", "hang")
RATE_KINDS = ("status500", "status503", "stream_error", "drop", "hang")
GENERATION_PATHS = frozenset({
    "/api/generate", "/api/chat", "/api/embed", "/api/embeddings",
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
})
_ROUTES: dict[str, dict[str, str]] = {
    "/": {"GET": "root", "HEAD": "root"},
    "/api/version": {"GET": "version", "HEAD": "version"},
    "/api/tags": {"GET": "tags", "HEAD": "tags"},
    "/api/ps": {"GET": "ps"},
    "/api/show": {"POST": "show"},
    "/api/generate": {"POST": "generate"},
    "/api/chat": {"POST": "chat"},
    "/api/embed": {"POST": "embed"},
    "/api/embeddings": {"POST": "embeddings"},
    "/v1/chat/completions": {"POST": "v1_chat"},
    "/v1/completions": {"POST": "v1_completions"},
    "/v1/embeddings": {"POST": "embed"},
    "/v1/models": {"GET": "v1_models"},
}
_DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    "llama3.2:latest": dict(capabilities=["completion", "tools"], family="llama", parameter_size="3.2B",
                            quantization_level="Q4_K_M", size=2019393189, context_length=131072),
    "qwen2.5:0.5b": dict(capabilities=["completion"], family="qwen2", parameter_size="494.03M",
                         quantization_level="Q4_K_M", size=397821319, context_length=32768),
    "all-minilm:latest": dict(capabilities=["embedding"], family="bert", parameter_size="23M",
                              quantization_level="F16", size=45960996, context_length=512),
}
# Models served only when named (`--models`): the semantic cache's default embedding model,
# with its real dimension.
_NAMED_MODELS: dict[str, dict[str, Any]] = {
    "nomic-embed-text:latest": dict(capabilities=["embedding"], family="nomic-bert", parameter_size="137M",
                                    quantization_level="F16", size=274302450, context_length=2048,
                                    embedding_length=768),
}
_WORDS = (
    "the", "queue", "model", "answer", "is", "a", "small", "steady", "reply", "about", "jobs", "and",
    "tokens", "that", "arrive", "in", "order", "with", "care", "from", "local", "server", "light",
    "river", "stone", "green", "quiet", "morning", "signal", "window", "paper", "orbit",
)
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_PART_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_NS_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_DUR_RE = re.compile(r"(\d+\.?\d*|\.\d+)([^\d.]*)")
_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_INT_OPTS = {"num_ctx", "num_predict", "seed", "top_k", "repeat_last_n", "num_keep", "num_batch",
             "num_gpu", "main_gpu", "num_thread"}
_FLOAT_OPTS = {"temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
               "frequency_penalty"}
_BASE_MTIME = 1746405464.706015  # 2025-05-04T17:37:44-07:00; model i is i hours older

# Field type checks that reproduce Go's decoder errors: name -> (python types, Go type).
_S, _B, _O, _I = ((str,), "string"), ((bool,), "bool"), ((dict,), "map[string]interface {}"), ((int,), "int")
_GEN_FIELDS = {"model": _S, "prompt": _S, "suffix": _S, "system": _S, "template": _S, "raw": _B, "stream": _B,
               "context": ((list,), "[]int"), "images": ((list,), "[]api.ImageData"), "options": _O}
_CHAT_FIELDS = {"model": _S, "messages": ((list,), "[]api.Message"), "stream": _B,
                "tools": ((list,), "api.Tools"), "options": _O}
_EMBED_FIELDS = {"model": _S, "truncate": _B, "dimensions": _I, "options": _O}
_EMBEDDINGS_FIELDS = {"model": _S, "prompt": _S, "options": _O}
_SHOW_FIELDS = {"model": _S, "name": _S, "verbose": _B}
_V1_CHAT_FIELDS = {"model": _S, "messages": ((list,), "[]openai.Message"), "stream": _B, "max_tokens": _I, "seed": _I}
_V1_COMPLETION_FIELDS = {"model": _S, "prompt": _S, "suffix": _S, "stream": _B, "max_tokens": _I, "seed": _I}
_V1_EMBED_FIELDS = {"model": _S, "dimensions": _I, "encoding_format": _S}


# --------------------------------------------------------------------------- helpers

def parse_model_name(name: Any) -> tuple[str, str, str, str] | None:
    """Split ``[host/][namespace/]model[:tag]`` into (host, namespace, model, tag); None if invalid."""
    if not isinstance(name, str) or not name:
        return None
    rest, tag = name, "latest"
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):  # a colon before the last "/" is a host port, not a tag
        rest, tag = rest[:colon], rest[colon + 1:]
    parts = rest.split("/")
    if len(parts) > 3:
        return None
    host = parts[-3] if len(parts) == 3 else "registry.ollama.ai"
    ns = parts[-2] if len(parts) >= 2 else "library"
    model = parts[-1]
    if not (host and _NS_RE.fullmatch(ns) and _PART_RE.fullmatch(model) and _PART_RE.fullmatch(tag)):
        return None
    return host, ns, model, tag


def _display(parts: tuple[str, str, str, str]) -> str:
    host, ns, model, tag = parts
    if host != "registry.ollama.ai":
        return f"{host}/{ns}/{model}:{tag}"
    return f"{model}:{tag}" if ns == "library" else f"{ns}/{model}:{tag}"


def _key(parts: tuple[str, str, str, str]) -> str:
    """Matching key: the full name, lower-cased (Ollama matches names case-insensitively)."""
    return ("/".join(parts[:3]) + ":" + parts[3]).lower()


def _dumps(obj: Any) -> bytes:
    """Compact JSON like Go's encoder: raw UTF-8, but <, >, & and U+2028/9 escaped."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text.encode()


def _h(*parts: Any) -> int:
    data = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def _count_tokens(text: str | None) -> int:
    return len(_TOKEN_RE.findall(text or ""))


def _now_utc() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def _local_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().isoformat(timespec="microseconds")


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(v), "null")


def _is(v: Any, types: tuple[type, ...]) -> bool:
    return (bool in types) if isinstance(v, bool) else isinstance(v, types)


def _normalize(vec: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [float(f"{v / norm:.8g}") for v in vec]  # float32-ish precision, as Ollama sends


def parse_go_duration(text: str) -> float:
    """Parse a Go duration string (``"5m"``, ``"1h30m"``, ``"-1s"``, ``"0"``) to seconds."""
    s, sign = text, 1.0
    if s[:1] in ("-", "+"):
        sign, s = (-1.0 if s[0] == "-" else 1.0), s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise _ApiError(400, f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DUR_RE.match(s, pos)
        if m is None:
            raise _ApiError(400, f'time: invalid duration "{text}"')
        if not m.group(2):
            raise _ApiError(400, f'time: missing unit in duration "{text}"')
        if m.group(2) not in _DUR_UNITS:
            raise _ApiError(400, f'time: unknown unit "{m.group(2)}" in duration "{text}"')
        total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def _keep_alive(body: dict[str, Any]) -> float:
    """Seconds to keep the model loaded; math.inf for "forever" (negative values)."""
    v = body.get("keep_alive")
    if v is None:
        return DEFAULT_KEEP_ALIVE
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise _ApiError(400, f"Unsupported type: '{_json_type(v)}'")
    secs = parse_go_duration(v) if isinstance(v, str) else float(v)
    return math.inf if secs < 0 else secs


def _options(raw: Any) -> dict[str, Any]:
    """Validate option value types; Ollama answers a wrong type with HTTP 500."""
    opts = dict(raw) if isinstance(raw, dict) else {}
    for key, v in opts.items():
        if v is None:
            continue
        if key in _INT_OPTS:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _ApiError(500, f'option "{key}" must be of type integer')
            opts[key] = int(v)
        elif key in _FLOAT_OPTS and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise _ApiError(500, f'option "{key}" must be of type float32')
        elif key == "use_mmap" and not isinstance(v, bool):
            raise _ApiError(500, f'option "{key}" must be of type boolean')
        elif key == "stop" and not (isinstance(v, list) and all(isinstance(s, str) for s in v)):
            raise _ApiError(500, f'option "{key}" must be of type array')
    return opts


def _format_error(fmt: Any) -> str | None:
    if fmt in (None, "", "json") or isinstance(fmt, dict):
        return None
    return f'invalid format: {json.dumps(fmt)}; expected "json" or a valid JSON Schema object'


def _cut_tokens(tokens: list[str], n_chars: int) -> list[str]:
    out, pos = [], 0
    for tok in tokens:
        if pos + len(tok) > n_chars:
            if n_chars > pos:
                out.append(tok[: n_chars - pos])
            break
        out.append(tok)
        pos += len(tok)
    return out


# --------------------------------------------------------------------------- state

class _ApiError(Exception):
    """An error reply sent before any byte of the response was written."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _Abort(Exception):
    """Stop serving a request: the client went away (gone=True), the emulator stops, or a drop."""

    def __init__(self, gone: bool) -> None:
        super().__init__("client gone" if gone else "aborted")
        self.gone = gone


@dataclass
class ModelSpec:
    name: str  # shortest display name, e.g. "llama3.2:latest"
    key: str  # canonical lower-case "host/namespace/model:tag", used for matching
    full: str  # "registry.ollama.ai/library/llama3.2:latest", used in capability errors
    capabilities: list[str] = field(default_factory=lambda: ["completion", "tools"])
    family: str = "llama"
    parameter_size: str = "1B"
    quantization_level: str = "Q4_K_M"
    size: int = 1_000_000_000
    context_length: int = 4096
    embedding_length: int = 16  # dimension of the emulated embedding vectors
    modified_at: float = _BASE_MTIME
    digest: str = ""

    def details(self) -> dict[str, Any]:
        return {"parent_model": "", "format": "gguf", "family": self.family, "families": [self.family],
                "parameter_size": self.parameter_size, "quantization_level": self.quantization_level,
                "context_length": self.context_length, "embedding_length": self.embedding_length}

    def listing(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.name, "modified_at": _local_time(self.modified_at),
                "size": self.size, "digest": self.digest, "details": self.details(),
                "capabilities": list(self.capabilities)}


def _make_spec(entry: str | dict[str, Any], index: int) -> ModelSpec:
    cfg = {"name": entry} if isinstance(entry, str) else dict(entry)
    parts = parse_model_name(cfg.pop("name", None))
    if parts is None:
        raise ValueError(f"invalid model name in {entry!r}")
    name = _display(parts)
    kwargs = {**_DEFAULT_MODELS.get(name.lower(), _NAMED_MODELS.get(name.lower(), {})), **cfg}
    full = "/".join(parts[:3]) + ":" + parts[3]
    return ModelSpec(name=name, key=_key(parts), full=full, modified_at=_BASE_MTIME - 3600 * index,
                     digest=hashlib.sha256(f"ollama-emulator:{name}".encode()).hexdigest(), **kwargs)


@dataclass
class _Fault:
    kind: str
    status: int = 500
    message: str = CRASH_MESSAGE
    after_chunks: int = 0
    model: str | None = None  # canonical key, None = any model
    remaining: int = 1


@dataclass
class _Runner:
    spec: ModelSpec
    num_ctx: int
    keep_alive: float
    refs: int = 0  # requests holding the runner; a runner with refs > 0 is never evicted
    busy: int = 0  # requests generating right now (<= num_parallel)
    last_used: float = field(default_factory=time.monotonic)
    unload_requested: bool = False

    def expires_at(self) -> float:
        if math.isinf(self.keep_alive):
            return time.time() + 292 * 365 * 86400  # Go's max Duration: "forever"
        idle_for = 0.0 if self.refs else time.monotonic() - self.last_used
        return time.time() + self.keep_alive - idle_for


@dataclass
class _Job:
    kind: str  # "generate" | "chat" | "v1_chat" | "v1_completions"
    spec: ModelSpec
    sent: str  # model name as sent, echoed back verbatim
    payload: Any  # what the generated text is derived from
    opts: dict[str, Any]
    keep_alive: float
    stream: bool
    prompt_tokens: int
    fmt: Any = None
    load_only: bool = False
    raw: bool = False
    include_usage: bool = False
    v1_id: str = ""


class Emulator:
    """An in-process Ollama look-alike.  ``Emulator().start()`` serves on ``.url``."""

    def __init__(self, models: Sequence[str | dict[str, Any]] | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, token_delay: float = 0.0, load_time: float = 0.0, max_loaded: int = 3,
                 num_parallel: int = 4, seed: int = 0) -> None:
        if max_loaded < 1 or num_parallel < 1:
            raise ValueError("max_loaded and num_parallel must be >= 1")
        self.host, self.port, self.seed = host, port, seed
        self.token_delay, self.load_time = token_delay, load_time
        self.max_loaded, self.num_parallel = max_loaded, num_parallel
        entries = list(_DEFAULT_MODELS) if models is None else list(models)
        self.models: dict[str, ModelSpec] = {}
        for i, entry in enumerate(entries):
            spec = _make_spec(entry, i)
            self.models[spec.key] = spec
        # One condition guards all mutable state; every change notifies it.
        self._cond = threading.Condition()
        self._stop_evt = threading.Event()
        self._runners: dict[str, _Runner] = {}
        self._load_queue: list[object] = []  # FIFO of pending loads, like Ollama's scheduler
        self._faults: list[_Fault] = []
        self._rate, self._rng = 0.0, random.Random(seed)
        self._rate_kinds: tuple[str, ...] = RATE_KINDS[:4]
        self._held = False
        self._in_flight = 0
        self._gen_received = 0
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[tuple[str, str, Any]] = []
        self.loads = 0
        self.load_log: list[str] = []
        self.disconnects = 0
        self.max_concurrent_seen = 0
        # Generation requests being answered, by body: a request that arrives while one of the
        # same body is still being answered (its client has not hung up) is an overlap. A job's
        # request body is the same on every attempt, so overlaps are a job run twice at once.
        self._answering: dict[str, list[_Handler]] = {}
        self.overlaps: list[Any] = []

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Emulator:
        if self._server is not None:
            return self
        self._stop_evt.clear()
        cls = _Server6 if ":" in self.host else _Server
        srv = cls((self.host, self.port), _Handler)
        srv.emu = self
        try:
            srv.loopback = ipaddress.ip_address(str(srv.server_address[0])).is_loopback
        except ValueError:
            srv.loopback = False
        self._server, self.port = srv, srv.server_address[1]
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="ollama-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut down; releases held/hanging requests and closes every open connection."""
        srv = self._server
        if srv is None:
            return
        self._stop_evt.set()
        with self._cond:
            self._held = False
            self._cond.notify_all()
        srv.shutdown()  # no new connections after this
        with self._cond:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        srv.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # ----------------------------------------------------------------- knobs
    def fail_next(self, n: int = 1, *, kind: str = "status", status: int = 500, message: str | None = None,
                  model: str | None = None, after_chunks: int = 0) -> None:
        """Make the next ``n`` generate/chat/embed requests (for ``model`` if given) fail.

        kind: "status" (HTTP ``status`` + ``{"error": message}``), "stream_error" (``after_chunks``
        chunks, then an ``{"error"}`` line; with nothing written yet Ollama turns it into a 500),
        "drop" (``after_chunks`` chunks, then the connection is cut), "hang" (no answer until the
        client disconnects or the emulator stops).  The default message is the 503 "server busy"
        text for status 503 and "model runner has unexpectedly stopped" otherwise.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}")
        key = None
        if model is not None:
            parts = parse_model_name(model)
            if parts is None:
                raise ValueError(f"invalid model name {model!r}")
            key = _key(parts)
        if message is None:
            message = BUSY_MESSAGE if kind == "status" and status == 503 else CRASH_MESSAGE
        with self._cond:
            self._faults.append(_Fault(kind, status, message, after_chunks, key, n))

    def failure_rate(self, rate: float, *, kinds: Sequence[str] = RATE_KINDS[:4], seed: int | None = None) -> None:
        """Fail each generation request with probability ``rate`` (seeded, so runs repeat)."""
        bad = set(kinds) - set(RATE_KINDS)
        if bad or not kinds:
            raise ValueError(f"kinds must be taken from {RATE_KINDS}")
        with self._cond:
            self._rate, self._rate_kinds = rate, tuple(kinds)
            self._rng = random.Random(self.seed if seed is None else seed)

    def hold(self) -> None:
        """Park subsequent generation requests after their first chunk until :meth:`release`."""
        with self._cond:
            self._held = True

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def loaded_models(self) -> list[str]:
        """Names of resident models, least recently used first."""
        with self._cond:
            return [r.spec.name for r in sorted(self._runners.values(), key=lambda r: r.last_used)]

    def wait_in_flight(self, n: int, timeout: float = 10) -> bool:
        """Wait until at least ``n`` generation requests are being served."""
        with self._cond:
            return self._cond.wait_for(lambda: self._in_flight >= n, timeout)

    def wait_idle(self, timeout: float = 10) -> bool:
        """Wait until no generation request is in flight (e.g. after a client hung up)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._in_flight == 0, timeout)

    def answering(self) -> list[Any]:
        """The bodies of the generation requests being answered now."""
        with self._cond:
            return [json.loads(key) for key in self._answering]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> bool:
        """Wait until ``predicate()`` holds; it runs under the emulator's lock, and is asked again
        at each request received, started or ended (it may read ``requests``)."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_requests(self, n: int, timeout: float = 10) -> bool:
        """Wait until at least ``n`` generation requests (incl. /v1) have been received."""
        with self._cond:
            return self._cond.wait_for(lambda: self._gen_received >= n, timeout)

    def reset(self) -> None:
        """Forget records, counters, pending faults and loaded models; lift any hold."""
        with self._cond:
            self.requests.clear()
            self.load_log.clear()
            self.loads = self.disconnects = self._gen_received = 0
            self.max_concurrent_seen = self._in_flight
            self.overlaps.clear()
            self._faults.clear()
            self._rate = 0.0
            self._runners.clear()
            self._held = False
            self._cond.notify_all()

    # ----------------------------------------------------------------- internals used by the handler
    def _lookup(self, name: Any) -> ModelSpec | None:
        parts = parse_model_name(name)
        return None if parts is None else self.models.get(_key(parts))

    def _record(self, method: str, path: str, body: Any, generation: bool) -> None:
        with self._cond:
            self.requests.append((method, path, body))
            self._gen_received += generation
            self._cond.notify_all()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._cond:
            (self._conns.add if add else self._conns.discard)(conn)

    def _enter(self, h: _Handler, body: Any) -> str:
        key = json.dumps(body, sort_keys=True)
        with self._cond:
            self._in_flight += 1
            self.max_concurrent_seen = max(self.max_concurrent_seen, self._in_flight)
            # An earlier request whose client has hung up is over, even if its handler has
            # not noticed yet (it looks every token, or every 0.05 s while held).
            if any(not other.client_gone() for other in self._answering.get(key, ())):
                self.overlaps.append(body)
            self._answering.setdefault(key, []).append(h)
            self._cond.notify_all()
        return key

    def _leave(self, h: _Handler, key: str, gone: bool) -> None:
        with self._cond:
            self._in_flight -= 1
            self.disconnects += gone
            answering = self._answering[key]
            answering.remove(h)
            if not answering:
                del self._answering[key]
            self._cond.notify_all()

    def _wait_locked(self, pred: Callable[[], bool], h: _Handler) -> None:
        # Timed waits only so that a vanished client is noticed (sockets can't signal a Condition).
        # Stopping is checked first so that stop() aborts parked requests instead of releasing them.
        while True:
            if self._stop_evt.is_set():
                raise _Abort(False)
            if pred():
                return
            if h.client_gone():
                raise _Abort(True)
            self._cond.wait(0.05)

    def _take_fault(self, spec: ModelSpec) -> _Fault | None:
        with self._cond:
            for f in self._faults:
                if f.model is None or f.model == spec.key:
                    f.remaining -= 1
                    if f.remaining <= 0:
                        self._faults.remove(f)
                    return f
            if self._rate <= 0 or self._rng.random() >= self._rate:
                return None
            kind, after = self._rng.choice(self._rate_kinds), self._rng.randint(1, 3)
        if kind.startswith("status"):
            status = int(kind[6:])
            return _Fault("status", status, BUSY_MESSAGE if status == 503 else CRASH_MESSAGE)
        return _Fault(kind, after_chunks=after)

    def _acquire(self, spec: ModelSpec, opts: dict[str, Any], keep_alive: float, h: _Handler) -> tuple[_Runner, bool]:
        """Get a runner for ``spec``; returns (runner, went_through_scheduler)."""
        num_ctx = int(opts.get("num_ctx") or DEFAULT_NUM_CTX)
        token = object()
        with self._cond:
            self._expire_locked()
            r = self._runners.get(spec.key)
            if r is not None and r.num_ctx == num_ctx:
                r.refs += 1
                r.last_used = time.monotonic()
                return r, False
            self._load_queue.append(token)
        try:
            with self._cond:
                self._wait_locked(lambda: self._load_queue[0] is token, h)
                r = self._runners.get(spec.key)
                if r is not None and r.num_ctx == num_ctx:  # the request ahead of us loaded it
                    r.refs += 1
                    r.last_used = time.monotonic()
                    return r, True
                if r is not None:  # num_ctx changed: Ollama reloads once the runner is idle
                    old = r
                    self._wait_locked(lambda: old.refs == 0, h)
                    self._runners.pop(spec.key, None)
                while len(self._runners) >= self.max_loaded:
                    idle = [x for x in self._runners.values() if x.refs == 0]
                    if idle:
                        del self._runners[min(idle, key=lambda x: x.last_used).spec.key]
                    else:  # evict only once some model is idle, as Ollama does
                        self._wait_locked(lambda: any(x.refs == 0 for x in self._runners.values()), h)
            if self.load_time > 0 and self._stop_evt.wait(self.load_time):
                raise _Abort(False)
            with self._cond:
                r = _Runner(spec, num_ctx, keep_alive, refs=1)
                self._runners[spec.key] = r
                self.loads += 1
                self.load_log.append(spec.name)
                return r, True
        finally:
            with self._cond:
                self._load_queue.remove(token)
                self._cond.notify_all()

    def _expire_locked(self) -> None:
        """Unload idle models whose keep_alive ran out (checked lazily, no timer thread)."""
        now = time.monotonic()
        for r in [r for r in self._runners.values() if r.refs == 0 and r.last_used + r.keep_alive <= now]:
            del self._runners[r.spec.key]

    def _take_slot(self, r: _Runner, h: _Handler) -> None:
        with self._cond:
            self._wait_locked(lambda: r.busy < self.num_parallel, h)
            r.busy += 1

    def _release(self, r: _Runner, keep_alive: float, generating: bool) -> None:
        with self._cond:
            r.busy -= generating
            r.refs -= 1
            r.keep_alive = keep_alive  # the last request to touch a model sets its timer
            r.last_used = time.monotonic()
            if r.refs == 0 and (keep_alive == 0 or r.unload_requested) and self._runners.get(r.spec.key) is r:
                del self._runners[r.spec.key]
            self._cond.notify_all()

    def _unload(self, spec: ModelSpec) -> None:
        with self._cond:
            r = self._runners.get(spec.key)
            if r is not None and r.refs == 0:
                del self._runners[spec.key]
            elif r is not None:
                r.unload_requested = True

    def _gate(self, h: _Handler) -> None:
        with self._cond:
            self._wait_locked(lambda: not self._held, h)

    def _tick(self, h: _Handler) -> None:
        """One token's worth of work: wait token_delay, stop if the client left."""
        if self._stop_evt.wait(self.token_delay) if self.token_delay > 0 else self._stop_evt.is_set():
            raise _Abort(False)
        if h.client_gone():
            raise _Abort(True)

    def _make_text(self, job: _Job) -> tuple[list[str], str]:
        """Deterministic tokens for a job, and the done_reason."""
        base = _h(self.seed, job.spec.key, job.payload, job.opts.get("seed"), bool(job.fmt))
        limit = job.opts.get("num_predict")
        limit = limit if isinstance(limit, int) and limit > 0 else None
        words = [_WORDS[_h(base, i) % len(_WORDS)] for i in range(limit or 6 + base % 5)]
        words[0] = words[0].capitalize()
        if limit is None:
            words[-1] += "."
        tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
        if job.fmt:
            tokens = ['{"', "answer", '": "', *tokens, '"}'][: limit or None]
        reason = "stop" if limit is None else "length"
        text = "".join(tokens)
        cuts = [text.find(s) for s in job.opts.get("stop") or [] if s and s in text]
        if cuts:
            tokens, reason = _cut_tokens(tokens, min(cuts)), "stop"
        return tokens, reason

    def _embedding(self, spec: ModelSpec, text: str) -> list[float]:
        """A bag of hashed words: each word (lower case) has a fixed random vector, and a text's
        vector is their sum, so texts that differ by a word are close by design (the semantic
        cache's tests need near-duplicates) and texts with few words in common are not. A text
        with no words gets a vector of its own."""
        words = re.findall(r"\w+", text.lower()) or [text]
        vec = [0.0] * spec.embedding_length
        for word in words:
            rng = random.Random(_h("embed", self.seed, spec.key, word))
            for i in range(spec.embedding_length):
                vec[i] += rng.uniform(-1.0, 1.0)
        return vec


# --------------------------------------------------------------------------- HTTP layer

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = socket.SOMAXCONN  # socketserver's 5 resets connections under bursts
    emu: Emulator
    loopback: bool

    def server_bind(self) -> None:
        # Skip HTTPServer's getfqdn(), which can stall on reverse DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        # Go's net/http sends no Server header.
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def setup(self) -> None:
        super().setup()
        # Like Go: no Nagle, so header/body writes and each streamed token leave at once.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.emu._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emu._track(self.connection, False)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    # ----------------------------------------------------------------- plumbing
    def client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        emu = self.server.emu
        self.t0 = time.perf_counter_ns()
        self.path_only = path = self.path.split("?", 1)[0]
        try:
            raw = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        try:
            recorded = json.loads(raw) if raw.strip() else None
        except ValueError:
            recorded = None
        generation = self.command == "POST" and path in GENERATION_PATHS
        emu._record(self.command, path, recorded, generation)
        if generation:
            key = emu._enter(self, recorded)
        gone = False
        try:
            try:
                self._route(path, raw)
            except _ApiError as e:
                self._error(e.status, e.message)
        except _Abort as e:
            self.close_connection, gone = True, e.gone
        except OSError:  # the client vanished while we were writing
            self.close_connection, gone = True, True
        finally:
            if generation:
                emu._leave(self, key, gone)

    def _route(self, path: str, raw: bytes) -> None:
        if not self._host_allowed():
            return self._send(403, b"", None)
        if self.command == "OPTIONS":  # what Ollama's host middleware answers for local hosts
            return self._send(204, b"", None)
        route = _ROUTES.get(path)
        if route is None and path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
            route = {"GET": "v1_model"}
        if route is None:
            return self._send(404, b"404 page not found", "text/plain")
        if self.command not in route:
            return self._send(405, b"405 method not allowed", "text/plain")
        getattr(self, "_ep_" + route[self.command])(raw)

    def _host_allowed(self) -> bool:
        if not self.server.loopback:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("[") and "]" in host:
            host = host[1:host.index("]")]
        elif host.count(":") == 1:
            host = host.split(":")[0]
        try:
            ip = ipaddress.ip_address(host)
            return ip.is_loopback or ip.is_private or ip.is_unspecified
        except ValueError:
            return host in ("", "localhost", socket.gethostname().lower()) or host.endswith(
                (".localhost", ".local", ".internal"))

    def _send(self, status: int, body: bytes, ctype: str | None) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        if self.path_only.startswith("/v1/"):  # the /v1 middleware uses json.Encoder: trailing newline
            return self._send(status, _dumps(obj) + b"\n", "application/json")
        self._send(status, _dumps(obj), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        if self.path_only.startswith("/v1/"):
            etype = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
            return self._json(status, {"error": {"message": message, "type": etype, "param": None, "code": None}})
        self._json(status, {"error": message})

    def _start_stream(self, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _drop(self) -> NoReturn:
        """Cut the connection mid-response: the client sees a truncated body."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Abort(False)

    def _decode(self, raw: bytes, struct: str, fields: Mapping[str, tuple[tuple[type, ...], str]]) -> dict[str, Any]:
        """Parse a JSON body with Go's error messages."""
        if not raw.strip():
            raise _ApiError(400, "missing request body")
        try:
            body = json.loads(raw)
        except UnicodeDecodeError:
            raise _ApiError(400, "invalid character looking for beginning of value") from None
        except json.JSONDecodeError as e:
            at_end = e.pos >= len(e.doc.rstrip())
            raise _ApiError(400, "unexpected EOF" if at_end else
                            f"invalid character {e.doc[e.pos]!r} looking for beginning of value") from None
        if not isinstance(body, dict):
            raise _ApiError(400, f"json: cannot unmarshal {_json_type(body)} into Go value of type {struct}")
        for name, (types, gotype) in fields.items():
            v = body.get(name)
            if v is not None and not _is(v, types):
                raise _ApiError(400, f"json: cannot unmarshal {_json_type(v)} into Go struct field "
                                     f"{struct.split('.')[-1]}.{name} of type {gotype}")
        return body

    # ----------------------------------------------------------------- simple endpoints
    def _ep_root(self, raw: bytes) -> None:
        self._send(200, b"Ollama is running", "text/plain; charset=utf-8")

    def _ep_version(self, raw: bytes) -> None:
        self._json(200, {"version": VERSION})

    def _ep_tags(self, raw: bytes) -> None:
        specs = sorted(self.server.emu.models.values(), key=lambda s: -s.modified_at)
        self._json(200, {"models": [s.listing() for s in specs]})

    def _ep_ps(self, raw: bytes) -> None:
        emu = self.server.emu
        with emu._cond:
            emu._expire_locked()
            runners = [(r.expires_at(), r) for r in emu._runners.values()]
        models = [{"name": r.spec.name, "model": r.spec.name, "size": r.spec.size, "digest": r.spec.digest,
                   "details": r.spec.details(), "expires_at": _local_time(exp), "size_vram": r.spec.size,
                   "context_length": r.num_ctx} for exp, r in sorted(runners, key=lambda x: -x[0])]
        self._json(200, {"models": models})

    def _ep_show(self, raw: bytes) -> None:
        body = self._decode(raw, "api.ShowRequest", _SHOW_FIELDS)
        name = body.get("model") or body.get("name") or ""
        if not name:
            raise _ApiError(400, "model is required")
        parts = parse_model_name(name)
        if parts is None:
            raise _ApiError(400, "invalid model name")
        spec = self.server.emu._lookup(name)
        if spec is None:
            raise _ApiError(404, f"model '{_display(parts)}' not found")
        fam = spec.family
        m = re.fullmatch(r"([\d.]+)([KMB]?)", spec.parameter_size)
        params = int(float(m.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9, "": 1}[m.group(2)]) if m else 0
        self._json(200, {
            "license": "Emulated model, no license.",
            "modelfile": f'# Modelfile generated by "ollama show"\n# FROM {spec.name}\n\n'
                         f'FROM {spec.name}\nTEMPLATE """{{{{ .Prompt }}}}"""\n',
            "parameters": "", "template": "{{ .Prompt }}", "details": spec.details(),
            "model_info": {"general.architecture": fam, "general.parameter_count": params,
                           f"{fam}.context_length": spec.context_length,
                           f"{fam}.embedding_length": spec.embedding_length},
            "capabilities": list(spec.capabilities), "modified_at": _local_time(spec.modified_at),
        })

    def _ep_v1_models(self, raw: bytes) -> None:
        specs = sorted(self.server.emu.models.values(), key=lambda s: -s.modified_at)
        self._json(200, {"object": "list", "data": [self._v1_model(s) for s in specs]})

    def _ep_v1_model(self, raw: bytes) -> None:
        name = self.path_only[len("/v1/models/"):]
        spec = self.server.emu._lookup(name)
        if spec is None:
            raise _ApiError(404, f"model '{name}' not found")
        self._json(200, self._v1_model(spec, name))

    @staticmethod
    def _b64(vec: list[float]) -> str:
        return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()

    @staticmethod
    def _v1_model(spec: ModelSpec, name: str | None = None) -> dict[str, Any]:
        parts = parse_model_name(spec.name)
        return {"id": name or spec.name, "object": "model", "created": int(spec.modified_at),
                "owned_by": parts[1] if parts else "library"}

    # ----------------------------------------------------------------- generation endpoints
    def _ep_generate(self, raw: bytes) -> None:
        body = self._decode(raw, "api.GenerateRequest", _GEN_FIELDS)
        keep_alive = _keep_alive(body)
        sent, spec = self._model(body, required=False)
        prompt = body.get("prompt") or ""
        if not prompt and keep_alive == 0:
            return self._unload(spec, sent, "generate")
        if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
            raise _ApiError(400, "raw mode does not support template, system, or context")
        self._check_think(spec, sent, body.get("think"))
        if "completion" not in spec.capabilities:
            raise _ApiError(400, f"{json.dumps(sent)} does not support generate")
        if body.get("suffix") and "insert" not in spec.capabilities:
            raise _ApiError(400, f"{spec.full} does not support insert")
        payload = {k: body.get(k) or None for k in ("prompt", "system", "suffix", "context")}
        n_prompt = _count_tokens(prompt) + _count_tokens(body.get("system")) + len(body.get("context") or []) + 4
        self._run(_Job("generate", spec, sent, payload, _options(body.get("options")), keep_alive,
                       body.get("stream") is not False, n_prompt, body.get("format"), not prompt, bool(body.get("raw"))))

    def _model(self, body: dict[str, Any], *, required: bool) -> tuple[str, ModelSpec]:
        """The model a request names and its spec, as Ollama resolves it: 400 without a valid
        name (on the endpoints that check it first), 404 for one it does not have."""
        sent = body.get("model") or ""
        if required and parse_model_name(sent) is None:
            raise _ApiError(400, "model is required")
        spec = self.server.emu._lookup(sent)
        if spec is None:
            raise _ApiError(404, f"model '{sent}' not found")
        return sent, spec

    def _ep_chat(self, raw: bytes) -> None:
        body = self._decode(raw, "api.ChatRequest", _CHAT_FIELDS)
        keep_alive = _keep_alive(body)
        messages = self._messages(body.get("messages") or [], v1=False)
        sent, spec = self._model(body, required=True)
        if not messages and keep_alive == 0:
            return self._unload(spec, sent, "chat")
        self._check_think(spec, sent, body.get("think"))
        self._check_chat_caps(spec, sent, body.get("tools"))
        n_prompt = sum(_count_tokens(m["content"]) + 4 for m in messages)
        self._run(_Job("chat", spec, sent, messages, _options(body.get("options")), keep_alive,
                       body.get("stream") is not False, n_prompt, body.get("format"), not messages))

    def _ep_v1_chat(self, raw: bytes) -> None:
        body = self._decode(raw, "openai.ChatCompletionRequest", _V1_CHAT_FIELDS)
        if not body.get("messages"):
            raise _ApiError(400, "[] is too short - 'messages'")
        messages = self._messages(body["messages"], v1=True)
        sent, spec = self._model(body, required=True)
        self._check_chat_caps(spec, sent, body.get("tools"))
        rf = body.get("response_format")
        rf = rf if isinstance(rf, dict) else {}
        schema = rf.get("json_schema")
        fmt = "json" if rf.get("type") == "json_object" else schema.get("schema") if isinstance(schema, dict) else None
        n_prompt = sum(_count_tokens(m["content"]) + 4 for m in messages)
        self._run(_Job("v1_chat", spec, sent, messages, self._v1_options(body), DEFAULT_KEEP_ALIVE,
                       bool(body.get("stream")), n_prompt, fmt,
                       include_usage=self._include_usage(body),
                       v1_id=f"chatcmpl-{random.randrange(999)}"))

    def _ep_v1_completions(self, raw: bytes) -> None:
        body = self._decode(raw, "openai.CompletionRequest", _V1_COMPLETION_FIELDS)
        sent, spec = self._model(body, required=False)
        if "completion" not in spec.capabilities:
            raise _ApiError(400, f"{json.dumps(sent)} does not support generate")
        prompt = body.get("prompt") or ""
        payload = {"prompt": prompt or None, "system": None, "suffix": body.get("suffix") or None, "context": None}
        self._run(_Job("v1_completions", spec, sent, payload, self._v1_options(body), DEFAULT_KEEP_ALIVE,
                       bool(body.get("stream")), _count_tokens(prompt) + 4, load_only=not prompt,
                       include_usage=self._include_usage(body),
                       v1_id=f"cmpl-{random.randrange(999)}"))

    def _messages(self, raw: list[Any], v1: bool) -> list[dict[str, str]]:
        """Normalise messages to {role, content} so /api/chat and /v1 give the same text."""
        out = []
        for m in raw:
            if not isinstance(m, dict):
                raise _ApiError(400, f"json: cannot unmarshal {_json_type(m)} into Go struct field "
                                     f"ChatRequest.messages of type api.Message")
            content = m.get("content")
            if isinstance(content, list) and v1:
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
            elif content is None and (not v1 or m.get("tool_calls") is not None):
                content = ""
            elif not isinstance(content, str):
                raise _ApiError(400, f"invalid message content type: {_json_type(content)}" if v1 else
                                f"json: cannot unmarshal {_json_type(content)} into Go struct field "
                                f"Message.messages.content of type string")
            out.append({"role": str(m.get("role") or "").lower(), "content": content})
        return out

    @staticmethod
    def _include_usage(body: dict[str, Any]) -> bool:
        opts = body.get("stream_options")
        return isinstance(opts, dict) and bool(opts.get("include_usage"))

    @staticmethod
    def _v1_options(body: dict[str, Any]) -> dict[str, Any]:
        stop = body.get("stop")
        opts = {"num_predict": body.get("max_tokens"), "seed": body.get("seed"),
                "temperature": body.get("temperature"), "top_p": body.get("top_p"),
                "stop": [stop] if isinstance(stop, str) else
                [s for s in stop if isinstance(s, str)] if isinstance(stop, list) else None}
        return _options({k: v for k, v in opts.items() if v is not None})

    @staticmethod
    def _check_think(spec: ModelSpec, sent: str, think: Any) -> None:
        if think is None:
            return
        if not isinstance(think, bool) and think not in ("low", "medium", "high", "max"):
            raise _ApiError(400, f"invalid think value: {json.dumps(think)}")
        if think is not False and "thinking" not in spec.capabilities:
            raise _ApiError(400, f"{json.dumps(sent)} does not support thinking")

    @staticmethod
    def _check_chat_caps(spec: ModelSpec, sent: str, tools: Any) -> None:
        if "completion" not in spec.capabilities:
            raise _ApiError(400, f"{json.dumps(sent)} does not support chat")
        if tools and "tools" not in spec.capabilities:
            raise _ApiError(400, f"{spec.full} does not support tools")

    def _unload(self, spec: ModelSpec, sent: str, kind: str) -> None:
        self.server.emu._unload(spec)
        self._json(200, self._final(_Job(kind, spec, sent, None, {}, 0, False, 0), "", "unload", {}))

    def _admit(self, spec: ModelSpec, opts: dict[str, Any], keep_alive: float) -> tuple[_Fault | None, _Runner, int]:
        """Apply "status"/"hang" faults, then schedule; returns (fault still to apply, runner, load_ns)."""
        emu = self.server.emu
        fault = emu._take_fault(spec)
        if fault is not None and fault.kind == "status":
            raise _ApiError(fault.status, fault.message)
        if fault is not None and fault.kind == "hang":
            with emu._cond:
                emu._wait_locked(lambda: False, self)  # only leaves by raising _Abort
        runner, scheduled = emu._acquire(spec, opts, keep_alive, self)
        return fault, runner, (time.perf_counter_ns() - self.t0 if scheduled else 0)

    def _run(self, job: _Job) -> None:
        """Schedule, then stream or reply; injected faults are applied here."""
        emu = self.server.emu
        fault, runner, load_ns = self._admit(job.spec, job.opts, job.keep_alive)
        generating = False
        try:
            if job.load_only:
                if fault is not None:
                    self._fail_unwritten(fault)
                return self._reply(job, self._final(job, "", "load", {}))
            fmt_error = _format_error(job.fmt)
            if fmt_error:  # reported by the runner, i.e. after the load
                raise _ApiError(500, fmt_error)
            emu._take_slot(runner, self)
            generating = True
            t_start = time.perf_counter_ns()
            tokens, reason = emu._make_text(job)
            t_first = time.perf_counter_ns()
            fail_at = min(fault.after_chunks, len(tokens)) if fault is not None else -1
            started = False
            for i, tok in enumerate(tokens):
                if i == fail_at:
                    break
                emu._tick(self)
                if job.stream:
                    if not started:
                        self._start_stream("text/event-stream" if job.v1_id else "application/x-ndjson")
                        started = True
                    self._chunk(self._piece(job, tok))
                if i == 0:
                    emu._gate(self)
            if fault is not None:
                if not started or fault.kind == "drop":
                    self._fail_unwritten(fault)  # drop, or Ollama's "error before output" 500
                if job.v1_id:
                    error = {"message": fault.message, "type": "api_error", "param": None, "code": None}
                    self._chunk(b"data: " + _dumps({"error": error}) + b"\n\n")
                else:  # a line with only "error", then the stream ends normally
                    self._chunk(_dumps({"error": fault.message}) + b"\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            if not tokens:
                emu._gate(self)
            now = time.perf_counter_ns()
            stats: dict[str, int] = {"total_duration": now - self.t0}
            if load_ns:
                stats["load_duration"] = load_ns
            stats.update(prompt_eval_count=job.prompt_tokens, prompt_eval_duration=max(1, t_first - t_start))
            if tokens:
                stats.update(eval_count=len(tokens), eval_duration=max(1, now - t_first))
            final = self._final(job, "" if job.stream else "".join(tokens), reason, stats)
            if not job.stream:
                return self._reply(job, final)
            if not started:
                self._start_stream("text/event-stream" if job.v1_id else "application/x-ndjson")
            self._chunk(final if isinstance(final, bytes) else _dumps(final) + b"\n")
            self.wfile.write(b"0\r\n\r\n")
        finally:
            emu._release(runner, job.keep_alive, generating)

    def _fail_unwritten(self, fault: _Fault) -> NoReturn:
        if fault.kind == "drop":
            self._drop()
        raise _ApiError(500, fault.message)

    def _reply(self, job: _Job, final: Any) -> None:
        """Send a non-streamed final object (v1 streams get their closing SSE events)."""
        if isinstance(final, bytes):
            self._start_stream("text/event-stream")
            self._chunk(final)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._json(200, final)

    def _piece(self, job: _Job, text: str) -> bytes:
        if job.kind == "generate":
            return _dumps({"model": job.sent, "created_at": _now_utc(), "response": text, "done": False}) + b"\n"
        if job.kind == "chat":
            return _dumps({"model": job.sent, "created_at": _now_utc(),
                           "message": {"role": "assistant", "content": text}, "done": False}) + b"\n"
        return b"data: " + _dumps(self._v1_chunk(job, text, None)) + b"\n\n"

    def _v1_chunk(self, job: _Job, text: str, reason: str | None) -> dict[str, Any]:
        if job.kind == "v1_chat":
            return {"id": job.v1_id, "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": job.sent, "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": reason}]}
        return {"id": job.v1_id, "object": "text_completion", "created": int(time.time()),
                "choices": [{"text": text, "index": 0, "finish_reason": reason}],
                "model": job.sent, "system_fingerprint": "fp_ollama"}

    def _final(self, job: _Job, content: str, reason: str, stats: dict[str, int]) -> Any:
        """The done:true object (native), or the v1 completion object / closing SSE events (bytes)."""
        if job.kind in ("generate", "chat"):
            obj: dict[str, Any] = {"model": job.sent, "created_at": _now_utc()}
            if job.kind == "generate":
                obj["response"] = content
            else:
                obj["message"] = {"role": "assistant", "content": content}
            obj.update(done=True, done_reason=reason)
            if job.kind == "generate" and stats and not job.raw:
                rng = random.Random(_h(job.spec.key, job.payload))
                obj["context"] = [rng.randrange(128256) for _ in range(job.prompt_tokens + stats.get("eval_count", 0))]
            obj.update(stats)
            return obj
        n_in, n_out = stats.get("prompt_eval_count", 0), stats.get("eval_count", 0)
        usage = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
        if job.stream:
            events = [self._v1_chunk(job, "", reason)]
            if job.include_usage:
                events.append({**self._v1_chunk(job, "", None), "choices": [], "usage": usage})
            return b"".join(b"data: " + _dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        obj = {"id": job.v1_id, "object": "chat.completion" if job.kind == "v1_chat" else "text_completion",
               "created": int(time.time()), "model": job.sent, "system_fingerprint": "fp_ollama"}
        if job.kind == "v1_chat":
            obj["choices"] = [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": reason}]
        else:
            obj["choices"] = [{"text": content, "index": 0, "finish_reason": reason}]
        obj["usage"] = usage
        return obj

    def _ep_embed(self, raw: bytes) -> None:
        v1 = self.path_only.startswith("/v1/")
        body = self._decode(raw, "openai.EmbedRequest" if v1 else "api.EmbedRequest",
                            _V1_EMBED_FIELDS if v1 else _EMBED_FIELDS)
        value = body.get("input")
        encoding = body.get("encoding_format") or "float"
        if v1 and encoding.lower() not in ("float", "base64"):
            raise _ApiError(400, f"Invalid value for 'encoding_format' = {encoding}. Supported values: ['float', 'base64'].")
        if v1 and (value is None or value == []):
            raise _ApiError(400, "invalid input")
        if isinstance(value, str):
            inputs = [value] if value or v1 else []
        elif isinstance(value, list) and all(isinstance(x, str) for x in value):
            inputs = list(value)
        elif value is None:
            inputs = []
        else:
            raise _ApiError(400, "invalid input type")
        sent = body.get("model") or ""
        if not sent:
            raise _ApiError(400, "model is required")
        spec = self.server.emu._lookup(sent)
        if spec is None:
            raise _ApiError(404, f"model {json.dumps(sent)} not found, try pulling it first")
        # The /v1 middleware forwards only model, input and dimensions.
        opts, keep_alive = ({}, DEFAULT_KEEP_ALIVE) if v1 else (_options(body.get("options")), _keep_alive(body))
        dims = body.get("dimensions") or 0

        def compute(runner: _Runner) -> dict[str, Any]:
            limit = min(runner.num_ctx, spec.context_length)
            counts = [_count_tokens(t) + 2 for t in inputs]  # + BOS/EOS
            if body.get("truncate") is False and any(c > limit for c in counts):
                raise _ApiError(400, "the input length exceeds the context length")
            vectors = []
            for i, text in enumerate(inputs):
                self.server.emu._tick(self)
                vec = _normalize(self.server.emu._embedding(spec, text))
                vectors.append(_normalize(vec[:dims]) if 0 < dims < len(vec) else vec)
                if i == 0:
                    self.server.emu._gate(self)
            if v1:
                data = [{"object": "embedding", "embedding": self._b64(v) if encoding.lower() == "base64" else v,
                         "index": i} for i, v in enumerate(vectors)]
                return {"object": "list", "data": data, "model": sent,
                        "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}}
            return {"model": sent, "embeddings": vectors, "prompt_eval_count": sum(counts)}

        self._run_embedding(spec, opts, keep_alive, compute, None if inputs else {"model": sent, "embeddings": []})

    def _ep_embeddings(self, raw: bytes) -> None:
        body = self._decode(raw, "api.EmbeddingRequest", _EMBEDDINGS_FIELDS)
        sent = body.get("model") or ""
        if parse_model_name(sent) is None:
            raise _ApiError(400, "model is required")
        spec = self.server.emu._lookup(sent)
        if spec is None:
            raise _ApiError(404, f"model {json.dumps(sent)} not found, try pulling it first")
        prompt = body.get("prompt") or ""

        def compute(runner: _Runner) -> dict[str, Any]:
            self.server.emu._tick(self)
            self.server.emu._gate(self)
            return {"embedding": self.server.emu._embedding(spec, prompt)}  # legacy: not normalised

        self._run_embedding(spec, _options(body.get("options")), _keep_alive(body), compute,
                            None if prompt else {"embedding": []})

    def _run_embedding(self, spec: ModelSpec, opts: dict[str, Any], keep_alive: float,
                       compute: Callable[[_Runner], dict[str, Any]], empty_reply: dict[str, Any] | None) -> None:
        emu = self.server.emu
        fault, runner, load_ns = self._admit(spec, opts, keep_alive)
        generating = False
        try:
            if fault is not None:
                self._fail_unwritten(fault)
            if empty_reply is not None:  # no input: the model still gets loaded, as in Ollama
                return self._json(200, empty_reply)
            emu._take_slot(runner, self)
            generating = True
            result = compute(runner)
            if self.path_only == "/api/embed":
                count = result.pop("prompt_eval_count")
                result["total_duration"] = time.perf_counter_ns() - self.t0
                if load_ns:
                    result["load_duration"] = load_ns
                result["prompt_eval_count"] = count
            self._json(200, result)
        finally:
            emu._release(runner, keep_alive, generating)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Ollama-compatible HTTP server emulator")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token-delay", type=float, default=0.0, help="seconds per generated token")
    ap.add_argument("--load-time", type=float, default=0.0, help="seconds to load a model")
    ap.add_argument("--max-loaded", type=int, default=3)
    ap.add_argument("--num-parallel", type=int, default=4)
    ap.add_argument("--models", default="", help="comma-separated model names (default: built-in set)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--failure-rate", type=float, default=0.0)
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()] or None
    emu = Emulator(models, host=args.host, port=args.port, token_delay=args.token_delay,
                   load_time=args.load_time, max_loaded=args.max_loaded, num_parallel=args.num_parallel,
                   seed=args.seed)
    if args.failure_rate > 0:
        emu.failure_rate(args.failure_rate)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    emu.start()
    print(emu.url, flush=True)
    while not done.wait(0.5):  # a timed wait keeps signal delivery prompt on every platform
        pass
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
