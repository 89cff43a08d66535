"""The daemon's events, from a real daemon in this process against the emulator: what each
job's life publishes and in which order, that an event is published only once its commit
is in the store, backend and model events, and that no subscriber can stop the daemon.
Then the log, the subscriber that writes today's lines."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from ollama_cli.daemon import events, logs
from ollama_cli.daemon.loop import Daemon
from ollama_cli.jobs import ErrorType, Job, JobError, JobStatus
from ollama_cli.settings import DaemonSettings
from ollama_cli.settings.hosts import Backend
from ollama_cli.store.base import Engine
from ollama_cli.store.records import Placement, Plan
from tests.emulator import Emulator
from tests.helpers.jobs import make_job, read_job, submit_spec

FAST = DaemonSettings(drain=True, poll=0.02, retry_backoff=0.01)

pytestmark = pytest.mark.usefixtures("rerun_writes")


def about(event: events.Event) -> list[int]:
    """The ids of the jobs an event is about."""
    return [j.id for j in getattr(event, "jobs", ())] + ([event.job.id] if hasattr(event, "job") else [])


class Recorder:
    """Every event, with the records of its jobs in the store at the moment it arrived."""

    def __init__(self, store: Engine) -> None:
        self.store = store
        self.seen: list[tuple[Any, list[Job]]] = []

    def __call__(self, event: events.Event) -> None:
        self.seen.append((event, [read_job(self.store, i) for i in about(event)]))

    def of(self, *kinds: type) -> list[Any]:
        return [e for e, _ in self.seen if isinstance(e, kinds)]

    def life(self, job_id: int) -> list[str]:
        return [" ".join([type(e).__name__, *([e.status.value] if isinstance(e, events.JobFinished) else [])])
                for e, _ in self.seen if job_id in about(e)]


def run(daemon: Daemon, *subscribers: events.Subscriber) -> None:
    for s in subscribers:
        daemon.events.subscribe(s)
    asyncio.run(asyncio.wait_for(daemon.run(), 60))


def test_each_jobs_life_in_order_each_event_after_its_commit(store: Engine, emulator: Emulator) -> None:
    emulator.fail_next(1, kind="status", status=500)
    retried, doomed = submit_spec(store), submit_spec(store, model="no-such-model")
    seen = Recorder(store)
    run(Daemon(store, [Backend(emulator.url)], FAST), seen)

    assert seen.life(retried) == ["JobStarted", "JobRetrying", "JobStarted", "JobFinished completed"]
    assert seen.life(doomed) == ["JobStarted", "JobFinished failed"]
    kinds = [type(e) for e, _ in seen.seen]
    assert kinds[0] is events.DaemonStarted and kinds[-1] is events.DaemonDrained

    # What each event says was already true in the store when it arrived.
    for event, [record] in [(e, r) for e, r in seen.seen if r]:
        if isinstance(event, events.JobStarted):
            assert record.status is JobStatus.RUNNING and record.attempts == event.jobs[0].attempts
        elif isinstance(event, events.JobRetrying):
            assert record.status is JobStatus.PENDING and record.attempts == event.job.attempts == 1
            assert event.error.type is ErrorType.BACKEND_ERROR
        elif isinstance(event, events.JobFinished):
            assert record.status is event.status and event.backend == emulator.url
    [failed] = [e for e in seen.of(events.JobFinished) if e.status is JobStatus.FAILED]
    assert failed.error is not None and failed.error.type is ErrorType.MODEL_NOT_FOUND


def test_a_job_cancelled_while_it_runs_finishes_cancelled(store: Engine, emulator: Emulator) -> None:
    emulator.hold()  # the answer never ends by itself
    job_id = submit_spec(store)

    def cancel_once_started(event: events.Event) -> None:
        if isinstance(event, events.JobStarted):
            store.cancel([job_id], 1.0)

    seen = Recorder(store)
    run(Daemon(store, [Backend(emulator.url)], FAST), cancel_once_started, seen)
    [(finished, [record])] = [(e, r) for e, r in seen.seen if isinstance(e, events.JobFinished)]
    assert finished.status is JobStatus.CANCELLED and record.status is JobStatus.CANCELLED


@pytest.mark.parametrize("attempts", [2, 1])
def test_a_job_of_a_dead_daemon_is_reclaimed(store: Engine, emulator: Emulator, attempts: int) -> None:
    job_id = submit_spec(store, max_attempts=attempts)
    # Claimed by a daemon that holds no liveness lock: a dead one.
    store.settle_and_claim([], 0.0, owner="dead-daemon",
                           planner=lambda jobs, _: Plan([Placement(0, "http://gone:1", tuple(jobs))]))
    seen = Recorder(store)
    run(Daemon(store, [Backend(emulator.url)], FAST), seen)
    [(reclaimed, [record])] = [(e, r) for e, r in seen.seen if isinstance(e, events.JobReclaimed)]
    assert reclaimed.job.id == job_id and reclaimed.job.status is record.status
    if attempts == 1:
        assert reclaimed.abandoned and record.error.type is ErrorType.ABANDONED
        assert seen.of(events.JobStarted) == []
    else:
        assert not reclaimed.abandoned and record.status is JobStatus.PENDING
        assert [e.status for e in seen.of(events.JobFinished)] == [JobStatus.COMPLETED]


def test_backend_down_then_up(store: Engine, unused_port: int) -> None:
    submit_spec(store)
    emu = Emulator(port=unused_port)
    seen = Recorder(store)

    def start_when_down(event: events.Event) -> None:
        if isinstance(event, events.BackendDown):
            emu.start()

    try:
        run(Daemon(store, [Backend(f"http://127.0.0.1:{unused_port}")], FAST), seen, start_when_down)
    finally:
        emu.stop()
    news = seen.of(events.BackendDown, events.BackendUp, events.JobFinished)
    assert [type(e) for e in news] == [events.BackendDown, events.BackendUp, events.JobFinished]
    assert news[0].backend == news[1].backend == f"http://127.0.0.1:{unused_port}"
    assert news[2].status is JobStatus.COMPLETED


def test_a_model_newly_in_memory_is_published_once(store: Engine, emulator: Emulator) -> None:
    first, second = submit_spec(store, model="qwen2.5:0.5b"), submit_spec(store, model="llama3.2")
    seen = Recorder(store)

    def hold_second_until_loaded(event: events.Event) -> None:
        # The second job runs (and loads its model) only after the first ended, long after
        # the daemon's first look at /api/ps; it is held until the next look names it.
        if isinstance(event, events.JobFinished) and event.job.id == first:
            emulator.hold()
        elif isinstance(event, events.ModelLoaded) and event.model == "llama3.2:latest":
            emulator.release()

    try:
        run(Daemon(store, [Backend(emulator.url)], FAST), seen, hold_second_until_loaded)
    finally:
        emulator.release()
    loaded = [e for e in seen.of(events.ModelLoaded) if e.model == "llama3.2:latest"]
    assert loaded == [events.ModelLoaded(emulator.url, "llama3.2:latest")]
    assert read_job(store, second).status is JobStatus.COMPLETED


def test_a_failing_subscriber_stops_nothing(store: Engine, emulator: Emulator,
                                            caplog: pytest.LogCaptureFixture) -> None:
    ids = [submit_spec(store) for _ in range(3)]
    seen = Recorder(store)

    def broken(event: events.Event) -> None:
        raise RuntimeError("subscriber bug")

    with caplog.at_level(logging.INFO, logger="ollama_q.daemon"):
        run(Daemon(store, [Backend(emulator.url)], FAST), broken, seen)
    assert [read_job(store, i).status for i in ids] == [JobStatus.COMPLETED] * 3
    assert len(seen.of(events.JobFinished)) == 3  # the subscriber after the broken one heard everything
    failures = [r for r in caplog.records if r.getMessage().startswith("event subscriber")]
    assert len(failures) == len(seen.seen) and all(r.exc_info for r in failures)
    assert sum("completed in" in r.getMessage() for r in caplog.records) == 3  # the log, before it


def test_no_event_for_a_transaction_that_did_not_commit(store: Engine, emulator: Emulator,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from ollama_cli.daemon import scheduler
    from ollama_cli.queue import transitions

    job_id = submit_spec(store)
    complete, plan, completed = transitions.complete, scheduler.plan, []

    def recorded_complete(*args: Any, **kwargs: Any) -> bool:
        completed.append(job_id)
        return complete(*args, **kwargs)

    def plan_failing_after_a_completion(*args: Any, **kwargs: Any) -> Any:
        if completed:  # the same transaction recorded the completion: it aborts, all of it
            raise RuntimeError("the commit never happens")
        return plan(*args, **kwargs)

    monkeypatch.setattr(transitions, "complete", recorded_complete)
    monkeypatch.setattr(scheduler, "plan", plan_failing_after_a_completion)
    seen = Recorder(store)
    with pytest.raises(RuntimeError, match="the commit never happens"):
        run(Daemon(store, [Backend(emulator.url)], FAST), seen)
    assert completed and read_job(store, job_id).status is JobStatus.RUNNING  # rolled back
    assert len(seen.of(events.JobStarted)) == 1 and seen.of(events.JobFinished) == []


# ------------------------------------------------------------------------- the log

def job7(**fields: Any) -> Job:
    """Job 7, in its second attempt of four."""
    return make_job(**{"id": 7, "status": JobStatus.RUNNING, "attempts": 2, "max_attempts": 4, **fields})


ERROR = JobError(ErrorType.BACKEND_ERROR, "model runner has unexpectedly stopped")


@pytest.mark.parametrize(("event", "level", "line"), [
    (events.DaemonStarted("d-1", ("http://a:1", "openai+http://b:2"), 2), "INFO",
     "daemon d-1 started: http://a:1, openai+http://b:2, concurrency 2 per backend"),
    (events.DaemonStopping("SIGTERM", False, 30.0, 3), "INFO",
     "SIGTERM: taking no more jobs; waiting up to 30s for 3 running"),
    (events.DaemonStopping("SIGINT", True, 30.0, 3), "WARNING", "second SIGINT: stopping now, handing running jobs back"),
    (events.DaemonDrained(), "INFO", "nothing pending or running: exiting (--drain)"),
    (events.JobStarted((job7(), job7(id=8)), "http://a:1"), "INFO", "job 7, 8 started on http://a:1 (llama3.2, attempt 2 of 4)"),
    (events.JobStarted((job7(attempts=1, route=("best", 0.6125, 12)),), "http://a:1"), "INFO",
     "job 7 started on http://a:1 (llama3.2, attempt 1 of 4; chosen by routing: lower bound 0.61 of 12 rated jobs)"),
    (events.JobStarted((job7(attempts=1, route=("default", None, 0)),), "http://a:1"), "INFO",
     "job 7 started on http://a:1 (llama3.2, attempt 1 of 4; chosen by routing: default)"),
    (events.JobStarted((job7(route=("default", None, 0)),), "http://a:1"), "INFO",
     "job 7 started on http://a:1 (llama3.2, attempt 2 of 4)"),  # said once, at the first attempt
    (events.JobFinished(job7(), JobStatus.COMPLETED, "http://a:1", took=1.25), "INFO", "job 7 completed in 1.2s"),
    (events.JobFinished(job7(), JobStatus.FAILED, "http://a:1", error=ERROR), "WARNING",
     "job 7 failed (backend_error: model runner has unexpectedly stopped)"),
    (events.JobFinished(job7(), JobStatus.CANCELLED, "http://a:1"), "INFO", "job 7 was cancelled: closing its stream"),
    (events.JobRetrying(job7(), ERROR, 1.5, "http://a:1"), "WARNING",
     "job 7 attempt 2 failed (backend_error: model runner has unexpectedly stopped); retrying in 1.5s"),
    (events.JobFellBack(job7(), JobError(ErrorType.MODEL_NOT_FOUND, "model 'llama3.2' not found"), "qwen2.5",
                        "http://a:1"), "WARNING",
     "job 7 failed on llama3.2 (model_not_found: model 'llama3.2' not found); starting again on fallback model qwen2.5"),
    (events.ResultDropped(job7(), "http://a:1"), "INFO",
     "job 7 finished after it was cancelled or taken back: result dropped"),
    (events.JobReclaimed(job7(status=JobStatus.PENDING)), "WARNING", "job 7 taken back from a dead daemon (attempt 2 of 4)"),
    (events.JobReclaimed(job7(status=JobStatus.PENDING, attempts=0, model="qwen2.5")), "WARNING",
     "job 7: its daemon died during each of its attempts; starting again on fallback model qwen2.5"),
    (events.JobReclaimed(job7(status=JobStatus.FAILED)), "WARNING",
     "job 7 abandoned: its daemon died during each of 2 attempts"),
    (events.JobsCleaned(5, 3600.0), "INFO", "deleted 5 jobs finished more than 3600s ago"),
    (events.BackendDown("http://a:1", "connection refused"), "WARNING",
     "backend http://a:1 unreachable (connection refused): jobs wait as pending until it answers"),
    (events.BackendUp("http://a:1"), "INFO", "backend http://a:1 is reachable again"),
    (events.BackendResting("http://a:1", 3, 2.0), "WARNING", "backend http://a:1 failed 3 times in a row: resting 2s"),
    (events.ModelLoaded("http://a:1", "llama3.2:latest"), "INFO", "model llama3.2:latest is loaded on http://a:1"),
], ids=lambda v: type(v).__name__ if isinstance(v, tuple(events.Event.__args__)) else "")
def test_the_log_writes_each_event_as_its_line(caplog: pytest.LogCaptureFixture, event: events.Event,
                                               level: str, line: str) -> None:
    with caplog.at_level(logging.INFO, logger="ollama_q.daemon"):
        logs.write(event)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [(level, line)]


def test_started_comes_after_the_first_look_at_each_backend(store: Engine, emulator: Emulator,
                                                            unused_port: int) -> None:
    submit_spec(store)
    dead = f"http://127.0.0.1:{unused_port}"
    seen = Recorder(store)
    run(Daemon(store, [Backend(emulator.url), Backend(dead)], FAST), seen)
    [started] = seen.of(events.DaemonStarted)
    up, down = started.found
    assert (up.backend, up.up, down.backend, down.up, down.models) == (emulator.url, True, dead, False, None)
    assert isinstance(up.models, int) and up.models > 0
    kinds = [type(e) for e, _ in seen.seen]
    assert kinds.index(events.DaemonStarted) < kinds.index(events.JobStarted)


@pytest.mark.parametrize(("found", "level", "line"), [
    ((events.BackendFound("http://a:1", True, 3), events.BackendFound("http://b:2", False)), "INFO",
     "daemon d-1 started: http://a:1 (3 models), http://b:2 (not answering), concurrency 2 per backend"),
    ((events.BackendFound("http://b:2", False),), "WARNING",
     "daemon d-1 started: http://b:2 (not answering), concurrency 2 per backend; no backend answers yet: "
     "jobs wait as pending"),
])
def test_started_says_what_the_first_look_found(caplog: pytest.LogCaptureFixture, found: Any, level: str,
                                               line: str) -> None:
    backends = tuple(f.backend for f in found)
    with caplog.at_level(logging.INFO, logger="ollama_q.daemon"):
        logs.write(events.DaemonStarted("d-1", backends, 2, found))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [(level, line)]


@pytest.mark.parametrize(("event", "fields"), [
    (events.JobStarted((job7(),), "http://a:1"),
     {"event": "job_started", "job": 7, "attempt": 2, "host": "http://a:1", "model": "llama3.2"}),
    (events.JobFinished(job7(), JobStatus.COMPLETED, "http://a:1", took=1.25),
     {"event": "job_completed", "job": 7, "attempt": 2, "host": "http://a:1", "took_s": 1.25}),
    (events.JobFinished(job7(), JobStatus.FAILED, "http://a:1", error=ERROR),
     {"event": "job_failed", "job": 7, "attempt": 2, "host": "http://a:1", "error_type": "backend_error"}),
    (events.JobRetrying(job7(), ERROR, 1.5, "http://a:1"),
     {"event": "job_retrying", "job": 7, "attempt": 2, "host": "http://a:1", "error_type": "backend_error",
      "delay_s": 1.5}),
    (events.JobFellBack(job7(), ERROR, "qwen2.5", "http://a:1"),
     {"event": "job_fell_back", "job": 7, "attempt": 2, "host": "http://a:1", "error_type": "backend_error",
      "model": "llama3.2", "fallback": "qwen2.5"}),
    (events.BackendDown("http://a:1", "connection refused"),
     {"event": "backend_down", "host": "http://a:1", "error_type": "unreachable", "reason": "connection refused"}),
], ids=lambda v: getattr(v, "get", lambda _: "")("event") or "")
def test_json_log_lines_carry_the_event_and_what_it_is_about(caplog: pytest.LogCaptureFixture,
                                                             event: events.Event, fields: dict[str, Any]) -> None:
    import json

    with caplog.at_level(logging.INFO, logger="ollama_q.daemon"):
        logs.write(event)
    [record] = caplog.records
    line = json.loads(logs.JsonLines().format(record))
    assert set(line) == {"time", "level", "message", *fields}
    assert {k: line[k] for k in fields} == fields and line["message"] == record.getMessage()


def test_human_log_lines_carry_a_level_mark(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ollama_q.daemon"):
        logs.write(events.BackendUp("http://a:1"))
        logs.write(events.BackendDown("http://a:1", "refused"))
    marks = [logs.Marked().format(r).split(" ")[1] for r in caplog.records]
    assert marks == ["INFO", "WARN"]
