"""`info`, `list --limit 20` and `status` of the job that starts last, on a PostgreSQL store of
1,000,000 jobs against one of 100, in the same run: a command must not cost more because the store
is large. Both stores end with the same 50 pending jobs (the newest, so `list` shows pending jobs
and works out their positions); the rest is history, finished jobs with their results. A third
store holds 1,000,000 jobs all pending: the job `status` asks about has about 1,000,000 ready
jobs ahead of it, which a position adds up from block counters, not a walk.

    python tests/bench/pg_scale.py [--runs 15]

Stores are filled with SQL in the engine's row format (a million submits one by one would take
an hour) and checked by the engine (`check()`) before they are measured. Target: at most 1.2x."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from common import ROOT, postgres

from ollama_cli.codec import pack
from ollama_cli.store import open_store
from ollama_cli.store.postgres import schema

FILL = """
INSERT INTO jobs (id, state, priority, model, model_key, type, created_at, attempts, max_attempts, started_at,
                  finished_at, error_type, error_message)
SELECT i, s.state, i %% 4, 'llama3.2', 'llama3.2:latest', 'generate', 1.7e9 + i, CASE WHEN s.state = 'ready' THEN 0 ELSE 1 END, 4,
       CASE WHEN s.state = 'ready' THEN NULL ELSE 1.7e9 + i + 1 END,
       CASE WHEN s.state = 'ready' THEN NULL ELSE 1.7e9 + i + 2 END,
       CASE s.state WHEN 'failed' THEN 'backend_error' WHEN 'cancelled' THEN 'cancelled' END,
       CASE s.state WHEN 'failed' THEN 'no' WHEN 'cancelled' THEN 'cancelled by the user' END
FROM generate_series(1, %(n)s) AS i,
     LATERAL (SELECT CASE WHEN i > %(n)s - %(pending)s THEN 'ready' WHEN i %% 20 = 0 THEN 'failed'
                          WHEN i %% 50 = 0 THEN 'cancelled' ELSE 'completed' END AS state) AS s;
INSERT INTO requests (id, body) SELECT id, %(request)s FROM jobs;
INSERT INTO results (id, body) SELECT id, %(result)s FROM jobs WHERE state = 'completed';
INSERT INTO counts (name, shard, n)
    SELECT 'count/' || CASE WHEN state = 'ready' THEN 'pending' ELSE state END, 0, count(*) FROM jobs GROUP BY 1
    UNION ALL SELECT 'ready/' || priority, 0, count(*) FROM jobs WHERE state = 'ready' GROUP BY priority
    UNION ALL SELECT 'ready_model/' || priority || '/' || model_key, 0, count(*) FROM jobs WHERE state = 'ready'
        GROUP BY priority, model_key
    UNION ALL SELECT name, 0, n FROM ({ready_by_block}) AS r(name, n);
UPDATE serials SET last = %(n)s WHERE name = 'job';
"""


def fill(server: object, name: str, n: int, pending: int) -> str:
    url = server.create_database(name)  # type: ignore[attr-defined]
    with open_store(url):  # makes the schema
        pass
    import psycopg2

    conn = psycopg2.connect(url, options="-c search_path=ollama_q")
    with conn, conn.cursor() as cur:
        cur.execute(FILL.format(ready_by_block=schema.READY_BY_BLOCK),
                    {"n": n, "pending": pending, "request": pack({"prompt": "Why is the sky blue?"}),
                     "result": pack({"response": "Because of Rayleigh scattering.", "stats": {}})})
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")  # as autovacuum would, soon after such a load
    conn.close()
    with open_store(url) as store:
        assert store.check() == [], name
        assert store.counts()["total"] == n and store.counts()["pending"] == pending
    return url


COMMANDS = ("info", "list", "status")


def deepest(store: Any) -> int:
    """The id of the job that starts last: the newest of the lowest priority (`FILL` gives
    job i the priority rank i % 4, so of n jobs, n - 1 when n is a multiple of 4)."""
    return store.counts()["total"] - 1


def commands(url: str) -> dict[str, tuple[str, ...]]:
    with open_store(url) as store:
        last = deepest(store)
    return {"info": ("info", "--json"), "list": ("list", "--limit", "20", "--json"),
            "status": ("status", str(last), "--json")}


def cold(url: str, *args: str) -> float:
    env = {**os.environ, "OLLAMA_Q_STORE": url}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ollama_cli", *args], env=env, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def warm(urls: dict[str, str], runs: int) -> dict[str, dict[str, float]]:
    """In one process, per store, median ms of what `info`, `list --limit 20` and `status`
    ask of the engine; the stores taken in turn, so noise hits every store alike."""
    from ollama_cli.insight import snapshot

    out: dict[str, dict[str, list[float]]] = {s: {c: [] for c in COMMANDS} for s in urls}
    stores = {s: open_store(url) for s, url in urls.items()}
    last = {s: deepest(store) for s, store in stores.items()}
    for _ in range(runs):
        for name, store in stores.items():
            start = time.perf_counter()
            snapshot.info(store)
            out[name]["info"].append(time.perf_counter() - start)
            start = time.perf_counter()
            jobs, _ = store.list_jobs(limit=20)
            store.positions(jobs, store.now())
            out[name]["list"].append(time.perf_counter() - start)
            start = time.perf_counter()
            job = store.get_job(last[name])
            store.positions([job], store.now())
            out[name]["status"].append(time.perf_counter() - start)
    for store in stores.values():
        store.close()
    return {s: {c: statistics.median(v) * 1000 for c, v in by.items()} for s, by in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with postgres() as server:
        started = time.perf_counter()
        stores = {"100 jobs": fill(server, "small", 100, 50), "1,000,000 jobs": fill(server, "big", 1_000_000, 50),
                  "1,000,000, all pending": fill(server, "deep", 1_000_000, 1_000_000)}
        print(f"filled in {time.perf_counter() - started:.0f} s")
        cold_ms: dict[tuple[str, str], list[float]] = {(s, c): [] for s in stores for c in COMMANDS}
        argvs = {store: commands(url) for store, url in stores.items()}
        for _ in range(args.runs):  # interleaved, so noise hits every store alike
            for store, url in stores.items():
                for command, argv in argvs[store].items():
                    cold_ms[(store, command)].append(cold(url, *argv) * 1000)
        warm_ms = warm(stores, args.runs * 10)
    print(f"{'store':<28} {'command':<8} {'cold ms':>8} {'ratio':>7} {'in-process ms':>14} {'ratio':>7}")
    for store in stores:
        for command in COMMANDS:
            c = statistics.median(cold_ms[(store, command)])
            c0 = statistics.median(cold_ms[("100 jobs", command)])
            w, w0 = warm_ms[store][command], warm_ms["100 jobs"][command]
            print(f"{store:<28} {command:<8} {c:>8.1f} {c / c0:>6.2f}x {w:>14.2f} {w / w0:>6.2f}x")


if __name__ == "__main__":
    main()
