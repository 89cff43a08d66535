"""The store: where jobs, results, the cache and daemon records live, behind one interface.

`base.py` is that interface (the Engine protocol, what each operation guarantees, and the
records that cross it); `lmdb_engine.py` is the embedded engine (LMDB in one folder, with
`lmdb.py` its key-value layer and `flock.py` its daemon liveness); `keys.py` and `tables.py`
are shared by engines that store keys as bytes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ollama_cli.errors import UsageError

if TYPE_CHECKING:
    from ollama_cli.store.base import Engine


def open_store(location: str | os.PathLike[str], *, readonly: bool = False,
               on_wait: Callable[[int | None], None] | None = None, create: bool = True) -> Engine:
    """The store at `location`: a folder, for LMDB in it. `readonly` when the caller will only
    read: LMDB then never waits behind a writer to open. `on_wait(pid)` is called once if a
    write waits long for another process that holds the store (its pid, None if unknown).
    Without `create`, NotFound if there is no store there yet (nothing is created)."""
    text = os.fspath(location)
    if "://" in text:
        raise UsageError(f"unsupported store {text!r}: this version keeps the store in a folder (LMDB)")
    from ollama_cli.store.lmdb_engine import LmdbEngine

    return LmdbEngine(Path(text), readonly=readonly, on_wait=on_wait, create=create)
