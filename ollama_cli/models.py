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


def _typed(rec: dict[str, Any], key: str, kinds: tuple[type, ...], default: Any = None) -> Any:
    """rec[key] if it is of one of `kinds` (or None where None is allowed); a bool is
    never taken for a number."""
    value = rec.get(key, default)
    if value is None and (default is None or key not in rec):
        return value
    if isinstance(value, bool) and bool not in kinds:
        raise ValueError(f"{key}: a bool where a number belongs")
    if not isinstance(value, kinds):
        raise ValueError(f"{key}: {type(value).__name__} is not {'/'.join(k.__name__ for k in kinds)}")
    return value


_NUM = (int, float)


def decode_job(key: int, data: bytes) -> Job:
    rec = unpack(key, data)
    try:
        if not isinstance(rec, dict) or rec.get("v") != SCHEMA:
            raise ValueError(f"unknown schema {rec.get('v') if isinstance(rec, dict) else rec!r}")
        for required in ("id", "model", "type", "priority", "status", "created_at"):
            if rec.get(required) is None:
                raise ValueError(f"{required} is missing")
        error, lease, after = rec.get("error"), rec.get("lease"), rec.get("after") or []
        if error is not None and not (isinstance(error, list) and len(error) == 2
                                      and all(isinstance(e, str) for e in error)):
            raise ValueError("error is not [type, message]")
        if lease is not None and not (isinstance(lease, list) and len(lease) == 2
                                      and all(isinstance(e, str) for e in lease)):
            raise ValueError("lease is not [owner, token]")
        if not isinstance(after, list) or not all(isinstance(a, int) and not isinstance(a, bool) for a in after):
            raise ValueError("after is not a list of ids")
        return Job(
            id=_typed(rec, "id", (int,)),
            model=_typed(rec, "model", (str,)),
            type=JobType(rec["type"]),
            priority=Priority(rec["priority"]),
            status=JobStatus(rec["status"]),
            created_at=_typed(rec, "created_at", _NUM),
            name=_typed(rec, "name", (str,)),
            batch=_typed(rec, "batch", (str,)),
            custom_id=_typed(rec, "custom_id", (str,)),
            attempts=_typed(rec, "attempts", (int,), 0),
            max_attempts=_typed(rec, "max_attempts", (int,), 1),
            run_at=_typed(rec, "run_at", _NUM),
            after=tuple(after),
            host=_typed(rec, "host", (str,)),
            started_at=_typed(rec, "started_at", _NUM),
            finished_at=_typed(rec, "finished_at", _NUM),
            error=JobError(ErrorType(error[0]), error[1]) if error else None,
            cached=_typed(rec, "cached", (bool,), False),
            timeout=_typed(rec, "timeout", _NUM),
            keep_alive=_typed(rec, "keep_alive", _NUM),
            cache_key=_typed(rec, "cache_key", (bytes,)),
            lease=Lease(lease[0], lease[1]) if lease else None,
            retry_at=_typed(rec, "retry_at", _NUM),
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
