"""Blocking waits of client processes (`--wait`, `wait`): read the jobs again each time the
store's notifier wakes (LMDB: every POLL) until they finish. Nothing is held while waiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ollama_cli.errors import CorruptRecord, NotFound
from ollama_cli.jobs import Job

if TYPE_CHECKING:
    from ollama_cli.store.base import Engine

POLL = 0.1


def wait_for(
    store: Engine,
    ids: Iterable[int],
    *,
    timeout: float | None = None,
    on_progress: Callable[[list[Job]], None] | None = None,
) -> tuple[list[Job], bool]:
    """The jobs once all are finished, or as they are when the timeout expires; the flag
    says whether all finished."""
    wanted = list(dict.fromkeys(ids))
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        jobs = []
        for job_id, job in zip(wanted, store.get_jobs(wanted)):
            if isinstance(job, CorruptRecord):
                raise job
            if job is None:
                raise NotFound(f"job {job_id} not found (was it cleaned?)")
            jobs.append(job)
        if on_progress is not None:
            on_progress(jobs)
        if all(j.status.finished for j in jobs):
            return jobs, True
        if deadline is not None and time.monotonic() >= deadline:
            return jobs, False
        delay = POLL if deadline is None else min(POLL, max(0.0, deadline - time.monotonic()))
        store.notifier.wait(delay)
