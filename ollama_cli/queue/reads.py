"""Questions about the queue, answered from one transaction: records, counts, places in
the queue, lists, batches. Nothing here writes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ollama_cli.codec import decode_job, unpack
from ollama_cli.errors import CorruptRecord, NotFound
from ollama_cli.jobs import Job, JobStatus, JobType, Priority, full_name
from ollama_cli.queue.indexes import (
    BIG, COUNT, PENDING, RANK, READY_COUNT, RUNNING, SMALL, batch_prefix, block_count_names, get_job, in_step,
    model_digest, ready_key,
)
from ollama_cli.store.keys import read_u64, u64

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx
    from ollama_cli.store.records import BatchEntry


def get_request(tx: Tx, job_id: int) -> dict[str, Any]:
    raw = tx.get("requests", u64(job_id))
    return {} if raw is None else unpack(job_id, raw)


def get_result(tx: Tx, job_id: int) -> dict[str, Any] | None:
    raw = tx.get("results", u64(job_id))
    return None if raw is None else unpack(job_id, raw)


def counts(tx: Tx) -> dict[str, int]:
    """Jobs per status, from counters kept beside the records: O(1) at any size."""
    out = {s.value: tx.counter(COUNT[s]) for s in JobStatus}
    out["total"] = sum(out.values())
    return out


def is_paused(tx: Tx) -> bool:
    return tx.get("meta", b"paused") == b"1"


def positions(tx: Tx, jobs: Iterable[Job], now: float) -> dict[int, int]:
    """1-based places among ready jobs, in the order they start, of those of `jobs` that are
    ready. A delayed job whose time has come is ready, though no daemon has moved it yet.

    Ready jobs ahead of a job are counted from counters (those of more urgent priorities,
    of the blocks of 2^20 and then 2^10 ids before its own) plus a walk of its block from
    the nearer end: at most 1,023 steps at any depth, a few for the newest jobs (which
    `list` and `submit` show); jobs in one block share a walk. Plus the due jobs not yet
    moved to `ready`."""
    import bisect

    keys = sorted(ready_key(j) for j in jobs if j.status is PENDING)
    if not keys:
        return {}
    due_set = _due_keys(tx, now)
    due = sorted(due_set)
    counted = in_step(tx)
    found: dict[int, int] = {}
    blocks: dict[tuple[int, int], list[bytes]] = {}
    for key in keys:
        blocks.setdefault((key[0], read_u64(key, 1) >> SMALL), []).append(key)
    for (rank, block), wanted in blocks.items():
        base = _ready_before(tx, rank, block, counted)
        prefix, start, end = bytes([rank]), block << SMALL, ((block + 1) << SMALL) - 1
        in_block = tx.counter(block_count_names(rank, start)[0]) if counted else 0
        from_end = False
        if in_block:  # ids of the block's first and last keys estimate the distances
            low = next(tx.scan("ready", prefix, start=prefix + u64(start)), None)
            high = next(tx.scan("ready", prefix, start=prefix + u64(end), reverse=True), None)
            if low is not None and high is not None:
                from_end = read_u64(high[0], 1) - read_u64(wanted[0], 1) < \
                    read_u64(wanted[-1], 1) - read_u64(low[0], 1)
        if from_end:  # walk down to the lowest key wanted; the block's count gives the rest
            above = []
            for k, _ in tx.scan("ready", prefix, start=prefix + u64(end), reverse=True):
                if k < wanted[0]:
                    break
                above.append(k)
            above.reverse()
            ready_keys, below = set(above), [in_block - (len(above) - bisect.bisect_left(above, k)) for k in wanted]
        else:
            walked = []
            for k, _ in tx.scan("ready", prefix, start=prefix + u64(start)):
                if k > wanted[-1]:
                    break
                walked.append(k)
            ready_keys, below = set(walked), [bisect.bisect_left(walked, k) for k in wanted]
        for key, n in zip(wanted, below):
            if key in ready_keys or key in due_set:
                found[read_u64(key, 1)] = base + n + bisect.bisect_left(due, key) + 1
    return found


def _ready_before(tx: Tx, rank: int, block: int, counted: bool) -> int:
    """Ready jobs ahead of the first id of this block of 2^10 ids of this rank."""
    ahead = sum(tx.counter(READY_COUNT[p]) for p in Priority if p.rank < rank)
    start = bytes([rank]) + u64(block << SMALL)
    if not counted:  # a store written by a version that does not keep the block counts
        return ahead + sum(1 for _ in _until(tx.scan("ready", start[:1]), start))
    big = block << SMALL >> BIG
    for name, first, last in ((f"rB/{rank}/", "", f"{big:08x}"),
                              (f"rb/{rank}/", f"{big << (BIG - SMALL):012x}", f"{block:012x}")):
        prefix = name.encode()
        for _, value in _until(tx.scan("meta", prefix, start=prefix + first.encode()), prefix + last.encode()):
            ahead += read_u64(value)
    return ahead


def _until(entries: Iterator[tuple[bytes, bytes]], stop: bytes) -> Iterator[tuple[bytes, bytes]]:
    for key, value in entries:
        if key >= stop:
            return
        yield key, value


def _due_keys(tx: Tx, now: float) -> set[bytes]:
    """Ready keys of waiting jobs whose time has come: a daemon moves them to `ready`
    when it next claims, and a read-only command cannot. While no daemon claims (none
    runs, the queue is paused, or every slot is busy) they pile up, so each entry
    carries its job's rank and needs no decoding."""
    limit = u64(int(now * 1000) + 1)
    keys = set()
    for key, rank in tx.scan("waiting"):
        if key[:8] >= limit:
            break
        if not rank:  # written before entries carried the rank
            try:
                job = get_job(tx, read_u64(key, 8))
            except CorruptRecord:
                continue
            if job is None or job.status is not PENDING:
                continue
            rank = RANK[job.priority]
        keys.add(rank + key[8:])
    return keys


def list_jobs(
    tx: Tx,
    *,
    statuses: Iterable[JobStatus] = (),
    model: str | None = None,
    job_type: JobType | None = None,
    batch: str | None = None,
    name: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    before: int | None = None,
) -> tuple[list[Job], list[CorruptRecord]]:
    """Jobs newest first (ids below `before`, if given), walking an index rather than every
    record where a filter allows it; `model` matches as `full_name` compares names. Corrupt
    records are returned apart, never raised."""
    jobs: list[Job] = []
    corrupt: list[CorruptRecord] = []
    if (limit is not None and limit <= 0) or (before is not None and before <= 1):
        return jobs, corrupt
    wanted = set(statuses)
    model = full_name(model) if model else None
    skipped = 0
    for job_id in _ids_newest_first(tx, tuple(wanted), batch, before, model):
        raw = tx.get("jobs", u64(job_id))
        if raw is None:
            continue
        try:
            job = decode_job(job_id, raw)
        except CorruptRecord as exc:
            corrupt.append(exc)
            continue
        if (model and full_name(job.model) != model) or (job_type and job.type is not job_type):
            continue
        if (batch and job.batch != batch) or (wanted and job.status not in wanted):
            continue
        if name is not None and job.name != name:
            continue
        if skipped < offset:
            skipped += 1
            continue
        jobs.append(job)
        if limit is not None and len(jobs) >= limit:
            break
    return jobs, corrupt


def _ids_newest_first(tx: Tx, statuses: tuple[JobStatus, ...], batch: str | None,
                      before: int | None, model: str | None) -> Iterator[int]:
    import heapq

    below = None if before is None else u64(before - 1)  # the highest id wanted, as a key
    if batch:
        prefix = batch_prefix(batch)
        for key, _ in tx.scan("batches", prefix, reverse=True, start=below and prefix + below):
            yield read_u64(key, len(prefix))
    elif statuses == (PENDING,) and model and in_step(tx):
        # The model's runs of the per-model index, and the held jobs (read whole: a daemon
        # keeps them few), rather than every pending record decoded to find the model's.
        prefixes = [RANK[p] + model_digest(model) for p in Priority]
        runs = [(read_u64(k, 9) for k, _ in tx.scan("ready_model", prefix, reverse=True,
                                                     start=below and prefix + below)) for prefix in prefixes]
        held = [read_u64(k, 8) for k, _ in tx.scan("waiting")] + [read_u64(k) for k, _ in tx.scan("blocked")]
        held = sorted((i for i in held if before is None or i < before), reverse=True)
        yield from heapq.merge(*runs, held, reverse=True)
    elif statuses:
        # Merge the per-status index runs, each already in id order.
        runs = [
            (read_u64(k, 1) for k, _ in tx.scan("status", s.code, reverse=True, start=below and s.code + below))
            for s in dict.fromkeys(statuses)
        ]
        yield from heapq.merge(*runs, reverse=True)
    else:
        for key, _ in tx.scan("jobs", reverse=True, start=below):
            yield read_u64(key)


def running(tx: Tx) -> list[Job]:
    out = []
    for key, _ in tx.scan("status", RUNNING.code):
        job = get_job(tx, read_u64(key, 1))
        if job is not None:
            out.append(job)
    return out


def open_runs(tx: Tx) -> list[Job]:
    """Jobs that no longer run but hold the lease of a run still open (cancelled while it ran):
    as many as daemons have requests in flight at most."""
    out = []
    for key, _ in tx.scan("open_runs"):
        job = get_job(tx, read_u64(key))
        if job is not None:
            out.append(job)
    return out


def ids_with_status(tx: Tx, *statuses: JobStatus) -> list[int]:
    return [read_u64(k, 1) for s in statuses for k, _ in tx.scan("status", s.code)]


# ---------------------------------------------------------------------------- batches


def batch_exists(tx: Tx, name: str) -> bool:
    return next(tx.scan("batches", batch_prefix(name)), None) is not None


def batch_names(tx: Tx) -> list[str]:
    """Every batch's name, newest first: one seek per batch, from each name to the next (a
    name holds no NUL, so name + 1 sorts after every key of its batch)."""
    found: list[tuple[int, str]] = []
    start = b""
    while (entry := next(tx.scan("batches", start=start), None)) is not None:
        cut = entry[0].index(b"\x00")
        name = entry[0][:cut]
        found.append((read_u64(entry[0], cut + 1), name.decode()))
        start = name + b"\x01"
    return [name for _, name in sorted(found, reverse=True)]


def batch_jobs(tx: Tx, name: str, *, after: int = 0, limit: int | None = None,
               results: bool = False) -> list[BatchEntry]:
    """The batch's jobs in id order from the first id greater than `after`."""
    from ollama_cli.store.records import BatchEntry

    prefix = batch_prefix(name)
    out: list[BatchEntry] = []
    if limit is not None and limit <= 0:
        return out
    for key, _ in tx.scan("batches", prefix, start=prefix + u64(after + 1)):
        job_id = read_u64(key, len(prefix))
        try:
            job = get_job(tx, job_id)
            result = get_result(tx, job_id) if results and job is not None and \
                job.status is JobStatus.COMPLETED else None
        except CorruptRecord as exc:
            out.append(BatchEntry(job_id, None, corrupt=exc))
        else:
            out.append(BatchEntry(job_id, job, result))
        if limit is not None and len(out) >= limit:
            break
    return out


def batch_counts(tx: Tx, name: str) -> dict[str, Any]:
    """`{"batch", "total", <each status>: n}`; NotFound if the batch has no entry at all.
    A job that cannot be decoded is not counted."""
    counts: dict[str, Any] = {"batch": name, "total": 0, **{s.value: 0 for s in JobStatus}}
    entries = batch_jobs(tx, name)
    if not entries:
        raise NotFound(f"batch {name!r} not found")
    for entry in entries:
        if entry.job is not None:
            counts[entry.job.status.value] += 1
            counts["total"] += 1
    return counts
