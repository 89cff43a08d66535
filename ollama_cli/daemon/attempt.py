"""One request to a backend and what it came to: the request in flight (`InFlight`), the
attempt bounded in time, the policy that turns an error into an outcome per job, and embed
jobs coalesced into one request (merged before, split after).

An attempt touches no transaction: what it came to is gathered as `Outcome`s, which the
daemon's next tick settles (`tick.py`)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ollama_cli.clients.base import BackendError, OnText
from ollama_cli.daemon.outcomes import Outcome, retry_delay
from ollama_cli.daemon.pool import Pool, Slot
from ollama_cli.jobs import ErrorType, Job, JobError
from ollama_cli.store.records import CacheWrite, Claim, SettleKind

log = logging.getLogger("ollama_q.daemon")

# The bound of an attempt whose job has no --timeout: a backend that keeps a stream open
# forever (a byte now and then, so no read timeout fires) must not hold a slot forever.
DEFAULT_ATTEMPT_TIMEOUT = 600.0


class StopReason(str, Enum):
    """Why the daemon itself stopped a request before its answer came."""

    LOST = "lost"  # no job of it is this daemon's any more (cancelled, cleaned): the stream closes
    SHUTDOWN = "shutdown"  # the daemon stops: its jobs are handed back


@dataclass(eq=False)
class InFlight:
    """One request in flight: one job, or several coalesced embeds, each claimed under its own
    lease (the daemon keys its requests by lease token, never by job id: a job may be claimed
    again, and the run before must stay in reach until it closes)."""

    claims: list[Claim]
    slot: Slot  # the backend it went to
    task: asyncio.Task[None] | None = None
    stop_reason: StopReason | None = None
    cache: CacheWrite | None = None  # the semantic scope and vector its answer is stored with
    tokens: int = 0  # pieces of text streamed so far (one token each, as Ollama streams)
    on_text: OnText | None = None  # also gets each piece, to keep for `result --follow` (`partial.py`)

    def streamed(self, piece: str) -> None:
        self.tokens += 1
        if self.on_text is not None:
            self.on_text(piece)

    @property
    def model(self) -> str:
        return self.claims[0].job.model

    def stop(self, reason: StopReason) -> bool:
        """Cancel the request (its stream closes) unless it was never sent or is stopping
        already; whether it was stopped now."""
        if self.task is None or self.stop_reason is not None:
            return False
        self.stop_reason = reason
        self.task.cancel()
        return True


async def attempt(run: InFlight, pool: Pool, *, clock: Callable[[], float], retry_backoff: float,
                  rng: random.Random,
                  cached: Callable[[InFlight], Awaitable[list[Outcome] | None]] | None = None) -> list[Outcome]:
    """Send the request and read its answer, within the job's timeout; what it came to, one
    outcome per job. `cached` may answer first (the semantic cache). Never raises: a request
    stopped by the daemon is handed back (RELEASE, which also closes a run whose job was
    cancelled meanwhile), and an unexpected error is a transient failure of the attempt."""
    first, slot = run.claims[0].job, run.slot
    started = time.monotonic()
    limit = first.timeout or DEFAULT_ATTEMPT_TIMEOUT
    try:
        try:
            if cached is not None and (answered := await cached(run)) is not None:
                return answered
            result = await asyncio.wait_for(slot.client.run(first, _merged_request(run.claims), run.streamed), limit)
            results = _split(run.claims, result)
        except asyncio.TimeoutError:
            bound = "" if first.timeout else " (the bound of an attempt without --timeout)"
            raise BackendError(ErrorType.TIMEOUT, f"no answer within {limit:g}s{bound}", transient=True) from None
    except asyncio.CancelledError:
        return [Outcome(c, SettleKind.RELEASE) for c in run.claims]
    except BackendError as err:
        return failure(run, err, pool, clock(), retry_backoff, rng)
    except Exception as exc:  # a bug must not kill the daemon or leave the job running
        log.exception("job %d: unexpected error", first.id)
        return failure(run, BackendError(ErrorType.BACKEND_ERROR, f"{type(exc).__name__}: {exc}", transient=True),
                       pool, clock(), retry_backoff, rng)
    pool.succeeded(slot)
    took = time.monotonic() - started
    return [Outcome(c, SettleKind.COMPLETE, result=r, host=slot.backend.label, took=took, cache=run.cache)
            for c, r in zip(run.claims, results)]


def failure(run: InFlight, err: BackendError, pool: Pool, now: float, retry_backoff: float,
            rng: random.Random) -> list[Outcome]:
    """What a failed attempt means for its jobs and its backend."""
    slot = run.slot
    if err.kind is ErrorType.UNREACHABLE:
        # Not the jobs' fault: they wait, keeping their attempts, until the backend is back.
        pool.mark_down(slot, err.message, now)
        return [Outcome(c, SettleKind.RELEASE) for c in run.claims]
    pool.mark_up(slot)
    if err.kind is ErrorType.MODEL_NOT_FOUND and pool.elsewhere(slot, run.model):
        # A stale listing: another backend has the model, so try there at no cost.
        return [Outcome(c, SettleKind.RELEASE) for c in run.claims]
    if err.transient:
        pool.failed(slot, now, (c.job.id for c in run.claims), err.retry_after)
    error = JobError(err.kind, err.message)
    return [Outcome(c, SettleKind.FALLBACK, error=error, host=slot.backend.label) if _falls_back(c.job, err) else
            Outcome(c, SettleKind.FAIL, error=error, host=slot.backend.label,
                    retry_after=retry_delay(c.job.attempts, retry_backoff, rng) if err.transient else None)
            for c in run.claims]


def _falls_back(job: Job, err: BackendError) -> bool:
    """Whether the job leaves its model for its next fallback (`submit --fallback`): the model
    is missing, or a transient failure used its last attempt. A bad request would be as bad
    on any model, so it fails. The job as claimed holds the attempts this one counted."""
    return bool(job.fallbacks) and (err.kind is ErrorType.MODEL_NOT_FOUND
                                    or (err.transient and job.attempts >= job.max_attempts))


def embed_key(request_of: Callable[[Job], dict[str, Any]], job: Job) -> object:
    """What two embed jobs must share to go in one request: everything but the input."""
    import json

    try:
        request = request_of(job)
    except Exception:
        return ("corrupt", job.id)  # never coalesced
    return json.dumps({k: v for k, v in request.items() if k != "input"}, sort_keys=True)


def _merged_request(claims: list[Claim]) -> dict:
    if len(claims) == 1:
        return claims[0].request
    merged = dict(claims[0].request)
    merged["input"] = [text for c in claims for text in c.request["input"]]
    return merged


def _split(claims: list[Claim], result: dict) -> list[dict]:
    """Each coalesced job's own vectors, in its own input order."""
    if len(claims) == 1:
        return [result]
    vectors = result.get("embeddings") or []
    sizes = [len(c.request["input"]) for c in claims]
    if len(vectors) != sum(sizes):
        raise BackendError(ErrorType.INVALID_RESPONSE,
                           f"{len(vectors)} vectors for {sum(sizes)} inputs", transient=True)
    out, at = [], 0
    for size in sizes:
        out.append({"embeddings": vectors[at:at + size], "stats": result.get("stats") or {}})
        at += size
    return out
