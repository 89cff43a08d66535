"""What an attempt came to, for each of its jobs: the daemon gathers outcomes as requests
finish and settles them all in its next transaction (`Engine.settle_and_claim`)."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from ollama_cli.jobs import Job, JobError, JobStatus
from ollama_cli.store.records import Claim, Settle, SettleKind

_log = logging.getLogger("ollama_q.daemon")

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
    action: str  # a SettleKind value: "complete", "fail" or "release"
    result: dict | None = None
    error: JobError | None = None
    retry_after: float | None = None
    host: str | None = None
    took: float = 0.0

    def settle(self) -> Settle:
        """The record the store settles (an unknown action raises here, never a silent release)."""
        return Settle(SettleKind(self.action), self.claim.job.id, token(self.claim), result=self.result,
                      error=self.error, retry_after=self.retry_after, host=self.host)


def log(o: Outcome, value: object) -> None:
    """One line for the daemon's log; `value` is what settling it gave (the job, or None)."""
    job = o.claim.job
    if o.action == "complete":
        if value:
            _log.info("job %d completed in %.1fs", job.id, o.took)
        else:
            _log.info("job %d finished after it was cancelled or taken back: result dropped", job.id)
    elif o.action == "fail" and isinstance(value, Job) and o.error is not None:
        if value.status is JobStatus.PENDING:
            _log.warning("job %d attempt %d failed (%s: %s); retrying in %.1fs", job.id, job.attempts,
                         o.error.type.value, o.error.message, o.retry_after or 0.0)
        else:
            _log.warning("job %d failed (%s: %s)", job.id, o.error.type.value, o.error.message)


def token(claim: Claim) -> str:
    """The lease token the claim was taken under."""
    return claim.job.lease.token if claim.job.lease else ""
