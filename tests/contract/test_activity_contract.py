"""What living daemons report beside the jobs (`record_backends`/`backends`,
`record_progress`/`progress`), jobs finished per minute, and ready jobs per priority and model:
each guarantee of `store/base.py` through the interface only, on every engine."""

from __future__ import annotations


import pytest

from ollama_cli.jobs import Priority
from ollama_cli.store.base import Engine
from ollama_cli.store.records import BackendState, DaemonInfo, RunProgress
from tests.helpers.engines import T, claim, complete, fail
from tests.helpers.jobs import make_spec

pytestmark = pytest.mark.usefixtures("rerun_writes")

MINUTE = 60.0


def state(url: str, daemon_id: str = "", **kw: object) -> BackendState:
    fields = {"up": True, "installed": ("a:latest", "b:latest"), "loaded": ("a:latest",), "slots": 2,
              "in_use": 1, "updated_at": 0.0, **kw}
    return BackendState(url, daemon_id, **fields)  # type: ignore[arg-type]


def register(engine: Engine, daemon_id: str) -> None:
    now = engine.now()  # a heartbeat from before the server started would look like a daemon coming back
    engine.register(DaemonInfo(daemon_id, 1, ["http://h:1"], 2, now, now))


# ------------------------------------------------------------------------ backends


def test_a_daemon_records_its_backends_and_each_record_replaces_the_last(engine: Engine) -> None:
    lock = engine.daemon_lock()
    engine.record_backends(lock.id, [state("http://b:1"), state("http://a:1", up=False, installed=None, loaded=())], T)
    assert engine.backends() == [
        state("http://b:1", lock.id, updated_at=T),
        state("http://a:1", lock.id, up=False, installed=None, loaded=(), updated_at=T),  # in the daemon's order
    ]
    engine.record_backends(lock.id, [state("http://b:1", in_use=2)], T + 2)
    assert engine.backends() == [state("http://b:1", lock.id, in_use=2, updated_at=T + 2)]
    lock.release()


def test_backends_shows_living_daemons_only_and_a_daemon_takes_its_rows_when_it_goes(engine: Engine) -> None:
    first, second, third = engine.daemon_lock(), engine.daemon_lock(), engine.daemon_lock()
    for lock in (first, second, third):
        register(engine, lock.id)
        engine.record_backends(lock.id, [state(f"http://{lock.id}:1")], T)
    first.release()  # dead without a word: its rows stay but are not shown
    engine.unregister(second.id)  # stopped: its rows go with its record
    assert [(b.daemon_id, b.url) for b in engine.backends()] == [(third.id, f"http://{third.id}:1")]
    engine.reclaim(T + 1)
    assert [b.daemon_id for b in engine.backends()] == [third.id]
    third.release()
    assert engine.backends() == []


def test_a_daemon_that_knows_no_backend_records_none(engine: Engine) -> None:
    lock = engine.daemon_lock()
    engine.record_backends(lock.id, [state("http://a:1")], T)
    engine.record_backends(lock.id, [], T + 1)
    assert engine.backends() == []
    lock.release()


# ------------------------------------------------------------------------ progress


def test_running_attempts_progress_is_replaced_at_each_record_and_hidden_once_its_daemon_dies(engine: Engine) -> None:
    alive, dead = engine.daemon_lock(), engine.daemon_lock()
    engine.record_progress(alive.id, [RunProgress(3, "", 10, T, 0.0), RunProgress(1, "", 0, T + 1, 0.0)], T + 2)
    engine.record_progress(dead.id, [RunProgress(2, "", 5, T, 0.0)], T + 2)
    assert engine.progress() == [RunProgress(1, alive.id, 0, T + 1, T + 2), RunProgress(2, dead.id, 5, T, T + 2),
                                 RunProgress(3, alive.id, 10, T, T + 2)]
    assert engine.progress()[2].tokens_per_second == 5.0
    dead.release()
    engine.record_progress(alive.id, [RunProgress(3, "", 30, T, 0.0)], T + 4)
    assert engine.progress() == [RunProgress(3, alive.id, 30, T, T + 4)]
    engine.record_progress(alive.id, [], T + 5)
    assert engine.progress() == []
    alive.release()


# ------------------------------------------------------------- finished per minute


def test_jobs_finished_are_counted_in_the_minute_they_finish(engine: Engine) -> None:
    start = 1_000_020.0  # 20 s into a minute
    for _ in range(5):
        engine.submit(make_spec(), start)
    first, second, third = claim(engine, start, limit=3)
    complete(engine, first, start + 1)
    fail(engine, second, start + 2)
    engine.cancel([4], start + MINUTE)  # the next minute
    assert engine.submit(make_spec("again", after=(second.id,)), start).status.finished  # refused at submit
    per_minute = engine.finished_per_minute(start + MINUTE)
    assert len(per_minute) == 60 and per_minute[-2:] == [2, 1] and sum(per_minute) == 3
    assert engine.finished_per_minute(start)[-1] == 2  # the earlier minute, seen as the latest


def test_a_job_answered_from_the_cache_at_submit_is_not_counted(engine: Engine) -> None:
    engine.submit(make_spec("same"), T)
    complete(engine, claim(engine, T)[0], T)
    assert engine.submit(make_spec("same"), T).cached
    assert sum(engine.finished_per_minute(T)) == 1


def test_finished_per_minute_keeps_an_hour_and_forgets_minutes_whose_slot_comes_round(engine: Engine) -> None:
    lock = engine.daemon_lock()
    for minute in (0, 1, 59):
        engine.submit(make_spec(), T)
        complete(engine, claim(engine, T)[0], T + minute * MINUTE)
    assert engine.finished_per_minute(T + 59 * MINUTE) == [1, 1] + [0] * 57 + [1]
    engine.submit(make_spec(), T)
    complete(engine, claim(engine, T)[0], T + 60 * MINUTE)  # the slot of minute 0 again
    engine.record_backends(lock.id, [], T + 61 * MINUTE)  # a heartbeat: what is older than an hour may go
    assert engine.finished_per_minute(T + 60 * MINUTE) == [1] + [0] * 57 + [1, 1]
    assert engine.finished_per_minute(T + 200 * MINUTE) == [0] * 60
    lock.release()


# ------------------------------------------------------------------ ready per model


def test_ready_depth_counts_ready_jobs_per_priority_and_model(engine: Engine) -> None:
    assert engine.ready_depth() == []
    for model, priority in (("a", Priority.LOW), ("a", Priority.LOW), ("b", Priority.LOW), ("a", Priority.URGENT),
                            ("b:7b", Priority.MEDIUM)):
        engine.submit(make_spec(model=model, priority=priority), T)
    engine.submit(make_spec(model="c", run_at=T + 10), T)  # held: not ready
    assert engine.ready_depth() == [(0, "a:latest", 1), (2, "b:7b", 1), (3, "a:latest", 2), (3, "b:latest", 1)]
    claim(engine, T, limit=2)  # the urgent one, then b:7b
    engine.cancel([1], T)
    assert engine.ready_depth() == [(3, "a:latest", 1), (3, "b:latest", 1)]
    claim(engine, T + 10, limit=0)  # the held job's time came: it is ready now
    assert (2, "c:latest", 1) in engine.ready_depth()
