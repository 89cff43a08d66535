"""The queue's operations on PostgreSQL (the `Engine` of `store/base.py`), written natively:
LMDB's `queue/` is the reference model of what each does, not code run here.

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

import bisect
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ollama_cli import cache
from ollama_cli.codec import pack, unpack
from ollama_cli.errors import CorruptRecord, NotFound, UsageError
from ollama_cli.jobs import ErrorType, Job, JobError, JobSpec, JobStatus, JobType, Priority, full_name
from ollama_cli.store.postgres import depth, liveness, partials, rows, schema
from ollama_cli.store.postgres.rows import COLUMNS, STATES_OF, to_job
from ollama_cli.store.postgres.transactions import Database, Tx
from ollama_cli.store.records import (BatchEntry, Changed, Claim, DaemonInfo, PartialText, Placement, Planner,
                                      Settle, SettleKind, Tick)

PENDING, RUNNING = JobStatus.PENDING, JobStatus.RUNNING
COMPLETED, FAILED, CANCELLED = JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED
FINISHED_STATES = ("completed", "failed", "cancelled")

LOOKAHEAD = 256  # ready jobs a planner is shown at most: bounds a tick however long the queue
CLAIM_TRIES = 3  # plans per claim, at most, when other daemons take planned jobs first
PROMOTE_BATCH = 1000  # due held jobs made ready per claim, at most: bounds a tick
_COUNT = {s: f"count/{s.value}" for s in JobStatus}
_READY = {p.rank: f"ready/{p.rank}" for p in Priority}


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

    # ------------------------------------------------------------ job rows

    def _load(self, tx: Tx, ids: Sequence[int], *, lock: bool) -> dict[int, tuple[Job, str]]:
        """Jobs and their states by id; locked for update (in id order) if `lock`."""
        if not ids:
            return {}
        suffix = " ORDER BY id FOR UPDATE" if lock else ""
        found = tx.all(f"SELECT {COLUMNS} FROM jobs WHERE id = ANY(%s){suffix}", (list(ids),))
        return {r[0]: (to_job(r), r[1]) for r in found}

    def _dependency_state(self, tx: Tx, job: Job) -> JobStatus | None:
        """FAILED if a dependency failed or was cancelled, PENDING if one has not finished,
        None when all completed (a dependency cleaned away had completed)."""
        states = {r[0] for r in tx.all("SELECT state FROM jobs WHERE id = ANY(%s)", (list(job.after),))}
        if states & {"failed", "cancelled"}:
            return FAILED
        return PENDING if states - {"completed"} else None

    def _save(self, tx: Tx, old: tuple[Job, str] | None, new: Job, now: float, *, hand_on: bool = True) -> Job:
        """Write `new` over `old` (a job and its state, as loaded) and keep the counters in
        step; a job that finishes hands on to its dependents (`hand_on` False: the caller
        knows it has none). The job as stored (a pending job whose dependency failed is
        stored failed). A pending job that holds a lease waits for its open run to close."""
        state, hold = new.status.value, None
        if new.status is PENDING:
            deps = self._dependency_state(tx, new) if new.after else None
            if deps is FAILED:
                new = _finished(new, FAILED, now, ErrorType.DEPENDENCY_FAILED,
                                "a job it depends on failed or was cancelled").evolve(lease=new.lease)
                state = new.status.value
            elif new.lease is not None:
                state = "open_run"
            elif deps is PENDING:
                state = "blocked"
            else:
                hold = _hold_until(new)
                state = "waiting" if hold is not None and hold > now else "ready"
                hold = hold if state == "waiting" else None
        if old is None:
            tx.cur.execute(rows.INSERT, rows.values(new, state, hold))
        else:
            tx.cur.execute(rows.UPDATE, (*rows.values(new, state, hold), new.id))
            self._count(tx, old[0], old[1], -1)
            if old[1] == "running" and state != "running":
                partials.forget(tx, new.id)
        self._count(tx, new, state, 1)
        if new.status.finished or state == "ready":
            tx.notify = True
        if hand_on and new.status.finished and (old is None or not old[0].status.finished):
            self._hand_on(tx, new, now)
        return new

    @staticmethod
    def _count(tx: Tx, job: Job, state: str, delta: int) -> None:
        tx.add(_COUNT[job.status], delta)
        if state == "ready":
            tx.add(_READY[job.priority.rank], delta)
            tx.add(depth.name(job.priority.rank, full_name(job.model)), delta)

    def _hand_on(self, tx: Tx, job: Job, now: float) -> None:
        """A job finished: its pending dependents become ready (it completed) or fail."""
        children = [r[0] for r in tx.all("SELECT child FROM dependencies WHERE parent = %s", (job.id,))]
        for child, state in self._load(tx, sorted(children), lock=True).values():
            if child.status is PENDING:
                self._save(tx, (child, state), child, now)

    # ------------------------------------------------------------ jobs in

    def submit(self, spec: JobSpec, now: float) -> Job:
        return self.submit_many((spec,), now)[0]

    def submit_many(self, specs: Sequence[JobSpec], now: float) -> list[Job]:
        return self._db.write(lambda tx: self._enqueue_all(tx, specs, now))

    def submit_batch(self, specs: Sequence[JobSpec], now: float, *, name: str | None = None) -> tuple[str, list[Job]]:
        def write(tx: Tx) -> tuple[str, list[Job]]:
            # Names are chosen one batch at a time: two batches asking for one name at once
            # must not both find it free.
            tx.cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (schema.LOCK_SPACE, schema.BATCH_LOCK))
            batch = name
            if batch is not None:
                if self._batch_exists(tx, batch):
                    raise UsageError(f"batch name {batch!r} is already used")
            else:
                while batch is None or self._batch_exists(tx, batch):  # a user may have chosen such a name
                    batch = f"batch-{self._serial(tx, 'batch', 1)}"
            return batch, self._enqueue_all(tx, [s._replace(batch=batch) for s in specs], now)

        return self._db.write(write)

    @staticmethod
    def _serial(tx: Tx, name: str, n: int) -> int:
        """Count the serial up by n; its new value (locked until the transaction ends)."""
        return int(tx.one("UPDATE serials SET last = last + %s WHERE name = %s RETURNING last", (n, name))[0])

    @staticmethod
    def _batch_exists(tx: Tx, name: str) -> bool:
        return tx.one("SELECT 1 FROM jobs WHERE batch = %s LIMIT 1", (name,)) is not None

    def _enqueue_all(self, tx: Tx, specs: Sequence[JobSpec], now: float) -> list[Job]:
        deps = sorted({d for s in specs for d in s.after})
        if deps:
            # Locked until we commit: a dependency cannot finish unseen meanwhile.
            present = {r[0] for r in tx.all("SELECT id FROM jobs WHERE id = ANY(%s) ORDER BY id FOR SHARE",
                                            (deps,))}
            for spec in specs:
                for dep in spec.after:
                    if dep not in present:
                        raise UsageError(f"--after {dep}: no such job")
        if not specs:
            return []
        first = self._serial(tx, "job", len(specs)) - len(specs) + 1
        return [self._enqueue(tx, spec, job_id, now) for job_id, spec in enumerate(specs, start=first)]

    def _enqueue(self, tx: Tx, spec: JobSpec, job_id: int, now: float) -> Job:
        key = cache.key_for(spec.model, spec.type.value, spec.request) if spec.use_cache else None
        job = Job(
            id=job_id, model=spec.model, type=spec.type, priority=spec.priority, status=PENDING,
            created_at=now, name=spec.name, batch=spec.batch, custom_id=spec.custom_id,
            max_attempts=spec.max_attempts, run_at=spec.run_at, after=spec.after, timeout=spec.timeout,
            keep_alive=spec.keep_alive, cache_key=key,
        )
        # A delayed or dependent job asked to run later, not to be answered now.
        hit = self._cache_lookup(tx, key) if key is not None and not spec.after and spec.run_at is None else None
        if hit is not None:
            job = job.evolve(status=COMPLETED, cached=True, started_at=now, finished_at=now)
        stored = self._save(tx, None, job, now)
        tx.cur.execute("INSERT INTO requests (id, body) VALUES (%s, %s)", (job_id, pack(spec.request)))
        if hit is not None:
            tx.cur.execute("INSERT INTO results (id, body) VALUES (%s, %s)", (job_id, pack(hit)))
        if spec.after:
            tx.cur.execute("INSERT INTO dependencies (parent, child) SELECT unnest(%s::bigint[]), %s "
                           "ON CONFLICT DO NOTHING", (list(spec.after), job_id))
        return stored

    # ------------------------------------------------------------ reads

    def get_job(self, job_id: int) -> Job | None:
        found = self._db.read(lambda tx: tx.one(f"SELECT {COLUMNS} FROM jobs WHERE id = %s", (job_id,)))
        return None if found is None else to_job(found)

    def get_jobs(self, ids: Iterable[int]) -> list[Job | CorruptRecord | None]:
        wanted = list(ids)
        found = self._db.read(lambda tx: tx.all(f"SELECT {COLUMNS} FROM jobs WHERE id = ANY(%s)", (wanted,)))
        by_id: dict[int, Job | CorruptRecord] = {}
        for row in found:
            try:
                by_id[row[0]] = to_job(row)
            except CorruptRecord as exc:
                by_id[row[0]] = exc
        return [by_id.get(i) for i in wanted]

    def get_request(self, job_id: int) -> dict[str, Any]:
        found = self._db.read(lambda tx: tx.one("SELECT body FROM requests WHERE id = %s", (job_id,)))
        return {} if found is None else unpack(job_id, found[0])

    def get_result(self, job_id: int) -> dict[str, Any] | None:
        found = self._db.read(lambda tx: tx.one(
            "SELECT r.body FROM results r JOIN jobs j USING (id) WHERE id = %s AND j.state = 'completed'",
            (job_id,)))
        return None if found is None else unpack(job_id, found[0])

    def list_jobs(self, *, statuses: Iterable[JobStatus] = (), model: str | None = None,
                  job_type: JobType | None = None, batch: str | None = None, name: str | None = None,
                  limit: int | None = None, offset: int = 0,
                  before: int | None = None) -> tuple[list[Job], list[CorruptRecord]]:
        if (limit is not None and limit <= 0) or (before is not None and before <= 1):
            return [], []
        where, params = ["true"], []
        states = [st for s in dict.fromkeys(statuses) for st in STATES_OF[s]]
        if states:
            where.append("state = ANY(%s)")
            params.append(states)
        if model:  # as jobs.full_name compares names: lower case, ":latest" unless a tag is given
            where.append("model_key = %s")
            params.append(full_name(model))
        for column, value in (("type", job_type.value if job_type else None), ("batch", batch)):
            if value:
                where.append(f"{column} = %s")
                params.append(value)
        if name is not None:
            where.append("name = %s")
            params.append(name)
        if before is not None:
            where.append("id < %s")
            params.append(before)
        sql = f"SELECT {COLUMNS} FROM jobs WHERE {' AND '.join(where)} ORDER BY id DESC OFFSET %s"
        params.append(max(0, offset))
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        jobs, corrupt = [], []
        for row in self._db.read(lambda tx: tx.all(sql, params)):
            try:
                jobs.append(to_job(row))
            except CorruptRecord as exc:
                corrupt.append(exc)
        return jobs, corrupt

    def _counters(self, tx: Tx, prefix: str) -> dict[str, int]:
        return {name: int(n) for name, n in tx.all(
            "SELECT name, sum(n) FROM counts WHERE name LIKE %s GROUP BY name", (prefix + "%",))}

    def counts(self) -> dict[str, int]:
        found = self._db.read(lambda tx: self._counters(tx, "count/"))
        out = {s.value: found.get(_COUNT[s], 0) for s in JobStatus}
        out["total"] = sum(out.values())
        return out

    def positions(self, jobs: Iterable[Job], now: float) -> dict[int, int]:
        wanted = sorted({(j.priority.rank, j.id) for j in jobs if j.status is PENDING})
        if not wanted:
            return {}
        # Ready jobs of a wanted job's own priority are counted on the ready index between it
        # and the wanted job before it (each counted once, however many are wanted: a walk as
        # long as the queue ahead of the last one, read from the index alone); those of higher
        # priorities by the counters, and held jobs whose time has come one by one (a daemon
        # soon makes them ready, so they are few).
        previous = {rank: 0 for rank, _ in wanted}
        ranges = []
        for rank, job_id in wanted:
            ranges.append((job_id, rank, previous[rank]))
            previous[rank] = job_id

        def read(tx: Tx) -> dict[int, int]:
            ready = self._counters(tx, "ready/")
            due = sorted(tx.all("SELECT priority, id FROM jobs WHERE state = 'waiting' AND available_at <= %s",
                                (now,)))
            found = tx.all(
                "SELECT w.id, (SELECT count(*) FROM jobs r WHERE r.state = 'ready' AND r.priority = w.rank "
                "  AND r.id >= w.after AND r.id < w.id), "
                "  coalesce(j.state = 'ready' OR (j.state = 'waiting' AND j.available_at <= %(now)s), false) "
                "FROM unnest(%(ids)s::bigint[], %(ranks)s::smallint[], %(after)s::bigint[]) AS w(id, rank, after) "
                "LEFT JOIN jobs j ON j.id = w.id",
                {"ids": [r[0] for r in ranges], "ranks": [r[1] for r in ranges], "after": [r[2] for r in ranges],
                 "now": now})
            between = {job_id: (int(n), placed) for job_id, n, placed in found}
            out, walked = {}, dict.fromkeys(previous, 0)
            for job_id, rank, _ in ranges:  # in (priority, id) order
                n, placed = between[job_id]
                walked[rank] += n
                if placed:
                    higher = sum(ready.get(_READY[r], 0) for r in range(rank))
                    out[job_id] = 1 + higher + walked[rank] + bisect.bisect_left(due, (rank, job_id))
            return out

        return self._db.snapshot(read)

    def ids_with_status(self, *statuses: JobStatus) -> list[int]:
        def read(tx: Tx) -> list[int]:
            return [r[0] for s in statuses for r in tx.all(
                "SELECT id FROM jobs WHERE state = ANY(%s) ORDER BY id", (list(STATES_OF[s]),))]

        return self._db.snapshot(read)

    def queue_depth(self) -> dict[tuple[int, str], int]:
        return self._db.read(depth.read)

    def partial_output(self, job_id: int) -> PartialText | None:
        return self._db.read(lambda tx: partials.read(tx, job_id))

    # ------------------------------------------------------------ changes

    def cancel(self, ids: Sequence[int], now: float) -> list[Changed]:
        def write(tx: Tx) -> list[Changed]:
            loaded = self._load(tx, sorted(set(ids)), lock=True)
            out = []
            for job_id in ids:
                old = loaded.get(job_id)
                if old is None or old[0].status.finished:
                    out.append(Changed(job_id, old[0] if old else None, False))
                    continue
                cancelled = _finished(old[0], CANCELLED, now, ErrorType.CANCELLED, "cancelled by the user")
                new = self._save(tx, old, cancelled.evolve(lease=old[0].lease), now)  # a run stays open
                loaded[job_id] = (new, new.status.value)
                out.append(Changed(job_id, new, True))
            return out

        return self._db.write(write)

    def retry(self, ids: Sequence[int] | None, now: float) -> list[Changed]:
        def write(tx: Tx) -> list[Changed]:
            wanted = list(ids) if ids is not None else \
                [r[0] for r in tx.all("SELECT id FROM jobs WHERE state = 'failed' ORDER BY id")]
            loaded = self._load(tx, sorted(set(wanted)), lock=True)
            out = []
            for job_id in wanted:
                old = loaded.get(job_id)
                if old is None or old[0].status not in (FAILED, CANCELLED):
                    out.append(Changed(job_id, old[0] if old else None, False))
                    continue
                again = old[0].evolve(status=PENDING, attempts=0, error=None, started_at=None,
                                      finished_at=None, retry_at=None, host=None)  # an open run stays
                new = self._save(tx, old, again, now)
                loaded[job_id] = (new, tx.one("SELECT state FROM jobs WHERE id = %s", (job_id,))[0])
                out.append(Changed(job_id, new, True))
            return out

        return self._db.write(write)

    def pause(self) -> None:
        self._set_paused(True)

    def resume(self) -> None:
        self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        def write(tx: Tx) -> None:
            tx.cur.execute("INSERT INTO meta (key, value) VALUES ('paused', %s) "
                           "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", ("1" if paused else "0",))
            tx.notify = not paused

        self._db.write(write)

    def is_paused(self) -> bool:
        return self._db.read(self._paused)

    @staticmethod
    def _paused(tx: Tx) -> bool:
        found = tx.one("SELECT value FROM meta WHERE key = 'paused'")
        return found is not None and found[0] == "1"

    def clean(self, statuses: Iterable[JobStatus], now: float, *, older_than: float | None = None) -> int:
        chosen = list(dict.fromkeys(statuses))
        for status in chosen:
            if not status.finished:
                raise UsageError(f"clean deletes finished jobs only, not {status.value} ones")
        if not chosen:
            return 0

        def write(tx: Tx) -> int:
            sql = "DELETE FROM jobs WHERE state = ANY(%s)"
            params: list[Any] = [[s.value for s in chosen]]
            if older_than is not None:
                sql += " AND finished_at IS NOT NULL AND %s - finished_at >= %s"
                params += [now, older_than]
            deleted = tx.all(sql + " RETURNING id, state", params)
            for _, state in deleted:
                tx.add(f"count/{state}", -1)
            if deleted:
                tx.cur.execute("DELETE FROM dependencies WHERE parent = ANY(%s)", ([r[0] for r in deleted],))
            return len(deleted)

        return self._db.write(write)

    # ------------------------------------------------------------ batches

    def batch_counts(self, name: str) -> dict[str, Any]:
        found = self._db.read(lambda tx: tx.all("SELECT state, count(*) FROM jobs WHERE batch = %s GROUP BY state",
                                             (name,)))
        if not found:
            raise NotFound(f"no batch named {name!r}")
        out: dict[str, Any] = {"batch": name, "total": 0, **{s.value: 0 for s in JobStatus}}
        for state, n in found:
            out[rows.STATUS_OF[state].value] += int(n)
            out["total"] += int(n)
        return out

    def batch_jobs(self, name: str, *, after: int = 0, limit: int | None = None,
                   results: bool = False) -> list[BatchEntry]:
        body = "r.body" if results else "NULL"
        sql = (f"SELECT {', '.join('j.' + c for c in COLUMNS.split(', '))}, {body} FROM jobs j "
               f"LEFT JOIN results r ON r.id = j.id AND j.state = 'completed' "
               f"WHERE j.batch = %s AND j.id > %s ORDER BY j.id")
        params: list[Any] = [name, after]
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        out = []
        for row in self._db.read(lambda tx: tx.all(sql, params)):
            try:
                job = to_job(row[:-1])
                result = unpack(job.id, row[-1]) if row[-1] is not None else None
                out.append(BatchEntry(job.id, job, result))
            except CorruptRecord as exc:
                out.append(BatchEntry(row[0], None, corrupt=exc))
        return out

    def batch_names(self) -> list[str]:
        return [r[0] for r in self._db.read(lambda tx: tx.all(
            "SELECT batch FROM jobs WHERE batch IS NOT NULL GROUP BY batch ORDER BY min(id) DESC"))]

    # ------------------------------------------------------------ cache

    def _cache_lookup(self, tx: Tx, key: bytes) -> dict[str, Any] | None:
        found = tx.one("SELECT body FROM cache WHERE key = %s", (key,))
        try:
            result = unpack(key, found[0]) if found is not None else None
        except CorruptRecord:
            result = None
        tx.add("cache/hits" if result is not None else "cache/misses", 1)
        return result

    def _cache_store(self, tx: Tx, key: bytes, result: dict[str, Any]) -> None:
        body = pack(result)
        while True:
            old = tx.one("SELECT length(body) FROM cache WHERE key = %s FOR UPDATE", (key,))
            if old is not None:
                tx.cur.execute("UPDATE cache SET body = %s WHERE key = %s", (body, key))
                tx.add("cache/bytes", len(body) - old[0])
                return
            if tx.one("INSERT INTO cache (key, body) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                      (key, body)) is not None:
                tx.add("cache/entries", 1)
                tx.add("cache/bytes", len(body))
                return  # else another transaction stored it first: replace theirs

    def cache_stats(self) -> dict[str, int]:
        found = self._db.read(lambda tx: self._counters(tx, "cache/"))
        return {k: found.get(f"cache/{k}", 0) for k in ("entries", "hits", "misses", "bytes")}

    def cache_clear(self) -> int:
        def write(tx: Tx) -> int:
            # No store may slip in between the delete and the reset of its counters.
            tx.cur.execute("LOCK TABLE cache IN EXCLUSIVE MODE")
            tx.cur.execute("DELETE FROM cache")
            deleted = tx.cur.rowcount
            tx.cur.execute("DELETE FROM counts WHERE name IN ('cache/entries', 'cache/bytes')")
            return int(deleted)

        return self._db.write(write)

    # ------------------------------------------------------------ daemons

    def daemon_lock(self) -> liveness.DaemonLock:
        key = self._db.read(lambda tx: tx.one("SELECT nextval('daemon_lock_keys')"))[0]
        lock = liveness.DaemonLock(self.url, int(key), lambda gone: self._locks.pop(gone.id, None))
        self._locks[lock.id] = lock
        return lock

    def _live_keys(self, tx: Tx, now: float) -> set[int]:
        """Lock keys of the daemons alive at `now`: those whose lock is held, ours (whose
        lock may be waiting for its connection to come back), and, for RESTART_GRACE after
        the server started, those that have not beaten since: a restart ends every session
        and frees every lock, and a live daemon takes its own back at its next heartbeat."""
        held = {r[0] for r in tx.all(liveness.LIVE_KEYS, (schema.LOCK_SPACE,))}
        started = tx.one("SELECT extract(epoch FROM pg_postmaster_start_time())::float8")[0]
        returning = set()
        if now - started < liveness.RESTART_GRACE:
            returning = {r[0] for r in tx.all(
                "SELECT lock_key FROM daemons WHERE lock_key IS NOT NULL AND last_heartbeat < %s", (started,))}
        return held | returning | {lock.key for lock in self._locks.values()}

    def is_alive(self, daemon_id: str) -> bool:
        key = liveness.lock_key(daemon_id)
        return key is not None and key in self._db.read(lambda tx: self._live_keys(tx, self.now()))

    def register(self, info: DaemonInfo) -> None:
        import socket

        key = liveness.lock_key(info.id)
        if info.id in self._locks:
            self._registered[info.id] = info
        self._db.write(lambda tx: tx.cur.execute(
            "INSERT INTO daemons (id, lock_key, hostname, pid, hosts, concurrency, started_at, last_heartbeat) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
            "(lock_key, hostname, pid, hosts, concurrency, started_at, last_heartbeat) = "
            "(EXCLUDED.lock_key, EXCLUDED.hostname, EXCLUDED.pid, EXCLUDED.hosts, EXCLUDED.concurrency, "
            "EXCLUDED.started_at, EXCLUDED.last_heartbeat)",
            (info.id, key, socket.gethostname(), info.pid, list(info.hosts), info.concurrency,
             info.started_at, info.last_heartbeat)))

    def heartbeat(self, daemon_id: str, now: float) -> None:
        """Also takes this process's daemon lock again if its connection was lost, and
        registers it again if another daemon took it for dead meanwhile."""
        lock = self._locks.get(daemon_id)
        if lock is not None:
            lock.ensure()

        def write(tx: Tx) -> int:
            tx.cur.execute("UPDATE daemons SET last_heartbeat = %s WHERE id = %s", (now, daemon_id))
            return int(tx.cur.rowcount)

        info = self._registered.get(daemon_id)
        if not self._db.write(write) and info is not None:
            self.register(info._replace(last_heartbeat=now))

    def unregister(self, daemon_id: str) -> None:
        self._registered.pop(daemon_id, None)
        self._db.write(lambda tx: tx.cur.execute("DELETE FROM daemons WHERE id = %s", (daemon_id,)))

    def daemons(self) -> list[DaemonInfo]:
        found = self._db.read(lambda tx: tx.all(
            "SELECT id, pid, hosts, concurrency, started_at, last_heartbeat FROM daemons ORDER BY id"))
        return [DaemonInfo(i, pid, list(hosts), c, s, h) for i, pid, hosts, c, s, h in found]

    # ------------------------------------------------------------ the daemon's step

    def settle_and_claim(self, settles: Sequence[Settle], now: float, *, owner: str,
                         planner: Planner | None = None, lookahead: int | None = None) -> Tick:
        limit = LOOKAHEAD if lookahead is None else min(lookahead, LOOKAHEAD)

        def write(tx: Tx) -> Tick:
            settled = self._settle(tx, settles, now)
            if planner is None:
                return Tick(settled, [], None)
            paused = self._paused(tx)
            if not paused:
                self._promote_due(tx, now)
            # Daemons read the same head of the queue: one that finds jobs it planned taken by
            # another meanwhile plans again without them, rather than start nothing this tick.
            taken_by_others: list[int] = []
            for attempt in range(CLAIM_TRIES):
                plan = planner(_Ready(tx, limit, paused, taken_by_others), lambda job: self._request(tx, job.id))
                last = attempt == CLAIM_TRIES - 1
                if not last:
                    tx.cur.execute("SAVEPOINT claim")
                    before = dict(tx.deltas), tx.notify
                claimed, missed = self._claim(tx, plan.placements, owner, now)
                if not missed or last:
                    return Tick(settled, claimed, plan.state)
                tx.cur.execute("ROLLBACK TO SAVEPOINT claim")
                tx.deltas, tx.notify = before
                taken_by_others += missed
            raise AssertionError("unreachable")

        return self._db.write(write)

    @staticmethod
    def _request(tx: Tx, job_id: int) -> dict[str, Any]:
        found = tx.one("SELECT body FROM requests WHERE id = %s", (job_id,))
        return {} if found is None else unpack(job_id, found[0])

    def _promote_due(self, tx: Tx, now: float) -> None:
        """Held jobs whose time has come become ready (a held job's dependencies have all
        completed: it was blocked until then)."""
        promoted = tx.all(
            "UPDATE jobs SET state = 'ready', available_at = NULL WHERE id IN (SELECT id FROM jobs "
            "WHERE state = 'waiting' AND available_at <= %s ORDER BY available_at, id LIMIT %s "
            "FOR UPDATE SKIP LOCKED) RETURNING priority, model_key", (now, PROMOTE_BATCH))
        for rank, model_key in promoted:
            tx.add(_READY[rank], 1)
            tx.add(depth.name(rank, model_key), 1)

    def _claim(self, tx: Tx, placements: Sequence[Placement], owner: str,
               now: float) -> tuple[list[tuple[Placement, list[Claim]]], list[int]]:
        """Claim the jobs of every placement in one statement: per placement the claims, and
        the ids of jobs that could not be claimed (another daemon took them, or they were
        cancelled, since the read)."""
        import secrets  # hmac and OpenSSL with it: a cost that a submit need not pay

        ids = [j.id for p in placements for j in p.jobs]
        if not ids:
            return [(p, []) for p in placements], []
        hosts = [p.host for p in placements for _ in p.jobs]
        tokens = [secrets.token_hex(8) for _ in ids]
        taken = tx.all(
            f"UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, started_at = %(now)s, "
            f"retry_at = NULL, host = t.host, lease_owner = %(owner)s, lease_token = t.token "
            f"FROM unnest(%(ids)s::bigint[], %(tokens)s::text[], %(hosts)s::text[]) AS t(id, token, host) "
            f"WHERE j.id = t.id AND j.id IN (SELECT id FROM jobs WHERE id = ANY(%(ids)s) AND state = 'ready' "
            f"ORDER BY id FOR UPDATE SKIP LOCKED) "
            f"RETURNING {', '.join('j.' + c for c in COLUMNS.split(', '))}",
            {"now": now, "owner": owner, "ids": ids, "tokens": tokens, "hosts": hosts})
        started = {r[0]: to_job(r) for r in taken}
        for job in started.values():
            tx.add(_READY[job.priority.rank], -1)
            tx.add(depth.name(job.priority.rank, full_name(job.model)), -1)
            tx.add(_COUNT[PENDING], -1)
            tx.add(_COUNT[RUNNING], 1)
        bodies = dict(tx.all("SELECT id, body FROM requests WHERE id = ANY(%s)", (list(started),)))
        out = []
        for placement in placements:
            claims = []
            for planned in placement.jobs:  # in the planner's order
                job = started.get(planned.id)
                if job is None:
                    continue
                try:
                    request = unpack(job.id, bodies[job.id]) if job.id in bodies else {}
                except CorruptRecord as exc:
                    self._save(tx, (job, "running"), _finished(job, FAILED, now, ErrorType.INVALID_RESPONSE,
                                                               f"the stored request is corrupt: {exc.reason}"), now)
                    continue
                claims.append(Claim(job, request))
            out.append((placement, claims))
        return out, [i for i in ids if i not in started]

    def _settle(self, tx: Tx, settles: Sequence[Settle], now: float) -> list[Job | None]:
        """Record each settle whose lease still holds (None for the others: cancelled,
        reclaimed or settled meanwhile), with a statement per kind of change, not per job.
        The settle of a run a cancelled job kept open closes that run, and records nothing."""
        if not settles:
            return []
        leased = {r[0]: (to_job(r), r[1]) for r in tx.all(
            f"SELECT {COLUMNS} FROM jobs WHERE id = ANY(%s) AND lease_token IS NOT NULL ORDER BY id FOR UPDATE",
            (sorted({s.job_id for s in settles}),))}
        held = []
        for s in settles:
            job, state = leased.get(s.job_id, (None, ""))
            if job is None or job.lease is None or job.lease.token != s.token:
                continue
            del leased[s.job_id]  # a second settle of it finds no lease
            if job.status is RUNNING:
                held.append((s, job))
            else:
                self._save(tx, (job, state), job.evolve(lease=None), now)
        completed = [(job.id, pack(s.result or {})) for s, job in held if s.kind is SettleKind.COMPLETE]
        if completed:
            ids, bodies = zip(*completed)
            tx.cur.execute("INSERT INTO results (id, body) SELECT * FROM unnest(%s::bigint[], %s::bytea[]) "
                           "ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body", (list(ids), list(bodies)))
        parents = {r[0] for r in tx.all("SELECT DISTINCT parent FROM dependencies WHERE parent = ANY(%s)",
                                        ([job.id for _, job in held],))}
        out: dict[int, Job] = {}
        for s, job in held:
            host = s.host or job.host
            if s.kind is SettleKind.COMPLETE:
                if job.cache_key is not None:
                    self._cache_store(tx, job.cache_key, s.result or {})
                new = job.evolve(status=COMPLETED, finished_at=now, lease=None, error=None, host=host)
            elif s.kind is SettleKind.FAIL:
                error = s.error or JobError(ErrorType.BACKEND_ERROR, "failed")
                if s.retry_after is not None and job.attempts < job.max_attempts:
                    new = job.evolve(status=PENDING, lease=None, error=error, host=host,
                                     retry_at=now + s.retry_after)
                else:
                    new = _finished(job.evolve(host=host), FAILED, now, error.type, error.message)
            else:
                new = job.evolve(status=PENDING, lease=None, attempts=max(0, job.attempts - 1))
            out[id(s)] = self._save(tx, (job, "running"), new, now, hand_on=job.id in parents)
        return [out.get(id(s)) for s in settles]

    def write_partials(self, parts: Sequence[PartialText]) -> None:
        self._db.write(lambda tx: partials.write(tx, parts))

    def reclaim(self, now: float) -> list[Job]:
        def write(tx: Tx) -> list[Job]:
            alive = self._live_keys(tx, now)
            owners = {r[0] for r in tx.all("SELECT DISTINCT lease_owner FROM jobs WHERE lease_owner IS NOT NULL")}
            dead = sorted(o for o in owners if liveness.lock_key(o) not in alive)
            tx.cur.execute("DELETE FROM daemons WHERE lock_key IS NULL OR NOT (lock_key = ANY(%s))", (sorted(alive),))
            if not dead:
                return []
            out = []
            for job_id, (job, state) in self._load(tx, [r[0] for r in tx.all(
                    "SELECT id FROM jobs WHERE lease_owner = ANY(%s)", (dead,))], lock=True).items():
                if job.lease is None or job.lease.owner not in dead:
                    continue  # settled between the two reads
                if job.status is not RUNNING:  # a run a cancelled job kept open: it closes
                    self._save(tx, (job, state), job.evolve(lease=None), now)
                    continue
                if job.attempts >= job.max_attempts:
                    new = _finished(job, FAILED, now, ErrorType.ABANDONED,
                                    f"its daemon died during each of {job.attempts} attempts")
                else:
                    new = job.evolve(status=PENDING, lease=None, error=JobError(ErrorType.ABANDONED, "its daemon died"))
                out.append(self._save(tx, (job, state), new, now))
            return out

        return self._db.write(write)

    # ------------------------------------------------------------ health

    def check(self) -> list[str]:
        def read(tx: Tx) -> list[str]:
            problems = []
            counted = self._counters(tx, "")
            actual = dict(tx.all("SELECT state, count(*) FROM jobs GROUP BY state"))
            for status in JobStatus:
                n = sum(int(actual.get(st, 0)) for st in STATES_OF[status])
                if counted.get(_COUNT[status], 0) != n:
                    problems.append(f"count/{status.value} is {counted.get(_COUNT[status], 0)}, the jobs say {n}")
            ready = dict(tx.all("SELECT priority, count(*) FROM jobs WHERE state = 'ready' GROUP BY priority"))
            for rank, name in _READY.items():
                if counted.get(name, 0) != int(ready.get(rank, 0)):
                    problems.append(f"{name} is {counted.get(name, 0)}, the jobs say {ready.get(rank, 0)}")
            problems += depth.check(tx, counted)
            problems += partials.check(tx)
            entries, size = tx.one("SELECT count(*), coalesce(sum(length(body)), 0) FROM cache")
            for name, n in (("cache/entries", entries), ("cache/bytes", size)):
                if counted.get(name, 0) != int(n):
                    problems.append(f"{name} is {counted.get(name, 0)}, the cache holds {n}")
            for (job_id,) in tx.all("SELECT id FROM jobs j WHERE state = 'completed' "
                                    "AND NOT EXISTS (SELECT 1 FROM results r WHERE r.id = j.id)"):
                problems.append(f"job {job_id} completed without a result")
            for (job_id,) in tx.all("SELECT id FROM jobs WHERE (state IN %s) <> (finished_at IS NOT NULL)",
                                    (FINISHED_STATES,)):
                problems.append(f"job {job_id}: finished_at does not match its state")
            for (job_id,) in tx.all(
                    "SELECT id FROM jobs j WHERE cardinality(after) <> "
                    "(SELECT count(*) FROM dependencies d WHERE d.child = j.id) "
                    "AND NOT EXISTS (SELECT 1 FROM unnest(j.after) a WHERE NOT EXISTS "
                    "(SELECT 1 FROM jobs p WHERE p.id = a))"):
                problems.append(f"job {job_id}: its dependencies are not all recorded")
            for (job_id,) in tx.all(
                    "SELECT id FROM jobs j WHERE state = 'blocked' AND NOT EXISTS (SELECT 1 FROM jobs p "
                    "WHERE p.id = ANY(j.after) AND p.state IN ('ready', 'waiting', 'blocked', 'running'))"):
                problems.append(f"job {job_id} is blocked, but no dependency of it is unfinished")
            return problems

        return self._db.snapshot(read)


class _Ready:
    """The ready jobs as the planner asks for them (`records.ReadyJobs`), each question one
    index seek (`jobs_ready` by priority and id, `jobs_ready_by_model` by priority, model and
    id), leaving out jobs another daemon took while this one planned. Paused: nothing."""

    WINDOW = 16  # jobs read per seek: the scheduler asks for the next after each it passes over

    def __init__(self, tx: Tx, limit: int, paused: bool, taken: list[int]) -> None:
        self._tx, self._limit, self._paused, self._taken = tx, limit, paused, taken
        # (rank, model) -> (the `after` read from, the jobs read, whether they were all there
        # were): the ready set does not change while a plan is made, so a later question
        # inside what was read is answered without asking the server again.
        self._windows: dict[tuple[int, str | None], tuple[int, list[Job], bool]] = {}

    def _rows(self, where: str, params: tuple[Any, ...], limit: int) -> list[tuple[Any, ...]]:
        if self._paused:
            return []
        return self._tx.all(f"SELECT {COLUMNS} FROM jobs WHERE state = 'ready' AND {where} AND id <> ALL(%s) "
                            f"ORDER BY priority, id LIMIT %s", (*params, self._taken, limit))

    def __iter__(self) -> Iterator[Job]:
        return iter(_readable(self._rows("true", (), self._limit)))

    def oldest(self, rank: int, model: str | None = None, after: int = 0) -> Job | None:
        start, read, complete = self._windows.get((rank, model), (-1, [], False))
        if start <= after:
            beyond = next((j for j in read if j.id > after), None)
            if beyond is not None or complete:
                return beyond
            after = max([after, *(j.id for j in read)])
        where = "priority = %s AND id > %s" + ("" if model is None else " AND model_key = %s")
        found = self._rows(where, (rank, after) if model is None else (rank, after, model), self.WINDOW)
        read = _readable(found)
        self._windows[(rank, model)] = (after, read, len(found) < self.WINDOW)
        if read or len(found) < self.WINDOW:
            return read[0] if read else None
        return self.oldest(rank, model, found[-1][0])  # a window of rows this version cannot read: past it

    def embeds(self, rank: int, model: str, after: int, limit: int) -> Iterator[Job]:
        found = self._rows("priority = %s AND model_key = %s AND id > %s", (rank, model, after), limit)
        return (j for j in _readable(found) if j.type is JobType.EMBED)

    def models(self, rank: int) -> list[str]:
        if self._paused:
            return []
        # One seek per model on jobs_ready_by_model, past all of its ready jobs.
        return [r[0] for r in self._tx.all(
            "WITH RECURSIVE m(k) AS ("
            "  (SELECT model_key FROM jobs WHERE state = 'ready' AND priority = %(r)s AND id <> ALL(%(x)s) "
            "   ORDER BY model_key LIMIT 1) "
            "  UNION ALL SELECT (SELECT model_key FROM jobs WHERE state = 'ready' AND priority = %(r)s "
            "   AND model_key > m.k AND id <> ALL(%(x)s) ORDER BY model_key LIMIT 1) FROM m WHERE m.k IS NOT NULL"
            ") SELECT k FROM m WHERE k IS NOT NULL", {"r": rank, "x": self._taken})]


def _readable(found: list[tuple[Any, ...]]) -> list[Job]:
    """The jobs of these rows that this version can read: one it cannot (a newer version's
    value) is left where it is, for `status` to report, and never stops a daemon's tick."""
    jobs = []
    for row in found:
        try:
            jobs.append(to_job(row))
        except CorruptRecord:
            continue
    return jobs


def _finished(job: Job, status: JobStatus, now: float, kind: ErrorType, message: str) -> Job:
    return job.evolve(status=status, finished_at=now, lease=None, retry_at=None, error=JobError(kind, message))


def _hold_until(job: Job) -> float | None:
    if job.retry_at is None:
        return job.run_at
    return job.retry_at if job.run_at is None else max(job.run_at, job.retry_at)
