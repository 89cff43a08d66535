"""Daemon records on the server: registration and heartbeats (rows of `daemons`), and which
daemons are alive (their session advisory locks, see liveness.py)."""

from __future__ import annotations

from ollama_cli.store.postgres import activity, liveness, schema
from ollama_cli.store.postgres.transactions import Tx
from ollama_cli.store.records import DaemonInfo


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


def register(tx: Tx, info: DaemonInfo, hostname: str) -> None:
    tx.cur.execute(
        "INSERT INTO daemons (id, lock_key, hostname, pid, hosts, concurrency, started_at, last_heartbeat) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
        "(lock_key, hostname, pid, hosts, concurrency, started_at, last_heartbeat) = "
        "(EXCLUDED.lock_key, EXCLUDED.hostname, EXCLUDED.pid, EXCLUDED.hosts, EXCLUDED.concurrency, "
        "EXCLUDED.started_at, EXCLUDED.last_heartbeat)",
        (info.id, liveness.lock_key(info.id), hostname, info.pid, list(info.hosts), info.concurrency,
         info.started_at, info.last_heartbeat))


def heartbeat(tx: Tx, daemon_id: str, now: float) -> bool:
    """Whether the daemon's row was there to beat."""
    tx.cur.execute("UPDATE daemons SET last_heartbeat = %s WHERE id = %s", (now, daemon_id))
    return bool(tx.cur.rowcount)


def unregister(tx: Tx, daemon_id: str) -> None:
    tx.cur.execute("DELETE FROM daemons WHERE id = %s", (daemon_id,))
    activity.forget(tx, [daemon_id])


def listed(tx: Tx) -> list[DaemonInfo]:
    found = tx.all("SELECT id, pid, hosts, concurrency, started_at, last_heartbeat FROM daemons ORDER BY id")
    return [DaemonInfo(i, pid, list(hosts), c, s, h) for i, pid, hosts, c, s, h in found]
