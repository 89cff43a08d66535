"""Daemon records on the server: registration and heartbeats (rows of `daemons`), and which
daemons are alive (their session advisory locks, see liveness.py)."""

from __future__ import annotations

from ollama_cli.store.postgres import activity, liveness, schema
from ollama_cli.store.postgres.transactions import Tx
from ollama_cli.store.records import DaemonInfo


# The server's clock at the transaction's start: reclaim compares heartbeats with it, and a
# daemon's fence counts from before that start (liveness.FENCE_AFTER).
SERVER_NOW = "extract(epoch FROM now())::float8"


def live_keys(tx: Tx, now: float, own: set[int]) -> set[int]:
    """Lock keys of the daemons alive at `now`: those whose lock is held, `own` (this
    process's, whose lock may be waiting for its connection to come back), and, for
    RESTART_GRACE after the server started, those that have not beaten since: a restart
    ends every session and frees every lock, and a live daemon takes its own back at its
    next heartbeat."""
    held = {r[0] for r in tx.all(liveness.LIVE_KEYS, (schema.LOCK_SPACE,))}
    started = tx.one("SELECT extract(epoch FROM pg_postmaster_start_time())::float8")[0]
    returning = set()
    if now - started < liveness.RESTART_GRACE:
        returning = {r[0] for r in tx.all(
            "SELECT lock_key FROM daemons WHERE lock_key IS NOT NULL AND last_heartbeat < %s", (started,))}
    return held | returning | own


def unreclaimable_keys(tx: Tx, now: float, own: set[int]) -> set[int]:
    """The keys of `live_keys`, and those of daemons that beat less than RECLAIM_AFTER ago on
    the server's clock: a daemon whose lock went with its session may still be running its
    jobs until it fences itself (liveness.FENCE_AFTER)."""
    fresh = {r[0] for r in tx.all(
        "SELECT lock_key FROM daemons WHERE lock_key IS NOT NULL "
        f"AND last_heartbeat >= {SERVER_NOW} - %s", (liveness.RECLAIM_AFTER,))}
    return live_keys(tx, now, own) | fresh


def register(tx: Tx, info: DaemonInfo, hostname: str) -> None:
    """Records `info`, with the server's clock as its last heartbeat."""
    tx.cur.execute(
        "INSERT INTO daemons (id, lock_key, hostname, pid, hosts, concurrency, started_at, last_heartbeat) "
        f"VALUES (%s, %s, %s, %s, %s, %s, %s, {SERVER_NOW}) ON CONFLICT (id) DO UPDATE SET "
        "(lock_key, hostname, pid, hosts, concurrency, started_at, last_heartbeat) = "
        "(EXCLUDED.lock_key, EXCLUDED.hostname, EXCLUDED.pid, EXCLUDED.hosts, EXCLUDED.concurrency, "
        "EXCLUDED.started_at, EXCLUDED.last_heartbeat)",
        (info.id, liveness.lock_key(info.id), hostname, info.pid, list(info.hosts), info.concurrency,
         info.started_at))


def heartbeat(tx: Tx, daemon_id: str) -> bool:
    """Whether the daemon's row was there to beat (with the server's clock)."""
    tx.cur.execute(f"UPDATE daemons SET last_heartbeat = {SERVER_NOW} WHERE id = %s", (daemon_id,))
    return bool(tx.cur.rowcount)


def unregister(tx: Tx, daemon_id: str) -> None:
    tx.cur.execute("DELETE FROM daemons WHERE id = %s", (daemon_id,))
    activity.forget(tx, [daemon_id])


def listed(tx: Tx) -> list[DaemonInfo]:
    found = tx.all("SELECT id, pid, hosts, concurrency, started_at, last_heartbeat FROM daemons ORDER BY id")
    return [DaemonInfo(i, pid, list(hosts), c, s, h) for i, pid, hosts, c, s, h in found]
