"""`ollama-q list | head -3` with 50,000 jobs queued against the same with 50 (issue 11,
item 2): the table prints its first rows before it reads the last, and by default shows the
50 newest, so the queue's length should not show. Also the whole table (`--limit 0`), the
same piped to `head -3`, and `--json`, for scale.

    python tests/bench/list_head.py [--runs 15] [--jobs 50000]

Interleaved runs, medians; target: at most 1.5x. Wall time on a shared 2-core machine swings
by tens of percent between runs, so where valgrind is installed the script also counts the
instructions of `list` (the 50 rows it prints, which `head` would cut to 3), which
repeat exactly."""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

from common import data_dir, enqueue, env_for
from startup import instructions


def timed(shell: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(shell, shell=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=50_000)
    args = parser.parse_args()
    cli = f"{sys.executable} -m ollama_cli"
    with data_dir() as small, data_dir() as large:
        for path, n in ((small, 50), (large, args.jobs)):
            enqueue(path, [{"model": "llama3.2", "request": {"prompt": f"question {i}"}} for i in range(n)])
        cases = {
            "list | head -3, 50 jobs": (f"{cli} list | head -3", small),
            f"list | head -3, {args.jobs:,} jobs": (f"{cli} list | head -3", large),
            f"list --limit 0 | head -3, {args.jobs:,} jobs": (f"{cli} list --limit 0 | head -3", large),
        }
        whole = {
            f"list --limit 0, {args.jobs:,} jobs": (f"{cli} list --limit 0", large),
            f"list --json, {args.jobs:,} jobs": (f"{cli} list --json", large),
        }
        samples: dict[str, list[float]] = {k: [] for k in [*cases, *whole]}
        for _ in range(args.runs):
            for name, (shell, path) in cases.items():
                samples[name].append(timed(shell, env_for(path)))
        for _ in range(3):
            for name, (shell, path) in whole.items():
                samples[name].append(timed(shell, env_for(path)))
        counts = {n: instructions([sys.executable, "-m", "ollama_cli", "list"], env_for(path))
                  for n, path in ((50, small), (args.jobs, large))} if shutil.which("valgrind") else {}
    base = statistics.median(samples["list | head -3, 50 jobs"])
    print(f"{'case':<40} {'median ms':>10} {'ratio':>7}")
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"{name:<40} {med * 1000:>10.1f} {med / base:>6.2f}x")
    for n, count in counts.items():
        print(f"instructions of list, {n:,} jobs: {count:,} ({count / counts[50]:.2f}x)")


if __name__ == "__main__":
    main()
