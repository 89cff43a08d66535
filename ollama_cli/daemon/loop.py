"""The daemon: drains pending jobs to the backends.

`Daemon.tick(now)` is one bounded step (heartbeat, reclaim jobs of dead daemons, notice
cancellations, claim what the free slots can take, as `scheduler.plan` decides) and
returns the claims to dispatch; one write transaction records what finished since the
last tick and claims what comes next. A backend's slots are free only once it has answered
a listing, which `run()` asks for: a daemon started but not running claims nothing. `run()`
only loops, dispatches, sleeps (or, when the daemon is the bottleneck, gathers finishing
jobs into one tick) and handles signals.
Store transactions are short and never span an HTTP call."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ollama_cli.daemon import events, logs, outcomes, scheduler
from ollama_cli.clients import client_for
from ollama_cli.clients.base import BackendError
from ollama_cli.errors import CorruptRecord, StoreLockLost, StoreWriteFailed
from ollama_cli.settings import DaemonSettings, Settings
from ollama_cli.settings.hosts import Backend
from ollama_cli.jobs import ErrorType, Job, JobError, JobStatus
from ollama_cli.daemon.outcomes import Outcome, retry_delay
from ollama_cli.daemon.pool import Pool, Slot
from ollama_cli.store.records import Claim, DaemonInfo, Placement, Plan, ReadyJobs

if TYPE_CHECKING:
    from ollama_cli.store.base import DaemonLock, Engine

log = logging.getLogger("ollama_q.daemon")
T = TypeVar("T")

HEARTBEAT_EVERY = 2.0
CANCEL_CHECK_EVERY = 0.25  # a cancelled job's stream closes within a second
RECLAIM_EVERY = 2.0
CLEAN_EVERY = 60.0
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
# The bound of an attempt whose job has no --timeout: a backend that keeps a stream open
# forever (a byte now and then, so no read timeout fires) must not hold a slot forever.
DEFAULT_ATTEMPT_TIMEOUT = 600.0
# How long `started` waits for the first look at every backend: one that has not answered
# by then (a black hole takes the listing's whole timeout) is reported as not answering.
STARTUP_LOOK = 2.0


@dataclass
class Running:
    """One request in flight: one job, or several coalesced embeds."""

    claims: list[Claim]
    slot: Slot
    task: asyncio.Task[None] | None = None
    stop_reason: str | None = None  # why we cancelled it ourselves

    @property
    def model(self) -> str:
        return self.claims[0].job.model


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


@dataclass
class TickReport:
    started: list[Running] = field(default_factory=list)
    reclaimed: list[Job] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    cleaned: int = 0


class Daemon:
    """Drains the store's pending jobs to `backends`, as `settings` say. `clock`, `transport`
    and `cpu` are for tests and benchmarks: the time, the HTTP transport, the CPU meter.
    What it does is published on `events` (subscribe before `run`); its log is one subscriber."""

    def __init__(
        self,
        store: Engine,
        backends: list[Backend],
        settings: DaemonSettings = DaemonSettings(),
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        cpu: CpuMeter | None = None,
    ) -> None:
        self.store = store
        self.backends = backends
        self.settings = settings
        self.clock = clock
        self.transport = transport
        self.rng = random.Random(settings.seed)
        self.cpu = cpu or CpuMeter()
        self.events = events.Bus()
        self.events.subscribe(logs.write)
        self.pool = Pool([], clock, self.events.publish)
        self.inflight: dict[int, Running] = {}  # job id -> its request (shared by coalesced jobs)
        self.skips: dict[int, int] = {}  # job id -> times overtaken (the scheduler's ageing)
        self._outcomes: list[Outcome] = []  # finished attempts not yet committed
        self.liveness: DaemonLock | None = None
        self.stopping = False
        self.force = False
        self._announced = False  # DaemonStarted published
        self._next_heartbeat = 0.0
        self._next_reclaim = 0.0
        self._next_clean = 0.0
        self._next_cancel_check = 0.0
        self._wake: asyncio.Event | None = None
        # One thread for every write: LMDB wants a write transaction on the thread that
        # began it, and one writer at a time is all LMDB allows anyway.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="ollama-q-store")

    @property
    def id(self) -> str:
        assert self.liveness is not None, "start() first"
        return self.liveness.id

    @property
    def slots(self) -> list[Slot]:
        return self.pool.slots

    # ----------------------------------------------------------------- the step

    def start(self) -> None:
        """Take the liveness lock and register; the first tick reclaims at once."""
        self.liveness = self.store.daemon_lock()
        self.pool.slots = [Slot(b, client_for(b, transport=self.transport), self.settings.concurrency)
                           for b in self.backends]
        now = self.clock()
        self.store.register(DaemonInfo(
            id=self.id, pid=os.getpid(), hosts=[b.label for b in self.backends],
            concurrency=self.settings.concurrency, started_at=now, last_heartbeat=now,
        ))

    async def _write(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
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

    async def tick(self, now: float) -> TickReport:
        report = TickReport()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_EVERY
            try:
                await self._write(self.store.heartbeat, self.id, now)
            except StoreLockLost as exc:
                log.error("%s", exc.message)
                raise
        if now >= self._next_reclaim:
            self._next_reclaim = now + RECLAIM_EVERY
            report.reclaimed = await self._write(self.store.reclaim, now)
            for job in report.reclaimed:
                self.events.publish(events.JobReclaimed(job))
        keep = self.settings.keep_finished
        if keep is not None and now >= self._next_clean:
            self._next_clean = now + CLEAN_EVERY
            report.cleaned = await self._write(
                self.store.clean, (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED), now, older_than=keep)
            if report.cleaned:
                self.events.publish(events.JobsCleaned(report.cleaned, keep))
        if now >= self._next_cancel_check:
            self._next_cancel_check = now + CANCEL_CHECK_EVERY
            report.lost = self._notice_lost(now)
        report.started = await self._commit(now, claim=self.pool.free(now) > 0 and not self.stopping)
        return report

    async def _commit(self, now: float, *, claim: bool) -> list[Running]:
        """One write transaction: record the outcomes gathered since the last one, then
        claim what the free slots can take."""
        finished, self._outcomes = self._outcomes, []
        if not finished and not claim:
            return []
        views = self.pool.views(now)
        settings = self.settings
        running = self.pool.running_per_model()
        labels = [slot.backend.label for slot in self.slots]

        def planner(ready: ReadyJobs, request_of: Callable[[Job], dict[str, Any]]) -> Plan:
            skips = dict(self.skips)  # the store may call this more than once: keep the counts apart
            keys: dict[int, object] = {}

            def request_key(job: Job) -> object:
                if job.id not in keys:
                    keys[job.id] = _embed_key(request_of, job)
                return keys[job.id]

            plan = scheduler.plan(
                ready, views, running_per_model=running, model_caps=settings.model_concurrency, skips=skips,
                max_skip=settings.max_overtake, coalesce=settings.coalesce, request_key=request_key,
            )
            return Plan([Placement(a.backend, labels[a.backend], a.jobs) for a in plan], skips)

        tick = await self._write(self.store.settle_and_claim, [o.settle() for o in finished], now, owner=self.id,
                                 planner=planner if claim else None)
        if isinstance(tick.plan_state, dict):  # the counts of the plan that was claimed
            self.skips = tick.plan_state
        for outcome, value in zip(finished, tick.settled):
            if (event := outcomes.event(outcome, value)) is not None:
                self.events.publish(event)
        started = []
        for placement, claims in tick.claimed:
            if not claims:
                continue
            slot = self.slots[placement.backend]
            run = Running(claims, slot)
            self.pool.started(slot, run.model)
            for claim in claims:
                self.inflight[claim.job.id] = run
            started.append(run)
        return started

    def _notice_lost(self, now: float) -> list[int]:
        """Jobs we run that were cancelled (or otherwise taken from us) meanwhile. A request
        whose jobs are all lost is stopped, which closes its stream."""
        if not self.inflight:
            return []
        runs = list(self.inflight.items())
        lost = [job_id for (job_id, run), job in zip(runs, self.store.get_jobs(job_id for job_id, _ in runs))
                if not _still_ours(job, _claim_of(run, job_id))]
        for run in {id(self.inflight[j]): self.inflight[j] for j in lost}.values():
            if run.task is not None and run.stop_reason is None and \
                    all(c.job.id in lost for c in run.claims):
                run.stop_reason = "lost"
                run.task.cancel()
                # Lost by a live daemon means cancelled: reclaim takes only dead daemons' jobs,
                # retry and clean only finished ones.
                for c in run.claims:
                    self.events.publish(events.JobFinished(c.job, JobStatus.CANCELLED, run.slot.backend.label))
        return lost

    # ---------------------------------------------------------------- the loop

    async def run(self) -> int:
        self._wake = asyncio.Event()
        self.start()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        announce_by = time.monotonic() + STARTUP_LOOK
        try:
            while not self.stopping:
                # Cleared before the tick, not after: a job that finishes while the tick
                # waits for its transaction must wake the next tick, not wait for the poll.
                self._wake.clear()
                now = self.clock()
                self.pool.maintain(now, self._wake)
                if not self._announced and (self.pool.looked() or time.monotonic() >= announce_by):
                    self._announce()  # before the first job can start: no backend takes one unlooked-at
                for run in (await self.tick(now)).started:
                    self._dispatch(run)
                if self.settings.drain and not self.inflight and not self._outcomes and self._queue_empty():
                    self._announce()
                    self.events.publish(events.DaemonDrained())
                    break
                await self._sleep(self.settings.poll)
                if self.inflight and self.cpu.busy():
                    await self._gather()
            await self._shutdown()
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            await self.pool.stop()
            for slot in self.slots:
                await slot.client.aclose()
            await self._write(self.store.unregister, self.id)
            self._writer.shutdown()
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
        while self.inflight and not self.stopping and (left := deadline - time.monotonic()) > 0:
            wake.clear()
            await self._sleep(left)

    def _queue_empty(self) -> bool:
        counts = self.store.counts()
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
        self.events.publish(events.DaemonStopping(signal.Signals(sig).name, self.stopping, self.settings.grace,
                                                  len(self.inflight)))
        if self.stopping:
            self.force = True
        else:
            self.stopping = True
        if self._wake:
            self._wake.set()

    def _runs(self) -> list[Running]:
        return list({id(r): r for r in self.inflight.values()}.values())

    async def _shutdown(self) -> None:
        """Let running jobs finish within the grace period, then hand the rest back."""
        deadline = self.clock() + self.settings.grace
        while self.inflight and not self.force and self.clock() < deadline:
            tasks = [r.task for r in self._runs() if r.task]
            self._wake = asyncio.Event()
            waiter = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait([*tasks, waiter], timeout=min(self.settings.poll, max(0.0, deadline - self.clock())),
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            self._notice_lost(self.clock())
            await self._commit(self.clock(), claim=False)
        for run in self._runs():
            if run.task is not None and run.stop_reason is None:
                run.stop_reason = "shutdown"
                run.task.cancel()
        tasks = [r.task for r in self._runs() if r.task]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._commit(self.clock(), claim=False)

    def _dispatch(self, run: Running) -> None:
        self._announce()  # a backend answered while the tick ran: started comes first all the same
        run.task = asyncio.get_running_loop().create_task(self._attempt(run))
        self.events.publish(events.JobStarted(tuple(c.job for c in run.claims), run.slot.backend.label))

    async def _attempt(self, run: Running) -> None:
        first, slot = run.claims[0].job, run.slot
        started = time.monotonic()
        limit = first.timeout or DEFAULT_ATTEMPT_TIMEOUT
        try:
            try:
                result = await asyncio.wait_for(slot.client.run(first, _merged_request(run.claims)), limit)
                results = _split(run.claims, result)
            except asyncio.TimeoutError:
                bound = "" if first.timeout else " (the bound of an attempt without --timeout)"
                raise BackendError(ErrorType.TIMEOUT, f"no answer within {limit:g}s{bound}", transient=True) from None
        except asyncio.CancelledError:
            if run.stop_reason == "shutdown":
                self._outcomes += [Outcome(c, "release") for c in run.claims]
            return
        except BackendError as err:
            self._outcomes += self._failure(run, err)
            return
        except Exception as exc:  # a bug must not kill the daemon or leave the job running
            log.exception("job %d: unexpected error", first.id)
            self._outcomes += self._failure(run, BackendError(
                ErrorType.BACKEND_ERROR, f"{type(exc).__name__}: {exc}", transient=True))
            return
        finally:
            self._finish(run)
        self.pool.succeeded(slot)
        took = time.monotonic() - started
        self._outcomes += [Outcome(c, "complete", result=r, host=slot.backend.label, took=took)
                           for c, r in zip(run.claims, results)]

    def _finish(self, run: Running) -> None:
        self.pool.finished(run.slot, run.model, self.clock())
        for claim in run.claims:
            self.inflight.pop(claim.job.id, None)
        if self._wake:
            self._wake.set()

    def _failure(self, run: Running, err: BackendError) -> list[Outcome]:
        now = self.clock()
        slot = run.slot
        if err.kind is ErrorType.UNREACHABLE:
            # Not the jobs' fault: they wait, keeping their attempts, until the backend is back.
            self.pool.mark_down(slot, err.message, now)
            return [Outcome(c, "release") for c in run.claims]
        self.pool.mark_up(slot)
        if err.kind is ErrorType.MODEL_NOT_FOUND and self.pool.elsewhere(slot, run.model):
            # A stale listing: another backend has the model, so try there at no cost.
            return [Outcome(c, "release") for c in run.claims]
        if err.transient:
            self.pool.failed(slot, now, (c.job.id for c in run.claims), err.retry_after)
        return [Outcome(c, "fail", error=JobError(err.kind, err.message), host=slot.backend.label,
                        retry_after=retry_delay(c.job.attempts, self.settings.retry_backoff, self.rng) if err.transient else None)
                for c in run.claims]


def _claim_of(run: Running, job_id: int) -> Claim:
    return next(c for c in run.claims if c.job.id == job_id)


def _still_ours(job: Job | CorruptRecord | None, claim: Claim) -> bool:
    return isinstance(job, Job) and job.status is JobStatus.RUNNING and job.lease is not None \
        and job.lease.token == outcomes.token(claim)


def _embed_key(request_of: Callable[[Job], dict[str, Any]], job: Job) -> object:
    """What two embed jobs must share to go in one request: everything but the input."""
    import json

    try:
        request = request_of(job)
    except Exception:
        return ("corrupt", job.id)  # never coalesced
    return json.dumps({k: v for k, v in request.items() if k != "input"}, sort_keys=True)


def _merged_request(claims: list[Claim]) -> dict:
    if len(claims) == 1:
        return claims[0].request
    merged = dict(claims[0].request)
    merged["input"] = [text for c in claims for text in c.request["input"]]
    return merged


def _split(claims: list[Claim], result: dict) -> list[dict]:
    """Each coalesced job's own vectors, in its own input order."""
    if len(claims) == 1:
        return [result]
    vectors = result.get("embeddings") or []
    sizes = [len(c.request["input"]) for c in claims]
    if len(vectors) != sum(sizes):
        raise BackendError(ErrorType.INVALID_RESPONSE,
                           f"{len(vectors)} vectors for {sum(sizes)} inputs", transient=True)
    out, at = [], 0
    for size in sizes:
        out.append({"embeddings": vectors[at:at + size], "stats": result.get("stats") or {}})
        at += size
    return out


def serve(store: Engine, backends: list[Backend], settings: Settings) -> int:
    """Run a daemon until it is stopped (or, with drain, until the queue is empty)."""
    logs.setup(json_lines=settings.json)
    return asyncio.run(Daemon(store, backends, settings.daemon).run())
