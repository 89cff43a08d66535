"""What the daemons report beside the jobs, and how many jobs finish per minute: the records
`top`, `info` and metrics read (`Engine.record_backends`, `record_progress`,
`finished_per_minute`, `ready_depth` on LMDB).

- `backend_states` and `run_progress` hold one record per daemon (its id -> a list), each
  replaced whole at its heartbeat, so a record is as long as the daemon's backends or its
  requests in flight, and removed with the daemon; readers leave out a dead daemon's.
- Jobs finished per minute are a ring of 60 entries in `meta` (`fpm/<minute mod 60>` ->
  the minute and its count), bumped by the transaction that ends a job
  (`indexes.transition`): an entry of an older minute is that minute's, and starts over
  when its slot comes round again. Reading it is 60 gets, whatever the number of jobs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ollama_cli.codec import pack, unpack
from ollama_cli.jobs import Priority
from ollama_cli.queue import indexes
from ollama_cli.store.keys import read_u64, u64

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx
    from ollama_cli.store.records import BackendState, RunProgress

MINUTES = 60  # the ring's length: an hour of throughput
_RING = [f"fpm/{slot:02d}".encode() for slot in range(MINUTES)]


def _ring_count(tx: Tx, minute: int) -> int:
    """The count of `minute` in its ring slot; 0 if the slot holds another minute (or is not whole)."""
    raw = tx.get("meta", _RING[minute % MINUTES])
    return read_u64(raw, 8) if raw is not None and len(raw) == 16 and read_u64(raw) == minute else 0


def note_finished(tx: Tx, now: float) -> None:
    """One more job finished in the minute of `now`."""
    minute = int(now // 60)
    tx.put("meta", _RING[minute % MINUTES], u64(minute) + u64(_ring_count(tx, minute) + 1))


def finished_per_minute(tx: Tx, now: float) -> list[int]:
    minute = int(now // 60)
    return [_ring_count(tx, m) for m in range(minute - MINUTES + 1, minute + 1)]


def ready_depth(tx: Tx) -> list[tuple[int, str, int]]:
    """From the per-(priority, model) counters: one get per model ever queued and priority."""
    models = sorted((name.decode(), digest) for digest, name in tx.scan("ready_models"))
    out = []
    for p in sorted(Priority, key=lambda p: p.rank):
        for name, digest in models:
            n = tx.counter(indexes.model_count_name(p.rank, digest))
            if n:
                out.append((p.rank, name, n))
    return out


def record(tx: Tx, table: str, daemon_id: str, rows: Sequence[tuple[Any, ...]]) -> None:
    tx.put(table, daemon_id.encode(), pack([list(r) for r in rows]))


def forget(tx: Tx, daemon_id: str) -> None:
    """A daemon's reports go with it."""
    tx.delete("backend_states", daemon_id.encode())
    tx.delete("run_progress", daemon_id.encode())


def _read(tx: Tx, table: str, alive: Callable[[str], bool], make: Callable[..., Any]) -> list[Any]:
    out = []
    for key, raw in tx.scan(table):
        daemon_id = key.decode()
        if not alive(daemon_id):
            continue
        try:
            out.extend(make(*row) for row in unpack(daemon_id, raw))
        except Exception:
            continue  # an unreadable report says nothing: left out, as `base.py` says
    return out


def backends(tx: Tx, alive: Callable[[str], bool]) -> list[BackendState]:
    from ollama_cli.store.records import BackendState

    def make(url: str, daemon_id: str, up: bool, installed: list[str] | None, loaded: list[str],
             slots: int, in_use: int, updated_at: float) -> BackendState:
        return BackendState(url, daemon_id, bool(up), None if installed is None else tuple(installed),
                            tuple(loaded), int(slots), int(in_use), float(updated_at))

    return _read(tx, "backend_states", alive, make)


def progress(tx: Tx, alive: Callable[[str], bool]) -> list[RunProgress]:
    from ollama_cli.store.records import RunProgress

    def make(job_id: int, daemon_id: str, tokens: int, started_at: float, updated_at: float) -> RunProgress:
        return RunProgress(int(job_id), daemon_id, int(tokens), float(started_at), float(updated_at))

    return sorted(_read(tx, "run_progress", alive, make))
