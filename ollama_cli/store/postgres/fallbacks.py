"""Fallback models (`submit --fallback`) on PostgreSQL: a job that failed for good on its
model starts again on the next one, in the transaction that records the failure (LMDB's
reference: `queue.transitions.fall_back`)."""

from __future__ import annotations

from ollama_cli import cache
from ollama_cli.jobs import Job, JobError
from ollama_cli.store.postgres import stats as statistics
from ollama_cli.store.postgres.reads import get_request
from ollama_cli.store.postgres.states import FAILED, finished
from ollama_cli.store.postgres.transactions import Tx


def next_model_or_failed(tx: Tx, job: Job, error: JobError, now: float) -> Job:
    """The job pending on its next fallback model, attempts starting over, its cache key made
    for that model, its life on the model it leaves counted in the statistics as a failure
    with `error`; failed with `error` when it has none left. To be saved by the caller."""
    failed = finished(job, FAILED, now, error.type, error.message)
    if not job.fallbacks:
        return failed
    # Its life on this model ended in failure: counted so, in this transaction (as LMDB does).
    statistics.apply(tx, None, failed, None)
    request = get_request(tx, job.id) if job.cache_key is not None else {}
    return job.on_next_model(error, cache.key_on(job.fallbacks[0], job, request))
