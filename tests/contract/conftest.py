"""The `engine` fixture of every contract module: each test runs once per engine.

A new engine joins by one entry in ENGINES (huey's StorageTests, BullMQ's one API over two
engines): a function of the test's fixtures (`request`) and its temp folder that opens a store.
PostgreSQL's runs on a fresh database of the session's private server (`pg_store_url`). Every
store is sound after its test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ollama_cli.store import open_store
from ollama_cli.store.base import Engine

ENGINES: dict[str, Callable[[pytest.FixtureRequest, Path], Engine]] = {
    "lmdb": lambda request, tmp: open_store(tmp / "store"),
    "postgresql": lambda request, tmp: open_store(request.getfixturevalue("pg_store_url")),
}


@pytest.fixture(params=list(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with ENGINES[request.param](request, tmp_path) as e:
        yield e
        assert e.check() == []
