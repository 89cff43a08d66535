"""LMDB's queue is the reference model of the PostgreSQL engine: the same random sequences of
operations on both must leave every observable equal after every step (each job's JSON,
positions, counts, results, cache figures)."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from ollama_cli import cache, queue
from ollama_cli.errors import UsageError
from ollama_cli.jobs import ErrorType, Job, JobError, JobType, Priority
from ollama_cli.store.base import JobSpec, Placement, Plan, Settle, SettleKind
from ollama_cli.store.lmdb import Store
from ollama_cli.store.postgres.engine import PostgresEngine

DEAD = "gone-1-5"  # an owner whose lock nobody holds: dead to both engines


class Twin:
    """One operation, applied to both engines; `compare` checks they agree."""

    def __init__(self, lmdb: Store, pg: PostgresEngine, rng: random.Random, live: str) -> None:
        self.lmdb, self.pg, self.rng, self.live = lmdb, pg, rng, live
        self.now = 1_000_000.0
        self.tokens: dict[int, tuple[str, str]] = {}  # running job -> (its LMDB token, its PostgreSQL token)
        self.ids: list[int] = []

    def spec(self) -> JobSpec:
        rng = self.rng
        after = tuple(sorted(rng.sample(self.ids, 1))) if self.ids and rng.random() < 0.2 else ()
        return JobSpec(model=rng.choice("ab"), type=JobType.GENERATE, request={"prompt": rng.choice("xyz")},
                       priority=rng.choice(list(Priority)), max_attempts=rng.choice((1, 2, 3)),
                       run_at=self.now + rng.choice((5, 20)) if rng.random() < 0.2 else None, after=after)

    def submit(self) -> None:
        specs = [self.spec() for _ in range(self.rng.randint(1, 3))]
        try:
            mine = self.lmdb.write(lambda tx: queue.submit_many(
                tx, [queue.JobSpec(**s._asdict()) for s in specs], self.now))
        except UsageError as exc:  # a dependency cleaned away: refused by both, nothing written
            with pytest.raises(UsageError, match=re.escape(exc.message)):
                self.pg.submit_many(specs, self.now)
            return
        theirs = self.pg.submit_many(specs, self.now)
        assert [j.id for j in mine] == [j.id for j in theirs]
        self.ids += [j.id for j in mine]

    def claim(self) -> None:
        n, owner = self.rng.randint(1, 3), self.rng.choice((self.live, DEAD))

        def take(tx: Any) -> list[Any]:
            return queue.take(tx, list(queue.ready_candidates(tx, self.now, limit=n))[:n], owner, self.now)

        mine = self.lmdb.write(take)

        def plan(candidates: Any, request: Any) -> Plan:
            return Plan([Placement(0, "h", tuple(list(candidates)[:n]))])

        tick = self.pg.settle_and_claim([], self.now, owner=owner, planner=plan, lookahead=n)
        theirs = [c for _, claims in tick.claimed for c in claims]
        assert [c.job.id for c in mine] == [c.job.id for c in theirs]
        for a, b in zip(mine, theirs):
            self.tokens[a.job.id] = (a.job.lease.token, b.job.lease.token)

    def settle(self) -> None:
        if not self.tokens:
            return
        job_id = self.rng.choice(sorted(self.tokens))
        mine_token, their_token = self.tokens.pop(job_id)
        kind = self.rng.choice(list(SettleKind))
        error = JobError(ErrorType.UNREACHABLE, "down")
        retry_after = self.rng.choice((None, 3.0))
        result = {"response": f"answer {job_id}"}
        if kind is SettleKind.COMPLETE:
            mine = self.lmdb.write(lambda tx: queue.complete(tx, job_id, mine_token, result, self.now))
        elif kind is SettleKind.FAIL:
            mine = self.lmdb.write(lambda tx: queue.fail_attempt(tx, job_id, mine_token, error, self.now,
                                                                 retry_after=retry_after)) is not None
        else:
            mine = self.lmdb.write(lambda tx: queue.release(tx, job_id, mine_token, self.now))
        (theirs,) = self.pg.settle_and_claim([Settle(kind, job_id, their_token, result=result, error=error,
                                                     retry_after=retry_after)], self.now, owner="x").settled
        assert bool(mine) == (theirs is not None)

    def cancel(self) -> None:
        if self.ids:
            job_id = self.rng.choice(self.ids)
            self.lmdb.write(lambda tx: queue.cancel(tx, job_id, self.now))
            self.pg.cancel([job_id], self.now)

    def retry(self) -> None:
        if self.ids:
            job_id = self.rng.choice(self.ids)
            self.lmdb.write(lambda tx: queue.retry(tx, job_id, self.now))
            self.pg.retry([job_id], self.now)

    def reclaim(self) -> None:
        mine = self.lmdb.write(lambda tx: queue.reclaim(tx, {DEAD}, self.now))
        theirs = self.pg.reclaim(self.now)
        assert sorted(j.id for j in mine) == sorted(j.id for j in theirs)
        for job in mine:
            self.tokens.pop(job.id, None)

    def clean(self) -> None:
        from ollama_cli.jobs import JobStatus

        statuses = (JobStatus.COMPLETED, JobStatus.CANCELLED)
        mine = self.lmdb.write(lambda tx: queue.clean(tx, statuses, self.now, older_than=10))
        assert mine == self.pg.clean(statuses, self.now, older_than=10)

    def tick(self) -> None:
        self.now += self.rng.choice((1.0, 4.0))

    def compare(self) -> None:
        with self.lmdb.read() as tx:
            mine = [queue.get_job(tx, i) for i in self.ids]
            counts = queue.counts(tx)
            positions = queue.positions(tx, [j for j in mine if j], self.now)
            results = {j.id: queue.get_result(tx, j.id) for j in mine if j and j.status.value == "completed"}
            stats = cache.stats(tx)
        theirs = self.pg.get_jobs(self.ids)
        # The host a job ran on: the interface records the placement's, LMDB's take of today none.
        assert [_shown(j) for j in mine] == [_shown(j) for j in theirs]
        assert counts == self.pg.counts()
        assert positions == self.pg.positions([j for j in theirs if isinstance(j, Job)], self.now)
        assert results == {i: self.pg.get_result(i) for i in results}
        assert stats == self.pg.cache_stats()


def _shown(job: Job | Any) -> Any:
    if not isinstance(job, Job):
        return job
    out = job.to_json()
    out.pop("host")
    return out, job.retry_at, job.cache_key, job.lease.owner if job.lease else None


@pytest.mark.parametrize("seed", range(4))
def test_postgresql_does_what_lmdb_does(seed: int, pg_store_url: str, tmp_path: Path) -> None:
    rng = random.Random(seed)
    with Store(tmp_path / "lmdb") as lmdb, PostgresEngine(pg_store_url) as pg:
        live = pg.daemon_lock().id
        twin = Twin(lmdb, pg, rng, live)
        operations = [twin.submit] * 4 + [twin.claim] * 3 + [twin.settle] * 3 + \
            [twin.cancel, twin.retry, twin.reclaim, twin.clean] + [twin.tick] * 2
        for _ in range(120):
            rng.choice(operations)()
            twin.compare()
        assert pg.check() == []
