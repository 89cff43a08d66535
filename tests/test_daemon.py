"""The daemon in this process, against the emulator over real HTTP: what it does with
each kind of answer. Runs with --drain semantics so that `run()` returns by itself."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import httpx
import pytest

from ollama_cli.daemon import events
from ollama_cli.daemon.loop import Daemon
from ollama_cli.daemon.pool import Backoff
from ollama_cli.jobs import ErrorType, JobStatus, JobType, Priority
from ollama_cli.settings import DaemonSettings
from ollama_cli.settings.hosts import Backend
from ollama_cli.store.base import Engine
from tests.emulator import Emulator
from tests.helpers.backend import clean_answers, generation_requests
from tests.helpers.daemon import drain, tick_once
from tests.helpers.invariants import check_invariants
from tests.helpers.jobs import read_job, submit_spec

pytestmark = pytest.mark.usefixtures("rerun_writes")


def test_drains_every_type_and_stores_answer_and_stats(store: Engine, emulator: Emulator) -> None:
    ids = [submit_spec(store, "hello"), submit_spec(store, "hi", job_type=JobType.CHAT),
           submit_spec(store, "vector me", model="all-minilm", job_type=JobType.EMBED)]
    drain(store, emulator.url, concurrency=2)
    for job_id in ids:
        j = read_job(store, job_id)
        assert j.status is JobStatus.COMPLETED and j.attempts == 1 and j.host == emulator.url
        assert j.lease is None and j.error is None
    gen, chat, emb = (store.get_result(i) for i in ids)
    assert gen["response"] and gen["stats"]["eval_count"] > 0
    assert chat["message"]["role"] == "assistant" and chat["message"]["content"]
    assert len(emb["embeddings"]) == 1 and emb["stats"]["prompt_eval_count"] > 0
    assert store.counts()["completed"] == 3


def test_streamed_answer_equals_the_servers_whole_answer(store: Engine, emulator: Emulator) -> None:
    import httpx

    job_id = submit_spec(store, "tell me a story", request={"prompt": "tell me a story", "options": {"num_predict": 40}})
    drain(store, emulator.url)
    whole = httpx.post(f"{emulator.url}/api/generate", json={
        "model": "llama3.2", "prompt": "tell me a story", "options": {"num_predict": 40}, "stream": False}).json()
    assert store.get_result(job_id)["response"] == whole["response"]


def test_strict_priority_then_submission_order(store: Engine, emulator: Emulator) -> None:
    order = [("low-1", Priority.LOW), ("medium-1", Priority.MEDIUM), ("urgent-1", Priority.URGENT),
             ("high-1", Priority.HIGH), ("medium-2", Priority.MEDIUM), ("urgent-2", Priority.URGENT)]
    for prompt, prio in order:
        submit_spec(store, prompt, priority=prio)
    drain(store, emulator.url, concurrency=1)
    sent = [body["prompt"] for body in generation_requests(emulator)]
    assert sent == ["urgent-1", "urgent-2", "high-1", "medium-1", "medium-2", "low-1"]


@pytest.mark.parametrize("status, kind", [(404, ErrorType.MODEL_NOT_FOUND), (400, ErrorType.BAD_REQUEST)])
def test_permanent_failures_fail_at_once(store: Engine, emulator: Emulator, status: int, kind: ErrorType) -> None:
    if status == 404:
        job_id = submit_spec(store, model="no-such-model")
    else:
        emulator.fail_next(1, kind="status", status=400, message="invalid options")
        job_id = submit_spec(store)
    drain(store, emulator.url)
    j = read_job(store, job_id)
    assert j.status is JobStatus.FAILED and j.error.type is kind and j.attempts == 1
    assert len(generation_requests(emulator)) == 1
    assert store.get_result(job_id) is None


@pytest.mark.parametrize("fault", [
    {"kind": "status", "status": 500},
    {"kind": "status", "status": 503},
    {"kind": "stream_error", "after_chunks": 2},
    {"kind": "drop", "after_chunks": 2},
])
def test_transient_failures_are_retried_and_no_partial_answer_is_kept(
        store: Engine, emulator: Emulator, fault: dict[str, Any]) -> None:
    emulator.fail_next(2, **fault)
    job_id = submit_spec(store, "retry me")
    drain(store, emulator.url)
    j = read_job(store, job_id)
    assert j.status is JobStatus.COMPLETED and j.attempts == 3
    assert j.error is None
    assert store.get_result(job_id)["response"] == clean_answers(["retry me"])["retry me"]


def test_transient_failures_give_up_after_max_attempts(store: Engine, emulator: Emulator) -> None:
    emulator.fail_next(10, kind="status", status=500, message="model runner has unexpectedly stopped")
    job_id = submit_spec(store, max_attempts=3)
    drain(store, emulator.url)
    j = read_job(store, job_id)
    assert j.status is JobStatus.FAILED and j.attempts == 3
    assert j.error.type is ErrorType.BACKEND_ERROR and "unexpectedly stopped" in j.error.message
    assert len(generation_requests(emulator)) == 3


def test_timeout_closes_the_stream_and_counts_as_transient(store: Engine, emulator: Emulator) -> None:
    emulator.hold()  # every answer stalls after its first chunk
    job_id = submit_spec(store, timeout=0.2, max_attempts=2)
    drain(store, emulator.url)
    j = read_job(store, job_id)
    assert j.status is JobStatus.FAILED and j.error.type is ErrorType.TIMEOUT and j.attempts == 2
    assert emulator.wait_idle()  # both connections were closed by us


def test_cancel_of_a_running_job_closes_its_stream(store: Engine, emulator: Emulator) -> None:
    emulator.hold()
    job_id = submit_spec(store)

    def cancel_when_running() -> None:
        assert emulator.wait_in_flight(1)
        store.cancel([job_id], 1.0)

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    drain(store, emulator.url)
    canceller.join()
    assert emulator.wait_idle()  # the server saw the client go
    j = read_job(store, job_id)
    assert j.status is JobStatus.CANCELLED and j.error.type is ErrorType.CANCELLED
    assert store.get_result(job_id) is None


def test_cancel_then_retry_of_a_running_job_runs_it_again_once_its_stream_closed(
        store: Engine, emulator: Emulator) -> None:
    emulator.hold()
    job_id = submit_spec(store)
    seen: dict[str, bool] = {}

    def churn() -> None:
        assert emulator.wait_in_flight(1)
        store.cancel([job_id], 1.0)
        store.retry([job_id], 1.0)
        seen["ran again"] = emulator.wait_requests(2) and emulator.wait_in_flight(1)
        store.cancel([job_id], 2.0)  # the new run is within reach: this stops it too
        seen["all closed"] = emulator.wait_idle(5)
        emulator.release()

    churner = threading.Thread(target=churn)
    churner.start()
    drain(store, emulator.url, concurrency=2)  # a free slot for the job retried, at once
    churner.join()
    assert seen == {"ran again": True, "all closed": True}
    assert emulator.overlaps == []  # the first stream had closed when the second request came
    j = read_job(store, job_id)
    assert (j.status, j.lease, j.attempts) == (JobStatus.CANCELLED, None, 1)
    check_invariants(store)


def test_a_running_job_shows_the_backend_it_runs_on(store: Engine, emulator: Emulator) -> None:
    emulator.hold()
    job_id = submit_spec(store)
    seen: list[Any] = []

    def look_while_running() -> None:
        assert emulator.wait_in_flight(1)
        seen.append(store.get_job(job_id))
        emulator.release()

    looker = threading.Thread(target=look_while_running)
    looker.start()
    drain(store, emulator.url)
    looker.join()
    assert seen[0].status is JobStatus.RUNNING and seen[0].host == emulator.url


def test_dependencies_run_in_order_and_failures_cascade(store: Engine, emulator: Emulator) -> None:
    first = submit_spec(store, "first")
    second = submit_spec(store, "second", after=(first,), priority=Priority.URGENT)
    doomed = submit_spec(store, "doomed", model="no-such-model")
    chained = submit_spec(store, "never", after=(doomed,))
    chained2 = submit_spec(store, "never either", after=(chained,))
    drain(store, emulator.url)
    prompts = [b["prompt"] for b in generation_requests(emulator)]
    assert prompts.index("first") < prompts.index("second")
    assert "never" not in prompts and "never either" not in prompts
    assert read_job(store, second).status is JobStatus.COMPLETED
    for j in (read_job(store, chained), read_job(store, chained2)):
        assert j.status is JobStatus.FAILED and j.error.type is ErrorType.DEPENDENCY_FAILED


def test_keep_alive_and_options_reach_ollama(store: Engine, emulator: Emulator) -> None:
    submit_spec(store, request={"prompt": "x", "options": {"temperature": 0.2, "seed": 7}, "format": "json"},
           keep_alive=300.0)
    drain(store, emulator.url)
    body = generation_requests(emulator)[0]
    assert body["keep_alive"] == 300.0 and body["options"] == {"temperature": 0.2, "seed": 7}
    assert body["format"] == "json" and body["stream"] is True


def test_paused_queue_starts_nothing(store: Engine, emulator: Emulator) -> None:
    job_id = submit_spec(store)
    store.pause()
    daemon = Daemon(store, [Backend(emulator.url)], DaemonSettings())
    assert tick_once(daemon, 10.0).started == []
    assert read_job(store, job_id).status is JobStatus.PENDING
    store.resume()  # the same step, unpaused, starts the job: the pause was what held it
    [run] = tick_once(daemon, 10.1).started
    assert [c.job.id for c in run.claims] == [job_id]
    assert read_job(store, job_id).status is JobStatus.RUNNING


class RefusalCounter(httpx.AsyncHTTPTransport):
    """The real transport, counting the requests a closed port refused, by path."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []
        self.changed: asyncio.Event | None = None  # made on the daemon's loop

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectError:
            self.refused.append(request.url.path)
            if self.changed is not None:
                self.changed.set()
            raise


def test_unreachable_backend_keeps_jobs_pending_and_says_so_once(
        store: Engine, caplog: pytest.LogCaptureFixture, unused_port: int) -> None:
    ids = [submit_spec(store, f"p{i}") for i in range(3)]
    emu = Emulator(port=unused_port)
    transport = RefusalCounter()
    daemon = Daemon(store, [Backend(f"http://127.0.0.1:{unused_port}")],
                    DaemonSettings(concurrency=2, drain=True, poll=0.02, retry_backoff=0.01),
                    transport=transport, probe_backoff=Backoff(0.001, 0.002))

    async def scenario() -> None:
        transport.changed = asyncio.Event()
        task = asyncio.ensure_future(daemon.run())
        # The daemon fails to connect, says so, and probes (only an unreachable backend
        # is probed); after two failed probes the server comes up.
        while transport.refused.count("/") < 2:
            transport.changed.clear()
            await asyncio.wait_for(transport.changed.wait(), 30)
        waiting = store.get_jobs(ids)
        assert all(j.status is JobStatus.PENDING and j.attempts == 0 for j in waiting)
        emu.start()
        await task

    with caplog.at_level(logging.INFO, logger="ollama_q.daemon"):
        try:
            asyncio.run(scenario())
        finally:
            emu.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1
    for i in ids:
        j = read_job(store, i)
        assert j.status is JobStatus.COMPLETED and j.attempts == 1


def test_no_read_transaction_is_held_across_a_call(store: Engine, emulator: Emulator) -> None:
    # A read transaction held across a network call pins old pages and grows the file: while
    # the requests are in flight, no reader slot may hold a transaction ("-" for its txnid, or
    # no slot at all). A step's own short read may be caught by one look; one held across the
    # call by every look.
    for i in range(2):
        submit_spec(store, f"p{i}")
    emulator.hold()
    looks: list[list[str]] = []

    def look_while_in_flight() -> None:
        assert emulator.wait_in_flight(2)
        for _ in range(3):
            looks.append([row.split()[-1] for row in store.kv.env.readers().splitlines()[1:]])
            if all(txn == "-" for txn in looks[-1]):
                break
            time.sleep(0.05)
        emulator.release()

    looker = threading.Thread(target=look_while_in_flight)
    looker.start()
    drain(store, emulator.url, concurrency=2)
    looker.join()
    assert all(txn == "-" for txn in looks[-1]), looks


def test_keep_finished_deletes_jobs_finished_long_enough_ago(store: Engine, emulator: Emulator) -> None:
    old = submit_spec(store, "old")
    drain(store, emulator.url)
    recent = submit_spec(store, "recent")
    drain(store, emulator.url)
    t_old, t_recent = read_job(store, old).finished_at, read_job(store, recent).finished_at
    assert t_old < t_recent
    now = t_recent + 3600.0
    keep = now - (t_old + t_recent) / 2  # between the two jobs' ages
    report = tick_once(Daemon(store, [Backend(emulator.url)], DaemonSettings(keep_finished=keep), clock=lambda: now),
                       now)
    assert report.cleaned == 1
    assert store.get_job(old) is None and store.get_result(old) is None
    assert read_job(store, recent).status is JobStatus.COMPLETED


# ------------------------------------------------------------------- group commit


class Busy:
    """A CpuMeter that always says the daemon is the bottleneck."""

    def busy(self) -> bool:
        return True


def test_a_busy_daemon_still_drains_everything_once(store: Engine, emulator: Emulator) -> None:
    # Jobs of very different lengths, so that some finish while others are in flight and
    # the finished ones wait to share a transaction.
    ids = [submit_spec(store, f"p{i}", request={"prompt": f"p{i}", "options": {"num_predict": 1 + (i % 4) * 30}})
           for i in range(24)]
    drain(store, emulator.url, concurrency=4, cpu=Busy())
    assert [read_job(store, i).status for i in ids] == [JobStatus.COMPLETED] * 24
    assert all(read_job(store, i).attempts == 1 for i in ids)
    assert len(generation_requests(emulator)) == 24
    check_invariants(store)


class Commits:
    """The store, noting how many settles each of the daemon's transactions carries (a spy:
    every call reaches the store)."""

    def __init__(self, store: Engine) -> None:
        self.store = store
        self.settles: list[int] = []

    def settle_and_claim(self, settles: Any, *args: Any, **kwargs: Any) -> Any:
        if settles:
            self.settles.append(len(settles))
        return self.store.settle_and_claim(settles, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_busy_daemon_settles_the_requests_in_flight_in_one_commit(
        store: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from ollama_cli.daemon import loop

    monkeypatch.setattr(loop, "GROUP_COMMIT_WINDOW", 3600.0)  # as long as they take
    # Answers that end 0.2 s apart, all started by one step.
    for i in range(4):
        submit_spec(store, f"p{i}", request={"prompt": f"p{i}", "options": {"num_predict": 1 + 20 * i}})
    commits = Commits(store)
    with Emulator(token_delay=0.01) as emu:
        drain(commits, emu.url, concurrency=4, cpu=Busy())  # type: ignore[arg-type]
    assert commits.settles == [4]


def test_a_slow_request_holds_no_finished_jobs_commit_past_the_window(store: Engine, emulator: Emulator) -> None:
    emulator.fail_next(1, kind="hang", model="qwen2.5:0.5b")  # no answer until the client goes
    slow = submit_spec(store, "slow", model="qwen2.5:0.5b", timeout=3.0, max_attempts=1)
    fast = submit_spec(store, "fast")
    slow_when_fast_finished: list[JobStatus] = []

    def on_finished(event: events.Event) -> None:
        if isinstance(event, events.JobFinished) and event.job.id == fast:
            slow_when_fast_finished.append(read_job(store, slow).status)
            store.cancel([slow], 1.0)  # it has served: let the daemon drain

    drain(store, emulator.url, concurrency=2, cpu=Busy(), subscribers=[on_finished])
    # The fast job's commit did not wait for the slow one (which would have timed out first).
    assert slow_when_fast_finished == [JobStatus.RUNNING]


def test_cpu_meter_says_busy_above_the_share_and_idle_below() -> None:
    from ollama_cli.daemon.loop import CPU_SAMPLE, CpuMeter

    wall, cpu = [100.0], [5.0]
    meter = CpuMeter(cpu=lambda: cpu[0], wall=lambda: wall[0])
    assert not meter.busy()  # nothing measured yet
    wall[0] += 2 * CPU_SAMPLE
    cpu[0] += 2 * CPU_SAMPLE * 0.95
    assert meter.busy()
    wall[0] += 2 * CPU_SAMPLE
    cpu[0] += 2 * CPU_SAMPLE * 0.1
    assert not meter.busy()
