"""What the daemon records of its backends and running requests with its heartbeat (for `top`,
`info` and routing), read back through the store while it runs against the emulator."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ollama_cli.store.base import Engine
from tests.emulator import Emulator
from tests.helpers.cli import run_cli
from tests.helpers.daemon import drain
from tests.helpers.jobs import submit_spec

pytestmark = pytest.mark.usefixtures("rerun_writes")


def until(store: Engine, found: Callable[[], Any], timeout: float = 10.0) -> Any:
    """What `found` gives once it gives something, waiting on the store's notifier between looks."""
    deadline = time.monotonic() + timeout
    while not (value := found()):
        assert time.monotonic() < deadline, "never came"
        store.notifier.wait(0.05)
    return value


def test_a_running_daemon_records_its_backends_and_running_jobs_and_takes_them_away_when_it_stops(
        store: Engine, emulator: Emulator, data_dir: Path) -> None:
    emulator.hold()
    job_id = submit_spec(store)
    seen: dict[str, Any] = {}

    def look_while_running() -> None:
        assert emulator.wait_in_flight(1)
        seen["backends"] = until(store, lambda: [b for b in store.backends() if b.in_use == 1])
        seen["progress"] = until(store, store.progress)
        seen["info"] = run_cli(data_dir, "info", "--json")
        emulator.release()

    looker = threading.Thread(target=look_while_running)
    looker.start()
    drain(store, emulator.url, concurrency=2)
    looker.join()
    [backend] = seen["backends"]
    assert (backend.url, backend.up, backend.slots, backend.in_use) == (emulator.url, True, 2, 1)
    assert backend.installed is not None and "llama3.2:latest" in backend.installed
    [run] = seen["progress"]
    assert run.job_id == job_id and run.daemon_id == backend.daemon_id and run.started_at <= run.updated_at

    shown = json.loads(seen["info"].stdout)["backends"]
    assert [(b["url"], b["daemon"], b["in_use"], b["slots"]) for b in shown] == [
        (emulator.url, backend.daemon_id, 1, 2)]
    assert store.backends() == [] and store.progress() == []  # the daemon is gone, and so are its reports
