"""The job record: its enums, the `Job` NamedTuple, `JobSpec` (a job as it is asked for), and
the contract's JSON forms of a job and of its result. How records are stored is `codec.py`'s business.

Records are named tuples: immutable like frozen dataclasses, but ten times cheaper to
define, which every short-lived command pays at start-up. collections.namedtuple, not
typing.NamedTuple, which checks each field's type as it defines the class: about twice the cost
(Job alone 0.7M instructions a run more), so the types are in comments."""

from collections import namedtuple
from enum import Enum
from typing import Any


class JobType(str, Enum):
    GENERATE = "generate"
    CHAT = "chat"
    EMBED = "embed"


class Priority(str, Enum):
    URGENT = "urgent"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for the most urgent: ascending keys give the order in which jobs start."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {p: i for i, p in enumerate(Priority)}


class JobStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)

    @property
    def code(self) -> bytes:
        """One byte for index keys."""
        return _STATUS_CODE[self]


_STATUS_CODE = {s: bytes([i]) for i, s in enumerate(JobStatus)}


class ErrorType(str, Enum):
    MODEL_NOT_FOUND = "model_not_found"
    BAD_REQUEST = "bad_request"
    BACKEND_ERROR = "backend_error"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    DEPENDENCY_FAILED = "dependency_failed"
    ABANDONED = "abandoned"
    INVALID_RESPONSE = "invalid_response"


class JobError(namedtuple("JobError", ("type", "message"))):  # ErrorType, str
    __slots__ = ()

    def to_json(self) -> dict[str, str]:
        return {"type": self.type.value, "message": self.message}


# Who runs a job. `owner` (str) names a daemon (its liveness lock); `token` (str) fences a late
# finish from a daemon that lost the job.
Lease = namedtuple("Lease", ("owner", "token"))

# A job's fields with their defaults, after the six it always has.
_JOB_DEFAULTS: dict[str, Any] = {
    "name": None,  # str | None
    "batch": None,  # str | None
    "custom_id": None,  # str | None
    "attempts": 0,
    "max_attempts": 1,
    "run_at": None,  # float | None
    "after": (),  # tuple[int, ...]
    "host": None,  # str | None
    "started_at": None,  # float | None
    "finished_at": None,  # float | None
    "error": None,  # JobError | None
    "cached": False,
    # The JSON form's "cache": (kind "exact" or "semantic", the job whose answer was reused or
    # None once cleaned, similarity: 1.0 for exact). A tuple, not a class: submit and status
    # would pay to define one.
    "cache_hit": None,  # tuple[str, int | None, float] | None
    "category": None,  # str | None: a task category (`submit --category`, `feedback --category`)
    "feedback": None,  # tuple[float, str | None, str | None] | None: (score, reason, category)
    "fallbacks": (),  # tuple[str, ...]: models to start again on, in order (`submit --fallback`)
    "route": None,  # tuple[str, float | None, int] | None: how `submit auto` chose the model: (rule, bound, rated)
    # Not in the JSON form: how the daemon runs it.
    "timeout": None,  # float | None
    "keep_alive": None,  # float | None
    "cache_key": None,  # bytes | None
    "lease": None,  # Lease | None
    "retry_at": None,  # float | None
    "semantic": False,  # submitted with --semantic-cache
}


class Job(namedtuple("Job", ("id",  # int
                             "model",  # str
                             "type",  # JobType
                             "priority",  # Priority
                             "status",  # JobStatus
                             "created_at",  # float
                             *_JOB_DEFAULTS), defaults=_JOB_DEFAULTS.values())):
    """A job as stored: the six fields it always has, then those of `_JOB_DEFAULTS`, in order."""

    __slots__ = ()

    def evolve(self, **changes: Any) -> "Job":
        return self._replace(**changes)

    def on_next_model(self, error: JobError, cache_key: bytes | None) -> "Job":
        """The job started again, pending, on the first of its fallback models, its attempts
        starting over; `error` says why it left the model before, `cache_key` is its request's
        key on the next one (None: it uses no cache). Its `route` went with the model it left."""
        return self.evolve(model=self.fallbacks[0], fallbacks=self.fallbacks[1:], status=JobStatus.PENDING,
                           attempts=0, error=error, lease=None, retry_at=None, started_at=None, host=None,
                           cache_key=cache_key, route=None)

    def to_json(self, position: int | None = None) -> dict[str, Any]:
        """The contract's JSON form of a job."""
        from ollama_cli.timefmt import format_time

        return {
            "id": self.id,
            "name": self.name,
            "batch": self.batch,
            "custom_id": self.custom_id,
            "model": self.model,
            "type": self.type.value,
            "priority": self.priority.value,
            "status": self.status.value,
            "position": position,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "run_at": format_time(self.run_at),
            "after": list(self.after),
            "host": self.host,
            "created_at": format_time(self.created_at),
            "started_at": format_time(self.started_at),
            "finished_at": format_time(self.finished_at),
            "error": self.error.to_json() if self.error else None,
            "cached": self.cached,
            "cache": cache_json(self.cache_hit),
            "category": self.category,
            "feedback": None if self.feedback is None else
            dict(zip(("score", "reason", "category"), self.feedback)),
            "fallbacks": list(self.fallbacks),
            "route": dict(zip(("rule", "lower_bound", "rated"), self.route)) if self.route else None,
        }


# A job as it is asked for: everything `submit` needs, validated by the caller (the store
# takes it: `store/base.py`). Its fields after the first three (model: str, type: JobType,
# request: dict[str, Any]), with their defaults:
_SPEC_DEFAULTS: dict[str, Any] = {
    "priority": Priority.MEDIUM,
    "name": None,  # str | None
    "batch": None,  # str | None
    "custom_id": None,  # str | None
    "max_attempts": 4,
    "timeout": None,  # float | None
    "run_at": None,  # float | None
    "after": (),  # tuple[int, ...]
    "keep_alive": None,  # float | None
    "use_cache": True,
    "semantic_cache": False,  # also look for a semantically similar answer (the daemon does)
    "category": None,  # str | None
    "fallbacks": (),  # tuple[str, ...]
    "route": None,  # tuple[str, float | None, int] | None
}
JobSpec = namedtuple("JobSpec", ("model", "type", "request", *_SPEC_DEFAULTS), defaults=_SPEC_DEFAULTS.values())


def cache_json(hit: tuple[str, int | None, float] | None) -> dict[str, Any] | None:
    """A job's `cache_hit` in the contract's JSON form."""
    return None if hit is None else {"kind": hit[0], "source": hit[1], "similarity": hit[2]}


def full_name(model: str) -> str:
    """`llama3.2` and `llama3.2:latest` are one model; names compare case-insensitively."""
    name = model.lower()
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


# Ollama's final-chunk figures, as `stats` holds them: token counts and nanoseconds.
STAT_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


def result_stats(result: dict[str, Any]) -> dict[str, int]:
    """A result's `stats`, keeping only whole numbers: daemons before the replies were
    checked stored what the backend sent, `"eval_count": "abc"` included."""
    stats = result.get("stats")
    if not isinstance(stats, dict):
        return {}
    return {k: v for k, v in stats.items() if k in STAT_FIELDS and type(v) is int and v >= 0}


def result_to_json(job: Job, result: dict[str, Any] | None) -> dict[str, Any]:
    """The contract's `result --json` object. Without a result (the job did not complete)
    its answer is null, and `status` and `error` say why."""
    out: dict[str, Any] = {"id": job.id, "status": job.status.value, "model": job.model,
                           "type": job.type.value}
    answer = {JobType.CHAT: "message", JobType.EMBED: "embeddings"}.get(job.type, "response")
    out[answer] = None if result is None else result.get(answer)
    out["stats"] = {} if result is None else result_stats(result)
    out["cached"] = job.cached
    out["cache"] = cache_json(job.cache_hit)
    out["error"] = job.error.to_json() if job.error else None
    return out


def result_text(job: Job, result: dict[str, Any]) -> str:
    """What `result` prints for people: the text, or the vectors as JSON."""
    if job.type is JobType.EMBED:
        import json

        return json.dumps(result.get("embeddings"))
    if job.type is JobType.CHAT:
        message = result.get("message")
        text = message.get("content") if isinstance(message, dict) else None
    else:
        text = result.get("response")
    return text if isinstance(text, str) else ""
