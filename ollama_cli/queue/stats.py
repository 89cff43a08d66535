"""Statistics on LMDB: the hour buckets of `store/buckets.py` in the `stats` table, updated in
the transaction that records a job's end (`indexes.transition` calls `job_finished`) or its
rating (`feedback`). `clean` never touches them.

A key is hour (4 bytes) + kind (1) + model digest (8) + group, so that the buckets since an
hour are one scan from there; the value holds the names and the sums."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ollama_cli.codec import pack, unpack
from ollama_cli.errors import CorruptRecord, NotFound, OperationFailed
from ollama_cli.jobs import Job, JobStatus, result_stats
from ollama_cli.queue.indexes import get_job, model_digest, transition
from ollama_cli.store import buckets
from ollama_cli.store.keys import u64

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx

_HOUR = struct.Struct(">I")


def _key(hour: int, kind: str, model: str, group: str) -> bytes:
    return _HOUR.pack(max(0, min(hour, 2**32 - 1))) + kind.encode() + model_digest(model) + group.encode()


def _apply(tx: Tx, old: Job | None, new: Job, stats: dict[str, int] | None) -> None:
    for (hour, kind, model, group), deltas in buckets.changes(old, new, stats):
        key = _key(hour, kind, model, group)
        raw = tx.get("stats", key)
        try:
            record = unpack(key, raw) if raw is not None else None
        except CorruptRecord:
            record = None  # an unreadable bucket starts again rather than stop the job's end
        if not (isinstance(record, dict) and isinstance(record.get("f"), dict)
                and all(type(v) in (int, float) for v in record["f"].values())):
            record = {"m": model, "g": group, "f": {}}
        if buckets.merge(record["f"], deltas):
            tx.put("stats", key, pack(record))
        else:  # its only job moved to another category
            tx.delete("stats", key)


def job_finished(tx: Tx, job: Job, stats: dict[str, int] | None) -> None:
    """Count a job that just finished (`stats`: its result's figures, if it completed)."""
    _apply(tx, None, job, stats)


def feedback(tx: Tx, job_id: int, score: float, reason: str | None, category: str | None, now: float) -> Job:
    """Rate a completed job (again: the new rating replaces the old), and with `category`
    move it to that category; its buckets follow. NotFound for an unknown job,
    OperationFailed for one that did not complete."""
    job = get_job(tx, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    if job.status is not JobStatus.COMPLETED:
        raise OperationFailed(f"job {job_id} is {job.status.value}: only a completed job can be rated")
    category = category or job.category
    rated = job.evolve(category=category, feedback=(score, reason, category))
    raw = tx.get("results", u64(job_id))
    try:
        stats = result_stats(unpack(job_id, raw)) if raw is not None else {}
    except CorruptRecord:
        stats = {}
    _apply(tx, job, rated, stats)
    return transition(tx, job, rated, now)


def read(tx: Tx, since_hour: int | None) -> list[buckets.Bucket]:
    """Every bucket from `since_hour` on (None: all), in key order."""
    start = _HOUR.pack(max(0, min(since_hour, 2**32 - 1))) if since_hour is not None else None
    out = []
    for key, raw in tx.scan("stats", start=start):
        try:
            record = unpack(key, raw)
            out.append(buckets.Bucket(_HOUR.unpack_from(key)[0], key[4:5].decode(), record["m"], record["g"],
                                      dict(record["f"])))
        except (CorruptRecord, KeyError, TypeError, UnicodeDecodeError):
            continue  # one unreadable bucket leaves the others to show
    return out
