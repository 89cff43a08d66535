"""Shared fixtures: a private data dir per test, the Ollama emulator on 127.0.0.1, and a
daemon process that is always stopped. The CLI runners are in tests/helpers/cli.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_cli.store.lmdb import Store
from tests.emulator import Emulator
from tests.helpers.cli import cli_env, run_cli

__all__ = ["cli_env", "run_cli"]  # still imported from here by older test modules


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


class DaemonProcess:
    """`ollama-q daemon` in its own process. A thread reads its log (stderr) line by line,
    so a test can await a line instead of polling for it."""

    def __init__(self, data_dir: Path, host: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ollama_cli", "daemon", "--host", host, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env(data_dir),
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._changed:
                self._lines.append(raw.decode(errors="replace"))
                self._changed.notify_all()
        with self._changed:  # end of the log: the process has gone
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if self.proc.poll() is not None:
            self._reader.join(10)  # an exited daemon's log is complete once read to the end
        with self._changed:
            return "".join(self._lines)

    def wait_log(self, text: str, timeout: float = 30) -> bool:
        """Until the daemon has logged `text` (its log is the only signal it gives)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: text in "".join(self._lines) or not self._reader.is_alive(), timeout,
            ) and text in "".join(self._lines)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._reader.join(10)


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
