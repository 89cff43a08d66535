"""What the daemon does, as typed records, and the bus that hands them to whoever listens:
the log (`logs.py`) and the metrics (`metrics.py`) now; hooks, statistics and the live view next.

The rules:
- An event is published only once the store commit that made it true has returned, never
  from inside a write function (which may run twice, or abort: then nothing happened).
  Backend and model events come from HTTP answers and touch no transaction.
- Subscribers run on the daemon's event loop, one after the other, in the order they
  subscribed: they must be quick, and hand slow work (a hook's process, an HTTP call) to a
  task or a thread of their own.
- A subscriber's exception is logged and goes no further: listening never stops the daemon.

Events are seen by the daemon that publishes them, in memory: a job cancelled while pending
never reaches a daemon, and what a daemon had not yet published dies with it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Union

from ollama_cli.jobs import Job, JobError, JobStatus

log = logging.getLogger("ollama_q.daemon")


@dataclass(frozen=True)
class BackendFound:
    """What the daemon's first look at a backend (its model listing) found."""

    backend: str  # its label
    up: bool  # False: unreachable, or no answer within the daemon's start-up look
    models: int | None = None  # how many models it lists; None when it did not say


@dataclass(frozen=True)
class DaemonStarted:
    """Once each backend has answered its first look, or failed it, or was given the time
    (a few seconds) to: `found` says what the look found, in the order of `backends`."""

    daemon_id: str
    backends: tuple[str, ...]  # labels
    concurrency: int  # per backend
    found: tuple[BackendFound, ...] = ()


@dataclass(frozen=True)
class DaemonStopping:
    """A SIGTERM, SIGINT or SIGHUP: the first lets running jobs finish within `grace`; a second
    (`now`) hands them back at once."""

    signal: str
    now: bool
    grace: float
    running: int


@dataclass(frozen=True)
class DaemonDrained:
    """With --drain: nothing is pending or running, the daemon exits."""


@dataclass(frozen=True)
class JobStarted:
    """One request sent: one job, or several embed jobs coalesced into it. Each job is its
    record as claimed (`attempts` counts this attempt)."""

    jobs: tuple[Job, ...]
    backend: str


@dataclass(frozen=True)
class JobFinished:
    """A job ended: completed or failed by this daemon's commit, or cancelled (by a user)
    while this daemon ran it, which closes its stream. `job` is the record as claimed."""

    job: Job
    status: JobStatus  # COMPLETED, FAILED or CANCELLED
    backend: str
    took: float | None = None  # seconds of the attempt, when it completed
    error: JobError | None = None  # when it failed
    cache: str | None = None  # "semantic": answered from the semantic cache, not by the backend
    stats: Mapping[str, int] | None = None  # the answer's figures (tokens, load time), when it completed


@dataclass(frozen=True)
class JobRetrying:
    """An attempt failed and the job waits `delay` seconds for the next."""

    job: Job  # as claimed: `attempts` is the attempt that failed
    error: JobError
    delay: float
    backend: str


@dataclass(frozen=True)
class JobFellBack:
    """The job failed for good on its model (missing, or out of attempts) and starts again,
    attempts starting over, on `model`, the next of its fallbacks (`submit --fallback`)."""

    job: Job  # as claimed: the model it left
    error: JobError
    model: str
    backend: str


@dataclass(frozen=True)
class ResultDropped:
    """An answer came for a job that was no longer this daemon's (cancelled, or taken
    back, before the answer was committed): nothing of it was recorded."""

    job: Job
    backend: str


@dataclass(frozen=True)
class JobReclaimed:
    """A job whose daemon died, taken back: pending again, or failed `abandoned` when its
    daemon died during each of its attempts. `job` is the record after the change."""

    job: Job

    @property
    def abandoned(self) -> bool:
        return self.job.status is JobStatus.FAILED

    @property
    def fell_back(self) -> bool:
        """Out of attempts, it starts again on its next fallback model: a job taken back keeps
        the attempts it made (at least this one), a job on its next model starts over."""
        return self.job.status is JobStatus.PENDING and self.job.attempts == 0


@dataclass(frozen=True)
class JobsCleaned:
    """With --keep-finished: `count` finished jobs older than `older_than` seconds deleted."""

    count: int
    older_than: float


@dataclass(frozen=True)
class BackendDown:
    backend: str
    reason: str


@dataclass(frozen=True)
class BackendUp:
    backend: str


@dataclass(frozen=True)
class BackendResting:
    """Attempts failed `failures` times in a row: no new work for `seconds`, as long as
    the server asked (Retry-After) when `asked`."""

    backend: str
    failures: int
    seconds: float
    asked: bool = False


@dataclass(frozen=True)
class ModelLoaded:
    """The backend's list of models in memory (/api/ps) newly names `model` (its full name)."""

    backend: str
    model: str


Event = Union[DaemonStarted, DaemonStopping, DaemonDrained, JobStarted, JobFinished, JobRetrying, JobFellBack,
              ResultDropped, JobReclaimed, JobsCleaned, BackendDown, BackendUp, BackendResting, ModelLoaded]
Subscriber = Callable[[Event], None]


class Bus:
    """Hands each event to every subscriber, synchronously (see the rules above)."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber %s failed on %r", getattr(subscriber, "__qualname__", subscriber), event)
