"""What `result --follow`'s partial writes and the daemon's metrics cost the drain (issue 13):
the drain of throughput.py (N short generate jobs, concurrency 8) with each of them off and
on, in the same run, rounds interleaved (each variant first in turn) so that noise hits all
alike; and the same with
streaming answers (the emulator waits between tokens), where the daemon does write partial
output: every half second, for every job then running.

    python tests/bench/operate.py [--jobs 1000] [--rounds 5]

Target: each at most 5 % slower than its baseline (ratio >= 0.95). Ratios are throughput
(baseline time / time): the best of the rounds, the median of the rounds' own ratios, and
the daemon process's CPU time per job (medians), which a busy machine disturbs least."""

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


def drain(url: str, jobs: list[dict], *, partials: bool, metrics: bool = False) -> tuple[float, float, int]:
    """Seconds to drain, the CPU seconds this process spent on it (every thread: the loop,
    the writer, the metrics server), and how many partial writes the daemon made."""
    with data_dir() as path:
        enqueue(path, jobs)
        with open_store(path) as store:
            writes = 0
            write_partials = store.write_partials

            def counted(parts):  # noqa: ANN001, ANN202
                nonlocal writes
                writes += 1
                return write_partials(parts)

            store.write_partials = counted  # type: ignore[method-assign]
            daemon = Daemon(store, [Backend(url)], DaemonSettings(concurrency=8, drain=True, poll=0.05))
            daemon.step.partials.enabled = partials
            if metrics:
                from ollama_cli.daemon import metrics as daemon_metrics

                daemon_metrics.attach(daemon, "127.0.0.1:0")
            start, cpu = time.perf_counter(), time.process_time()
            asyncio.run(daemon.run())
            return time.perf_counter() - start, time.process_time() - cpu, writes


def compare(url: str, jobs: list[dict], rounds: int, title: str) -> None:
    variants = {"off": {"partials": False}, "partial writes": {"partials": True},
                "metrics": {"partials": False, "metrics": True}}
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpus: dict[str, list[float]] = {v: [] for v in variants}
    writes: dict[str, int] = {}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # each variant goes first in turn
            took, cpu, writes[name] = drain(url, jobs, **variants[name])
            times[name].append(took)
            cpus[name].append(cpu)
    base = min(times["off"])
    print(f"{title} (best of {rounds})")
    for name in variants:
        best = min(times[name])
        paired = statistics.median(b / t for b, t in zip(times["off"], times[name]))
        cpu = statistics.median(cpus[name]) * 1e6 / len(jobs)
        cpu_ratio = statistics.median(cpus["off"]) / statistics.median(cpus[name])
        print(f"    {name:15s} {len(jobs) / best:8.1f} jobs/s   {base / best:.3f}x  "
              f"(median of the rounds' ratios {paired:.3f}x)   CPU {cpu:6.0f} us/job  {cpu_ratio:.3f}x   "
              f"{writes[name]} partial writes")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.jobs
    short = [{"model": "llama3.2", "request": {"prompt": f"job {i}", "options": {"num_predict": 4}}} for i in range(n)]
    with emulator("--num-parallel", "8") as url:
        drain(url, short[:50], partials=False)  # warm the model and the server
        compare(url, short, args.rounds, f"{n} generate jobs, concurrency 8, instant backend")
    streamed = [{"model": "llama3.2", "request": {"prompt": f"job {i}", "options": {"num_predict": 40}}}
                for i in range(n // 10)]
    with emulator("--num-parallel", "8", "--token-delay", "0.005") as url:
        drain(url, streamed[:8], partials=False)
        compare(url, streamed, args.rounds, f"{n // 10} generate jobs of 40 tokens at 5 ms a token, concurrency 8")


if __name__ == "__main__":
    main()
