"""Issue 10 (f): cold commands at depth. Each command is a new process, as a user or a
script runs it, against a store of N pending jobs (default 1,000,000: ten `batch
submit`s of 100,000 lines, models m1 m2 m3 interleaved) and against a store of one job,
alternating, so that machine noise hits both alike.

    python tests/bench/depth_cold.py [--jobs 1000000] [--runs 9]

The big store is built once per size and code version under /tmp/ollama-q-depth (about
half a minute for a million) and copied for each invocation, since `submit` writes.
Prints, per command, the medians in ms and the median (lowest-highest) of the per-run
ratios deep / one job. Target (issue 10): at most 1.2x each."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT
from depth_common import cell, one_job_store, pending_store, working_copy


def commands(jobs: int) -> list[tuple[str, list[str], list[str]]]:
    """(label, arguments against the deep store, the same against the one-job store):
    the one job is head, middle and newest at once."""
    middle = max(1, jobs // 2)
    submit = ["submit", "m1", "Why is the sky blue?", "--json"]
    listing = ["list", "--limit", "20", "--json"]
    return [
        ("submit", submit, submit),
        ("status (head: job 1)", ["status", "1", "--json"], ["status", "1", "--json"]),
        (f"status (middle: job {middle})", ["status", str(middle), "--json"], ["status", "1", "--json"]),
        (f"status (newest: job {jobs})", ["status", str(jobs), "--json"], ["status", "1", "--json"]),
        ("list --limit 20", listing, listing),
        (f"list --limit 20 --offset {middle} (a page from the middle)", [*listing, "--offset", str(middle)],
         [*listing, "--offset", str(middle)]),
        ("list --status pending --model m2 --limit 20", [*listing, "--status", "pending", "--model", "m2"],
         [*listing, "--status", "pending", "--model", "m2"]),
        ("  the same, --model m9 (no job of it)", [*listing, "--status", "pending", "--model", "m9"],
         [*listing, "--status", "pending", "--model", "m9"]),
        ("info", ["info", "--json"], ["info", "--json"]),
    ]


def timed(args: list[str], store: Path) -> float:
    env = {**os.environ, "OLLAMA_Q_DATA_DIR": str(store)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ollama_cli", *args], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000, help="pending jobs in the deep store")
    parser.add_argument("--chunk", type=int, default=100_000, help="lines per batch submit when building it")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    import ollama_cli

    # As startup.py: an editable checkout would otherwise compile ours on every run.
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(ollama_cli.__file__)], check=True)
    pristine = pending_store(args.jobs, args.chunk)
    cmds = commands(args.jobs)
    with tempfile.TemporaryDirectory() as tmp:
        deep, one = working_copy(pristine, Path(tmp)), one_job_store(Path(tmp))
        for _, deep_args, one_args in cmds:  # warm the page cache and the bytecode
            timed(deep_args, deep), timed(one_args, one)
        deep_s: dict[str, list[float]] = {label: [] for label, _, _ in cmds}
        one_s: dict[str, list[float]] = {label: [] for label, _, _ in cmds}
        for _ in range(args.runs):
            for label, deep_args, one_args in cmds:
                one_s[label].append(timed(one_args, one))
                deep_s[label].append(timed(deep_args, deep))
    print(f"cold processes, {args.jobs:,} pending against one job; medians of {args.runs} alternating runs")
    print(f"{'command':<58} {'one job ms':>10} {'deep ms':>9} {'ratio (lowest-highest)':>24}")
    for label, _, _ in cmds:
        ratios = [d / o for d, o in zip(deep_s[label], one_s[label])]
        print(f"{label:<58} {statistics.median(one_s[label]) * 1000:>10.1f} "
              f"{statistics.median(deep_s[label]) * 1000:>9.1f} {cell(ratios):>24}")


if __name__ == "__main__":
    main()
