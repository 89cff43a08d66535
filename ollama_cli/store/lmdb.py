"""LMDB: one environment in the data dir, its named tables, and short transactions.

Bytes in, bytes out: the rooms above give meaning to the keys (`store/tables.py` lists them). Every process opens the
environment with the same parameters (MAX_DBS, MAX_READERS) and exactly once.
A write is a function of a transaction so that it can be run again after the map
grows: nobody sees MapFullError. An existing folder is used only if it is the user's own
and closed to others, with plain files of theirs in it, and a data.mdb that holds every
page its meta page names: anything else is refused before LMDB reads it."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TypeVar

import lmdb

from ollama_cli.errors import NotFound, OperationFailed, StoreLockLost, StoreWriteFailed, UsageError
from ollama_cli.store.keys import prefix_upper, read_u64, u64
from ollama_cli.store.tables import DATABASES

T = TypeVar("T")

# Every process opens the environment with these same values: max_dbs is per handle and
# max_readers is fixed by whichever process creates the lock file first.
MAX_DBS = 32  # room for the tables of what comes next (statistics, hooks, partial output, vectors)
MAX_READERS = 1024
# Virtual address space only: data.mdb grows with the pages in use, and the store doubles
# the map when it fills.
MAP_SIZE = 1 << 30
WAIT_NOTICE_AFTER = 2.0  # seconds a write waits for the write lock before saying so
FULL_BELOW = 1 << 20  # free bytes under which a refused commit is put down to a full disk
LMDB_MAGIC = 0xBEEFC0DE  # the first four bytes of lock.mdb

class Tx:
    """A transaction over the named databases: LMDB's internal layer, on which the LMDB
    engine runs the queue's functions (`store.base.Tx` says what each method guarantees).

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
            if value:
                self._txn.put(name.encode(), u64(value), db=meta)
            else:  # absent reads as 0; counts per block and model would pile up
                self._txn.delete(name.encode(), db=meta)

    def scan(self, db: str, prefix: bytes = b"", *, start: bytes | None = None,
             reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with prefix, in key order or reversed.
        `start` (a key starting with prefix) positions the scan at the first key >= start, or,
        reversed, at the last key <= start."""
        cur = self._txn.cursor(db=self._dbs[db])
        if reverse and start is not None:
            if not cur.set_range(start):
                if not cur.last():
                    return
            elif cur.key() != start and not cur.prev():
                return
            step = cur.prev
        elif reverse:
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
            if type(key) is not bytes:  # a transaction with buffers: keys are small, values stay views
                key = bytes(key)
            if not key.startswith(prefix):
                return
            yield key, cur.value()
            if not step():
                return


class Store:
    """The process's one handle on the environment in `path`: LMDB's internal layer, used by
    the LMDB engine (`lmdb_engine.py`) and by nothing above the store."""

    def __init__(self, path: Path, *, map_size: int = MAP_SIZE, readonly: bool = False,
                 on_wait: Callable[[int | None], None] | None = None, create: bool = True) -> None:
        """`readonly` for commands that only read: py-lmdb opens named databases in a write
        transaction unless the environment is read-only, and that would make `status`
        wait behind any writer. A store that does not exist yet is created writable.
        `on_wait(pid)` is called once if a write waits more than WAIT_NOTICE_AFTER seconds
        for another process's write lock (pid None when it cannot be told). Without `create`,
        a folder that holds no store is NotFound, and is left as it is."""
        self.path = Path(path)
        if not create and not os.path.lexists(self.path / "data.mdb") and not self.path.is_file():
            raise NotFound(f"no store in {self.path} (nothing was ever submitted there: is the data dir right?)")
        self._on_wait = on_wait
        self._lock_fd: int | None = None  # see _writer_pid
        _make_private_dir(self.path)
        _check_files(self.path)
        readonly = readonly and (self.path / "data.mdb").exists()
        self.env = _open_env(self.path, map_size, readonly)
        try:
            _check_size(self.env, self.path)
        except BaseException:
            self.env.close()
            raise
        self._lock_id = _file_id(self.path / "lock.mdb")
        # Slots of killed readers are not reclaimed by LMDB on its own.
        self.env.reader_check()
        if readonly:
            try:
                self.dbs = {n: self.env.open_db(n.encode(), create=False) for n in DATABASES}
                return
            except lmdb.NotFoundError:  # made by a version with fewer databases: create them
                self.env.close()
                self.env = _open_env(self.path, map_size, False)
        # A transaction of our own: the one py-lmdb's open_db begins keeps the GIL while it
        # waits for the write lock, and the wait notice could not be said.
        with self._waiting():
            txn = self._begin(write=True)
        with txn:
            self.dbs = {n: self.env.open_db(n.encode(), txn=txn) for n in DATABASES}

    @contextmanager
    def read(self, *, buffers: bool = False) -> Iterator[Tx]:
        """A short read transaction: never hold one across network calls or sleeps. With
        `buffers`, values are memoryviews of the map, valid only inside the transaction
        (the semantic cache reads its vectors so, without copying them)."""
        txn = self._begin(write=False, buffers=buffers)
        try:
            yield Tx(txn, self.dbs)
        finally:
            txn.abort()

    def write(self, fn: Callable[[Tx], T]) -> T:
        """Run fn in one write transaction and commit; all of it lands or none does.
        fn may run more than once (after the map grows), so it must be a pure
        function of the transaction: no outside effects (tests run every write twice).
        A commit the disk refuses raises StoreWriteFailed."""
        if self.lock_file_changed():
            raise StoreLockLost(self.path / "lock.mdb")
        for _ in range(40):
            try:
                with self._waiting():
                    txn = self._begin(write=True)
                try:
                    tx = Tx(txn, self.dbs)
                    result = fn(tx)
                    tx._flush()
                except BaseException:
                    txn.abort()
                    raise
                try:
                    txn.commit()
                except lmdb.MapFullError:
                    raise
                except lmdb.Error as exc:  # LMDB aborts a failed commit: nothing landed
                    raise self._write_failed(exc) from None
                return result
            except lmdb.MapFullError:
                self._grow()
        raise StoreWriteFailed(f"the store in {self.path} cannot grow (is the disk full?)")

    def lock_file_changed(self) -> bool:
        """Whether lock.mdb was deleted or replaced since this process opened the store. Its
        writer lock and reader table are then no longer the ones other processes use:
        a write from here could overwrite theirs."""
        return _file_id(self.path / "lock.mdb") != self._lock_id

    def _write_failed(self, exc: lmdb.Error) -> StoreWriteFailed:
        import shutil

        # A full disk shows as ENOSPC, or as EIO when a write was cut short.
        if shutil.disk_usage(self.path).free < FULL_BELOW:
            return StoreWriteFailed(f"the disk holding the store in {self.path} is full: nothing was "
                                    "written; free some space and try again")
        return StoreWriteFailed(f"writing to the store in {self.path} failed ({exc}): nothing was written")

    def _waiting(self) -> AbstractContextManager[None]:
        """Around a wait for the write lock: a process suspended inside a write (Ctrl-Z)
        blocks every writer, so say who after a moment rather than hang silently."""
        return _lock_watch().waiting(self._notice_wait) if self._on_wait else nullcontext()

    def _notice_wait(self) -> None:
        on_wait, self._on_wait = self._on_wait, None  # once per store is enough
        if on_wait is not None:
            on_wait(self._writer_pid())

    def _writer_pid(self) -> int | None:
        """The pid of the process that holds the write lock, where lock.mdb has the layout of
        py-lmdb's LMDB on x86-64 Linux with glibc: after a 64-byte header, the writer's robust
        pthread mutex, which records its owner's thread id. The file stays open until
        close(): closing any descriptor of it would drop this process's fcntl locks on it,
        which tell other processes the environment is in use."""
        if os.uname().machine != "x86_64":
            return None
        try:
            if self._lock_fd is None:
                self._lock_fd = os.open(self.path / "lock.mdb", os.O_RDONLY | os.O_NOFOLLOW)
            head = os.pread(self._lock_fd, 96, 0)
        except OSError:
            return None
        if len(head) < 96:
            return None
        magic, reader_kind, owner, writer_kind = (int.from_bytes(head[o:o + 4], "little")
                                                  for o in (0, 24, 72, 80))
        if magic != LMDB_MAGIC or not owner or writer_kind != reader_kind:
            return None
        try:  # the owner is a thread: its process is its thread group
            status = Path(f"/proc/{owner}/status").read_text()
        except OSError:
            return None
        return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Tgid:")), None)

    def _begin(self, *, write: bool, buffers: bool = False) -> lmdb.Transaction:
        for attempt in range(3):
            try:
                return self.env.begin(write=write, buffers=buffers)
            except lmdb.MapResizedError:
                # Another process grew the map past ours: adopt its size.
                self.env.set_mapsize(0)
            except lmdb.ReadersFullError:
                if attempt or not self.env.reader_check():
                    raise
        return self.env.begin(write=write, buffers=buffers)

    def _grow(self) -> None:
        before = self.env.info()["map_size"]
        self.env.set_mapsize(0)  # another process may have grown it already
        if self.env.info()["map_size"] <= before:
            self.env.set_mapsize(before * 2)

    def close(self) -> None:
        self.env.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _LockWatch:
    """One thread per process that calls a wait's notice once the wait for the write lock
    has lasted WAIT_NOTICE_AFTER seconds: the waiting thread is inside LMDB, which has no
    timeout. Not a timer per write, which would start a thread per commit; and it holds
    a store only while that store waits, so a store dropped without close() still closes
    its environment."""

    def __init__(self) -> None:
        import threading

        self._cond = threading.Condition()
        self._waits: dict[object, tuple[float, Callable[[], None]]] = {}
        self._idle = False  # waiting for a wait to begin, with no deadline
        threading.Thread(target=self._watch, name="ollama-q-lock-wait", daemon=True).start()

    @contextmanager
    def waiting(self, notice: Callable[[], None]) -> Iterator[None]:
        key = object()
        with self._cond:
            self._waits[key] = (time.monotonic(), notice)
            if self._idle:  # otherwise it wakes at an earlier deadline and sees this one
                self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._waits.pop(key, None)

    def _watch(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    due = [k for k, (since, _) in self._waits.items() if since + WAIT_NOTICE_AFTER <= now]
                    if due:
                        break
                    deadline = min((since + WAIT_NOTICE_AFTER for since, _ in self._waits.values()), default=None)
                    self._idle = deadline is None
                    self._cond.wait(None if deadline is None else deadline - now)
                    self._idle = False
                notices = [self._waits.pop(k)[1] for k in due]
            for notice in notices:
                notice()


_WATCH: _LockWatch | None = None


def _lock_watch() -> _LockWatch:
    global _WATCH
    if _WATCH is None:
        _WATCH = _LockWatch()
    return _WATCH


def _make_private_dir(path: Path) -> None:
    """Create the folder 0700; or check that an existing one is the user's own and closed
    to others: a folder someone else prepared could hold their data.mdb, which would
    then receive the user's prompts, readable by them."""
    if not path.exists():
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)  # makedirs' mode is filtered by the umask
        return
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"the data dir {path} is not a folder: give a folder with --data-dir or OLLAMA_Q_DATA_DIR")
    if st.st_uid != os.geteuid():
        raise UsageError(f"the data dir {path} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}): "
                         "use a folder of your own (--data-dir or OLLAMA_Q_DATA_DIR)")
    if st.st_mode & 0o077:
        raise UsageError(f"the data dir {path} is open to other users (mode {stat.S_IMODE(st.st_mode):04o}): "
                         f"if what it holds is yours, run `chmod 700 {path}`")


def _check_files(path: Path) -> None:
    """The store's files must be plain files of the user's own. An empty data.mdb is a
    store that lost its data, not a new one: LMDB would start over, ids from 1."""
    for name in ("data.mdb", "lock.mdb"):
        file = path / name
        try:
            st = file.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UsageError(f"{file} is a symbolic link: the store's files must be plain files in the data "
                             "dir; remove the link, or use another folder (--data-dir)")
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{file} is not a plain file: remove it, or use another folder (--data-dir)")
        if st.st_uid != os.geteuid():
            raise UsageError(f"{file} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}): "
                             "use a folder of your own (--data-dir or OLLAMA_Q_DATA_DIR)")
    data = path / "data.mdb"
    if data.exists() and data.stat().st_size == 0:
        _wait_for_creator(path / "lock.mdb")
        if data.stat().st_size == 0:
            raise OperationFailed(f"{data} is empty: the store lost its data (truncated?). Restore data.mdb "
                                  "from a backup, or delete data.mdb and lock.mdb to start an empty store")


def _wait_for_creator(lock: Path) -> None:
    """Until a process creating the store has written its first pages. LMDB's first opener
    holds a write lock on lock.mdb's first byte until then, and a read lock waits it out.
    Safe only before this process opens the environment: closing the file drops every
    fcntl lock this process holds on it."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH, 1, 0, os.SEEK_SET)
    finally:
        os.close(fd)


def _check_size(env: lmdb.Environment, path: Path) -> None:
    """Refuse a data.mdb shorter than its last committed page: LMDB maps the file, and
    reading a page past its end kills the process with SIGBUS. The meta pages, read at
    open, say where the last page is; a commit writes its pages before its meta page,
    so a file being written by another process is never shorter than this."""
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = (path / "data.mdb").stat().st_size
    if size < need:
        raise OperationFailed(f"{path / 'data.mdb'} is damaged: {size} bytes, but its last committed page ends "
                              f"at byte {need} (truncated?). Restore it from a backup; nothing was changed")


def _file_id(file: Path) -> tuple[int, int] | None:
    try:
        st = file.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


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
