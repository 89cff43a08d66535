"""Reads of jobs: one or many by id, their request and result bodies, lists, counts,
positions in the queue, and batches. Each is a function of a read transaction (the engine
runs several-statement ones in a snapshot)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

from ollama_cli.codec import unpack
from ollama_cli.errors import CorruptRecord, NotFound
from ollama_cli.jobs import Job, JobStatus, JobType, full_name
from ollama_cli.store.postgres import rows
from ollama_cli.store.postgres.rows import COLUMNS, STATES_OF, to_job
from ollama_cli.store.postgres.states import COUNT, PENDING, READY
from ollama_cli.store.postgres.transactions import Tx
from ollama_cli.store.records import BatchEntry


def get_job(tx: Tx, job_id: int) -> Job | None:
    found = tx.one(f"SELECT {COLUMNS} FROM jobs WHERE id = %s", (job_id,))
    return None if found is None else to_job(found)


def get_jobs(tx: Tx, wanted: list[int]) -> list[Job | CorruptRecord | None]:
    by_id: dict[int, Job | CorruptRecord] = {}
    for row in tx.all(f"SELECT {COLUMNS} FROM jobs WHERE id = ANY(%s)", (wanted,)):
        try:
            by_id[row[0]] = to_job(row)
        except CorruptRecord as exc:
            by_id[row[0]] = exc
    return [by_id.get(i) for i in wanted]


def get_request(tx: Tx, job_id: int) -> dict[str, Any]:
    found = tx.one("SELECT body FROM requests WHERE id = %s", (job_id,))
    return {} if found is None else unpack(job_id, found[0])


def get_result(tx: Tx, job_id: int) -> dict[str, Any] | None:
    found = tx.one("SELECT r.body FROM results r JOIN jobs j USING (id) WHERE id = %s AND j.state = 'completed'",
                   (job_id,))
    return None if found is None else unpack(job_id, found[0])


def list_jobs(tx: Tx, *, statuses: Iterable[JobStatus], model: str | None, job_type: JobType | None,
              batch: str | None, name: str | None, limit: int | None, offset: int,
              before: int | None) -> tuple[list[Job], list[CorruptRecord]]:
    if (limit is not None and limit <= 0) or (before is not None and before <= 1):
        return [], []
    where, params = ["true"], []
    states = [st for s in dict.fromkeys(statuses) for st in STATES_OF[s]]
    if states:
        where.append("state = ANY(%s)")
        params.append(states)
    if model:  # as jobs.full_name compares names: lower case, ":latest" unless a tag is given
        where.append("model_key = %s")
        params.append(full_name(model))
    for column, value in (("type", job_type.value if job_type else None), ("batch", batch)):
        if value:
            where.append(f"{column} = %s")
            params.append(value)
    if name is not None:
        where.append("name = %s")
        params.append(name)
    if before is not None:
        where.append("id < %s")
        params.append(before)
    sql = f"SELECT {COLUMNS} FROM jobs WHERE {' AND '.join(where)} ORDER BY id DESC OFFSET %s"
    params.append(max(0, offset))
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    jobs, corrupt = [], []
    for row in tx.all(sql, params):
        try:
            jobs.append(to_job(row))
        except CorruptRecord as exc:
            corrupt.append(exc)
    return jobs, corrupt


def counters(tx: Tx, prefix: str) -> dict[str, int]:
    """The counters whose names start with `prefix`, their shards summed."""
    return {name: int(n) for name, n in tx.all(
        "SELECT name, sum(n) FROM counts WHERE name LIKE %s GROUP BY name", (prefix + "%",))}


def counts(tx: Tx) -> dict[str, int]:
    found = counters(tx, "count/")
    out = {s.value: found.get(COUNT[s], 0) for s in JobStatus}
    out["total"] = sum(out.values())
    return out


def pending_keys(jobs: Iterable[Job]) -> list[tuple[int, int]]:
    """(priority rank, id) of the pending ones among `jobs`, in queue order: the jobs
    `positions` places."""
    return sorted({(j.priority.rank, j.id) for j in jobs if j.status is PENDING})


def positions(tx: Tx, wanted: list[tuple[int, int]], now: float) -> dict[int, int]:
    # Ready jobs of a wanted job's own priority are counted on the ready index between it
    # and the wanted job before it (each counted once, however many are wanted: a walk as
    # long as the queue ahead of the last one, read from the index alone); those of higher
    # priorities by the counters, and held jobs whose time has come one by one (a daemon
    # soon makes them ready, so they are few).
    previous = {rank: 0 for rank, _ in wanted}
    ranges = []
    for rank, job_id in wanted:
        ranges.append((job_id, rank, previous[rank]))
        previous[rank] = job_id
    ready = counters(tx, "ready/")
    due = sorted(tx.all("SELECT priority, id FROM jobs WHERE state = 'waiting' AND available_at <= %s", (now,)))
    found = tx.all(
        "SELECT w.id, (SELECT count(*) FROM jobs r WHERE r.state = 'ready' AND r.priority = w.rank "
        "  AND r.id >= w.after AND r.id < w.id), "
        "  coalesce(j.state = 'ready' OR (j.state = 'waiting' AND j.available_at <= %(now)s), false) "
        "FROM unnest(%(ids)s::bigint[], %(ranks)s::smallint[], %(after)s::bigint[]) AS w(id, rank, after) "
        "LEFT JOIN jobs j ON j.id = w.id",
        {"ids": [r[0] for r in ranges], "ranks": [r[1] for r in ranges], "after": [r[2] for r in ranges],
         "now": now})
    between = {job_id: (int(n), placed) for job_id, n, placed in found}
    out, walked = {}, dict.fromkeys(previous, 0)
    for job_id, rank, _ in ranges:  # in (priority, id) order
        n, placed = between[job_id]
        walked[rank] += n
        if placed:
            higher = sum(ready.get(READY[r], 0) for r in range(rank))
            out[job_id] = 1 + higher + walked[rank] + bisect.bisect_left(due, (rank, job_id))
    return out


def ids_with_status(tx: Tx, statuses: Iterable[JobStatus]) -> list[int]:
    return [r[0] for s in statuses for r in tx.all(
        "SELECT id FROM jobs WHERE state = ANY(%s) ORDER BY id", (list(STATES_OF[s]),))]


def batch_counts(tx: Tx, name: str) -> dict[str, Any]:
    found = tx.all("SELECT state, count(*) FROM jobs WHERE batch = %s GROUP BY state", (name,))
    if not found:
        raise NotFound(f"no batch named {name!r}")
    out: dict[str, Any] = {"batch": name, "total": 0, **{s.value: 0 for s in JobStatus}}
    for state, n in found:
        out[rows.STATUS_OF[state].value] += int(n)
        out["total"] += int(n)
    return out


def batch_jobs(tx: Tx, name: str, *, after: int, limit: int | None, results: bool) -> list[BatchEntry]:
    body = "r.body" if results else "NULL"
    sql = (f"SELECT {', '.join('j.' + c for c in COLUMNS.split(', '))}, {body} FROM jobs j "
           f"LEFT JOIN results r ON r.id = j.id AND j.state = 'completed' "
           f"WHERE j.batch = %s AND j.id > %s ORDER BY j.id")
    params: list[Any] = [name, after]
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    out = []
    for row in tx.all(sql, params):
        try:
            job = to_job(row[:-1])
            result = unpack(job.id, row[-1]) if row[-1] is not None else None
            out.append(BatchEntry(job.id, job, result))
        except CorruptRecord as exc:
            out.append(BatchEntry(row[0], None, corrupt=exc))
    return out


def batch_names(tx: Tx) -> list[str]:
    return [r[0] for r in tx.all(
        "SELECT batch FROM jobs WHERE batch IS NOT NULL GROUP BY batch ORDER BY min(id) DESC")]
