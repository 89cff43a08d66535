"""`batch submit` of 100,000 short lines through the core (decode, parse, one write
transaction, commit) against a bare LMDB loop that puts the very records ours wrote
(same databases, keys and value sizes) in one transaction of an environment opened
with the same parameters and durability flags. Runs alternate so that machine noise
hits both alike.

    python tests/bench/batch_submit.py [--lines 100000] [--runs 3]

Prints the best time of each and the speed ratio (bare time / our time); target: at
least 0.3x. A row queues the same specs with one `queue.submit` per job in one
transaction; the last two are the floor of any CPython implementation, with and
without the cache key (see `floor`)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import msgpack

from ollama_cli import batch, queue
from ollama_cli.batch.parse import bulk
from ollama_cli.codec import sha256
from ollama_cli.store import open_store
from ollama_cli.store.keys import u64
from ollama_cli.store.lmdb import Store
from ollama_cli.store.tables import DATABASES


def make_file(lines: int) -> bytes:
    rows = ({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "llama3.2", "messages": [{"role": "user", "content": f"Say hello, number {i}."}],
                      "max_tokens": 32}} for i in range(lines))
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def ours(data: bytes, folder: Path) -> tuple[float, float, list[tuple[str, bytes, bytes]]]:
    """Seconds end to end and in the write transaction, and every record it left."""
    with open_store(folder) as store:
        start = time.perf_counter()
        specs = batch.parse(batch.decode(data))
        parsed = time.perf_counter()
        batch.submit(store, specs, time.time())
        done = time.perf_counter()
        with store.kv.read() as tx:  # LMDB's own records, for the bare row
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


def floor(data: bytes, folder: Path, *, hashing: bool = True) -> float:
    """What any CPython implementation must do per line, with no validation, mapping or
    bookkeeping: parse the line, encode the request and a job record, hash the canonical
    request for the exact cache (unless `hashing` is off: a cache looked up later, by
    the daemon), and put the five records."""
    canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
    with Store(folder) as store, bulk():
        env, dbs = store.env, store.dbs
        jobs, requests, status, ready, batches = (dbs[n] for n in ("jobs", "requests", "status", "ready", "batches"))
        start = time.perf_counter()
        with env.begin(write=True) as txn:
            for i, line in enumerate(data.decode().split("\n")[:-1], start=1):
                body = json.loads(line)["body"]
                key = u64(i)
                digest = sha256(canonical(body).encode()) if hashing else None
                record = msgpack.packb({"id": i, "model": body["model"], "status": "pending", "batch": "b",
                                        "custom_id": f"q{i}", "cache_key": digest}, use_bin_type=True)
                txn.put(key, record, db=jobs)
                txn.put(key, msgpack.packb(body, use_bin_type=True), db=requests)
                txn.put(b"\x00" + key, b"", db=status)
                txn.put(b"\x02" + key, b"", db=ready)
                txn.put(b"b\x00" + key, b"", db=batches)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data = make_file(args.lines)
    totals, writes, bares, singles, floors, unhashed = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            total, write, records = ours(data, Path(tmp, f"ours-{run}"))
            totals.append(total)
            writes.append(write)
            bares.append(bare(records, Path(tmp, f"bare-{run}")))
            singles.append(per_job(data, Path(tmp, f"single-{run}")))
            floors.append(floor(data, Path(tmp, f"floor-{run}")))
            unhashed.append(floor(data, Path(tmp, f"unhashed-{run}"), hashing=False))
    size = sum(len(k) + len(v) for _, k, v in records)
    best, best_write, bare_s = min(totals), min(writes), min(bares)
    print(f"{args.lines} lines, {len(data) / 1e6:.1f} MB of JSONL; {len(records)} records, {size / 1e6:.1f} MB")
    print(f"{'':<44}{'best s':>8}{'ratio':>8}")
    print(f"{'bare LMDB puts':<44}{bare_s:>8.3f}{1:>7.2f}x")
    print(f"{'batch submit, end to end':<44}{best:>8.3f}{bare_s / best:>7.2f}x")
    print(f"{'  of which the write transaction':<44}{best_write:>8.3f}{bare_s / best_write:>7.2f}x")
    print(f"{'  that transaction with queue.submit per job':<44}{min(singles):>8.3f}{bare_s / min(singles):>7.2f}x")
    print(f"{'floor: parse, encode, hash, put (no checks)':<44}{min(floors):>8.3f}{bare_s / min(floors):>7.2f}x")
    print(f"{'  the same without the cache key':<44}{min(unhashed):>8.3f}{bare_s / min(unhashed):>7.2f}x")


if __name__ == "__main__":
    main()
