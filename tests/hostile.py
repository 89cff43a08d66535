"""A backend that misbehaves on purpose, over real HTTP on 127.0.0.1: the replies Ollama
never sends but a broken proxy, a wedged server or an attacker can. The emulator
(`tests/emulator.py`) answers as Ollama does; this one answers as told.

Listings (`/`, `/api/tags`, `/api/ps`, `/v1/models`) get `listing`, by default a polite
one naming llama3.2 and all-minilm. Every other request (generations and embeddings, native
or /v1) gets the next of `acts`, the last one again once they run out. An act is a function
of the request's `Exchange` that writes the reply:

    with Hostile(status(429, headers={"Retry-After": "0"}), lines(*answer("Hi"))) as h: ...
    with Hostile(endless()) as h: ...           # a fast stream that never ends
    with Hostile.black_hole() as h: ...         # accepts TCP, never answers anything

A test awaits what the server saw (`wait_requests`, `wait_hangups`), never a sleep."""

from __future__ import annotations

import json
import select
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LISTINGS = frozenset({"/", "/api/tags", "/api/ps", "/v1/models", "/api/version"})
MODELS = ("llama3.2:latest", "all-minilm:latest")


class Gone(Exception):
    """The client hung up, or the server is stopping."""


class Exchange:
    """One request and the means to answer it."""

    def __init__(self, handler: _Handler, body: Any) -> None:
        self._h = handler
        self.path: str = handler.path
        self.body = body  # the request's JSON, or None

    @property
    def stopping(self) -> threading.Event:
        return self._h.server.hostile._stop  # type: ignore[attr-defined]

    def start(self, status: int = 200, headers: dict[str, str] | None = None, *, chunked: bool = True,
              length: int | None = None) -> None:
        """The status line and headers: a chunked body, or one of `length` bytes."""
        self._h.send_response(status)
        for name, value in (headers or {}).items():
            self._h.send_header(name, value)
        if chunked:
            self._h.send_header("Transfer-Encoding", "chunked")
        else:
            self._h.send_header("Content-Length", str(length or 0))
        self._h.end_headers()

    def chunk(self, data: bytes) -> None:
        self.write(b"%x\r\n%s\r\n" % (len(data), data))

    def write(self, data: bytes) -> None:
        """Bytes as they are, without chunk framing."""
        if self.stopping.is_set():
            raise Gone
        try:
            self._h.wfile.write(data)
            self._h.wfile.flush()
        except OSError:
            raise Gone from None
        if self.path not in LISTINGS:
            self._h.server.hostile._sent(len(data))  # type: ignore[attr-defined]

    def end(self) -> None:
        self.write(b"0\r\n\r\n")

    def hold(self, seconds: float | None = None) -> None:
        """Wait `seconds` (forever if None) while watching for the client to hang up."""
        waited = 0.0
        while seconds is None or waited < seconds:
            step = 0.02 if seconds is None else min(0.02, seconds - waited)
            if self.stopping.wait(0) or self._gone(step):
                raise Gone
            waited += step

    def _gone(self, timeout: float) -> bool:
        sock = self._h.connection
        readable, _, _ = select.select([sock], [], [], timeout)
        if not readable:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


Act = Callable[[Exchange], None]


def _encode(item: dict[str, Any] | bytes | str) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    return json.dumps(item).encode()


def lines(*items: dict[str, Any] | bytes | str, sse: bool = False) -> Act:
    """A stream of these lines (NDJSON, or SSE `data:` events), then its end."""
    def act(x: Exchange) -> None:
        x.start(200, {"Content-Type": "text/event-stream" if sse else "application/x-ndjson"})
        for item in items:
            x.chunk(b"data: " + _encode(item) + b"\n\n" if sse else _encode(item) + b"\n")
        x.end()
    return act


def answer(text: str = "Hi", **final: Any) -> list[dict[str, Any]]:
    """The lines of a /api/generate stream saying `text`, the final line overridden by `final`."""
    return [{"response": text, "done": False},
            {"response": "", "done": True, "eval_count": 1, "prompt_eval_count": 1, **final}]


def body(obj: dict[str, Any] | list[Any] | bytes, status: int = 200, headers: dict[str, str] | None = None) -> Act:
    """One whole reply (a JSON value, or raw bytes) with this status."""
    def act(x: Exchange) -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        x.start(status, {"Content-Type": "application/json", **(headers or {})}, chunked=False, length=len(data))
        x.write(data)
    return act


def status(code: int, message: str = "try again later", headers: dict[str, str] | None = None) -> Act:
    """An error reply in Ollama's shape, `{"error": message}`."""
    return body({"error": message}, code, headers)


def echo(code: int = 400) -> Act:
    """An error that quotes the whole request back, as FastAPI's validation errors do."""
    def act(x: Exchange) -> None:
        body({"error": f"invalid request: {json.dumps(x.body)}"}, code)(x)
    return act


def embeddings(vectors: Any, **fields: Any) -> Act:
    """An /api/embed reply carrying `vectors` as they are."""
    return body({"model": "all-minilm", "embeddings": vectors, **fields})


def raw(data: bytes) -> Act:
    """These bytes as the whole reply, status line and headers included (or not)."""
    def act(x: Exchange) -> None:
        x.write(data)
        x._h.close_connection = True
    return act


def endless(line: bytes = b'{"response":"' + b"x" * 1000 + b'","done":false}\n') -> Act:
    """`line` again and again, as fast as the client reads, until it hangs up. A `line`
    without a newline makes one line that never ends."""
    def act(x: Exchange) -> None:
        x.start(200, {"Content-Type": "application/x-ndjson"})
        piece = line * max(1, 65536 // len(line))
        while True:
            x.chunk(piece)
    return act


def slowloris(every: float = 0.3, byte: bytes = b"\n") -> Act:
    """One byte every `every` seconds, forever: data keeps coming, so no read timeout fires."""
    def act(x: Exchange) -> None:
        x.start(200, {"Content-Type": "application/x-ndjson"})
        while True:
            x.chunk(byte)
            x.hold(every)
    return act


def silent(x: Exchange) -> None:
    """Read the request, never answer (until the client hangs up or the server stops)."""
    x.hold()


def polite(x: Exchange) -> None:
    """The listings a healthy Ollama gives."""
    if x.path == "/api/tags":
        body({"models": [{"name": m, "model": m, "size": 1, "details": {}} for m in MODELS]})(x)
    elif x.path == "/api/ps":
        body({"models": []})(x)
    elif x.path == "/v1/models":
        body({"object": "list", "data": [{"id": m, "object": "model", "created": 0} for m in MODELS]})(x)
    else:
        body(b"Ollama is running")(x)


class Hostile:
    def __init__(self, *acts: Act, listing: Act = polite) -> None:
        self.acts = list(acts) or [silent]
        self.listing = listing
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, JSON body or None)
        self.hangups = 0  # replies cut short because the client went away
        self.sent = 0  # bytes of replies to generation requests
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hostile = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @classmethod
    def black_hole(cls) -> Hostile:
        """Accepts connections and reads requests, answers none of them."""
        return cls(silent, listing=silent)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Hostile:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for conn in list(self._server.conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> Hostile:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def paths(self) -> list[str]:
        with self._cond:
            return [path for _, path, _ in self.requests]

    def generations(self) -> int:
        with self._cond:
            return sum(path not in LISTINGS for _, path, _ in self.requests)

    def wait_requests(self, n: int, path: str | None = None, timeout: float = 10) -> bool:
        """Until `n` requests (to `path`, or generation requests) have come in."""
        def seen() -> int:
            return sum(p == path for _, p, _ in self.requests) if path else \
                sum(p not in LISTINGS for _, p, _ in self.requests)
        with self._cond:
            return self._cond.wait_for(lambda: seen() >= n, timeout)

    def wait_hangups(self, n: int, timeout: float = 10) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.hangups >= n, timeout)

    def _next_act(self, path: str) -> Act:
        if path in LISTINGS:
            return self.listing
        with self._cond:
            return self.acts.pop(0) if len(self.acts) > 1 else self.acts[0]

    def _record(self, method: str, path: str, body: Any) -> None:
        with self._cond:
            self.requests.append((method, path, body))
            self._cond.notify_all()

    def _sent(self, n: int) -> None:
        with self._cond:
            self.sent += n

    def _hung_up(self) -> None:
        with self._cond:
            self.hangups += 1
            self._cond.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.conns: set[socket.socket] = set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that reset its connection is what these tests are about


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def setup(self) -> None:
        super().setup()
        self.server.conns.add(self.connection)

    def finish(self) -> None:
        self.server.conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_HEAD = do_GET

    def _serve(self) -> None:
        hostile: Hostile = self.server.hostile  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        hostile._record(self.command, self.path, parsed)
        act = hostile._next_act(self.path)
        exchange = Exchange(self, parsed)
        try:
            act(exchange)
        except Gone:
            self.close_connection = True
            if not hostile._stop.is_set():
                hostile._hung_up()
