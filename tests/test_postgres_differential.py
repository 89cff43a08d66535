"""LMDB is the reference model of the PostgreSQL engine: the same random sequences of operations,
through the engine interface (`store/base.py`) of each, must give the same answers and leave every
observable equal after every step (each job as stored, positions, counts, results, batches,
cache figures, what a planner is shown)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_cli.errors import NotFound, UsageError
from ollama_cli.jobs import ErrorType, Job, JobError, JobSpec, JobStatus, JobType, Priority
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from ollama_cli.store.records import Placement, Plan, Settle, SettleKind

DEAD = "gone-1-5"  # an owner whose lock nobody holds: dead to both engines
FINISHED = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class Twin:
    """One operation, applied to both engines with the same arguments; their answers must agree."""

    def __init__(self, lmdb: Engine, pg: Engine, rng: random.Random) -> None:
        self.lmdb, self.pg, self.rng = lmdb, pg, rng
        self.now = 1_000_000.0
        # Each engine names its own live daemon; a lease shows which of the two it is under.
        self.live = {id(lmdb): lmdb.daemon_lock().id, id(pg): pg.daemon_lock().id}
        self.tokens: dict[int, tuple[str, str]] = {}  # running job -> (its LMDB token, its PostgreSQL token)
        self.ids: list[int] = []
        self.batches: list[str] = []
        self.shown: list[list[int]] = []  # what each engine's planner was shown, last claim

    def both(self, call: Callable[[Engine], Any]) -> tuple[Any, Any]:
        """The call on each engine; an error must be the same error, with the same message."""
        try:
            mine = call(self.lmdb)
        except (UsageError, NotFound) as exc:
            with pytest.raises(type(exc), match=re.escape(exc.message)):
                call(self.pg)
            return None, None
        return mine, call(self.pg)

    def spec(self) -> JobSpec:
        rng = self.rng
        after = tuple(sorted(rng.sample(self.ids, 1))) if self.ids and rng.random() < 0.2 else ()
        return JobSpec(model=rng.choice("ab"), type=JobType.GENERATE, request={"prompt": rng.choice("xyz")},
                       priority=rng.choice(list(Priority)), max_attempts=rng.choice((1, 2, 3)),
                       run_at=self.now + rng.choice((5, 20)) if rng.random() < 0.2 else None, after=after,
                       use_cache=rng.random() < 0.8)

    def submit(self) -> None:
        specs = [self.spec() for _ in range(self.rng.randint(1, 3))]
        if self.rng.random() < 0.2:
            name = self.rng.choice((None, "nightly"))
            mine, theirs = self.both(lambda e: e.submit_batch(specs, self.now, name=name))
            if mine is None:  # refused by both (a dependency cleaned away, the name in use)
                return
            assert mine[0] == theirs[0]
            self.batches.append(mine[0])
            mine, theirs = mine[1], theirs[1]
        else:
            mine, theirs = self.both(lambda e: e.submit_many(specs, self.now))
            if mine is None:
                return
        assert [_shown(self, j) for j in mine] == [_shown(self, j) for j in theirs]
        self.ids += [j.id for j in mine]

    def claim(self) -> None:
        n, dead = self.rng.randint(1, 3), self.rng.random() < 0.3
        shown: list[list[int]] = []

        def plan(candidates: Iterator[Job], request_of: Callable[[Job], dict[str, Any]]) -> Plan:
            jobs = list(candidates)
            shown.append([j.id for j in jobs])
            for job in jobs:
                request_of(job)
            return Plan([Placement(0, "http://h:1", (j,)) for j in jobs[:n]], state=len(jobs))

        def take(e: Engine) -> list[tuple[int, str]]:
            owner = DEAD if dead else self.live[id(e)]
            tick = e.settle_and_claim([], self.now, owner=owner, planner=plan, lookahead=n + 2)
            assert tick.plan_state == len(shown[-1])
            return [(c.job.id, c.job.lease.token) for _, claims in tick.claimed for c in claims]

        mine, theirs = self.both(take)
        assert shown[0] == shown[-1]
        assert [i for i, _ in mine] == [i for i, _ in theirs]
        for (job_id, a), (_, b) in zip(mine, theirs):
            self.tokens[job_id] = (a, b)

    def settle(self) -> None:
        if not self.tokens:
            return
        job_id = self.rng.choice(sorted(self.tokens))
        tokens = dict(zip((id(self.lmdb), id(self.pg)), self.tokens.pop(job_id)))
        kind = self.rng.choice(list(SettleKind))
        error = JobError(ErrorType.UNREACHABLE, "down")
        retry_after = self.rng.choice((None, 3.0))
        result = {"response": f"answer {job_id}"}
        mine, theirs = self.both(lambda e: e.settle_and_claim(
            [Settle(kind, job_id, tokens[id(e)], result=result, error=error, retry_after=retry_after,
                    host="http://h:2")], self.now, owner="x").settled[0])
        assert _shown(self, mine) == _shown(self, theirs)

    def cancel(self) -> None:
        ids = self.rng.sample(self.ids, min(len(self.ids), 2)) + [10_000]
        mine, theirs = self.both(lambda e: e.cancel(ids, self.now))
        assert [(c.id, c.changed, _shown(self, c.job)) for c in mine] == \
            [(c.id, c.changed, _shown(self, c.job)) for c in theirs]

    def retry(self) -> None:
        ids = None if self.rng.random() < 0.2 else self.rng.sample(self.ids, min(len(self.ids), 2))
        mine, theirs = self.both(lambda e: e.retry(ids, self.now))
        assert [(c.id, c.changed, _shown(self, c.job)) for c in mine] == \
            [(c.id, c.changed, _shown(self, c.job)) for c in theirs]

    def reclaim(self) -> None:
        mine, theirs = self.both(lambda e: e.reclaim(self.now))
        assert sorted(_shown(self, j) for j in mine) == sorted(_shown(self, j) for j in theirs)
        for job in mine:
            self.tokens.pop(job.id, None)

    def clean(self) -> None:
        statuses, older_than = self.rng.sample(FINISHED, self.rng.randint(1, 3)), self.rng.choice((None, 10))
        mine, theirs = self.both(lambda e: e.clean(statuses, self.now, older_than=older_than))
        assert mine == theirs

    def pause(self) -> None:
        paused = self.rng.random() < 0.5
        self.both(lambda e: e.pause() if paused else e.resume())

    def cache_clear(self) -> None:
        mine, theirs = self.both(lambda e: e.cache_clear())
        assert mine == theirs

    def tick(self) -> None:
        self.now += self.rng.choice((1.0, 4.0))

    def compare(self) -> None:
        def observe(e: Engine) -> Any:
            jobs = e.get_jobs([*self.ids, 10_000])
            found = [j for j in jobs if isinstance(j, Job)]
            listed, corrupt = e.list_jobs(statuses=[JobStatus.PENDING, JobStatus.FAILED], model="a", limit=5,
                                          offset=1)
            return (
                [_shown(self, j) for j in jobs],
                e.counts(),
                e.positions(found, self.now),
                {j.id: e.get_result(j.id) for j in found},
                {j.id: e.get_request(j.id) for j in found},
                e.cache_stats(),
                e.is_paused(),
                [j.id for j in listed], corrupt,
                {s: e.ids_with_status(s) for s in JobStatus},
                {b: (e.batch_counts(b), [(x.id, _shown(self, x.job), x.result)
                                         for x in e.batch_jobs(b, after=1, limit=4, results=True)])
                 for b in self.batches if e.batch_jobs(b, limit=1)},
            )

        mine, theirs = observe(self.lmdb), observe(self.pg)
        for what, a, b in zip(("jobs", "counts", "positions", "results", "requests", "cache", "paused",
                               "list", "corrupt", "by status", "batches"), mine, theirs):
            assert a == b, what


def _shown(twin: Twin, job: Job | None) -> Any:
    """Everything a job record holds, its lease as "live" or "dead" and not its token (each
    engine draws its own)."""
    if not isinstance(job, Job):
        return job
    owner = None
    if job.lease is not None:
        owner = "dead" if job.lease.owner == DEAD else "live" if job.lease.owner in twin.live.values() else "?"
    return repr(job.evolve(lease=None)), owner


@pytest.mark.parametrize("seed", range(6))
def test_postgresql_does_what_lmdb_does(seed: int, pg_store_url: str, tmp_path: Path) -> None:
    rng = random.Random(seed)
    with open_store(tmp_path / "lmdb") as lmdb, open_store(pg_store_url) as pg:
        twin = Twin(lmdb, pg, rng)
        operations = [twin.submit] * 4 + [twin.claim] * 3 + [twin.settle] * 3 + \
            [twin.cancel, twin.retry, twin.reclaim, twin.clean, twin.pause, twin.cache_clear] + [twin.tick] * 2
        for _ in range(150):
            rng.choice(operations)()
            twin.compare()
        assert lmdb.check() == [] and pg.check() == []
