"""The daemon's one bounded step, `Step.tick(now, views)`: heartbeat (with what the daemon knows
of its backends and running requests, for `top`), take back the jobs of
dead daemons, notice the jobs it runs that are no longer its own, write what running jobs
streamed (`partial.py`, at most every half second), then one write transaction
that settles what finished since the last step and claims what the free slots can take, as
`scheduler.plan` decides.

What the backends can take is an argument (`views`, one per backend of the pool), so a step
runs the same under the loop (`loop.py`, which asks the pool) or alone in a test. Every store
operation is one short transaction; none spans an HTTP call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ollama_cli.daemon import events, outcomes, partial, scheduler
from ollama_cli.daemon.attempt import InFlight, StopReason, embed_key
from ollama_cli.daemon.outcomes import Outcome
from ollama_cli.daemon.pool import Pool
from ollama_cli.daemon.scheduler import BackendView
from ollama_cli.errors import CorruptRecord, StoreLockLost, StoreUnavailable
from ollama_cli.jobs import Job, JobStatus
from ollama_cli.settings import CacheSettings, DaemonSettings
from ollama_cli.store.records import Claim, Placement, Plan, ReadyJobs, RunProgress

if TYPE_CHECKING:
    from ollama_cli.store.base import Engine

log = logging.getLogger("ollama_q.daemon")
# Runs a store operation on the daemon's writer thread (`Daemon.write`).
Writer = Callable[..., Awaitable[Any]]

HEARTBEAT_EVERY = 2.0
CANCEL_CHECK_EVERY = 0.25  # a cancelled job's stream closes within a second
RECLAIM_EVERY = 2.0
CLEAN_EVERY = 60.0


@dataclass
class TickReport:
    started: list[InFlight] = field(default_factory=list)  # to dispatch
    reclaimed: list[Job] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)  # ids of jobs no longer ours
    cleaned: int = 0


class Step:
    """The daemon's state between steps, and the step. `owner` is the daemon's id (set once it
    holds its liveness lock); `write` runs a store operation that writes."""

    def __init__(self, store: Engine, settings: DaemonSettings, pool: Pool, bus: events.Bus, write: Writer) -> None:
        self.store = store
        self.settings = settings
        self.pool = pool
        self.events = bus
        self.write = write
        self.owner = ""
        self.stopping = False  # the daemon takes no more jobs (a signal came)
        self.inflight: dict[str, InFlight] = {}  # lease token -> its request (shared by coalesced jobs)
        self.outcomes: list[Outcome] = []  # finished attempts not yet settled
        self.skips: dict[int, int] = {}  # job id -> times overtaken (the scheduler's ageing)
        self.cache = CacheSettings()  # how completed answers enter the result cache (TTL, bound)
        self.partials = partial.PartialOutputs()  # what running jobs streamed, for `result --follow`
        self._next_heartbeat = 0.0
        self._next_reclaim = 0.0
        self._next_clean = 0.0
        self._next_cancel_check = 0.0
        self._next_partials = 0.0
        self._runs_reported = False  # the store holds progress of runs of ours

    async def tick(self, now: float, views: list[BackendView]) -> TickReport:
        """One step at `now`; `views[i]` is what backend i of the pool can take now. The
        requests it starts are in the report, for the caller to dispatch."""
        report = TickReport()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_EVERY
            try:
                await self.write(self.store.heartbeat, self.owner, now)
            except StoreLockLost as exc:
                log.error("%s", exc.message)
                raise
            await self.report(now)
        if now >= self._next_reclaim:
            self._next_reclaim = now + RECLAIM_EVERY
            report.reclaimed = await self.write(self.store.reclaim, now)
            for job in report.reclaimed:
                self.events.publish(events.JobReclaimed(job))
        keep = self.settings.keep_finished
        if keep is not None and now >= self._next_clean:
            self._next_clean = now + CLEAN_EVERY
            report.cleaned = await self.write(
                self.store.clean, (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED), now, older_than=keep)
            if report.cleaned:
                self.events.publish(events.JobsCleaned(report.cleaned, keep))
        if now >= self._next_cancel_check:
            self._next_cancel_check = now + CANCEL_CHECK_EVERY
            report.lost = self.notice_lost()
        if now >= self._next_partials:
            self._next_partials = now + partial.WRITE_EVERY
            if parts := self.partials.due():
                await self.write(self.store.write_partials, parts)
                self.partials.written(parts)
        report.started = await self.commit(now, views)
        return report

    async def report(self, now: float) -> None:
        """Record what only this daemon knows (its backends, how far its requests have
        streamed) for `top`, `info` and metrics: read here on the loop, written on the writer."""
        await self.write(self.store.record_backends, self.owner, self.pool.states(self.owner, now), now)
        runs = [RunProgress(c.job.id, self.owner, run.tokens, c.job.started_at or now, now)
                for run in self.runs() for c in run.claims]
        if runs or self._runs_reported:  # an idle daemon writes nothing new
            await self.write(self.store.record_progress, self.owner, runs, now)
        self._runs_reported = bool(runs)

    async def commit(self, now: float, views: list[BackendView] | None = None) -> list[InFlight]:
        """One write transaction: settle the outcomes gathered since the last one, then (with
        views that have a free slot, unless stopping) claim what the free slots can take."""
        finished, self.outcomes = self.outcomes, []
        claim = views is not None and not self.stopping and any(v.free > 0 for v in views)
        if not finished and not claim:
            return []
        settings = self.settings
        slots = self.pool.slots
        planner = None
        if claim:
            assert views is not None and len(views) == len(slots), "one view per backend of the pool"
            running = self.pool.running_per_model()
            labels = [slot.backend.label for slot in slots]
            base_skips = self.skips

            def planner(ready: ReadyJobs, request_of: Callable[[Job], dict[str, Any]]) -> Plan:
                skips = dict(base_skips)  # the store may call this more than once: keep the counts apart
                keys: dict[int, object] = {}

                def request_key(job: Job) -> object:
                    if job.id not in keys:
                        keys[job.id] = embed_key(request_of, job)
                    return keys[job.id]

                plan = scheduler.plan(
                    ready, views, running_per_model=running, model_caps=settings.model_concurrency,
                    skips=skips, max_skip=settings.max_overtake, coalesce=settings.coalesce, request_key=request_key,
                )
                return Plan([Placement(a.backend, labels[a.backend], a.jobs) for a in plan], skips)

        policy = None
        if self.cache.ttl is not None or self.cache.max_bytes is not None:
            from ollama_cli.store.records import CacheWrite

            policy = CacheWrite(self.cache.ttl, self.cache.max_bytes)
        tick = await self.write(self.store.settle_and_claim, [o.settle(policy) for o in finished], now,
                                owner=self.owner, planner=planner)
        if isinstance(tick.plan_state, dict):  # the counts of the plan that was claimed
            self.skips = tick.plan_state
        for outcome, value in zip(finished, tick.settled):
            if (event := outcomes.event(outcome, value)) is not None:
                self.events.publish(event)
        for job in tick.quarantined:  # the step could not handle them: failed, and the step went on
            self.events.publish(events.JobFinished(job, JobStatus.FAILED, job.host or "", error=job.error))
        started = []
        for placement, claims in tick.claimed:
            if not claims:
                continue
            run = InFlight(claims, slots[placement.backend])
            run.on_text = self.partials.track(run)
            self.pool.started(run.slot, run.model)
            for c in claims:
                self.inflight[c.token] = run
            started.append(run)
        return started

    def notice_lost(self) -> list[int]:
        """Jobs we run that are no longer ours (cancelled, cleaned). A request whose jobs are
        all lost is stopped, which closes its stream; its outcome, settled next, closes the
        run the store kept open for it."""
        runs = self.runs()
        claims = [c for run in runs for c in run.claims]
        if not claims:
            return []
        try:
            found = self.store.get_jobs(c.job.id for c in claims)
        except StoreUnavailable:  # a server restarting: look again at the next check
            return []
        lost = {c.token for c, job in zip(claims, found) if not _still_ours(job, c)}
        for run in runs:
            if all(c.token in lost for c in run.claims) and run.stop(StopReason.LOST):
                # Lost by a live daemon means cancelled: reclaim takes only dead daemons' jobs,
                # retry and clean only finished ones.
                for c in run.claims:
                    self.events.publish(events.JobFinished(c.job, JobStatus.CANCELLED, run.slot.backend.label))
        return [c.job.id for c in claims if c.token in lost]

    def ended(self, run: InFlight) -> None:
        """The request is over (answered, failed or stopped): its slot is free again."""
        self.pool.finished(run.slot, run.model, self.pool.clock())
        self.partials.forget(run)
        for c in run.claims:
            self.inflight.pop(c.token, None)

    def runs(self) -> list[InFlight]:
        return list({id(r): r for r in self.inflight.values()}.values())


def _still_ours(job: Job | CorruptRecord | None, claim: Claim) -> bool:
    return isinstance(job, Job) and job.status is JobStatus.RUNNING and job.lease is not None \
        and job.lease.token == claim.token
