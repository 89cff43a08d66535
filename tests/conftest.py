"""Shared fixtures: a private data dir per test, the Ollama emulator on 127.0.0.1, the real
CLI as a subprocess, and a daemon process that is always stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_cli.store import Store
from tests.emulator import Emulator


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "store"
    monkeypatch.setenv("OLLAMA_Q_DATA_DIR", str(path))
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    return path


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    s = Store(data_dir)
    yield s
    s.close()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator().start()
    yield emu
    emu.stop()


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_HOST", "NO_COLOR")}
    env.update({"OLLAMA_Q_DATA_DIR": str(data_dir), "COLUMNS": "200"}, **extra)
    return env


def run_cli(data_dir: Path, *args: str, input: str | bytes | None = None, timeout: float = 60,
            **env: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a new process, as a user or script runs it."""
    if isinstance(input, str):
        input = input.encode()
    proc = subprocess.run(
        [sys.executable, "-m", "ollama_cli", *args], input=input if input is not None else b"",
        capture_output=True, timeout=timeout, env=cli_env(data_dir, **env),
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


class DaemonProcess:
    """`ollama-q daemon` in its own process; its log goes to a file the test can read."""

    def __init__(self, data_dir: Path, host: str, *args: str) -> None:
        self.log_path = data_dir.parent / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ollama_cli", "daemon", "--host", host, *args],
            stdout=subprocess.DEVNULL, stderr=self._log, env=cli_env(data_dir),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 30) -> bool:
        """Until the daemon has logged `text` (its log is the only signal it gives)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.proc.poll() is not None:
                return text in self.log()
            time.sleep(0.02)
        return False

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def start_daemon(data_dir: Path) -> Iterator[object]:
    started: list[DaemonProcess] = []

    def start(host: str, *args: str, wait: bool = True) -> DaemonProcess:
        d = DaemonProcess(data_dir, host, *args)
        started.append(d)
        if wait:
            assert d.wait_log("started"), d.log()
        return d

    yield start
    for d in started:
        d.stop()
