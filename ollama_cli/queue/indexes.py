"""The job records and everything kept beside them: key builders, counter names, and
`_transition`, the only writer of job records.

Invariants `_transition` keeps (`doctor.py` checks each of them):
- a job's key is in `status` under its status, and `count/<status>` counts them;
- a pending job is in exactly one of `blocked` (a dependency has not completed),
  `waiting` (held until `run_at` or a retry time; the entry holds the job's priority rank),
  `ready` and `open_runs`; no other job is in any of the first three;
- `ready` keys are (priority rank, id), so the first key is the next job to start, and
  `ready/<rank>` counts them for positions in O(1);
- `ready_model` holds the same jobs keyed (rank, model digest, id), its value the job's
  type code, so the oldest ready job of a model is one seek (`ready_models` names the
  digests); `rm/<rank>/<digest>` counts them, and `rb/<rank>/<block>` and
  `rB/<rank>/<block>` count ready jobs per block of 2^10 and 2^20 ids, so a position is
  a few reads and a short walk (`reads.position`). The store's `meta` says `schema` 2
  once they exist (`migrate` builds them in a store written before);
- `dependents` holds (dependency, job) for each dependency of each job, while both exist;
  `batches` holds (batch name, NUL, id) for each job of a batch;
- a running job holds the lease of its run. A job cancelled while it ran keeps that lease
  until the run closes (its daemon settles it, or is found dead): such a job is in
  `open_runs`, and, retried meanwhile, pending there and in no other pending index, so that
  it cannot start again while the run it had goes on. Other jobs hold no lease;
- a job has `finished_at` exactly when finished; a completed job has a result;
- a job that finishes while hooks are recorded has an event in `hook_events` (`hooks.py`);
- `partials` holds text only for running jobs, under the lease they run under.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from ollama_cli.codec import decode_job, encode_job, sha256
from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import ErrorType, Job, JobError, JobStatus, JobType, Priority, full_name
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

SCHEMA = b"2"  # meta `schema`: absent in stores written before the per-model index
SMALL, BIG = 10, 20  # log2 of the id blocks whose ready jobs are counted
EMBED = JobType.EMBED.value.encode()[:1]  # `ready_model` value: what coalescing looks for


@lru_cache(maxsize=4096)
def model_digest(model: str) -> bytes:
    """8 bytes naming a model's canonical name in keys: a name may be longer than an
    LMDB key (511 bytes). Readers compare the decoded job's model, so a collision could
    only cost a step, never a wrong answer."""
    return sha256(full_name(model).encode())[:8]  # the module cache keys load already


def model_count_name(rank: int, digest: bytes) -> str:
    return f"rm/{rank}/{digest.hex()}"


def block_count_names(rank: int, job_id: int) -> tuple[str, str]:
    return f"rb/{rank}/{job_id >> SMALL:012x}", f"rB/{rank}/{job_id >> BIG:08x}"


def get_job(tx: Tx, job_id: int) -> Job | None:
    raw = tx.get("jobs", u64(job_id))
    return None if raw is None else decode_job(job_id, raw)


def ready_key(job: Job) -> bytes:
    return RANK[job.priority] + u64(job.id)


def hold_until(job: Job) -> float | None:
    if job.retry_at is None:
        return job.run_at
    return job.retry_at if job.run_at is None else max(job.run_at, job.retry_at)


_KEY_MS = 1 << 64  # the first millisecond a key cannot hold


def time_key(at: float) -> bytes:
    """Milliseconds since the epoch, clamped to what a key holds: a store written before
    times were bounded at submit may hold any float (before 1970, past 9999, infinite), and
    such a job must move through the indexes like any other instead of stopping the queue."""
    ms = at * 1000
    return u64(int(ms) if 0 <= ms < _KEY_MS else 0 if not ms > 0 else _KEY_MS - 1)


def waiting_key(at: float, job_id: int) -> bytes:
    return time_key(at) + u64(job_id)


def batch_prefix(name: str) -> bytes:
    return name.encode() + b"\x00"


def finished(job: Job, status: JobStatus, now: float, kind: ErrorType, message: str) -> Job:
    """The job ended, and so did its run. Where a run may still be open (cancel, a failed
    dependency), the caller keeps the lease."""
    return job.evolve(status=status, finished_at=now, lease=None, retry_at=None,
                      error=JobError(kind, message))


def open_run(job: Job) -> bool:
    """Whether the job holds the lease of a run that goes on though the job no longer runs."""
    return job.lease is not None and job.status is not RUNNING


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


def transition(tx: Tx, old: Job | None, new: Job, now: float, *, stats: dict[str, int] | None = None) -> Job:
    """Write `new` over `old` and keep every index and counter in step, in this
    transaction. A finished job is counted in the statistics (`stats`: its result's
    figures) and settles the jobs that depend on it. Returns the job as stored (a pending
    job whose dependency failed is stored failed)."""
    if new.status is PENDING and new.after:
        state = dependency_state(tx, new)
        if state is FAILED:
            new = finished(new, FAILED, now, ErrorType.DEPENDENCY_FAILED,
                           "a job it depends on failed or was cancelled").evolve(lease=new.lease)
    if old is not None:
        unindex(tx, old)
        if old.status is RUNNING and new.status is not RUNNING:
            tx.delete("partials", u64(new.id))  # what the run streamed so far (`partials.py`)
    key = u64(new.id)
    tx.put("jobs", key, encode_job(new))
    tx.put("status", new.status.code + key)
    tx.add(COUNT[new.status], 1)
    if open_run(new):
        tx.put("open_runs", key)
    elif new.status is PENDING:
        hold = hold_until(new)
        if new.after and dependency_state(tx, new) is PENDING:
            tx.put("blocked", key)
        elif hold is not None and hold > now:
            tx.put("waiting", waiting_key(hold, new.id), RANK[new.priority])
        else:
            add_ready(tx, new)
    if new.status.finished and (old is None or not old.status.finished):
        from ollama_cli.queue import hooks, stats as statistics  # not on the path of a submit that queues

        statistics.job_finished(tx, new, stats)
        hooks.record(tx, new, now)  # before its dependents': events in the order jobs ended
        settle_dependents(tx, new, now)
        if old is not None:  # it was queued: throughput (jobs answered at submit are not)
            from ollama_cli.queue import activity  # here: submit and status never load it

            activity.note_finished(tx, now)
    return new


def unindex(tx: Tx, job: Job) -> None:
    key = u64(job.id)
    if tx.delete("status", job.status.code + key):
        tx.add(COUNT[job.status], -1)
    if open_run(job):
        tx.delete("open_runs", key)
    elif job.status is PENDING:
        if tx.delete("ready", ready_key(job)):
            drop_ready(tx, job.priority, job.id, model_digest(job.model))
        hold = hold_until(job)
        if hold is not None:
            tx.delete("waiting", waiting_key(hold, job.id))
        if job.after:  # only a job with dependencies is ever blocked
            tx.delete("blocked", key)


def add_ready(tx: Tx, job: Job) -> None:
    """Put a pending job in `ready` and in everything counted beside it."""
    rank, digest = job.priority.rank, model_digest(job.model)
    tx.put("ready", ready_key(job))
    tx.add(READY_COUNT[job.priority], 1)
    tx.put("ready_model", RANK[job.priority] + digest + u64(job.id),
           EMBED if job.type is JobType.EMBED else b"")
    if tx.add(model_count_name(rank, digest), 1) == 1:
        tx.put("ready_models", digest, full_name(job.model).encode())
    for name in block_count_names(rank, job.id):
        tx.add(name, 1)


def drop_ready(tx: Tx, priority: Priority, job_id: int, digest: bytes) -> None:
    """What `add_ready` counted, once its `ready` entry is deleted."""
    rank = priority.rank
    tx.add(READY_COUNT[priority], -1)
    if tx.delete("ready_model", RANK[priority] + digest + u64(job_id)):
        tx.add(model_count_name(rank, digest), -1)
    for name in block_count_names(rank, job_id):
        tx.add(name, -1)


def settle_dependents(tx: Tx, job: Job, now: float) -> None:
    """A job finished: its dependents become ready (it completed) or fail (it did not)."""
    from ollama_cli.queue.faults import blame

    prefix = u64(job.id)
    waiting = [read_u64(k, 8) for k, _ in tx.scan("dependents", prefix)]
    for dep_id in waiting:
        try:
            dependent = get_job(tx, dep_id)
        except CorruptRecord:
            continue
        if dependent is not None and dependent.status is PENDING:
            with blame(dep_id):
                transition(tx, dependent, dependent, now)  # re-placed, or failed, by transition


# ------------------------------------------------------------------------- migration

DERIVED = ("rm/", "rb/", "rB/")  # counters `migrate` rebuilds


def in_step(tx: Tx) -> bool:
    """Whether the per-model index and the counts beside `ready` agree with it, as far as
    a few counter reads can tell: every version keeps `ready/<rank>`, and in a store
    written by one that does not keep the rest (before schema 2) the model counts do not
    add up to it. Read-only commands fall back to walks of `ready` when they do not."""
    for p in Priority:
        held = sum(read_u64(v) for _, v in tx.scan("meta", f"rm/{p.rank}/".encode()))
        if held != tx.counter(READY_COUNT[p]):
            return False
    return True


def needs_migration(tx: Tx) -> bool:
    return tx.get("meta", b"schema") != SCHEMA or not in_step(tx)


def migrate(tx: Tx) -> None:
    """Build the per-model index and the counts beside `ready` from `ready` (each ready job
    decoded once), in this transaction, and mark the store `schema` 2."""
    tx.clear("ready_model")
    stale = [k for prefix in DERIVED for k, _ in tx.scan("meta", prefix.encode())]
    for key in stale:
        tx.add(key.decode(), -tx.counter(key.decode()))
    for key, _ in tx.scan("ready"):
        job_id, rank = read_u64(key, 1), key[0]
        try:
            job = get_job(tx, job_id)
        except CorruptRecord:
            job = None
        priority = next(p for p in Priority if p.rank == rank)
        if job is None or job.status is not PENDING or job.priority is not priority:
            continue  # the doctor reports it; the queue quarantines it when it reaches it
        tx.add(READY_COUNT[priority], -1)  # add_ready counts it again
        add_ready(tx, job)
    tx.put("meta", b"schema", SCHEMA)
