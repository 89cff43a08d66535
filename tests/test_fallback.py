"""`submit --fallback`: the daemon against the emulator over real HTTP, on both engines. A job
whose model is missing, or whose attempts run out, starts again on its next fallback model,
which the daemon logs and `status` shows."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_cli.daemon import events
from ollama_cli.jobs import ErrorType, JobStatus
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from tests.emulator import Emulator
from tests.helpers.backend import generation_requests
from tests.helpers.cli import ok_json, run_main
from tests.helpers.daemon import drain
from tests.helpers.invariants import check_invariants
from tests.helpers.jobs import read_job, submit_spec


@pytest.fixture(params=["lmdb", "postgresql"])
def engine(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Engine]:
    where = data_dir if request.param == "lmdb" else request.getfixturevalue("pg_store_url")
    with open_store(where) as store:
        yield store
        assert store.check() == []


def fell_back(seen: list[events.Event]) -> list[tuple[int, str, str, ErrorType]]:
    return [(e.job.id, e.job.model, e.model, e.error.type) for e in seen if isinstance(e, events.JobFellBack)]


def test_a_missing_model_hands_the_job_to_its_fallback(engine: Engine, emulator: Emulator,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    job_id = submit_spec(engine, "hello", model="no-such-model", fallbacks=("also-missing", "qwen2.5:0.5b"))
    seen: list[events.Event] = []
    with caplog.at_level(logging.INFO, logger="ollama_q.daemon"):
        drain(engine, emulator.url, subscribers=[seen.append])  # the daemon logs on its own
    job = read_job(engine, job_id)
    assert (job.status, job.model, job.fallbacks, job.attempts) == (JobStatus.COMPLETED, "qwen2.5:0.5b", (), 1)
    assert engine.get_result(job_id)["response"]
    assert [b["model"] for b in generation_requests(emulator)] == ["no-such-model", "also-missing", "qwen2.5:0.5b"]
    assert fell_back(seen) == [(job_id, "no-such-model", "also-missing", ErrorType.MODEL_NOT_FOUND),
                               (job_id, "also-missing", "qwen2.5:0.5b", ErrorType.MODEL_NOT_FOUND)]
    lines = [r.getMessage() for r in caplog.records if "fallback" in r.getMessage()]
    assert lines == [
        f"job {job_id} failed on no-such-model (model_not_found: model 'no-such-model' not found); "
        "starting again on fallback model also-missing",
        f"job {job_id} failed on also-missing (model_not_found: model 'also-missing' not found); "
        "starting again on fallback model qwen2.5:0.5b",
    ]


def test_attempts_run_out_then_the_fallback_starts_with_its_own(engine: Engine, emulator: Emulator) -> None:
    emulator.fail_next(3, kind="status", status=500, message="model runner has unexpectedly stopped")
    job_id = submit_spec(engine, "hello", fallbacks=("qwen2.5:0.5b",), max_attempts=3)
    seen: list[events.Event] = []
    drain(engine, emulator.url, subscribers=[seen.append])
    job = read_job(engine, job_id)
    assert (job.status, job.model, job.attempts, job.error) == (JobStatus.COMPLETED, "qwen2.5:0.5b", 1, None)
    assert [b["model"] for b in generation_requests(emulator)] == ["llama3.2"] * 3 + ["qwen2.5:0.5b"]
    assert fell_back(seen) == [(job_id, "llama3.2", "qwen2.5:0.5b", ErrorType.BACKEND_ERROR)]
    assert sum(isinstance(e, events.JobRetrying) for e in seen) == 2


def test_a_bad_request_fails_without_falling_back(engine: Engine, emulator: Emulator) -> None:
    emulator.fail_next(1, kind="status", status=400, message="invalid options")
    job_id = submit_spec(engine, "hello", fallbacks=("qwen2.5:0.5b",))
    drain(engine, emulator.url)
    job = read_job(engine, job_id)
    assert (job.status, job.model, job.fallbacks, job.error.type) == \
        (JobStatus.FAILED, "llama3.2", ("qwen2.5:0.5b",), ErrorType.BAD_REQUEST)


def test_with_every_model_missing_the_job_fails_on_the_last(engine: Engine, emulator: Emulator) -> None:
    job_id = submit_spec(engine, "hello", model="gone-1", fallbacks=("gone-2",))
    drain(engine, emulator.url)
    job = read_job(engine, job_id)
    assert (job.status, job.model, job.fallbacks, job.error.type) == \
        (JobStatus.FAILED, "gone-2", (), ErrorType.MODEL_NOT_FOUND)


def test_status_shows_the_model_it_runs_on_and_the_fallbacks_left(data_dir: Path, emulator: Emulator) -> None:
    submitted = ok_json(run_main("submit", "no-such-model", "hi", "--fallback", "gone", "--fallback", "llama3.2",
                                 "--json"))
    before = ok_json(run_main("status", str(submitted["id"]), "--json"))
    assert (before["model"], before["fallbacks"]) == ("no-such-model", ["gone", "llama3.2"])
    with open_store(data_dir) as store:
        drain(store, emulator.url)
        check_invariants(store)
    after = ok_json(run_main("status", str(submitted["id"]), "--json"))
    assert (after["status"], after["model"], after["fallbacks"]) == ("completed", "llama3.2", [])


def test_a_job_stored_before_fallbacks_reads_with_none(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A database at the schema before fallbacks and routes, holding a job, brought up to date.
    from ollama_cli.store.postgres import schema
    from ollama_cli.store.postgres.connection import connect

    before = next(i for i, (name, _) in enumerate(schema.MIGRATIONS) if "submit --fallback" in name)
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:before])
        m.setattr(schema, "LATEST", before)
        conn = connect(pg_url)
        schema.migrate(conn, "db")
        with conn.cursor() as cur:
            cur.execute(f"SET search_path = {schema.SCHEMA}")
            cur.execute("INSERT INTO jobs (id, state, priority, model, model_key, type, created_at, max_attempts) "
                        "VALUES (1, 'ready', 2, 'llama3.2', 'llama3.2:latest', 'generate', 0, 4)")
        conn.commit()
        conn.close()
    with open_store(pg_url) as store:
        job = store.get_job(1)
        assert (job.model, job.fallbacks, job.route) == ("llama3.2", (), None)
        assert job.to_json()["fallbacks"] == [] and job.to_json()["route"] is None
