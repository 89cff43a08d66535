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
from ollama_cli.store.postgres.schema import BLOCKS
from ollama_cli.store.postgres.states import COUNT, PENDING, READY, block_count_name
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
    """1-based places, in the order they start, of the wanted (rank, id) jobs that are
    ready or held with their time come. Ready jobs ahead of one are those of more urgent
    priorities (their counters), of its own priority in the blocks of 2^20, 2^15 and 2^10
    ids before its own (at most 31 blocks of each of the smaller sizes: schema.BLOCKS), and
    those of its 2^10 block before it, counted on the ready index from the nearer end of the
    block (from its far end, the block's counter less those after): at most 512 index
    entries, a few for the newest jobs (which `list` and `submit` show), at any depth. Held
    jobs whose time has come are counted one by one (a daemon soon makes them ready, so
    they are few)."""
    small = BLOCKS[-1]
    columns: dict[str, tuple[str, list[Any]]] = {
        k: (kind, []) for k, kind in (("id", "bigint"), ("rank", "bigint"), ("block_start", "bigint"),
                                      ("block_end", "bigint"), ("from_end", "boolean"))}
    for bits in BLOCKS:
        columns[f"lo{bits}"], columns[f"hi{bits}"] = ("text", []), ("text", [])
    for rank, job_id in wanted:
        start = job_id >> small << small
        for name, value in (("id", job_id), ("rank", rank), ("block_start", start),
                            ("block_end", start + (1 << small)), ("from_end", job_id - start >= 1 << (small - 1))):
            columns[name][1].append(value)
        for level, bits in enumerate(BLOCKS):  # the blocks before its own, inside its block of the level above
            first = job_id >> BLOCKS[level - 1] << (BLOCKS[level - 1] - bits) if level else 0
            columns[f"lo{bits}"][1].append(block_count_name(bits, rank, first))
            columns[f"hi{bits}"][1].append(block_count_name(bits, rank, job_id >> bits))
    blocks = " + ".join(f"(SELECT coalesce(sum(n), 0) FROM counts c WHERE c.name >= w.lo{b} AND c.name < w.hi{b})"
                        for b in BLOCKS)
    ready_in = ("(SELECT count(*) FROM jobs r WHERE r.state = 'ready' AND r.priority = w.rank "
                "AND r.id >= {} AND r.id < {})")
    in_block = (f"CASE WHEN w.from_end THEN (SELECT coalesce(sum(n), 0) FROM counts c WHERE c.name = w.hi{small}) "
                f"- {ready_in.format('w.id', 'w.block_end')} ELSE {ready_in.format('w.block_start', 'w.id')} END")
    found = tx.all(
        f"SELECT w.id, {blocks} + {in_block}, "
        f"  coalesce(j.state = 'ready' OR (j.state = 'waiting' AND j.available_at <= %(now)s), false) "
        f"FROM unnest({', '.join(f'%({k})s::{kind}[]' for k, (kind, _) in columns.items())}) "
        f"AS w({', '.join(columns)}) LEFT JOIN jobs j ON j.id = w.id",
        {**{k: values for k, (_, values) in columns.items()}, "now": now})
    ready = counters(tx, "ready/")
    due = sorted(tx.all("SELECT priority, id FROM jobs WHERE state = 'waiting' AND available_at <= %s", (now,)))
    rank_of = {job_id: rank for rank, job_id in wanted}
    out = {}
    for job_id, ahead, placed in found:
        if placed:
            rank = rank_of[job_id]
            higher = sum(ready.get(READY[r], 0) for r in range(rank))
            out[job_id] = 1 + higher + int(ahead) + bisect.bisect_left(due, (rank, job_id))
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
