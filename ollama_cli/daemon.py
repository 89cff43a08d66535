"""The daemon: drains pending jobs to the backends.

`Daemon.tick(now)` is one bounded step (heartbeat, reclaim jobs of dead daemons, notice
cancellations, claim what the free slots can take) and returns the claims to dispatch;
`run()` only loops, dispatches, sleeps and handles signals. Store transactions are short
and never span an HTTP call."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ollama_cli import queue, registry
from ollama_cli.backends import BackendError, Client, client_for
from ollama_cli.config import Backend
from ollama_cli.models import ErrorType, Job, JobError, JobStatus
from ollama_cli.queue import Claim
from ollama_cli.store import Store

log = logging.getLogger("ollama_q.daemon")

HEARTBEAT_EVERY = 2.0
RECLAIM_EVERY = 2.0
CLEAN_EVERY = 60.0
BACKOFF_CAP = 60.0
PROBE_BACKOFF_CAP = 30.0


def retry_delay(attempt: int, base: float, rng: random.Random) -> float:
    """Exponential backoff with jitter over the upper half: with base 1 s, attempt 1 waits
    0.5-1 s, 2 waits 1-2 s, 3 waits 2-4 s... capped at BACKOFF_CAP. The jitter keeps
    jobs that failed together from coming back together."""
    ceiling = min(BACKOFF_CAP, base * 2 ** max(0, attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)


@dataclass
class Slot:
    """One backend as the scheduler sees it."""

    backend: Backend
    client: Client
    capacity: int
    running: int = 0
    down_since: float | None = None
    probe_at: float = 0.0
    probe_delay: float = 0.5
    probing: bool = False

    @property
    def up(self) -> bool:
        return self.down_since is None

    @property
    def free(self) -> int:
        return self.capacity - self.running if self.up else 0


@dataclass
class Running:
    claim: Claim
    slot: Slot
    task: asyncio.Task[None] | None = None
    stop_reason: str | None = None  # why we cancelled it ourselves


@dataclass
class TickReport:
    claims: list[tuple[Claim, Slot]] = field(default_factory=list)
    reclaimed: list[Job] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    cleaned: int = 0


class Daemon:
    def __init__(
        self,
        store: Store,
        backends: list[Backend],
        *,
        concurrency: int = 1,
        drain: bool = False,
        grace: float = 30.0,
        poll: float = 0.2,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff: float = 1.0,
        keep_finished: float | None = None,
        seed: int | None = None,
    ) -> None:
        self.store = store
        self.data_dir = store.path
        self.backends = backends
        self.concurrency = concurrency
        self.drain = drain
        self.grace = grace
        self.poll = poll
        self.clock = clock
        self.transport = transport
        self.backoff = backoff
        self.keep_finished = keep_finished
        self.rng = random.Random(seed)
        self.slots: list[Slot] = []
        self.inflight: dict[int, Running] = {}
        self.liveness: registry.Liveness | None = None
        self.stopping = False
        self.force = False
        self._next_heartbeat = 0.0
        self._next_reclaim = 0.0
        self._next_clean = 0.0
        self._wake: asyncio.Event | None = None

    @property
    def id(self) -> str:
        assert self.liveness is not None, "start() first"
        return self.liveness.id

    # ----------------------------------------------------------------- the step

    def start(self) -> None:
        """Take the liveness lock and register; the first tick reclaims at once."""
        self.liveness = registry.Liveness(self.data_dir)
        self.slots = [Slot(b, client_for(b, transport=self.transport), self.concurrency)
                      for b in self.backends]
        now = self.clock()
        info = registry.DaemonInfo(
            id=self.id, pid=os.getpid(), hosts=[b.label for b in self.backends],
            concurrency=self.concurrency, started_at=now, last_heartbeat=now,
        )
        self.store.write(lambda tx: registry.register(tx, info))

    def tick(self, now: float) -> TickReport:
        report = TickReport()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_EVERY
            self.store.write(lambda tx: registry.heartbeat(tx, self.id, now))
        if now >= self._next_reclaim:
            self._next_reclaim = now + RECLAIM_EVERY
            report.reclaimed = self._reclaim(now)
        if self.keep_finished is not None and now >= self._next_clean:
            self._next_clean = now + CLEAN_EVERY
            report.cleaned = self.store.write(lambda tx: queue.clean(
                tx, (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED), now,
                older_than=self.keep_finished))
            if report.cleaned:
                log.info("deleted %d jobs finished more than %gs ago", report.cleaned, self.keep_finished)
        report.lost = self._notice_lost(now)
        free = sum(s.free for s in self.slots)
        if free > 0 and not self.stopping:
            claims = self.store.write(lambda tx: queue.claim(tx, self.id, now, limit=free))
            for claim in claims:
                slot = max(self.slots, key=lambda s: s.free)
                slot.running += 1
                report.claims.append((claim, slot))
        return report

    def _reclaim(self, now: float) -> list[Job]:
        with self.store.read() as tx:
            owners = {j.lease.owner for j in queue.running(tx) if j.lease}
            known = {d.id for d in registry.daemons(tx)}
        dead = {o for o in owners | known if o != self.id and not registry.is_alive(self.data_dir, o)}
        if not dead:
            return []

        def write(tx):  # type: ignore[no-untyped-def]
            for d in dead:
                registry.unregister(tx, d)
            return queue.reclaim(tx, dead, now)

        jobs = self.store.write(write)
        registry.forget_dead(self.data_dir, sorted(dead))
        for job in jobs:
            if job.status is JobStatus.FAILED:
                log.warning("job %d abandoned: its daemon died during each of %d attempts", job.id, job.attempts)
            else:
                log.warning("job %d taken back from a dead daemon (attempt %d of %d)",
                            job.id, job.attempts, job.max_attempts)
        return jobs

    def _notice_lost(self, now: float) -> list[int]:
        """Jobs we run that were cancelled (or otherwise taken from us) meanwhile: stop them,
        which closes their streams."""
        if not self.inflight:
            return []
        lost = []
        with self.store.read() as tx:
            for job_id, run in self.inflight.items():
                job = queue.get_job(tx, job_id)
                token = run.claim.job.lease.token if run.claim.job.lease else None
                if job is None or job.status is not JobStatus.RUNNING or job.lease is None \
                        or job.lease.token != token:
                    lost.append(job_id)
        for job_id in lost:
            run = self.inflight[job_id]
            if run.task is not None and run.stop_reason is None:
                run.stop_reason = "lost"
                run.task.cancel()
                log.info("job %d was cancelled: closing its stream", job_id)
        return lost

    # ---------------------------------------------------------------- the loop

    async def run(self) -> int:
        self._wake = asyncio.Event()
        self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        log.info("daemon %s started: %s, concurrency %d per backend", self.id,
                 ", ".join(b.label for b in self.backends), self.concurrency)
        try:
            while not self.stopping:
                now = self.clock()
                report = self.tick(now)
                for claim, slot in report.claims:
                    self._dispatch(claim, slot)
                self._probe_down_backends(now)
                if self.drain and not self.inflight and self._queue_empty():
                    log.info("nothing pending or running: exiting (--drain)")
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll)
                except asyncio.TimeoutError:
                    pass
            await self._shutdown()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            for slot in self.slots:
                await slot.client.aclose()
            self.store.write(lambda tx: registry.unregister(tx, self.id))
            if self.liveness:
                self.liveness.release()
        return 0

    def _queue_empty(self) -> bool:
        with self.store.read() as tx:
            return not queue.has_unfinished(tx)

    def _on_signal(self, sig: int) -> None:
        if self.stopping:
            log.warning("second %s: stopping now, handing running jobs back", signal.Signals(sig).name)
            self.force = True
        else:
            log.info("%s: taking no more jobs; waiting up to %gs for %d running",
                     signal.Signals(sig).name, self.grace, len(self.inflight))
            self.stopping = True
        if self._wake:
            self._wake.set()

    async def _shutdown(self) -> None:
        """Let running jobs finish within the grace period, then hand the rest back."""
        deadline = self.clock() + self.grace
        while self.inflight and not self.force and self.clock() < deadline:
            tasks = [r.task for r in self.inflight.values() if r.task]
            self._wake = asyncio.Event()
            waiter = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait([*tasks, waiter], timeout=min(self.poll, max(0.0, deadline - self.clock())),
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            self._notice_lost(self.clock())
        for run in list(self.inflight.values()):
            if run.task is not None and run.stop_reason is None:
                run.stop_reason = "shutdown"
                run.task.cancel()
        tasks = [r.task for r in self.inflight.values() if r.task]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _dispatch(self, claim: Claim, slot: Slot) -> None:
        run = Running(claim, slot)
        self.inflight[claim.job.id] = run
        run.task = asyncio.get_running_loop().create_task(self._attempt(run))
        log.info("job %d started on %s (%s, attempt %d of %d)", claim.job.id, slot.backend.label,
                 claim.job.model, claim.job.attempts, claim.job.max_attempts)

    async def _attempt(self, run: Running) -> None:
        job, slot = run.claim.job, run.slot
        token = job.lease.token if job.lease else ""
        started = time.monotonic()
        try:
            try:
                coro = slot.client.run(job, run.claim.request)
                result = await (asyncio.wait_for(coro, job.timeout) if job.timeout else coro)
            except asyncio.TimeoutError:
                raise BackendError(ErrorType.TIMEOUT, f"no answer within {job.timeout:g}s",
                                   transient=True) from None
        except asyncio.CancelledError:
            if run.stop_reason == "shutdown":
                self.store.write(lambda tx: queue.release(tx, job.id, token, self.clock()))
                log.info("job %d handed back as pending", job.id)
            return
        except BackendError as err:
            self._record_failure(job, token, slot, err)
            return
        except Exception as exc:  # a bug must not kill the daemon or leave the job running
            log.exception("job %d: unexpected error", job.id)
            self._record_failure(job, token, slot, BackendError(
                ErrorType.BACKEND_ERROR, f"{type(exc).__name__}: {exc}", transient=True))
            return
        finally:
            slot.running -= 1
            self.inflight.pop(job.id, None)
            if self._wake:
                self._wake.set()
        self._mark_up(slot)
        now = self.clock()
        ok = self.store.write(lambda tx: queue.complete(tx, job.id, token, result, now,
                                                        host=slot.backend.label))
        if ok:
            log.info("job %d completed in %.1fs", job.id, time.monotonic() - started)
        else:
            log.info("job %d finished after it was cancelled or taken back: result dropped", job.id)

    def _record_failure(self, job: Job, token: str, slot: Slot, err: BackendError) -> None:
        now = self.clock()
        if err.kind is ErrorType.UNREACHABLE:
            # Not the job's fault: it waits, keeping its attempts, until the backend is back.
            self.store.write(lambda tx: queue.release(tx, job.id, token, now))
            self._mark_down(slot, err.message, now)
            return
        self._mark_up(slot)
        delay = retry_delay(job.attempts, self.backoff, self.rng) if err.transient else None
        new = self.store.write(lambda tx: queue.fail_attempt(
            tx, job.id, token, JobError(err.kind, err.message), now, retry_after=delay,
            host=slot.backend.label))
        if new is None:
            return
        if new.status is JobStatus.PENDING:
            log.warning("job %d attempt %d failed (%s: %s); retrying in %.1fs", job.id, job.attempts,
                        err.kind.value, err.message, delay)
        else:
            log.warning("job %d failed (%s: %s)", job.id, err.kind.value, err.message)

    def _mark_down(self, slot: Slot, why: str, now: float) -> None:
        if slot.up:
            log.warning("backend %s unreachable (%s): jobs wait as pending until it answers",
                        slot.backend.label, why)
            slot.down_since = now
            slot.probe_delay = 0.5
        slot.probe_at = now + slot.probe_delay

    def _mark_up(self, slot: Slot) -> None:
        if not slot.up:
            log.info("backend %s is reachable again", slot.backend.label)
            slot.down_since = None

    def _probe_down_backends(self, now: float) -> None:
        for slot in self.slots:
            if not slot.up and not slot.probing and now >= slot.probe_at:
                slot.probing = True
                asyncio.get_running_loop().create_task(self._probe(slot))

    async def _probe(self, slot: Slot) -> None:
        try:
            if await slot.client.ping():
                self._mark_up(slot)
                if self._wake:
                    self._wake.set()
            else:
                slot.probe_delay = min(PROBE_BACKOFF_CAP, slot.probe_delay * 2)
                slot.probe_at = self.clock() + slot.probe_delay
        finally:
            slot.probing = False


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        from ollama_cli.timefmt import format_time

        return json.dumps({"time": format_time(record.created), "level": record.levelname.lower(),
                           "message": record.getMessage()})


def serve(store: Store, backends: list[Backend], *, json_logs: bool = False, **options: object) -> int:
    """Run a daemon until it is stopped (or, with drain, until the queue is empty)."""
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonLines() if json_logs else
                         logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    daemon = Daemon(store, backends, **options)  # type: ignore[arg-type]
    return asyncio.run(daemon.run())
