"""Jobs in: submits, alone or as a named batch, with their dependencies locked while they
are read, ids from the `serials` row, and a cache hit answered at once."""

from __future__ import annotations

from collections.abc import Sequence

from ollama_cli import cache
from ollama_cli.codec import pack
from ollama_cli.errors import UsageError
from ollama_cli.jobs import Job, JobSpec
from ollama_cli.store.postgres import result_cache, schema
from ollama_cli.store.postgres.states import COMPLETED, PENDING, save
from ollama_cli.store.postgres.transactions import Tx


def submit_batch(tx: Tx, specs: Sequence[JobSpec], now: float, name: str | None) -> tuple[str, list[Job]]:
    # Names are chosen one batch at a time: two batches asking for one name at once
    # must not both find it free.
    tx.cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (schema.LOCK_SPACE, schema.BATCH_LOCK))
    batch = name
    if batch is not None:
        if _batch_exists(tx, batch):
            raise UsageError(f"batch name {batch!r} is already used")
    else:
        while batch is None or _batch_exists(tx, batch):  # a user may have chosen such a name
            batch = f"batch-{_serial(tx, 'batch', 1)}"
    return batch, submit_many(tx, [s._replace(batch=batch) for s in specs], now)


def _serial(tx: Tx, name: str, n: int) -> int:
    """Count the serial up by n; its new value (locked until the transaction ends)."""
    return int(tx.one("UPDATE serials SET last = last + %s WHERE name = %s RETURNING last", (n, name))[0])


def _batch_exists(tx: Tx, name: str) -> bool:
    return tx.one("SELECT 1 FROM jobs WHERE batch = %s LIMIT 1", (name,)) is not None


def submit_many(tx: Tx, specs: Sequence[JobSpec], now: float) -> list[Job]:
    deps = sorted({d for s in specs for d in s.after})
    if deps:
        # Locked until we commit: a dependency cannot finish unseen meanwhile.
        present = {r[0] for r in tx.all("SELECT id FROM jobs WHERE id = ANY(%s) ORDER BY id FOR SHARE",
                                        (deps,))}
        for spec in specs:
            for dep in spec.after:
                if dep not in present:
                    raise UsageError(f"--after {dep}: no such job")
    if not specs:
        return []
    first = _serial(tx, "job", len(specs)) - len(specs) + 1
    return [_enqueue(tx, spec, job_id, now) for job_id, spec in enumerate(specs, start=first)]


def _enqueue(tx: Tx, spec: JobSpec, job_id: int, now: float) -> Job:
    key = cache.key_for(spec.model, spec.type.value, spec.request) if spec.use_cache else None
    job = Job(
        id=job_id, model=spec.model, type=spec.type, priority=spec.priority, status=PENDING,
        created_at=now, name=spec.name, batch=spec.batch, custom_id=spec.custom_id,
        max_attempts=spec.max_attempts, run_at=spec.run_at, after=spec.after, timeout=spec.timeout,
        keep_alive=spec.keep_alive, cache_key=key, category=spec.category, fallbacks=spec.fallbacks,
        route=spec.route, semantic=spec.semantic_cache and key is not None,
    )
    # A delayed or dependent job asked to run later, not to be answered now.
    hit = result_cache.lookup(tx, key, now) if key is not None and not spec.after and spec.run_at is None else None
    if hit is not None:
        job = job.evolve(status=COMPLETED, cached=True, cache_hit=("exact", hit[1], 1.0),
                         started_at=now, finished_at=now)
    stored = save(tx, None, job, now)
    tx.cur.execute("INSERT INTO requests (id, body) VALUES (%s, %s)", (job_id, pack(spec.request)))
    if hit is not None:
        tx.cur.execute("INSERT INTO results (id, body) VALUES (%s, %s)", (job_id, pack(hit[0])))
    if spec.after:
        tx.cur.execute("INSERT INTO dependencies (parent, child) SELECT unnest(%s::bigint[]), %s "
                       "ON CONFLICT DO NOTHING", (list(spec.after), job_id))
    return stored
