"""The queue at any depth (issue 10): the daemon finds jobs of a loaded model however far
back they are, and positions stay exact and cheap with a long queue.

Written by the engineer who measured issue 10, as strict xfails on the code before it;
each fails there.
Costs are counted, not timed: loads by the emulator, reads as LMDB operations."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_cli import queue
from ollama_cli.settings import DaemonSettings
from ollama_cli.settings.hosts import Backend
from ollama_cli.daemon.loop import Daemon
from ollama_cli.jobs import JobSpec, JobStatus, JobType, Priority, full_name
from ollama_cli.queue import indexes
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from ollama_cli.store.lmdb import Store, Tx
from tests.emulator import Emulator
from tests.helpers.cli import run_cli
from tests.helpers.daemon import drain

T0 = 1_000_000.0  # when the jobs were queued
NOW = T0 + 60.0  # when positions are asked for: jobs delayed by 30 s are due
MAX_SKIP = 50  # the daemon's overtaking bound (the default)
NO_BACKEND = "http://127.0.0.1:9"  # never contacted: a tick claims, it does not dispatch


def spec(i: int, model: str, **fields: Any) -> JobSpec:
    return JobSpec(model=model, type=JobType.GENERATE, request={"prompt": f"job {i}"},
                         use_cache=False, **fields)


# ------------------------------------------------------------------ scheduling


@pytest.mark.parametrize(("jobs", "concurrency"), [(150, 1), (150, 4), (300, 4)])
def test_an_interleaved_queue_loads_each_model_once_plus_the_forced_switches(
        store: Engine, jobs: int, concurrency: int) -> None:
    # Loads of 0.02 s, shorter than the daemon's refresh of /api/ps: it must know what a
    # load evicts. With 300 jobs some of the first model are left after the first
    # forced switch.
    store.submit_many([spec(i, f"m{i % 3 + 1}") for i in range(jobs)], T0)
    with Emulator(models=["m1", "m2", "m3"], max_loaded=1, load_time=0.02) as emu:
        drain(store, emu.url, concurrency=concurrency, max_overtake=MAX_SKIP)
        assert emu.loads <= 3 + jobs // MAX_SKIP, emu.load_log


def test_a_job_of_the_loaded_model_at_position_5000_starts_first(store: Engine) -> None:
    ahead = [spec(i, "a") for i in range(4_999)]
    deep = store.submit_many([*ahead, spec(5_000, "b")], T0)[-1]
    assert store.positions([deep], NOW) == {deep.id: 5_000}
    daemon = Daemon(store, [Backend(NO_BACKEND)], DaemonSettings(concurrency=1, max_overtake=MAX_SKIP))
    daemon.start()
    try:
        slot = daemon.pool.slots[0]
        slot.answered, slot.loaded = True, {full_name("b")}  # what /api/tags and /api/ps would say
        started = asyncio.run(daemon.step.tick(NOW, daemon.pool.views(NOW))).started
    finally:
        assert daemon.liveness is not None
        daemon.liveness.release()
    assert [c.job.id for run in started for c in run.claims] == [deep.id]


# ------------------------------------------------------------------- positions


def deep_queue(store: Store, jobs: int) -> None:
    """`jobs` jobs of three models, most of medium priority as in life, with what makes
    positions hard: delayed jobs now due (not yet moved to `ready` by a daemon), jobs
    blocked on a dependency, cancelled ones in between and running ones at the head."""

    def fields(i: int) -> dict[str, Any]:
        out: dict[str, Any] = {"priority": Priority.URGENT if i % 20 == 0 else Priority.HIGH if i % 10 == 1
                               else Priority.LOW if i % 10 == 2 else Priority.MEDIUM}
        if i % 499 == 0:
            out["run_at"] = T0 + 30.0
        if i % 101 == 0 and i > 0:
            out["after"] = (i,)  # the job queued just before it (ids start at 1): blocked
        return out

    def write(tx: Tx) -> None:
        queued = queue.submit_many(tx, [spec(i, f"m{i % 3 + 1}", **fields(i)) for i in range(jobs)], T0)
        for job in queued[::17]:
            queue.cancel(tx, job.id, T0)
        queue.claim(tx, list(queue.ready_candidates(tx, T0, limit=40)), "someone", T0)

    store.write(write)


def recount(tx: Tx) -> dict[int, int]:
    """Positions from the job records alone: pending, not held, no unfinished
    dependency, in order of priority then id."""
    jobs, corrupt = queue.list_jobs(tx)
    assert not corrupt
    status = {j.id: j.status for j in jobs}
    ready = [j for j in jobs if j.status is JobStatus.PENDING
             and max(j.run_at or 0.0, j.retry_at or 0.0) <= NOW
             and all(status.get(d, JobStatus.COMPLETED) is JobStatus.COMPLETED for d in j.after)]
    ready.sort(key=lambda j: (j.priority.rank, j.id))
    return {j.id: place for place, j in enumerate(ready, start=1)}


def test_positions_at_depth_equal_a_recount(kv: Store) -> None:
    store = kv
    deep_queue(store, 20_000)
    with store.read() as tx:
        expected = recount(tx)
        pending, _ = queue.list_jobs(tx, statuses=[JobStatus.PENDING])
        chosen = {j.id: j for j in pending[::997]}  # and the head, middle and tail of each priority:
        for p in Priority:
            run = sorted((j for j in pending if j.priority is p and j.id in expected), key=lambda j: j.id)
            chosen.update({j.id: j for j in (run[0], run[len(run) // 2], run[-1])})
        blocked = next(j for j in pending if j.after and j.id not in expected)
        delayed = [j for j in pending if j.run_at is not None]
        assert len(expected) > 15_000 and delayed and all(j.id in expected for j in delayed)
        for job in [*chosen.values(), blocked, *delayed]:
            assert queue.positions(tx, [job], NOW).get(job.id) == expected.get(job.id), job
        by_model, _ = queue.list_jobs(tx, statuses=[JobStatus.PENDING], model="m2", limit=20)
        for page in (pending[:20], by_model, list(chosen.values()), delayed):
            assert queue.positions(tx, page, NOW) == {j.id: expected[j.id] for j in page if j.id in expected}


# The reads a position may cost at 20,000 jobs: a tenth of a walk of the queue. Counts
# kept per block of ids (or any rank structure) need a few reads plus a short walk.
POSITION_READS = 2_000


@pytest.mark.parametrize("which", ["middle", "newest", "a page of the 20 newest"])
def test_a_position_at_depth_costs_a_bounded_number_of_reads(kv: Store, which: str) -> None:
    store = kv
    deep_queue(store, 20_000)
    with store.read() as tx:
        pending, _ = queue.list_jobs(tx, statuses=[JobStatus.PENDING])
        expected = recount(tx)
    # The longest run of the queue: the ready jobs of medium priority, oldest first.
    run = sorted((j for j in pending if j.priority is Priority.MEDIUM and j.id in expected), key=lambda j: j.id)
    with counted(store) as (tx, reads):
        if which == "a page of the 20 newest":
            page = pending[:20]
            assert queue.positions(tx, page, NOW) == {j.id: expected[j.id] for j in page if j.id in expected}
        else:
            job = run[len(run) // 2] if which == "middle" else run[-1]
            assert queue.positions(tx, [job], NOW).get(job.id) == expected[job.id]
        assert reads() <= POSITION_READS


class _Counting:
    """An LMDB transaction or cursor that counts the operations made through it (and
    each item of an iterator it hands out)."""

    def __init__(self, inner: Any, count: list[int]) -> None:
        self._inner, self._count = inner, count

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name in ("key", "value", "item"):  # reads of where a cursor is
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._count[0] += 1
            out = attr(*args, **kwargs)
            if name == "cursor":
                return _Counting(out, self._count)
            return self._items(out) if isinstance(out, Iterator) else out

        return call

    def _items(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            self._count[0] += 1
            yield item


@contextlib.contextmanager
def counted(store: Store) -> Iterator[tuple[Tx, Callable[[], int]]]:
    """A read transaction whose LMDB operations are counted, and the count so far."""
    count = [0]
    txn = store.env.begin()
    try:
        yield Tx(_Counting(txn, count), store.dbs), lambda: count[0]
    finally:
        txn.abort()


# ------------------------------------------------------------------- migration

GOLDEN = Path(__file__).parent / "data" / "store-schema1"  # written by the code before issue 10


def test_a_store_written_before_the_per_model_index_is_migrated_on_open(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700)
    shutil.copy(GOLDEN / "data.mdb", data_dir / "data.mdb")
    with open_store(data_dir, readonly=True) as store:  # it lacks tables: opened writable, and migrated
        assert store.check() == []
        pending, _ = store.list_jobs(statuses=[JobStatus.PENDING])
        # ready: 3 (high, a), then medium 1 (a), 2 (b), 6 (a), then low 5 (c:7b); 7 waits, 8 is blocked
        assert store.positions(pending, T0) == {3: 1, 1: 2, 2: 3, 6: 4, 5: 5}
        with store.kv.read() as tx:
            assert tx.get("meta", b"schema") == b"2"
            ready = queue.ready_candidates(tx, T0)
            assert ready.oldest(Priority.MEDIUM.rank, full_name("a"), after=1).id == 6
            assert sorted(ready.models(Priority.MEDIUM.rank)) == ["a:latest", "b:latest"]


def test_positions_stay_right_in_a_store_whose_counts_were_not_kept(kv: Store) -> None:
    # What a store looks like after an older version wrote to it: `ready` moved, the
    # per-model counts did not. Read-only commands cannot rebuild them: they walk.
    deep_queue(kv, 3_000)
    with kv.read() as tx:
        expected = recount(tx)
        pending, _ = queue.list_jobs(tx, statuses=[JobStatus.PENDING])
    stale = kv.write(lambda tx: [tx.add(k.decode(), -tx.counter(k.decode())) for k, _ in tx.scan("meta", b"rb/")])
    assert stale
    kv.write(lambda tx: tx.add(f"rm/2/{indexes.model_digest('m1').hex()}", 1))
    with kv.read() as tx:
        assert not indexes.in_step(tx)
        assert queue.positions(tx, pending, NOW) == {j.id: expected[j.id] for j in pending if j.id in expected}


@pytest.mark.parametrize("model", ["m2", "m9"])
def test_listing_the_pending_jobs_of_a_model_reads_its_index_not_the_queue(kv: Store, model: str) -> None:
    deep_queue(kv, 20_000)
    with kv.read() as tx:
        pending, _ = queue.list_jobs(tx, statuses=[JobStatus.PENDING])
    expected = [j for j in pending if j.model == model]
    with counted(kv) as (tx, reads):
        assert queue.list_jobs(tx, statuses=[JobStatus.PENDING], model=model)[0] == expected
    with counted(kv) as (tx, reads):
        assert queue.list_jobs(tx, statuses=[JobStatus.PENDING], model=model, limit=20)[0] == expected[:20]
        assert reads() <= POSITION_READS  # the held jobs (a few hundred), then 20 of the model's


@pytest.mark.parametrize(("flags", "loads"), [((), 3), (("--max-overtake", "0"), 6)])
def test_max_overtake_trades_loads_for_order(data_dir: Path, flags: tuple[str, ...], loads: int) -> None:
    # m1 m2 m3 m1 m2 m3 on a backend holding one model: reordering loads each model once;
    # --max-overtake 0 keeps queue order, a load per job.
    with open_store(data_dir) as store:
        store.submit_many([spec(i, f"m{i % 3 + 1}") for i in range(6)], T0)
    with Emulator(models=["m1", "m2", "m3"], max_loaded=1) as emu:
        done = run_cli(data_dir, "daemon", "--drain", "--host", emu.url, *flags)
        assert done.returncode == 0, done.stderr
        assert emu.loads == loads, emu.load_log
