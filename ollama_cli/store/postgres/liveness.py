"""Daemon liveness and wake-ups on the server.

A daemon lives while its own connection holds a session advisory lock (LOCK_SPACE, key):
the server drops it when the session ends, however it ends (measured 2.3 ms after a
kill -9; a host that vanished, after the keepalive time of `connection.py`); its jobs are
taken back once its heartbeat is stale too (RECLAIM_AFTER, below). Keys come
from a sequence and are never reused, and the daemon's id carries its key, so "is it
alive?" is one look at `pg_locks`, which also sees locks this process holds.

Wake-ups: a transaction that makes jobs ready or finishes them sends NOTIFY on CHANNEL
as it commits; a LISTEN connection returns from `wait` at once. A notification is not
durable (a LISTEN connection that was down missed it), so `wait` is always bounded by
its timeout: the poll is the backstop."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Callable
from typing import Any

from ollama_cli.store.postgres.connection import connect
from ollama_cli.store.postgres.schema import LOCK_SPACE

CHANNEL = "ollama_q"
# How long after a server (re)start a daemon whose lock is free, but which has not beaten
# since, still counts as alive: long enough for a live one to reconnect (its writes back off
# up to 30 s) and take its lock back, so that a restart does not hand every running job to
# whichever daemon reconnects first. A daemon killed at any other time is dead at once.
RESTART_GRACE = 60.0
# A daemon whose lock is gone is dead only once its heartbeat (written with the server's
# clock) is also older than RECLAIM_AFTER. The lock can go while the daemon still runs jobs:
# a host cut off from the server (the server ends its session after the keepalive bound of
# connection.py) but not from its own Ollama, or a server restart. Such a daemon fences
# itself first: FENCE_AFTER seconds after the start of its last heartbeat that committed
# (its own monotonic clock, never later than the server's `now()` of that transaction), it
# stops its running requests and claims nothing until a heartbeat commits again. So no
# job runs twice at once; the price is that a daemon killed outright is reclaimed
# RECLAIM_AFTER after its last heartbeat rather than at once. The margin between the two
# (5 s) covers the fence's check and the requests' closing. Both are read at each use: a
# test may shorten them, together.
FENCE_AFTER = 10.0
RECLAIM_AFTER = 15.0

# Locks held now, by key, in this database. pg_locks lists every session's locks, ours too.
LIVE_KEYS = ("SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
             "AND classid = %s AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


def lock_key(daemon_id: str) -> int | None:
    """The lock key in a daemon id (`<host>-<pid>-pg<key>`); None for an id not of that form."""
    tail = daemon_id.rsplit("-", 1)[-1]
    return int(tail[2:]) if tail.startswith("pg") and tail[2:].isdigit() else None


class DaemonLock:
    """This daemon's lock, on a connection of its own that does nothing else."""

    def __init__(self, url: str, key: int, on_release: Callable[[DaemonLock], None]) -> None:
        self.url = url
        self.key = key
        self._on_release = on_release
        self.id = f"{socket.gethostname()}-{os.getpid()}-pg{key}"
        self._conn: Any = None
        self._take()

    def _take(self) -> None:
        self._conn = connect(self.url, role="daemon")
        self._conn.autocommit = True
        with self._conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_SPACE, self.key))

    def ensure(self) -> bool:
        """Take the lock again if its connection was lost (a server restart); whether it
        had to. Meanwhile another daemon may have taken this one's jobs back: their leases
        were fenced then, so a late settle of them is refused."""
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT 1")
            return False
        except Exception:  # the connection is gone, whatever the driver calls it
            self._close()
            self._take()
            return True

    def _close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # noqa: S110 - closing a connection that is already gone
            pass

    def release(self) -> None:
        self._on_release(self)
        # Unlocked before the session ends: a server ends a closed session a moment after
        # the client has gone, and "released" must mean "not alive" at once.
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, self.key))
        except Exception:  # noqa: S110 - the connection is gone, and the lock with it
            pass
        self._close()


class Notifier:
    """`wait` returns on a NOTIFY of CHANNEL, or after the timeout. The LISTEN connection
    is made on the first wait, and made again after it was lost."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None

    def _listening(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, role="listener")
            self._conn.autocommit = True
            with self._conn.cursor() as cur:
                cur.execute(f"LISTEN {CHANNEL}")
        return self._conn

    def wait(self, timeout: float) -> None:
        try:
            conn = self._listening()
            if not conn.notifies:
                select.select([conn], [], [], max(0.0, timeout))
            conn.poll()
            conn.notifies.clear()
        except Exception:  # the connection was lost: wait out the poll and listen again
            self.close()
            import time

            time.sleep(max(0.0, timeout))

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: S110 - already gone
                pass
            self._conn = None
