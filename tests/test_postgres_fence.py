"""A daemon cut off from its PostgreSQL server, but not from its backend, fences itself: it
stops its running requests before any other daemon may take their jobs back (daemon/fence.py,
liveness.RECLAIM_AFTER), so the backend never answers one job twice at once. The cut is a
proxy in this process between the daemon and the server: frozen, it drops the server's side
of every connection (the server ends those sessions, and the daemon's lock goes, as it does
25 s after a real cut) and leaves the daemon's side open and silent (its queries hang, as
they do behind a cut link)."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import urllib.parse

import pytest

from ollama_cli.daemon import events
from ollama_cli.daemon.loop import Daemon
from ollama_cli.jobs import JobSpec, JobStatus, JobType
from ollama_cli.settings import DaemonSettings
from ollama_cli.settings.hosts import Backend
from ollama_cli.store import open_store
from ollama_cli.store.postgres import liveness
from tests.emulator import Emulator

pytestmark = pytest.mark.slow


class Proxy:
    """TCP from 127.0.0.1:`port` to `target`, which `freeze` cuts as said above and `thaw`
    ends (the daemon's side is closed: it connects again, through the proxy)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._guard = threading.Lock()
        self._frozen = False
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._silent: list[socket.socket] = []  # the daemon's side, while frozen
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._guard:
                if self._frozen:
                    self._silent.append(client)
                    continue
                server = socket.create_connection(self.target)
                self._pairs.append((client, server))
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    return
                if not self._frozen:
                    dst.sendall(data)
            except OSError:
                return

    def freeze(self) -> None:
        with self._guard:
            self._frozen = True
            for client, server in self._pairs:
                _close(server)
                self._silent.append(client)
            self._pairs = []

    def thaw(self) -> None:
        with self._guard:
            self._frozen = False
            for client in self._silent:
                _close(client)
            self._silent = []

    def close(self) -> None:
        self._listener.close()
        self.thaw()
        for pair in self._pairs:
            for s in pair:
                _close(s)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def test_a_daemon_cut_off_from_the_store_stops_its_jobs_before_another_takes_them_back(
        pg_store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shorter than in production, and together: the fence still comes well before the reclaim.
    monkeypatch.setattr(liveness, "FENCE_AFTER", 4.0, raising=False)
    monkeypatch.setattr(liveness, "RECLAIM_AFTER", 6.0, raising=False)
    url = urllib.parse.urlsplit(pg_store_url)
    proxy = Proxy((url.hostname, url.port))
    cut_url = url._replace(netloc=f"{url.username}@127.0.0.1:{proxy.port}").geturl()
    emulator = Emulator().start()
    emulator.hold()  # a long job: it runs until released
    seen: dict[str, list[events.Event]] = {"cut": [], "other": []}
    try:
        with open_store(pg_store_url) as store, open_store(cut_url) as cut_store:
            job = store.submit(JobSpec(model="llama3.2", type=JobType.GENERATE, request={"prompt": "long"},
                                       use_cache=False), store.now())
            cut = Daemon(cut_store, [Backend(emulator.url)], DaemonSettings())
            other = Daemon(store, [Backend(emulator.url)], DaemonSettings())
            cut.events.subscribe(seen["cut"].append)
            other.events.subscribe(seen["other"].append)

            async def published(name: str, kind: type) -> None:
                """Until the daemon `name` has published an event of `kind`."""
                arrived = asyncio.Event()
                (cut if name == "cut" else other).events.subscribe(lambda _: arrived.set())
                while not any(isinstance(e, kind) for e in seen[name]):
                    arrived.clear()
                    await arrived.wait()

            async def scenario() -> None:
                running = [asyncio.create_task(cut.run())]
                try:
                    assert await asyncio.to_thread(emulator.wait_in_flight, 1, 30)
                    running.append(asyncio.create_task(other.run()))
                    proxy.freeze()
                    # The other daemon starts the job again once the cut one's lock is gone and
                    # its heartbeat stale; by then the cut daemon has closed its request.
                    assert await asyncio.to_thread(emulator.wait_requests, 2, 60)
                    assert emulator.overlaps == []
                    emulator.release()
                    await asyncio.wait_for(published("other", events.JobFinished), 60)
                    proxy.thaw()  # the store answers the cut daemon again: it goes on
                    await asyncio.wait_for(published("cut", events.DaemonUnfenced), 120)
                finally:  # also after a failure: a daemon stopping behind a frozen proxy would hang
                    proxy.thaw()
                    emulator.release()
                    for daemon in (cut, other):
                        daemon._on_signal(signal.SIGTERM)
                    await asyncio.wait_for(asyncio.gather(*running), 60)

            asyncio.run(scenario())
            done = store.get_job(job.id)
            assert done.status is JobStatus.COMPLETED and done.attempts == 2
            assert store.check() == []
    finally:
        emulator.stop()
        proxy.close()
    fenced = [e for e in seen["cut"] if isinstance(e, events.DaemonFenced)]
    assert fenced == [events.DaemonFenced(4.0, 1)]  # once, with its one request
    assert not any(isinstance(e, events.JobFinished) for e in seen["cut"])  # its late release was refused
    assert [e.job.id for e in seen["other"] if isinstance(e, events.JobReclaimed)] == [job.id]
    assert [body["prompt"] for _, path, body in emulator.requests if path == "/api/generate"] == ["long", "long"]
