"""What running jobs have streamed so far, kept in memory as it streams in and written to
the store at a bounded rate, for `result --follow`: every `WRITE_EVERY` seconds the tick
writes the new text of all running jobs in one transaction on the writer thread (never one
per token, never more than a few per second per job). Each piece goes under the run's lease,
so a retry starts the text over; the store deletes it when the job stops running."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING

from ollama_cli.jobs import JobType
from ollama_cli.store.records import PartialText

if TYPE_CHECKING:
    from ollama_cli.daemon.attempt import InFlight

WRITE_EVERY = 0.5  # seconds between writes: text appears within about this, and a job costs 2 writes a second at most


class _Run:
    """One run's text as it streamed in, and how much of it the store has."""

    __slots__ = ("job_id", "token", "attempt", "text", "size", "written")

    def __init__(self, job_id: int, token: str, attempt: int) -> None:
        self.job_id, self.token, self.attempt = job_id, token, attempt
        self.text = io.StringIO()
        self.size = 0  # characters streamed
        self.written = 0  # characters the store has

    def add(self, piece: str) -> None:
        self.text.write(piece)
        self.size += len(piece)


class PartialOutputs:
    """The text of the daemon's runs of generate and chat jobs (embeds stream none), by lease
    token. `enabled` False keeps nothing (the benchmark's baseline)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._runs: dict[str, _Run] = {}

    def track(self, run: InFlight) -> Callable[[str], None] | None:
        """What the run's client calls with each piece of text; None if nothing is kept."""
        if not self.enabled or len(run.claims) != 1 or run.claims[0].job.type is JobType.EMBED:
            return None
        claim = run.claims[0]
        kept = self._runs[claim.token] = _Run(claim.job.id, claim.token, claim.job.attempts)
        return kept.add

    def forget(self, run: InFlight) -> None:
        """The run is over: what it streamed is in its outcome, or was for nothing."""
        for claim in run.claims:
            self._runs.pop(claim.token, None)

    def due(self) -> list[PartialText]:
        """The text each run streamed since the store last took some."""
        return [PartialText(r.job_id, r.token, r.attempt, r.written, r.text.getvalue()[r.written:])
                for r in self._runs.values() if r.size > r.written]

    def written(self, parts: list[PartialText]) -> None:
        for part in parts:
            run = self._runs.get(part.token)
            if run is not None:
                run.written = part.start + len(part.text)
