"""In-process submits per second, each its own durable transaction, against a bare LMDB
put-and-commit loop writing records of the same total size with the same flags (the
same Store environment, so map size, sync and metasync match); then the same again with
100,000 jobs already queued, to show the cost does not grow with the queue.

    python tests/bench/submit_rate.py [--submits 500] [--queued 100000]

Targets: at least 0.8x the bare loop, and flat (the same with a full queue)."""

from __future__ import annotations

import argparse
import time

from common import data_dir

from ollama_cli.codec import encode_job, pack
from ollama_cli.jobs import JobSpec, JobType
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from ollama_cli.store.keys import u64
from ollama_cli.store.lmdb_engine import LmdbEngine

SPEC = JobSpec(model="llama3.2", type=JobType.GENERATE, request={"prompt": "Why is the sky blue?"})


def ours(store: Engine, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        store.submit(SPEC._replace(use_cache=False), time.time())
    return n / (time.perf_counter() - start)


def bare(store: LmdbEngine, n: int, size: int) -> float:
    """One put of `size` bytes per commit: what any durable queue pays at the least."""
    value = b"x" * size
    env, db = store.kv.env, store.kv.dbs["meta"]
    start = time.perf_counter()
    for i in range(n):
        with env.begin(write=True) as txn:
            txn.put(b"bare" + u64(i), value, db=db)
    return n / (time.perf_counter() - start)


def fill(store: Engine, n: int) -> None:
    store.submit_many([SPEC._replace(request={"prompt": f"queued {i}"}, use_cache=False) for i in range(n)],
                      time.time())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submits", type=int, default=500)
    parser.add_argument("--queued", type=int, default=100_000)
    args = parser.parse_args()
    with data_dir() as path, open_store(path) as store:
        job = store.submit(SPEC, time.time())
        size = len(encode_job(job)) + len(pack(SPEC.request))  # the record and its request
        rows = []
        for label in ("empty queue", f"{args.queued:,} queued"):
            if label != "empty queue":
                fill(store, args.queued)
            b1, o1, b2, o2 = (bare(store, args.submits, size), ours(store, args.submits),
                              bare(store, args.submits, size), ours(store, args.submits))
            rows.append((label, max(b1, b2), max(o1, o2)))
    print(f"{args.submits} submits, one durable commit each; record + request {size} bytes (best of 2)")
    print(f"{'':<18} {'bare put/s':>10} {'submit/s':>9} {'ratio':>6}")
    for label, b, o in rows:
        print(f"{label:<18} {b:>10.0f} {o:>9.0f} {o / b:>5.2f}x")
    print(f"full queue vs empty: {rows[1][2] / rows[0][2]:.2f}x")


if __name__ == "__main__":
    main()
