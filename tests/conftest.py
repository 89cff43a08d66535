"""Shared fixtures, and only fixtures: a private data dir for every test, the store (as the CLI
and daemon see it, and LMDB's key-value layer under it), the rerun mode for write functions,
the Ollama emulator on 127.0.0.1, a free port, daemon processes that are always stopped, and a
private PostgreSQL server with a fresh database per test. What tests call is in tests/helpers/."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from ollama_cli.store.lmdb import Store
from tests.emulator import Emulator
from tests.helpers.processes import DaemonProcess, free_port


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's own data dir (not created), in OLLAMA_Q_DATA_DIR for this process and the
    CLI processes it starts. Autouse, so that no test writes into the user's data dir, nor
    (on Linux, where the default is under XDG_DATA_HOME) one that unsets the variable; and
    no config file unless the test writes one (XDG_CONFIG_HOME/ollama-q/config.toml)."""
    path = tmp_path / "store"
    monkeypatch.setenv("OLLAMA_Q_DATA_DIR", str(path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    # Nor reads the user's config file, nor writes its parse into the user's cache.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for name in ("OLLAMA_HOST", "OLLAMA_Q_CONFIG", "OLLAMA_Q_LOG"):
        monkeypatch.delenv(name, raising=False)
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


def _twice(write: Callable[[Any, Callable[[Any], object]], object]) -> Callable[..., object]:
    """`write(self, fn)` that runs fn first in a transaction it throws away, then for real."""
    def twice(self: Any, fn: Callable[[Any], object]) -> object:
        def thrown_away(tx: Any) -> None:
            fn(tx)
            raise _Abort

        try:
            write(self, thrown_away)
        except _Abort:
            pass
        return write(self, fn)

    return twice


@pytest.fixture
def rerun_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write function runs twice: first in a transaction that is thrown away, then for
    real, as LMDB runs it after growing its map and PostgreSQL after a deadlock. A write
    function with an effect outside its transaction (an append to a list, a count kept in the
    process, an id taken from a sequence) shows it twice, so the tests that use this hold code
    to the rule "a write function may run more than once"."""
    monkeypatch.setattr(Store, "write", _twice(Store.write))
    try:
        from ollama_cli.store.postgres.transactions import Database
    except ImportError:  # no driver: no PostgreSQL tests either
        return
    monkeypatch.setattr(Database, "write", _twice(Database.write))


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


# ------------------------------------------------------------------------- PostgreSQL


def _require_postgres(*, server: bool) -> None:
    """Without the driver (or, if `server`, the server binaries) a developer's run skips the
    test; CI's run (CI set) fails instead, so that PostgreSQL tests cannot go missing there
    unnoticed."""
    from tests.helpers.postgres import find_bindir

    missing = []
    if server and find_bindir() is None:
        missing.append("the PostgreSQL server (apt-get install postgresql, or OLLAMA_Q_PG_BINDIR)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        missing.append("the driver (pip install -e '.[test,postgres]')")
    if missing:
        message = "PostgreSQL tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def postgres_driver() -> None:
    """For a test that uses the PostgreSQL driver without a server: skipped without it,
    as `postgres_server` says."""
    _require_postgres(server=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """One private PostgreSQL server for the whole session (see tests/helpers/postgres.py);
    skipped without it or the driver, unless CI is set (`_require_postgres`)."""
    from tests.helpers.postgres import PostgresServer, find_bindir

    _require_postgres(server=True)
    server = PostgresServer(find_bindir())
    server.start()
    yield server
    server.close()


def _database_for(server: object, request: pytest.FixtureRequest, template: str) -> Iterator[str]:
    import re

    name = "t_" + re.sub(r"\W", "_", request.node.name)[:40].lower() + "_" + os.urandom(3).hex()
    url = server.create_database(name, template=template)  # type: ignore[attr-defined]
    yield url
    server.drop_database(name)  # type: ignore[attr-defined]


@pytest.fixture
def pg_url(postgres_server: object, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh, empty database of its own for this test."""
    yield from _database_for(postgres_server, request, "template0")


@pytest.fixture(scope="session")
def pg_template(postgres_server: object) -> str:
    """A database with the schema in place, migrated once per session, that each test's
    database is a copy of: copying it is quicker than migrating."""
    from ollama_cli.store.postgres import schema
    from ollama_cli.store.postgres.connection import connect

    name = "ollama_q_template"
    conn = connect(postgres_server.create_database(name))  # type: ignore[attr-defined]
    schema.migrate(conn, name)
    conn.close()
    return name


@pytest.fixture
def pg_store_url(postgres_server: object, pg_template: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh database of its own for this test, its schema up to date."""
    yield from _database_for(postgres_server, request, pg_template)


@pytest.fixture(params=["lmdb", "postgresql"])
def each_engine(request: pytest.FixtureRequest, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test runs twice: on LMDB in its data dir, and on PostgreSQL in a fresh database
    named by OLLAMA_Q_STORE, which every process the test starts inherits."""
    if request.param == "postgresql":
        monkeypatch.setenv("OLLAMA_Q_STORE", request.getfixturevalue("pg_store_url"))
    return request.param
