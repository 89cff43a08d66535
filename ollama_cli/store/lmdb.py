"""LMDB: one environment in the data dir, its named tables, and short transactions.

Bytes in, bytes out: the rooms above give meaning to the keys (`store/tables.py` lists them). Every process opens the
environment with the same parameters (MAX_DBS, MAX_READERS) and exactly once.
A write is a function of a transaction so that it can be run again after the map
grows: nobody sees MapFullError."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import lmdb

from ollama_cli.errors import OperationFailed
from ollama_cli.store.keys import prefix_upper, read_u64, u64
from ollama_cli.store.tables import DATABASES

T = TypeVar("T")

# Every process opens the environment with these same values: max_dbs is per handle and
# max_readers is fixed by whichever process creates the lock file first.
MAX_DBS = 16
MAX_READERS = 1024
# Virtual address space only: data.mdb grows with the pages in use, and the store doubles
# the map when it fills.
MAP_SIZE = 1 << 30


class Tx:
    """A transaction over the named databases: the only surface the layers above use.

    Counters are kept in memory and written once, at commit: a job's state change moves
    three to five of them, and a read-modify-write of each in LMDB costs more than the
    job's own records."""

    __slots__ = ("_txn", "_dbs", "_counters")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, lmdb._Database]) -> None:
        self._txn = txn
        self._dbs = dbs
        self._counters: dict[str, int] = {}

    def get(self, db: str, key: bytes) -> bytes | None:
        return self._txn.get(key, db=self._dbs[db])

    def put(self, db: str, key: bytes, value: bytes = b"") -> None:
        self._txn.put(key, value, db=self._dbs[db])

    def delete(self, db: str, key: bytes) -> bool:
        return self._txn.delete(key, db=self._dbs[db])

    def entries(self, db: str) -> int:
        return self._txn.stat(self._dbs[db])["entries"]

    def clear(self, db: str) -> None:
        self._txn.drop(self._dbs[db], delete=False)

    def counter(self, name: str) -> int:
        value = self._counters.get(name)
        if value is not None:
            return value
        raw = self._txn.get(name.encode(), db=self._dbs["meta"])
        return read_u64(raw) if raw else 0

    def add(self, name: str, delta: int) -> int:
        """Add delta to a counter, clamped at zero; the new value."""
        value = self._counters[name] = max(0, self.counter(name) + delta)
        return value

    def _flush(self) -> None:
        meta = self._dbs["meta"]
        for name, value in self._counters.items():
            self._txn.put(name.encode(), u64(value), db=meta)

    def scan(self, db: str, prefix: bytes = b"", *, start: bytes | None = None,
             reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with prefix, in key order or reversed.
        `start` positions the scan at the first key >= start (forward only)."""
        cur = self._txn.cursor(db=self._dbs[db])
        if reverse:
            upper = prefix_upper(prefix)
            positioned = (cur.set_range(upper) and cur.prev()) if upper else cur.last()
            if not positioned and upper and not cur.set_range(upper):
                positioned = cur.last()
            if not positioned:
                return
            step = cur.prev
        else:
            if not cur.set_range(start if start is not None else prefix):
                return
            step = cur.next
        while True:
            key = cur.key()
            if not key.startswith(prefix):
                return
            yield key, cur.value()
            if not step():
                return


class Store:
    """The process's one handle on the environment in `path`."""

    def __init__(self, path: Path, *, map_size: int = MAP_SIZE, readonly: bool = False) -> None:
        """`readonly` for commands that only read: py-lmdb opens named databases in a write
        transaction unless the environment is read-only, and that would make `status`
        wait behind any writer. A store that does not exist yet is created writable."""
        self.path = Path(path)
        _make_private_dir(self.path)
        readonly = readonly and (self.path / "data.mdb").exists()
        self.env = _open_env(self.path, map_size, readonly)
        # Slots of killed readers are not reclaimed by LMDB on its own.
        self.env.reader_check()
        try:
            self.dbs = {n: self.env.open_db(n.encode(), create=False) for n in DATABASES}
        except lmdb.NotFoundError:
            if readonly:  # made by a version with fewer databases: create them
                self.env.close()
                self.env = _open_env(self.path, map_size, False)
            with self.env.begin(write=True) as txn:
                self.dbs = {n: self.env.open_db(n.encode(), txn=txn) for n in DATABASES}

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A short read transaction: never hold one across network calls or sleeps."""
        txn = self._begin(write=False)
        try:
            yield Tx(txn, self.dbs)
        finally:
            txn.abort()

    def write(self, fn: Callable[[Tx], T]) -> T:
        """Run fn in one write transaction and commit; all of it lands or none does.
        fn may run more than once (after the map grows), so it must be a pure
        function of the transaction."""
        for _ in range(40):
            try:
                txn = self._begin(write=True)
                try:
                    tx = Tx(txn, self.dbs)
                    result = fn(tx)
                    tx._flush()
                except BaseException:
                    txn.abort()
                    raise
                txn.commit()
                return result
            except lmdb.MapFullError:
                self._grow()
        raise OperationFailed(f"the store in {self.path} cannot grow (is the disk full?)")

    def _begin(self, *, write: bool) -> lmdb.Transaction:
        for attempt in range(3):
            try:
                return self.env.begin(write=write)
            except lmdb.MapResizedError:
                # Another process grew the map past ours: adopt its size.
                self.env.set_mapsize(0)
            except lmdb.ReadersFullError:
                if attempt or not self.env.reader_check():
                    raise
        return self.env.begin(write=write)

    def _grow(self) -> None:
        before = self.env.info()["map_size"]
        self.env.set_mapsize(0)  # another process may have grown it already
        if self.env.info()["map_size"] <= before:
            self.env.set_mapsize(before * 2)

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_private_dir(path: Path) -> None:
    if not path.exists():
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)  # makedirs' mode is filtered by the umask


def _open_env(path: Path, map_size: int, readonly: bool) -> lmdb.Environment:
    for attempt in range(4):
        try:
            return lmdb.open(
                str(path),
                readonly=readonly,
                map_size=map_size,
                max_dbs=MAX_DBS,
                max_readers=MAX_READERS,
                max_spare_txns=0,
                mode=0o700,  # LMDB gives the files mode & ~0o111: 0600
            )
        except (lmdb.InvalidError, lmdb.VersionMismatchError):
            raise
        except lmdb.Error:
            # LMDB documents that an open can fail while another process opens or closes
            # the same environment; a short jittered retry covers it.
            if attempt == 3:
                raise
            import random

            time.sleep(random.uniform(0.01, 0.05))
    raise AssertionError("unreachable")
