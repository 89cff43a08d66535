"""The daemon's loop: `Daemon.run()` takes its liveness lock, then steps (`tick.py`),
dispatches the requests each step starts (`attempt.py`), sleeps until a request ends or the
poll comes round (or, when the daemon itself is the bottleneck, gathers finishing requests
into one commit), and on a signal stops taking jobs and shuts down with grace. Every store
write goes through one writer thread, so that no fsync stops the event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ollama_cli.clients import client_for
from ollama_cli.daemon import attempt, events, logs, wakeups
from ollama_cli.daemon.attempt import InFlight, StopReason
from ollama_cli.daemon.hooks import Hooks
from ollama_cli.daemon.pool import Backoff, Pool, Slot
from ollama_cli.daemon.semantic import SemanticCache
from ollama_cli.daemon.tick import Step
from ollama_cli.errors import StoreUnavailable, StoreWriteFailed
from ollama_cli.settings import CacheSettings, DaemonSettings, Settings
from ollama_cli.settings.hosts import Backend
from ollama_cli.store.records import DaemonInfo

if TYPE_CHECKING:
    from ollama_cli.store.base import DaemonLock, Engine

log = logging.getLogger("ollama_q.daemon")
T = TypeVar("T")

WRITE_RETRY_FIRST, WRITE_RETRY_MAX = 1.0, 30.0  # seconds between tries of a commit the disk refused
# SIGHUP too: a daemon started from a terminal that closes gets the same grace as SIGTERM.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Group commit. A tick costs the same whether it records one finished job or eight, so
# when the daemon itself is the bottleneck (jobs of a few milliseconds, one core busy
# with streaming and bookkeeping), a finished job waits up to this long for the others
# in flight to finish and share its transaction. Jobs long enough to leave the core
# idle never wait.
GROUP_COMMIT_WINDOW = 0.005
BUSY_SHARE = 0.8  # of a core, over the last CPU_SAMPLE seconds
CPU_SAMPLE = 0.1
# How long `started` waits for the first look at every backend: one that has not answered
# by then (a black hole takes the listing's whole timeout) is reported as not answering.
STARTUP_LOOK = 2.0


class CpuMeter:
    """The share of a core this process used over the last `CPU_SAMPLE` seconds."""

    def __init__(self, cpu: Callable[[], float] = time.process_time,
                 wall: Callable[[], float] = time.monotonic) -> None:
        self._cpu, self._wall = cpu, wall
        self._at, self._used = wall(), cpu()
        self.share = 0.0

    def busy(self) -> bool:
        now = self._wall()
        if now - self._at >= CPU_SAMPLE:
            used = self._cpu()
            self.share = (used - self._used) / (now - self._at)
            self._at, self._used = now, used
        return self.share >= BUSY_SHARE


class Daemon:
    """Drains the store's pending jobs to `backends`, as `settings` say. `clock`, `transport`,
    `cpu` and `probe_backoff` are for tests and benchmarks: the time (by default the store's:
    daemons on several hosts must agree on it), the HTTP transport, the CPU meter, the backoff
    of probes of a backend that is down. What it does is published on
    `events` (subscribe before `run`); its log is one subscriber. `step` is its state between
    ticks and the tick itself, which a test may drive without `run()` once `start()`ed."""

    def __init__(
        self,
        store: Engine,
        backends: list[Backend],
        settings: DaemonSettings = DaemonSettings(),
        *,
        clock: Callable[[], float] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        cpu: CpuMeter | None = None,
        probe_backoff: Backoff = Backoff(),
        cache: CacheSettings = CacheSettings(),
    ) -> None:
        self.store = store
        self.backends = backends
        self.settings = settings
        self.clock = clock or store.now
        self.transport = transport
        self.rng = random.Random(settings.seed)
        self.cpu = cpu or CpuMeter()
        self.events = events.Bus()
        self.events.subscribe(logs.write)
        self.pool = Pool([], self.clock, self.events.publish, probe_backoff=probe_backoff)
        self.step = Step(store, settings, self.pool, self.events, self.write)
        self.semantic = SemanticCache(store, cache, self.clock)
        self.step.cache = cache
        self.hooks: Hooks | None = None
        if settings.on_finish:
            self.hooks = Hooks(store, self.write, settings.on_finish, settings.hook_timeout, self.clock)
            self.events.subscribe(self.hooks.on_event)
        self.liveness: DaemonLock | None = None
        self.force = False  # a second signal: hand everything back now
        self._announced = False  # DaemonStarted published
        self._wake: asyncio.Event | None = None
        # One thread for every write: LMDB wants a write transaction on the thread that
        # began it, and one writer at a time is all LMDB allows anyway.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="ollama-q-store")

    @property
    def id(self) -> str:
        assert self.liveness is not None, "start() first"
        return self.liveness.id

    def start(self) -> None:
        """Take the liveness lock and register; the first tick reclaims at once."""
        self.liveness = self.store.daemon_lock()
        self.step.owner = self.id
        self.pool.slots = [Slot(b, client_for(b, transport=self.transport), self.settings.concurrency)
                           for b in self.backends]
        now = self.clock()
        self.store.register(DaemonInfo(
            id=self.id, pid=os.getpid(), hosts=[b.label for b in self.backends],
            concurrency=self.settings.concurrency, started_at=now, last_heartbeat=now,
        ))

    async def write(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store operation that writes on the store's writer thread: its fsync must
        not stop the event loop, which meanwhile goes on streaming answers. A commit the disk
        refuses (full) is tried again, backing off: jobs in flight go on meanwhile, and
        what they finish lands once there is room."""
        delay = WRITE_RETRY_FIRST
        call = partial(operation, *args, **kwargs)
        while True:
            try:
                return await asyncio.get_running_loop().run_in_executor(self._writer, call)
            except StoreWriteFailed as exc:
                if self.force:
                    raise
                log.error("%s; trying again in %gs", exc.message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, WRITE_RETRY_MAX)

    async def run(self) -> int:
        self._wake = asyncio.Event()
        self.start()
        step = self.step
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        announce_by = time.monotonic() + STARTUP_LOOK
        stop_listening = wakeups.listen(self.store.notifier, self._wake)
        try:
            if self.hooks:
                await self.hooks.start(self.id)
            while not step.stopping:
                # Cleared before the tick, not after: a job that finishes while the tick
                # waits for its transaction must wake the next tick, not wait for the poll.
                self._wake.clear()
                now = self.clock()
                self.pool.maintain(now, self._wake)
                if not self._announced and (self.pool.looked() or time.monotonic() >= announce_by):
                    self._announce()  # before the first job can start: no backend takes one unlooked-at
                for run in (await step.tick(now, self.pool.views(now))).started:
                    self._dispatch(run)
                if self.settings.drain and not step.inflight and not step.outcomes and self._queue_empty() \
                        and (self.hooks is None or self.hooks.idle()):
                    self._announce()
                    self.events.publish(events.DaemonDrained())
                    break
                await self._sleep(self.settings.poll)
                if step.inflight and self.cpu.busy():
                    await self._gather()
            await self._shutdown()
        finally:
            stop_listening()
            if self.hooks:
                await self.hooks.stop(0.0 if self.force else self.settings.grace)
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            await self.pool.stop()
            for slot in self.pool.slots:
                await slot.client.aclose()
            await self.write(self.store.unregister, self.id)
            self._writer.shutdown()
            self.semantic.close()
            if self.liveness:
                self.liveness.release()
        return 0

    async def _sleep(self, seconds: float) -> None:
        """Until woken, or `seconds`. A timer on the event, not wait_for: that makes a
        task per loop turn."""
        wake = self._wake
        assert wake is not None, "run() first"
        timer = asyncio.get_running_loop().call_later(seconds, wake.set)
        await wake.wait()
        timer.cancel()

    async def _gather(self) -> None:
        """Group commit: wait for the requests still in flight to finish, at most
        GROUP_COMMIT_WINDOW, so that one transaction records them all."""
        wake = self._wake
        assert wake is not None, "run() first"
        deadline = time.monotonic() + GROUP_COMMIT_WINDOW
        while self.step.inflight and not self.step.stopping and (left := deadline - time.monotonic()) > 0:
            wake.clear()
            await self._sleep(left)

    def _queue_empty(self) -> bool:
        try:
            counts = self.store.counts()
        except StoreUnavailable:  # a server restarting: not known to be empty
            return False
        return counts["pending"] + counts["running"] == 0

    def _announce(self) -> None:
        """DaemonStarted, once: after the first look at the backends, so that it can say
        which answer."""
        if not self._announced:
            self._announced = True
            self.events.publish(events.DaemonStarted(self.id, tuple(b.label for b in self.backends),
                                                     self.settings.concurrency, self.pool.found()))

    def _on_signal(self, sig: int) -> None:
        self._announce()
        self.events.publish(events.DaemonStopping(signal.Signals(sig).name, self.step.stopping, self.settings.grace,
                                                  len(self.step.inflight)))
        if self.step.stopping:
            self.force = True
        else:
            self.step.stopping = True
        if self._wake:
            self._wake.set()

    async def _shutdown(self) -> None:
        """Let running jobs finish within the grace period, then hand the rest back."""
        step = self.step
        deadline = self.clock() + self.settings.grace
        while step.inflight and not self.force and self.clock() < deadline:
            tasks = [r.task for r in step.runs() if r.task]
            self._wake = asyncio.Event()
            waiter = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait([*tasks, waiter], timeout=min(self.settings.poll, max(0.0, deadline - self.clock())),
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            step.notice_lost()
            await step.commit(self.clock())
        for run in step.runs():
            run.stop(StopReason.SHUTDOWN)
        tasks = [r.task for r in step.runs() if r.task]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await step.commit(self.clock())

    def _dispatch(self, run: InFlight) -> None:
        self._announce()  # a backend answered while the tick ran: started comes first all the same
        run.task = asyncio.get_running_loop().create_task(self._attempt(run))
        self.events.publish(events.JobStarted(tuple(c.job for c in run.claims), run.slot.backend.label))

    async def _attempt(self, run: InFlight) -> None:
        try:
            outcomes = await attempt.attempt(run, self.pool, clock=self.clock, retry_backoff=self.settings.retry_backoff,
                                             rng=self.rng, cached=self.semantic.answer)
        finally:
            self.step.ended(run)
            if self._wake:
                self._wake.set()
        self.step.outcomes += outcomes


def serve(store: Engine, backends: list[Backend], settings: Settings) -> int:
    """Run a daemon until it is stopped (or, with drain, until the queue is empty); under
    systemd, logging to the journal and telling it when it is ready and when it stops."""
    from ollama_cli import settings as environment
    from ollama_cli.daemon import systemd

    logs.setup(json_lines=settings.json, level=settings.daemon.log_level, journal=environment.journal())
    daemon = Daemon(store, backends, settings.daemon, cache=settings.cache)
    address = environment.notify_socket()
    if address:
        daemon.events.subscribe(systemd.Notifier(address).on_event)
    if settings.daemon.metrics_addr is not None:
        from ollama_cli.daemon import metrics  # prometheus-client: only when asked for

        metrics.attach(daemon, settings.daemon.metrics_addr)
    return asyncio.run(daemon.run())
