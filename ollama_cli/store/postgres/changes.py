"""A user's changes to jobs and the queue: cancel, retry, clean, pause and resume."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ollama_cli.jobs import ErrorType, JobStatus
from ollama_cli.store.postgres import partials
from ollama_cli.store.postgres.states import CANCELLED, FAILED, PENDING, finished, load, save
from ollama_cli.store.postgres.transactions import Tx
from ollama_cli.store.records import Changed


def cancel(tx: Tx, ids: Sequence[int], now: float) -> list[Changed]:
    loaded = load(tx, sorted(set(ids)), lock=True)
    out = []
    for job_id in ids:
        old = loaded.get(job_id)
        if old is None or old[0].status.finished:
            out.append(Changed(job_id, old[0] if old else None, False))
            continue
        cancelled = finished(old[0], CANCELLED, now, ErrorType.CANCELLED, "cancelled by the user")
        if old[1] == "running":
            partials.forget(tx, [job_id])
        new = save(tx, old, cancelled.evolve(lease=old[0].lease), now)  # a run stays open
        loaded[job_id] = (new, new.status.value)
        out.append(Changed(job_id, new, True))
    return out


def retry(tx: Tx, ids: Sequence[int] | None, now: float) -> list[Changed]:
    wanted = list(ids) if ids is not None else \
        [r[0] for r in tx.all("SELECT id FROM jobs WHERE state = 'failed' ORDER BY id")]
    loaded = load(tx, sorted(set(wanted)), lock=True)
    out = []
    for job_id in wanted:
        old = loaded.get(job_id)
        if old is None or old[0].status not in (FAILED, CANCELLED):
            out.append(Changed(job_id, old[0] if old else None, False))
            continue
        again = old[0].evolve(status=PENDING, attempts=0, error=None, started_at=None,
                              finished_at=None, retry_at=None, host=None)  # an open run stays
        new = save(tx, old, again, now)
        loaded[job_id] = (new, tx.one("SELECT state FROM jobs WHERE id = %s", (job_id,))[0])
        out.append(Changed(job_id, new, True))
    return out


def set_paused(tx: Tx, paused: bool) -> None:
    tx.cur.execute("INSERT INTO meta (key, value) VALUES ('paused', %s) "
                   "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", ("1" if paused else "0",))
    tx.notify = not paused


def is_paused(tx: Tx) -> bool:
    found = tx.one("SELECT value FROM meta WHERE key = 'paused'")
    return found is not None and found[0] == "1"


def clean(tx: Tx, chosen: list[JobStatus], now: float, older_than: float | None) -> int:
    """Delete finished jobs of the `chosen` statuses (the caller checked they are)."""
    sql = "DELETE FROM jobs WHERE state = ANY(%s)"
    params: list[Any] = [[s.value for s in chosen]]
    if older_than is not None:
        sql += " AND finished_at IS NOT NULL AND %s - finished_at >= %s"
        params += [now, older_than]
    deleted = tx.all(sql + " RETURNING id, state", params)
    for _, state in deleted:
        tx.add(f"count/{state}", -1)
    if deleted:
        tx.cur.execute("DELETE FROM dependencies WHERE parent = ANY(%s)", ([r[0] for r in deleted],))
    return len(deleted)
