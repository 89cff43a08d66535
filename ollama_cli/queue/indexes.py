"""The job records and everything kept beside them: key builders, counter names, and
`_transition`, the only writer of job records.

Invariants `_transition` keeps (`doctor.py` checks each of them):
- a job's key is in `status` under its status, and `count/<status>` counts them;
- a pending job is in exactly one of `blocked` (a dependency has not completed),
  `waiting` (held until `run_at` or a retry time; the entry holds the job's priority rank)
  and `ready`; no other job is in any of them;
- `ready` keys are (priority rank, id), so the first key is the next job to start, and
  `ready/<rank>` counts them for positions in O(1);
- `dependents` holds (dependency, job) for each dependency of each job, while both exist;
  `batches` holds (batch name, NUL, id) for each job of a batch;
- a job holds a lease exactly while it runs, and has `finished_at` exactly when finished;
  a completed job has a result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ollama_cli.codec import decode_job, encode_job
from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import ErrorType, Job, JobError, JobStatus, Priority
from ollama_cli.store.keys import read_u64, u64

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx

PENDING, RUNNING = JobStatus.PENDING, JobStatus.RUNNING
COMPLETED, FAILED, CANCELLED = JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED

# Counter names and key prefixes by status and priority, made once: building them per
# job (f-strings over enum values) cost more than the index writes they name.
COUNT = {s: f"count/{s.value}" for s in JobStatus}
READY_COUNT = {p: f"ready/{p.rank}" for p in Priority}
RANK = {p: bytes([p.rank]) for p in Priority}


def get_job(tx: Tx, job_id: int) -> Job | None:
    raw = tx.get("jobs", u64(job_id))
    return None if raw is None else decode_job(job_id, raw)


def ready_key(job: Job) -> bytes:
    return RANK[job.priority] + u64(job.id)


def hold_until(job: Job) -> float | None:
    if job.retry_at is None:
        return job.run_at
    return job.retry_at if job.run_at is None else max(job.run_at, job.retry_at)


def waiting_key(at: float, job_id: int) -> bytes:
    return u64(int(at * 1000)) + u64(job_id)


def batch_prefix(name: str) -> bytes:
    return name.encode() + b"\x00"


def finished(job: Job, status: JobStatus, now: float, kind: ErrorType, message: str) -> Job:
    return job.evolve(status=status, finished_at=now, lease=None, retry_at=None,
                      error=JobError(kind, message))


def dependency_state(tx: Tx, job: Job) -> JobStatus | None:
    """FAILED if a dependency failed or was cancelled, PENDING if one has not finished,
    None when all completed (a dependency cleaned away had completed)."""
    state = None
    for dep_id in job.after:
        try:
            dep = get_job(tx, dep_id)
        except CorruptRecord:
            return FAILED
        if dep is None or dep.status is COMPLETED:
            continue
        if dep.status in (FAILED, CANCELLED):
            return FAILED
        state = PENDING
    return state


def transition(tx: Tx, old: Job | None, new: Job, now: float) -> Job:
    """Write `new` over `old` and keep every index and counter in step, in this
    transaction. A finished job settles the jobs that depend on it. Returns the job as
    stored (a pending job whose dependency failed is stored failed)."""
    if new.status is PENDING and new.after:
        state = dependency_state(tx, new)
        if state is FAILED:
            new = finished(new, FAILED, now, ErrorType.DEPENDENCY_FAILED,
                           "a job it depends on failed or was cancelled")
    if old is not None:
        unindex(tx, old)
    key = u64(new.id)
    tx.put("jobs", key, encode_job(new))
    tx.put("status", new.status.code + key)
    tx.add(COUNT[new.status], 1)
    if new.status is PENDING:
        hold = hold_until(new)
        if new.after and dependency_state(tx, new) is PENDING:
            tx.put("blocked", key)
        elif hold is not None and hold > now:
            tx.put("waiting", waiting_key(hold, new.id), RANK[new.priority])
        else:
            tx.put("ready", ready_key(new))
            tx.add(READY_COUNT[new.priority], 1)
    if new.status.finished and (old is None or not old.status.finished):
        settle_dependents(tx, new, now)
    return new


def unindex(tx: Tx, job: Job) -> None:
    key = u64(job.id)
    if tx.delete("status", job.status.code + key):
        tx.add(COUNT[job.status], -1)
    if job.status is PENDING:
        if tx.delete("ready", ready_key(job)):
            tx.add(READY_COUNT[job.priority], -1)
        hold = hold_until(job)
        if hold is not None:
            tx.delete("waiting", waiting_key(hold, job.id))
        if job.after:  # only a job with dependencies is ever blocked
            tx.delete("blocked", key)


def settle_dependents(tx: Tx, job: Job, now: float) -> None:
    """A job finished: its dependents become ready (it completed) or fail (it did not)."""
    prefix = u64(job.id)
    waiting = [read_u64(k, 8) for k, _ in tx.scan("dependents", prefix)]
    for dep_id in waiting:
        try:
            dependent = get_job(tx, dep_id)
        except CorruptRecord:
            continue
        if dependent is not None and dependent.status is PENDING:
            transition(tx, dependent, dependent, now)  # re-placed, or failed, by transition
