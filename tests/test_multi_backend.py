"""Several backends and model-aware scheduling, end to end: real emulators over HTTP, the
daemon in this process."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import httpx
import pytest

from ollama_cli.clients import base, client_for
from ollama_cli.settings.hosts import Backend
from ollama_cli.daemon import events
from ollama_cli.daemon.pool import Pool, Slot
from ollama_cli.jobs import JobStatus, JobType
from ollama_cli.store.base import Engine
from tests.emulator import Emulator
from tests.hostile import Hostile
from tests.helpers.backend import generation_requests
from tests.helpers.daemon import drain
from tests.helpers.jobs import read_job, submit_spec

pytestmark = pytest.mark.usefixtures("rerun_writes")


def test_jobs_go_only_to_backends_that_have_their_model(store: Engine) -> None:
    with Emulator(models=["alpha"]) as a, Emulator(models=["beta"]) as b:
        ids = {submit_spec(store, f"p{i}", model="alpha" if i % 2 else "beta"): i for i in range(8)}
        drain(store, a.url, b.url, concurrency=2)
        for job_id, i in ids.items():
            j = read_job(store, job_id)
            assert j.status is JobStatus.COMPLETED
            assert j.host == (a.url if i % 2 else b.url)
        assert {body["model"] for body in generation_requests(a)} == {"alpha"}
        assert {body["model"] for body in generation_requests(b)} == {"beta"}


def test_work_flows_on_when_one_backend_dies(store: Engine) -> None:
    with Emulator(token_delay=0.01) as doomed, Emulator() as steady:
        doomed.hold()
        ids = [submit_spec(store, f"p{i}") for i in range(6)]

        def kill_when_busy() -> None:
            assert doomed.wait_in_flight(1)
            doomed.stop()

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        drain(store, doomed.url, steady.url, concurrency=1)
        killer.join()
        for job_id in ids:
            j = read_job(store, job_id)
            assert j.status is JobStatus.COMPLETED and j.host == steady.url


def test_a_mixed_queue_loads_each_model_once(store: Engine) -> None:
    with Emulator(models=["m1", "m2", "m3"], max_loaded=1, load_time=0.02) as emu:
        for i in range(12):
            submit_spec(store, f"p{i}", model=f"m{i % 3 + 1}")
        drain(store, emu.url, concurrency=1)
        assert emu.loads == 3, emu.load_log
        assert Counter(b["model"] for b in generation_requests(emu)) == {"m1": 4, "m2": 4, "m3": 4}


def test_model_concurrency_caps_parallel_requests(store: Engine) -> None:
    with Emulator(token_delay=0.01) as emu:
        for i in range(6):
            submit_spec(store, f"p{i}")
        drain(store, emu.url, concurrency=4, model_concurrency={"llama3.2": 1})
        assert emu.max_concurrent_seen == 1


def test_without_a_cap_the_same_jobs_run_in_parallel(store: Engine) -> None:
    with Emulator() as emu:
        emu.hold()
        for i in range(6):
            submit_spec(store, f"p{i}")
        releaser = threading.Thread(target=lambda: (emu.wait_in_flight(4), emu.release()))
        releaser.start()
        drain(store, emu.url, concurrency=4)
        releaser.join()
        assert emu.max_concurrent_seen == 4


def test_embed_jobs_of_one_model_share_a_request_and_keep_their_own_vectors(store: Engine) -> None:
    with Emulator() as emu:
        texts = [[f"text {i}"] if i % 2 else [f"text {i}", f"more {i}"] for i in range(10)]
        ids = [submit_spec(store, model="all-minilm", job_type=JobType.EMBED, request={"input": t}) for t in texts]
        drain(store, emu.url, concurrency=1)
        embeds = generation_requests(emu, "/api/embed")
        assert len(embeds) == 1 and len(embeds[0]["input"]) == 15
        for job_id, t in zip(ids, texts):
            direct = httpx.post(f"{emu.url}/api/embed", json={"model": "all-minilm", "input": t}).json()
            assert store.get_result(job_id)["embeddings"] == direct["embeddings"]


def test_a_failing_backend_rests_while_the_other_takes_the_work(store: Engine) -> None:
    rests: list[events.BackendResting] = []
    with Emulator() as flaky, Emulator() as steady:
        flaky.fail_next(1000, kind="status", status=500)
        ids = [submit_spec(store, f"p{i}", max_attempts=10) for i in range(20)]

        def note_rest(event: events.Event) -> None:
            if isinstance(event, events.BackendResting) and event.backend == flaky.url:
                rests.append(event)

        drain(store, flaky.url, steady.url, concurrency=1, subscribers=[note_rest])
        for job_id in ids:
            j = read_job(store, job_id)
            assert j.status is JobStatus.COMPLETED and j.host == steady.url
        # Failures of three different jobs in a row, then a rest (2 s) while the other
        # backend takes the work. However long the 20 jobs take, no request reaches the flaky
        # backend during a rest: each one from the third different job on fails and starts a
        # rest (a request during one would start none), as long as the number of different
        # jobs that failed there says (a job that fails there again counts once).
        prompts = [body["prompt"] for body in generation_requests(flaky)]
        third = next(i for i in range(len(prompts)) if len(set(prompts[:i + 1])) == 3)
        assert [r.failures for r in rests] == [len(set(prompts[:i + 1])) for i in range(third, len(prompts))]
        assert [r.seconds for r in rests] == [min(60.0, 2.0 ** (r.failures - 2)) for r in rests]


# ------------------------------------------------------------------ silent backends, and Retry-After


def test_a_backend_whose_listing_never_answers_is_down_and_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "LISTING_TIMEOUT", 0.05, raising=False)
    monkeypatch.setattr(base, "PROBE_TIMEOUT", 0.05, raising=False)

    async def look(url: str) -> tuple[Slot, list[bool]]:
        now = [0.0]
        slot = Slot(Backend(url), client_for(Backend(url)), capacity=1)
        pool = Pool([slot], clock=lambda: now[0], publish=lambda event: None)
        seen = []
        try:
            for _ in range(2):  # a refresh, then (once down) a probe
                pool.maintain(now[0], None)
                await asyncio.gather(*pool._tasks)
                seen.append(slot.free(now[0]) > 0)
                now[0] = slot.probe_at
            return slot, seen
        finally:
            await pool.stop()
            await slot.client.aclose()

    with Hostile.black_hole() as hole:
        slot, free = asyncio.run(look(hole.url))
        assert not slot.up and free == [False, False]
        assert hole.paths() == ["/api/tags", "/"]  # its listing, then a probe
    with Hostile() as polite:
        slot, free = asyncio.run(look(polite.url))
        assert slot.up and free == [True, True] and slot.models == {"llama3.2:latest", "all-minilm:latest"}


def test_jobs_go_to_the_backend_that_answers_not_to_a_silent_one(
        store: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "LISTING_TIMEOUT", 0.05, raising=False)
    monkeypatch.setattr(base, "PROBE_TIMEOUT", 0.05, raising=False)
    # Were a job sent to the silent one, it would wait for this, not for ten minutes.
    monkeypatch.setattr(base, "TIMEOUT", httpx.Timeout(5.0, read=5.0))
    with Hostile.black_hole() as hole, Emulator() as steady:
        steady.hold()  # nothing finishes before the silent backend has had its chance to take jobs
        ids = [submit_spec(store, f"p{i}") for i in range(4)]
        releaser = threading.Thread(target=lambda: (hole.wait_requests(1, path="/"), steady.release()))
        releaser.start()
        drain(store, hole.url, steady.url, concurrency=2)
        releaser.join()
        assert "/" in hole.paths()  # it was probed
        assert hole.generations() == 0
        for job_id in ids:
            j = read_job(store, job_id)
            assert j.status is JobStatus.COMPLETED and j.host == steady.url and j.attempts == 1


def test_a_backend_that_asks_to_wait_rests_that_long() -> None:
    slot = Slot(Backend("http://127.0.0.1:1"), client_for(Backend("http://127.0.0.1:1")), capacity=1)
    slot.answered = True
    published: list[object] = []
    pool = Pool([slot], clock=lambda: 0.0, publish=published.append)
    pool.failed(slot, 100.0, [1], retry_after=30.0)
    assert slot.free(129.9) == 0 and slot.free(130.0) == 1
    assert published == [events.BackendResting(slot.backend.label, 1, 30.0, asked=True)]
    pool.failed(slot, 200.0, [2], retry_after=0.0)  # "now is fine"
    assert slot.free(200.0) == 1
    asyncio.run(slot.client.aclose())


def _pool(backends: int) -> tuple[Pool, list[Slot], list[object]]:
    slots = [Slot(Backend(f"http://127.0.0.1:{i + 1}"), client_for(Backend(f"http://127.0.0.1:{i + 1}")), capacity=1)
             for i in range(backends)]
    for slot in slots:
        slot.answered = True
    published: list[object] = []
    return Pool(slots, clock=lambda: 0.0, publish=published.append), slots, published


@pytest.mark.parametrize(("backends", "failing_jobs", "rests"), [
    (2, [1, 1, 1, 1], False),  # one job's own failures count once
    (2, [1, 2, 1, 3], True),  # three different jobs: the backend rests, the other takes the work
    (1, [1, 2, 3, 4], False),  # the only backend: nowhere for the work to go, so no rest
])
def test_a_backend_rests_only_for_failures_of_several_jobs_with_another_to_take_the_work(
        backends: int, failing_jobs: list[int], rests: bool) -> None:
    pool, slots, published = _pool(backends)
    for job_id in failing_jobs:
        pool.failed(slots[0], 10.0, [job_id])
    assert (slots[0].free(10.0) == 0) is rests
    assert any(isinstance(e, events.BackendResting) for e in published) is rests
    pool.succeeded(slots[0])
    pool.failed(slots[0], 20.0, [9])  # a success ends the run of failures
    assert slots[0].failures == 1
    for slot in slots:
        asyncio.run(slot.client.aclose())


def test_one_bad_job_on_the_only_backend_does_not_rest_it(store: Engine) -> None:
    # Every attempt of one job fails in a row (a prompt the server cannot take): resting the
    # only backend for that would stall every job behind one job's fault, up to a minute.
    rests: list[events.BackendResting] = []
    with Emulator() as emu:
        emu.fail_next(1000, kind="status", status=500)
        bad = submit_spec(store, "bad", max_attempts=4)
        drain(store, emu.url, concurrency=1,
              subscribers=[lambda e: rests.append(e) if isinstance(e, events.BackendResting) else None])
    assert read_job(store, bad).status is JobStatus.FAILED and read_job(store, bad).attempts == 4
    assert rests == []
