"""Claim+complete throughput of the store: N generate jobs drained against an instant backend
(an httpx transport that answers in the daemon's own process, so that no backend is the
bottleneck) by 1, 2 and 4 daemon processes on one PostgreSQL database, and by one daemon on
LMDB, in the same run. The server keeps its default durability, as LMDB fsyncs its commits.

    python tests/bench/several_daemons.py [--jobs 1500] [--concurrency 4] [--rounds 2]

Jobs/s = N over the time from the first job's start to the last job's end, as the store
recorded them (processes start and exit outside it). Also the CPU each job cost the daemons and
the server (PostgreSQL's processes, read from /proc): on a machine of C cores no setup can drain
more than C / (CPU per job) jobs/s, whatever else runs. Target: 2 PostgreSQL daemons above 1.5x
one."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, postgres

from ollama_cli.jobs import JobSpec, JobType
from ollama_cli.store import open_store

GENERATE = b'{"response":"ok","done":false}\n{"response":"","done":true,"eval_count":1}\n'


def instant(request: object) -> object:
    """The backend: every listing and every answer at once."""
    import httpx

    path = request.url.path  # type: ignore[attr-defined]
    if path == "/api/generate":
        return httpx.Response(200, content=GENERATE)
    if path in ("/api/tags", "/api/ps"):
        return httpx.Response(200, json={"models": [{"name": "llama3.2:latest"}]})
    return httpx.Response(200, text="Ollama is running")


def worker(location: str, concurrency: int) -> None:
    """One daemon, draining: prints `ready` once it runs."""
    import httpx

    from ollama_cli.daemon import events
    from ollama_cli.daemon.loop import Daemon
    from ollama_cli.settings import DaemonSettings
    from ollama_cli.settings.hosts import Backend

    store = open_store(location)
    daemon = Daemon(store, [Backend("http://instant:11434")], DaemonSettings(concurrency=concurrency, drain=True),
                    transport=httpx.MockTransport(instant))
    daemon.events.subscribe(lambda e: print("ready", flush=True) if isinstance(e, events.DaemonStarted) else None)
    started = time.process_time()
    code = asyncio.run(daemon.run())
    print(time.process_time() - started, flush=True)  # the CPU its draining took
    sys.exit(code)


def server_cpu(server: object | None) -> float:
    """CPU seconds the server's processes used so far (exited ones through the postmaster)."""
    if server is None:
        return 0.0
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])  # type: ignore[attr-defined]
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster or ppid == postmaster:
            total += sum(int(f) for f in fields[11:13 if pid != postmaster else 15])
    return total / os.sysconf("SC_CLK_TCK")


def drain(location: str, jobs: int, daemons: int, concurrency: int,
          server: object | None) -> tuple[float, float, float]:
    """Jobs/s of `daemons` processes draining `jobs` queued at `location`, and the CPU ms per
    job of the daemons and of the server."""
    with open_store(location) as store:
        store.pause()  # queued, held until every daemon runs
        store.submit_many([JobSpec(model="llama3.2", type=JobType.GENERATE, request={"prompt": f"job {i}"},
                                   use_cache=False) for i in range(jobs)], store.now())
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", location, "--concurrency", str(concurrency)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
             for _ in range(daemons)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    before = server_cpu(server)
    with open_store(location) as store:
        store.resume()
    daemon_cpu = sum(float(p.stdout.readline()) for p in procs)
    for p in procs:
        assert p.wait(600) == 0
    spent = server_cpu(server) - before
    with open_store(location) as store:
        done, _ = store.list_jobs()
        assert len(done) == jobs and {j.status.value for j in done} == {"completed"}
        rate = jobs / (max(j.finished_at for j in done) - min(j.started_at for j in done))
    return rate, daemon_cpu / jobs * 1000, spent / jobs * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.concurrency)
    setups = [("lmdb", 1), ("postgresql", 1), ("postgresql", 2), ("postgresql", 4)]
    rates: dict[tuple[str, int], list[tuple[float, float, float]]] = {s: [] for s in setups}
    with postgres() as server, tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):  # interleaved, so noise hits every setup alike
            for engine, daemons in setups:
                name = f"{engine}-{daemons}-{round_}"
                location = str(Path(tmp) / name) if engine == "lmdb" else server.create_database(name.replace("-", "_"))
                rates[(engine, daemons)].append(drain(location, args.jobs, daemons, args.concurrency,
                                                      None if engine == "lmdb" else server))
    one_pg = statistics.median(r for r, _, _ in rates[("postgresql", 1)])
    print(f"{args.jobs} jobs, concurrency {args.concurrency} per daemon, instant backend, {args.rounds} rounds "
          f"(median, then each round); CPU per job of the daemons + the server")
    for (engine, daemons), values in rates.items():
        rate = statistics.median(r for r, _, _ in values)
        cpu = statistics.median(d + s for _, d, s in values)
        print(f"  {engine:<10} {daemons} daemon{'s' if daemons > 1 else ' '}  {rate:7.0f} jobs/s  "
              f"{rate / one_pg:5.2f}x one PostgreSQL daemon  ({', '.join(f'{r:.0f}' for r, _, _ in values)})  "
              f"CPU {cpu:.2f} ms/job ({', '.join(f'{d:.2f}+{s:.2f}' for _, d, s in values)})")


if __name__ == "__main__":
    main()
