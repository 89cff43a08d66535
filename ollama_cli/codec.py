"""Stored bytes: msgpack with a schema version, and the one decoder of what the store holds.

Stored bytes are decoded in one place (`unpack`), so a corrupt record becomes a
`CorruptRecord` value the caller can report instead of a crash."""

from __future__ import annotations

from typing import Any

import msgpack

from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import ErrorType, Job, JobError, JobStatus, JobType, Lease, Priority

SCHEMA = 1


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
             "keep_alive", "cache_key", "retry_at", "category")


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
    if job.fallbacks:
        rec["fallbacks"] = list(job.fallbacks)
    if job.route:
        rec["route"] = list(job.route)
    if job.error:
        rec["error"] = [job.error.type.value, job.error.message]
    if job.cached:
        rec["cached"] = True
    if job.lease:
        rec["lease"] = [job.lease.owner, job.lease.token]
    if job.cache_hit:
        rec["cache_hit"] = list(job.cache_hit)
    if job.semantic:
        rec["semantic"] = True
    if job.feedback is not None:
        rec["feedback"] = list(job.feedback)
    return pack(rec)


_NUM = (int, float)
_STR = (str,)
# The stored type(s) of every plain field. Types are compared exactly, so a bool is
# never taken for a number; None is "not set" except where a field is required.
_KINDS: dict[str, tuple[type, ...]] = {
    "id": (int,), "model": _STR, "created_at": _NUM, "name": _STR, "batch": _STR, "custom_id": _STR,
    "attempts": (int,), "max_attempts": (int,), "run_at": _NUM, "host": _STR, "started_at": _NUM,
    "finished_at": _NUM, "cached": (bool,), "timeout": _NUM, "keep_alive": _NUM, "cache_key": (bytes,),
    "retry_at": _NUM, "semantic": (bool,),
    "retry_at": _NUM, "category": _STR,
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


def _cache_hit(value: Any) -> tuple[str, int | None, float] | None:
    if value is None:
        return None
    if not (type(value) is list and len(value) == 3 and value[0] in ("exact", "semantic")
            and (value[1] is None or type(value[1]) is int) and type(value[2]) in _NUM):
        raise ValueError("cache_hit is not [kind, source, similarity]")
    return (value[0], value[1], float(value[2]))
def _feedback(value: Any) -> tuple[float, str | None, str | None] | None:
    if value is None:
        return None
    if not (type(value) is list and len(value) == 3 and type(value[0]) in _NUM
            and all(v is None or type(v) is str for v in value[1:])):
        raise ValueError("feedback is not [score, reason, category]")
    return (value[0], value[1], value[2])


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
        fallbacks = rec.get("fallbacks")
        if fallbacks is not None and not (type(fallbacks) is list and all(type(m) is str for m in fallbacks)):
            raise ValueError("fallbacks is not a list of model names")
        return Job(
            cache_hit=_cache_hit(rec.get("cache_hit")),
            type=_TYPES[rec["type"]],
            priority=_PRIORITIES[rec["priority"]],
            status=_STATUSES[rec["status"]],
            after=tuple(after) if after else (),
            fallbacks=tuple(fallbacks) if fallbacks else (),
            route=route_of(rec.get("route")),
            error=JobError(_ERRORS[error[0]], error[1]) if error else None,
            lease=Lease(lease[0], lease[1]) if lease else None,
            feedback=_feedback(rec.get("feedback")),
            **fields,
        )
    except CorruptRecord:
        raise
    except Exception as exc:
        raise CorruptRecord(key, f"{type(exc).__name__}: {exc}") from None


def route_of(stored: Any) -> tuple[str, float | None, int] | None:
    """A job's stored `route` (how `submit auto` chose its model: rule, lower bound, rated),
    checked; ValueError if it is not one."""
    if stored is None:
        return None
    if not (type(stored) is list and len(stored) == 3 and type(stored[0]) is str
            and type(stored[1]) in (int, float, type(None)) and type(stored[2]) is int):
        raise ValueError("route is not (rule, lower bound, rated)")
    return stored[0], stored[1], stored[2]


_SHA256: Any = None


def sha256(data: bytes) -> bytes:
    """SHA-256 of `data` (cache keys, model digests in index keys) by CPython's built-in
    module, the one hashlib falls back to: importing hashlib initialises OpenSSL, 4 ms that
    every `submit` would pay for one digest. Looked up once: a failing import is not
    cached by Python, and batch submit hashes per line."""
    global _SHA256
    if _SHA256 is None:
        try:
            from _sha2 import sha256 as impl  # Python >= 3.12
        except ImportError:
            try:
                from _sha256 import sha256 as impl  # Python 3.10, 3.11
            except ImportError:  # a build without them
                from hashlib import sha256 as impl
        _SHA256 = impl
    return _SHA256(data).digest()
