"""The job model: enums, the `Job` record, and their msgpack form with a schema version.

Records are NamedTuples: immutable like frozen dataclasses, but ten times cheaper to
define, which every short-lived command pays at start-up.

Stored bytes are decoded in one place (`unpack`), so a corrupt record becomes a
`CorruptRecord` value the caller can report instead of a crash."""

from __future__ import annotations

from enum import Enum
from typing import Any, NamedTuple

import msgpack

from ollama_cli.errors import CorruptRecord

SCHEMA = 1


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


class JobError(NamedTuple):
    type: ErrorType
    message: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type.value, "message": self.message}


class Lease(NamedTuple):
    """Who runs a job. `owner` names a daemon (its liveness lock); `token` fences a late
    finish from a daemon that lost the job."""

    owner: str
    token: str


class Job(NamedTuple):
    id: int
    model: str
    type: JobType
    priority: Priority
    status: JobStatus
    created_at: float
    name: str | None = None
    batch: str | None = None
    custom_id: str | None = None
    attempts: int = 0
    max_attempts: int = 1
    run_at: float | None = None
    after: tuple[int, ...] = ()
    host: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: JobError | None = None
    cached: bool = False
    # Not in the JSON form: how the daemon runs it.
    timeout: float | None = None
    keep_alive: float | None = None
    cache_key: bytes | None = None
    lease: Lease | None = None
    retry_at: float | None = None

    def evolve(self, **changes: Any) -> Job:
        return self._replace(**changes)

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
        }


def full_name(model: str) -> str:
    """`llama3.2` and `llama3.2:latest` are one model; names compare case-insensitively."""
    name = model.lower()
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(key: int | bytes, data: bytes) -> Any:
    """The one decoder of stored bytes: any failure becomes CorruptRecord."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack documents that "other exceptions" can escape
        raise CorruptRecord(key, f"{type(exc).__name__}: {exc}") from None


# Fields stored only when set: a record holds what a job has, not 24 keys of which
# half are null (a third smaller, and quicker to write and read). `decode_job` reads a
# missing key as its default, so records written with every key read the same.
_OPTIONAL = ("name", "batch", "custom_id", "run_at", "host", "started_at", "finished_at", "timeout",
             "keep_alive", "cache_key", "retry_at")


def encode_job(job: Job) -> bytes:
    rec: dict[str, Any] = {
        "v": SCHEMA,
        "id": job.id,
        "model": job.model,
        "type": job.type.value,
        "priority": job.priority.value,
        "status": job.status.value,
        "created_at": job.created_at,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
    }
    for name in _OPTIONAL:
        value = getattr(job, name)
        if value is not None:
            rec[name] = value
    if job.after:
        rec["after"] = list(job.after)
    if job.error:
        rec["error"] = [job.error.type.value, job.error.message]
    if job.cached:
        rec["cached"] = True
    if job.lease:
        rec["lease"] = [job.lease.owner, job.lease.token]
    return pack(rec)


_NUM = (int, float)
_STR = (str,)
# The stored type(s) of every plain field. Types are compared exactly, so a bool is
# never taken for a number; None is "not set" except where a field is required.
_KINDS: dict[str, tuple[type, ...]] = {
    "id": (int,), "model": _STR, "created_at": _NUM, "name": _STR, "batch": _STR, "custom_id": _STR,
    "attempts": (int,), "max_attempts": (int,), "run_at": _NUM, "host": _STR, "started_at": _NUM,
    "finished_at": _NUM, "cached": (bool,), "timeout": _NUM, "keep_alive": _NUM, "cache_key": (bytes,),
    "retry_at": _NUM,
}
_NOT_NULL = frozenset({"attempts", "max_attempts", "cached"})  # fields with a non-null default
_REQUIRED = ("id", "model", "type", "priority", "status", "created_at")
# Enum members by stored value: a dict lookup, where calling the Enum costs ten times more.
_TYPES = {m.value: m for m in JobType}
_PRIORITIES = {m.value: m for m in Priority}
_STATUSES = {m.value: m for m in JobStatus}
_ERRORS = {m.value: m for m in ErrorType}


def _pair(value: Any, what: str) -> Any:
    if value is not None and not (type(value) is list and len(value) == 2
                                  and type(value[0]) is str and type(value[1]) is str):
        raise ValueError(f"{what} is not a pair of strings")
    return value


def decode_job(key: int, data: bytes) -> Job:
    """The job in a stored record; CorruptRecord if it is not one. Runs for every job a
    daemon takes and finishes and every row `list` shows, so it checks each stored key
    once instead of looking up every field."""
    rec = unpack(key, data)
    try:
        if type(rec) is not dict or rec.get("v") != SCHEMA:
            raise ValueError(f"unknown schema {rec.get('v') if isinstance(rec, dict) else rec!r}")
        for required in _REQUIRED:
            if rec.get(required) is None:
                raise ValueError(f"{required} is missing")
        fields: dict[str, Any] = {}
        for name, value in rec.items():
            kinds = _KINDS.get(name)
            if kinds is None:  # the enums and pairs below, "v", or a later version's key
                continue
            if value is None and name not in _NOT_NULL:
                continue
            if type(value) not in kinds:
                raise ValueError(f"{name}: {type(value).__name__} is not {'/'.join(k.__name__ for k in kinds)}")
            fields[name] = value
        error, lease, after = _pair(rec.get("error"), "error"), _pair(rec.get("lease"), "lease"), rec.get("after")
        if after is not None and not (type(after) is list and all(type(a) is int for a in after)):
            raise ValueError("after is not a list of ids")
        return Job(
            type=_TYPES[rec["type"]],
            priority=_PRIORITIES[rec["priority"]],
            status=_STATUSES[rec["status"]],
            after=tuple(after) if after else (),
            error=JobError(_ERRORS[error[0]], error[1]) if error else None,
            lease=Lease(lease[0], lease[1]) if lease else None,
            **fields,
        )
    except CorruptRecord:
        raise
    except Exception as exc:
        raise CorruptRecord(key, f"{type(exc).__name__}: {exc}") from None


def result_to_json(job: Job, result: dict[str, Any]) -> dict[str, Any]:
    """The contract's `result --json` object."""
    out: dict[str, Any] = {"id": job.id, "status": job.status.value, "model": job.model,
                           "type": job.type.value}
    if job.type is JobType.CHAT:
        out["message"] = result.get("message")
    elif job.type is JobType.EMBED:
        out["embeddings"] = result.get("embeddings")
    else:
        out["response"] = result.get("response")
    out["stats"] = result.get("stats") or {}
    out["cached"] = job.cached
    return out


def result_text(job: Job, result: dict[str, Any]) -> str:
    """What `result` prints for people: the text, or the vectors as JSON."""
    if job.type is JobType.CHAT:
        return (result.get("message") or {}).get("content") or ""
    if job.type is JobType.EMBED:
        import json

        return json.dumps(result.get("embeddings"))
    return result.get("response") or ""
