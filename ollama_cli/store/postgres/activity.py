"""What the daemons report beside the jobs, and how many jobs finish per minute, on
PostgreSQL: functions of a transaction that `engine.py` delegates to (LMDB's are in
`queue/activity.py`).

- `backend_states` and `run_progress`: rows per daemon, replaced whole at its heartbeat
  (delete and insert in one transaction), deleted with the daemon; readers leave out the
  rows of daemons that are not alive.
- Jobs finished per minute: sharded counters (`counts`) named `finished/<minute>`, added by
  the transaction that ends a job like every counter, at its end in name order, so they are
  no hot row and take part in no deadlock. Those of minutes more than an hour old are
  deleted when a daemon records its backends (every heartbeat), so at most 61 minutes of
  16 shards are ever kept: a read is one index range of at most that many rows.
- Ready jobs per (priority, model): counters `ready_model/<rank>/<model>` kept where
  `ready/<rank>` is (their migration, `schema.ACTIVITY`, builds them for jobs queued before)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ollama_cli.store.postgres.transactions import Tx
from ollama_cli.store.records import BackendState, RunProgress

MINUTES = 60
FINISHED = "finished/"
READY_MODEL = "ready_model/"

def check(tx: Tx, counted: dict[str, int]) -> list[str]:
    """Where the ready counters per (priority, model) disagree with the jobs."""
    actual = {ready_model_counter(rank, model): int(n) for rank, model, n in tx.all(
        "SELECT priority, model_key, count(*) FROM jobs WHERE state = 'ready' GROUP BY priority, model_key")}
    kept = {name: n for name, n in counted.items() if name.startswith(READY_MODEL) and n}
    return [f"{name} is {kept.get(name, 0)}, the jobs say {actual.get(name, 0)}"
            for name in sorted(set(actual) | set(kept)) if kept.get(name, 0) != actual.get(name, 0)]


def ready_model_counter(rank: int, model_key: str) -> str:
    return f"{READY_MODEL}{rank}/{model_key}"


def _finished_counter(minute: int) -> str:
    return f"{FINISHED}{minute:012d}"  # zero-padded: names sort as minutes do


def note_finished(tx: Tx, now: float) -> None:
    tx.add(_finished_counter(int(now // 60)), 1)


def finished_per_minute(tx: Tx, now: float) -> list[int]:
    minute = int(now // 60)
    found = dict(tx.all("SELECT name, sum(n) FROM counts WHERE name BETWEEN %s AND %s GROUP BY name",
                        (_finished_counter(minute - MINUTES + 1), _finished_counter(minute))))
    return [int(found.get(_finished_counter(m), 0)) for m in range(minute - MINUTES + 1, minute + 1)]


def ready_depth(tx: Tx) -> list[tuple[int, str, int]]:
    out = []
    for name, n in tx.all("SELECT name, sum(n) FROM counts WHERE name LIKE %s GROUP BY name HAVING sum(n) > 0",
                          (READY_MODEL + "%",)):
        rank, model = name[len(READY_MODEL):].split("/", 1)
        out.append((int(rank), model, int(n)))
    return sorted(out)


def record_backends(tx: Tx, daemon_id: str, states: Sequence[BackendState], now: float) -> None:
    tx.cur.execute("DELETE FROM backend_states WHERE daemon_id = %s", (daemon_id,))
    for position, s in enumerate(states):
        tx.cur.execute(
            "INSERT INTO backend_states (daemon_id, position, url, up, installed, loaded, slots, in_use, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (daemon_id, position, s.url, s.up, None if s.installed is None else list(s.installed), list(s.loaded),
             s.slots, s.in_use, now))
    # The heartbeat keeps the finish counters to their hour: no transaction adds to minutes past.
    tx.cur.execute("DELETE FROM counts WHERE name LIKE %s AND name < %s",
                   (FINISHED + "%", _finished_counter(int(now // 60) - MINUTES)))


def backends(tx: Tx, alive: Callable[[str], bool]) -> list[BackendState]:
    return [BackendState(url, daemon_id, up, None if installed is None else tuple(installed), tuple(loaded),
                         slots, in_use, updated_at)
            for daemon_id, url, up, installed, loaded, slots, in_use, updated_at in tx.all(
                "SELECT daemon_id, url, up, installed, loaded, slots, in_use, updated_at FROM backend_states "
                "ORDER BY daemon_id, position")
            if alive(daemon_id)]


def record_progress(tx: Tx, daemon_id: str, runs: Sequence[RunProgress], now: float) -> None:
    tx.cur.execute("DELETE FROM run_progress WHERE daemon_id = %s", (daemon_id,))
    if runs:
        tx.cur.execute(
            "INSERT INTO run_progress (daemon_id, job_id, tokens, started_at, updated_at) "
            "SELECT %s, job_id, tokens, started_at, %s FROM unnest(%s::bigint[], %s::bigint[], %s::float8[]) "
            "AS r(job_id, tokens, started_at) ON CONFLICT DO NOTHING",
            (daemon_id, now, [r.job_id for r in runs], [r.tokens for r in runs], [r.started_at for r in runs]))


def progress(tx: Tx, alive: Callable[[str], bool]) -> list[RunProgress]:
    return [RunProgress(job_id, daemon_id, tokens, started_at, updated_at)
            for job_id, daemon_id, tokens, started_at, updated_at in tx.all(
                "SELECT job_id, daemon_id, tokens, started_at, updated_at FROM run_progress ORDER BY job_id")
            if alive(daemon_id)]


def forget(tx: Tx, daemon_ids: Sequence[str]) -> None:
    """Daemons' reports go with them."""
    tx.cur.execute("DELETE FROM backend_states WHERE daemon_id = ANY(%s)", (list(daemon_ids),))
    tx.cur.execute("DELETE FROM run_progress WHERE daemon_id = ANY(%s)", (list(daemon_ids),))
