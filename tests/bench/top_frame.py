"""Issue 13: what one frame of `top` costs with 1,000,000 pending jobs against 100. A frame is
`insight.live.frame` (the store reads top makes twice a second) and, apart, the frame drawn
by rich at 120 columns. Both stores get the same daemon's report (two backends, four running
jobs with their progress) and jobs finished in the last minutes, so every part of the
frame has something to show. Deep and small frames alternate, so that machine noise hits
both alike.

    python tests/bench/top_frame.py [--jobs 1000000] [--small 100] [--frames 200] [--postgresql]

LMDB's deep store is built once per size and code version (depth_common.pending_store) and
copied, since the report and the claims write to it; PostgreSQL's are filled by SQL on a
private server (pg_scale.fill), every job pending. Prints medians in ms and the ratio
deep / small. Target: about 1x (no part of a frame reads more as the queue grows)."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

from depth_common import interleaved, pending_store, working_copy

from ollama_cli.render import insight
from ollama_cli.insight import live
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from ollama_cli.store.records import BackendState, DaemonInfo, Placement, Plan, RunProgress


def furnish(store: Engine) -> object:
    """A living daemon's report, four running jobs, and a few finished ones; the lock that
    keeps the daemon alive."""
    now = store.now()
    lock = store.daemon_lock()
    store.register(DaemonInfo(lock.id, os.getpid(), ["http://a:11434", "http://b:11434"], 2, now, now))

    def four(ready, request_of):  # type: ignore[no-untyped-def]
        jobs = [j for _, j in zip(range(4), ready)]
        return Plan([Placement(0, "http://a:11434", (j,)) for j in jobs])

    claimed = [c.job for _, cs in store.settle_and_claim([], now - 30, owner=lock.id, planner=four).claimed
               for c in cs]
    store.cancel([claimed[0].id], now - 5)  # one finished lately: a rate and an ETA
    store.record_backends(lock.id, [BackendState("http://a:11434", "", True, ("m1:latest", "m2:latest"),
                                                 ("m1:latest",), 2, 2, 0.0),
                                    BackendState("http://b:11434", "", False, None, (), 2, 0, 0.0)], now)
    store.record_progress(lock.id, [RunProgress(j.id, "", 100, now - 30, 0.0) for j in claimed[1:]], now)
    return lock


def small_store(folder: Path, jobs: int) -> Path:
    path = folder / "small"
    with open_store(path) as store:
        store.submit_many(interleaved(("m1", "m2", "m3"), max(1, jobs // 3)), time.time())
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--postgresql", action="store_true", help="on a private PostgreSQL server")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.postgresql:
            from common import postgres
            from pg_scale import fill

            server = stack.enter_context(postgres())
            deep_at: str | Path = fill(server, "deep", args.jobs, args.jobs)
            small_at: str | Path = fill(server, "small", args.small, args.small)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            deep_at, small_at = working_copy(pending_store(args.jobs), tmp), small_store(tmp, args.small)
        measure(deep_at, small_at, args)


def measure(deep_at: str | Path, small_at: str | Path, args: argparse.Namespace) -> None:
    from rich.console import Console

    with open_store(deep_at) as deep, open_store(small_at) as small:
        locks = [furnish(deep), furnish(small)]
        reads: dict[str, list[float]] = {"deep": [], "small": []}
        draws: dict[str, list[float]] = {"deep": [], "small": []}
        for i in range(args.frames + 10):
            for label, store in (("deep", deep), ("small", small)):
                start = time.perf_counter()
                frame = live.frame(store, limit=20)
                read = time.perf_counter() - start
                console = Console(file=io.StringIO(), width=120, force_terminal=True)
                start = time.perf_counter()
                console.print(insight.top(frame, frame.counts["running"]))
                drawn = time.perf_counter() - start
                if i >= 10:  # the first frames warm caches and imports
                    reads[label].append(read)
                    draws[label].append(drawn)
        for lock in locks:
            lock.release()  # type: ignore[attr-defined]
    engine = "PostgreSQL" if args.postgresql else "LMDB"
    print(f"one frame of top on {engine}, {args.jobs:,} pending against {args.small}; "
          f"medians of {args.frames} alternating")
    for name, figures in (("store reads (insight.live.frame)", reads), ("drawing (rich, 120 columns)", draws)):
        deep_ms, small_ms = (statistics.median(figures[k]) * 1000 for k in ("deep", "small"))
        print(f"{name:<36} deep {deep_ms:7.3f} ms   small {small_ms:7.3f} ms   ratio {deep_ms / small_ms:.2f}x")


if __name__ == "__main__":
    main()
