"""Fallback models (`submit --fallback`) on PostgreSQL: a job that failed for good on its
model starts again on the next one, in the transaction that records the failure (LMDB's
reference: `queue.transitions.fall_back`)."""

from __future__ import annotations

from ollama_cli import cache
from ollama_cli.codec import unpack
from ollama_cli.jobs import Job, JobError, JobStatus
from ollama_cli.store.postgres.transactions import Tx


def next_model_or_failed(tx: Tx, job: Job, error: JobError, now: float) -> Job:
    """The job pending on its next fallback model, attempts starting over, its cache key made
    for that model; failed with `error` when it has none left. To be saved by the caller."""
    if not job.fallbacks:
        return job.evolve(status=JobStatus.FAILED, finished_at=now, lease=None, retry_at=None, error=error)
    found = tx.one("SELECT body FROM requests WHERE id = %s", (job.id,)) if job.cache_key is not None else None
    request = {} if found is None else unpack(job.id, found[0])
    return job.on_next_model(error, cache.key_on(job.fallbacks[0], job, request))
