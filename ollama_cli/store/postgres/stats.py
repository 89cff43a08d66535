"""Statistics on PostgreSQL: the hour buckets of `store/buckets.py` as rows, one per (hour,
kind, model, group, shard), their sums a jsonb object, updated in the transaction that records
a job's end (`states.save`) or its rating (`feedback`): one statement, two rows, per job.

Sharded as `counts` is (schema.py says why): a writer adds to the rows of its session's
shard, so two daemons finishing jobs of one model in one hour do not queue on one row, and
each statement adds its rows in key order, so writers never lock two rows in opposite orders
through it. A reader sums the shards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ollama_cli.codec import unpack
from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import Job, result_stats
from ollama_cli.store import buckets

if TYPE_CHECKING:
    from ollama_cli.store.postgres.transactions import Tx

SHARDS = 16

# Field by field: the old sums plus the deltas, fields that come to zero left out.
_ADD = ("INSERT INTO stats (hour, kind, model, grp, shard, f) "
        "SELECT h, k, m, g, pg_backend_pid() %% {shards}, f FROM unnest(%s::integer[], %s::text[], %s::text[], "
        "%s::text[], %s::jsonb[]) AS d(h, k, m, g, f) ORDER BY h, k, m, g "
        "ON CONFLICT (hour, kind, model, grp, shard) DO UPDATE SET f = (SELECT coalesce(jsonb_object_agg(key, n), "
        "'{{}}') FROM (SELECT key, sum(value::float8) AS n FROM (SELECT * FROM jsonb_each_text(stats.f) UNION ALL "
        "SELECT * FROM jsonb_each_text(EXCLUDED.f)) AS e GROUP BY key HAVING abs(sum(value::float8)) > 1e-9) AS t)"
        ).format(shards=SHARDS)


def apply(tx: Tx, old: Job | None, new: Job, stats: dict[str, int] | None) -> None:
    """Add what `new` adds to its buckets, less what `old` added (None: it just finished)."""
    import json

    rows = [(hour, kind, model, group, json.dumps(deltas))
            for (hour, kind, model, group), deltas in buckets.changes(old, new, stats)]
    if rows:
        tx.cur.execute(_ADD, [list(column) for column in zip(*rows)])


def result_figures(tx: Tx, job_id: int) -> dict[str, int]:
    found = tx.one("SELECT body FROM results WHERE id = %s", (job_id,))
    try:
        return result_stats(unpack(job_id, bytes(found[0]))) if found is not None else {}
    except CorruptRecord:
        return {}


def read(tx: Tx, since_hour: int | None) -> list[buckets.Bucket]:
    found = tx.all("SELECT hour, kind, model, grp, f FROM stats WHERE hour >= %s ORDER BY hour, kind, model, grp",
                   (since_hour if since_hour is not None else -2**31,))
    out: dict[tuple[Any, ...], buckets.Bucket] = {}
    for hour, kind, model, group, fields in found:
        key = (hour, kind, model, group)
        if key not in out:
            out[key] = buckets.Bucket(hour, kind, model, group, {})
        buckets.merge(out[key].fields, {k: v for k, v in fields.items() if type(v) in (int, float)})
    return [b for b in out.values() if b.fields]


def feedback(tx: Tx, job_id: int, score: float, reason: str | None, category: str | None) -> Job:
    """`Engine.feedback`, in this transaction."""
    from ollama_cli.errors import NotFound, OperationFailed
    from ollama_cli.jobs import JobStatus
    from ollama_cli.store.postgres.rows import COLUMNS, to_job

    found = tx.one(f"SELECT {COLUMNS} FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
    if found is None:
        raise NotFound(f"no job {job_id}")
    job = to_job(found)
    if job.status is not JobStatus.COMPLETED:
        raise OperationFailed(f"job {job_id} is {job.status.value}: only a completed job can be rated")
    category = category or job.category
    rated = job.evolve(category=category, feedback=(score, reason, category))
    apply(tx, job, rated, result_figures(tx, job_id))
    tx.cur.execute("UPDATE jobs SET category = %s, feedback_score = %s, feedback_reason = %s, "
                   "feedback_category = %s WHERE id = %s", (category, score, reason, category, job_id))
    return rated
