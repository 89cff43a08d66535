"""Hook events on PostgreSQL (`daemon --on-finish`), as LMDB's `queue/hooks.py` keeps them:
recorded by the transaction that finishes a job while `meta` `hooks_until` is ahead of its
`now` (a trigger does: schema.py), claimed by a daemon as jobs are (a conditional UPDATE over
`FOR UPDATE SKIP LOCKED`: two daemons never take one event), deleted once the hook ran.
Functions of a transaction."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import Job
from ollama_cli.store.postgres.rows import COLUMNS, to_job

if TYPE_CHECKING:
    from ollama_cli.store.postgres.transactions import Tx
    from ollama_cli.store.records import HookEvent

_NAMES = [name.strip() for name in COLUMNS.split(",")]
# float8 columns (JSON writes 5.0 as 5), and bytea columns (JSON writes "\\x" and hex digits):
# a new column of jobs of either type joins here (the contract test of hooks compares the
# whole job, so give it a value there).
_FLOATS = {"created_at", "run_at", "retry_at", "started_at", "finished_at", "timeout", "keep_alive",
           "feedback_score"}
_BYTEA = {"cache_key", "route"}


def record_until(tx: Tx, until: float) -> None:
    tx.cur.execute("INSERT INTO meta (key, value) VALUES ('hooks_until', %s) ON CONFLICT (key) DO UPDATE "
                   "SET value = greatest(meta.value::float8, EXCLUDED.value::float8)::text", (repr(float(until)),))


def claim(tx: Tx, owner: str, owner_key: int | None, live_keys: Collection[int], limit: int) -> list[HookEvent]:
    """Up to `limit` events, oldest first, held by no daemon whose lock is in `live_keys`,
    now held by `owner`. One that cannot be decoded is deleted: no hook could be given it."""
    from ollama_cli.store.records import HookEvent

    if limit <= 0:
        return []
    found = tx.all("UPDATE hook_events SET owner = %s, owner_key = %s WHERE id IN ("
                   "SELECT id FROM hook_events WHERE owner_key IS NULL OR owner_key <> ALL(%s) "
                   "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, job",
                   (owner, owner_key, sorted(live_keys), limit))
    out, unreadable = [], []
    for event_id, row in sorted(found):
        try:
            out.append(HookEvent(event_id, _job(row)))
        except (CorruptRecord, KeyError, TypeError, ValueError):
            unreadable.append(event_id)
    if unreadable:
        tx.cur.execute("DELETE FROM hook_events WHERE id = ANY(%s)", (unreadable,))
    return out


def _job(row: dict[str, Any]) -> Job:
    """The job in a row as `to_jsonb` wrote it."""
    values = {name: row[name] for name in _NAMES}
    values.update({k: float(values[k]) for k in _FLOATS if values[k] is not None})
    values.update({k: bytes.fromhex(values[k][2:]) for k in _BYTEA if values[k] is not None})
    return to_job(tuple(values[name] for name in _NAMES))


def done(tx: Tx, event_ids: list[int]) -> None:
    """The hooks of these events ran: the events go."""
    if event_ids:
        tx.cur.execute("DELETE FROM hook_events WHERE id = ANY(%s)", (event_ids,))


def pending(tx: Tx) -> int:
    """Events left (the outbox is small: bounded by what finishes while hooks are recorded
    and not yet run)."""
    row = tx.one("SELECT count(*) FROM hook_events")
    return int(row[0]) if row else 0
