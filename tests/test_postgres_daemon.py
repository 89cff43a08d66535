"""The daemon and the waiting commands on PostgreSQL, woken by NOTIFY rather than by their poll:
both poll once an hour here, so only a notification can wake them in time. Daemons riding out a
server restart, lost connections and each other are in tests/faults/test_postgres_faults.py."""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any

import pytest

from ollama_cli import follow
from ollama_cli.daemon import events
from ollama_cli.daemon.loop import Daemon
from ollama_cli.jobs import JobSpec, JobStatus, JobType
from ollama_cli.settings import DaemonSettings
from ollama_cli.settings.hosts import Backend
from ollama_cli.store import open_store
from ollama_cli.store.records import Placement, Plan, Settle, SettleKind
from tests.emulator import Emulator

HOUR = 3600.0


def spec(prompt: str) -> JobSpec:
    return JobSpec(model="llama3.2", type=JobType.GENERATE, request={"prompt": prompt}, use_cache=False)


def test_a_sleeping_daemon_wakes_when_a_job_is_submitted_elsewhere(pg_store_url: str, emulator: Emulator) -> None:
    with open_store(pg_store_url) as store, open_store(pg_store_url) as elsewhere:
        first = store.submit(spec("first"), store.now())
        daemon = Daemon(store, [Backend(emulator.url)], DaemonSettings(poll=HOUR))
        finished: list[int] = []

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.JobFinished):
                finished.append(event.job.id)
                if event.job.id == first.id:
                    # Claims for this tick are done: the next comes from a notification, or in an hour.
                    elsewhere.submit(spec("second"), elsewhere.now())
                else:
                    daemon._on_signal(signal.SIGTERM)

        daemon.events.subscribe(on_event)
        asyncio.run(asyncio.wait_for(daemon.run(), 60))
        assert finished == [first.id, first.id + 1]
        assert store.counts()["completed"] == 2


def test_a_waiter_wakes_when_its_job_finishes_elsewhere(pg_store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow, "POLL", HOUR)
    monkeypatch.setattr(follow, "MAX_POLL", HOUR)
    with open_store(pg_store_url) as waiter, open_store(pg_store_url) as daemon:
        job = waiter.submit(spec("x"), waiter.now())
        waiter.notifier.wait(0)  # listening from now on: what follows cannot slip by unheard
        read = threading.Event()
        outcome: list[Any] = []
        thread = threading.Thread(target=lambda: outcome.append(follow.wait_for(
            waiter, [job.id], on_progress=lambda finished, total: read.set())), daemon=True)
        thread.start()
        assert read.wait(30)  # it has read the job, unfinished
        tick = daemon.settle_and_claim([], daemon.now(), owner="d", planner=lambda jobs, _: Plan(
            [Placement(0, "h", (next(iter(jobs)),))]))
        [(_, [claim])] = tick.claimed
        daemon.settle_and_claim([Settle(SettleKind.COMPLETE, job.id, claim.job.lease.token, result={})],
                                daemon.now(), owner="d")
        thread.join(60)
        [(jobs, all_finished)] = outcome
        assert all_finished and jobs[0].status is JobStatus.COMPLETED
