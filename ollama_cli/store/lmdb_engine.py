"""The LMDB engine: the store's operations (`base.py`) as the queue's functions (`queue/`) over
LMDB's key-value transactions (`lmdb.py`), one transaction per operation; daemon liveness as
flock'd files in the data dir (`flock.py`); wake-ups by polling, as LMDB cannot tell one process
that another committed.

Every write function here may run more than once (`base.Tx`): what it is given is made a list
before, never consumed inside. Records and liveness are imported where they are used: `submit`
and `status` need neither."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ollama_cli import cache, queue
from ollama_cli.codec import pack, unpack
from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import Job, JobSpec, JobStatus, JobType
from ollama_cli.queue.faults import JobFault, blame
from ollama_cli.queue.transitions import CLAIM_SCAN_LIMIT
from ollama_cli.store.keys import u64
from ollama_cli.store.lmdb import Store

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx
    from ollama_cli.store.buckets import Bucket
    from ollama_cli.store.flock import FlockLiveness, FlockLock
    from ollama_cli.store.records import (BackendState, BatchEntry, Changed, DaemonInfo, HookEvent, PartialText,
                                          Planner, RunProgress, SemanticMatch, Settle, Tick)


T = TypeVar("T")


class PollingNotifier:
    def wait(self, timeout: float) -> None:
        """Sleeps `timeout`: LMDB has no way to hear of another process's commit."""
        time.sleep(max(0.0, timeout))


class LmdbEngine:
    """The store in one folder on this machine (`store.open_store` says what the arguments do)."""

    name = "lmdb"

    def __init__(self, path: Path, *, readonly: bool = False,
                 on_wait: Callable[[int | None], None] | None = None, create: bool = True) -> None:
        self.kv = Store(path, readonly=readonly, on_wait=on_wait, create=create)  # LMDB's key-value layer
        if not self.kv.env.flags()["readonly"]:
            self._migrate()
        self.location = str(self.kv.path)
        self.notifier = PollingNotifier()
        self._flock: FlockLiveness | None = None

    def now(self) -> float:
        return time.time()  # one machine, one clock

    def _migrate(self) -> None:
        """Build what this version keeps beside `ready` and beside the cache's entries in a
        store written without it (by an earlier version, or since by one): one write
        transaction, once."""
        with self.kv.read() as tx:
            if not queue.needs_migration(tx) and not cache.needs_migration(tx):
                return
        now = self.now()

        def migrate(tx: Tx) -> None:
            if queue.needs_migration(tx):
                queue.migrate(tx)
            if cache.needs_migration(tx):
                from ollama_cli.cache.entries import migrate

                migrate(tx, now)

        self.kv.write(migrate)

    @property
    def _liveness(self) -> FlockLiveness:
        if self._flock is None:
            from ollama_cli.store.flock import FlockLiveness

            self._flock = FlockLiveness(self.kv.path)
        return self._flock

    # ------------------------------------------------------------------- jobs in

    def submit(self, spec: JobSpec, now: float) -> Job:
        return self.kv.write(lambda tx: queue.submit(tx, spec, now))

    def submit_many(self, specs: Sequence[JobSpec], now: float) -> list[Job]:
        specs = list(specs)
        return self.kv.write(lambda tx: queue.submit_many(tx, specs, now))

    def submit_batch(self, specs: Sequence[JobSpec], now: float, *, name: str | None = None) -> tuple[str, list[Job]]:
        specs = list(specs)
        return self.kv.write(lambda tx: queue.submit_batch(tx, specs, now, name))

    # --------------------------------------------------------------------- reads

    def get_job(self, job_id: int) -> Job | None:
        with self.kv.read() as tx:
            return queue.get_job(tx, job_id)

    def get_jobs(self, ids: Iterable[int]) -> list[Job | CorruptRecord | None]:
        out: list[Job | CorruptRecord | None] = []
        with self.kv.read() as tx:
            for job_id in ids:
                try:
                    out.append(queue.get_job(tx, job_id))
                except CorruptRecord as exc:
                    out.append(exc)
        return out

    def get_request(self, job_id: int) -> dict[str, Any]:
        with self.kv.read() as tx:
            return queue.get_request(tx, job_id)

    def get_result(self, job_id: int) -> dict[str, Any] | None:
        with self.kv.read() as tx:
            return queue.get_result(tx, job_id)

    def list_jobs(self, *, statuses: Iterable[JobStatus] = (), model: str | None = None,
                  job_type: JobType | None = None, batch: str | None = None, name: str | None = None,
                  limit: int | None = None, offset: int = 0,
                  before: int | None = None) -> tuple[list[Job], list[CorruptRecord]]:
        with self.kv.read() as tx:
            return queue.list_jobs(tx, statuses=statuses, model=model, job_type=job_type, batch=batch,
                                   name=name, limit=limit, offset=offset, before=before)

    def counts(self) -> dict[str, int]:
        with self.kv.read() as tx:
            return queue.counts(tx)

    def positions(self, jobs: Iterable[Job], now: float) -> dict[int, int]:
        jobs = list(jobs)
        with self.kv.read() as tx:
            return queue.positions(tx, jobs, now)

    def ids_with_status(self, *statuses: JobStatus) -> list[int]:
        with self.kv.read() as tx:
            return queue.ids_with_status(tx, *statuses)

    def partial_output(self, job_id: int) -> PartialText | None:
        from ollama_cli.queue import partials

        with self.kv.read() as tx:
            return partials.read(tx, job_id)

    # ------------------------------------------------------------------ changes

    def cancel(self, ids: Sequence[int], now: float) -> list[Changed]:
        from ollama_cli.store.records import Changed

        ids = list(ids)

        def write(tx: Tx, quarantined: Mapping[int, Job | None]) -> list[Changed]:
            out = []
            for job_id in ids:  # a job quarantined is failed now: cancel leaves it as it is
                with blame(job_id):
                    job = queue.get_job(tx, job_id)
                    if job is None or job.status.finished:
                        out.append(Changed(job_id, job, False))
                    else:
                        out.append(Changed(job_id, queue.cancel(tx, job_id, now), True))
            return out

        return self._isolated(write, now)[0]

    def retry(self, ids: Sequence[int] | None, now: float) -> list[Changed]:
        from ollama_cli.store.records import Changed

        given = None if ids is None else list(ids)

        def write(tx: Tx, quarantined: Mapping[int, Job | None]) -> list[Changed]:
            out = []
            for job_id in queue.ids_with_status(tx, JobStatus.FAILED) if given is None else given:
                if job_id in quarantined:  # what retrying it came to: failed again
                    out.append(Changed(job_id, quarantined[job_id], True))
                    continue
                with blame(job_id):
                    job = queue.get_job(tx, job_id)
                    if job is None or job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                        out.append(Changed(job_id, job, False))
                    else:
                        out.append(Changed(job_id, queue.retry(tx, job_id, now), True))
            return out

        return self._isolated(write, now)[0]

    def pause(self) -> None:
        self.kv.write(lambda tx: queue.set_paused(tx, True))

    def resume(self) -> None:
        self.kv.write(lambda tx: queue.set_paused(tx, False))

    def is_paused(self) -> bool:
        with self.kv.read() as tx:
            return queue.is_paused(tx)

    def clean(self, statuses: Iterable[JobStatus], now: float, *, older_than: float | None = None) -> int:
        statuses = list(statuses)
        return self.kv.write(lambda tx: queue.clean(tx, statuses, now, older_than=older_than))

    # ------------------------------------------------------------------ batches

    def batch_counts(self, name: str) -> dict[str, Any]:
        with self.kv.read() as tx:
            return queue.batch_counts(tx, name)

    def batch_jobs(self, name: str, *, after: int = 0, limit: int | None = None,
                   results: bool = False) -> list[BatchEntry]:
        with self.kv.read() as tx:
            return queue.batch_jobs(tx, name, after=after, limit=limit, results=results)

    def batch_names(self) -> list[str]:
        with self.kv.read() as tx:
            return queue.batch_names(tx)

    # -------------------------------------------------------------------- cache

    def cache_stats(self) -> dict[str, Any]:
        with self.kv.read() as tx:
            from ollama_cli.cache import entries

            return entries.stats(tx)

    def cache_list(self, *, limit: int | None = None, model: str | None = None) -> list[dict[str, Any]]:
        with self.kv.read() as tx:
            from ollama_cli.cache import entries

            return entries.newest(tx, limit=limit, model=model)

    def cache_clear(self, now: float = 0.0, *, model: str | None = None, older_than: float | None = None) -> int:
        from ollama_cli.cache import entries

        return self.kv.write(lambda tx: entries.clear(tx, now, model=model, older_than=older_than))

    def semantic_lookup(self, scope: bytes, vector: bytes, threshold: float, now: float) -> SemanticMatch | None:
        from ollama_cli.cache import semantic
        from ollama_cli.store.records import CacheReuse, SemanticMatch

        with self.kv.read(buffers=True) as tx:
            found = semantic.nearest(tx, scope, vector)
            if found is None or found[1] < threshold:
                return None
            key, similarity = found
            entry, body = cache.meta(tx, key), tx.get("cache", key)
            if entry is None or body is None or (entry.get("expires_at") or now + 1) <= now:
                return None
            try:
                result = unpack(key, bytes(body))
            except CorruptRecord:
                return None
            source = entry.get("source")
            source = source if isinstance(source, int) and tx.get("jobs", u64(source)) is not None else None
            return SemanticMatch(CacheReuse(key, source, similarity), result)

    # --------------------------------------------------------------- statistics

    def feedback(self, job_id: int, score: float, reason: str | None, category: str | None,
                 now: float) -> Job:
        from ollama_cli.queue import stats

        return self.kv.write(lambda tx: stats.feedback(tx, job_id, score, reason, category, now))

    def stat_buckets(self, since_hour: int | None = None) -> list[Bucket]:
        from ollama_cli.queue import stats

        with self.kv.read() as tx:
            return stats.read(tx, since_hour)

    # ------------------------------------------------------------------ daemons

    def daemon_lock(self) -> FlockLock:
        from ollama_cli.store.flock import FlockLock

        return FlockLock(self._liveness)

    def is_alive(self, daemon_id: str) -> bool:
        return self._liveness.is_alive(daemon_id)

    def register(self, info: DaemonInfo) -> None:
        self.kv.write(lambda tx: tx.put("daemons", info.id.encode(), pack(info._asdict())))

    def heartbeat(self, daemon_id: str, now: float) -> None:
        def write(tx: Tx) -> None:
            raw = tx.get("daemons", daemon_id.encode())
            if raw is not None:
                record: dict[str, Any] = unpack(daemon_id, raw)
                record["last_heartbeat"] = now
                tx.put("daemons", daemon_id.encode(), pack(record))

        self.kv.write(write)

    def unregister(self, daemon_id: str) -> None:
        from ollama_cli.queue import activity

        def write(tx: Tx) -> None:
            tx.delete("daemons", daemon_id.encode())
            activity.forget(tx, daemon_id)

        self.kv.write(write)

    def daemons(self) -> list[DaemonInfo]:
        with self.kv.read() as tx:
            return _daemons(tx)

    # ------------------------------------------- what living daemons know (top, info)

    # queue/activity.py is imported where it is used: submit and status need none of it.

    def record_backends(self, daemon_id: str, states: Sequence[BackendState], now: float) -> None:
        from ollama_cli.queue import activity

        rows = [s._replace(daemon_id=daemon_id, updated_at=now) for s in states]
        self.kv.write(lambda tx: activity.record(tx, "backend_states", daemon_id, rows))

    def backends(self) -> list[BackendState]:
        from ollama_cli.queue import activity

        with self.kv.read() as tx:
            return activity.backends(tx, self._liveness.is_alive)

    def record_progress(self, daemon_id: str, runs: Sequence[RunProgress], now: float) -> None:
        from ollama_cli.queue import activity

        rows = [r._replace(daemon_id=daemon_id, updated_at=now) for r in runs]
        self.kv.write(lambda tx: activity.record(tx, "run_progress", daemon_id, rows))

    def progress(self) -> list[RunProgress]:
        from ollama_cli.queue import activity

        with self.kv.read() as tx:
            return activity.progress(tx, self._liveness.is_alive)

    def finished_per_minute(self, now: float) -> list[int]:
        from ollama_cli.queue import activity

        with self.kv.read() as tx:
            return activity.finished_per_minute(tx, now)

    def ready_depth(self) -> list[tuple[int, str, int]]:
        from ollama_cli.queue import activity

        with self.kv.read() as tx:
            return activity.ready_depth(tx)

    # --------------------------------------------------------- the daemon's step

    def settle_and_claim(self, settles: Sequence[Settle], now: float, *, owner: str,
                         planner: Planner | None = None, lookahead: int | None = None) -> Tick:
        from ollama_cli.store.records import Tick

        settles = list(settles)
        limit = CLAIM_SCAN_LIMIT if lookahead is None else min(lookahead, CLAIM_SCAN_LIMIT)

        def write(tx: Tx, quarantined: Mapping[int, Job | None]) -> Tick:
            settled = []  # a settle of a job quarantined finds it failed: None, as for a lost lease
            for s in settles:
                with blame(s.job_id):
                    settled.append(queue.settle(tx, s, now))
            if planner is None:
                return Tick(settled, [], None)
            plan = planner(queue.ready_candidates(tx, now, limit=limit),
                           lambda job: queue.get_request(tx, job.id))
            claimed = [(p, queue.claim(tx, p.jobs, owner, now, host=p.host)) for p in plan.placements]
            return Tick(settled, claimed, plan.state)

        tick, quarantined = self._isolated(write, now)
        return tick._replace(quarantined=tuple(quarantined))

    def write_partials(self, parts: Sequence[PartialText]) -> None:
        from ollama_cli.queue import partials

        parts = list(parts)
        self.kv.write(lambda tx: partials.write(tx, parts))

    def reclaim(self, now: float) -> list[Job]:
        with self.kv.read() as tx:
            owners = {j.lease.owner for j in queue.running(tx) + queue.open_runs(tx) if j.lease}
            known = {d.id for d in _daemons(tx)}
        suspects = owners | known | self._liveness.ids()
        dead = {o for o in suspects if not self._liveness.is_alive(o)}
        if not dead:
            return []

        from ollama_cli.queue import activity

        def write(tx: Tx, quarantined: Mapping[int, Job | None]) -> list[Job]:
            for daemon_id in dead:
                tx.delete("daemons", daemon_id.encode())
                activity.forget(tx, daemon_id)
            return queue.reclaim(tx, dead, now)

        jobs, _ = self._isolated(write, now)
        self._liveness.forget(sorted(dead))
        return jobs

    def _isolated(self, write: Callable[[Tx, Mapping[int, Job | None]], T], now: float) -> tuple[T, list[Job]]:
        """Run a write that handles jobs one by one, so that one job never stops it: a job
        whose handling raises (`queue/faults.py`) is quarantined, and the write runs again with
        each such job quarantined first, in the same transaction, and handed to it (id -> the
        job as quarantined, None if unreadable) to leave alone. Each run adds a job, so this
        ends; a job whose quarantine itself raises stops it. What the write returned, and the
        jobs quarantined (readable ones)."""
        faults: dict[int, str] = {}

        def isolated(tx: Tx) -> tuple[T, list[Job]]:
            done = {job_id: queue.quarantine(tx, job_id, reason, now) for job_id, reason in faults.items()}
            return write(tx, done), [job for job in done.values() if job is not None]

        while True:
            try:
                return self.kv.write(isolated)
            except JobFault as fault:
                if fault.job_id in faults:
                    raise
                faults[fault.job_id] = fault.reason

    # -------------------------------------------------------------------- hooks
    # queue/hooks.py is imported here, not at the top: submit and status never need it.

    def record_hooks_until(self, until: float) -> None:
        from ollama_cli.queue import hooks

        self.kv.write(lambda tx: hooks.record_until(tx, until))

    def claim_hook_events(self, owner: str, limit: int, *, done: Sequence[int] = ()) -> list[HookEvent]:
        from ollama_cli.queue import hooks

        done = list(done)
        with self.kv.read() as tx:
            holders = hooks.holders(tx)
        dead = {o for o in holders if o is not None and o != owner and not self._liveness.is_alive(o)}
        if not done and (None not in holders and not dead or limit <= 0):
            return []  # the daemon's poll, nothing to do: no write transaction, no fsync

        def write(tx: Tx) -> list[HookEvent]:
            for event_id in done:
                hooks.done(tx, event_id)
            return hooks.claim(tx, owner, dead, limit)

        return self.kv.write(write)

    def hook_events_pending(self) -> int:
        from ollama_cli.queue import hooks

        with self.kv.read() as tx:
            return hooks.pending(tx)

    # ------------------------------------------------------------------- health

    def check(self) -> list[str]:
        from ollama_cli.queue import doctor

        with self.kv.read() as tx:
            return doctor.check(tx)

    def close(self) -> None:
        self.kv.close()

    def __enter__(self) -> LmdbEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _daemons(tx: Tx) -> list[DaemonInfo]:
    from ollama_cli.store.records import DaemonInfo

    out = []
    for key, raw in tx.scan("daemons"):
        try:
            out.append(DaemonInfo(**unpack(key, raw)))
        except Exception:
            continue  # an unreadable record says nothing about a live daemon
    return out
