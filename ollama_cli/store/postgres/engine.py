"""The queue's operations on PostgreSQL (the `Engine` of `store/base.py`), written natively:
LMDB's `queue/` is the reference model of what each does, not code run here. This class
holds the connections and this process's daemon locks, and runs each operation as a
function of one transaction in the module that owns it:

- states.py: a job's row, its state column, the counters, the hand-on to dependents;
- submits.py: jobs in; reads.py: jobs, lists, counts, positions, batches out;
- changes.py: cancel, retry, clean, pause; result_cache.py: the result cache, exact and semantic;
- claims.py (with ready.py): the daemon's settle, claim and reclaim;
- stats.py: the statistics' hour buckets and feedback;
- daemons.py: daemon records and who is alive; health.py: `doctor`'s checks.

Concurrency, operation by operation (READ COMMITTED: each statement sees what was
committed when it began, and a row lock re-reads the row's newest version):
- A claim reads the head of the ready index without locking, lets the planner choose,
  then takes the chosen rows with one conditional UPDATE over `FOR UPDATE SKIP LOCKED`:
  a row another daemon took meanwhile is no longer ready, or is locked, and is left out.
- Every other change locks the job rows it changes (`FOR UPDATE`, several in id order)
  before deciding from their contents; a settle also matches the lease token, which
  fences a daemon that lost its job.
- A submit with dependencies locks them (`FOR SHARE`, in id order) before reading their
  state, and a finishing job locks its dependents (in id order) before handing on: so a
  dependency that finishes while a job that waits on it is being submitted either is
  seen finished by the submit, or sees the new job among its dependents.
- Counters: each transaction adds its deltas to its connection's shard at the end, in
  name order, so counter rows are the last locks a transaction takes, always in one
  order: no deadlock between writers through them (schema.py says why shards).
- Deadlocks, serialization failures and lost connections: see transactions.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ollama_cli.errors import CorruptRecord, UsageError
from ollama_cli.jobs import Job, JobSpec, JobStatus, JobType
from ollama_cli.store.buckets import Bucket
from ollama_cli.store.postgres import (activity, changes, claims, daemons, health, hooks, liveness, partials,
                                       reads, result_cache, stats, submits)
from ollama_cli.store.postgres.transactions import Database, Tx
from ollama_cli.store.records import (BackendState, BatchEntry, Changed, DaemonInfo, HookEvent, PartialText, Planner,
                                      RunProgress, SemanticMatch, Settle, Tick)


class PostgresEngine:
    """The store in a PostgreSQL database, shared by every host that has its URL."""

    name = "postgresql"

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self._db = Database(url, create=create)
        self.location = self._db.location
        self.notifier = liveness.Notifier(url)
        self._locks: dict[str, liveness.DaemonLock] = {}  # of daemons in this process
        self._registered: dict[str, DaemonInfo] = {}

    def now(self) -> float:
        return self._db.now()

    def close(self) -> None:
        for lock in list(self._locks.values()):
            lock.release()
        self.notifier.close()
        self._db.close()

    def __enter__(self) -> PostgresEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ jobs in

    def submit(self, spec: JobSpec, now: float) -> Job:
        return self.submit_many((spec,), now)[0]

    def submit_many(self, specs: Sequence[JobSpec], now: float) -> list[Job]:
        return self._db.write(lambda tx: submits.submit_many(tx, specs, now))

    def submit_batch(self, specs: Sequence[JobSpec], now: float, *, name: str | None = None) -> tuple[str, list[Job]]:
        return self._db.write(lambda tx: submits.submit_batch(tx, specs, now, name))

    # ------------------------------------------------------------ reads

    def get_job(self, job_id: int) -> Job | None:
        return self._db.read(lambda tx: reads.get_job(tx, job_id))

    def get_jobs(self, ids: Iterable[int]) -> list[Job | CorruptRecord | None]:
        wanted = list(ids)
        return self._db.read(lambda tx: reads.get_jobs(tx, wanted))

    def get_request(self, job_id: int) -> dict[str, Any]:
        return self._db.read(lambda tx: reads.get_request(tx, job_id))

    def get_result(self, job_id: int) -> dict[str, Any] | None:
        return self._db.read(lambda tx: reads.get_result(tx, job_id))

    def list_jobs(self, *, statuses: Iterable[JobStatus] = (), model: str | None = None,
                  job_type: JobType | None = None, batch: str | None = None, name: str | None = None,
                  limit: int | None = None, offset: int = 0,
                  before: int | None = None) -> tuple[list[Job], list[CorruptRecord]]:
        return self._db.read(lambda tx: reads.list_jobs(
            tx, statuses=statuses, model=model, job_type=job_type, batch=batch, name=name, limit=limit,
            offset=offset, before=before))

    def counts(self) -> dict[str, int]:
        return self._db.read(reads.counts)

    def positions(self, jobs: Iterable[Job], now: float) -> dict[int, int]:
        wanted = reads.pending_keys(jobs)
        if not wanted:
            return {}
        return self._db.snapshot(lambda tx: reads.positions(tx, wanted, now))

    def ids_with_status(self, *statuses: JobStatus) -> list[int]:
        return self._db.snapshot(lambda tx: reads.ids_with_status(tx, statuses))

    def partial_output(self, job_id: int) -> PartialText | None:
        return self._db.read(lambda tx: partials.read(tx, job_id))

    # ------------------------------------------------------------ changes

    def cancel(self, ids: Sequence[int], now: float) -> list[Changed]:
        return self._db.write(lambda tx: changes.cancel(tx, ids, now))

    def retry(self, ids: Sequence[int] | None, now: float) -> list[Changed]:
        return self._db.write(lambda tx: changes.retry(tx, ids, now))

    def pause(self) -> None:
        self._db.write(lambda tx: changes.set_paused(tx, True))

    def resume(self) -> None:
        self._db.write(lambda tx: changes.set_paused(tx, False))

    def is_paused(self) -> bool:
        return self._db.read(changes.is_paused)

    def clean(self, statuses: Iterable[JobStatus], now: float, *, older_than: float | None = None) -> int:
        chosen = list(dict.fromkeys(statuses))
        for status in chosen:
            if not status.finished:
                raise UsageError(f"clean deletes finished jobs only, not {status.value} ones")
        if not chosen:
            return 0
        return self._db.write(lambda tx: changes.clean(tx, chosen, now, older_than))

    # ------------------------------------------------------------ batches

    def batch_counts(self, name: str) -> dict[str, Any]:
        return self._db.read(lambda tx: reads.batch_counts(tx, name))

    def batch_jobs(self, name: str, *, after: int = 0, limit: int | None = None,
                   results: bool = False) -> list[BatchEntry]:
        return self._db.read(lambda tx: reads.batch_jobs(tx, name, after=after, limit=limit, results=results))

    def batch_names(self) -> list[str]:
        return self._db.read(reads.batch_names)

    # ------------------------------------------------------------ cache

    def cache_stats(self) -> dict[str, Any]:
        return result_cache.stats(self._db.read(lambda tx: reads.counters(tx, "cache/")))

    def cache_list(self, *, limit: int | None = None, model: str | None = None) -> list[dict[str, Any]]:
        return self._db.read(lambda tx: result_cache.entries(tx, limit=limit, model=model))

    def cache_clear(self, now: float = 0.0, *, model: str | None = None, older_than: float | None = None) -> int:
        return self._db.write(lambda tx: result_cache.clear(tx, now, model=model, older_than=older_than))

    def semantic_lookup(self, scope: bytes, vector: bytes, threshold: float, now: float) -> SemanticMatch | None:
        return result_cache.semantic_lookup(self._db, scope, vector, threshold, now)

    # ------------------------------------------------------------ statistics

    def feedback(self, job_id: int, score: float, reason: str | None, category: str | None,
                 now: float) -> Job:
        return self._db.write(lambda tx: stats.feedback(tx, job_id, score, reason, category))

    def stat_buckets(self, since_hour: int | None = None) -> list[Bucket]:
        return self._db.read(lambda tx: stats.read(tx, since_hour))

    # ------------------------------------------------------------ daemons

    def daemon_lock(self) -> liveness.DaemonLock:
        key = self._db.read(lambda tx: tx.one("SELECT nextval('daemon_lock_keys')"))[0]
        lock = liveness.DaemonLock(self.url, int(key), lambda gone: self._locks.pop(gone.id, None))
        self._locks[lock.id] = lock
        return lock

    def _live_keys(self, tx: Tx, now: float) -> set[int]:
        return daemons.live_keys(tx, now, {lock.key for lock in self._locks.values()})

    def is_alive(self, daemon_id: str) -> bool:
        key = liveness.lock_key(daemon_id)
        return key is not None and key in self._db.read(lambda tx: self._live_keys(tx, self.now()))

    def register(self, info: DaemonInfo) -> None:
        import socket

        if info.id in self._locks:
            self._registered[info.id] = info
        self._db.write(lambda tx: daemons.register(tx, info, socket.gethostname()))

    def heartbeat(self, daemon_id: str, now: float) -> None:
        """Also takes this process's daemon lock again if its connection was lost, and
        registers it again if another daemon took it for dead meanwhile."""
        lock = self._locks.get(daemon_id)
        if lock is not None:
            lock.ensure()
        info = self._registered.get(daemon_id)
        if not self._db.write(lambda tx: daemons.heartbeat(tx, daemon_id, now)) and info is not None:
            self.register(info._replace(last_heartbeat=now))

    def unregister(self, daemon_id: str) -> None:
        self._registered.pop(daemon_id, None)
        self._db.write(lambda tx: daemons.unregister(tx, daemon_id))

    def daemons(self) -> list[DaemonInfo]:
        return self._db.read(daemons.listed)

    # ------------------------------------- what living daemons know (top, info)

    def _alive(self, tx: Tx) -> Callable[[str], bool]:
        keys = self._live_keys(tx, self.now())
        return lambda daemon_id: liveness.lock_key(daemon_id) in keys

    def record_backends(self, daemon_id: str, states: Sequence[BackendState], now: float) -> None:
        states = list(states)
        self._db.write(lambda tx: activity.record_backends(tx, daemon_id, states, now))

    def backends(self) -> list[BackendState]:
        return self._db.snapshot(lambda tx: activity.backends(tx, self._alive(tx)))

    def record_progress(self, daemon_id: str, runs: Sequence[RunProgress], now: float) -> None:
        runs = list(runs)
        self._db.write(lambda tx: activity.record_progress(tx, daemon_id, runs, now))

    def progress(self) -> list[RunProgress]:
        return self._db.snapshot(lambda tx: activity.progress(tx, self._alive(tx)))

    def finished_per_minute(self, now: float) -> list[int]:
        return self._db.read(lambda tx: activity.finished_per_minute(tx, now))

    def ready_depth(self) -> list[tuple[int, str, int]]:
        return self._db.read(activity.ready_depth)

    # ------------------------------------------------------------ the daemon's step

    def settle_and_claim(self, settles: Sequence[Settle], now: float, *, owner: str,
                         planner: Planner | None = None, lookahead: int | None = None) -> Tick:
        return self._db.write(lambda tx: claims.settle_and_claim(
            tx, settles, now, owner=owner, planner=planner, lookahead=lookahead))

    def write_partials(self, parts: Sequence[PartialText]) -> None:
        self._db.write(lambda tx: partials.write(tx, parts))

    def reclaim(self, now: float) -> list[Job]:
        return self._db.write(lambda tx: claims.reclaim(tx, now, self._live_keys(tx, now)))

    # ------------------------------------------------------------ hooks

    def record_hooks_until(self, until: float) -> None:
        self._db.write(lambda tx: hooks.record_until(tx, until))

    def claim_hook_events(self, owner: str, limit: int, *, done: Sequence[int] = ()) -> list[HookEvent]:
        done = list(done)
        if not done and not self._db.read(hooks.pending):
            return []  # the daemon's poll, nothing there: no write transaction

        def write(tx: Tx) -> list[HookEvent]:
            hooks.done(tx, done)
            return hooks.claim(tx, owner, liveness.lock_key(owner), self._live_keys(tx, self.now()), limit)

        return self._db.write(write)

    def hook_events_pending(self) -> int:
        return self._db.read(hooks.pending)

    # ------------------------------------------------------------ health

    def check(self) -> list[str]:
        return self._db.snapshot(health.check)
