"""Daemons on PostgreSQL, in their own processes, against what a shared server brings: the server
restarting under them, their connections cut, several of them on one database, one killed with
SIGKILL. Nothing is lost, every job runs at least once, and never twice at once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from ollama_cli import follow
from ollama_cli.jobs import JobSpec, JobStatus, JobType
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from tests.emulator import Emulator

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_store(pg_store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The store, and OLLAMA_Q_STORE naming it for every process the test starts."""
    monkeypatch.setenv("OLLAMA_Q_STORE", pg_store_url)
    with open_store(pg_store_url) as store:
        yield store
        assert store.check() == []


def submit(store: Engine, n: int, prefix: str = "job") -> list[int]:
    specs = [JobSpec(model="llama3.2", type=JobType.GENERATE, request={"prompt": f"{prefix} {i}"}, use_cache=False)
             for i in range(n)]
    return [j.id for j in store.submit_many(specs, store.now())]


def all_completed(store: Engine, ids: list[int]) -> None:
    jobs, finished = follow.wait_for(store, ids, timeout=120)
    assert finished and {j.status for j in jobs} == {JobStatus.COMPLETED}, Counter(j.status for j in jobs)
    assert all(store.get_result(i) is not None for i in ids)


def generated(emulator: Emulator) -> Counter[str]:
    return Counter(body["prompt"] for _, path, body in list(emulator.requests) if path == "/api/generate")


def sessions(server, url: str, pid: int) -> dict[int, str]:
    """The sessions of process `pid` on the database: backend pid -> its role (store, daemon, listener)."""
    name = url.rsplit("/", 1)[1]
    found = server.execute(f"SELECT pid, application_name FROM pg_stat_activity WHERE datname = '{name}' "
                           f"AND application_name LIKE 'ollama-q %-{pid}'")
    return {backend: app.split(" ")[1] if app.count(" ") == 2 else "store" for backend, app in found}


@pytest.mark.parametrize("cut", ["server restart", "connections terminated"])
def test_a_daemon_rides_out_a_lost_server_and_loses_nothing(
        pg_store: Engine, postgres_server, pg_store_url: str, emulator: Emulator, start_daemon, cut: str) -> None:
    ids = submit(pg_store, 12)
    emulator.hold()
    daemon = start_daemon(emulator.url, "-c", "2")
    assert emulator.wait_in_flight(2)
    before = sessions(postgres_server, pg_store_url, daemon.pid)
    assert set(before.values()) == {"daemon", "listener", "store"}  # its lock, wake-ups, and the queue
    if cut == "server restart":
        postgres_server.restart()
    else:  # every session of the daemon ends (its liveness lock's too), the server stays up
        for pid in before:
            postgres_server.execute(f"SELECT pg_terminate_backend({pid})")
    emulator.release()
    all_completed(pg_store, ids)
    # At least once: a job whose answer was being committed when the connection broke is not
    # run again, and the daemon took none of its own jobs for dead.
    assert generated(emulator) == Counter({f"job {i}": 1 for i in range(12)})
    later = submit(pg_store, 2, "after")  # it still serves, and hears of new jobs
    all_completed(pg_store, later)
    assert daemon.proc.poll() is None, daemon.log()
    # Its lock comes back at its next heartbeat (every 2 s): nothing signals it but the session.
    deadline = time.monotonic() + 30
    while set((after := sessions(postgres_server, pg_store_url, daemon.pid)).values()) != set(before.values()) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(after.values()) == {"daemon", "listener", "store"} and not set(after) & set(before)  # all new
    assert "Traceback" not in daemon.log()
    assert pg_store.counts()["completed"] == 14


def test_several_daemons_on_one_database_run_each_job_once(pg_store: Engine, emulator: Emulator,
                                                           start_daemon) -> None:
    ids = submit(pg_store, 60)
    emulator.hold()  # until all three have claimed: each then has a share of the work
    daemons = [start_daemon(emulator.url, "-c", "2", "--drain") for _ in range(3)]
    assert emulator.wait_in_flight(6)
    emulator.release()
    for d in daemons:
        assert d.wait(120) == 0, d.log()
    all_completed(pg_store, ids)
    assert generated(emulator) == Counter({f"job {i}": 1 for i in range(60)})
    assert emulator.overlaps == []
    assert all("started on" in d.log() for d in daemons)


def test_a_killed_daemons_jobs_are_finished_by_the_others(pg_store: Engine, emulator: Emulator,
                                                          start_daemon) -> None:
    ids = submit(pg_store, 10)
    emulator.hold()
    doomed = start_daemon(emulator.url, "-c", "2")
    assert emulator.wait_in_flight(2)
    survivors = [start_daemon(emulator.url, "-c", "2") for _ in range(2)]
    assert emulator.wait_in_flight(6)
    taken = {j.id for j in pg_store.list_jobs(statuses=[JobStatus.RUNNING])[0]
             if j.lease is not None and j.lease.owner.split("-")[-2] == str(doomed.pid)}
    assert len(taken) == 2
    doomed.signal(9)  # SIGKILL: its session, and the advisory lock that said it lived, end with it
    doomed.wait()
    emulator.release()
    all_completed(pg_store, ids)
    for job in pg_store.get_jobs(sorted(taken)):
        assert job.attempts == 2 and job.error is None, job
    assert any("taken back from a dead daemon" in d.log() for d in survivors)
    assert emulator.overlaps == []  # never two at once, though some ran twice
    sent = generated(emulator)
    assert set(sent) == {f"job {i}" for i in range(10)} and sum(sent.values()) == 12
