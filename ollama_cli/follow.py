"""Blocking waits of client processes (`--wait`, `wait`, `result --follow`): read the jobs
again each time the store's notifier wakes (LMDB: after each pause) until they finish.
Nothing is held while waiting.

A wait costs what changes, not what is queued: `wait --all` over 50,000 jobs must not read
50,000 records ten times a second while the daemon it waits for needs the core. The jobs
not yet finished are kept in the order the daemon starts them (priority, then id), and a
poll reads from the front while it finds finished jobs, plus one chunk further on, which
moves along each poll to find jobs that finished out of that order. The pause grows while
nothing changes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ollama_cli.errors import CorruptRecord, NotFound
from ollama_cli.jobs import Job, JobStatus

if TYPE_CHECKING:
    from ollama_cli.store.base import Engine

POLL = 0.1  # the first pause, and the pause after a change
MAX_POLL = 0.5  # the longest, reached after a few polls where nothing changed
CHUNK = 256  # jobs read at once: more than a daemon runs, so the front is in the first
FOLLOW_POLL = 0.25  # `result --follow`: the daemon writes what streamed every 0.5 s


def wait_for(
    store: Engine,
    ids: Iterable[int],
    *,
    timeout: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> tuple[list[Job], bool]:
    """The jobs once all are finished, or as they are when the timeout expires; the flag
    says whether all finished. `on_progress(finished, total)` after each poll; `on_wait()`
    once, before the first pause, if there is anything to wait for."""
    wanted = list(dict.fromkeys(ids))
    deadline = None if timeout is None else time.monotonic() + timeout
    latest = dict(zip(wanted, _read(store, wanted)))
    left = sorted((j for j in latest.values() if not j.status.finished), key=lambda j: (j.priority.rank, j.id))
    unfinished = [j.id for j in left]
    roam = CHUNK  # where the roaming chunk starts in `unfinished`, past the front
    delay = POLL
    if unfinished and on_wait is not None:
        on_wait()
    while True:
        if on_progress is not None:
            on_progress(len(wanted) - len(unfinished), len(wanted))
        if not unfinished:
            return [latest[i] for i in wanted], True
        if deadline is not None and time.monotonic() >= deadline:
            # One last look at every job left: the answer must not be a poll or a lap old.
            for job in _read(store, unfinished):
                latest[job.id] = job
            return [latest[i] for i in wanted], all(latest[i].status.finished for i in unfinished)
        pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
        store.notifier.wait(pause)
        changed = _front(store, unfinished, latest)
        if len(unfinished) > CHUNK:  # the front chunk is read already
            roam = roam if CHUNK <= roam < len(unfinished) else CHUNK
            before = len(unfinished)
            changed |= _poll(store, unfinished, latest, roam, roam + CHUNK)
            roam += CHUNK - (before - len(unfinished))
        delay = POLL if changed else min(MAX_POLL, delay * 2)


class Followed:
    """What `follow_text` showed of the run it followed last."""

    def __init__(self) -> None:
        self.token: str | None = None  # the lease token of the run
        self.text = ""  # what was shown of its answer


def follow_text(store: Engine, job_id: int, *, show: Callable[[str], None],
                started_over: Callable[[int], None], timeout: float | None = None) -> tuple[Job, Followed, bool]:
    """Show a job's answer as its daemon writes it (`Engine.partial_output`), waiting first
    while it is pending, until it finishes or the timeout expires: `show(text)` gets each new
    piece; `started_over(attempt)` is called when a run other than the one whose text was
    shown begins (a retry: its text starts from nothing). The job as last read, what was
    shown of its last run, and whether it finished."""
    deadline = None if timeout is None else time.monotonic() + timeout
    followed = Followed()
    while True:
        job = _read(store, [job_id])[0]
        if job.status.finished:
            return job, followed, True
        if job.status is JobStatus.RUNNING and job.lease is not None:
            if job.lease.token != followed.token:
                if followed.text:
                    started_over(job.attempts)
                followed.token, followed.text = job.lease.token, ""
            part = store.partial_output(job_id)
            if part is not None and part.token == followed.token and len(part.text) > len(followed.text):
                show(part.text[len(followed.text):])
                followed.text = part.text
        if deadline is not None and time.monotonic() >= deadline:
            return job, followed, False
        store.notifier.wait(FOLLOW_POLL if deadline is None else min(FOLLOW_POLL, max(0.0, deadline - time.monotonic())))


def _front(store: Engine, unfinished: list[int], latest: dict[int, Job]) -> bool:
    """Read chunks from the front while each holds a finished job: the jobs that finish
    next are there. Whether a job changed."""
    changed = False
    while unfinished:
        before = len(unfinished)
        changed |= _poll(store, unfinished, latest, 0, CHUNK)
        if len(unfinished) == before:
            return changed
    return changed


def _poll(store: Engine, unfinished: list[int], latest: dict[int, Job], start: int, stop: int) -> bool:
    """Read `unfinished[start:stop]` again, dropping the jobs that finished; whether a job
    changed its status."""
    part = unfinished[start:stop]
    changed = False
    still = []
    for job in _read(store, part):
        changed |= job.status is not latest[job.id].status
        latest[job.id] = job
        if not job.status.finished:
            still.append(job.id)
    unfinished[start:stop] = still
    return changed


def _read(store: Engine, ids: list[int]) -> list[Job]:
    jobs = []
    for job_id, job in zip(ids, store.get_jobs(ids)):
        if isinstance(job, CorruptRecord):
            raise job
        if job is None:
            raise NotFound(f"job {job_id} not found (was it cleaned?)")
        jobs.append(job)
    return jobs
