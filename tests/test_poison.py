"""No one job stops the daemon or a command (issue 9, item 2). Stores written before times were
bounded at submit may hold times before 1970 or after 9999: they order as the nearest bound
and show as it. A job whose step raises all the same is quarantined, failed with the reason,
and the step goes on without it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ollama_cli import queue
from ollama_cli.codec import encode_job
from ollama_cli.daemon import events
from ollama_cli.daemon.loop import Daemon
from ollama_cli.jobs import ErrorType, JobSpec, JobStatus, JobType
from ollama_cli.settings import DaemonSettings
from ollama_cli.settings.hosts import Backend
from ollama_cli.store import open_store
from ollama_cli.store.keys import u64
from ollama_cli.store.lmdb import Store
from tests.emulator import Emulator
from tests.helpers.cli import ok_json, one_json, run_main

pytestmark = pytest.mark.usefixtures("rerun_writes")

NOW = 1_750_000_000.0
EARLY, OLD_TYPO, LATE = -1.0, -61_431_000_000.0, 1e13  # 1969-12-31T23:59:59Z, year 26, year 318857
FAST = DaemonSettings(drain=True, poll=0.02, retry_backoff=0.01)


def spec(prompt: str, **kw: Any) -> JobSpec:
    return JobSpec(model="llama3.2", type=JobType.GENERATE, request={"prompt": prompt}, **kw)


def plant(data_dir: Path, *specs: JobSpec, **changes: Any) -> list[int]:
    """Jobs as a version that did not check them stored them: submitted as they are, each
    record then rewritten with `changes` (the indexes left as they were)."""
    def write(tx: Any) -> list[int]:
        jobs = queue.submit_many(tx, list(specs), NOW)
        for job in jobs:
            if changes:
                tx.put("jobs", u64(job.id), encode_job(job.evolve(**changes)))
        return [j.id for j in jobs]

    with Store(data_dir) as kv:
        return kv.write(write)


def drain(data_dir: Path, url: str, *subscribers: events.Subscriber) -> None:
    with open_store(data_dir) as store:
        daemon = Daemon(store, [Backend(url)], FAST)
        for s in subscribers:
            daemon.events.subscribe(s)
        asyncio.run(asyncio.wait_for(daemon.run(), 60))
        assert store.check() == []


def test_times_out_of_range_show_as_the_bounds_in_every_command(data_dir: Path) -> None:
    early, typo, late = plant(data_dir, spec("early", run_at=EARLY), spec("typo", run_at=OLD_TYPO),
                              spec("late", run_at=LATE))
    bounds = {early: "1970-01-01T00:00:00.000Z", typo: "1970-01-01T00:00:00.000Z", late: "9999-12-31T23:59:59.000Z"}
    assert {j["id"]: j["run_at"] for j in ok_json(run_main("list", "--json"))} == bounds
    assert ok_json(run_main("status", str(late), "--json"))["run_at"] == bounds[late]
    listed = run_main("list")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    waited = run_main("wait", "--all", "--timeout", "1ms", "--json")
    assert waited.stderr.endswith("\nerror: timed out with 3 of 3 jobs unfinished\n")  # and no traceback
    assert "Traceback" not in waited.stderr
    assert {j["id"]: j["run_at"] for j in one_json(waited)} == bounds
    assert {j["id"] for j in ok_json(run_main("cancel", str(late), str(early), "--json"))} == {late, early}
    assert ok_json(run_main("status", str(late), "--json"))["status"] == "cancelled"


def test_times_out_of_range_show_for_people_in_any_zone(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    early, late = plant(data_dir, spec("early", run_at=EARLY), spec("late", run_at=LATE))
    for zone in ("Etc/GMT-14", "Etc/GMT+12"):  # where 9999-12-31T23:59:59Z is year 10000, and 1970 is 1969
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        for args in (("list",), ("status", str(early)), ("status", str(late))):
            shown = run_main(*args)
            assert shown.returncode == 0 and shown.stderr == "", (zone, args, shown.stderr)
    monkeypatch.undo()
    time.tzset()


def test_jobs_held_until_before_1970_run_and_those_after_9999_wait(data_dir: Path, emulator: Emulator) -> None:
    early, typo, late = plant(data_dir, spec("early", run_at=EARLY), spec("typo", run_at=OLD_TYPO),
                              spec("late", run_at=LATE))
    with open_store(data_dir) as store:
        # Due long ago: ready, and first in line; held until after 9999: no place in line.
        jobs = store.get_jobs([early, typo, late])
        assert store.positions(jobs, NOW) == {early: 1, typo: 2}
        store.cancel([late], NOW)  # so that --drain ends
    drain(data_dir, emulator.url)
    with open_store(data_dir) as store:
        assert [j.status for j in store.get_jobs([early, typo, late])] == \
            [JobStatus.COMPLETED, JobStatus.COMPLETED, JobStatus.CANCELLED]


def test_a_running_job_held_until_before_1970_can_be_cancelled(data_dir: Path, emulator: Emulator) -> None:
    [early] = plant(data_dir, spec("early", run_at=EARLY))
    emulator.hold()
    with open_store(data_dir) as store:
        daemon = Daemon(store, [Backend(emulator.url)], FAST)

        def cancel(event: events.Event) -> None:
            if isinstance(event, events.JobStarted):
                assert store.cancel([early], NOW)[0].changed

        daemon.events.subscribe(cancel)
        asyncio.run(asyncio.wait_for(daemon.run(), 60))
        assert store.get_job(early).status is JobStatus.CANCELLED
        assert store.check() == []


def test_a_job_whose_step_raises_is_quarantined_and_the_daemon_goes_on(data_dir: Path, emulator: Emulator) -> None:
    # A dependency id no key can hold: the step that promotes the job, due now, raises on it.
    [poison] = plant(data_dir, spec("poison", run_at=NOW + 1), after=(-5,))
    healthy = plant(data_dir, spec("first"), spec("second"))
    finished: list[events.JobFinished] = []
    drain(data_dir, emulator.url, lambda e: finished.append(e) if isinstance(e, events.JobFinished) else None)
    with open_store(data_dir) as store:
        assert [j.status for j in store.get_jobs(healthy)] == [JobStatus.COMPLETED] * 2
        job = store.get_job(poison)
    assert job.status is JobStatus.FAILED and job.error.type is ErrorType.INVALID_RESPONSE
    assert job.error.message.startswith("quarantined: handling it raised struct.error")
    [said] = [e for e in finished if e.job.id == poison]
    assert said.status is JobStatus.FAILED and said.error == job.error


def test_retry_and_cancel_of_a_job_they_raise_on_answer_and_quarantine_it(data_dir: Path) -> None:
    # Failed, and depending on an id no key can hold: retrying it re-checks its dependencies.
    [poison] = plant(data_dir, spec("poison"))
    with open_store(data_dir) as store:
        store.cancel([poison], NOW)
    with Store(data_dir) as kv:
        kv.write(lambda tx: tx.put("jobs", u64(poison), encode_job(queue.get_job(tx, poison).evolve(after=(-5,)))))
    retried = run_main("retry", str(poison))
    assert retried.returncode == 0 and retried.stderr == "", retried.stderr
    assert retried.stdout.startswith(f"job {poison} failed: invalid_response: quarantined: handling it raised")
    cancelled = run_main("cancel", str(poison), "--json")
    assert cancelled.returncode == 1 and cancelled.stderr == f"error: job {poison} is already failed\n"
    with open_store(data_dir) as store:
        assert store.check() == []
