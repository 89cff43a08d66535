"""The engine operations behind `result --follow` (`Engine.write_partials`, `partial_output`),
through the interface only, on every engine; every store is sound afterwards (partial text
only for running jobs)."""

from __future__ import annotations

import pytest

from ollama_cli.jobs import ErrorType, Job, JobError
from ollama_cli.store.base import Engine
from ollama_cli.store.records import PartialText, Settle, SettleKind
from tests.helpers.engines import T, claim
from tests.helpers.jobs import make_spec

pytestmark = pytest.mark.usefixtures("rerun_writes")


def claim_one(engine: Engine, owner: str = "d1") -> Job:
    return claim(engine, owner=owner)[0]


def piece(job: Job, start: int, text: str) -> PartialText:
    assert job.lease is not None
    return PartialText(job.id, job.lease.token, job.attempts, start, text)


def text_of(engine: Engine, job_id: int) -> str | None:
    found = engine.partial_output(job_id)
    return None if found is None else found.text


# ------------------------------------------------------------------ partial output


def test_a_running_jobs_pieces_add_up_and_read_back_whole_with_its_attempt(engine: Engine) -> None:
    engine.submit(make_spec(), T)
    job = claim_one(engine)
    assert engine.partial_output(job.id) is None  # nothing streamed yet
    engine.write_partials([piece(job, 0, "Hello")])
    engine.write_partials([piece(job, 5, ", wörld\x00!")])  # any text: a NUL, not only ASCII
    found = engine.partial_output(job.id)
    assert found is not None and (found.text, found.attempt, found.start) == ("Hello, wörld\x00!", 1, 0)


def test_a_piece_that_does_not_follow_what_was_stored_is_ignored(engine: Engine) -> None:
    engine.submit(make_spec(), T)
    job = claim_one(engine)
    engine.write_partials([piece(job, 3, "late")])  # nothing was stored before it
    assert engine.partial_output(job.id) is None
    engine.write_partials([piece(job, 0, "abc")])
    engine.write_partials([piece(job, 9, "gap")])
    assert text_of(engine, job.id) == "abc"


def test_pieces_of_many_jobs_land_in_one_write(engine: Engine) -> None:
    engine.submit_many([make_spec(), make_spec()], T)
    a, b = claim_one(engine), claim_one(engine)
    engine.write_partials([piece(a, 0, "one"), piece(b, 0, "two")])
    assert (text_of(engine, a.id), text_of(engine, b.id)) == ("one", "two")


@pytest.mark.parametrize("end", ["complete", "fail", "retry_later", "release", "cancel", "reclaim"])
def test_the_text_goes_in_the_transaction_that_stops_the_job_running(engine: Engine, end: str) -> None:
    engine.submit(make_spec(max_attempts=3), T)
    owner = "d1"
    if end == "reclaim":
        lock = engine.daemon_lock()
        owner = lock.id
    job = claim_one(engine, owner)
    engine.write_partials([piece(job, 0, "so far")])
    token = job.lease.token
    if end == "complete":
        engine.settle_and_claim([Settle(SettleKind.COMPLETE, job.id, token, result={"response": "x"})], T, owner=owner)
    elif end in ("fail", "retry_later"):
        engine.settle_and_claim([Settle(SettleKind.FAIL, job.id, token, error=JobError(ErrorType.BACKEND_ERROR, "no"),
                                        retry_after=5.0 if end == "retry_later" else None)], T, owner=owner)
    elif end == "release":
        engine.settle_and_claim([Settle(SettleKind.RELEASE, job.id, token)], T, owner=owner)
    elif end == "cancel":
        engine.cancel([job.id], T)
    else:
        lock.release()
        assert [j.id for j in engine.reclaim(T)] == [job.id]
    assert engine.partial_output(job.id) is None
    engine.write_partials([piece(job, 6, " more"), piece(job, 0, "again")])  # the run lost its job: ignored
    assert engine.partial_output(job.id) is None
    if end == "cancel":  # the run closes when its daemon settles it
        engine.settle_and_claim([Settle(SettleKind.RELEASE, job.id, token)], T, owner=owner)


def test_a_new_run_starts_the_text_over_and_the_old_run_writes_nothing(engine: Engine) -> None:
    engine.submit(make_spec(max_attempts=3), T)
    first = claim_one(engine)
    engine.write_partials([piece(first, 0, "first run")])
    engine.settle_and_claim([Settle(SettleKind.FAIL, first.id, first.lease.token,
                                    error=JobError(ErrorType.BACKEND_ERROR, "no"), retry_after=0.0)], T, owner="d1")
    second = claim_one(engine)
    assert second.attempts == 2 and engine.partial_output(second.id) is None
    engine.write_partials([piece(first, 9, " late"), piece(second, 0, "second")])
    found = engine.partial_output(second.id)
    assert found is not None and (found.text, found.attempt) == ("second", 2)


def test_unknown_and_pending_jobs_have_no_partial_output(engine: Engine) -> None:
    job = engine.submit(make_spec(), T)
    engine.write_partials([PartialText(job.id, "nope", 1, 0, "x"), PartialText(99, "nope", 1, 0, "x")])
    assert engine.partial_output(job.id) is None and engine.partial_output(99) is None
