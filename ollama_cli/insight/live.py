"""One frame of `top` as plain data: what the store says now, read with short read
transactions, each at a cost that does not grow with the queue (counters, the per-model ready
counters, the finish record, the first running jobs, what living daemons reported)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ollama_cli.jobs import JobStatus, Priority

if TYPE_CHECKING:
    from ollama_cli.store.base import Engine
    from ollama_cli.store.records import BackendState

RATE_MINUTES = 5  # throughput is read over the last few minutes with finishes
MIN_RATE_SPAN = 10.0  # seconds: a rate over less says little
_BY_RANK = {p.rank: p for p in Priority}


@dataclass(frozen=True)
class Running:
    id: int
    model: str
    backend: str
    elapsed: float  # seconds since the attempt started
    tokens: int | None  # streamed so far; None: its daemon has not said yet
    tokens_per_second: float | None


@dataclass(frozen=True)
class Frame:
    at: float  # store clock
    counts: dict[str, int]
    paused: bool
    daemons: int  # alive
    finished_last_hour: int  # in the 60 minutes of the store clock up to `at`
    per_minute: float | None  # recent throughput, jobs per minute; None: nothing finished lately
    eta: float | None  # seconds until the pending jobs are done at that rate; None: no rate
    running: list[Running]  # the first `limit` running jobs, oldest first
    depth: list[tuple[Priority, str, int]]  # ready jobs per priority and model
    backends: list[BackendState]


def throughput(per_minute: list[int], now: float) -> float | None:
    """Jobs per minute over the last RATE_MINUTES minutes (the current one as far as it has
    gone), from the first of them in which a job finished: a daemon that started a minute ago
    is not judged over five. None when none finished."""
    recent = per_minute[-(RATE_MINUTES + 1):]
    first = next((i for i, n in enumerate(recent) if n), None)
    if first is None:
        return None
    span = (len(recent) - 1 - first) * 60 + now % 60
    return sum(recent) * 60 / max(span, MIN_RATE_SPAN)


def frame(store: Engine, *, limit: int) -> Frame:
    """What `top` shows now, with at most `limit` running jobs."""
    from ollama_cli.insight.snapshot import live_daemons

    now = store.now()
    counts = store.counts()
    per_minute = store.finished_per_minute(now)
    rate = throughput(per_minute, now)
    pending = counts[JobStatus.PENDING.value]
    running, _ = store.list_jobs(statuses=[JobStatus.RUNNING], limit=limit) if limit > 0 else ([], [])
    progress = {p.job_id: p for p in store.progress()}
    rows = []
    for job in sorted(running, key=lambda j: j.id):
        p = progress.get(job.id)
        rows.append(Running(job.id, job.model, job.host or "", max(0.0, now - (job.started_at or now)),
                            p.tokens if p else None, p.tokens_per_second if p else None))
    return Frame(
        at=now, counts=counts, paused=store.is_paused(), daemons=len(live_daemons(store)),
        finished_last_hour=sum(per_minute), per_minute=rate,
        eta=pending * 60 / rate if rate else None, running=rows,
        depth=[(_BY_RANK[rank], model, n) for rank, model, n in store.ready_depth() if rank in _BY_RANK],
        backends=store.backends(),
    )

