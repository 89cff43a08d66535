"""Questions about the queue, answered from one transaction: records, counts, places in
the queue, lists, batches. Nothing here writes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ollama_cli.codec import decode_job, unpack
from ollama_cli.errors import CorruptRecord, NotFound
from ollama_cli.jobs import Job, JobStatus, JobType, Priority, full_name
from ollama_cli.queue.indexes import COUNT, PENDING, RANK, READY_COUNT, RUNNING, batch_prefix, get_job, ready_key
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

    A place is 1 + the ready keys below the job's: the counters give those of higher
    priorities, and a walk of its own priority's keys gives the rest, from whichever end of
    the run is nearer the jobs asked for (ids estimate the distance). `list` asks for the
    newest jobs, at the far end: their places cost a few steps, not the whole queue."""
    due = sorted(_due_keys(tx, now))
    due_set = set(due)
    by_rank: dict[bytes, list[tuple[bytes, int]]] = {}
    for job in jobs:
        if job.status is PENDING:
            key = ready_key(job)
            if key in due_set or tx.get("ready", key) is not None:
                by_rank.setdefault(key[:1], []).append((key, job.id))
    found: dict[int, int] = {}
    if not by_rank:
        return found
    import bisect

    ahead_of_rank = 0
    for p in Priority:  # ranks in ascending order
        rank, in_rank = RANK[p], tx.counter(READY_COUNT[p])
        wanted = sorted(by_rank.get(rank, ()))
        if wanted:
            below = _ready_below(tx, rank, in_rank, [k for k, _ in wanted])
            for (key, job_id), n in zip(wanted, below):
                found[job_id] = ahead_of_rank + n + bisect.bisect_left(due, key) + 1
        ahead_of_rank += in_rank
    return found


def _ready_below(tx: Tx, rank: bytes, in_rank: int, keys: list[bytes]) -> list[int]:
    """For each of `keys` (sorted, all of priority `rank`), how many `ready` keys of that rank
    are below it; `in_rank` is their number."""
    first = next(tx.scan("ready", rank), None)
    last = next(tx.scan("ready", rank, reverse=True), None)
    if first is None or last is None:
        return [0] * len(keys)
    # Walk from the start up to the highest key asked, or from the end down to the lowest.
    if read_u64(keys[-1], 1) - read_u64(first[0], 1) <= read_u64(last[0], 1) - read_u64(keys[0], 1):
        out, n, i = [], 0, 0
        for k, _ in tx.scan("ready", rank):
            while i < len(keys) and keys[i] <= k:
                out.append(n)
                i += 1
            if i == len(keys):
                break
            n += 1
        return out + [n] * (len(keys) - len(out))
    out, n, i = [], 0, len(keys) - 1  # n: keys at or above keys[i]
    for k, _ in tx.scan("ready", rank, reverse=True):
        while i >= 0 and keys[i] > k:
            out.append(in_rank - n)
            i -= 1
        if i < 0:
            break
        n += 1
    out += [in_rank - n] * (i + 1)
    return out[::-1]


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
    for job_id in _ids_newest_first(tx, tuple(wanted), batch, before):
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
                      before: int | None) -> Iterator[int]:
    below = None if before is None else u64(before - 1)  # the highest id wanted, as a key
    if batch:
        prefix = batch_prefix(batch)
        for key, _ in tx.scan("batches", prefix, reverse=True, start=below and prefix + below):
            yield read_u64(key, len(prefix))
    elif statuses:
        # Merge the per-status index runs, each already in id order.
        import heapq

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
