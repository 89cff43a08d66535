"""Cold-process time of `ollama-q submit --json` and `ollama-q status --json` against
`python -c "import typer, lmdb, msgpack"` (the floor any Typer + LMDB tool pays), without a
config file and with one (in the user's config folder, as most users keep it; read once
before, as every run after an edit finds it), measured in the same run, interleaved so that machine noise hits all of them alike; and `submit` on a
PostgreSQL store (OLLAMA_Q_STORE, a private durable server on this machine), against the same
floor and against the floor of a Typer + psycopg2 tool.

    python tests/bench/startup.py [--runs 40]

Prints medians and the ratios; targets: at most 1.25x the baseline on LMDB, 2x on
PostgreSQL. Wall time on a shared 2-core machine swings by tens of percent between runs, so
where valgrind is installed the script also counts instructions (callgrind), which repeat
exactly (the client's only: the server's work is another process)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import postgres


# What a user sets once: submit's defaults, the daemon's, the cache's and routing's.
CONFIG = """\
hosts = ["http://127.0.0.1:11434"]
priority = "high"
retries = 2
timeout = "10m"
keep_alive = "30m"
concurrency = 2
keep_finished = "7d"

[model_concurrency]
"llama3.1:70b" = 1

[cache]
ttl = "7d"
max_bytes = "1GiB"

[routing]
default_model = "llama3.2"
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    py = sys.executable
    # pip compiles installed packages to bytecode, as typer's and lmdb's were; an editable
    # checkout under PYTHONDONTWRITEBYTECODE would otherwise compile ours on every run.
    import ollama_cli

    subprocess.run([py, "-m", "compileall", "-q", os.path.dirname(ollama_cli.__file__)], check=True)
    with tempfile.TemporaryDirectory() as tmp, postgres() as server:
        # No config file: an empty config folder; the cache folder of the parse is the run's own.
        env = {**os.environ, "OLLAMA_Q_DATA_DIR": tmp, "XDG_CONFIG_HOME": os.path.join(tmp, "none"),
               "XDG_CACHE_HOME": os.path.join(tmp, "cache")}
        env.pop("OLLAMA_Q_CONFIG", None)
        config_env = {**env, "XDG_CONFIG_HOME": os.path.join(tmp, "config")}
        os.makedirs(os.path.join(tmp, "config", "ollama-q"))
        with open(os.path.join(tmp, "config", "ollama-q", "config.toml"), "w") as f:
            f.write(CONFIG)
        pg_env = {**env, "OLLAMA_Q_STORE": server.create_database("startup")}
        submit = [py, "-m", "ollama_cli", "submit", "llama3.2", "Why is the sky blue?", "--json"]
        for e in (env, pg_env, config_env):  # makes the store (and, on the server, its schema); reads the file
            subprocess.run([*submit[:5], "warm-up", "--json"], env=e, check=True, capture_output=True)
        cmds = {
            "baseline": ([py, "-c", "import typer, lmdb, msgpack"], env),
            "submit": (submit, env),
            "status": ([py, "-m", "ollama_cli", "status", "1", "--json"], env),
            "submit+cfg": (submit, config_env),
            "status+cfg": ([py, "-m", "ollama_cli", "status", "1", "--json"], config_env),
            "pg floor": ([py, "-c", "import typer, psycopg2, msgpack"], env),
            "pg submit": (submit, pg_env),
        }
        samples: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.runs):
            for name, (cmd, e) in cmds.items():
                samples[name].append(timed(cmd, e))
        counts = {name: instructions(cmd, e) for name, (cmd, e) in cmds.items()} if shutil.which("valgrind") else {}
    base = statistics.median(samples["baseline"])
    print(f"{'command':<10} {'median ms':>10} {'ratio':>7}   {'instructions':>14} {'ratio':>7}")
    for name, values in samples.items():
        med = statistics.median(values)
        line = f"{name:<10} {med * 1000:>10.1f} {med / base:>6.2f}x"
        if counts:
            line += f"   {counts[name]:>14,} {counts[name] / counts['baseline']:>6.3f}x"
        print(line)
    floor = statistics.median(samples["pg floor"])
    line = f"pg submit against the pg floor: {statistics.median(samples['pg submit']) / floor:.2f}x"
    if counts:
        line += f", {counts['pg submit'] / counts['pg floor']:.2f}x in instructions"
    print(line)


def instructions(cmd: list[str], env: dict[str, str]) -> int:
    """Instructions the whole process executes, by callgrind."""
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
                         env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


if __name__ == "__main__":
    main()
