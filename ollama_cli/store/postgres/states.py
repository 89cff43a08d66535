"""A job's row and what must change with it: its `state` column (pending split into ready,
waiting, blocked and open_run), the counters of states and of ready jobs, and the hand-on
to its dependents when it finishes. Every change of a job goes through `save`."""

from __future__ import annotations

from collections.abc import Sequence

from ollama_cli.jobs import ErrorType, Job, JobError, JobStatus, Priority, full_name
from ollama_cli.store.postgres import activity, rows
from ollama_cli.store.postgres.schema import BLOCKS
from ollama_cli.store.postgres.rows import COLUMNS, to_job
from ollama_cli.store.postgres.transactions import Tx

PENDING, RUNNING = JobStatus.PENDING, JobStatus.RUNNING
COMPLETED, FAILED, CANCELLED = JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED
FINISHED_STATES = ("completed", "failed", "cancelled")

COUNT = {s: f"count/{s.value}" for s in JobStatus}
READY = {p.rank: f"ready/{p.rank}" for p in Priority}


def block_count_name(bits: int, rank: int, block: int) -> str:
    """The counter of ready jobs of priority `rank` whose ids >> bits == block (see
    schema.BLOCKS); names of one level and rank sort by block."""
    return f"r{bits}/{rank}/{block:016x}"


def add_ready(tx: Tx, rank: int, model_key: str, job_id: int, delta: int) -> None:
    """Count a job in (1) or out of (-1) the ready counters of its priority, its model and
    its blocks."""
    tx.add(READY[rank], delta)
    tx.add(activity.ready_model_counter(rank, model_key), delta)
    for bits in BLOCKS:
        tx.add(block_count_name(bits, rank, job_id >> bits), delta)


def load(tx: Tx, ids: Sequence[int], *, lock: bool) -> dict[int, tuple[Job, str]]:
    """Jobs and their states by id; locked for update (in id order) if `lock`."""
    if not ids:
        return {}
    suffix = " ORDER BY id FOR UPDATE" if lock else ""
    found = tx.all(f"SELECT {COLUMNS} FROM jobs WHERE id = ANY(%s){suffix}", (list(ids),))
    return {r[0]: (to_job(r), r[1]) for r in found}


def _dependency_state(tx: Tx, job: Job) -> JobStatus | None:
    """FAILED if a dependency failed or was cancelled, PENDING if one has not finished,
    None when all completed (a dependency cleaned away had completed)."""
    states = {r[0] for r in tx.all("SELECT state FROM jobs WHERE id = ANY(%s)", (list(job.after),))}
    if states & {"failed", "cancelled"}:
        return FAILED
    return PENDING if states - {"completed"} else None


def save(tx: Tx, old: tuple[Job, str] | None, new: Job, now: float, *, hand_on: bool = True,
         stats: dict[str, int] | None = None) -> Job:
    """Write `new` over `old` (a job and its state, as loaded) and keep the counters in
    step; a job that finishes is counted in the statistics (`stats`: its result's figures,
    `stats.py`) and hands on to its dependents (`hand_on` False: the caller knows it has none). The job as stored (a pending job whose dependency failed is
    stored failed). A pending job that holds a lease waits for its open run to close."""
    state, hold = new.status.value, None
    if new.status is PENDING:
        deps = _dependency_state(tx, new) if new.after else None
        if deps is FAILED:
            new = finished(new, FAILED, now, ErrorType.DEPENDENCY_FAILED,
                           "a job it depends on failed or was cancelled").evolve(lease=new.lease)
            state = new.status.value
        elif new.lease is not None:
            state = "open_run"
        elif deps is PENDING:
            state = "blocked"
        else:
            hold = _hold_until(new)
            state = "waiting" if hold is not None and hold > now else "ready"
            hold = hold if state == "waiting" else None
    if old is None:
        tx.cur.execute(rows.INSERT, rows.values(new, state, hold))
    else:
        tx.cur.execute(rows.UPDATE, (*rows.values(new, state, hold), new.id))
        count(tx, old[0], old[1], -1)
    count(tx, new, state, 1)
    if new.status.finished or state == "ready":
        tx.notify = True
    if new.status.finished and (old is None or not old[0].status.finished):
        from ollama_cli.store.postgres import stats as statistics

        statistics.apply(tx, None, new, stats)
        if old is not None:  # it was queued: throughput (jobs answered at submit are not)
            activity.note_finished(tx, now)
        if hand_on:
            _hand_on(tx, new, now)
    return new


def count(tx: Tx, job: Job, state: str, delta: int) -> None:
    """Count a job in (delta 1) or out of (-1) the counters of `state`."""
    tx.add(COUNT[job.status], delta)
    if state == "ready":
        add_ready(tx, job.priority.rank, full_name(job.model), job.id, delta)


def _hand_on(tx: Tx, job: Job, now: float) -> None:
    """A job finished: its pending dependents become ready (it completed) or fail."""
    children = [r[0] for r in tx.all("SELECT child FROM dependencies WHERE parent = %s", (job.id,))]
    for child, state in load(tx, sorted(children), lock=True).values():
        if child.status is PENDING:
            save(tx, (child, state), child, now)


def finished(job: Job, status: JobStatus, now: float, kind: ErrorType, message: str) -> Job:
    return job.evolve(status=status, finished_at=now, lease=None, retry_at=None, error=JobError(kind, message))


def _hold_until(job: Job) -> float | None:
    if job.retry_at is None:
        return job.run_at
    return job.retry_at if job.run_at is None else max(job.run_at, job.retry_at)
