"""Queue semantics over the store: submit, take with a lease, finish, reclaim, cancel.

Every function here is a pure function of (transaction, now, arguments): no threads,
no HTTP, no sleeps, so one state change is one short write transaction.

Invariants kept by `_save`, the only writer of job records:
- a job's key is in `status` under its status, and `count/<status>` counts them;
- a pending job is in exactly one of `blocked` (a dependency has not completed),
  `waiting` (held until `run_at` or a retry time) and `ready`;
- `ready` keys are (priority rank, id), so the first key is the next job to start, and
  `ready/<rank>` counts them for positions in O(1).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from ollama_cli import cache
from ollama_cli.errors import CorruptRecord, UsageError
from ollama_cli.codec import decode_job, encode_job, pack, unpack
from ollama_cli.jobs import ErrorType, Job, JobError, JobStatus, JobType, Lease, Priority
from ollama_cli.store.keys import read_u64, u64
from ollama_cli.store.lmdb import Tx

PENDING, RUNNING = JobStatus.PENDING, JobStatus.RUNNING
COMPLETED, FAILED, CANCELLED = JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED

# Counter names and key prefixes by status and priority, made once: building them per
# job (f-strings over enum values) cost more than the index writes they name.
_COUNT = {s: f"count/{s.value}" for s in JobStatus}
_READY_COUNT = {p: f"ready/{p.rank}" for p in Priority}
_RANK = {p: bytes([p.rank]) for p in Priority}

# How many ready jobs `ready_candidates` decodes at most: bounds a daemon tick however
# long the queue (the daemon asks for fewer, by its free slots).
CLAIM_SCAN_LIMIT = 256


class JobSpec(NamedTuple):
    """Everything `submit` needs, validated by the caller."""

    model: str
    type: JobType
    request: dict[str, Any]
    priority: Priority = Priority.MEDIUM
    name: str | None = None
    batch: str | None = None
    custom_id: str | None = None
    max_attempts: int = 4
    timeout: float | None = None
    run_at: float | None = None
    after: tuple[int, ...] = ()
    keep_alive: float | None = None
    use_cache: bool = True


class Claim(NamedTuple):
    job: Job
    request: dict[str, Any]

    def __repr__(self) -> str:  # never the prompt: reprs end up in logs
        return f"Claim(job={self.job.id})"


# ----------------------------------------------------------------------------- reads


def get_job(tx: Tx, job_id: int) -> Job | None:
    raw = tx.get("jobs", u64(job_id))
    return None if raw is None else decode_job(job_id, raw)


def get_request(tx: Tx, job_id: int) -> dict[str, Any]:
    raw = tx.get("requests", u64(job_id))
    return {} if raw is None else unpack(job_id, raw)


def get_result(tx: Tx, job_id: int) -> dict[str, Any] | None:
    raw = tx.get("results", u64(job_id))
    return None if raw is None else unpack(job_id, raw)


def counts(tx: Tx) -> dict[str, int]:
    """Jobs per status, from counters kept beside the records: O(1) at any size."""
    out = {s.value: tx.counter(_COUNT[s]) for s in JobStatus}
    out["total"] = sum(out.values())
    return out


def is_paused(tx: Tx) -> bool:
    return tx.get("meta", b"paused") == b"1"


def position(tx: Tx, job: Job, now: float) -> int | None:
    """1-based place among ready jobs in the order they start; None unless ready. A
    delayed job whose time has come is ready, though no daemon has moved it yet."""
    if job.status is not PENDING:
        return None
    key = _ready_key(job)
    due = _due_keys(tx, now)
    if tx.get("ready", key) is None and key not in due:
        return None
    ahead = sum(tx.counter(_READY_COUNT[p]) for p in Priority if p.rank < job.priority.rank)
    for k, _ in tx.scan("ready", key[:1]):
        if k >= key:
            break
        ahead += 1
    return ahead + sum(1 for k in due if k < key) + 1


def positions(tx: Tx, jobs: Iterable[Job], now: float) -> dict[int, int]:
    """Positions of many jobs in one walk of the ready index (and of the due jobs not
    yet moved there), as `position` gives them one by one."""
    wanted = {j.id for j in jobs if j.status is PENDING}
    found: dict[int, int] = {}
    if not wanted:
        return found
    import heapq

    ready = (key for key, _ in tx.scan("ready"))
    for place, key in enumerate(heapq.merge(ready, sorted(_due_keys(tx, now))), start=1):
        job_id = read_u64(key, 1)
        if job_id in wanted:
            found[job_id] = place
            if len(found) == len(wanted):
                break
    return found


def _due_keys(tx: Tx, now: float) -> set[bytes]:
    """Ready keys of waiting jobs whose time has come: the daemon moves them to `ready`
    on its next tick, and a read-only command cannot. None while a daemon runs; without
    one they pile up, so each entry carries its job's rank and needs no decoding."""
    limit = u64(int(now * 1000) + 1)
    keys = set()
    for key, rank in tx.scan("waiting"):
        if key[:8] >= limit:
            break
        if not rank:  # written before entries carried the rank
            try:
                job = get_job(tx, read_u64(key, 8))
            except CorruptRecord:
                continue
            if job is None or job.status is not PENDING:
                continue
            rank = _RANK[job.priority]
        keys.add(rank + key[8:])
    return keys


def list_jobs(
    tx: Tx,
    *,
    statuses: Iterable[JobStatus] = (),
    model: str | None = None,
    job_type: JobType | None = None,
    batch: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[Job], list[CorruptRecord]]:
    """Jobs newest first, walking an index rather than every record where a filter
    allows it. Corrupt records are returned apart, never raised."""
    jobs: list[Job] = []
    corrupt: list[CorruptRecord] = []
    if limit is not None and limit <= 0:
        return jobs, corrupt
    wanted = set(statuses)
    skipped = 0
    for job_id in _ids_newest_first(tx, tuple(wanted), batch):
        raw = tx.get("jobs", u64(job_id))
        if raw is None:
            continue
        try:
            job = decode_job(job_id, raw)
        except CorruptRecord as exc:
            corrupt.append(exc)
            continue
        if (model and job.model != model) or (job_type and job.type is not job_type):
            continue
        if (batch and job.batch != batch) or (wanted and job.status not in wanted):
            continue
        if skipped < offset:
            skipped += 1
            continue
        jobs.append(job)
        if limit is not None and len(jobs) >= limit:
            break
    return jobs, corrupt


def _ids_newest_first(tx: Tx, statuses: tuple[JobStatus, ...], batch: str | None) -> Iterator[int]:
    if batch:
        prefix = batch.encode() + b"\x00"
        for key, _ in tx.scan("batches", prefix, reverse=True):
            yield read_u64(key, len(prefix))
    elif statuses:
        # Merge the per-status index runs, each already in id order.
        import heapq

        runs = [
            (read_u64(k, 1) for k, _ in tx.scan("status", s.code, reverse=True))
            for s in dict.fromkeys(statuses)
        ]
        yield from heapq.merge(*runs, reverse=True)
    else:
        for key, _ in tx.scan("jobs", reverse=True):
            yield read_u64(key)


def running(tx: Tx) -> list[Job]:
    out = []
    for key, _ in tx.scan("status", RUNNING.code):
        job = get_job(tx, read_u64(key, 1))
        if job is not None:
            out.append(job)
    return out


def has_unfinished(tx: Tx) -> bool:
    return tx.counter("count/pending") + tx.counter("count/running") > 0


# ---------------------------------------------------------------------------- submit


def submit(tx: Tx, spec: JobSpec, now: float) -> Job:
    """Queue one job. An identical request that completed before completes at once
    from the cache, in this same transaction."""
    return submit_many(tx, (spec,), now)[0]


def submit_many(tx: Tx, specs: Sequence[JobSpec], now: float) -> list[Job]:
    """Queue jobs with consecutive ids, in order, each as `submit` queues one."""
    first = tx.add("next_id", len(specs)) - len(specs) + 1
    return [_enqueue(tx, spec, job_id, now) for job_id, spec in enumerate(specs, start=first)]


def _enqueue(tx: Tx, spec: JobSpec, job_id: int, now: float) -> Job:
    for dep in spec.after:
        if tx.get("jobs", u64(dep)) is None:
            raise UsageError(f"--after {dep}: no such job")
    key = cache.key_for(spec.model, spec.type.value, spec.request) if spec.use_cache else None
    job = Job(
        id=job_id,
        model=spec.model,
        type=spec.type,
        priority=spec.priority,
        status=PENDING,
        created_at=now,
        name=spec.name,
        batch=spec.batch,
        custom_id=spec.custom_id,
        max_attempts=spec.max_attempts,
        run_at=spec.run_at,
        after=spec.after,
        timeout=spec.timeout,
        keep_alive=spec.keep_alive,
        cache_key=key,
    )
    tx.put("requests", u64(job_id), pack(spec.request))
    if spec.batch:
        tx.put("batches", spec.batch.encode() + b"\x00" + u64(job_id))
    # A delayed or dependent job asked to run later, not to be answered now.
    hit = cache.lookup(tx, key) if key is not None and not spec.after and spec.run_at is None else None
    if hit is not None:
        tx.put("results", u64(job_id), pack(hit))
        job = job.evolve(status=COMPLETED, cached=True, started_at=now, finished_at=now)
    for dep in spec.after:
        tx.put("dependents", u64(dep) + u64(job_id))
    return _save(tx, None, job, now)


# ------------------------------------------------------------------------ the daemon


def ready_candidates(tx: Tx, now: float, *, limit: int = CLAIM_SCAN_LIMIT) -> Iterator[Job]:
    """Ready jobs in the order they start (priority, then id), at most `limit`: the
    scheduler's view of the head of the queue, read lazily so that a tick reads only
    as far as its decisions need. Empty while the queue is paused. Use it within `tx`."""
    if is_paused(tx):
        return iter(())
    promote_due(tx, now)
    return _ready(tx, limit)


def _ready(tx: Tx, limit: int) -> Iterator[Job]:
    read = 0
    for key, _ in tx.scan("ready"):
        if read >= limit:
            return
        read += 1
        job = _load_or_quarantine(tx, read_u64(key, 1))
        if job is not None:
            yield job


def take(tx: Tx, jobs: Iterable[Job], owner: str, now: float) -> list[Claim]:
    """Move these ready jobs to running under a new lease of `owner`."""
    import secrets

    claims = []
    for job in jobs:
        started = job.evolve(
            status=RUNNING,
            attempts=job.attempts + 1,
            started_at=now,
            lease=Lease(owner, secrets.token_hex(8)),
            retry_at=None,
        )
        _save(tx, job, started, now)
        try:
            request = get_request(tx, job.id)
        except CorruptRecord as exc:
            _save(tx, started, _finished(started, FAILED, now, ErrorType.INVALID_RESPONSE,
                                         f"the stored request is corrupt: {exc.reason}"), now)
            continue
        claims.append(Claim(started, request))
    return claims


# The head of the queue decoded, by stored bytes: a daemon looks at it on every tick and
# takes only a few jobs of it, so most of it was decoded the tick before. Equal bytes
# decode to an equal (immutable) Job.
_decode_ready = lru_cache(maxsize=2 * CLAIM_SCAN_LIMIT)(decode_job)


def _load_or_quarantine(tx: Tx, job_id: int) -> Job | None:
    """A corrupt record at the head of the queue must not stop the queue: take its
    index entries away and leave the record for `status` to report."""
    try:
        raw = tx.get("jobs", u64(job_id))
        return None if raw is None else _decode_ready(job_id, raw)
    except CorruptRecord:
        for p in Priority:
            if tx.delete("ready", _RANK[p] + u64(job_id)):
                tx.add(_READY_COUNT[p], -1)
        return None


def _owned(tx: Tx, job_id: int, token: str) -> Job | None:
    """The job if it is still running under this lease token: a daemon that lost its
    job (cancelled, reclaimed) cannot finish it."""
    job = get_job(tx, job_id)
    if job is None or job.status is not RUNNING or job.lease is None or job.lease.token != token:
        return None
    return job


def complete(tx: Tx, job_id: int, token: str, result: dict[str, Any], now: float,
             *, host: str | None = None) -> bool:
    """Store the result and mark the job completed; False if the lease was lost."""
    job = _owned(tx, job_id, token)
    if job is None:
        return False
    tx.put("results", u64(job_id), pack(result))
    if job.cache_key is not None:
        cache.store(tx, job.cache_key, result)
    done = job.evolve(status=COMPLETED, finished_at=now, lease=None, error=None, host=host or job.host)
    _save(tx, job, done, now)
    return True


def fail_attempt(
    tx: Tx,
    job_id: int,
    token: str,
    error: JobError,
    now: float,
    *,
    retry_after: float | None,
    host: str | None = None,
) -> Job | None:
    """An attempt failed. With `retry_after` (a transient failure) and attempts left, the
    job waits that long and goes again; otherwise it fails. None if the lease was lost."""
    job = _owned(tx, job_id, token)
    if job is None:
        return None
    host = host or job.host
    if retry_after is not None and job.attempts < job.max_attempts:
        again = job.evolve(status=PENDING, lease=None, error=error, host=host,
                           retry_at=now + retry_after)
    else:
        again = _finished(job.evolve(host=host), FAILED, now, error.type, error.message)
    _save(tx, job, again, now)
    return again


def release(tx: Tx, job_id: int, token: str, now: float) -> bool:
    """Hand a running job back as pending without counting the attempt (shutdown, or
    no backend reachable)."""
    job = _owned(tx, job_id, token)
    if job is None:
        return False
    back = job.evolve(status=PENDING, lease=None, attempts=max(0, job.attempts - 1))
    _save(tx, job, back, now)
    return True


def reclaim(tx: Tx, dead_owners: set[str], now: float) -> list[Job]:
    """Running jobs whose daemon is gone go back to pending (the attempt counts), or
    fail as `abandoned` once they have used up their attempts."""
    out = []
    for job in running(tx):
        if job.lease is None or job.lease.owner not in dead_owners:
            continue
        if job.attempts >= job.max_attempts:
            new = _finished(job, FAILED, now, ErrorType.ABANDONED,
                            f"its daemon died during each of {job.attempts} attempts")
        else:
            new = job.evolve(status=PENDING, lease=None,
                             error=JobError(ErrorType.ABANDONED, "its daemon died"))
        _save(tx, job, new, now)
        out.append(new)
    return out


def promote_due(tx: Tx, now: float) -> int:
    """Move waiting jobs whose time has come to ready (or blocked)."""
    limit = u64(int(now * 1000) + 1)
    due = []
    for key, _ in tx.scan("waiting"):
        if key[:8] >= limit:
            break
        due.append(read_u64(key, 8))
    for job_id in due:
        job = get_job(tx, job_id)
        if job is not None:
            _save(tx, job, job, now)
    return len(due)


# ------------------------------------------------------------------- user operations


def cancel(tx: Tx, job_id: int, now: float) -> Job | None:
    """Cancel a pending or running job (its daemon sees the lease go and closes the
    stream). Returns the job as it now is, or None if there is no such job."""
    job = get_job(tx, job_id)
    if job is None or job.status.finished:
        return job
    new = _finished(job, CANCELLED, now, ErrorType.CANCELLED, "cancelled by the user")
    _save(tx, job, new, now)
    return new


def set_paused(tx: Tx, paused: bool) -> None:
    tx.put("meta", b"paused", b"1" if paused else b"0")


def retry(tx: Tx, job_id: int, now: float) -> Job | None:
    """Queue a failed or cancelled job again, its attempts starting over. Returns the job
    as it now is (unchanged if it was not failed or cancelled), or None if unknown."""
    job = get_job(tx, job_id)
    if job is None or job.status not in (FAILED, CANCELLED):
        return job
    again = job.evolve(status=PENDING, attempts=0, error=None, started_at=None, finished_at=None,
                       retry_at=None, lease=None, host=None)
    return _save(tx, job, again, now)  # a failed dependency may have failed it again at once


def ids_with_status(tx: Tx, *statuses: JobStatus) -> list[int]:
    return [read_u64(k, 1) for s in statuses for k, _ in tx.scan("status", s.code)]


def clean(tx: Tx, statuses: Iterable[JobStatus], now: float, *, older_than: float | None = None) -> int:
    """Delete finished jobs of these statuses (finished more than `older_than` seconds
    ago, if given) with their requests, results and index entries."""
    deleted = 0
    for status in statuses:
        if not status.finished:
            raise UsageError(f"clean deletes finished jobs only, not {status.value} ones")
        for job_id in ids_with_status(tx, status):
            try:
                job = get_job(tx, job_id)
            except CorruptRecord:
                job = None
            if job is not None and older_than is not None and \
                    (job.finished_at is None or now - job.finished_at < older_than):
                continue
            _delete(tx, job_id, status, job)
            deleted += 1
    return deleted


def _delete(tx: Tx, job_id: int, status: JobStatus, job: Job | None) -> None:
    key = u64(job_id)
    for db in ("jobs", "requests", "results"):
        tx.delete(db, key)
    if tx.delete("status", status.code + key):
        tx.add(_COUNT[status], -1)
    for dep_key, _ in list(tx.scan("dependents", key)):
        tx.delete("dependents", dep_key)
    if job is not None:
        for dep in job.after:
            tx.delete("dependents", u64(dep) + key)
        if job.batch:
            tx.delete("batches", job.batch.encode() + b"\x00" + key)


# --------------------------------------------------------------------------- indexes


def _finished(job: Job, status: JobStatus, now: float, kind: ErrorType, message: str) -> Job:
    return job.evolve(status=status, finished_at=now, lease=None, retry_at=None,
                      error=JobError(kind, message))


def _ready_key(job: Job) -> bytes:
    return _RANK[job.priority] + u64(job.id)


def _hold_until(job: Job) -> float | None:
    if job.retry_at is None:
        return job.run_at
    return job.retry_at if job.run_at is None else max(job.run_at, job.retry_at)


def _waiting_key(at: float, job_id: int) -> bytes:
    return u64(int(at * 1000)) + u64(job_id)


def _dependency_state(tx: Tx, job: Job) -> JobStatus | None:
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


def _save(tx: Tx, old: Job | None, new: Job, now: float) -> Job:
    """Write `new` over `old` and keep every index and counter in step, in this
    transaction. A finished job hands on to the jobs that depend on it. Returns the job
    as stored (a pending job whose dependency failed is stored failed)."""
    if new.status is PENDING and new.after:
        state = _dependency_state(tx, new)
        if state is FAILED:
            new = _finished(new, FAILED, now, ErrorType.DEPENDENCY_FAILED,
                            "a job it depends on failed or was cancelled")
    if old is not None:
        _unindex(tx, old)
    key = u64(new.id)
    tx.put("jobs", key, encode_job(new))
    tx.put("status", new.status.code + key)
    tx.add(_COUNT[new.status], 1)
    if new.status is PENDING:
        hold = _hold_until(new)
        if new.after and _dependency_state(tx, new) is PENDING:
            tx.put("blocked", key)
        elif hold is not None and hold > now:
            tx.put("waiting", _waiting_key(hold, new.id), _RANK[new.priority])
        else:
            tx.put("ready", _ready_key(new))
            tx.add(_READY_COUNT[new.priority], 1)
    if new.status.finished and (old is None or not old.status.finished):
        _hand_on(tx, new, now)
    return new


def _unindex(tx: Tx, job: Job) -> None:
    key = u64(job.id)
    if tx.delete("status", job.status.code + key):
        tx.add(_COUNT[job.status], -1)
    if job.status is PENDING:
        if tx.delete("ready", _ready_key(job)):
            tx.add(_READY_COUNT[job.priority], -1)
        hold = _hold_until(job)
        if hold is not None:
            tx.delete("waiting", _waiting_key(hold, job.id))
        if job.after:  # only a job with dependencies is ever blocked
            tx.delete("blocked", key)


def _hand_on(tx: Tx, job: Job, now: float) -> None:
    """A job finished: its dependents become ready (it completed) or fail (it did not)."""
    prefix = u64(job.id)
    waiting = [read_u64(k, 8) for k, _ in tx.scan("dependents", prefix)]
    for dep_id in waiting:
        try:
            dependent = get_job(tx, dep_id)
        except CorruptRecord:
            continue
        if dependent is not None and dependent.status is PENDING:
            _save(tx, dependent, dependent, now)  # re-placed, or failed, by _save
