"""Shared fixtures, and only fixtures: a private data dir for every test, the store (as the CLI
and daemon see it, and LMDB's key-value layer under it), the rerun mode for write functions,
the Ollama emulator on 127.0.0.1, a free port, and daemon processes that are always stopped.
What tests call is in tests/helpers/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from ollama_cli.store.lmdb import Store, Tx
from tests.emulator import Emulator
from tests.helpers.processes import DaemonProcess, free_port


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's own data dir (not created), in OLLAMA_Q_DATA_DIR for this process and the
    CLI processes it starts. Autouse, so that no test writes into the user's data dir, nor
    (on Linux, where the default is under XDG_DATA_HOME) one that unsets the variable."""
    path = tmp_path / "store"
    monkeypatch.setenv("OLLAMA_Q_DATA_DIR", str(path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    return path


@pytest.fixture
def store(data_dir: Path) -> Iterator[Engine]:
    """The store as the CLI and the daemon use it."""
    with open_store(data_dir) as engine:
        yield engine


@pytest.fixture
def kv(data_dir: Path) -> Iterator[Store]:
    """LMDB's key-value layer, for tests of it and of the queue functions written on it (a
    process opens an environment once: a test takes this or `store`, not both)."""
    s = Store(data_dir)
    yield s
    s.close()


class _Abort(Exception):
    pass


@pytest.fixture
def rerun_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write function runs twice: first in a transaction that is thrown away, then for
    real, as LMDB runs it after growing its map. A write function with an effect outside its
    transaction (an append to a list, a count kept in the process) shows it twice, so the
    tests that use this hold code to the rule "a write function may run more than once"."""
    write = Store.write

    def twice(self: Store, fn: Callable[[Tx], object]) -> object:
        def thrown_away(tx: Tx) -> None:
            fn(tx)
            raise _Abort

        try:
            write(self, thrown_away)
        except _Abort:
            pass
        return write(self, fn)

    monkeypatch.setattr(Store, "write", twice)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator().start()
    yield emu
    emu.stop()


@pytest.fixture
def unused_port() -> int:
    return free_port()


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
