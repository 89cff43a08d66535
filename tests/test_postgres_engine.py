"""The PostgreSQL engine against a real server, in what only a shared server adds: several
daemons claiming at once, liveness by advisory lock across connections, wake-ups by NOTIFY.
The queue's semantics are the contract suite's (tests/contract/, run on both engines) and the
differential test's (LMDB as the model)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ollama_cli.jobs import ErrorType, Job, JobSpec, JobStatus, JobType, Priority
from ollama_cli.store.postgres import liveness
from ollama_cli.store.postgres.engine import PostgresEngine
from ollama_cli.store.records import DaemonInfo, Placement, Plan, Settle, SettleKind

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


def test_a_dead_daemons_jobs_come_back_and_a_live_ones_stay(pg_store_url: str, engine: PostgresEngine) -> None:
    other = PostgresEngine(pg_store_url)
    live, doomed = engine.daemon_lock(), other.daemon_lock()
    t = engine.now()
    for lock in (live, doomed):
        engine.register(DaemonInfo(lock.id, 1, ["h"], 1, t, t))
    engine.submit_many([spec(prompt="1"), spec(prompt="2")], t)
    mine, theirs = claim(engine, live.id, now=t)[0], claim(other, doomed.id, now=t)[0]
    assert engine.is_alive(live.id) and engine.is_alive(doomed.id)
    assert engine.reclaim(t) == []
    other.close()  # its lock is released, and its record stays, as a killed daemon's does
    assert not engine.is_alive(doomed.id) and engine.is_alive(live.id)
    (back,) = engine.reclaim(t + 1)
    assert back.id == theirs.job.id and back.status is JobStatus.PENDING
    assert back.error.type is ErrorType.ABANDONED and back.attempts == 1
    assert engine.get_job(mine.job.id).status is JobStatus.RUNNING
    assert [d.id for d in engine.daemons()] == [live.id]


def test_after_a_server_restart_daemons_have_time_to_take_their_locks_back(
        postgres_server: Any, pg_store_url: str, engine: PostgresEngine) -> None:
    # A restart ends every session: every daemon's lock is free at once. The one that comes
    # back first must not take the others' jobs while they reconnect; one that does not come
    # back loses its jobs once the grace is over.
    returning, gone = PostgresEngine(pg_store_url), PostgresEngine(pg_store_url)
    locks = {e: e.daemon_lock() for e in (returning, gone)}
    t = engine.now()
    engine.submit_many([spec(prompt="1"), spec(prompt="2")], t)
    for e, lock in locks.items():
        e.register(DaemonInfo(lock.id, 1, ["h"], 1, t, t))
        claim(e, lock.id, now=t)
    postgres_server.restart()
    assert engine.reclaim(engine.now()) == []  # both within the grace
    returning.heartbeat(locks[returning].id, returning.now())  # reconnects, takes its lock back
    assert engine.is_alive(locks[returning].id) and engine.is_alive(locks[gone].id)
    (back,) = engine.reclaim(engine.now() + liveness.RESTART_GRACE)
    assert back.lease is None and engine.get_job(back.id).error.type is ErrorType.ABANDONED
    assert [d.id for d in engine.daemons()] == [locks[returning].id]
    assert not engine.is_alive(locks[gone].id)
    returning.close()
    gone.close()


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


def test_a_host_whose_clock_is_off_keeps_the_servers_time(pg_store_url: str, engine: PostgresEngine,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # The server runs on this machine: its clock is time.time()'s. This process's clock is then
    # set an hour ahead, as a host whose clock is wrong; a connection made now still reads the
    # server's (a minute of slack for the time a query takes; an hour is what it must not be).
    import time

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    with PostgresEngine(pg_store_url) as skewed:
        assert abs(skewed.now() - real()) < 60
        job = skewed.submit(spec(), skewed.now())
    assert abs(job.created_at - real()) < 60


@pytest.mark.parametrize("landed", [True, False], ids=["committed", "not committed"])
def test_a_write_whose_connection_breaks_as_it_commits_is_applied_once(
        engine: PostgresEngine, monkeypatch: pytest.MonkeyPatch, landed: bool) -> None:
    # The session ends itself just after its COMMIT, or just before: either way the client sees
    # its connection break while committing, and must learn which from the server.
    from ollama_cli.store.postgres.transactions import Database

    end, runs = Database._end, []
    suicide = "SELECT pg_terminate_backend(pg_backend_pid())"

    def breaking(self: Database, tx: Any) -> str:
        runs.append(1)
        statements = end(self, tx)
        if len(runs) > 1:
            return statements
        return f"{statements}; {suicide}" if landed else statements.replace("COMMIT", f"{suicide}; COMMIT")

    monkeypatch.setattr(Database, "_end", breaking)
    job = engine.submit(spec(prompt="once"), NOW)
    assert len(runs) == (1 if landed else 2)  # run again only if it had not landed
    assert job.id == 1 and engine.counts()["total"] == 1
    assert engine.submit(spec(prompt="next"), NOW).id == 2


def test_positions_add_the_block_counters_of_every_level_and_match_a_count(engine: PostgresEngine) -> None:
    """Ids that straddle blocks of 2^10, 2^15 and 2^20 (the serial set just below 2^20),
    priorities mixed, some claimed and cancelled: each position is the count of ready jobs
    ahead of it in (priority, id) order, as a walk of the queue would give."""
    engine._db.write(lambda tx: tx.cur.execute("UPDATE serials SET last = %s WHERE name = 'job'", (2 ** 20 - 40,)))
    priorities = list(Priority)
    jobs = engine.submit_many([spec(prompt=str(i), priority=priorities[i % 4]) for i in range(80)], NOW)
    for i in range(3):  # jump 2^10, then 2^15 ids ahead: blocks of every level hold ready jobs
        engine._db.write(lambda tx, i=i: tx.cur.execute(
            "UPDATE serials SET last = last + %s WHERE name = 'job'", (2 ** 10 if i < 2 else 2 ** 15,)))
        jobs += engine.submit_many([spec(prompt=f"{i}-{k}", priority=priorities[k % 4]) for k in range(20)], NOW)
    claim(engine, "someone", n=7)
    engine.cancel([j.id for j in jobs[::9]], NOW)
    current = [j for j in engine.get_jobs(j.id for j in jobs)]
    ready = sorted((j.priority.rank, j.id) for j in current if j.status is JobStatus.PENDING)
    assert ready[0][1] < 2 ** 20 < ready[-1][1]
    expected = {job_id: place for place, (_, job_id) in enumerate(ready, start=1)}
    assert engine.positions(current, NOW) == expected
    assert engine.positions([current[-1]], NOW) == {current[-1].id: expected[current[-1].id]}


def test_doctor_sees_a_block_counter_that_is_off(engine: PostgresEngine) -> None:
    (job,) = engine.submit_many([spec()], NOW)
    engine._db.write(lambda tx: tx.add(f"r15/{job.priority.rank}/{job.id >> 15:016x}", 1))
    assert engine.check() == [f"r15/{job.priority.rank}/{0:016x} is 2, the jobs say 1"]
    engine._db.write(lambda tx: tx.add(f"r15/{job.priority.rank}/{job.id >> 15:016x}", -1))
