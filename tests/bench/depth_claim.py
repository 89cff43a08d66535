"""Issue 10 (g): the daemon's claim cost per job with N pending (default 1,000,000)
against 100 pending, in process and without a backend: what is measured is the tick's
write transaction (`Step.commit`), as a busy daemon runs it: the jobs of the last
claim finished, their completions and the next claims in one transaction, durable.

One backend with --concurrency slots and m1 loaded (models m1 m2 m3 interleaved in the
queue). Rounds alternate between the stores; the shallow one is a fresh store per round
holding 100 pending jobs plus those the round claims, so that 100 remain at its end.

    python tests/bench/depth_claim.py [--jobs 1000000] [--commits 200] [--rounds 9]

Prints, per store, the median (lowest-highest) wall and CPU time per job claimed, and
the ratios deep / shallow per round. Target (issue 10): at most 1.2x."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from depth_common import cell, pending_store, working_copy

from ollama_cli.daemon.loop import Daemon
from ollama_cli.daemon.outcomes import Outcome
from ollama_cli.jobs import full_name
from ollama_cli.settings import DaemonSettings
from ollama_cli.settings.hosts import Backend
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine

NO_BACKEND = "http://127.0.0.1:9"  # never contacted: a tick claims, it does not dispatch


async def claim_round(store: Engine, commits: int, concurrency: int) -> tuple[float, float, int]:
    """Wall and CPU seconds of `commits` ticks' transactions, and the jobs they claimed."""
    daemon = Daemon(store, [Backend(NO_BACKEND)], DaemonSettings(concurrency=concurrency))
    daemon.start()
    slot, step = daemon.pool.slots[0], daemon.step
    slot.answered, slot.loaded = True, {full_name("m1")}  # what /api/tags and /api/ps would say
    wall = cpu = 0.0
    claimed = 0
    try:
        started = await step.commit(time.time(), daemon.pool.views(time.time()))
        for _ in range(commits):
            for run in started:
                step.outcomes += [Outcome(c, "complete", result={"response": "hi", "done": True}, took=0.01)
                                     for c in run.claims]
                step.ended(run)
            wall_at, cpu_at = time.perf_counter(), time.process_time()
            now = time.time()
            started = await step.commit(now, daemon.pool.views(now))
            wall += time.perf_counter() - wall_at
            cpu += time.process_time() - cpu_at
            claimed += sum(len(run.claims) for run in started)
    finally:
        daemon._writer.shutdown()
        await slot.client.aclose()
        assert daemon.liveness is not None
        daemon.liveness.release()
    return wall, cpu, claimed


def measure(path: Path, commits: int, concurrency: int) -> tuple[float, float]:
    """Wall and CPU seconds per job claimed."""
    with open_store(path) as store:
        wall, cpu, claimed = asyncio.run(claim_round(store, commits, concurrency))
    assert claimed == commits * concurrency, claimed
    return wall / claimed, cpu / claimed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000, help="pending jobs in the deep store")
    parser.add_argument("--shallow", type=int, default=100, help="pending jobs in the shallow store")
    parser.add_argument("--chunk", type=int, default=100_000, help="lines per batch submit when building")
    parser.add_argument("--commits", type=int, default=200, help="ticks per round")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    deep_pristine = pending_store(args.jobs, args.chunk)
    shallow_pristine = pending_store(args.shallow + (args.commits + 1) * args.concurrency)
    deep: list[tuple[float, float]] = []
    shallow: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        deep_path = working_copy(deep_pristine, Path(tmp))
        measure(deep_path, 2, args.concurrency)  # warm the page cache and the code
        for run in range(args.rounds):
            folder = Path(tmp, f"round-{run}")
            folder.mkdir()
            shallow.append(measure(working_copy(shallow_pristine, folder), args.commits, args.concurrency))
            deep.append(measure(deep_path, args.commits, args.concurrency))
    print(f"claim cost per job, {args.commits} ticks of {args.concurrency} jobs per round, m1 loaded; "
          f"medians of {args.rounds} alternating rounds (lowest-highest)")
    print(f"{'pending':>10} {'wall us/job':>22} {'CPU us/job':>22}")
    for label, rows in ((f"{args.shallow:,}", shallow), (f"{args.jobs:,}", deep)):
        print(f"{label:>10} {cell([r[0] * 1e6 for r in rows], '.0f', ''):>22} "
              f"{cell([r[1] * 1e6 for r in rows], '.0f', ''):>22}")
    print(f"{'ratio':>10} {cell([d[0] / s[0] for d, s in zip(deep, shallow)]):>22} "
          f"{cell([d[1] / s[1] for d, s in zip(deep, shallow)]):>22}")


if __name__ == "__main__":
    main()
