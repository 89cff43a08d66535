"""The store's engine interface: every question the CLI and the daemon may ask of the store, and
what each answer guarantees.

The seam is the queue's operations, not a key-value transaction. LMDB (`lmdb_engine.py`)
implements them with the queue's functions (`queue/`) over its ordered key-value transactions
(`Tx` below, LMDB's internal layer); a PostgreSQL engine implements the same operations natively,
a claim being one conditional `UPDATE ... RETURNING`. `tests/contract/test_store_contract.py`
checks every guarantee written here, through this interface only, on every engine.

The records that cross the seam are `JobSpec` (in `jobs.py`, beside `Job`) and those of
`records.py`. This module is for readers and type checkers: code imports it under
TYPE_CHECKING, so that `submit` and `status` do not pay to define the protocols.

What holds for every operation of every engine:
- **Atomic.** An operation lands whole or not at all, and what it reads is one consistent state.
  One that raises (UsageError, NotFound...) has changed nothing.
- **Ids** are positive integers, given in submission order, never reused (not even after `clean`).
- **Time** is the caller's `now` (seconds since the epoch): every time an operation records
  (created, started, finished, retry times, heartbeats) is the `now` it was given. Callers
  take it from `Engine.now()`, the store's clock: on a store that many hosts share, their
  clocks differ, and run_at, retry times and heartbeats must all be read off one clock.
- **Unknown ids** are not errors: reads give None (or an empty value, as documented), changes
  report them. A record whose stored bytes cannot be decoded raises CorruptRecord where one job
  is asked for, and is handed back apart where many are.
- **Records are values**: a `Job` returned is a snapshot; reading again gives the new state.
- **One run of a job at a time.** A claim opens a run under a new lease; the run stays open
  until its daemon settles it or `reclaim` finds that daemon dead, whatever happens to the
  job meanwhile (cancel, retry). While a job's run is open the job holds that run's lease
  (`Job.lease`), whatever its status, and no claim can take it: so no job is ever sent to a
  backend by two runs at once, even across `cancel ID && retry ID`.
- **One job never stops an operation.** A job the engine cannot handle (handling it raises:
  a record of an older version, or not whole) is quarantined: taken out of every index and
  failed (`invalid_response`, "quarantined: ..." saying why; its dependents fail with it), or,
  when its record cannot even be read, left for `get_job` to report as CorruptRecord; the
  operation goes on without it. Times outside 1970..9999 in old records are no such fault:
  they order as the nearest bound.
- **Failures of the store itself** are errors of `errors.py`, never an engine's own: a write the
  disk refused is StoreWriteFailed (nothing landed; the same call may succeed later), a server
  that cannot be reached is StoreUnavailable (one of them, for reads too), and an engine that
  can no longer trust its handle on the store refuses every write with StoreLockLost (LMDB:
  lock.mdb was replaced). A write whose connection broke as it committed is not one of these:
  the engine finds out whether it landed before it answers, so a write is never applied twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ollama_cli.errors import CorruptRecord
    from ollama_cli.jobs import Job, JobSpec, JobStatus, JobType
    from ollama_cli.store.buckets import Bucket
    from ollama_cli.store.records import (BackendState, BatchEntry, Changed, DaemonInfo, HookEvent, PartialText,
                                          Planner, RunProgress, SemanticMatch, Settle, Tick)

# ------------------------------------------------------------------------ protocols


class DaemonLock(Protocol):
    """A running daemon's proof of life: held from `Engine.daemon_lock()` until `release()` or
    until the process ends, however it ends (the kernel, or the server, drops it)."""

    id: str  # the daemon's id, unique among all daemons that ever used the store

    def release(self) -> None: ...


class Notifier(Protocol):
    def wait(self, timeout: float) -> None:
        """Return when jobs may have changed, and after `timeout` seconds at the latest. It may
        return early for no reason: callers read again and decide. An engine that cannot tell
        (LMDB) sleeps `timeout`; one that can (PostgreSQL's LISTEN) returns at the change."""


# --------------------------------------------------------------------------- the interface


class Engine(Protocol):
    """The store as the CLI and the daemon see it. One object per process; not shared between
    threads except that the daemon calls it from one writer thread at a time."""

    name: str  # which engine: "lmdb" or "postgresql", as `info` shows it
    location: str  # where the store is, as `info` shows it (a folder for LMDB; a URL, never its password)
    notifier: Notifier
    # Seconds without a confirmed heartbeat after which a daemon on this store stops its
    # running requests and claims nothing (it fences itself), because other daemons may
    # soon take its jobs back; None where they cannot while it runs (LMDB: its lock is a
    # local flock, which no network cut can take from it).
    fence_after: float | None

    def now(self) -> float:
        """The store's clock, in seconds since the epoch: the `now` to give every operation.
        LMDB: this host's `time.time()`. PostgreSQL: the server's clock (read when it
        connected, plus the time elapsed since on this host's monotonic clock, not a round
        trip per call), so that every host that shares the store agrees on when a held job
        is due and how old a heartbeat is."""
        ...

    # ------------------------------------------------------------------- jobs in

    def submit(self, spec: JobSpec, now: float) -> Job:
        """Queue one job; the job as stored. It is pending (ready, held until `run_at`, or
        blocked on `after`), or completed at once from the cache (`cached`, `cache_hit` exact with
        the entry's source job if it is still there: an identical request completed before, its
        entry not expired, `use_cache`, and neither `after` nor `run_at`), or failed at once
        (a dependency failed or was cancelled). UsageError if a dependency does not exist."""
        ...

    def submit_many(self, specs: Sequence[JobSpec], now: float) -> list[Job]:
        """Queue every spec as `submit` queues one, all in one transaction, with consecutive
        ids in the order given. A refusal of one refuses all."""
        ...

    def submit_batch(self, specs: Sequence[JobSpec], now: float, *, name: str | None = None) -> tuple[str, list[Job]]:
        """`submit_many` with every job in the batch `name` (UsageError if a batch of that name
        exists), or, without a name, in a new one named `batch-<n>` (n counting up, passing names
        in use). The batch's name and its jobs."""
        ...

    # --------------------------------------------------------------------- reads

    def get_job(self, job_id: int) -> Job | None:
        """The job, or None if there is no such job."""
        ...

    def get_jobs(self, ids: Iterable[int]) -> list[Job | CorruptRecord | None]:
        """Many jobs in one consistent read, in the order asked: None for an unknown id, the
        CorruptRecord for a record that cannot be decoded (never raised)."""
        ...

    def get_request(self, job_id: int) -> dict[str, Any]:
        """The job's stored request; {} if there is no such job."""
        ...

    def get_result(self, job_id: int) -> dict[str, Any] | None:
        """A completed job's result; None for any other job or an unknown id."""
        ...

    def list_jobs(self, *, statuses: Iterable[JobStatus] = (), model: str | None = None,
                  job_type: JobType | None = None, batch: str | None = None, name: str | None = None,
                  limit: int | None = None, offset: int = 0,
                  before: int | None = None) -> tuple[list[Job], list[CorruptRecord]]:
        """Jobs newest first (highest id first) that match every filter given (any of
        `statuses`; `model` as `jobs.full_name` compares names: `m`, `m:latest` and `M` are one
        model; `name` is the job's own, exactly), skipping the first `offset` matches, at most
        `limit`; with `before`, only ids below it (a caller reading page by page passes the
        last id it got). Records that cannot be decoded are handed back apart, never raised."""
        ...

    def counts(self) -> dict[str, int]:
        """Jobs per status value, and "total"; at the same cost whatever the number of jobs."""
        ...

    def positions(self, jobs: Iterable[Job], now: float) -> dict[int, int]:
        """Each ready job's 1-based place in the order jobs start (priority, then id), counting a
        held job whose time has come by `now` as ready. Jobs that are not ready are left out."""
        ...

    def ids_with_status(self, *statuses: JobStatus) -> list[int]:
        """Ids of every job in these statuses, in id order per status."""
        ...

    def partial_output(self, job_id: int) -> PartialText | None:
        """The text the job's current run has streamed so far (`start` 0, `attempt` the run's),
        as its daemon last wrote it; None unless the job runs and that run wrote some."""
        ...

    # ------------------------------------------------------------------ changes

    def cancel(self, ids: Sequence[int], now: float) -> list[Changed]:
        """Cancel each pending or running job (`error` cancelled). A running job is cancelled at
        once, but its run stays open, the job keeping its lease, until its daemon (which sees the
        job is no longer its own, stops the request and settles it) or `reclaim` closes it; that
        settle records nothing. Jobs that depend on a cancelled job fail. One transaction; one
        entry per id, in order. Idempotent: a finished job is left as it is (`changed` False)."""
        ...

    def retry(self, ids: Sequence[int] | None, now: float) -> list[Changed]:
        """Queue each failed or cancelled job again, its attempts, error, times and host cleared
        (a job whose dependency failed is failed again at once). A job whose last run is still
        open (cancelled while it ran) is pending but not ready, and has no position, until that
        run closes; then it is claimed like any other. `ids` None: every failed job. One
        transaction; one entry per id, in order; other jobs are left as they are."""
        ...

    def pause(self) -> None:
        """No job is claimed until `resume`; running jobs go on. Idempotent; survives restarts."""
        ...

    def resume(self) -> None:
        """Claims go on. Idempotent."""
        ...

    def is_paused(self) -> bool: ...

    def clean(self, statuses: Iterable[JobStatus], now: float, *, older_than: float | None = None) -> int:
        """Delete finished jobs of these statuses (with `older_than`, only those finished at least
        that many seconds before `now`) with their requests, results and every index entry; how
        many. UsageError, and nothing deleted, if a status is not a finished one."""
        ...

    # ------------------------------------------------------------------ batches

    def batch_counts(self, name: str) -> dict[str, Any]:
        """`{"batch", "total", <each status>: n}` of the batch's jobs; NotFound if no job was
        ever submitted in it. A job that cannot be decoded is not counted."""
        ...

    def batch_jobs(self, name: str, *, after: int = 0, limit: int | None = None,
                   results: bool = False) -> list[BatchEntry]:
        """The batch's jobs in id order, from the first id greater than `after`, at most `limit`;
        with `results`, each completed job's result too. [] for an unknown batch."""
        ...

    def batch_names(self) -> list[str]:
        """The name of every batch that has a job, the newest batch (by its first id) first."""
        ...

    # -------------------------------------------------------------------- cache

    def cache_stats(self) -> dict[str, Any]:
        """`{"entries", "hits", "misses", "bytes", "semantic": {"entries", "hits"}}`: exact lookups
        at submit count hits and misses; a semantic hit counts in `hits` and `semantic.hits`;
        `bytes` are the answers' and the vectors'; `semantic.entries` the entries with a vector."""
        ...

    def cache_list(self, *, limit: int | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """Entries newest first (at most `limit`; of `model` as `jobs.full_name` compares names):
        `{"key" (hex), "model", "type", "created_at", "last_hit_at" (seconds), "hits", "bytes",
        "source" (the job whose answer it is)}`."""
        ...

    def cache_clear(self, now: float = 0.0, *, model: str | None = None, older_than: float | None = None) -> int:
        """Remove every entry of the result cache, or only those of `model` and/or created at
        least `older_than` seconds before `now`; how many. Stored results of jobs, and the
        hit and miss counts, stay."""
        ...

    def semantic_lookup(self, scope: bytes, vector: bytes, threshold: float, now: float) -> SemanticMatch | None:
        """The entry of `scope` (`cache.semantic.scope_of`) whose vector is nearest `vector`
        (normalised little-endian float32) by cosine similarity, with its answer, if that
        similarity is at least `threshold` and the entry has not expired by `now`; reads the
        vectors of that scope only. Counts nothing: the settle that reuses it counts the hit.

        Cache entries, on every engine: a COMPLETE settle stores the answer of a job that may
        use the cache under its request's key (replacing one there), with `Settle.cache`'s TTL
        (an expired entry never answers and goes, a few per store) and bound (while the cache
        holds more, the least recently hit entries go, found by an index, never a scan), and
        its scope and vector; a COMPLETE settle with `reuse` completes the job as a semantic
        hit (`cached`, `cache_hit`) and stores nothing. A hit moves an entry to the back of the
        eviction order and counts in its `hits`."""
        ...

    # --------------------------------------------------------------- statistics

    def feedback(self, job_id: int, score: float, reason: str | None, category: str | None,
                 now: float) -> Job:
        """Rate a completed job: its `feedback` becomes (score, reason, category), replacing any
        earlier rating, and with `category` the job's category becomes it (else the feedback
        names the category the job has). The statistics of the job's finish hour follow in the
        same transaction: the old rating and category are taken away, the new ones added. The
        job as it now is. NotFound for an unknown id, OperationFailed for a job that did not
        complete; nothing is written then. The score and texts are the caller's to check."""
        ...

    def stat_buckets(self, since_hour: int | None = None) -> list[Bucket]:
        """The statistics' hour buckets from `since_hour` (hours since the epoch) on, all if
        None (`store/buckets.py` says what they hold). Each job that finishes (completed, failed
        or cancelled, by any path: a settle, a cancel, a cache hit at submit, a failed
        dependency, a quarantine) is counted once per end (a job retried and finished again counts
        again), in the transaction that records that end, in the bucket of (its finish hour, its
        model's canonical name, its type) and, with a category, of (hour, model, `type:category`).
        A job that falls back to another model (FALLBACK, or reclaimed out of attempts) is
        counted, in that transaction, as a failed job of the model it leaves, with its error's
        type; it is counted again where it finally ends. `clean` leaves them. Costs the buckets
        read, never the jobs."""
        ...

    # ------------------------------------------------------------------ daemons

    def daemon_lock(self) -> DaemonLock:
        """A new daemon id, and the lock that says it lives (see DaemonLock)."""
        ...

    def is_alive(self, daemon_id: str) -> bool:
        """Whether the daemon's lock is held now. False for an unknown id. Never mistakes a live
        daemon for a dead one; a dead one may look alive for as long as the engine needs to
        notice (LMDB: not at all, the kernel drops the lock with the process)."""
        ...

    def register(self, info: DaemonInfo) -> None:
        """Record a daemon for `info` and `daemons()`; replaces a record of the same id."""
        ...

    def heartbeat(self, daemon_id: str, now: float) -> None:
        """Set the daemon's `last_heartbeat`; nothing if it is not registered. PostgreSQL
        writes the server's clock at the commit instead of `now` (as `register` does): its
        reclaim compares a heartbeat with that clock (`fence_after`)."""
        ...

    def unregister(self, daemon_id: str) -> None:
        """Remove the daemon's record; idempotent."""
        ...

    def daemons(self) -> list[DaemonInfo]:
        """Registered daemons, alive or not (ask `is_alive`); unreadable records are left out."""
        ...

    # ------------------------------------------- what living daemons know (top, info)

    def record_backends(self, daemon_id: str, states: Sequence[BackendState], now: float) -> None:
        """Replace what this daemon knows of its backends (written with its heartbeat)."""
        ...

    def backends(self) -> list[BackendState]:
        """What the living daemons know of their backends (a dead daemon's rows are not shown),
        by daemon id, each daemon's in the order it recorded them. Unreadable records are left out."""
        ...

    def record_progress(self, daemon_id: str, runs: Sequence[RunProgress], now: float) -> None:
        """Replace how far this daemon's running attempts have streamed (written with its
        heartbeat; at most one entry per job it runs, so the record stays as small as that)."""
        ...

    def progress(self) -> list[RunProgress]:
        """The running attempts of the living daemons (a dead daemon's are not shown), by job id."""
        ...

    def finished_per_minute(self, now: float) -> list[int]:
        """Jobs that finished (completed, failed or cancelled, having been queued: not those
        answered from the cache or refused at submit) in each of the 60 minutes of the store
        clock up to `now`, oldest first; the last is the minute of `now`, still filling. Kept
        by the transaction that ends each job, in a record of fixed size: O(1) to read."""
        ...

    def ready_depth(self) -> list[tuple[int, str, int]]:
        """(priority rank, canonical model, ready jobs) for every model with ready jobs, by rank
        then model: from counters kept beside the jobs, at a cost that grows with the models,
        never with the jobs."""
        ...

    # --------------------------------------------------------- the daemon's step

    def settle_and_claim(self, settles: Sequence[Settle], now: float, *, owner: str,
                         planner: Planner | None = None, lookahead: int | None = None) -> Tick:
        """One transaction: record each settle, then (with a planner) claim what it chooses.

        A settle is recorded only while the job still runs under that lease token; otherwise it
        gives None, and records nothing of its kind: if the job keeps that token for a run
        still open (it was cancelled while it ran, perhaps retried since), the settle, of any
        kind, closes the run (the job's lease goes; a job retried meanwhile becomes ready);
        if not (reclaimed, cleaned, settled before), it changes nothing. COMPLETE stores the
        result (and in the cache, if the job may use it) and completes the job; FAIL with
        `retry_after` and attempts left makes it wait that long, else fails it; RELEASE makes
        it pending again without counting the attempt; FALLBACK starts it again on the first of
        its `fallbacks` (taken off the list), pending and ready at once, attempts at 0, `error`
        the settle's, its cache key made for that model (it fails, as FAIL without attempts
        left, when it has no fallback left).

        Then, unless the queue is paused, held jobs whose time has come become ready and the
        planner gets the ready jobs (`records.ReadyJobs`): iterated, in the order they start,
        at most `lookahead` (None: the engine's own bound, which keeps a tick short however
        long the queue); asked, the oldest ready job of a priority or of a model, the embeds
        of a model and the models with ready jobs, each at a cost independent of the queue's
        depth and of how many models it holds (paused: nothing). Each job of a
        placement it returns is claimed: running under a new lease (owner, a token never used
        before), its attempts counted, its `host` set. The planner must be a pure function of
        its arguments: it may be called more than once, and only the last call's plan is
        claimed (and its `state` returned). Jobs quarantined on the way are in `quarantined`."""
        ...

    def write_partials(self, parts: Sequence[PartialText]) -> None:
        """One transaction: each part whose job still runs under its lease token is recorded,
        its text put after the first `start` characters of what that run wrote before (a part
        whose `start` is past that end is ignored); parts of other runs are ignored, so a run
        that lost its job writes nothing, and a new run starts from nothing. What a run wrote
        is deleted in the transaction in which its job stops running (settled, cancelled,
        reclaimed, quarantined)."""
        ...

    def reclaim(self, now: float) -> list[Job]:
        """Running jobs whose owner is not alive go back to pending (the attempt counts, `error`
        abandoned) or, attempts used up, start again on their next fallback model (as a FALLBACK
        settle, `error` abandoned) or fail as abandoned; the runs such an owner kept open
        (for jobs cancelled while they ran) close; dead daemons' records are removed. The jobs
        taken back. Never touches the jobs of a daemon alive in this process. PostgreSQL: an
        owner is dead once its lock is gone AND its heartbeat is older than RECLAIM_AFTER on
        the server's clock (`store/postgres/liveness.py`), by when it has fenced itself."""
        ...

    # -------------------------------------------------------------------- hooks
    # Hooks (`daemon --on-finish`) run at least once per finished job. The transaction that
    # finishes a job (settle, cancel, a failed dependency, a cache hit at submit, reclaim,
    # quarantine) records a hook event for it when `now` is before the time last given to
    # `record_hooks_until`, and only then: processes that finish jobs cannot know whether a
    # daemon runs hooks, so a daemon that does says so, and an outbox nobody empties stops
    # growing once it stops saying so.

    def record_hooks_until(self, until: float) -> None:
        """Record hook events for jobs that finish before `until` (a later time than the one
        set moves it; an earlier one changes nothing)."""
        ...

    def claim_hook_events(self, owner: str, limit: int, *, done: Sequence[int] = ()) -> list[HookEvent]:
        """One transaction: delete the events in `done` (their hooks ran, whatever their exit
        code; unknown ids are ignored), then hold up to `limit` events, oldest first, that no
        living daemon holds (never held, or held by a daemon that is not alive) for `owner` (a
        daemon of this process): two daemons never hold one event at once. [] when none."""
        ...

    def hook_events_pending(self) -> int:
        """Hook events left, held or not."""
        ...

    # ------------------------------------------------------------------- health

    def check(self) -> list[str]:
        """Every disagreement between the job records and what is kept beside them (indexes,
        counters), one line each: [] for a sound store. Reads only."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...


# ------------------------------------------------- LMDB's internal layer (key-value)


class Tx(Protocol):
    """An ordered key-value transaction over the named tables (`tables.py`): the layer the LMDB
    engine's queue functions (`queue/`, `cache/`) are written on. Nothing above the engines uses
    it; an engine with its own query language (PostgreSQL) needs none of it.

    The rule for code written on it: **a write function may run more than once.** LMDB reruns it
    after growing its map (a serializable engine would after a conflict), and only the last run
    commits. So it must be a function of the transaction and its arguments: no appends to
    outside lists, no I/O, no clock (take `now` as an argument). Tests run every write twice,
    the first aborted, to hold code to it (`rerun_writes` in tests/conftest.py)."""

    def get(self, table: str, key: bytes) -> bytes | None:
        """The value, or None."""
        ...

    def put(self, table: str, key: bytes, value: bytes = b"") -> None:
        """Insert or replace."""
        ...

    def delete(self, table: str, key: bytes) -> bool:
        """Whether the key was there."""
        ...

    def entries(self, table: str) -> int:
        """How many keys the table holds, at the same cost whatever the number."""
        ...

    def clear(self, table: str) -> None: ...

    def counter(self, name: str) -> int:
        """A named counter (0 if never set), as this transaction left it."""
        ...

    def add(self, name: str, delta: int) -> int:
        """Add delta to a counter, clamped at zero; the new value."""
        ...

    def scan(self, table: str, prefix: bytes = b"", *, start: bytes | None = None,
             reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with prefix, in byte order or reversed, read
        lazily. `start` (a key starting with prefix) positions the scan at the first key >=
        start, or, reversed, at the last key <= start."""
        ...
