"""Real daemons in their own processes, killed and signalled: nothing is lost, nothing
runs twice at once, and a job that keeps killing its daemon ends `abandoned`."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from ollama_cli import queue
from ollama_cli.jobs import ErrorType, JobSpec, JobStatus, JobType
from ollama_cli.store import open_store
from ollama_cli.store.lmdb import Store
from tests.emulator import Emulator
from tests.helpers.cli import run_cli, status_json, submit_id
from tests.helpers.invariants import check_invariants
from tests.helpers.processes import start_stuck_writer

pytestmark = pytest.mark.slow


def test_kill_9_mid_job_loses_nothing(data_dir: Path, emulator: Emulator, start_daemon) -> None:
    job_id = submit_id(data_dir, "llama3.2", "a long answer")
    emulator.hold()
    first = start_daemon(emulator.url)
    assert emulator.wait_in_flight(1)
    assert status_json(data_dir, job_id)["status"] == "running"
    first.signal(signal.SIGKILL)
    first.wait()
    emulator.release()
    second = start_daemon(emulator.url)
    out = run_cli(data_dir, "result", str(job_id), "--wait", "--timeout", "60s", "--json")
    assert out.returncode == 0, out.stderr + second.log()
    job = status_json(data_dir, job_id)
    assert job["status"] == "completed" and job["attempts"] == 2
    assert second.wait_log("taken back from a dead daemon")
    check_invariants(data_dir)


def test_a_job_that_kills_its_daemon_every_time_ends_abandoned(
        data_dir: Path, emulator: Emulator, start_daemon) -> None:
    job_id = submit_id(data_dir, "llama3.2", "poison", "--retries", "1")
    emulator.hold()
    for _ in range(2):
        daemon = start_daemon(emulator.url)
        assert emulator.wait_in_flight(1)
        daemon.signal(signal.SIGKILL)
        daemon.wait()
        assert emulator.wait_idle()
    last = start_daemon(emulator.url, "--drain")
    assert last.wait(60) == 0, last.log()
    job = status_json(data_dir, job_id)
    assert job["status"] == "failed" and job["error"]["type"] == "abandoned" and job["attempts"] == 2
    check_invariants(data_dir)


# SIGHUP: the terminal a daemon was started from closed.
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_sigterm_or_sighup_lets_running_jobs_finish(data_dir: Path, emulator: Emulator, start_daemon,
                                          sig: signal.Signals) -> None:
    running = submit_id(data_dir, "llama3.2", "finish me")
    waiting = submit_id(data_dir, "llama3.2", "not started")
    emulator.hold()
    daemon = start_daemon(emulator.url, "--grace", "60s")
    assert emulator.wait_in_flight(1)
    daemon.signal(sig)
    assert daemon.wait_log(f"{sig.name}: taking no more jobs")
    emulator.release()
    assert daemon.wait(60) == 0, daemon.log()
    assert status_json(data_dir, running)["status"] == "completed"
    left = status_json(data_dir, waiting)
    assert left["status"] == "pending" and left["attempts"] == 0
    info = json.loads(run_cli(data_dir, "info", "--json").stdout)
    assert info["daemon"]["running"] is False
    check_invariants(data_dir)


def test_sigterm_hands_back_what_outlives_the_grace_period(
        data_dir: Path, emulator: Emulator, start_daemon) -> None:
    job_id = submit_id(data_dir, "llama3.2", "too slow")
    emulator.hold()
    daemon = start_daemon(emulator.url, "--grace", "200ms")
    assert emulator.wait_in_flight(1)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(60) == 0, daemon.log()
    job = status_json(data_dir, job_id)
    assert job["status"] == "pending" and job["attempts"] == 0
    assert emulator.wait_idle()  # the stream was closed, not left hanging
    check_invariants(data_dir)


def test_two_daemons_never_run_a_job_twice(data_dir: Path, emulator: Emulator, start_daemon) -> None:
    # One process submits all 40: a CLI process each would cost seconds for nothing.
    with open_store(data_dir) as store:
        store.submit_many([JobSpec(model="llama3.2", type=JobType.GENERATE, request={"prompt": f"job {i}"},
                                   use_cache=False) for i in range(40)], 0.0)
    daemons = [start_daemon(emulator.url, "-c", "4", "--drain", wait=False) for _ in range(2)]
    for d in daemons:
        assert d.wait(120) == 0, d.log()
    prompts = Counter(body["prompt"] for _, path, body in emulator.requests if path == "/api/generate")
    assert prompts == Counter({f"job {i}": 1 for i in range(40)})
    with open_store(data_dir) as store:
        assert store.counts()["completed"] == 40
    check_invariants(data_dir)


def test_a_writer_killed_inside_a_transaction_leaves_the_store_whole(data_dir: Path) -> None:
    before = submit_id(data_dir, "llama3.2", "committed")
    writer = start_stuck_writer(data_dir)
    writer.kill()
    writer.communicate()
    after = submit_id(data_dir, "llama3.2", "next writer gets the lock")  # would hang if the lock were stuck
    assert after == before + 1
    with Store(data_dir) as store, store.read() as tx:
        assert tx.get("meta", b"half-written") is None
        assert queue.get_job(tx, before).status is JobStatus.PENDING
    check_invariants(data_dir)


def wait_heartbeats(data_dir: Path, pid: int, n: int, timeout: float = 60) -> None:
    """Until the daemon of process `pid` has recorded `n` heartbeats more than when first seen,
    read as often as the store's notifier wakes."""
    seen: set[float] = set()
    deadline = time.monotonic() + timeout
    with open_store(data_dir, readonly=True) as store:
        while len(seen) <= n:
            assert time.monotonic() < deadline, f"{len(seen)} heartbeats of daemon {pid} in {timeout:g}s"
            seen |= {d.last_heartbeat for d in store.daemons() if d.pid == pid}
            store.notifier.wait(0.1)


def test_a_second_daemon_does_not_steal_a_living_daemons_long_job(
        data_dir: Path, emulator: Emulator, start_daemon) -> None:
    # The first daemon's answer is held while the second daemon looks for jobs of dead daemons
    # on each heartbeat (both every 2 s): four heartbeats more are at least three such looks.
    job_id = submit_id(data_dir, "llama3.2", "a long one")
    emulator.hold()
    first = start_daemon(emulator.url)
    assert emulator.wait_in_flight(1)
    second = start_daemon(emulator.url)
    wait_heartbeats(data_dir, second.pid, 4)
    assert status_json(data_dir, job_id)["status"] == "running"
    emulator.release()
    out = run_cli(data_dir, "result", str(job_id), "--wait", "--timeout", "60s")
    assert out.returncode == 0, out.stderr
    job = status_json(data_dir, job_id)
    assert job["attempts"] == 1 and job["status"] == "completed"
    assert "taken back" not in second.log() and "taken back" not in first.log()
    assert len([r for r in emulator.requests if r[1] == "/api/generate"]) == 1
    assert ErrorType.ABANDONED.value not in json.dumps(job)
