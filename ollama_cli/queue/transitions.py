"""Every change of a job's state: submit, claim, settle (complete, fail an attempt,
release), reclaim, cancel, retry, and promoting held jobs whose time has come.

Each is a function of (transaction, now, arguments) that does no I/O but through the
transaction, so one state change is one short write transaction, and rerunning it (as
LMDB does after growing its map) changes nothing but the lease tokens it draws."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ollama_cli import cache
from ollama_cli.codec import decode_job, pack
from ollama_cli.errors import CorruptRecord, UsageError
from ollama_cli.jobs import ErrorType, Job, JobError, JobSpec, JobStatus, Lease, Priority, result_stats
from ollama_cli.queue.faults import blame
from ollama_cli.queue.indexes import (
    CANCELLED, COMPLETED, COUNT, EMBED, FAILED, PENDING, RANK, RUNNING, batch_prefix, drop_ready,
    finished, get_job, hold_until, model_digest, open_run, transition, waiting_key,
)
from ollama_cli.queue.reads import batch_exists, get_request, is_paused, open_runs, running
from ollama_cli.store.keys import read_u64, u64

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx
    from ollama_cli.store.records import CacheReuse, CacheWrite, Claim, Settle

# How many ready jobs `ready_candidates` decodes at most: bounds a daemon tick however
# long the queue (the daemon asks for fewer, by its free slots).
CLAIM_SCAN_LIMIT = 256

# ---------------------------------------------------------------------------- submit


def submit(tx: Tx, spec: JobSpec, now: float) -> Job:
    """Queue one job. An identical request that completed before completes at once
    from the cache, in this same transaction."""
    return submit_many(tx, (spec,), now)[0]


def submit_many(tx: Tx, specs: Sequence[JobSpec], now: float) -> list[Job]:
    """Queue jobs with consecutive ids, in order, each as `submit` queues one."""
    first = tx.add("next_id", len(specs)) - len(specs) + 1
    return [_enqueue(tx, spec, job_id, now) for job_id, spec in enumerate(specs, start=first)]


def submit_batch(tx: Tx, specs: Sequence[JobSpec], now: float, name: str | None) -> tuple[str, list[Job]]:
    """Queue every spec as one batch: `name` (refused if in use) or a new `batch-<n>`."""
    batch = _free_batch_name(tx, name)
    return batch, submit_many(tx, [s._replace(batch=batch) for s in specs], now)


def _free_batch_name(tx: Tx, name: str | None) -> str:
    if name is not None:
        if batch_exists(tx, name):
            raise UsageError(f"batch name {name!r} is already used")
        return name
    while True:  # a user may have given a name of this form
        candidate = f"batch-{tx.add('batch/next', 1)}"
        if not batch_exists(tx, candidate):
            return candidate


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
        semantic=spec.semantic_cache and key is not None,
        category=spec.category,
        fallbacks=spec.fallbacks,
        route=spec.route,
    )
    tx.put("requests", u64(job_id), pack(spec.request))
    if spec.batch:
        tx.put("batches", batch_prefix(spec.batch) + u64(job_id))
    # A delayed or dependent job asked to run later, not to be answered now.
    hit = cache.lookup(tx, key, now) if key is not None and not spec.after and spec.run_at is None else None
    if hit is not None:
        tx.put("results", u64(job_id), pack(hit[0]))
        job = job.evolve(status=COMPLETED, cached=True, cache_hit=("exact", hit[1], 1.0),
                         started_at=now, finished_at=now)
    for dep in spec.after:
        tx.put("dependents", u64(dep) + u64(job_id))
    return transition(tx, None, job, now)


# ------------------------------------------------------------------------ the daemon


def ready_candidates(tx: Tx, now: float, *, limit: int = CLAIM_SCAN_LIMIT) -> ReadyJobs:
    """The ready jobs as the scheduler asks for them (`records.ReadyJobs`): iterated, in
    the order they start (priority, then id), at most `limit`, read lazily; asked, the
    oldest of a priority or of a model at any depth. None while the queue is paused.
    Use it within `tx`."""
    paused = is_paused(tx)
    if not paused:
        promote_due(tx, now)
    return ReadyJobs(tx, limit, paused)


class ReadyJobs:
    """`records.ReadyJobs` over the `ready` and `ready_model` indexes: each question is
    one seek (plus one per corrupt record it quarantines on the way)."""

    def __init__(self, tx: Tx, limit: int, paused: bool) -> None:
        self._tx, self._limit, self._paused = tx, limit, paused

    def __iter__(self) -> Iterator[Job]:
        return iter(()) if self._paused else _ready(self._tx, self._limit)

    def oldest(self, rank: int, model: str | None = None, after: int = 0) -> Job | None:
        if self._paused:
            return None
        prefix = bytes([rank]) if model is None else bytes([rank]) + model_digest(model)
        table = "ready" if model is None else "ready_model"
        for key, _ in self._tx.scan(table, prefix, start=prefix + u64(after + 1)):
            job = _load_or_quarantine(self._tx, read_u64(key, len(prefix)))
            if job is not None and (model is None or model_digest(job.model) == prefix[1:]):
                return job
        return None

    def embeds(self, rank: int, model: str, after: int, limit: int) -> Iterator[Job]:
        if self._paused:
            return
        prefix = bytes([rank]) + model_digest(model)
        for read, (key, kind) in enumerate(self._tx.scan("ready_model", prefix, start=prefix + u64(after + 1))):
            if read >= limit:
                return
            if kind == EMBED:
                job = _load_or_quarantine(self._tx, read_u64(key, len(prefix)))
                if job is not None:
                    yield job

    def models(self, rank: int) -> list[str]:
        # One seek per model, past all its jobs: counters may be moved in memory by this
        # transaction, where a scan of the stored ones would not see it.
        out: list[str] = []
        if self._paused:
            return out
        prefix, start = bytes([rank]), bytes([rank])
        while True:
            key = next((k for k, _ in self._tx.scan("ready_model", prefix, start=start)), None)
            if key is None:
                return out
            name = self._tx.get("ready_models", key[1:9])
            if name is not None:
                out.append(name.decode())
            start = key[:9] + b"\xff" * 8 + b"\x00"


def _ready(tx: Tx, limit: int) -> Iterator[Job]:
    read = 0
    for key, _ in tx.scan("ready"):
        if read >= limit:
            return
        read += 1
        job = _load_or_quarantine(tx, read_u64(key, 1))
        if job is not None:
            yield job


def claim(tx: Tx, jobs: Iterable[Job], owner: str, now: float, *, host: str | None = None) -> list[Claim]:
    """Move these ready jobs to running under a new lease of `owner`, placed on `host`."""
    import secrets

    from ollama_cli.store.records import Claim

    claims = []
    for job in jobs:
        with blame(job.id):
            started = job.evolve(
                status=RUNNING,
                attempts=job.attempts + 1,
                started_at=now,
                lease=Lease(owner, secrets.token_hex(8)),
                retry_at=None,
                host=host or job.host,
            )
            transition(tx, job, started, now)
            try:
                request = get_request(tx, job.id)
            except CorruptRecord as exc:
                transition(tx, started, finished(started, FAILED, now, ErrorType.INVALID_RESPONSE,
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
        _unready(tx, job_id, None)
        return None


def _unready(tx: Tx, job_id: int, job: Job | None) -> None:
    """Take a job out of `ready` and what is kept beside it, its record unreadable (`job`
    None: its model is looked for under each model with ready jobs, few, and rare) or not
    to be trusted."""
    for p in Priority:
        if tx.delete("ready", RANK[p] + u64(job_id)):
            digests = [model_digest(job.model)] if job is not None else [k for k, _ in tx.scan("ready_models")]
            held = next((d for d in digests if tx.get("ready_model", RANK[p] + d + u64(job_id)) is not None), b"")
            drop_ready(tx, p, job_id, held)


def _running_under(tx: Tx, job_id: int, token: str, now: float) -> Job | None:
    """The job if it still runs under this lease token: a daemon that lost its job
    (cancelled, reclaimed, cleaned) cannot finish it. A job cancelled while this run was
    open waited for the run to close: it closes now, its outcome dropped, and the job
    (retried meanwhile) may start again."""
    job = get_job(tx, job_id)
    if job is None or job.lease is None or job.lease.token != token:
        return None
    if open_run(job):
        close_run(tx, job, now)
        return None
    return job


def close_run(tx: Tx, job: Job, now: float) -> Job:
    """The run a job kept open (it was cancelled while it ran) is over: drop its lease; a
    job retried meanwhile becomes ready (or waits, or is blocked)."""
    return transition(tx, job, job.evolve(lease=None), now)


def settle(tx: Tx, s: Settle, now: float) -> Job | None:
    """Record what an attempt came to; the job as it now is, None if the lease was lost."""
    from ollama_cli.store.records import SettleKind

    if s.kind is SettleKind.COMPLETE:
        return complete(tx, s.job_id, s.token, s.result or {}, now, host=s.host, policy=s.cache, reuse=s.reuse)
    if s.kind is SettleKind.FAIL:
        assert s.error is not None, s
        return fail_attempt(tx, s.job_id, s.token, s.error, now, retry_after=s.retry_after, host=s.host)
    if s.kind is SettleKind.FALLBACK:
        assert s.error is not None, s
        return fall_back(tx, s.job_id, s.token, s.error, now, host=s.host)
    return release(tx, s.job_id, s.token, now)


def complete(tx: Tx, job_id: int, token: str, result: dict[str, Any], now: float, *, host: str | None = None,
             policy: CacheWrite | None = None, reuse: CacheReuse | None = None) -> Job | None:
    """Store the result and mark the job completed; None if the lease was lost. The answer
    enters the cache as `policy` says, unless it came from the semantic cache (`reuse`):
    then that entry's hit is counted instead."""
    job = _running_under(tx, job_id, token, now)
    if job is None:
        return None
    tx.put("results", u64(job_id), pack(result))
    hit = None
    if reuse is not None:
        cache.hit(tx, reuse.key, now, semantic=True)
        hit = ("semantic", reuse.source, reuse.similarity)
    elif job.cache_key is not None:
        from ollama_cli.cache.entries import store

        store(tx, job.cache_key, result, model=job.model, job_type=job.type.value, source=job.id, now=now,
                    policy=policy)
    done = job.evolve(status=COMPLETED, finished_at=now, lease=None, error=None, host=host or job.host,
                      cached=hit is not None, cache_hit=hit)
    return transition(tx, job, done, now, stats=result_stats(result))


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
    job = _running_under(tx, job_id, token, now)
    if job is None:
        return None
    host = host or job.host
    if retry_after is not None and job.attempts < job.max_attempts:
        again = job.evolve(status=PENDING, lease=None, error=error, host=host,
                           retry_at=now + retry_after)
    else:
        again = finished(job.evolve(host=host), FAILED, now, error.type, error.message)
    return transition(tx, job, again, now)


def fall_back(tx: Tx, job_id: int, token: str, error: JobError, now: float, *, host: str | None = None) -> Job | None:
    """The job failed for good on its model: it starts again on its next fallback model (it
    fails, as `fail_attempt` would fail it, if none is left). None if the lease was lost."""
    job = _running_under(tx, job_id, token, now)
    if job is None:
        return None
    return transition(tx, job, _next_model_or_failed(tx, job.evolve(host=host or job.host), error, now), now)


def _next_model_or_failed(tx: Tx, job: Job, error: JobError, now: float) -> Job:
    failed = finished(job, FAILED, now, error.type, error.message)
    if not job.fallbacks:
        return failed
    from ollama_cli.queue import stats  # not on the path of a submit

    # Its life on this model ended in failure: counted so, here, or the model's success rate
    # would never see it (the job itself is counted once more where it finally ends).
    stats.job_finished(tx, failed, None)
    return job.on_next_model(error, cache.key_on(job.fallbacks[0], job, get_request(tx, job.id)))


def release(tx: Tx, job_id: int, token: str, now: float) -> Job | None:
    """Hand a running job back as pending without counting the attempt (shutdown, or
    no backend reachable); None if the lease was lost."""
    job = _running_under(tx, job_id, token, now)
    if job is None:
        return None
    back = job.evolve(status=PENDING, lease=None, attempts=max(0, job.attempts - 1))
    return transition(tx, job, back, now)


def reclaim(tx: Tx, dead_owners: set[str], now: float) -> list[Job]:
    """Running jobs whose daemon is gone go back to pending (the attempt counts), or
    fail as `abandoned` once they have used up their attempts; the runs such a daemon
    kept open for jobs cancelled meanwhile close. Returns the jobs taken back."""
    out = []
    for job in running(tx):
        if job.lease is None or job.lease.owner not in dead_owners:
            continue
        with blame(job.id):
            if job.attempts >= job.max_attempts:
                new = _next_model_or_failed(tx, job, JobError(
                    ErrorType.ABANDONED, f"its daemon died during each of {job.attempts} attempts"), now)
            else:
                new = job.evolve(status=PENDING, lease=None,
                                 error=JobError(ErrorType.ABANDONED, "its daemon died"))
            out.append(transition(tx, job, new, now))
    for job in open_runs(tx):
        if job.lease is not None and job.lease.owner in dead_owners:
            with blame(job.id):
                close_run(tx, job, now)
    return out


def promote_due(tx: Tx, now: float) -> int:
    """Move waiting jobs whose time has come to ready (or blocked)."""
    limit = u64(int(now * 1000) + 1)
    due = []
    for key, _ in tx.scan("waiting"):
        if key[:8] >= limit:
            break
        due.append(key)
    for key in due:
        job_id = read_u64(key, 8)
        try:
            job = get_job(tx, job_id)
        except CorruptRecord:  # as at the head of the queue: out of the index, left for `status`
            tx.delete("waiting", key)
            continue
        if job is not None:
            with blame(job_id):
                transition(tx, job, job, now)
    return len(due)


# ------------------------------------------------------------------- user operations


def cancel(tx: Tx, job_id: int, now: float) -> Job | None:
    """Cancel a pending or running job. Returns the job as it now is, or None if there is
    no such job. A running job keeps its lease as a run still open, until its daemon (which
    sees the job is no longer its own and closes the stream) settles it."""
    job = get_job(tx, job_id)
    if job is None or job.status.finished:
        return job
    new = finished(job, CANCELLED, now, ErrorType.CANCELLED, "cancelled by the user")
    return transition(tx, job, new.evolve(lease=job.lease), now)


def quarantine(tx: Tx, job_id: int, reason: str, now: float) -> Job | None:
    """A job whose own step raised (`faults.py`): out of every index, and failed
    (`invalid_response`, saying why) with its dependents; a record that cannot be read is left
    for `status` to report, and a completed job keeps its result. The job as it now is (None:
    unreadable)."""
    key = u64(job_id)
    try:
        job = get_job(tx, job_id)
    except CorruptRecord:
        job = None
    for status in JobStatus:
        if tx.delete("status", status.code + key):
            tx.add(COUNT[status], -1)
    _unready(tx, job_id, job)
    for table in ("blocked", "open_runs"):
        tx.delete(table, key)
    if job is None:
        return None
    hold = hold_until(job)
    if hold is not None:
        tx.delete("waiting", waiting_key(hold, job_id))
    before = job  # out of every index above: given as `old`, so that a finished job is not counted twice
    if job.status is not COMPLETED:
        job = finished(job, FAILED, now, ErrorType.INVALID_RESPONSE, f"quarantined: {reason}")
    return transition(tx, before, job, now)


def set_paused(tx: Tx, paused: bool) -> None:
    tx.put("meta", b"paused", b"1" if paused else b"0")


def retry(tx: Tx, job_id: int, now: float) -> Job | None:
    """Queue a failed or cancelled job again, its attempts starting over. Returns the job
    as it now is (unchanged if it was not failed or cancelled), or None if unknown. A job
    whose last run is still open keeps its lease: pending, it starts once that run closes."""
    job = get_job(tx, job_id)
    if job is None or job.status not in (FAILED, CANCELLED):
        return job
    again = job.evolve(status=PENDING, attempts=0, error=None, started_at=None, finished_at=None,
                       retry_at=None, host=None)
    return transition(tx, job, again, now)  # a failed dependency may have failed it again at once
