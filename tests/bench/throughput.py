"""(b) Drain throughput: N short generate jobs through the daemon at concurrency 8 against
an instant backend, against a bare httpx client streaming the same requests, 8 at a
time, to the same server. The difference is what ollama-q costs per job: its claim and
completion in LMDB (committed with other jobs', fsync'd), the scheduler, the bookkeeping.

(c) Embed coalescing: N one-input embed jobs, drained with coalescing (up to 16 jobs per
request) against one request per job.

    python tests/bench/throughput.py [--jobs 1000]

Targets: (b) at least 0.8x the bare client; (c) at least 5x."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx
from common import data_dir, emulator, enqueue

from ollama_cli.settings.hosts import Backend
from ollama_cli.daemon.loop import Daemon
from ollama_cli.settings import DaemonSettings
from ollama_cli.store import open_store


def daemon_drain(url: str, jobs: list[dict], *, concurrency: int, coalesce: int = 16) -> float:
    with data_dir() as path:
        enqueue(path, jobs)
        with open_store(path) as store:
            daemon = Daemon(store, [Backend(url)],
                            DaemonSettings(concurrency=concurrency, drain=True, poll=0.05, coalesce=coalesce))
            start = time.perf_counter()
            asyncio.run(daemon.run())
            return time.perf_counter() - start


def bare_client(url: str, jobs: list[dict], *, concurrency: int) -> float:
    async def run() -> None:
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            async def one(job: dict) -> None:
                async with gate:
                    body = {"model": job["model"], **job["request"], "stream": True}
                    async with client.stream("POST", "/api/generate", json=body) as resp:
                        done = [json.loads(line).get("done") for line in [ln async for ln in resp.aiter_lines()]]
                        assert done[-1], "the stream ended before its final line"
            await asyncio.gather(*(one(j) for j in jobs))

    start = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.jobs
    gen = [{"model": "llama3.2", "request": {"prompt": f"job {i}", "options": {"num_predict": 4}}}
           for i in range(n)]
    emb = [{"model": "all-minilm", "type": "embed", "request": {"input": [f"text {i}"]}} for i in range(n)]
    ours, bare, single, coalesced = [], [], [], []
    with emulator("--num-parallel", "8") as url:
        bare_client(url, gen[:50], concurrency=8)  # warm the model and the server
        for _ in range(args.rounds):  # interleaved, so noise hits both alike
            bare.append(bare_client(url, gen, concurrency=8))
            ours.append(daemon_drain(url, gen, concurrency=8))
            single.append(daemon_drain(url, emb, concurrency=1, coalesce=1))
            coalesced.append(daemon_drain(url, emb, concurrency=1, coalesce=16))
    b, o, s, c = min(bare), min(ours), min(single), min(coalesced)
    paired = statistics.median(x / y for x, y in zip(bare, ours))
    print(f"(b) {n} generate jobs, concurrency 8, instant backend (best of {args.rounds})")
    print(f"    bare httpx client   {n / b:8.1f} jobs/s")
    print(f"    ollama-q daemon     {n / o:8.1f} jobs/s   {b / o:.2f}x  (median of the rounds' ratios {paired:.2f}x)")
    print(f"(c) {n} embed jobs, concurrency 1")
    print(f"    one request per job {n / s:8.1f} jobs/s")
    print(f"    coalesced (<=16)    {n / c:8.1f} jobs/s   {s / c:.2f}x")


if __name__ == "__main__":
    main()
