"""The ready jobs as a planner asks for them (`records.ReadyJobs`), read from the ready
indexes inside the claiming transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import Job, JobType
from ollama_cli.store.postgres.rows import COLUMNS, to_job
from ollama_cli.store.postgres.transactions import Tx


class ReadyView:
    """Each question one index seek (`jobs_ready` by priority and id, `jobs_ready_by_model`
    by priority, model and id), leaving out jobs another daemon took while this one
    planned. Paused: nothing."""

    WINDOW = 16  # jobs read per seek: the scheduler asks for the next after each it passes over

    def __init__(self, tx: Tx, limit: int, paused: bool, taken: list[int]) -> None:
        self._tx, self._limit, self._paused, self._taken = tx, limit, paused, taken
        # (rank, model) -> (the `after` read from, the jobs read, whether they were all there
        # were): the ready set does not change while a plan is made, so a later question
        # inside what was read is answered without asking the server again.
        self._windows: dict[tuple[int, str | None], tuple[int, list[Job], bool]] = {}

    def _rows(self, where: str, params: tuple[Any, ...], limit: int) -> list[tuple[Any, ...]]:
        if self._paused:
            return []
        return self._tx.all(f"SELECT {COLUMNS} FROM jobs WHERE state = 'ready' AND {where} AND id <> ALL(%s) "
                            f"ORDER BY priority, id LIMIT %s", (*params, self._taken, limit))

    def __iter__(self) -> Iterator[Job]:
        return iter(readable(self._rows("true", (), self._limit)))

    def oldest(self, rank: int, model: str | None = None, after: int = 0) -> Job | None:
        start, read, complete = self._windows.get((rank, model), (-1, [], False))
        if start <= after:
            beyond = next((j for j in read if j.id > after), None)
            if beyond is not None or complete:
                return beyond
            after = max([after, *(j.id for j in read)])
        where = "priority = %s AND id > %s" + ("" if model is None else " AND model_key = %s")
        found = self._rows(where, (rank, after) if model is None else (rank, after, model), self.WINDOW)
        read = readable(found)
        self._windows[(rank, model)] = (after, read, len(found) < self.WINDOW)
        if read or len(found) < self.WINDOW:
            return read[0] if read else None
        return self.oldest(rank, model, found[-1][0])  # a window of rows this version cannot read: past it

    def embeds(self, rank: int, model: str, after: int, limit: int) -> Iterator[Job]:
        found = self._rows("priority = %s AND model_key = %s AND id > %s", (rank, model, after), limit)
        return (j for j in readable(found) if j.type is JobType.EMBED)

    def models(self, rank: int) -> list[str]:
        if self._paused:
            return []
        # One seek per model on jobs_ready_by_model, past all of its ready jobs.
        return [r[0] for r in self._tx.all(
            "WITH RECURSIVE m(k) AS ("
            "  (SELECT model_key FROM jobs WHERE state = 'ready' AND priority = %(r)s AND id <> ALL(%(x)s) "
            "   ORDER BY model_key LIMIT 1) "
            "  UNION ALL SELECT (SELECT model_key FROM jobs WHERE state = 'ready' AND priority = %(r)s "
            "   AND model_key > m.k AND id <> ALL(%(x)s) ORDER BY model_key LIMIT 1) FROM m WHERE m.k IS NOT NULL"
            ") SELECT k FROM m WHERE k IS NOT NULL", {"r": rank, "x": self._taken})]


def readable(found: list[tuple[Any, ...]]) -> list[Job]:
    """The jobs of these rows that this version can read: one it cannot (a newer version's
    value) is left where it is, for `status` to report, and never stops a daemon's tick."""
    jobs = []
    for row in found:
        try:
            jobs.append(to_job(row))
        except CorruptRecord:
            continue
    return jobs
