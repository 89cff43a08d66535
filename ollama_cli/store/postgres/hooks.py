"""Hook events on PostgreSQL (`daemon --on-finish`), as LMDB's `queue/hooks.py` keeps them:
recorded by the transaction that finishes a job while `meta` `hooks_until` is ahead of its
`now`, claimed by a daemon as jobs are (a conditional UPDATE over `FOR UPDATE SKIP LOCKED`:
two daemons never take one event), deleted once the hook ran. Functions of a transaction."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from ollama_cli.codec import decode_job, encode_job
from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import Job

if TYPE_CHECKING:
    from ollama_cli.store.postgres.transactions import Tx
    from ollama_cli.store.records import HookEvent


def record_until(tx: Tx, until: float) -> None:
    tx.cur.execute("INSERT INTO meta (key, value) VALUES ('hooks_until', %s) ON CONFLICT (key) DO UPDATE "
                   "SET value = greatest(meta.value::float8, EXCLUDED.value::float8)::text", (repr(float(until)),))


def record(tx: Tx, job: Job, now: float) -> None:
    """The job has just finished: an event for its hook, if hooks are being run. One
    statement, the flag read by the server."""
    tx.cur.execute("INSERT INTO hook_events (job) SELECT %s WHERE EXISTS "
                   "(SELECT 1 FROM meta WHERE key = 'hooks_until' AND value::float8 > %s)",
                   (encode_job(job), now))


def claim(tx: Tx, owner: str, owner_key: int | None, live_keys: Collection[int], limit: int) -> list[HookEvent]:
    """Up to `limit` events, oldest first, held by no daemon whose lock is in `live_keys`,
    now held by `owner`. One that cannot be decoded is deleted: no hook could be given it."""
    from ollama_cli.store.records import HookEvent

    found = tx.all("UPDATE hook_events SET owner = %s, owner_key = %s WHERE id IN ("
                   "SELECT id FROM hook_events WHERE owner_key IS NULL OR owner_key <> ALL(%s) "
                   "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, job",
                   (owner, owner_key, sorted(live_keys), limit))
    out, unreadable = [], []
    for event_id, raw in sorted(found):
        try:
            out.append(HookEvent(event_id, decode_job(0, bytes(raw))))
        except CorruptRecord:
            unreadable.append(event_id)
    if unreadable:
        tx.cur.execute("DELETE FROM hook_events WHERE id = ANY(%s)", (unreadable,))
    return out


def done(tx: Tx, event_id: int) -> None:
    tx.cur.execute("DELETE FROM hook_events WHERE id = %s", (event_id,))


def pending(tx: Tx) -> int:
    """Events left (the outbox is small: bounded by what finishes while hooks are recorded
    and not yet run)."""
    row = tx.one("SELECT count(*) FROM hook_events")
    return int(row[0]) if row else 0
