"""Job rows and `Job` records: the columns in one order, and the one decoder of a row.

A job's `state` is its status, with pending split four ways (ready, waiting, blocked,
open_run) as LMDB splits it into tables; `priority` is the rank (0 = urgent)."""

from __future__ import annotations

from typing import Any

from ollama_cli.codec import pack, route_of, unpack
from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import ErrorType, Job, JobError, JobStatus, JobType, Lease, Priority, full_name

COLUMNS = ("id, state, priority, model, type, created_at, name, batch, custom_id, attempts, max_attempts, "
           "run_at, retry_at, after, host, started_at, finished_at, error_type, error_message, cached, "
           "timeout, keep_alive, cache_key, lease_owner, lease_token, category, feedback_score, feedback_reason, "
           "feedback_category, fallbacks, route, semantic, cache_kind, cache_source, cache_similarity")

PENDING_STATES = ("ready", "waiting", "blocked", "open_run")
STATUS_OF = {**{s: JobStatus.PENDING for s in PENDING_STATES},
             **{s.value: s for s in JobStatus if s is not JobStatus.PENDING}}
STATES_OF = {s: PENDING_STATES if s is JobStatus.PENDING else (s.value,) for s in JobStatus}
BY_RANK = {p.rank: p for p in Priority}
_TYPES = {t.value: t for t in JobType}
_ERRORS = {e.value: e for e in ErrorType}
_CACHE_KINDS = {"exact": "exact", "semantic": "semantic"}


def to_job(row: tuple[Any, ...]) -> Job:
    """The job in a row selected as COLUMNS; CorruptRecord for a value this version does
    not know (a newer version's error type, say)."""
    (job_id, state, rank, model, kind, created_at, name, batch, custom_id, attempts, max_attempts, run_at,
     retry_at, after, host, started_at, finished_at, error_type, error_message, cached, timeout, keep_alive,
     cache_key, lease_owner, lease_token, category, feedback_score, feedback_reason, feedback_category, fallbacks,
     route, semantic, cache_kind, cache_source, cache_similarity) = row
    try:
        return Job(
            id=job_id, model=model, type=_TYPES[kind], priority=BY_RANK[rank], status=STATUS_OF[state],
            created_at=created_at, name=name, batch=batch, custom_id=custom_id, attempts=attempts,
            max_attempts=max_attempts, run_at=run_at, after=tuple(after or ()), host=host,
            started_at=started_at, finished_at=finished_at,
            error=JobError(_ERRORS[error_type], error_message or "") if error_type else None,
            cached=cached, timeout=timeout, keep_alive=keep_alive,
            cache_key=bytes(cache_key) if cache_key is not None else None,
            lease=Lease(lease_owner, lease_token) if lease_token else None, retry_at=retry_at,
            category=category,
            feedback=None if feedback_score is None else (feedback_score, feedback_reason, feedback_category),
            fallbacks=tuple(fallbacks or ()), route=_route(job_id, route),
            semantic=semantic, cache_hit=(_CACHE_KINDS[cache_kind], cache_source, cache_similarity)
            if cache_kind else None,
        )
    except KeyError as exc:
        raise CorruptRecord(job_id, f"unknown value {exc}") from None


def _route(job_id: int, stored: Any) -> tuple[str, float | None, int] | None:
    """How `submit auto` chose the model, stored as msgpack as LMDB stores it."""
    try:
        return None if stored is None else route_of(unpack(job_id, bytes(stored)))
    except ValueError as exc:
        raise CorruptRecord(job_id, str(exc)) from None


def values(job: Job, state: str, available_at: float | None) -> tuple[Any, ...]:
    """The row of a job, in COLUMNS order, then available_at and model_key (the model's
    canonical name, `full_name`, that the scheduler asks by)."""
    return (
        job.id, state, job.priority.rank, job.model, job.type.value, job.created_at, job.name, job.batch,
        job.custom_id, job.attempts, job.max_attempts, job.run_at, job.retry_at, list(job.after), job.host,
        job.started_at, job.finished_at, job.error.type.value if job.error else None,
        job.error.message if job.error else None, job.cached, job.timeout, job.keep_alive, job.cache_key,
        job.lease.owner if job.lease else None, job.lease.token if job.lease else None, job.category,
        *(job.feedback if job.feedback is not None else (None, None, None)), list(job.fallbacks),
        pack(list(job.route)) if job.route else None, job.semantic,
        *(job.cache_hit if job.cache_hit else (None, None, None)), available_at,
        full_name(job.model),
    )


INSERT = (f"INSERT INTO jobs ({COLUMNS}, available_at, model_key) VALUES "
          f"({', '.join(['%s'] * (COLUMNS.count(',') + 3))})")
UPDATE = (f"UPDATE jobs SET ({COLUMNS}, available_at, model_key) = "
          f"({', '.join(['%s'] * (COLUMNS.count(',') + 3))}) WHERE id = %s")
