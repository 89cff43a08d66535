"""`doctor`'s look at the store: the counters against the rows they count, and the
invariants between jobs, results and dependencies."""

from __future__ import annotations

from ollama_cli.jobs import JobStatus
from ollama_cli.store.postgres import activity, partials, result_cache, schema
from ollama_cli.store.postgres.reads import counters
from ollama_cli.store.postgres.rows import STATES_OF
from ollama_cli.store.postgres.states import COUNT, FINISHED_STATES, READY
from ollama_cli.store.postgres.transactions import Tx

BLOCK_PREFIXES = {f"r{bits}/" for bits in schema.BLOCKS}


def check(tx: Tx) -> list[str]:
    problems = []
    counted = counters(tx, "")
    actual = dict(tx.all("SELECT state, count(*) FROM jobs GROUP BY state"))
    for status in JobStatus:
        n = sum(int(actual.get(st, 0)) for st in STATES_OF[status])
        if counted.get(COUNT[status], 0) != n:
            problems.append(f"count/{status.value} is {counted.get(COUNT[status], 0)}, the jobs say {n}")
    ready = dict(tx.all("SELECT priority, count(*) FROM jobs WHERE state = 'ready' GROUP BY priority"))
    for rank, name in READY.items():
        if counted.get(name, 0) != int(ready.get(rank, 0)):
            problems.append(f"{name} is {counted.get(name, 0)}, the jobs say {ready.get(rank, 0)}")
    blocks = {name: int(n) for name, n in tx.all(schema.READY_BY_BLOCK)}
    for name in sorted(blocks.keys() | {k for k in counted if k[:4] in BLOCK_PREFIXES}):
        if counted.get(name, 0) != blocks.get(name, 0):
            problems.append(f"{name} is {counted.get(name, 0)}, the jobs say {blocks.get(name, 0)}")
    problems += activity.check(tx, counted)
    problems += partials.check(tx)
    problems += result_cache.check(tx, counted)
    for (job_id,) in tx.all("SELECT id FROM jobs j WHERE state = 'completed' "
                            "AND NOT EXISTS (SELECT 1 FROM results r WHERE r.id = j.id)"):
        problems.append(f"job {job_id} completed without a result")
    for (job_id,) in tx.all("SELECT id FROM jobs WHERE (state IN %s) <> (finished_at IS NOT NULL)",
                            (FINISHED_STATES,)):
        problems.append(f"job {job_id}: finished_at does not match its state")
    for (job_id,) in tx.all(
            "SELECT id FROM jobs j WHERE cardinality(after) <> "
            "(SELECT count(*) FROM dependencies d WHERE d.child = j.id) "
            "AND NOT EXISTS (SELECT 1 FROM unnest(j.after) a WHERE NOT EXISTS "
            "(SELECT 1 FROM jobs p WHERE p.id = a))"):
        problems.append(f"job {job_id}: its dependencies are not all recorded")
    for (job_id,) in tx.all(
            "SELECT id FROM jobs j WHERE state = 'blocked' AND NOT EXISTS (SELECT 1 FROM jobs p "
            "WHERE p.id = ANY(j.after) AND p.state IN ('ready', 'waiting', 'blocked', 'running'))"):
        problems.append(f"job {job_id} is blocked, but no dependency of it is unfinished")
    return problems
