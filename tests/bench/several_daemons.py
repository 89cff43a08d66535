"""Claim+complete throughput of the store: N generate jobs drained against an instant backend
(an httpx transport that answers in the daemon's own process, so that no backend is the
bottleneck) by 1, 2 and 4 daemon processes on one PostgreSQL database, and by one daemon on
LMDB, in the same run. The server keeps its default durability, as LMDB fsyncs its commits.

    python tests/bench/several_daemons.py [--jobs 1500] [--concurrency 4] [--rounds 2]

Jobs/s = N over the time from the first job's start to the last job's end, as the store
recorded them (processes start and exit outside it). Target: 2 PostgreSQL daemons above 1.5x
one."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
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
    sys.exit(asyncio.run(daemon.run()))


def drain(location: str, jobs: int, daemons: int, concurrency: int) -> float:
    """Jobs/s of `daemons` processes draining `jobs` queued at `location`."""
    with open_store(location) as store:
        store.pause()  # queued, held until every daemon runs
        store.submit_many([JobSpec(model="llama3.2", type=JobType.GENERATE, request={"prompt": f"job {i}"},
                                   use_cache=False) for i in range(jobs)], store.now())
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", location, "--concurrency", str(concurrency)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
             for _ in range(daemons)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    with open_store(location) as store:
        store.resume()
    for p in procs:
        assert p.wait(600) == 0
    with open_store(location) as store:
        done, _ = store.list_jobs()
        assert len(done) == jobs and {j.status.value for j in done} == {"completed"}
        return jobs / (max(j.finished_at for j in done) - min(j.started_at for j in done))


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
    rates: dict[tuple[str, int], list[float]] = {s: [] for s in setups}
    with postgres() as server, tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):  # interleaved, so noise hits every setup alike
            for engine, daemons in setups:
                name = f"{engine}-{daemons}-{round_}"
                location = str(Path(tmp) / name) if engine == "lmdb" else server.create_database(name.replace("-", "_"))
                rates[(engine, daemons)].append(drain(location, args.jobs, daemons, args.concurrency))
    one_pg = max(rates[("postgresql", 1)])
    print(f"{args.jobs} jobs, concurrency {args.concurrency} per daemon, instant backend (best of {args.rounds})")
    for (engine, daemons), values in rates.items():
        print(f"  {engine:<10} {daemons} daemon{'s' if daemons > 1 else ' '}  {max(values):8.1f} jobs/s  "
              f"{max(values) / one_pg:5.2f}x one PostgreSQL daemon   (rounds: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
