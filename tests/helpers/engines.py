"""What the store's contract tests share (tests/contract/): the engines they run on, and the
daemon's step driven by hand: claim, settle, complete, fail."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_cli.jobs import ErrorType, Job, JobError
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from ollama_cli.store.records import Placement, Plan, Settle, SettleKind

# A new engine joins by one entry: a function of the test's fixtures (`request`) and its temp
# folder that opens a store. PostgreSQL's runs on a fresh database of the session's private
# server (`pg_store_url`).
ENGINES: dict[str, Callable[[pytest.FixtureRequest, Path], Engine]] = {
    "lmdb": lambda request, tmp: open_store(tmp / "store"),
    "postgresql": lambda request, tmp: open_store(request.getfixturevalue("pg_store_url")),
}
T = 1_000_000.0
ANSWER = {"response": "hi", "stats": {"eval_count": 1}}


def take_all(placement_of: Callable[[list[Job]], list[Placement]] | None = None,
             seen: list[list[Job]] | None = None) -> Callable[..., Plan]:
    """A planner that starts every candidate on backend 0 (or as `placement_of` says), and
    tells what it was shown."""
    def plan(candidates: Iterator[Job], request_of: Callable[[Job], dict[str, Any]]) -> Plan:
        jobs = list(candidates)
        if seen is not None:
            seen.append(jobs)
        placements = placement_of(jobs) if placement_of else [Placement(0, "http://h:1", (j,)) for j in jobs]
        return Plan(placements, state=len(jobs))
    return plan


def claim(engine: Engine, now: float = T, *, owner: str = "d1", limit: int = 1, host: str = "http://h:1") -> list[Job]:
    """Claim up to `limit` ready jobs in queue order, each as its own request."""
    tick = engine.settle_and_claim([], now, owner=owner, planner=take_all(
        lambda jobs: [Placement(0, host, (j,)) for j in jobs[:limit]]))
    return [c.job for _, claims in tick.claimed for c in claims]


def settle(engine: Engine, job: Job, kind: SettleKind, now: float = T, **kw: Any) -> Job | None:
    assert job.lease is not None
    return engine.settle_and_claim([Settle(kind, job.id, job.lease.token, **kw)], now, owner="d1").settled[0]


def complete(engine: Engine, job: Job, now: float = T, result: dict[str, Any] = ANSWER) -> Job | None:
    return settle(engine, job, SettleKind.COMPLETE, now, result=result, host="http://h:1")


def fail(engine: Engine, job: Job, now: float = T, *, retry_after: float | None = None) -> Job | None:
    return settle(engine, job, SettleKind.FAIL, now, error=JobError(ErrorType.BACKEND_ERROR, "no"),
                  retry_after=retry_after, host="http://h:1")
