"""Which daemons exist and which are alive.

A daemon holds an exclusive flock on its own file under `<data dir>/daemons/` for as long
as its process lives; the kernel drops the lock when the process dies, however it dies.
So "is this lease owner alive?" is one non-blocking lock attempt: no PID reuse, no clock.
The record in the store (pid, hosts, heartbeat) is what `info` shows."""

from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO

from ollama_cli.codec import pack, unpack
from ollama_cli.store.base import DaemonInfo
from ollama_cli.store.lmdb import Tx


def lock_dir(data_dir: Path) -> Path:
    return data_dir / "daemons"


class Liveness:
    """This daemon's lock: taken at start, held until the process ends."""

    def __init__(self, data_dir: Path) -> None:
        self.id = f"{os.getpid()}-{secrets.token_hex(4)}"
        folder = lock_dir(data_dir)
        folder.mkdir(mode=0o700, exist_ok=True)
        self.path = folder / f"{self.id}.lock"
        # Locked under a temporary name, then renamed: a file under the final name is
        # locked from the moment it exists, so a sweep never takes a live daemon for dead.
        temp = folder / f".{self.id}.tmp"
        self._file: BinaryIO = open(temp, "wb")
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(temp, self.path)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
        self._file.close()


def is_alive(data_dir: Path, daemon_id: str) -> bool:
    path = lock_dir(data_dir) / f"{daemon_id}.lock"
    try:
        with open(path, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return False


def lock_ids(data_dir: Path) -> set[str]:
    """Ids of every daemon that left a lock file, registered or not (one killed while
    starting never registered)."""
    return {p.name[:-5] for p in lock_dir(data_dir).glob("*.lock")}


def forget_dead(data_dir: Path, ids: list[str]) -> None:
    """Remove lock files of daemons known dead (best effort; a leftover file is harmless)."""
    for daemon_id in ids:
        (lock_dir(data_dir) / f"{daemon_id}.lock").unlink(missing_ok=True)


def register(tx: Tx, info: DaemonInfo) -> None:
    tx.put("daemons", info.id.encode(), pack(info._asdict()))


def heartbeat(tx: Tx, daemon_id: str, now: float) -> None:
    raw = tx.get("daemons", daemon_id.encode())
    if raw is not None:
        rec: dict[str, Any] = unpack(daemon_id, raw)
        rec["last_heartbeat"] = now
        tx.put("daemons", daemon_id.encode(), pack(rec))


def unregister(tx: Tx, daemon_id: str) -> None:
    tx.delete("daemons", daemon_id.encode())


def daemons(tx: Tx) -> list[DaemonInfo]:
    out = []
    for key, raw in tx.scan("daemons"):
        try:
            out.append(DaemonInfo(**unpack(key, raw)))
        except Exception:
            continue  # an unreadable record says nothing about a live daemon
    return out
