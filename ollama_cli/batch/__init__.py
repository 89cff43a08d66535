"""Batches: a JSONL file of requests (`parse.py`) queued in one write transaction, followed
as a whole, and answered in the shape of OpenAI's batch output file (`output.py`).

A batch is the name its jobs were submitted under (`JobSpec.batch`), nothing more: `clean`
and `list --batch` need no batch record."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ollama_cli import submission
from ollama_cli.batch.output import results
from ollama_cli.batch.parse import bulk, decode, parse
from ollama_cli.errors import NotFound, UsageError
from ollama_cli.jobs import Job, JobSpec, JobStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ollama_cli.store.base import Engine

__all__ = ["Submitted", "decode", "parse", "results", "status", "submit", "wait"]

# A name is typed on command lines and is a key prefix ended by NUL: printable, not
# taken for an option, and short (LMDB keys are at most 511 bytes).
_NAME = re.compile(r"^[^\x00-\x1f\x7f\s-][^\x00-\x1f\x7f]*$")
NAME_MAX_BYTES = 200
POLL = 0.1


class Submitted(NamedTuple):
    batch: str
    jobs: int
    first_id: int
    last_id: int


@bulk()
def submit(store: Engine, specs: Sequence[JobSpec], now: float, *, name: str | None = None) -> Submitted:
    """Queue every spec in ONE write transaction under the batch `name` (refused if in
    use) or a new `batch-<n>`."""
    if name is not None and (not _NAME.match(submission.check_text(name, "batch name"))
                             or len(name.encode()) > NAME_MAX_BYTES):
        raise UsageError(f"invalid batch name {name!r} (printable, at most {NAME_MAX_BYTES} bytes, "
                         "not starting with - or a space)")
    if not specs:
        raise UsageError("no requests to submit")
    batch, jobs = store.submit_batch(specs, now, name=name)
    return Submitted(batch, len(jobs), jobs[0].id, jobs[-1].id)


# ----------------------------------------------------------------------------- status


def status(store: Engine, name: str) -> dict[str, Any]:
    """`{"batch", "total", "pending", "running", "completed", "failed", "cancelled"}`."""
    return store.batch_counts(name)


def listing(store: Engine) -> list[dict[str, Any]]:
    """Every batch's status, the newest batch first. It reads every job of every batch (a
    batch keeps no counters of its own)."""
    out = []
    for name in store.batch_names():
        try:
            out.append(store.batch_counts(name))
        except NotFound:  # its last job was cleaned away since the names were read
            continue
    return out


def cancel(store: Engine, name: str, now: float) -> tuple[dict[str, Any], int]:
    """Cancel every pending or running job of the batch (a running one is aborted): the
    batch's status after, and how many were cancelled. NotFound for an unknown batch."""
    entries = store.batch_jobs(name)
    if not entries:
        raise NotFound(f"batch {name!r} not found")
    live = [e.id for e in entries if e.job is not None and not e.job.status.finished]
    cancelled = sum(c.changed for c in store.cancel(live, now)) if live else 0
    return store.batch_counts(name), cancelled


def _walk(store: Engine, name: str) -> tuple[dict[str, Any], dict[int, JobStatus]]:
    """The batch's counts, and the jobs not finished with their status, read at once."""
    counts: dict[str, Any] = {"batch": name, "total": 0, **{s.value: 0 for s in JobStatus}}
    left: dict[int, JobStatus] = {}
    entries = store.batch_jobs(name)
    if not entries:
        raise NotFound(f"batch {name!r} not found")
    for entry in entries:
        job = entry.job  # None: corrupt, which `status ID` reports and a count cannot
        if job is None:
            continue
        counts[job.status.value] += 1
        counts["total"] += 1
        if not job.status.finished:
            left[job.id] = job.status
    return counts, left


def wait(store: Engine, name: str, *, timeout: float | None = None,
         on_progress: Callable[[int, int], None] | None = None,
         on_wait: Callable[[], None] | None = None) -> tuple[dict[str, Any], bool]:
    """Until every job of the batch has finished, or the timeout: the batch's status and
    whether all finished. Each poll re-reads only the jobs not yet finished, so it costs
    what is left of the batch, not the whole of it. `on_progress(done, total)`; `on_wait()`
    once, first, if there is anything to wait for."""
    counts, left = _walk(store, name)
    if left and on_wait is not None:
        on_wait()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if on_progress is not None:
            on_progress(counts["total"] - len(left), counts["total"])
        if not left:
            return counts, True
        if deadline is not None and time.monotonic() >= deadline:
            return counts, False
        started = time.monotonic()
        for (job_id, was), job in zip(list(left.items()), store.get_jobs(list(left))):
            is_ = job.status if isinstance(job, Job) else None
            if is_ is was:
                continue
            counts[was.value] -= 1
            if is_ is None:  # cleaned away (so it had finished), or unreadable
                counts["total"] -= 1
            else:
                counts[is_.value] += 1
            if is_ is None or is_.finished:
                del left[job_id]
            else:
                left[job_id] = is_
        # A poll of a large batch takes a while: rest long enough that waiting costs a
        # small share of a core.
        pause = max(POLL, 4 * (time.monotonic() - started))
        if deadline is not None:
            pause = min(pause, max(0.0, deadline - time.monotonic()))
        store.notifier.wait(pause)
