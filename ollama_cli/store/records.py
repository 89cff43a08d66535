"""The records that cross the engine seam (`base.py`) besides `JobSpec` (in `jobs.py`): what the
daemon's step exchanges with the store (claims, settles, plans), what changes and batch reads
report, and daemon records.

In a module of their own so that `submit` and `status`, which need none of them, do not pay to
define them: a NamedTuple costs about 0.1 ms to define, and start-up is held to a budget. Where
they are built, they are imported inside the function."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from typing import Any, NamedTuple, Protocol

from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import Job, JobError


class Claim(NamedTuple):
    """A job the daemon now runs under a lease (`job.lease`), with its stored request."""

    job: Job
    request: dict[str, Any]

    @property
    def token(self) -> str:
        """The lease token of the claim: what its settle must name."""
        return self.job.lease.token if self.job.lease else ""

    def __repr__(self) -> str:  # never the prompt: reprs end up in logs
        return f"Claim(job={self.job.id})"


class SettleKind(str, Enum):
    COMPLETE = "complete"  # store the result; the job completed
    FAIL = "fail"  # the attempt failed: wait and go again (retry_after, attempts left) or fail
    RELEASE = "release"  # hand the job back as pending; the attempt does not count
    FALLBACK = "fallback"  # the attempt failed for good on this model: start again on the next fallback


class CacheWrite(NamedTuple):
    """How a completed answer goes into the cache: the daemon's settings, and for the semantic
    cache the request's scope (`cache.semantic.scope_of`) and its last user text's vector."""

    ttl: float | None = None  # seconds the entry answers, from its creation; None: until evicted
    max_bytes: int | None = None  # the cache's bound: least recently hit entries go first
    scope: bytes | None = None
    vector: bytes | None = None  # normalised float32, native byte order


class CacheReuse(NamedTuple):
    """A job answered from the semantic cache: the entry's key, the job it came from (None:
    cleaned), how similar the question was."""

    key: bytes
    source: int | None
    similarity: float


class SemanticMatch(NamedTuple):
    """The nearest entry of a scope at or above the threshold, and its answer."""

    reuse: CacheReuse
    result: dict[str, Any]


class Settle(NamedTuple):
    """What one attempt came to, for one job, to be recorded under the lease it ran under."""

    kind: SettleKind
    job_id: int
    token: str  # the lease token of the claim
    result: dict[str, Any] | None = None  # COMPLETE
    error: JobError | None = None  # FAIL, FALLBACK
    retry_after: float | None = None  # FAIL: transient, try again after this many seconds
    host: str | None = None  # the backend that answered (COMPLETE, FAIL, FALLBACK)
    cache: CacheWrite | None = None  # COMPLETE: how the answer enters the cache (None: no TTL, no bound)
    reuse: CacheReuse | None = None  # COMPLETE: `result` is this semantic cache entry's answer


class Placement(NamedTuple):
    """Jobs a planner chose to start together as one request on one backend."""

    backend: int  # the planner's index of the backend; the engine hands it back untouched
    host: str  # the backend's label: each claimed job records it (`status` shows it while it runs)
    jobs: tuple[Job, ...]


class Plan(NamedTuple):
    placements: Sequence[Placement]
    state: object = None  # what the planner wants back from the call whose placements were claimed


class ReadyJobs(Protocol):
    """The ready jobs as a planner sees them: iterated, in the order they start, at most the
    lookahead; asked, at any depth, each question at a cost that does not grow with the
    queue. Priority ranks are `Priority.rank`; models are canonical names (`full_name`)."""

    def __iter__(self) -> Iterator[Job]: ...

    def oldest(self, rank: int, model: str | None = None, after: int = 0) -> Job | None:
        """The ready job of this rank (and model) with the smallest id above `after`."""
        ...

    def embeds(self, rank: int, model: str, after: int, limit: int) -> Iterator[Job]:
        """Embed jobs of this rank and model with ids above `after`, oldest first, among
        the next `limit` ready jobs of that model (so that a long run of other jobs of the
        model bounds the walk)."""
        ...

    def models(self, rank: int) -> list[str]:
        """The models with ready jobs of this rank."""
        ...


# The daemon's pure planning function: the ready jobs (read lazily, as asked), and a reader
# of a candidate's stored request (it may raise CorruptRecord) -> a Plan.
Planner = Callable[[ReadyJobs, Callable[[Job], dict[str, Any]]], Plan]


class Tick(NamedTuple):
    """What `settle_and_claim` did."""

    settled: list[Job | None]  # per Settle, in order: the job as it now is; None if the lease was lost
    claimed: list[tuple[Placement, list[Claim]]]  # per placement the claims (a job lost meanwhile is left out)
    plan_state: object  # Plan.state of the plan that was claimed (None without a planner)
    quarantined: tuple[Job, ...] = ()  # jobs this step could not handle, failed as quarantined


class PartialText(NamedTuple):
    """Text a running job's run has streamed (`result --follow`). Written by the daemon as a
    piece that goes after the first `start` characters of what the run stored before; read
    back whole (`start` 0)."""

    job_id: int
    token: str  # the lease token of the run
    attempt: int  # the job's `attempts` when the run began: a new one means the text started over
    start: int
    text: str

    def __repr__(self) -> str:  # never the answer: reprs end up in logs
        return f"PartialText(job={self.job_id}, attempt={self.attempt}, start={self.start}, chars={len(self.text)})"


class Changed(NamedTuple):
    """One job of a `cancel` or `retry`."""

    id: int
    job: Job | None  # as it now is; None: no such job
    changed: bool  # False: unknown, or in a status the operation does not apply to (left as it was)


class BatchEntry(NamedTuple):
    id: int
    job: Job | None  # None: the record is gone, or corrupt (then `corrupt` says why)
    result: dict[str, Any] | None = None  # a completed job's result, when asked for
    corrupt: CorruptRecord | None = None


class DaemonInfo(NamedTuple):
    id: str
    pid: int
    hosts: list[str]
    concurrency: int
    started_at: float
    last_heartbeat: float


class BackendState(NamedTuple):
    """What a daemon knows of one of its backends, recorded with its heartbeat
    (`Engine.record_backends`) so that `top`, `info` and metrics can show it."""

    url: str  # the backend as the daemon names it (never credentials)
    daemon_id: str  # which daemon saw it
    up: bool
    installed: tuple[str, ...] | None  # canonical model names from /api/tags (or /v1/models); None when not known yet
    loaded: tuple[str, ...]  # models loaded now (/api/ps), canonical names
    slots: int  # requests it may take at once
    in_use: int  # requests in flight now
    updated_at: float  # store clock


class RunProgress(NamedTuple):
    """How far a running attempt has streamed, recorded with its daemon's heartbeat
    (`Engine.record_progress`): `top` shows tokens per second from it."""

    job_id: int
    daemon_id: str
    tokens: int  # pieces of text streamed so far (Ollama streams one token per piece)
    started_at: float  # store clock: when the attempt started
    updated_at: float  # store clock: when this was recorded

    @property
    def tokens_per_second(self) -> float | None:
        took = self.updated_at - self.started_at
        return self.tokens / took if took > 0 else None


class HookEvent(NamedTuple):
    """A finished job whose hook (`daemon --on-finish`) has not run yet: `job` is its record
    as it finished."""

    id: int  # the event's, in the order events were recorded
    job: Job
