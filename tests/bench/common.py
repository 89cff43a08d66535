"""Shared pieces of the benchmarks: an emulator in its own process (so that it does not
share a GIL with what is measured, where only its answers are looked at), a private store,
and queueing jobs through the core."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ollama_cli.jobs import JobSpec, JobType  # noqa: E402
from ollama_cli.store import open_store  # noqa: E402


@contextlib.contextmanager
def emulator(*args: str) -> Iterator[str]:
    """`tests/emulator.py` in a subprocess; yields its URL."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "emulator.py"), "--port", "0", *args],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), url
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


@contextlib.contextmanager
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp) / "store"


def enqueue(path: Path, jobs: list[dict[str, Any]]) -> None:
    """Queue jobs in one transaction; the store is closed again so that a daemon in this
    process may open it."""
    with open_store(path) as store:
        store.submit_many([JobSpec(model=j["model"], type=JobType(j.get("type", "generate")), request=j["request"],
                                   use_cache=False) for j in jobs], 0.0)


def results(path: Path) -> list[Any]:
    with open_store(path) as store:
        jobs, _ = store.list_jobs()
        return [(j, store.get_result(j.id)) for j in jobs]


def env_for(path: Path) -> dict[str, str]:
    return {**os.environ, "OLLAMA_Q_DATA_DIR": str(path)}
