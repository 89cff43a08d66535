"""How finished jobs leave the store: `clean` deletes them with everything kept beside them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ollama_cli.errors import CorruptRecord, UsageError
from ollama_cli.jobs import Job, JobStatus
from ollama_cli.queue.indexes import COUNT, batch_prefix, get_job
from ollama_cli.queue.reads import ids_with_status
from ollama_cli.store.keys import u64

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx


def clean(tx: Tx, statuses: Iterable[JobStatus], now: float, *, older_than: float | None = None) -> int:
    """Delete finished jobs of these statuses (finished more than `older_than` seconds
    ago, if given) with their requests, results and index entries."""
    deleted = 0
    for status in statuses:
        if not status.finished:
            raise UsageError(f"clean deletes finished jobs only, not {status.value} ones")
        for job_id in ids_with_status(tx, status):
            try:
                job = get_job(tx, job_id)
            except CorruptRecord:
                job = None
            if job is not None and older_than is not None and \
                    (job.finished_at is None or now - job.finished_at < older_than):
                continue
            _delete(tx, job_id, status, job)
            deleted += 1
    return deleted


def _delete(tx: Tx, job_id: int, status: JobStatus, job: Job | None) -> None:
    key = u64(job_id)
    for db in ("jobs", "requests", "results", "open_runs"):
        tx.delete(db, key)
    if tx.delete("status", status.code + key):
        tx.add(COUNT[status], -1)
    for dep_key, _ in list(tx.scan("dependents", key)):
        tx.delete("dependents", dep_key)
    if job is not None:
        for dep in job.after:
            tx.delete("dependents", u64(dep) + key)
        if job.batch:
            tx.delete("batches", batch_prefix(job.batch) + key)
