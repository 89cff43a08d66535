"""The cost of `daemon --on-finish`: N short generate jobs drained at concurrency 8 from an
instant backend, without hooks, with hooks recorded but none run (a daemon with
--on-finish ran within the hour, this one has none: each finished job's event is written
and kept), and with a hook per job (`:`, the cheapest command: what is left is the shell's
start and the event's claim and delete). Rounds interleaved, so noise hits all alike.

    python tests/bench/hooks.py [--jobs 500] [--rounds 3]

Prints medians and ratios against the drain without hooks."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from common import data_dir, emulator, enqueue

from ollama_cli.daemon.loop import Daemon
from ollama_cli.settings import DaemonSettings
from ollama_cli.settings.hosts import Backend
from ollama_cli.store import open_store

MODES = ("no hooks", "recorded, not run", "a hook per job")


def drain(url: str, jobs: list[dict], mode: str) -> float:
    with data_dir() as path:
        enqueue(path, jobs)
        with open_store(path) as store:
            if mode != "no hooks":
                store.record_hooks_until(store.now() + 3600)
            # Without --on-finish, --drain does not wait for the events it leaves.
            daemon = Daemon(store, [Backend(url)], DaemonSettings(
                concurrency=8, drain=True, poll=0.05, on_finish=":" if mode == "a hook per job" else None))
            start = time.perf_counter()
            asyncio.run(daemon.run())
            return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    jobs = [{"model": "llama3.2", "request": {"prompt": f"job {i}", "options": {"num_predict": 4}}}
            for i in range(args.jobs)]
    times: dict[str, list[float]] = {m: [] for m in MODES}
    with emulator("--num-parallel", "8") as url:
        drain(url, jobs[:50], "no hooks")  # warm the model and the server
        for _ in range(args.rounds):
            for mode in MODES:
                times[mode].append(drain(url, jobs, mode))
    base = statistics.median(times["no hooks"])
    print(f"{args.jobs} generate jobs, concurrency 8, instant backend (median of {args.rounds} rounds)")
    for mode in MODES:
        t = statistics.median(times[mode])
        print(f"    {mode:20} {args.jobs / t:8.1f} jobs/s   {t / base:.2f}x the time")


if __name__ == "__main__":
    main()
