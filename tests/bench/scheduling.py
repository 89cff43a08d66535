"""(a) Model-aware scheduling: 3 models interleaved in the queue, a backend that holds one
model at a time and pays 2 s per load. Makespan and model loads of ollama-q's order
against FIFO order (the same daemon with reordering off) and against the lower bound
(the work itself, measured with free loads, plus one load per model).

    python tests/bench/scheduling.py [--jobs 18] [--load 2]

Targets: at most 0.5x FIFO's makespan and at most 1.1x the lower bound."""

from __future__ import annotations

import argparse
import asyncio
import time

from common import data_dir, emulator, enqueue, results

from ollama_cli.settings.hosts import Backend
from ollama_cli.daemon.loop import Daemon
from ollama_cli.settings import DaemonSettings
from ollama_cli.store import open_store


def drain(url: str, jobs: list[dict], *, max_skip: int) -> tuple[float, int]:
    """Makespan and the number of model loads (a job whose answer includes a load)."""
    with data_dir() as path:
        enqueue(path, jobs)
        with open_store(path) as store:
            daemon = Daemon(store, [Backend(url)],
                            DaemonSettings(concurrency=1, drain=True, poll=0.05, max_overtake=max_skip))
            start = time.perf_counter()
            asyncio.run(daemon.run())
            took = time.perf_counter() - start
        loads = sum(1 for _, r in results(path) if (r["stats"].get("load_duration") or 0) > 0.5e9)
    return took, loads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=18)
    parser.add_argument("--load", type=float, default=2.0)
    parser.add_argument("--tokens", type=int, default=10)
    args = parser.parse_args()
    models = ["m1", "m2", "m3"]
    jobs = [{"model": models[i % 3], "request": {"prompt": f"job {i}", "options": {"num_predict": args.tokens}}}
            for i in range(args.jobs)]
    common = ["--models", ",".join(models), "--max-loaded", "1", "--token-delay", "0.02"]
    with emulator(*common, "--load-time", "0") as url:
        work, _ = drain(url, jobs, max_skip=0)
    bound = work + len(models) * args.load
    with emulator(*common, "--load-time", str(args.load)) as url:
        ours, our_loads = drain(url, jobs, max_skip=50)
    with emulator(*common, "--load-time", str(args.load)) as url:
        fifo, fifo_loads = drain(url, jobs, max_skip=0)
    print(f"{args.jobs} jobs, 3 models interleaved, 1 model resident, {args.load:g} s per load, concurrency 1")
    print(f"{'order':<12} {'makespan s':>10} {'loads':>6} {'vs FIFO':>8} {'vs bound':>9}")
    for name, took, loads in (("ollama-q", ours, our_loads), ("FIFO", fifo, fifo_loads),
                              ("lower bound", bound, len(models))):
        print(f"{name:<12} {took:>10.2f} {loads:>6} {took / fifo:>7.2f}x {took / bound:>8.2f}x")


if __name__ == "__main__":
    main()
