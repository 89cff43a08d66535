"""`ollama-q stats` with 100,000 finished jobs against the same with 100 (issue 12): the
statistics are hour buckets kept as jobs finish, so `stats` reads models x hours, never jobs.
Both stores hold the same buckets (2 models x 24 hours, each job with a category): only the
number of jobs differs.

    python tests/bench/stats_scale.py [--runs 15] [--jobs 100000] [--postgres]

With --postgres, both stores are databases of a private PostgreSQL server (durable, as
`common.postgres` starts it) instead of LMDB folders.

The jobs finish through the engine as a daemon finishes them (claimed, then settled with
Ollama's figures), 250 per transaction. Measured: the command in a new process
(`stats --json`), interleaved, medians; the read itself in this process (`model_stats` and the
advice over the same buckets), medians of many; and, where valgrind is installed, the
command's instructions, which repeat exactly. Target: at most 1.2x."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import data_dir, env_for, postgres
from startup import instructions, timed

from ollama_cli.jobs import JobSpec, JobType
from ollama_cli.store import open_store
from ollama_cli.store.records import Placement, Plan, Settle, SettleKind

HOURS, MODELS, BATCH = 24, ("llama3.2", "qwen2.5"), 250  # a claim takes at most 256


def fill(path: Path | str, jobs: int, now: float) -> None:
    """`jobs` finished jobs spread evenly over the last HOURS hours and MODELS."""
    start = (now // 3600 - HOURS) * 3600
    figures = {"load_duration": 5_000_000, "prompt_eval_count": 30, "eval_count": 200,
               "eval_duration": 4_000_000_000}
    with open_store(path) as store:
        for hour in range(HOURS):
            first, end = jobs * hour // HOURS, jobs * (hour + 1) // HOURS
            at = start + hour * 3600 + 60
            for lo in range(first, end, BATCH):
                hi = min(end, lo + BATCH)
                specs = [JobSpec(model=MODELS[i % len(MODELS)], type=JobType.GENERATE, use_cache=False,
                                 request={"prompt": f"q{i}"}, category=("code", "prose")[i // 2 % 2])
                         for i in range(lo, hi)]
                store.submit_many(specs, at)
                tick = store.settle_and_claim([], at + 1, owner="bench", lookahead=hi - lo, planner=lambda ready, _: Plan(
                    [Placement(0, "http://h:1", tuple(ready))]))
                claims = [c for _, cs in tick.claimed for c in cs]
                store.settle_and_claim([Settle(SettleKind.COMPLETE, c.job.id, c.token, result={
                    "response": "x", "stats": figures}) for c in claims], at + 5, owner="bench")
        assert store.counts()["completed"] == jobs, store.counts()


def in_process(path: Path | str, now: float, runs: int) -> float:
    from ollama_cli.insight import advice
    from ollama_cli.insight.stats import model_stats

    with open_store(path, readonly=True) as store:
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            rows = model_stats(store, since=None, model=None, now=now)
            advice.recommendations(rows, store.cache_stats())
            [r.to_json() for r in rows]
            samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.postgres:
            server = stack.enter_context(postgres())
            small, large = server.create_database("small"), server.create_database("large")
        else:
            small, large = stack.enter_context(data_dir()), stack.enter_context(data_dir())
        measure({100: small, args.jobs: large}, args.runs)


def env_of(location: Path | str) -> dict[str, str]:
    return {**os.environ, "OLLAMA_Q_STORE": location} if isinstance(location, str) else env_for(location)


def measure(sizes: dict[int, Path | str], runs: int) -> None:
    now = time.time()
    cmd = [sys.executable, "-m", "ollama_cli", "stats", "--json"]
    t = time.perf_counter()
    for n, location in sizes.items():
        fill(location, n, now)
    print(f"filled in {time.perf_counter() - t:.0f} s")
    held = set()
    for location in sizes.values():
        with open_store(location, readonly=True) as store:
            held.add(len(store.stat_buckets()))
    assert len(held) == 1, f"the stores must hold the same buckets: {held}"
    print(f"buckets in each store: {held.pop()}")
    wall: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(runs):
        for n, location in sizes.items():
            wall[n].append(timed(cmd, env_of(location)))
    reads = {n: in_process(location, now, 20 * runs) for n, location in sizes.items()}
    counts = {n: instructions(cmd, env_of(location)) for n, location in sizes.items()} \
        if shutil.which("valgrind") else {}
    first = min(sizes)
    print(f"{'case':<44} {'median':>12} {'ratio':>7}")
    for label, figures in (("stats --json, new process", {n: statistics.median(v) for n, v in wall.items()}),
                           ("model_stats + advice, in process", reads)):
        for n, value in figures.items():
            print(f"{label + f', {n:,} jobs':<44} {value * 1000:>9.2f} ms {value / figures[first]:>6.2f}x")
    for n, count in counts.items():
        print(f"{f'instructions of stats --json, {n:,} jobs':<44} {count:>12,} {count / counts[first]:>6.2f}x")


if __name__ == "__main__":
    main()
