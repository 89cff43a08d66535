"""The hook events of the store's contract (`store/base.py`, "hooks"), through the Engine
interface only, on every engine: which transactions record an event, only while hooks are
recorded, and claims that two daemons never share. The `engine` fixture is in conftest.py."""

from __future__ import annotations

import pytest

from ollama_cli.jobs import ErrorType, JobError, JobStatus
from ollama_cli.store.base import Engine
from tests.helpers.engines import T, claim, complete, fail
from tests.helpers.jobs import make_spec

pytestmark = pytest.mark.usefixtures("rerun_writes")


def events_of(engine: Engine, owner: str) -> list[tuple[int, str]]:
    return [(e.job.id, e.job.status.value) for e in engine.claim_hook_events(owner, 100)]


def test_every_way_a_job_ends_records_one_event_while_hooks_are_recorded(engine: Engine) -> None:
    lock = engine.daemon_lock()
    engine.record_hooks_until(T + 60)
    done = engine.submit(make_spec("same"), T)
    complete(engine, claim(engine, owner=lock.id)[0])
    cached = engine.submit(make_spec("same"), T)  # a cache hit at submit
    failed = engine.submit(make_spec(), T)
    child = engine.submit(make_spec(after=(failed.id,)), T)
    fail(engine, claim(engine, owner=lock.id)[0])
    cancelled = engine.submit(make_spec(), T)
    running = engine.submit(make_spec(), T)
    (job,) = claim(engine, owner=lock.id)
    assert job.id == cancelled.id
    engine.cancel([cancelled.id], T)  # cancelled while it runs: the settle that closes its run adds none
    complete(engine, job)
    engine.cancel([running.id, running.id], T)  # cancelled pending, twice: one event
    assert engine.hook_events_pending() == 6
    assert events_of(engine, lock.id) == [
        (done.id, "completed"), (cached.id, "completed"), (failed.id, "failed"), (child.id, "failed"),
        (cancelled.id, "cancelled"), (running.id, "cancelled")]
    assert engine.get_job(child.id).error.type is ErrorType.DEPENDENCY_FAILED
    lock.release()


def test_no_event_is_recorded_unless_hooks_are_recorded_then(engine: Engine) -> None:
    engine.cancel([engine.submit(make_spec(), T).id], T)  # never said
    engine.record_hooks_until(T + 60)
    engine.record_hooks_until(T + 10)  # an earlier time does not take it back
    engine.cancel([engine.submit(make_spec(), T + 30).id], T + 30)
    engine.cancel([engine.submit(make_spec(), T + 60).id], T + 60)  # past it
    assert engine.hook_events_pending() == 1
    lock = engine.daemon_lock()
    assert [e.job.id for e in engine.claim_hook_events(lock.id, 10)] == [2]
    lock.release()


def test_an_event_is_held_by_one_living_daemon_until_done_then_is_gone(engine: Engine) -> None:
    first, second = engine.daemon_lock(), engine.daemon_lock()
    engine.record_hooks_until(T + 60)
    engine.cancel([engine.submit(make_spec(), T).id for _ in range(3)], T)
    taken = engine.claim_hook_events(first.id, 2)
    assert [e.job.id for e in taken] == [1, 2] and taken[0].id < taken[1].id
    assert [e.job.id for e in engine.claim_hook_events(second.id, 10)] == [3]
    assert engine.claim_hook_events(second.id, 10) == [] and engine.claim_hook_events(first.id, 10) == []
    assert engine.claim_hook_events(first.id, 0, done=[taken[0].id]) == []  # done: gone, nothing more taken
    assert engine.claim_hook_events(first.id, 10, done=[taken[0].id, 99]) == []  # idempotent; unknown ids ignored
    assert engine.hook_events_pending() == 2
    first.release()  # dead: what it held goes to the next daemon that asks
    assert [e.job.id for e in engine.claim_hook_events(second.id, 10)] == [2]
    assert engine.hook_events_pending() == 2
    assert [e.job.id for e in engine.claim_hook_events(second.id, 10, done=[e.id for e in taken])] == []
    assert engine.hook_events_pending() == 1  # job 3's, held by `second`
    second.release()


def test_the_event_holds_the_job_as_it_finished(engine: Engine) -> None:
    engine.record_hooks_until(T + 60)
    job = engine.submit(make_spec(name="nightly", category="sql", fallbacks=("b",), route=("best", 0.5, 7)), T)
    engine.cancel([job.id], T + 1)
    engine.retry([job.id], T + 2)  # pending again: the event still says cancelled
    lock = engine.daemon_lock()
    (event,) = engine.claim_hook_events(lock.id, 10)
    engine.cancel([job.id], T + 3)  # it ends again: another event
    assert [e.job.finished_at for e in engine.claim_hook_events(lock.id, 10)] == [T + 3]
    lock.release()
    assert event.job == engine.get_job(job.id)._replace(status=JobStatus.CANCELLED, finished_at=T + 1,
                                                        error=JobError(ErrorType.CANCELLED, "cancelled by the user"))
