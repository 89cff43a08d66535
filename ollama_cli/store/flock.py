"""Daemon liveness on one machine: each daemon holds an exclusive flock on its own file in
`<data dir>/daemons/` for as long as its process lives, and the kernel drops the lock when the
process dies, however it dies. So "is this daemon alive?" is one non-blocking lock attempt:
no PID reuse, no clock.

The folder may have been prepared by someone else: it is opened without following a symbolic
link (a planted `daemons -> /elsewhere` would make the sweep delete `*.lock` files there), and
every file in it is reached through that open folder, never through a path, and never through
a link."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ollama_cli.errors import UsageError

_SUFFIX = ".lock"


def _file_name(daemon_id: str) -> str | None:
    """The lock file of a daemon id; None for an id that could name a file elsewhere (lease
    owners are read from the store, which may not have been written by us)."""
    if not daemon_id or daemon_id.startswith(".") or "/" in daemon_id or "\x00" in daemon_id:
        return None
    return daemon_id + _SUFFIX


class FlockLock:
    """This daemon's lock: taken at creation, held until `release()` or the process ends."""

    def __init__(self, liveness: FlockLiveness) -> None:
        import secrets  # not at module level: it imports hashlib, and `submit` loads this module

        self.id = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._liveness = liveness
        with liveness.folder(create=True) as fd:
            # Locked under a temporary name, then renamed: a file under the final name is
            # locked from the moment it exists, so a sweep never takes a live daemon for dead.
            temp = f".{self.id}.tmp"
            self._fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                               0o600, dir_fd=fd)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temp, self.id + _SUFFIX, src_dir_fd=fd, dst_dir_fd=fd)
        liveness.mine.add(self.id)

    def release(self) -> None:
        self._liveness.forget([self.id])
        self._liveness.mine.discard(self.id)
        os.close(self._fd)


class FlockLiveness:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "daemons"
        self.mine: set[str] = set()  # ids of the locks this process holds

    @contextmanager
    def folder(self, *, create: bool = False) -> Iterator[int | None]:
        """The folder, open (None if it does not exist and `create` is not asked)."""
        if create:
            try:
                os.mkdir(self.path, 0o700)
            except FileExistsError:
                pass
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            if create:
                raise
            yield None
            return
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UsageError(f"{self.path} is not a folder (a symbolic link?): refusing to use it "
                                 "for daemon locks; remove it") from None
            raise
        try:
            yield fd
        finally:
            os.close(fd)

    def is_alive(self, daemon_id: str) -> bool:
        if daemon_id in self.mine:
            return True
        name = _file_name(daemon_id)
        with self.folder() as fd:
            if fd is None or name is None:
                return False
            try:
                lock = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:  # no such file, or a link: no daemon holds it
                return False
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            finally:
                os.close(lock)
            return False

    def ids(self) -> set[str]:
        """Ids of every daemon that left a lock file, registered or not (one killed while
        starting never registered)."""
        with self.folder() as fd:
            if fd is None:
                return set()
            return {name[:-len(_SUFFIX)] for name in os.listdir(fd)
                    if name.endswith(_SUFFIX) and not name.startswith(".")}

    def forget(self, ids: list[str]) -> None:
        """Remove the lock files of these daemons (a leftover file is harmless)."""
        with self.folder() as fd:
            if fd is None:
                return
            for name in filter(None, map(_file_name, ids)):
                try:
                    os.unlink(name, dir_fd=fd)
                except FileNotFoundError:
                    pass
