"""The store: where jobs, results, the cache and daemon records live, behind one interface.

`base.py` is that interface (the Engine protocol, what each operation guarantees, and the
records that cross it); `lmdb_engine.py` is the embedded engine (LMDB in one folder, with
`lmdb.py` its key-value layer and `flock.py` its daemon liveness); `postgres/` is the engine on
a PostgreSQL server that many hosts share, imported only for a postgresql:// location; `keys.py`
and `tables.py` are shared by engines that store keys as bytes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ollama_cli.errors import UsageError

if TYPE_CHECKING:
    from ollama_cli.store.base import Engine

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: str | os.PathLike[str]) -> bool:
    """Whether the location names a PostgreSQL database (a URL), not an LMDB folder."""
    return os.fspath(location).startswith(POSTGRES_SCHEMES)


def shown(location: str | os.PathLike[str]) -> str:
    """The location as messages may show it: a URL without its password."""
    text = os.fspath(location)
    if is_postgres(text):
        from ollama_cli.store.postgres.connection import redact

        return redact(text)
    return text


def open_store(location: str | os.PathLike[str], *, readonly: bool = False,
               on_wait: Callable[[int | None], None] | None = None, create: bool = True) -> Engine:
    """The store at `location`: a postgresql:// (or postgres://) URL for a database on a server,
    else a folder, for LMDB in it. `readonly` when the caller will only read: LMDB then never
    waits behind a writer to open. `on_wait(pid)` is called once if a write waits long for
    another process that holds the store (its pid, None if unknown). Without `create`,
    NotFound if there is no store there yet (nothing is created: no folder, no tables).
    `readonly` and `on_wait` are LMDB's: a server has neither a writer lock to wait on nor a
    cheaper read-only open."""
    text = os.fspath(location)
    if is_postgres(text):
        from ollama_cli.store.postgres.engine import PostgresEngine

        return PostgresEngine(text, create=create)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise UsageError(f"unsupported store {scheme}://...: a store is a folder (LMDB) or a "
                         "postgresql:// URL")
    from ollama_cli.store.lmdb_engine import LmdbEngine

    return LmdbEngine(Path(text), readonly=readonly, on_wait=on_wait, create=create)
