"""Transactions on the server: a connection per thread, reads, writes that commit whole or not at
all, and what a lost connection means for each.

- A read that finds its connection gone connects again and reads again (reads may repeat).
- A write that fails before COMMIT was sent has left nothing (the server rolls back a
  transaction whose session ended): it runs again, from the start, once at once, else the
  caller gets StoreUnavailable and may try again later (a daemon does, backing off).
- A write whose connection broke while COMMIT was on its way may have landed or not. Its
  transaction id, taken at BEGIN, says which: a new connection asks `txid_status`, ending
  the old session first if the server still has it open (it would otherwise wait there
  until keepalives noticed the client gone). Committed: the write's answer is returned;
  aborted: it runs again. So a write is applied once, never twice, whatever breaks.
- A deadlock or serialization failure the server reports runs the write again, as a whole.

Counters: each write adds its deltas to its connection's shard at the end, in name order (see
schema.py for why shards), and sends NOTIFY in the same commit if waiters should wake."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ollama_cli.errors import NotFound, OperationFailed, StoreUnavailable
from ollama_cli.store.postgres import liveness, schema
from ollama_cli.store.postgres.connection import connect, driver, redact, scrub

T = TypeVar("T")

SHARDS = 16  # counter rows per counter: writers on different shards never wait on each other
RETRIES = 8  # runs of a write that deadlocks, at most
RESOLVE_FOR = 60.0  # seconds to find out whether a commit whose connection broke landed


class Tx:
    """A cursor inside one transaction, the counter deltas it will add at its end, and
    whether it changed jobs that someone may be waiting on."""

    __slots__ = ("cur", "deltas", "notify")

    def __init__(self, cur: Any) -> None:
        self.cur = cur
        self.deltas: dict[str, int] = {}
        self.notify = False

    def add(self, name: str, delta: int) -> None:
        self.deltas[name] = self.deltas.get(name, 0) + delta

    def all(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        self.cur.execute(sql, params)
        return self.cur.fetchall()

    def one(self, sql: str, params: Any = None) -> tuple[Any, ...] | None:
        self.cur.execute(sql, params)
        return self.cur.fetchone()


class Database:
    """Connections to one database, one per thread that uses it (a daemon reads on its event
    loop while its writer thread is inside a transaction: they must not share a session)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Without `create`, a database without our tables is NotFound, and is left as it is."""
        self.url = url
        self.location = redact(url)
        self._psycopg2 = driver()
        self._shard = random.randrange(SHARDS)
        self._local = threading.local()
        self._opened: list[Any] = []  # every connection made, for close()
        self._guard = threading.Lock()
        self._offset = 0.0
        self._create = create
        self._conn()  # the first connection migrates the schema, and says at once if the server is there

    def _conn(self) -> Any:
        """This thread's connection, made if it has none or lost it."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        conn = connect(self.url)
        try:
            if not self._create and schema.version(conn) == 0:
                raise NotFound(f"no store at {self.location} (nothing was ever submitted there: is the URL right?)")
            schema.migrate(conn, self.location)
            conn.autocommit = True
            with conn.cursor() as cur:
                before = time.monotonic()
                cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
                server = cur.fetchone()[0]
                self._offset = server - (before + time.monotonic()) / 2
        except self._psycopg2.Error as exc:  # lost at once, or no rights to create our schema
            gone = conn.closed
            conn.close()
            kind = StoreUnavailable if gone else OperationFailed
            raise kind(f"cannot use the store at {self.location}: {scrub(str(exc), self.url)}") from None
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        with self._guard:
            self._opened = [c for c in self._opened if not c.closed] + [conn]
        return conn

    def now(self) -> float:
        """The server's clock, as read when the last connection was made plus the time
        elapsed since on this host's monotonic clock: never this host's wall clock, which
        may be wrong or be set while a daemon runs."""
        return time.monotonic() + self._offset

    def _failure(self, exc: Exception) -> OperationFailed:
        """A driver error as ours: StoreUnavailable if the connection is gone (this thread's
        is forgotten: the next call connects again), else what the server refused."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return OperationFailed(f"the store at {self.location} refused: {scrub(str(exc), self.url)}")
        self._local.conn = None
        return StoreUnavailable(f"lost the connection to the store at {self.location}: {scrub(str(exc), self.url)}")

    def read(self, fn: Callable[[Tx], T]) -> T:
        """One read; again on a new connection if the old one was lost (a read may run twice)."""
        for attempt in range(2):
            try:
                with self._conn().cursor() as cur:
                    return fn(Tx(cur))
            except self._psycopg2.Error as exc:
                failure = self._failure(exc)
                if attempt or not isinstance(failure, StoreUnavailable):
                    raise failure from None
        raise AssertionError("unreachable")

    def snapshot(self, fn: Callable[[Tx], T]) -> T:
        """A read of several statements, all seeing one state."""
        def read(tx: Tx) -> T:
            tx.cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                return fn(tx)
            finally:
                tx.cur.execute("ROLLBACK")

        return self.read(read)

    def write(self, fn: Callable[[Tx], T]) -> T:
        """Run fn in one transaction and commit: all of it once, or nothing (see the module's
        docstring for what happens when the connection breaks). fn may run more than once."""
        from psycopg2 import errors as codes

        for attempt in range(RETRIES):
            xid, pid, committing = None, None, False
            try:
                conn = self._conn()
                pid = conn.get_backend_pid()
                with conn.cursor() as cur:
                    tx = Tx(cur)
                    xid = tx.one("BEGIN; SELECT txid_current()")[0]
                    try:
                        result = fn(tx)
                        committing = True
                        cur.execute(self._end(tx))
                    except BaseException:
                        if not conn.closed:  # then COMMIT was not reached, or failed: nothing landed
                            committing = False
                            cur.execute("ROLLBACK")
                        raise
                    return result
            except (codes.DeadlockDetected, codes.SerializationFailure):
                if attempt == RETRIES - 1:
                    raise OperationFailed(f"the store at {self.location} stayed too busy to write") from None
                time.sleep(random.uniform(0, 0.002 * 2 ** attempt))
            except self._psycopg2.Error as exc:
                failure = self._failure(exc)
                if not isinstance(failure, StoreUnavailable):
                    raise failure from None
                if committing and self._landed(xid, pid):
                    return result
                if attempt:  # lost twice in a row: let the caller wait for the server
                    raise failure from None
        raise AssertionError("unreachable")

    def _landed(self, xid: int, pid: int) -> bool:
        """Whether transaction `xid`, whose connection (to backend `pid`) broke while it
        committed, committed. Asked on a new connection until the server answers; an
        OperationFailed if it does not within RESOLVE_FOR."""
        deadline = time.monotonic() + RESOLVE_FOR
        while True:
            try:
                with self._conn().cursor() as cur:
                    cur.execute("SELECT txid_status(%s)", (xid,))
                    status = cur.fetchone()[0]
                    if status != "in progress":
                        return status == "committed"
                    # Its session is still open on the server, waiting for a client that has gone.
                    cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
            except (self._psycopg2.Error, StoreUnavailable) as exc:
                if isinstance(exc, self._psycopg2.Error):
                    self._failure(exc)  # forgets a connection that is gone
                if time.monotonic() > deadline:
                    raise OperationFailed(f"lost the connection to the store at {self.location} while a change "
                                          "was committing, and could not learn whether it landed") from None
            time.sleep(0.1)

    def _end(self, tx: Tx) -> str:
        """The statements that end a transaction: its counter deltas, in name order, on
        this connection's shard; NOTIFY if it changed what waiters wait for; COMMIT."""
        parts = []
        deltas = sorted((n, d) for n, d in tx.deltas.items() if d)
        if deltas:
            names, amounts = zip(*deltas)
            parts.append(tx.cur.mogrify(
                "INSERT INTO counts (name, shard, n) SELECT name, %s, n FROM unnest(%s::text[], %s::bigint[]) "
                "AS d(name, n) ORDER BY name ON CONFLICT (name, shard) DO UPDATE SET n = counts.n + EXCLUDED.n",
                (self._shard, list(names), list(amounts))).decode())
        if tx.notify:
            parts.append(f"NOTIFY {liveness.CHANNEL}")
        parts.append("COMMIT")
        return "; ".join(parts)

    def close(self) -> None:
        with self._guard:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._local = threading.local()
