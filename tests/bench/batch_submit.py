"""`batch submit` of 100,000 short lines through the core (decode, parse, one write
transaction, commit) against a bare LMDB loop that puts the very records ours wrote
(same databases, keys and value sizes) in one transaction of an environment opened
with the same parameters and durability flags. Runs alternate so that machine noise
hits both alike.

    python tests/bench/batch_submit.py [--lines 100000] [--runs 3]

Prints the best time of each and the speed ratio (bare time / our time); target: at
least 0.3x. A last row queues the same specs with one `queue.submit` per job in one
transaction, the way `submit_many` replaced."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ollama_cli import batch, queue
from ollama_cli.store import DATABASES, Store


def make_file(lines: int) -> bytes:
    rows = ({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "llama3.2", "messages": [{"role": "user", "content": f"Say hello, number {i}."}],
                      "max_tokens": 32}} for i in range(lines))
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def ours(data: bytes, folder: Path) -> tuple[float, float, list[tuple[str, bytes, bytes]]]:
    """Seconds end to end and in the write transaction, and every record it left."""
    with Store(folder) as store:
        start = time.perf_counter()
        specs = batch.parse(batch.decode(data))
        parsed = time.perf_counter()
        batch.submit(store, specs, time.time())
        done = time.perf_counter()
        with store.read() as tx:
            records = [(db, k, v) for db in DATABASES for k, v in tx.scan(db)]
    return done - start, done - parsed, records


def per_job(data: bytes, folder: Path) -> float:
    specs = [s._replace(batch="batch-1") for s in batch.parse(batch.decode(data))]
    with Store(folder) as store:
        start = time.perf_counter()
        store.write(lambda tx: [queue.submit(tx, spec, time.time()) for spec in specs])
        return time.perf_counter() - start


def bare(records: list[tuple[str, bytes, bytes]], folder: Path) -> float:
    with Store(folder) as store:  # the same lmdb.open parameters and durability flags
        env, dbs = store.env, store.dbs
        start = time.perf_counter()
        with env.begin(write=True) as txn:
            for db, key, value in records:
                txn.put(key, value, db=dbs[db])
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data = make_file(args.lines)
    totals, writes, bares, singles = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            total, write, records = ours(data, Path(tmp, f"ours-{run}"))
            totals.append(total)
            writes.append(write)
            bares.append(bare(records, Path(tmp, f"bare-{run}")))
            singles.append(per_job(data, Path(tmp, f"single-{run}")))
    size = sum(len(k) + len(v) for _, k, v in records)
    best, best_write, floor = min(totals), min(writes), min(bares)
    print(f"{args.lines} lines, {len(data) / 1e6:.1f} MB of JSONL; {len(records)} records, {size / 1e6:.1f} MB")
    print(f"{'':<44}{'best s':>8}{'ratio':>8}")
    print(f"{'bare LMDB puts':<44}{floor:>8.3f}{1:>7.2f}x")
    print(f"{'batch submit, end to end':<44}{best:>8.3f}{floor / best:>7.2f}x")
    print(f"{'  of which the write transaction':<44}{best_write:>8.3f}{floor / best_write:>7.2f}x")
    print(f"{'  that transaction with queue.submit per job':<44}{min(singles):>8.3f}{floor / min(singles):>7.2f}x")


if __name__ == "__main__":
    main()
