"""What an attempt came to, for each of its jobs, and how that is recorded: the daemon
gathers outcomes as requests finish and applies them all in its next transaction."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ollama_cli import queue
from ollama_cli.daemon import events
from ollama_cli.jobs import Job, JobError, JobStatus
from ollama_cli.queue import Claim
from ollama_cli.store.lmdb import Tx

BACKOFF_CAP = 60.0


def retry_delay(attempt: int, base: float, rng: random.Random) -> float:
    """Exponential backoff with jitter over the upper half: with base 1 s, attempt 1 waits
    0.5-1 s, 2 waits 1-2 s, 3 waits 2-4 s... capped at BACKOFF_CAP. The jitter keeps
    jobs that failed together from coming back together."""
    ceiling = min(BACKOFF_CAP, base * 2 ** max(0, attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)


@dataclass
class Outcome:
    """What an attempt came to, for one job; applied in the loop's next transaction so
    that one commit serves every job that finished since the last tick."""

    claim: Claim
    action: str  # "complete", "fail" or "release"
    result: dict | None = None
    error: JobError | None = None
    retry_after: float | None = None
    host: str | None = None
    took: float = 0.0


def apply(tx: Tx, o: Outcome, now: float) -> object:
    """Record the outcome; what queue.complete, fail_attempt or release returned."""
    job_id, lease = o.claim.job.id, token(o.claim)
    if o.action == "complete":
        return queue.complete(tx, job_id, lease, o.result or {}, now, host=o.host)
    if o.action == "fail":
        assert o.error is not None
        return queue.fail_attempt(tx, job_id, lease, o.error, now, retry_after=o.retry_after, host=o.host)
    return queue.release(tx, job_id, lease, now)


def event(o: Outcome, value: object) -> events.Event | None:
    """What the recorded outcome amounts to, once committed; `value` is what `apply`
    returned. A release is no news: the job waits again as it was."""
    job, backend = o.claim.job, o.host or ""
    if o.action == "complete":
        if value:
            return events.JobFinished(job, JobStatus.COMPLETED, backend, took=o.took)
        return events.ResultDropped(job, backend)
    if o.action == "fail" and isinstance(value, Job) and o.error is not None:
        if value.status is JobStatus.PENDING:
            return events.JobRetrying(job, o.error, o.retry_after or 0.0, backend)
        return events.JobFinished(job, JobStatus.FAILED, backend, error=o.error)
    return None


def token(claim: Claim) -> str:
    """The lease token the claim was taken under."""
    return claim.job.lease.token if claim.job.lease else ""
