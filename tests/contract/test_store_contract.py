"""The store's contract (`ollama_cli/store/base.py`), tested through the Engine interface only,
on every engine: each test is one documented guarantee, and every store is sound afterwards.

A new engine joins by one entry in ENGINES (`tests/helpers/engines.py`; huey's StorageTests,
BullMQ's one API over two engines); the `engine` fixture is in conftest.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ollama_cli.errors import NotFound, UsageError
from ollama_cli.jobs import (
    ErrorType,
    Job,
    JobError,
    JobSpec,
    JobStatus,
    JobType,
    Priority,
)
from ollama_cli.store.base import Engine
from ollama_cli.store.records import DaemonInfo, Placement, Plan, Settle, SettleKind
from tests.helpers.engines import ANSWER, T, claim, complete, fail, settle, take_all
from tests.helpers.jobs import make_spec

pytestmark = pytest.mark.usefixtures("rerun_writes")

PENDING, RUNNING, COMPLETED = JobStatus.PENDING, JobStatus.RUNNING, JobStatus.COMPLETED
FAILED, CANCELLED = JobStatus.FAILED, JobStatus.CANCELLED
URGENT, HIGH, MEDIUM, LOW = Priority.URGENT, Priority.HIGH, Priority.MEDIUM, Priority.LOW


def statuses(engine: Engine, *ids: int) -> list[str]:
    return [engine.get_job(i).status.value for i in ids]


# ------------------------------------------------------------------------- submit


def test_ids_count_up_from_one_in_submission_order_and_are_never_reused(engine: Engine) -> None:
    assert [engine.submit(make_spec(), T).id for _ in range(3)] == [1, 2, 3]
    assert [j.id for j in engine.submit_many([make_spec(), make_spec()], T)] == [4, 5]
    engine.cancel([5], T)
    assert engine.clean([CANCELLED], T) == 1
    assert engine.submit(make_spec(), T).id == 6


def test_submit_gives_the_job_as_stored(engine: Engine) -> None:
    job = engine.submit(make_spec("why?", priority=HIGH, name="n", max_attempts=3, timeout=60.0, keep_alive=5.0), T)
    assert job == engine.get_job(job.id)
    assert (job.status, job.priority, job.name, job.attempts, job.max_attempts, job.created_at) == \
        (PENDING, HIGH, "n", 0, 3, T)
    assert (job.timeout, job.keep_alive, job.lease, job.finished_at, job.cached) == (60.0, 5.0, None, None, False)
    assert engine.get_request(job.id) == {"prompt": "why?"}
    assert engine.get_result(job.id) is None


def test_an_unknown_dependency_refuses_the_submit_and_writes_nothing(engine: Engine) -> None:
    engine.submit(make_spec(), T)
    with pytest.raises(UsageError):
        engine.submit(make_spec(after=(1, 42)), T)
    with pytest.raises(UsageError):
        engine.submit_many([make_spec(), make_spec(after=(42,))], T)
    assert engine.counts()["total"] == 1
    assert engine.submit(make_spec(), T).id == 2  # the refusals used no id


def test_an_identical_request_completed_before_completes_at_once_from_the_cache(engine: Engine) -> None:
    first = engine.submit(make_spec("same"), T)
    complete(engine, claim(engine)[0])
    again = engine.submit(make_spec("same"), T + 1)
    assert (again.status, again.cached, again.finished_at, again.attempts) == (COMPLETED, True, T + 1, 0)
    assert engine.get_result(again.id) == engine.get_result(first.id) == ANSWER
    assert engine.cache_stats()["hits"] == 1
    for kw in ({"use_cache": False}, {"run_at": T + 5}, {"after": (first.id,)}):
        assert engine.submit(make_spec("same", **kw), T + 2).status is PENDING, kw


def test_a_job_whose_dependency_failed_fails_at_once(engine: Engine) -> None:
    dep = engine.submit(make_spec(), T)
    fail(engine, claim(engine)[0])
    job = engine.submit(make_spec(after=(dep.id,)), T + 1)
    assert job.status is FAILED and job.error.type is ErrorType.DEPENDENCY_FAILED and job.finished_at == T + 1
    assert job == engine.get_job(job.id)


def test_a_batch_takes_its_name_or_a_new_one_and_refuses_a_name_in_use(engine: Engine) -> None:
    name, jobs = engine.submit_batch([make_spec(), make_spec()], T, name="batch-2")
    assert name == "batch-2" and [j.id for j in jobs] == [1, 2] and {j.batch for j in jobs} == {"batch-2"}
    assert engine.submit_batch([make_spec()], T)[0] == "batch-1"
    assert engine.submit_batch([make_spec()], T)[0] == "batch-3"  # batch-2 is taken
    with pytest.raises(UsageError):
        engine.submit_batch([make_spec()], T, name="batch-1")
    assert engine.counts()["total"] == 4


# -------------------------------------------------------------------------- reads


def test_unknown_ids_read_as_nothing(engine: Engine) -> None:
    assert engine.get_job(7) is None
    assert engine.get_request(7) == {}
    assert engine.get_result(7) is None
    engine.submit(make_spec(), T)
    assert engine.get_jobs([7, 1, 8]) == [None, engine.get_job(1), None]


def test_counts_per_status(engine: Engine) -> None:
    for _ in range(4):
        engine.submit(make_spec(), T)
    first, second, _ = claim(engine, limit=3)
    complete(engine, first)
    fail(engine, second)
    engine.cancel([4], T)
    assert engine.counts() == {"pending": 0, "running": 1, "completed": 1, "failed": 1, "cancelled": 1, "total": 4}
    assert engine.ids_with_status(RUNNING, CANCELLED) == [3, 4]


def test_list_is_newest_first_and_filters(engine: Engine) -> None:
    engine.submit(make_spec(), T)
    engine.submit_batch([make_spec(), JobSpec(model="other", type=JobType.EMBED, request={"input": ["x"]})], T, name="b")
    engine.submit(make_spec(name="nightly"), T)
    engine.cancel([1], T)

    def ids(**kw: Any) -> list[int]:
        jobs, corrupt = engine.list_jobs(**kw)
        assert corrupt == []
        return [j.id for j in jobs]

    assert ids() == [4, 3, 2, 1]
    assert ids(statuses=[PENDING]) == [4, 3, 2]
    assert ids(statuses=[CANCELLED, PENDING], limit=2) == [4, 3]
    assert ids(model="other") == ids(job_type=JobType.EMBED) == [3]
    assert ids(batch="b") == [3, 2]
    assert ids(offset=1, limit=2) == [3, 2]
    assert ids(batch="none") == ids(limit=0) == ids(name="nightl") == []
    assert ids(name="nightly") == ids(name="nightly", statuses=[PENDING]) == [4]
    # Page by page: ids below the last one read.
    assert ids(before=4) == [3, 2, 1]
    assert ids(before=3, limit=1) == [2]
    assert ids(statuses=[PENDING, CANCELLED], before=3) == [2, 1]
    assert ids(batch="b", before=3) == [2]
    assert ids(name="nightly", before=4) == ids(before=1) == ids(before=0) == []
    assert ids(before=99) == [4, 3, 2, 1]


def test_list_by_model_takes_the_model_as_ollama_names_it(engine: Engine) -> None:
    for model in ("llama3.2", "llama3.2:latest", "Llama3.2", "llama3.2:1b", "hf.co/x/Y-GGUF:Q4_K_M", "llama3"):
        engine.submit(JobSpec(model=model, type=JobType.GENERATE, request={"prompt": model}), T)

    def ids(model: str) -> list[int]:
        return [j.id for j in engine.list_jobs(model=model)[0]]

    assert ids("llama3.2") == ids("llama3.2:latest") == ids("LLAMA3.2") == [3, 2, 1]
    assert ids("llama3.2:1b") == [4]
    assert ids("hf.co/x/y-gguf:q4_k_m") == [5]
    assert ids("llama") == []


def test_positions_follow_the_order_jobs_start(engine: Engine) -> None:
    for p in (LOW, URGENT, MEDIUM, URGENT):
        engine.submit(make_spec(priority=p), T)
    held = engine.submit(make_spec(priority=HIGH, run_at=T + 10), T)
    blocked = engine.submit(make_spec(after=(1,)), T)
    jobs = [engine.get_job(i) for i in range(1, 7)]
    assert engine.positions(jobs, T) == {2: 1, 4: 2, 3: 3, 1: 4}
    # Its time has come: counted as ready though nobody moved it yet.
    assert engine.positions(jobs, T + 10) == {2: 1, 4: 2, held.id: 3, 3: 4, 1: 5}
    assert engine.positions([engine.get_job(held.id)], T + 10) == {held.id: 3}
    assert engine.positions([blocked], T) == {}
    claim(engine)
    assert engine.positions([engine.get_job(2)], T) == {}  # running


# ------------------------------------------------------------------------ changes


def test_cancel_ends_pending_and_running_jobs_once_and_their_dependents_fail(engine: Engine) -> None:
    for _ in range(3):
        engine.submit(make_spec(), T)
    dependent = engine.submit(make_spec(after=(2,)), T)
    running, _ = claim(engine, limit=2)
    changes = engine.cancel([3, running.id, 99], T + 1)
    assert [(c.id, c.changed) for c in changes] == [(3, True), (running.id, True), (99, False)]
    assert changes[0].job.status is CANCELLED and changes[0].job.error.type is ErrorType.CANCELLED
    assert changes[2].job is None
    assert complete(engine, running) is None  # its daemon's settle comes too late
    assert engine.get_result(running.id) is None
    assert engine.cancel([3], T + 2) == [(3, engine.get_job(3), False)]  # finished: left as it is
    engine.cancel([2], T + 3)
    gone = engine.get_job(dependent.id)
    assert gone.status is FAILED and gone.error.type is ErrorType.DEPENDENCY_FAILED


def test_retry_queues_failed_and_cancelled_jobs_with_a_fresh_start(engine: Engine) -> None:
    for _ in range(4):
        engine.submit(make_spec(max_attempts=1), T)
    failed = claim(engine)[0]
    fail(engine, failed, retry_after=1.0)  # no attempt left: failed
    engine.cancel([2], T)
    changes = engine.retry([1, 2, 3, 99], T + 1)
    assert [(c.id, c.changed) for c in changes] == [(1, True), (2, True), (3, False), (99, False)]
    again = engine.get_job(1)
    assert (again.status, again.attempts, again.error, again.finished_at, again.started_at, again.host) == \
        (PENDING, 0, None, None, None, None)
    fail(engine, claim(engine)[0])
    engine.cancel([4], T)
    assert [c.id for c in engine.retry(None, T + 2)] == [1]  # every failed job, not the cancelled one


@pytest.mark.parametrize("kind", list(SettleKind), ids=lambda k: k.value)
def test_a_job_cancelled_while_it_runs_starts_again_only_once_that_run_closes(
        engine: Engine, kind: SettleKind) -> None:
    job = engine.submit(make_spec(), T)
    [run] = claim(engine)
    [cancelled] = engine.cancel([job.id], T + 1)
    assert (cancelled.job.status, cancelled.job.lease) == (CANCELLED, run.lease)  # the run is still open
    [again] = engine.retry([job.id], T + 2)
    assert (again.changed, again.job.status, again.job.attempts, again.job.lease) == (True, PENDING, 0, run.lease)
    assert claim(engine, T + 3) == []  # not while the run goes on
    assert engine.positions([again.job], T + 3) == {}
    assert engine.counts()["pending"] == 1
    # Its daemon stops the request and settles it, whatever the settle: the run closes and
    # nothing of it is recorded.
    assert settle(engine, run, kind, T + 4, result=ANSWER, error=JobError(ErrorType.BACKEND_ERROR, "x"),
                  retry_after=0.0) is None
    closed = engine.get_job(job.id)
    assert (closed.status, closed.lease, closed.attempts, closed.error) == (PENDING, None, 0, None)
    assert engine.get_result(job.id) is None and engine.positions([closed], T + 4) == {job.id: 1}
    [second] = claim(engine, T + 5)
    assert second.id == job.id and second.lease.token != run.lease.token and second.attempts == 1
    assert settle(engine, run, kind, T + 6, result=ANSWER, error=JobError(ErrorType.BACKEND_ERROR, "x"),
                  retry_after=0.0) is None  # the old token again: nothing, the new run goes on
    assert engine.get_job(job.id) == second
    assert complete(engine, second, T + 7).status is COMPLETED


def test_a_run_still_open_keeps_its_job_through_cancel_retry_cancel_and_clean(engine: Engine) -> None:
    first, second = engine.submit(make_spec(), T), engine.submit(make_spec(), T)
    run, other = claim(engine, limit=2)
    engine.cancel([first.id, second.id], T)
    engine.retry([first.id], T)
    engine.cancel([first.id], T)  # pending, run still open: cancelled again, the run still open
    assert engine.get_job(first.id).lease == run.lease
    engine.retry([first.id], T)
    assert claim(engine, T) == []
    assert engine.clean([CANCELLED], T) == 1  # the second job: its daemon's settle finds nothing
    assert complete(engine, other) is None and engine.get_job(second.id) is None
    assert complete(engine, run) is None
    assert [j.id for j in claim(engine, T + 1)] == [first.id]


def test_the_runs_a_dead_daemon_kept_open_close_at_reclaim(engine: Engine) -> None:
    alive = engine.daemon_lock()
    ids = [engine.submit(make_spec(), T).id for _ in range(3)]
    mine = claim(engine, owner=alive.id)[0]
    claim(engine, owner="dead", limit=2)
    engine.cancel(ids, T + 1)
    engine.retry([ids[0], ids[1]], T + 2)
    assert engine.reclaim(T + 3) == []  # nothing was running: nothing taken back
    retried, cancelled = engine.get_job(ids[1]), engine.get_job(ids[2])
    assert (retried.status, retried.lease, cancelled.status, cancelled.lease) == (PENDING, None, CANCELLED, None)
    assert engine.get_job(mine.id).lease == mine.lease  # a living daemon's run stays open
    assert [j.id for j in claim(engine, T + 4)] == [ids[1]]
    alive.release()


def test_pause_stops_claims_until_resume(engine: Engine) -> None:
    engine.submit(make_spec(), T)
    engine.pause()
    engine.pause()
    assert engine.is_paused()
    seen: list[list[Job]] = []
    assert engine.settle_and_claim([], T, owner="d1", planner=take_all(seen=seen)).claimed == []
    assert seen == [[]] * len(seen) and engine.get_job(1).status is PENDING
    engine.resume()
    assert not engine.is_paused()
    assert [j.id for j in claim(engine)] == [1]


def test_clean_deletes_finished_jobs_of_the_given_statuses(engine: Engine) -> None:
    for _ in range(4):
        engine.submit(make_spec(batch="b"), T)
    first, second = claim(engine, limit=2)
    complete(engine, first, T)
    complete(engine, second, T + 100)
    engine.cancel([3], T)
    with pytest.raises(UsageError):
        engine.clean([COMPLETED, PENDING], T + 200)
    assert engine.counts()["total"] == 4  # refused whole
    assert engine.clean([COMPLETED], T + 200, older_than=150) == 1
    assert engine.get_job(first.id) is None and engine.get_result(first.id) is None
    assert engine.get_job(second.id).status is COMPLETED
    assert engine.clean([COMPLETED, CANCELLED], T + 200) == 2
    assert [j.id for j in engine.list_jobs(batch="b")[0]] == [4]


# ------------------------------------------------------------------------ batches


def test_batch_reads(engine: Engine) -> None:
    name, jobs = engine.submit_batch([make_spec(), make_spec(), make_spec()], T)
    complete(engine, claim(engine)[0])
    assert engine.batch_counts(name) == {"batch": name, "total": 3, "pending": 2, "running": 0,
                                         "completed": 1, "failed": 0, "cancelled": 0}
    with pytest.raises(NotFound):
        engine.batch_counts("nope")
    entries = engine.batch_jobs(name, results=True)
    assert [(e.id, e.result) for e in entries] == [(1, ANSWER), (2, None), (3, None)]
    assert [e.job for e in entries] == engine.get_jobs([1, 2, 3])
    assert engine.batch_jobs(name)[0].result is None  # results only when asked
    assert [e.id for e in engine.batch_jobs(name, after=1, limit=1)] == [2]
    assert engine.batch_jobs("nope") == []


def test_batch_names_newest_first(engine: Engine) -> None:
    assert engine.batch_names() == []
    engine.submit_batch([make_spec()], T, name="b")
    engine.submit(make_spec(), T)
    engine.submit_batch([make_spec(), make_spec()], T, name="a")
    engine.submit_batch([make_spec()], T, name="b c")  # a name that another name starts
    engine.submit_batch([make_spec()], T)
    assert engine.batch_names() == ["batch-1", "b c", "a", "b"]
    engine.clean([CANCELLED], T)
    engine.cancel([1], T)
    engine.clean([CANCELLED], T)
    assert engine.batch_names() == ["batch-1", "b c", "a"]  # a batch is its jobs: none left, none listed


# -------------------------------------------------------------------------- cache


def test_cache_stats_and_clear(engine: Engine) -> None:
    engine.submit(make_spec("same"), T)
    complete(engine, claim(engine)[0])
    engine.submit(make_spec("same"), T)
    stats = engine.cache_stats()
    assert (stats["entries"], stats["hits"], stats["misses"]) == (1, 1, 1) and stats["bytes"] > 0
    assert engine.cache_clear() == 1
    assert engine.cache_stats()["entries"] == 0 and engine.cache_stats()["bytes"] == 0
    assert engine.get_result(1) == ANSWER  # the job's own result stays
    assert engine.submit(make_spec("same"), T).status is PENDING


# ------------------------------------------------------------------------ daemons


def test_a_daemon_lock_says_alive_until_released(engine: Engine) -> None:
    first, second = engine.daemon_lock(), engine.daemon_lock()
    assert first.id != second.id
    assert engine.is_alive(first.id) and engine.is_alive(second.id)
    first.release()
    assert not engine.is_alive(first.id) and engine.is_alive(second.id)
    assert not engine.is_alive("never-seen")
    second.release()


def test_daemon_records(engine: Engine) -> None:
    info = DaemonInfo(id="d1", pid=10, hosts=["http://h:1"], concurrency=2, started_at=T, last_heartbeat=T)
    engine.register(info)
    engine.heartbeat("d1", T + 5)
    engine.heartbeat("unknown", T + 5)
    assert engine.daemons() == [info._replace(last_heartbeat=T + 5)]
    engine.register(info._replace(concurrency=3))
    assert [d.concurrency for d in engine.daemons()] == [3]
    engine.unregister("d1")
    engine.unregister("d1")
    assert engine.daemons() == []


# -------------------------------------------------------------- the daemon's step


def test_the_planner_sees_ready_jobs_in_start_order_and_its_placements_are_claimed(engine: Engine) -> None:
    for p in (LOW, URGENT, MEDIUM, URGENT):
        engine.submit(make_spec(priority=p), T)
    engine.submit(make_spec(run_at=T + 50), T)
    seen: list[list[Job]] = []
    tick = engine.settle_and_claim([], T, owner="d1", lookahead=3, planner=take_all(
        lambda jobs: [Placement(1, "http://b:2", (jobs[0], jobs[2]))], seen))
    assert [j.id for j in seen[-1]] == [2, 4, 3]  # at most the lookahead
    [(placement, claims)] = tick.claimed
    assert placement.backend == 1 and tick.plan_state == 3
    assert [c.job.id for c in claims] == [2, 3]
    for c in claims:
        assert (c.job.status, c.job.attempts, c.job.started_at, c.job.host) == (RUNNING, 1, T, "http://b:2")
        assert c.job.lease.owner == "d1" and c.job == engine.get_job(c.job.id)
        assert c.request == engine.get_request(c.job.id)
    assert len({c.job.lease.token for c in claims}) == 2
    # Held until T + 50: shown from then on.
    engine.settle_and_claim([], T + 50, owner="d1", planner=take_all(seen=seen))
    assert 5 in [j.id for j in seen[-1]]


def test_the_planner_reads_a_candidates_request(engine: Engine) -> None:
    engine.submit(JobSpec(model="e", type=JobType.EMBED, request={"input": ["a"], "truncate": True}), T)
    asked: list[dict[str, Any]] = []

    def planner(candidates: Iterator[Job], request_of: Callable[[Job], dict[str, Any]]) -> Plan:
        asked.extend(request_of(j) for j in candidates)
        return Plan([])

    assert engine.settle_and_claim([], T, owner="d1", planner=planner) == ([], [], None, ())
    assert asked[-1] == {"input": ["a"], "truncate": True}


def test_settles_are_recorded_under_their_lease_only(engine: Engine) -> None:
    for _ in range(3):
        engine.submit(make_spec(max_attempts=2), T)
    done, retried, released = claim(engine, limit=3)
    wrong = Settle(SettleKind.COMPLETE, done.id, "not-the-token", result=ANSWER)
    assert engine.settle_and_claim([wrong], T, owner="d1").settled == [None]
    assert engine.get_job(done.id).status is RUNNING
    settles = [
        Settle(SettleKind.COMPLETE, done.id, done.lease.token, result=ANSWER, host="http://h:9"),
        Settle(SettleKind.FAIL, retried.id, retried.lease.token, error=JobError(ErrorType.TIMEOUT, "slow"),
               retry_after=30.0, host="http://h:9"),
        Settle(SettleKind.RELEASE, released.id, released.lease.token),
    ]
    # Settled, then claimed in the same transaction: the released job goes again at once.
    tick = engine.settle_and_claim(settles, T + 1, owner="d2", planner=take_all())
    first, second, third = tick.settled
    assert (first.status, first.finished_at, first.host) == (COMPLETED, T + 1, "http://h:9")
    assert engine.get_result(done.id) == ANSWER
    assert (second.status, second.retry_at, second.error.type, second.attempts) == (PENDING, T + 31, ErrorType.TIMEOUT, 1)
    assert (third.status, third.attempts) == (PENDING, 0)
    assert [c.job.id for _, cs in tick.claimed for c in cs] == [released.id]
    assert engine.settle_and_claim(settles[:1], T + 2, owner="d1").settled == [None]  # settled before
    # The retried job waits its 30 s, then its last attempt fails it for good.
    assert claim(engine, T + 30) == []
    last = claim(engine, T + 31)[0]
    assert last.attempts == 2
    out = fail(engine, last, T + 32, retry_after=30.0)
    assert out.status is FAILED and out.finished_at == T + 32


def test_reclaim_takes_back_the_jobs_of_dead_owners_only(engine: Engine) -> None:
    alive = engine.daemon_lock()
    for _ in range(3):
        engine.submit(make_spec(max_attempts=2), T)
    engine.register(DaemonInfo("dead", 1, [], 1, T, T))
    mine = claim(engine, owner=alive.id)[0]
    dead = claim(engine, owner="dead")[0]
    fail(engine, claim(engine, owner="dead2")[0], retry_after=0.0)
    used_up = claim(engine, owner="dead3")[0]
    assert used_up.attempts == 2
    back = {j.id: j for j in engine.reclaim(T + 5)}
    assert set(back) == {dead.id, used_up.id}
    assert (back[dead.id].status, back[dead.id].error.type, back[dead.id].attempts) == (PENDING, ErrorType.ABANDONED, 1)
    assert (back[used_up.id].status, back[used_up.id].error.type) == (FAILED, ErrorType.ABANDONED)
    assert back[dead.id] == engine.get_job(dead.id)
    assert engine.get_job(mine.id).status is RUNNING
    assert engine.daemons() == []  # the dead daemon's record went with it
    assert engine.reclaim(T + 6) == []
    alive.release()


def test_the_notifier_returns(engine: Engine) -> None:
    # How soon is the engine's to say (LMDB sleeps the timeout); returning is the contract.
    assert engine.notifier.wait(0.001) is None


def test_now_is_the_stores_clock_in_seconds_since_the_epoch(engine: Engine) -> None:
    # The tests' stores are on this machine, so the store's clock is this one's, give or take
    # the time it takes to ask (a minute of slack tells seconds from milliseconds, and an epoch
    # from another).
    before = time.time()
    now = engine.now()
    assert isinstance(now, float) and before - 60 < now < time.time() + 60
