"""One job never stops the queue. A job whose own step raises (a record the code cannot work
with, whatever the reason) is quarantined: out of every index, failed with the reason
(`transitions.quarantine`), and the operation runs again without it.

Inside a write, `blame(job_id)` turns what a job's data can make the code raise into a
`JobFault` naming the job. The whole transaction aborts, so nothing half-written survives,
and the engine runs the write again with the job quarantined first (`LmdbEngine._isolated`)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

from ollama_cli.errors import CorruptRecord
from ollama_cli.sanitize import one_line

# What a job's own data can make a step raise. Never the store's own errors: those (LMDB's
# MapFullError first, which the store answers by growing its map) must reach the engine.
JOB_ERRORS = (CorruptRecord, ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError,
              struct.error)


class JobFault(Exception):
    """A step raised while it handled this job."""

    def __init__(self, job_id: int, cause: BaseException) -> None:
        kind = type(cause)
        name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        self.job_id = job_id
        self.reason = one_line(f"handling it raised {name}: {cause}", 200)
        super().__init__(f"job {job_id}: {self.reason}")


@contextmanager
def blame(job_id: int) -> Iterator[None]:
    """What the block raises from a job's data is that job's fault (a fault of another job
    handled inside stays that job's)."""
    try:
        yield
    except JobFault:
        raise
    except JOB_ERRORS as exc:
        raise JobFault(job_id, exc) from exc
