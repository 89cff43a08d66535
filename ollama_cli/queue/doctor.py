"""Every invariant of `indexes.py`, re-derived from the job records up: what the tests check
after each scenario and each crash, and what a `doctor` command can report.

`check` reads only, and reports each disagreement as one line; it never raises on what it
finds (a record that does not decode is a problem like any other)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from ollama_cli.cache import entries as cache_entries
from ollama_cli.codec import decode_job, unpack
from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import Job, JobStatus, JobType, Priority
from ollama_cli.queue.indexes import (
    COUNT, COMPLETED, DERIVED, EMBED, PENDING, READY_COUNT, RUNNING, batch_prefix, block_count_names,
    hold_until, model_count_name, model_digest, open_run, time_key,
)
from ollama_cli.store.keys import read_u64, u64

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx

_STATUS_OF_CODE = {s.code[0]: s for s in JobStatus}


def check(tx: Tx) -> list[str]:
    """Every disagreement between the job records and the indexes and counters kept beside
    them, one line each; [] for a sound store."""
    problems: list[str] = []
    jobs, unreadable = _records(tx, problems)
    known = jobs.keys() | unreadable
    _check_status_index(tx, jobs, known, problems)
    _check_pending_indexes(tx, jobs, known, problems)
    _check_ready_by_model(tx, jobs, problems)
    _check_links(tx, jobs, known, unreadable, problems)
    _check_records(tx, jobs, known, problems)
    _check_partials(tx, jobs, problems)
    problems += cache_entries.check(tx)
    return problems


def _check_partials(tx: Tx, jobs: dict[int, Job], problems: list[str]) -> None:
    """Streamed text is kept only for a running job, under the lease it runs under."""
    for key, raw in tx.scan("partials"):
        job_id = read_u64(key)
        job = jobs.get(job_id)
        try:
            token = unpack(key, raw).get("token")
        except (CorruptRecord, AttributeError):
            token = None
        if job is None or job.status is not JobStatus.RUNNING or job.lease is None or job.lease.token != token:
            problems.append(f"job {job_id}: partial output kept, but no run of it that wrote it is going on")


def _records(tx: Tx, problems: list[str]) -> tuple[dict[int, Job], set[int]]:
    jobs: dict[int, Job] = {}
    unreadable: set[int] = set()
    for key, raw in tx.scan("jobs"):
        job_id = read_u64(key)
        try:
            job = decode_job(job_id, raw)
        except CorruptRecord as exc:
            problems.append(f"job {job_id}: {exc.message}")
            unreadable.add(job_id)
            continue
        if job.id != job_id:
            problems.append(f"job {job_id}: its record says it is job {job.id}")
        jobs[job_id] = job
    return jobs, unreadable


def _check_status_index(tx: Tx, jobs: dict[int, Job], known: set[int], problems: list[str]) -> None:
    indexed: dict[int, list[JobStatus]] = defaultdict(list)
    per_status: Counter[JobStatus] = Counter()
    for key, _ in tx.scan("status"):
        status = _STATUS_OF_CODE.get(key[0])
        job_id = read_u64(key, 1)
        if status is None:
            problems.append(f"status index: entry of job {job_id} under unknown code {key[0]}")
            continue
        per_status[status] += 1
        indexed[job_id].append(status)
        if job_id not in known:
            problems.append(f"status index: job {job_id} ({status.value}) does not exist")
    for job in jobs.values():
        if indexed.get(job.id) != [job.status]:
            found = ", ".join(s.value for s in indexed.get(job.id, [])) or "nothing"
            problems.append(f"job {job.id}: {job.status.value}, but the status index says {found}")
    for status in JobStatus:
        if tx.counter(COUNT[status]) != per_status[status]:
            problems.append(f"counter {COUNT[status]} is {tx.counter(COUNT[status])}, "
                            f"the status index holds {per_status[status]}")
    total = sum(tx.counter(COUNT[s]) for s in JobStatus)
    if total != len(known):
        problems.append(f"the counters add up to {total} jobs, the store holds {len(known)}")


def _check_pending_indexes(tx: Tx, jobs: dict[int, Job], known: set[int], problems: list[str]) -> None:
    """Each pending job in exactly one of ready / waiting / blocked / open runs, once, under
    the right key; nothing else in the first three; open runs exactly the jobs that keep one."""
    places: dict[int, list[str]] = defaultdict(list)
    per_rank: Counter[int] = Counter()
    for key, _ in tx.scan("ready"):
        job_id, rank = read_u64(key, 1), key[0]
        places[job_id].append("ready")
        per_rank[rank] += 1
        job = jobs.get(job_id)
        if job is not None and job.priority.rank != rank:
            problems.append(f"job {job_id}: ready under rank {rank}, its priority is {job.priority.value}")
        if job is not None and job.status is PENDING:
            for dep_id in job.after:
                dep = jobs.get(dep_id)
                if dep is not None and dep.status is not COMPLETED:
                    problems.append(f"job {job_id}: ready, but its dependency {dep_id} is {dep.status.value}")
    for key, rank in tx.scan("waiting"):
        job_id = read_u64(key, 8)
        places[job_id].append("waiting")
        job = jobs.get(job_id)
        if job is None:
            continue
        hold = hold_until(job)
        if hold is None or key[:8] != time_key(hold):
            problems.append(f"job {job_id}: waiting until {read_u64(key)} ms, its record holds it until "
                            f"{None if hold is None else read_u64(time_key(hold))}")
        if rank not in (b"", bytes([job.priority.rank])):  # no rank: written by an earlier version
            problems.append(f"job {job_id}: its waiting entry holds rank {rank!r}, its priority is "
                            f"{job.priority.value}")
    for key, _ in tx.scan("blocked"):
        job_id = read_u64(key)
        places[job_id].append("blocked")
        job = jobs.get(job_id)
        if job is not None and job.status is PENDING and \
                all(jobs[d].status is COMPLETED for d in job.after if d in jobs):
            problems.append(f"job {job_id}: blocked, but none of its dependencies is unfinished")
    runs = {read_u64(k) for k, _ in tx.scan("open_runs")}
    for job_id in runs:
        job = jobs.get(job_id)
        if job_id not in known:
            problems.append(f"open runs index: job {job_id} does not exist")
        elif job is not None and not open_run(job):
            problems.append(f"job {job_id}: in the open runs index, but {job.status.value} "
                            f"with{'' if job.lease else 'out'} a lease")
        elif job is not None and job.status is PENDING:
            places[job_id].append("open runs")
    for job_id, where in places.items():
        job = jobs.get(job_id)
        if job_id not in known:
            problems.append(f"{' and '.join(where)} index: job {job_id} does not exist")
        elif job is not None and job.status is not PENDING:
            problems.append(f"job {job_id}: {job.status.value}, but in the {' and '.join(where)} index")
        elif len(where) > 1:
            problems.append(f"job {job_id}: pending, in more than one place: {', '.join(where)}")
    for job in jobs.values():
        if job.status is PENDING and job.id not in places:
            problems.append(f"job {job.id}: pending, but in none of ready, waiting, blocked, open runs")
        if open_run(job) and job.id not in runs:
            problems.append(f"job {job.id}: {job.status.value} with the lease of a run, "
                            "but not in the open runs index")
    for p in Priority:
        if tx.counter(READY_COUNT[p]) != per_rank[p.rank]:
            problems.append(f"counter {READY_COUNT[p]} is {tx.counter(READY_COUNT[p])}, "
                            f"the ready index holds {per_rank[p.rank]}")


def _check_ready_by_model(tx: Tx, jobs: dict[int, Job], problems: list[str]) -> None:
    """`ready_model` holds what `ready` holds, by model, and the counts beside them (per
    model, per block of ids) count it."""
    wanted: dict[bytes, bytes] = {}
    counts: Counter[str] = Counter()
    for key, _ in tx.scan("ready"):
        job = jobs.get(read_u64(key, 1))
        if job is None:
            continue
        digest = model_digest(job.model)
        wanted[key[:1] + digest + key[1:]] = EMBED if job.type is JobType.EMBED else b""
        counts[model_count_name(key[0], digest)] += 1
        counts.update(block_count_names(key[0], job.id))
        if tx.get("ready_models", digest) is None:
            problems.append(f"job {job.id}: its model {job.model!r} is not in ready_models")
    held = dict(tx.scan("ready_model"))
    for key in sorted(wanted.keys() - held.keys()):
        problems.append(f"job {read_u64(key, 9)}: ready, but not in the per-model index")
    for key in sorted(held.keys() - wanted.keys()):
        problems.append(f"per-model index: job {read_u64(key, 9)} is not ready under that model and priority")
    for key in sorted(wanted.keys() & held.keys()):
        if held[key] != wanted[key]:
            problems.append(f"per-model index: job {read_u64(key, 9)} holds type {held[key]!r}")
    stored = {k.decode(): read_u64(v) for prefix in DERIVED for k, v in tx.scan("meta", prefix.encode())}
    for name in sorted(stored.keys() | counts.keys()):
        if stored.get(name, 0) != counts[name]:
            problems.append(f"counter {name} is {stored.get(name, 0)}, the ready index holds {counts[name]}")


def _check_links(tx: Tx, jobs: dict[int, Job], known: set[int], unreadable: set[int],
                 problems: list[str]) -> None:
    """The dependents and batches indexes say what the records say."""
    links = {(read_u64(k), read_u64(k, 8)) for k, _ in tx.scan("dependents")}
    wanted = {(d, j.id) for j in jobs.values() for d in j.after if d in known}
    for dep_id, job_id in sorted(wanted - links):
        problems.append(f"job {job_id}: depends on {dep_id}, but the dependents index does not say so")
    for dep_id, job_id in sorted(links - wanted):
        if job_id not in unreadable:
            problems.append(f"dependents index: job {job_id} on {dep_id}, which its record does not say")
    entries = {k for k, _ in tx.scan("batches")}
    members = {batch_prefix(j.batch) + u64(j.id) for j in jobs.values() if j.batch}
    for key in sorted(members - entries):
        problems.append(f"job {read_u64(key, len(key) - 8)}: in batch {key[:-9].decode()!r}, "
                        "but not in the batches index")
    for key in sorted(entries - members):
        if read_u64(key, len(key) - 8) not in unreadable:
            problems.append(f"batches index: job {read_u64(key, len(key) - 8)} in batch "
                            f"{key[:-9].decode(errors='replace')!r}, which its record does not say")


def _check_records(tx: Tx, jobs: dict[int, Job], known: set[int], problems: list[str]) -> None:
    """Each record agrees with itself, and has its request (and, completed, its result)."""
    for job in jobs.values():
        if job.status is RUNNING and job.lease is None:
            problems.append(f"job {job.id}: running without a lease")
        if job.status is COMPLETED and job.lease is not None:
            problems.append(f"job {job.id}: completed with a lease")
        if (job.finished_at is not None) != job.status.finished:
            problems.append(f"job {job.id}: {job.status.value} with{'' if job.finished_at else 'out'} "
                            "a finish time")
    requests = {read_u64(k) for k, _ in tx.scan("requests")}
    results = {read_u64(k) for k, _ in tx.scan("results")}
    for job_id in sorted(known - requests):
        problems.append(f"job {job_id}: no request stored")
    for job_id in sorted(requests - known):
        problems.append(f"request of job {job_id}, which does not exist")
    for job_id in sorted(results):
        job = jobs.get(job_id)
        if job_id not in known:
            problems.append(f"result of job {job_id}, which does not exist")
        elif job is not None and job.status is not COMPLETED:
            problems.append(f"job {job_id}: {job.status.value}, but a result is stored")
    for job in jobs.values():
        if job.status is COMPLETED and job.id not in results:
            problems.append(f"job {job.id}: completed without a result")
    if tx.counter("next_id") < max(known, default=0):
        problems.append(f"counter next_id is {tx.counter('next_id')}, below job {max(known)}")
