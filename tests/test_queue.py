"""Queue semantics over a real store, driven with explicit `now` values.

`check_invariants` (queue/doctor.py) re-derives every index and counter from the job records
after each scenario: the queue keeps them in step itself, so any drift is a bug."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_cli import cache, queue
from ollama_cli.cache import entries
from ollama_cli.errors import CorruptRecord, UsageError
from ollama_cli.codec import decode_job
from ollama_cli.jobs import ErrorType, Job, JobError, JobStatus, JobType, Priority
from ollama_cli.store.keys import read_u64, u64
from ollama_cli.store.lmdb import Store, Tx
from tests.helpers.invariants import check_invariants
from tests.helpers.jobs import make_spec, read_job

PENDING, RUNNING = JobStatus.PENDING, JobStatus.RUNNING
COMPLETED, FAILED, CANCELLED = JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED
URGENT, HIGH, MEDIUM, LOW = Priority.URGENT, Priority.HIGH, Priority.MEDIUM, Priority.LOW
T = 1_000_000.0  # a fixed "now"; every test moves the clock by hand

pytestmark = pytest.mark.usefixtures("rerun_writes")
RESULT = {"response": "hi", "stats": {"eval_count": 2}}


# ----------------------------------------------------------------------- helpers


def submit(store: Store, now: float = T, **kw: Any) -> Job:
    return store.write(lambda tx: queue.submit(tx, make_spec(**kw), now))


def claim(store: Store, now: float = T, owner: str = "d1", limit: int = 1,
          pick: Callable[[Job], bool] = lambda job: True) -> list[Job]:
    """Take up to `limit` ready jobs that `pick` chooses, in queue order, as the daemon
    does after its scheduler has chosen (which test_scheduler.py covers)."""
    def write(tx: Any) -> list[Job]:
        chosen = [j for j in queue.ready_candidates(tx, now) if pick(j)][:limit]
        return [c.job for c in queue.claim(tx, chosen, owner, now)]

    return store.write(write)


def claim_one(store: Store, now: float = T, owner: str = "d1") -> Job:
    got = claim(store, now, owner)
    assert len(got) == 1, got
    return got[0]


def raw(store: Store, job_id: int) -> bytes | None:
    with store.read() as tx:
        return tx.get("jobs", u64(job_id))


def complete(store: Store, j: Job, now: float = T, result: dict[str, Any] = RESULT) -> Job | None:
    assert j.lease is not None
    return store.write(lambda tx: queue.complete(tx, j.id, j.lease.token, result, now))


def fail(store: Store, j: Job, now: float = T, *, retry_after: float | None = None,
         kind: ErrorType = ErrorType.BACKEND_ERROR) -> Job | None:
    assert j.lease is not None
    return store.write(lambda tx: queue.fail_attempt(tx, j.id, j.lease.token, JobError(kind, "no"),
                                                     now, retry_after=retry_after))


def drain_order(store: Store, now: float = T) -> list[int]:
    """Ids in the order claims take them, one at a time."""
    order = []
    while got := claim(store, now):
        order.append(got[0].id)
    return order


def pos(store: Store, job_id: int, now: float = T) -> int | None:
    with store.read() as tx:
        return queue.positions(tx, [queue.get_job(tx, job_id)], now).get(job_id)


def all_positions(store: Store, now: float = T) -> dict[int, int | None]:
    """Every job's position, asked all at once and one by one (the walks differ); they must agree."""
    with store.read() as tx:
        jobs = [decode_job(read_u64(k), v) for k, v in tx.scan("jobs")]
        many = queue.positions(tx, jobs, now)
        one = {j.id: queue.positions(tx, [j], now).get(j.id) for j in jobs}
    assert {i: many.get(i) for i in one} == one
    return one


@pytest.fixture
def q(kv: Store) -> Iterator[Store]:
    """The store, checked once the test is done with it."""
    yield kv
    check_invariants(kv)


# ----------------------------------------------------------------------- ids


def test_ids_increase_from_one_and_are_never_reused(data_dir: Path) -> None:
    with Store(data_dir) as s:
        assert [submit(s).id for _ in range(3)] == [1, 2, 3]

        # A job cleaned away leaves its id used.
        complete(s, claim(s, limit=3)[2])
        assert s.write(lambda tx: queue.clean(tx, [COMPLETED], T)) == 1
        with s.read() as tx:
            assert queue.get_job(tx, 3) is None
        assert submit(s).id == 4
        # A submit refused for bad input uses no id: nothing was written.
        with pytest.raises(UsageError):
            submit(s, after=(99,))
        assert submit(s).id == 5
    with Store(data_dir) as s:  # the counter lives in the store, not the process
        assert submit(s).id == 6
        check_invariants(s)


def test_a_new_job_is_pending_with_the_spec(q: Store) -> None:
    j = submit(q, model="llama3.2", prompt="why?", priority=HIGH, name="n", batch="b",
               custom_id="c", max_attempts=3, timeout=60.0, keep_alive=300.0)
    assert j == read_job(q, j.id)
    assert (j.status, j.attempts, j.max_attempts, j.created_at) == (PENDING, 0, 3, T)
    assert (j.name, j.batch, j.custom_id, j.timeout, j.keep_alive) == ("n", "b", "c", 60.0, 300.0)
    assert (j.started_at, j.finished_at, j.error, j.lease, j.cached) == (None, None, None, None, False)
    with q.read() as tx:
        assert queue.get_request(tx, j.id) == {"prompt": "why?"}
        assert queue.get_result(tx, j.id) is None


# ------------------------------------------------------------------ claim order


def test_strict_priority_then_submission_order(q: Store) -> None:
    prios = [LOW, MEDIUM, URGENT, HIGH, MEDIUM, URGENT, LOW, HIGH]
    ids = {submit(q, priority=p).id: p for p in prios}
    expected = sorted(ids, key=lambda i: (ids[i].rank, i))
    assert drain_order(q) == expected == [3, 6, 4, 8, 2, 5, 1, 7]


def test_claim_many_at_once_takes_the_same_order(q: Store) -> None:
    for p in [LOW, HIGH, MEDIUM, HIGH, URGENT]:
        submit(q, priority=p)
    got = claim(q, limit=3)
    assert [j.id for j in got] == [5, 2, 4]
    assert all(j.status is RUNNING and j.attempts == 1 and j.started_at == T for j in got)
    assert len({j.lease.token for j in got if j.lease}) == 3  # each attempt its own fence
    assert {j.lease.owner for j in got if j.lease} == {"d1"}
    assert claim(q, limit=0) == []


def test_positions_follow_the_claim_order_and_agree(q: Store) -> None:
    for p in [MEDIUM, LOW, URGENT, MEDIUM, HIGH, URGENT]:
        submit(q, priority=p)
    delayed = submit(q, priority=URGENT, run_at=T + 100).id
    blocked = submit(q, priority=URGENT, after=(1,)).id
    places = all_positions(q)
    assert places == {3: 1, 6: 2, 5: 3, 1: 4, 4: 5, 2: 6, delayed: None, blocked: None}
    first = claim_one(q)
    assert first.id == 3
    places = all_positions(q)
    assert places[3] is None  # running
    assert sorted(p for p in places.values() if p) == [1, 2, 3, 4, 5]
    assert places[6] == 1 and places[2] == 5
    complete(q, first)
    assert all_positions(q)[3] is None  # finished


def test_positions_are_the_order_claims_take_whatever_the_mix(q: Store) -> None:
    import random

    rng = random.Random(7)
    for _ in range(300):
        roll = rng.random()
        submit(q, priority=rng.choice(list(Priority)),
               run_at=T + 10 if roll < 0.2 else T + 99 if roll < 0.3 else None)  # due at T + 20, or not
    for got in claim(q, limit=40, pick=lambda j: rng.random() < 0.5):
        complete(q, got)
    later = T + 20
    places = all_positions(q, later)
    order = drain_order(q, later)
    assert {i: p for i, p in places.items() if p} == {job_id: n for n, job_id in enumerate(order, start=1)}


class CountingTx:
    """A read transaction that counts the keys its scans yield."""

    def __init__(self, tx: Tx) -> None:
        self.tx, self.keys = tx, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tx, name)

    def scan(self, *args: Any, **kw: Any) -> Iterator[tuple[bytes, bytes]]:
        for item in self.tx.scan(*args, **kw):
            self.keys += 1
            yield item


def test_positions_walk_from_the_nearer_end_of_the_queue(q: Store) -> None:
    # `list` asks for the newest jobs, `status` for any one: neither reads the whole queue.
    q.write(lambda tx: queue.submit_many(tx, [make_spec() for _ in range(3000)], T))
    q.write(lambda tx: queue.submit_many(tx, [make_spec(priority=URGENT) for _ in range(100)], T))
    with q.read() as tx:
        for wanted, expected, most in [
            # Each also reads a few counters (per model and per block of ids): up to 8 keys.
            (range(2991, 3001), range(3091, 3101), 13 + 8),  # the newest: from the end of their block
            (range(1, 4), range(101, 104), 5 + 8),  # the oldest: from its start
            (range(3001, 3004), range(1, 4), 5 + 8),  # urgent: the counters skip the medium run
            (range(1500, 1501), range(1600, 1601), 1024),  # the middle: at most its block of ids
        ]:
            counting = CountingTx(tx)
            places = queue.positions(counting, [queue.get_job(tx, i) for i in wanted], T)
            assert places == dict(zip(wanted, expected))
            assert counting.keys <= most, counting.keys


# ----------------------------------------------------------------------- leases


def test_wrong_lease_token_changes_nothing(q: Store) -> None:
    submit(q)
    j = claim_one(q)
    before = raw(q, j.id)
    err = JobError(ErrorType.BACKEND_ERROR, "x")
    assert q.write(lambda tx: queue.complete(tx, j.id, "not-the-token", RESULT, T + 1)) is None
    assert q.write(lambda tx: queue.fail_attempt(tx, j.id, "not-the-token", err, T + 1,
                                                 retry_after=1.0)) is None
    assert q.write(lambda tx: queue.release(tx, j.id, "not-the-token", T + 1)) is None
    assert raw(q, j.id) == before
    with q.read() as tx:
        assert queue.get_result(tx, j.id) is None
    # Nor does a finish for a job that does not exist.
    assert q.write(lambda tx: queue.complete(tx, 99, j.lease.token, RESULT, T)) is None
    assert complete(q, j, T + 2)
    # A second finish with the right token: the lease is gone with the first.
    assert complete(q, j, T + 3) is None
    assert read_job(q, j.id).finished_at == T + 2


def test_complete_stores_the_result(q: Store) -> None:
    submit(q)
    j = claim_one(q)
    assert q.write(lambda tx: queue.complete(tx, j.id, j.lease.token, RESULT, T + 5, host="http://h:1"))
    done = read_job(q, j.id)
    assert (done.status, done.finished_at, done.lease, done.host, done.attempts) == \
        (COMPLETED, T + 5, None, "http://h:1", 1)
    with q.read() as tx:
        assert queue.get_result(tx, j.id) == RESULT


# ------------------------------------------------------------------- retrying


def test_transient_failure_waits_then_goes_again_until_attempts_run_out(q: Store) -> None:
    submit(q, max_attempts=3)
    first = claim_one(q, T)
    again = fail(q, first, T + 1, retry_after=10)
    assert again is not None and again.status is PENDING and again.lease is None
    assert again.retry_at == T + 11 and again.error == JobError(ErrorType.BACKEND_ERROR, "no")
    assert pos(q, 1) is None  # waiting, not ready
    check_invariants(q)
    assert claim(q, T + 10.9) == []
    assert q.write(lambda tx: queue.promote_due(tx, T + 10.9)) == 0
    assert pos(q, 1) is None
    assert q.write(lambda tx: queue.promote_due(tx, T + 11)) == 1
    assert pos(q, 1) == 1
    check_invariants(q)
    second = claim_one(q, T + 11)
    assert second.attempts == 2 and second.retry_at is None
    fail(q, second, T + 12, retry_after=5)
    third = claim_one(q, T + 17)  # claim promotes what is due by itself
    assert third.attempts == 3
    final = fail(q, third, T + 18, retry_after=5)
    assert final is not None and final.status is FAILED  # 3 of 3 used: no more waiting
    assert (final.finished_at, final.error.type, final.attempts) == (T + 18, ErrorType.BACKEND_ERROR, 3)
    assert claim(q, T + 100) == []


def test_permanent_failure_fails_at_once(q: Store) -> None:
    submit(q, max_attempts=4)
    j = claim_one(q)
    out = fail(q, j, T + 1, retry_after=None, kind=ErrorType.MODEL_NOT_FOUND)
    assert out is not None and out.status is FAILED and out.error.type is ErrorType.MODEL_NOT_FOUND
    assert read_job(q, 1).attempts == 1


def test_retry_backoff_does_not_hold_up_other_jobs(q: Store) -> None:
    submit(q, priority=URGENT, max_attempts=2)
    submit(q, priority=LOW)
    fail(q, claim_one(q), T, retry_after=30)
    assert claim_one(q, T + 1).id == 2


def test_release_gives_the_attempt_back(q: Store) -> None:
    submit(q, max_attempts=1)
    j = claim_one(q)
    assert j.attempts == 1
    assert q.write(lambda tx: queue.release(tx, j.id, j.lease.token, T + 1))
    back = read_job(q, j.id)
    assert (back.status, back.attempts, back.lease) == (PENDING, 0, None)
    assert pos(q, j.id) == 1
    assert complete(q, j) is None  # the released lease is dead
    again = claim_one(q, T + 2)
    assert again.attempts == 1 and again.lease != j.lease


# --------------------------------------------------------------------- reclaim


def test_reclaim_takes_back_only_dead_owners_jobs(q: Store) -> None:
    submit(q, max_attempts=2)
    submit(q, max_attempts=2)
    dead = claim_one(q, owner="dead")
    alive = claim_one(q, owner="alive")
    back = q.write(lambda tx: queue.reclaim(tx, {"dead"}, T + 1))
    assert [j.id for j in back] == [dead.id]
    assert read_job(q, dead.id).status is PENDING and read_job(q, dead.id).attempts == 1
    assert read_job(q, alive.id).status is RUNNING
    assert complete(q, dead) is None  # the dead daemon's late finish is fenced off
    check_invariants(q)
    # Second attempt, and its daemon dies too: attempts are used up.
    retaken = claim_one(q, T + 2, owner="dead2")
    assert retaken.id == dead.id and retaken.attempts == 2
    gone = q.write(lambda tx: queue.reclaim(tx, {"dead2"}, T + 3))
    assert [j.status for j in gone] == [FAILED]
    final = read_job(q, dead.id)
    assert final.error.type is ErrorType.ABANDONED and final.finished_at == T + 3
    assert q.write(lambda tx: queue.reclaim(tx, set(), T + 4)) == []


# ---------------------------------------------------------------------- cancel


def test_cancel_pending_running_and_finished(q: Store) -> None:
    pending = submit(q)
    running_ = submit(q)
    done = submit(q)
    waiting = submit(q, run_at=T + 100)
    blocked = submit(q, after=(running_.id,))
    first = claim(q, limit=2)
    assert [j.id for j in first] == [pending.id, running_.id]
    complete(q, first[0])  # `pending` is now completed
    run = first[1]
    dj = claim_one(q)
    assert dj.id == done.id
    complete(q, dj)

    out = q.write(lambda tx: queue.cancel(tx, waiting.id, T + 1))
    assert out.status is CANCELLED and out.error.type is ErrorType.CANCELLED and out.finished_at == T + 1
    out = q.write(lambda tx: queue.cancel(tx, run.id, T + 2))
    assert out.status is CANCELLED and out.lease == run.lease  # its run is still open
    assert complete(q, run) is None  # the daemon's finish comes too late, and closes the run
    with q.read() as tx:
        assert queue.get_result(tx, run.id) is None
    assert read_job(q, run.id).lease is None
    # Cancelling the running job failed its dependent.
    assert read_job(q, blocked.id).status is FAILED
    assert read_job(q, blocked.id).error.type is ErrorType.DEPENDENCY_FAILED
    # A finished job stays as it is; an unknown id gives None.
    before = raw(q, done.id)
    assert q.write(lambda tx: queue.cancel(tx, done.id, T + 3)).status is COMPLETED
    assert raw(q, done.id) == before
    assert q.write(lambda tx: queue.cancel(tx, 999, T)) is None
    assert claim(q, T + 200) == []


# ----------------------------------------------------------------- dependencies


def test_blocked_until_every_dependency_completed(q: Store) -> None:
    a, b = submit(q), submit(q)
    c = submit(q, priority=URGENT, after=(a.id, b.id))
    assert pos(q, c.id) is None
    ja = claim_one(q)
    assert ja.id == a.id  # the urgent C is not ready, so it is skipped
    complete(q, ja)
    assert read_job(q, c.id).status is PENDING and pos(q, c.id) is None
    check_invariants(q)
    jb = claim_one(q)
    assert jb.id == b.id
    complete(q, jb)
    assert pos(q, c.id) == 1
    assert claim_one(q).id == c.id


def test_after_a_completed_job_is_ready_at_once(q: Store) -> None:
    a = submit(q)
    complete(q, claim_one(q))
    b = submit(q, after=(a.id,))
    assert pos(q, b.id) == 1


@pytest.mark.parametrize("how", ["fail", "cancel", "cancel pending"])
def test_dependency_failed_runs_down_the_chain(q: Store, how: str) -> None:
    x = submit(q)
    y = submit(q, after=(x.id,))
    z = submit(q, after=(y.id,))
    other = submit(q, after=(x.id, y.id))
    if how == "fail":
        fail(q, claim_one(q), T + 1, retry_after=None)
    elif how == "cancel":
        claim_one(q)
        q.write(lambda tx: queue.cancel(tx, x.id, T + 1))
    else:
        q.write(lambda tx: queue.cancel(tx, x.id, T + 1))
    for j in (y, z, other):
        now = read_job(q, j.id)
        assert now.status is FAILED and now.error.type is ErrorType.DEPENDENCY_FAILED, j.id
        assert now.finished_at == T + 1
    # And a job submitted after a failed one is failed at once in the store.
    late = q.write(lambda tx: queue.submit(tx, make_spec(after=(z.id,)), T + 2))
    stored = read_job(q, late.id)
    assert stored.status is FAILED and stored.error.type is ErrorType.DEPENDENCY_FAILED
    assert stored.finished_at == T + 2


def test_submit_returns_the_job_as_stored(q: Store) -> None:
    x = submit(q)
    fail(q, claim_one(q), T, retry_after=None)
    late = submit(q, T + 1, after=(x.id,))
    assert late == read_job(q, late.id)
    assert late.status is FAILED


def test_unknown_dependency_is_a_usage_error_and_writes_nothing(q: Store) -> None:
    submit(q)
    with q.read() as tx:
        before = (queue.counts(tx), tx.counter("next_id"), tx.entries("requests"))
    with pytest.raises(UsageError, match="42"):
        submit(q, after=(1, 42))
    with q.read() as tx:
        assert (queue.counts(tx), tx.counter("next_id"), tx.entries("requests")) == before
        assert tx.entries("dependents") == 0


def test_a_dependent_with_a_delay_waits_for_both(q: Store) -> None:
    a = submit(q)
    b = submit(q, after=(a.id,), run_at=T + 50)
    complete(q, claim_one(q))
    assert pos(q, b.id) is None  # dependency done, time not yet
    assert claim(q, T + 49) == []
    assert claim_one(q, T + 50).id == b.id


# -------------------------------------------------------------------- delayed


def test_a_delayed_job_whose_time_has_come_has_a_position_before_a_daemon_moves_it(q: Store) -> None:
    # `status` and `list` only read, so they cannot move it to the ready index; the
    # daemon does on its next tick. The place is the same before and after.
    delayed = submit(q, priority=URGENT, run_at=T + 60)
    later = submit(q, priority=URGENT, run_at=T + 30)
    low = submit(q, priority=LOW)
    assert all_positions(q, T + 59) == {delayed.id: None, later.id: 1, low.id: 2}
    before = all_positions(q, T + 61)
    assert before == {delayed.id: 1, later.id: 2, low.id: 3}  # urgent ones by id, then low
    # Entries written by earlier versions carry no rank: the job is read instead.
    with q.read() as tx:
        entries = [k for k, _ in tx.scan("waiting")]
    q.write(lambda tx: [tx.put("waiting", k, b"") for k in entries])
    assert all_positions(q, T + 61) == before
    q.write(lambda tx: queue.promote_due(tx, T + 61))
    assert all_positions(q, T + 61) == before


def test_delayed_job_waits_for_its_time_and_blocks_nobody(q: Store) -> None:
    delayed = submit(q, priority=URGENT, run_at=T + 60)
    low = submit(q, priority=LOW)
    assert pos(q, delayed.id) is None and pos(q, low.id) == 1
    assert claim_one(q, T + 59).id == low.id
    assert claim(q, T + 59.9) == []
    assert claim_one(q, T + 60).id == delayed.id


def test_run_at_in_the_past_is_ready_now(q: Store) -> None:
    j = submit(q, run_at=T - 5)
    assert pos(q, j.id) == 1


# ---------------------------------------------------------------------- cache


def test_identical_submit_completes_from_the_cache(q: Store) -> None:
    first = submit(q, prompt="same")
    complete(q, claim_one(q))
    again = submit(q, T + 10, prompt="same")
    assert again.status is COMPLETED and again.cached is True
    assert again.finished_at == T + 10 and again.attempts == 0
    assert again == read_job(q, again.id)
    with q.read() as tx:
        assert queue.get_result(tx, again.id) == queue.get_result(tx, first.id) == RESULT
        assert entries.stats(tx)["hits"] == 1
    assert pos(q, again.id) is None
    assert claim(q, T + 11) == []  # nothing to run
    # `m` and `m:latest` are one model.
    assert submit(q, T + 12, model="m:latest", prompt="same").cached is True


@pytest.mark.parametrize("change", ["no cache", "other prompt", "other model", "other type",
                                    "delayed", "dependent"])
def test_cache_is_not_used(q: Store, change: str) -> None:
    dep = submit(q)
    complete(q, claim_one(q))
    submit(q, prompt="same")
    complete(q, claim_one(q))
    kw: dict[str, Any] = {
        "no cache": {"use_cache": False},
        "other prompt": {"prompt": "different"},
        "other model": {"model": "n"},
        "other type": {"job_type": JobType.EMBED},
        "delayed": {"run_at": T + 5},
        "dependent": {"after": (dep.id,)},
    }[change]
    kw.setdefault("prompt", "same")
    j = submit(q, T + 1, **kw)
    assert j.status is PENDING and not j.cached


def test_cache_keys_stay_what_earlier_versions_computed() -> None:
    # A changed canonical form would silently empty every user's cache: the digest of a
    # request with unsorted keys and non-ASCII text is pinned.
    key = cache.key_for("Llama3.2", "chat", {"options": {"temperature": 0, "num_predict": 8},
                                             "messages": [{"role": "user", "content": "Grüße\n"}]})
    assert key.hex() == "2fd8761b3605f0adecfee74c0c687c88b94ebb442a74ae494d64e98b3a97f493"


def test_cache_does_not_answer_a_job_still_running(q: Store) -> None:
    submit(q, prompt="same")
    claim_one(q)
    assert submit(q, prompt="same").status is PENDING


# ---------------------------------------------------------------------- pause


def test_pause_stops_claims_and_resume_restarts_them(q: Store) -> None:
    submit(q)
    q.write(lambda tx: queue.set_paused(tx, True))
    with q.read() as tx:
        assert queue.is_paused(tx)
    assert claim(q, limit=5) == []
    assert pos(q, 1) == 1  # still queued
    q.write(lambda tx: queue.set_paused(tx, False))
    with q.read() as tx:
        assert not queue.is_paused(tx)
    assert claim_one(q).id == 1


# ------------------------------------------------------------------------ list


@pytest.fixture
def mixed(q: Store) -> Store:
    """Eight jobs, every status, two models, two types, two batches:
    1 completed, 2 failed, 3 pending, 4 running, 5 cancelled, 6 pending, 7 completed, 8 pending."""
    models = ["a", "b", "a", "a", "b", "a", "b", "a"]
    types = [JobType.GENERATE, JobType.EMBED] * 4
    batches = ["x", "x", None, "y", "x", "y", "x", None]
    for m, t, b in zip(models, types, batches):
        submit(q, model=m, job_type=t, batch=b)
    by_id = {j.id: j for j in claim(q, limit=4)}  # 1..4 running
    complete(q, by_id[1])
    fail(q, by_id[2], retry_after=None)
    q.write(lambda tx: queue.release(tx, 3, by_id[3].lease.token, T))
    q.write(lambda tx: queue.cancel(tx, 5, T))
    j7 = claim(q, limit=3, pick=lambda j: j.id == 7)
    complete(q, j7[0])
    return q


def _list_id(kw: dict[str, Any]) -> str:
    def show(v: Any) -> str:
        if isinstance(v, list):
            return "+".join(show(x) for x in v)
        return v.value if hasattr(v, "value") else str(v)
    return ",".join(f"{k}={show(v)}" for k, v in kw.items()) or "all"


def listed(store: Store, **kw: Any) -> list[int]:
    with store.read() as tx:
        jobs, corrupt = queue.list_jobs(tx, **kw)
    assert corrupt == []
    return [j.id for j in jobs]


@pytest.mark.parametrize(("kw", "expected"), [
    ({}, [8, 7, 6, 5, 4, 3, 2, 1]),
    ({"statuses": [PENDING]}, [8, 6, 3]),
    ({"statuses": [COMPLETED, PENDING]}, [8, 7, 6, 3, 1]),
    ({"statuses": [FAILED, CANCELLED, RUNNING]}, [5, 4, 2]),
    ({"statuses": [PENDING, PENDING]}, [8, 6, 3]),
    ({"model": "b"}, [7, 5, 2]),
    ({"job_type": JobType.EMBED}, [8, 6, 4, 2]),
    ({"batch": "x"}, [7, 5, 2, 1]),
    ({"batch": "nope"}, []),
    ({"limit": 3}, [8, 7, 6]),
    ({"offset": 2, "limit": 3}, [6, 5, 4]),
    ({"offset": 7}, [1]),
    ({"offset": 8}, []),
    ({"statuses": [PENDING, COMPLETED], "model": "a", "limit": 2}, [8, 6]),
    ({"statuses": [PENDING], "offset": 1}, [6, 3]),
    ({"model": "a", "job_type": JobType.GENERATE}, [3, 1]),
    ({"batch": "y", "model": "a"}, [6, 4]),
    ({"batch": "x", "statuses": [COMPLETED]}, [7, 1]),
    ({"limit": 0}, []),
], ids=lambda v: _list_id(v) if isinstance(v, dict) else "->" + (",".join(map(str, v)) or "none"))
def test_list_filters_newest_first(mixed: Store, kw: dict[str, Any], expected: list[int]) -> None:
    assert [read_job(mixed, i).status.value for i in range(1, 9)] == [
        "completed", "failed", "pending", "running", "cancelled", "pending", "completed", "pending"]
    assert listed(mixed, **kw) == expected


def test_list_reports_a_corrupt_record_apart(q: Store) -> None:
    for _ in range(4):
        submit(q)
    good = raw(q, 2)
    q.write(lambda tx: tx.put("jobs", u64(2), b"\xc1 not msgpack"))
    for kw in ({}, {"statuses": [PENDING]}, {"limit": 10}):
        with q.read() as tx:
            jobs, corrupt = queue.list_jobs(tx, **kw)
        assert [j.id for j in jobs] == [4, 3, 1]
        assert len(corrupt) == 1 and isinstance(corrupt[0], CorruptRecord) and corrupt[0].key == 2
    q.write(lambda tx: tx.put("jobs", u64(2), good))  # whole again for the invariant walk


def test_a_corrupt_record_at_the_head_does_not_stop_claims(kv: Store) -> None:
    for _ in range(3):
        submit(kv)
    kv.write(lambda tx: tx.put("jobs", u64(1), b"\xc1"))
    assert [j.id for j in claim(kv, limit=5)] == [2, 3]
    with kv.read() as tx:
        assert tx.get("ready", bytes([MEDIUM.rank]) + u64(1)) is None
        assert tx.counter(f"ready/{MEDIUM.rank}") == 0
        with pytest.raises(CorruptRecord):
            queue.get_job(tx, 1)


def test_retry_queues_a_failed_job_again_with_fresh_attempts(q: Store) -> None:
    submit(q, max_attempts=1)
    fail(q, claim_one(q), T, retry_after=1.0)  # the one attempt is used: failed
    assert read_job(q, 1).status is FAILED
    again = q.write(lambda tx: queue.retry(tx, 1, T + 1))
    assert (again.status, again.attempts, again.error, again.finished_at) == (PENDING, 0, None, None)
    assert pos(q, 1) == 1
    assert claim_one(q, T + 2).attempts == 1


# ---------------------------------------------------------------- the rerun rule


def test_the_rerun_mode_shows_a_write_functions_outside_effect(kv: Store) -> None:
    # Every test here runs each write twice, the first time thrown away (rerun_writes), as
    # LMDB does after growing its map. A write that keeps a tally outside its transaction
    # (as the daemon would if it counted overtaken jobs in place) counts each job twice, so
    # a test of that tally fails under the mode; the store itself saw one write.
    submit(kv)
    seen: dict[int, int] = {}

    def tally_candidates(tx: Tx) -> None:
        for j in queue.ready_candidates(tx, T):
            seen[j.id] = seen.get(j.id, 0) + 1

    kv.write(tally_candidates)
    assert seen == {1: 2}
    with kv.read() as tx:
        assert queue.counts(tx)["total"] == 1
