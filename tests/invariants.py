"""The store's invariants, checked from the records up (the `doctor` of the tests):
every job is indexed under its own status and nowhere else, the counters equal a
recount, every pending job sits in exactly one of ready / waiting / blocked, and no
index entry points at a job that is not there."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ollama_cli import queue
from ollama_cli.codec import decode_job
from ollama_cli.jobs import JobStatus, Priority
from ollama_cli.store.keys import read_u64, u64
from ollama_cli.store.lmdb import Store, Tx


def check_invariants(where: Store | Path) -> None:
    if isinstance(where, Store):
        with where.read() as tx:
            _check(tx)
    else:
        with Store(where) as store, store.read() as tx:
            _check(tx)


def _check(tx: Tx) -> None:
    jobs = {read_u64(k): decode_job(read_u64(k), v) for k, v in tx.scan("jobs")}
    by_status = Counter(j.status for j in jobs.values())
    for status in JobStatus:
        assert tx.counter(f"count/{status.value}") == by_status[status], status
    indexed = {(k[0], read_u64(k, 1)) for k, _ in tx.scan("status")}
    assert indexed == {(j.status.code[0], j.id) for j in jobs.values()}
    ready = {read_u64(k, 1) for k, _ in tx.scan("ready")}
    waiting = {read_u64(k, 8) for k, _ in tx.scan("waiting")}
    for k, rank in tx.scan("waiting"):  # the rank, or nothing in entries of older versions
        assert rank in (b"", bytes([jobs[read_u64(k, 8)].priority.rank])), k
    blocked = {read_u64(k) for k, _ in tx.scan("blocked")}
    pending = {j.id for j in jobs.values() if j.status is JobStatus.PENDING}
    assert ready | waiting | blocked == pending, "an index holds a job that is not pending"
    assert not (ready & waiting) and not (ready & blocked) and not (waiting & blocked)
    for rank, _ in enumerate(Priority):
        in_rank = sum(1 for k, _ in tx.scan("ready", bytes([rank])))
        assert tx.counter(f"ready/{rank}") == in_rank
    for j in jobs.values():
        assert (j.lease is not None) == (j.status is JobStatus.RUNNING), j
        if j.status is JobStatus.COMPLETED:
            assert tx.get("results", u64(j.id)) is not None, f"job {j.id} completed without a result"
    assert tx.counter("next_id") >= max(jobs, default=0)
    assert queue.counts(tx)["total"] == len(jobs)
