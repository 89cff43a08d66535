"""The partial output of running jobs (`result --follow`), over LMDB's key-value
transactions: `partials` holds, per running job, the text its current run has streamed so
far, with that run's lease token and attempt. A write is taken only from the run that holds
the job's lease, so a run that lost its job (cancelled, reclaimed) writes nothing, and a
retry starts over; `indexes.transition` deletes the text in the transaction in which the
job stops running."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ollama_cli.codec import pack, unpack
from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import JobStatus
from ollama_cli.queue.indexes import get_job
from ollama_cli.store.keys import u64

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx
    from ollama_cli.store.records import PartialText


def _stored(tx: Tx, job_id: int) -> dict | None:
    raw = tx.get("partials", u64(job_id))
    if raw is None:
        return None
    try:
        found = unpack(job_id, raw)
    except CorruptRecord:
        return None  # written over by the next write of the run; read as none meanwhile
    return found if isinstance(found, dict) and isinstance(found.get("text"), str) else None


def write(tx: Tx, parts: Sequence[PartialText]) -> None:
    """Record each part whose job runs under its lease token, its text after the first
    `start` characters of what that run stored before; others are ignored."""
    for part in parts:
        try:
            job = get_job(tx, part.job_id)
        except CorruptRecord:
            continue
        if job is None or job.status is not JobStatus.RUNNING or job.lease is None or job.lease.token != part.token:
            continue
        stored = _stored(tx, part.job_id)
        before = stored["text"] if stored is not None and stored.get("token") == part.token else ""
        if part.start > len(before):
            continue  # text in between never landed: the run sends it whole next time
        tx.put("partials", u64(part.job_id), pack({"token": part.token, "attempt": part.attempt,
                                                   "text": before[:part.start] + part.text}))


def read(tx: Tx, job_id: int) -> PartialText | None:
    """The text the job's current run has streamed so far; None unless it runs and its run
    wrote some."""
    from ollama_cli.store.records import PartialText

    stored = _stored(tx, job_id)
    if stored is None:
        return None
    try:
        job = get_job(tx, job_id)
    except CorruptRecord:
        return None
    if job is None or job.status is not JobStatus.RUNNING or job.lease is None or job.lease.token != stored.get("token"):
        return None
    return PartialText(job_id, job.lease.token, job.attempts, 0, stored["text"])

