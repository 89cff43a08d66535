"""Hook events (`daemon --on-finish`): an outbox of finished jobs whose hook has not run.

The transaction that ends a job (complete, fail, cancel, a failed dependency, a cache hit
at submit) records an event, but only while the store says some daemon runs hooks
(`meta` `hooks_until`, a time that such a daemon pushes forward while it lives): `submit`
and `cancel` run in processes that cannot know whether a daemon with `--on-finish` exists,
and an outbox that nobody empties would grow for ever. A daemon claims events as it claims
jobs (owner = its id), runs each hook, and deletes the event whatever the command's exit
code; an event whose owner has died is claimed again by the next daemon (at least once).

`hook_events`: u64 event id -> msgpack {"job": the job record's bytes, "owner": id or None}."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from ollama_cli.codec import decode_job, encode_job, pack, unpack
from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import Job
from ollama_cli.store.keys import read_u64, u64

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx
    from ollama_cli.store.records import HookEvent

TABLE = "hook_events"
UNTIL = b"hooks_until"  # meta: milliseconds since the epoch, u64
NEXT = "hooks/next"  # counter: the last event id given


def record_until(tx: Tx, until: float) -> None:
    """Record events for jobs that finish before `until` (never moves it back)."""
    ms = int(until * 1000)
    raw = tx.get("meta", UNTIL)
    if raw is None or read_u64(raw) < ms:
        tx.put("meta", UNTIL, u64(ms))


def recording(tx: Tx, now: float) -> bool:
    raw = tx.get("meta", UNTIL)
    return raw is not None and read_u64(raw) > now * 1000


def record(tx: Tx, job: Job, now: float) -> None:
    """The job has just finished: an event for its hook, if hooks are being run."""
    if recording(tx, now):
        tx.put(TABLE, u64(tx.add(NEXT, 1)), pack({"job": encode_job(job), "owner": None}))


def holders(tx: Tx) -> set[str | None]:
    """The daemons that hold events now, and None if some event is held by none."""
    found: set[str | None] = set()
    for key, raw in tx.scan(TABLE):
        found.add(_owner(key, raw))
    return found


def claim(tx: Tx, owner: str, dead: Collection[str], limit: int) -> list[HookEvent]:
    """Up to `limit` events, oldest first, that no daemon holds or whose daemon is in
    `dead`, now held by `owner`. An event that cannot be read is dropped: no hook could
    be given its job."""
    from ollama_cli.store.records import HookEvent

    out: list[HookEvent] = []
    unreadable = []
    for key, raw in tx.scan(TABLE):
        if len(out) >= limit:  # limit 0: nothing claimed
            break
        try:
            record = unpack(key, raw)
            held = record["owner"]
            if held is not None and held not in dead:
                continue
            event_id = read_u64(key)
            out.append(HookEvent(event_id, decode_job(0, record["job"])))
        except (CorruptRecord, KeyError, TypeError):
            unreadable.append(key)
            continue
        record["owner"] = owner
        tx.put(TABLE, key, pack(record))
    for key in unreadable:
        tx.delete(TABLE, key)
    return out


def done(tx: Tx, event_id: int) -> bool:
    """The hook ran: the event goes. Whether it was there."""
    return tx.delete(TABLE, u64(event_id))


def pending(tx: Tx) -> int:
    """Events left, held or not."""
    return tx.entries(TABLE)


def _owner(key: bytes, raw: bytes) -> str | None:
    """Who holds the event; None for nobody, or an event that cannot be read (`claim` drops it)."""
    try:
        owner = unpack(key, raw)["owner"]
    except (CorruptRecord, KeyError, TypeError):
        return None
    return owner if isinstance(owner, str) else None
