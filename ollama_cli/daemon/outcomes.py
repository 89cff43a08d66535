"""What an attempt came to, for each of its jobs: the daemon gathers outcomes as requests
finish and settles them all in its next transaction (`Engine.settle_and_claim`)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ollama_cli.daemon import events
from ollama_cli.jobs import Job, JobError, JobStatus
from ollama_cli.store.records import CacheReuse, CacheWrite, Claim, Settle, SettleKind

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
    kind: SettleKind
    result: dict | None = None
    error: JobError | None = None
    retry_after: float | None = None
    host: str | None = None
    took: float = 0.0
    cache: CacheWrite | None = None  # COMPLETE: the semantic scope and vector to store the answer with
    reuse: CacheReuse | None = None  # COMPLETE: answered from this semantic cache entry

    def settle(self, policy: CacheWrite | None = None) -> Settle:
        """The record the store settles, under the claim's lease; a completed answer enters
        the cache under `policy` (the daemon's TTL and bound) unless it has its own."""
        return Settle(self.kind, self.claim.job.id, self.claim.token, result=self.result,
                      error=self.error, retry_after=self.retry_after, host=self.host,
                      cache=self.cache or policy, reuse=self.reuse)


def event(o: Outcome, value: object) -> events.Event | None:
    """What the recorded outcome amounts to, once committed; `value` is what settling it
    gave (the job, or None if the lease was lost). A release is no news: the job waits
    again as it was."""
    job, backend = o.claim.job, o.host or ""
    if o.kind is SettleKind.COMPLETE:
        if value:
            return events.JobFinished(job, JobStatus.COMPLETED, backend, took=o.took,
                                      cache="semantic" if o.reuse else None,
                                      stats=None if o.reuse else (o.result or {}).get("stats"))
        return events.ResultDropped(job, backend)
    if o.kind is SettleKind.FALLBACK and isinstance(value, Job) and o.error is not None \
            and value.status is JobStatus.PENDING:
        return events.JobFellBack(job, o.error, value.model, backend)
    if o.kind in (SettleKind.FAIL, SettleKind.FALLBACK) and isinstance(value, Job) and o.error is not None:
        if value.status is JobStatus.PENDING:
            return events.JobRetrying(job, o.error, o.retry_after or 0.0, backend)
        return events.JobFinished(job, JobStatus.FAILED, backend, error=o.error)
    return None

