"""Fallback models (`submit --fallback`) and routes (`submit auto`) through the Engine
interface, on every engine: a job keeps how its model was chosen; a FALLBACK settle, and a
reclaim of a job out of attempts, start the job again on its next model, in the one
transaction, moved in every index as any other change (`check` after each test says the
store is sound)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ollama_cli.jobs import ErrorType, Job, JobError, JobStatus, Priority, full_name
from ollama_cli.store.base import Engine
from ollama_cli.store.records import DaemonInfo, Plan, ReadyJobs, SettleKind
from tests.helpers.engines import T, claim, settle
from tests.helpers.jobs import make_spec

pytestmark = pytest.mark.usefixtures("rerun_writes")

MISSING = JobError(ErrorType.MODEL_NOT_FOUND, "model 'a' not found")
RANK = Priority.MEDIUM.rank


def claim_one(engine: Engine, *, owner: str = "d1") -> Job:
    [job] = claim(engine, owner=owner)
    return job


def oldest_of(engine: Engine, model: str) -> int | None:
    """The id of the oldest ready job of `model`, as a planner asks for it (claiming nothing)."""
    found: list[int | None] = []

    def plan(ready: ReadyJobs, request_of: Callable[[Job], dict[str, Any]]) -> Plan:
        job = ready.oldest(RANK, full_name(model))
        found[:] = [job.id if job else None]
        return Plan([])

    engine.settle_and_claim([], T, owner="d1", planner=plan)
    return found[0]


def test_a_job_keeps_its_fallbacks_in_order(engine: Engine) -> None:
    job = engine.submit(make_spec(model="a", fallbacks=("b", "c")), T)
    assert job.fallbacks == ("b", "c") == engine.get_job(job.id).fallbacks
    assert job.to_json()["fallbacks"] == ["b", "c"]
    assert engine.submit(make_spec(model="a"), T).to_json()["fallbacks"] == []


def test_a_job_keeps_how_its_model_was_chosen(engine: Engine) -> None:
    # `submit auto` records its route; it says how the model was chosen, so it goes with it.
    job = engine.submit(make_spec(model="a", fallbacks=("b",), route=("best", 0.625, 12)), T)
    assert job.route == ("best", 0.625, 12) == engine.get_job(job.id).route
    assert job.to_json()["route"] == {"rule": "best", "lower_bound": 0.625, "rated": 12}
    assert engine.submit(make_spec(model="a", route=("default", None, 0)), T).route == ("default", None, 0)
    settle(engine, claim_one(engine), SettleKind.FALLBACK, error=MISSING)
    assert engine.get_job(job.id).route is None


def test_a_fallback_settle_starts_the_job_again_on_the_next_model(engine: Engine) -> None:
    job = engine.submit(make_spec(model="a", fallbacks=("b", "c"), max_attempts=3), T)
    running = claim_one(engine)
    moved = settle(engine, running, SettleKind.FALLBACK, error=MISSING, now=T + 1)
    assert moved == engine.get_job(job.id)
    assert (moved.model, moved.fallbacks, moved.status, moved.attempts, moved.max_attempts) == \
        ("b", ("c",), JobStatus.PENDING, 0, 3)
    assert (moved.error, moved.lease, moved.retry_at, moved.started_at, moved.host) == (MISSING, None, None, None, None)
    assert engine.positions([moved], T + 1) == {job.id: 1}
    # The per-model ready index moved with it: a planner finds it under its new model only.
    assert oldest_of(engine, "b") == job.id
    assert oldest_of(engine, "a") is None
    assert engine.counts()["pending"] == 1


def test_the_last_model_that_fails_for_good_fails_the_job(engine: Engine) -> None:
    engine.submit(make_spec(model="a", fallbacks=("b",)), T)
    settle(engine, claim_one(engine), SettleKind.FALLBACK, error=MISSING)
    on_b = claim_one(engine)
    assert (on_b.model, on_b.attempts) == ("b", 1)
    error = JobError(ErrorType.BACKEND_ERROR, "HTTP 500")
    failed = settle(engine, on_b, SettleKind.FALLBACK, error=error, now=T + 2)
    assert (failed.status, failed.error, failed.fallbacks, failed.finished_at) == (JobStatus.FAILED, error, (), T + 2)
    assert failed.lease is None


def test_a_lost_lease_refuses_the_fallback(engine: Engine) -> None:
    job = engine.submit(make_spec(model="a", fallbacks=("b",)), T)
    running = claim_one(engine)
    engine.cancel([job.id], T)
    assert settle(engine, running, SettleKind.FALLBACK, error=MISSING) is None  # closes the run it kept open
    after = engine.get_job(job.id)
    assert (after.status, after.model, after.fallbacks, after.lease) == (JobStatus.CANCELLED, "a", ("b",), None)


def test_the_answer_on_a_fallback_is_cached_under_that_model(engine: Engine) -> None:
    request = {"prompt": "same words"}
    engine.submit(make_spec(model="a", request=request, fallbacks=("b",)), T)
    settle(engine, claim_one(engine), SettleKind.FALLBACK, error=MISSING)
    settle(engine, claim_one(engine), SettleKind.COMPLETE, result={"response": "from b"})
    assert engine.submit(make_spec(model="b", request=request), T).cached
    assert not engine.submit(make_spec(model="a", request=request), T).cached


def test_a_job_out_of_attempts_with_a_dead_daemon_starts_again_on_its_next_model(engine: Engine) -> None:
    kept = engine.submit(make_spec(model="a", fallbacks=("b",), max_attempts=1), T)
    alone = engine.submit(make_spec(model="a", max_attempts=1), T)
    engine.register(DaemonInfo("dead", 1, [], 1, T, T))
    claim_one(engine, owner="dead")
    claim_one(engine, owner="dead")
    back = {j.id: j for j in engine.reclaim(T + 5)}
    moved = back[kept.id]
    assert (moved.model, moved.fallbacks, moved.status, moved.attempts) == ("b", (), JobStatus.PENDING, 0)
    assert moved.error.type is ErrorType.ABANDONED and moved == engine.get_job(kept.id)
    assert (back[alone.id].status, back[alone.id].error.type) == (JobStatus.FAILED, ErrorType.ABANDONED)
    assert oldest_of(engine, "b") == kept.id


def test_fallbacks_left_are_listed_and_kept_when_a_job_is_retried(engine: Engine) -> None:
    job = engine.submit(make_spec(model="a", fallbacks=("b",)), T)
    settle(engine, claim_one(engine), SettleKind.FAIL, error=JobError(ErrorType.BAD_REQUEST, "no"))
    [changed] = engine.retry([job.id], T)
    assert (changed.job.model, changed.job.fallbacks) == ("a", ("b",))
    assert [j.fallbacks for j in engine.list_jobs()[0]] == [("b",)]
