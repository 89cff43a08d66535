"""`check_invariants`: the store must be sound, as `queue/doctor.py` sees it (every index and
counter re-derived from the job records), after each scenario and each crash."""

from __future__ import annotations

from pathlib import Path

from ollama_cli.queue import doctor
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from ollama_cli.store.lmdb import Store


def check_invariants(where: Engine | Store | Path) -> None:
    if isinstance(where, Path):
        with open_store(where) as store:
            problems = store.check()
    elif isinstance(where, Store):
        with where.read() as tx:
            problems = doctor.check(tx)
    else:
        problems = where.check()
    assert problems == [], "\n".join(problems)
