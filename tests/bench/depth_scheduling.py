"""Issue 10 (a) and (a2): model loads of a long interleaved queue.

(a)  3 models x N jobs queued m1 m2 m3 m1 ..., one backend that holds one model at a
     time and pays a load cost, `-c 1` and `-c 4`;
(a2) 6 models x N jobs, two such backends (so two models resident at once).

Each drain starts from a fresh store and fresh emulators (nothing loaded); the loads are
the emulators' own count. Alternating in the same run:
- ours: the daemon with today's overtaking bound (max_skip 50), loads costing --load s;
- FIFO: the same daemon with reordering off (max_skip 0), loads free: its load count is
  FIFO's (about one per job) and its makespan is the work itself. FIFO's makespan with
  paid loads is estimated as that work + its loads x --load / backends (measuring it
  takes jobs x --load seconds: an hour at the defaults).
The bound is one load per model plus the switches the overtaking bound forces:
models + jobs / max_skip.

    python tests/bench/depth_scheduling.py [--per-model 1000] [--load 0.3] [--runs 3]

Prints medians (lowest-highest) and ratios: loads against FIFO's and against the bound,
makespan against FIFO's estimate. Target (issue 10): the bound.

The count depends on the load cost today: the daemon believes a model it started is
loaded until /api/ps says otherwise (0.25 s after a job finishes), so loads shorter than
that leave it believing every model resident. Run it with --load 0.3 and --load 0.02."""

from __future__ import annotations

import argparse
import asyncio
import time

from common import data_dir
from depth_common import cell, counting_emulators, interleaved

from ollama_cli.daemon.loop import Daemon
from ollama_cli.settings import DaemonSettings
from ollama_cli.settings.hosts import Backend
from ollama_cli.store import open_store

CASES = {"a": (3, 1), "a2": (6, 2)}  # models, backends


def drain(models: list[str], backends: int, per_model: int, *, concurrency: int, load: float,
          max_skip: int) -> tuple[int, float]:
    """Model loads and makespan of one drain of the interleaved queue."""
    specs = interleaved(models, per_model)
    with data_dir() as path, counting_emulators(backends, models=models, max_loaded=1, load_time=load) as emus:
        with open_store(path) as store:
            store.submit_many(specs, time.time())
            daemon = Daemon(store, [Backend(e.url) for e in emus], DaemonSettings(
                concurrency=concurrency, drain=True, poll=0.05, max_overtake=max_skip))
            start = time.perf_counter()
            asyncio.run(daemon.run())
            took = time.perf_counter() - start
        return sum(e.loads() for e in emus), took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-model", type=int, default=1000, help="jobs per model")
    parser.add_argument("--load", type=float, default=0.3, help="seconds per model load")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--case", choices=sorted(CASES), nargs="+", default=sorted(CASES))
    parser.add_argument("--max-skip", type=int, default=50, help="the overtaking bound measured")
    args = parser.parse_args()
    print(f"{args.per_model} jobs per model, interleaved; one model resident per backend, "
          f"{args.load:g} s per load; medians of {args.runs} alternating runs (lowest-highest)")
    header = (f"{'case':<4} {'-c':>2} {'jobs':>6} {'loads':>16} {'FIFO loads':>16} {'bound':>6} "
              f"{'vs FIFO':>20} {'vs bound':>20} {'makespan s':>18} {'vs FIFO est.':>20}")
    print(header)
    for case in args.case:
        n_models, n_backends = CASES[case]
        models = [f"m{i + 1}" for i in range(n_models)]
        jobs = n_models * args.per_model
        bound = n_models + jobs // args.max_skip
        for concurrency in args.concurrency:
            ours: list[tuple[int, float]] = []
            fifo: list[tuple[int, float]] = []
            for _ in range(args.runs):
                ours.append(drain(models, n_backends, args.per_model, concurrency=concurrency,
                                  load=args.load, max_skip=args.max_skip))
                fifo.append(drain(models, n_backends, args.per_model, concurrency=concurrency,
                                  load=0.0, max_skip=0))
            loads = [o[0] for o in ours]
            fifo_took = [took + n * args.load / n_backends for n, took in fifo]
            print(f"{case:<4} {concurrency:>2} {jobs:>6} {cell(loads, '.0f', ''):>16} "
                  f"{cell([f[0] for f in fifo], '.0f', ''):>16} {bound:>6} "
                  f"{cell([o[0] / f[0] for o, f in zip(ours, fifo)]):>20} "
                  f"{cell([n / bound for n in loads]):>20} "
                  f"{cell([o[1] for o in ours], '.1f', ''):>18} "
                  f"{cell([o[1] / f for o, f in zip(ours, fifo_took)]):>20}", flush=True)


if __name__ == "__main__":
    main()
