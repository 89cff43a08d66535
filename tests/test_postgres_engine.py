"""The PostgreSQL engine against a real server: the queue's semantics (LMDB's `queue/` is the
model), and what only a shared server adds: several daemons claiming at once, liveness by
advisory lock, wake-ups by NOTIFY."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ollama_cli.jobs import ErrorType, Job, JobError, JobStatus, JobType, Priority
from ollama_cli.store.base import DaemonInfo, JobSpec, Placement, Plan, Settle, SettleKind
from ollama_cli.store.postgres.engine import PostgresEngine

NOW = 1_000_000.0


@pytest.fixture
def engine(pg_store_url: str) -> Iterator[PostgresEngine]:
    e = PostgresEngine(pg_store_url)
    yield e
    assert e.check() == []
    e.close()


def spec(model: str = "m", prompt: str = "p", **kw: Any) -> JobSpec:
    return JobSpec(model=model, type=JobType.GENERATE, request={"prompt": prompt}, **kw)


def first(n: int, host: str = "h1") -> Callable[..., Plan]:
    """A planner that starts the first n candidates, one request each."""
    def plan(candidates: Iterator[Job], request: Callable[[Job], dict[str, Any]]) -> Plan:
        return Plan([Placement(0, host, (job,)) for job in itertools.islice(candidates, n)])

    return plan


def claim(engine: PostgresEngine, owner: str, n: int = 1, now: float = NOW) -> list[Any]:
    tick = engine.settle_and_claim([], now, owner=owner, planner=first(n))
    return [c for _, claims in tick.claimed for c in claims]


def complete(engine: PostgresEngine, c: Any, result: dict[str, Any], now: float = NOW) -> Job | None:
    return engine.settle_and_claim([Settle(SettleKind.COMPLETE, c.job.id, c.job.lease.token, result=result)],
                                   now, owner=c.job.lease.owner).settled[0]


def test_jobs_start_by_priority_then_id_and_positions_say_so(engine: PostgresEngine) -> None:
    low, med1, urgent, med2 = engine.submit_many(
        [spec(priority=Priority.LOW), spec(), spec(priority=Priority.URGENT), spec()], NOW)
    assert [low.id, med1.id, urgent.id, med2.id] == [1, 2, 3, 4]  # consecutive, in order
    assert engine.positions([low, med1, urgent, med2], NOW) == {3: 1, 2: 2, 4: 3, 1: 4}
    assert engine.counts() == {"pending": 4, "running": 0, "completed": 0, "failed": 0, "cancelled": 0,
                               "total": 4}
    (c,) = claim(engine, "d-1-1")
    assert c.job.id == urgent.id and c.request == {"prompt": "p"}
    assert (c.job.status, c.job.attempts, c.job.host, c.job.started_at) == (JobStatus.RUNNING, 1, "h1", NOW)
    assert engine.positions(engine.get_jobs([1, 2, 4]), NOW) == {2: 1, 4: 2, 1: 3}


def test_a_completed_request_answers_an_identical_one_from_the_cache(engine: PostgresEngine) -> None:
    engine.submit(spec(prompt="same"), NOW)
    (c,) = claim(engine, "d-1-1")
    done = complete(engine, c, {"response": "42"}, NOW + 1)
    assert done is not None and done.status is JobStatus.COMPLETED and done.finished_at == NOW + 1
    assert engine.get_result(c.job.id) == {"response": "42"}
    again = engine.submit(spec(prompt="same"), NOW + 2)
    assert again.status is JobStatus.COMPLETED and again.cached
    assert engine.get_result(again.id) == {"response": "42"}
    assert engine.cache_stats() == {"entries": 1, "hits": 1, "misses": 1,
                                    "bytes": engine.cache_stats()["bytes"]}
    assert engine.cache_clear() == 1
    assert engine.cache_stats()["entries"] == 0 and engine.cache_stats()["bytes"] == 0


def test_a_settle_under_a_lost_lease_changes_nothing(engine: PostgresEngine) -> None:
    engine.submit(spec(), NOW)
    (c,) = claim(engine, "d-1-1")
    assert engine.settle_and_claim([Settle(SettleKind.COMPLETE, c.job.id, "not-the-token", result={})],
                                   NOW, owner="d-1-1").settled == [None]
    (changed,) = engine.cancel([c.job.id], NOW)
    assert changed.changed and changed.job.status is JobStatus.CANCELLED
    assert complete(engine, c, {"response": "late"}) is None
    assert engine.get_job(c.job.id).status is JobStatus.CANCELLED and engine.get_result(c.job.id) is None


def test_a_transient_failure_waits_its_backoff_then_goes_again(engine: PostgresEngine) -> None:
    job = engine.submit(spec(max_attempts=2), NOW)
    (c,) = claim(engine, "d-1-1")
    error = JobError(ErrorType.UNREACHABLE, "down")
    (again,) = engine.settle_and_claim([Settle(SettleKind.FAIL, job.id, c.job.lease.token, error=error,
                                               retry_after=10)], NOW, owner="d-1-1").settled
    assert again.status is JobStatus.PENDING and again.retry_at == NOW + 10 and again.error == error
    assert claim(engine, "d-1-1", now=NOW + 9) == []
    assert engine.positions([again], NOW + 9) == {} and engine.positions([again], NOW + 10) == {job.id: 1}
    (c2,) = claim(engine, "d-1-1", now=NOW + 10)
    assert c2.job.attempts == 2
    (failed,) = engine.settle_and_claim([Settle(SettleKind.FAIL, job.id, c2.job.lease.token, error=error,
                                                retry_after=10)], NOW + 11, owner="d-1-1").settled
    assert failed.status is JobStatus.FAILED  # no attempts left


def test_dependents_start_when_their_dependency_completes_and_fail_when_it_does_not(engine: PostgresEngine) -> None:
    a, b = engine.submit_many([spec(prompt="a"), spec(prompt="b")], NOW)
    after_a = engine.submit(spec(prompt="c", after=(a.id,)), NOW)
    after_b = engine.submit(spec(prompt="d", after=(b.id,)), NOW)
    assert engine.positions([after_a], NOW) == {}
    (ca, cb) = claim(engine, "d-1-1", n=2)
    complete(engine, ca, {"response": "ok"})
    assert engine.positions([engine.get_job(after_a.id)], NOW) == {after_a.id: 1}
    engine.cancel([cb.job.id], NOW)
    failed = engine.get_job(after_b.id)
    assert failed.status is JobStatus.FAILED and failed.error.type is ErrorType.DEPENDENCY_FAILED
    with pytest.raises(Exception, match="--after 99: no such job"):
        engine.submit(spec(after=(99,)), NOW)
    assert engine.counts()["total"] == 4


def test_a_paused_queue_claims_nothing_until_resumed(engine: PostgresEngine) -> None:
    engine.submit(spec(), NOW)
    engine.pause()
    assert engine.is_paused() and claim(engine, "d-1-1") == []
    engine.resume()
    assert len(claim(engine, "d-1-1")) == 1


def test_batches_are_named_counted_and_listed_in_id_order(engine: PostgresEngine) -> None:
    name, jobs = engine.submit_batch([spec(prompt=str(i)) for i in range(3)], NOW)
    assert name == "batch-1" and [j.batch for j in jobs] == [name] * 3
    with pytest.raises(Exception, match="already used"):
        engine.submit_batch([spec()], NOW, name=name)
    (c,) = claim(engine, "d-1-1")
    complete(engine, c, {"response": "r0"})
    assert engine.batch_counts(name) == {"batch": name, "total": 3, "pending": 2, "running": 0,
                                         "completed": 1, "failed": 0, "cancelled": 0}
    entries = engine.batch_jobs(name, results=True)
    assert [e.id for e in entries] == [j.id for j in jobs]
    assert entries[0].result == {"response": "r0"} and entries[1].result is None
    assert [e.id for e in engine.batch_jobs(name, after=jobs[0].id, limit=1)] == [jobs[1].id]


def test_list_filters_newest_first_and_clean_deletes_finished_jobs(engine: PostgresEngine) -> None:
    engine.submit_many([spec(model="a"), spec(model="b"), spec(model="a")], NOW)
    (c,) = claim(engine, "d-1-1")
    complete(engine, c, {"response": "x"}, NOW)
    jobs, corrupt = engine.list_jobs(model="a")
    assert [j.id for j in jobs] == [3, 1] and corrupt == []
    assert [j.id for j in engine.list_jobs(statuses=[JobStatus.PENDING], limit=1)[0]] == [3]
    assert engine.ids_with_status(JobStatus.COMPLETED, JobStatus.PENDING) == [1, 2, 3]
    assert engine.clean([JobStatus.COMPLETED], NOW + 5, older_than=10) == 0
    assert engine.clean([JobStatus.COMPLETED], NOW + 10, older_than=10) == 1
    assert engine.get_job(1) is None and engine.counts()["total"] == 2
    with pytest.raises(Exception, match="finished jobs only"):
        engine.clean([JobStatus.PENDING], NOW)


def test_retry_queues_failed_jobs_again_with_attempts_starting_over(engine: PostgresEngine) -> None:
    job = engine.submit(spec(max_attempts=1), NOW)
    (c,) = claim(engine, "d-1-1")
    engine.settle_and_claim([Settle(SettleKind.FAIL, job.id, c.job.lease.token,
                                    error=JobError(ErrorType.BACKEND_ERROR, "boom"))], NOW, owner="d-1-1")
    (changed, unknown) = engine.retry([job.id, 99], NOW)
    assert changed.changed and changed.job.status is JobStatus.PENDING and changed.job.attempts == 0
    assert unknown == (99, None, False)


def test_a_dead_daemons_jobs_come_back_and_a_live_ones_stay(pg_store_url: str, engine: PostgresEngine) -> None:
    other = PostgresEngine(pg_store_url)
    live, doomed = engine.daemon_lock(), other.daemon_lock()
    for lock in (live, doomed):
        engine.register(DaemonInfo(lock.id, 1, ["h"], 1, NOW, NOW))
    engine.submit_many([spec(prompt="1"), spec(prompt="2")], NOW)
    mine, theirs = claim(engine, live.id)[0], claim(other, doomed.id)[0]
    assert engine.is_alive(live.id) and engine.is_alive(doomed.id)
    assert engine.reclaim(NOW) == []
    other.close()  # its session ends: the server drops its lock
    assert not engine.is_alive(doomed.id) and engine.is_alive(live.id)
    (back,) = engine.reclaim(NOW + 1)
    assert back.id == theirs.job.id and back.status is JobStatus.PENDING
    assert back.error.type is ErrorType.ABANDONED and back.attempts == 1
    assert engine.get_job(mine.job.id).status is JobStatus.RUNNING
    assert [d.id for d in engine.daemons()] == [live.id]


def test_daemons_claiming_at_once_never_share_a_job(pg_store_url: str, engine: PostgresEngine) -> None:
    engine.submit_many([spec(prompt=str(i)) for i in range(120)], NOW)
    runs: list[int] = []
    start = threading.Barrier(3)

    def daemon(n: int) -> None:
        e = PostgresEngine(pg_store_url)
        start.wait()
        while True:
            claims = claim(e, f"d-{n}-{n}", n=3)
            if not claims and e.counts()["pending"] == 0:
                break
            for c in claims:
                runs.append(c.job.id)
                assert complete(e, c, {"response": str(c.job.id)}) is not None
        e.close()

    threads = [threading.Thread(target=daemon, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(runs) == list(range(1, 121))
    assert engine.counts()["completed"] == 120


def test_a_waiter_wakes_when_a_job_is_submitted_elsewhere(pg_store_url: str, engine: PostgresEngine) -> None:
    engine.notifier.wait(0)  # listening from now on
    woke = threading.Event()

    def wait() -> None:
        engine.notifier.wait(60)
        woke.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    with PostgresEngine(pg_store_url) as submitter:
        submitter.submit(spec(), NOW)
    assert woke.wait(30)  # long before the 60 s backstop
    waiter.join()
