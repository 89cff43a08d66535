"""Several hosts, simulated: daemons in separate network namespaces share one PostgreSQL server,
and one namespace's link is cut mid-job (not CI: it needs root, or CAP_NET_ADMIN, and `ip`).

    sudo .venv/bin/python tests/netns/cut_link.py [--daemons 3] [--job-seconds 10] [--jobs 6]

The suite's PostgreSQL server (tests/helpers/postgres.py) and the Ollama emulator run in this
namespace. Each daemon runs in a namespace of its own, joined to this one by a veth pair
(10.77.<n>.2 there, 10.77.<n>.1 here), and reaches the server and the emulator over it, as a
GPU box reaches a database host. Once every daemon runs a job, the link of the first one's
namespace is set down from inside it: its packets vanish, no FIN or RST is sent, as when a
host loses power or its cable. The script then watches, on the server, for:

- the cut daemon's session advisory lock to go (the server's TCP keepalives gave up on it:
  the client sets tcp_keepalives_idle/interval/count for its session, connection.py);
- its jobs to be reclaimed by another daemon, to start again, and to complete;

and checks that every job completed, that no request ran on the emulator while the same
request was still running for another daemon (the emulator's `overlaps`), and that the store
is sound (`check()`). It prints the times measured from the cut, and exits 1 if a check fails.
Everything it made (namespaces, veths, daemons, the server) is removed at the end."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ollama_cli.jobs import JobSpec, JobStatus, JobType  # noqa: E402
from ollama_cli.store import open_store  # noqa: E402
from tests.emulator import Emulator  # noqa: E402
from tests.helpers.postgres import PostgresServer, find_bindir  # noqa: E402

PREFIX = f"oq{os.getpid() % 10000}"  # names of our namespaces and veths: unique per run
TOKEN_DELAY = 0.1  # seconds per token the emulator generates: a job of n seconds asks 10 n tokens


def ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def make_namespace(n: int) -> str:
    """Namespace n, joined to this one by a veth pair: 10.77.n.2 there, 10.77.n.1 here."""
    ns, here, there = f"{PREFIX}n{n}", f"{PREFIX}h{n}", f"{PREFIX}p{n}"
    ip("netns", "add", ns)
    ip("link", "add", here, "type", "veth", "peer", "name", there)
    ip("link", "set", there, "netns", ns)
    ip("addr", "add", f"10.77.{n}.1/24", "dev", here)
    ip("link", "set", here, "up")
    ip("addr", "add", f"10.77.{n}.2/24", "dev", there, ns=ns)
    ip("link", "set", there, "up", ns=ns)
    ip("link", "set", "lo", "up", ns=ns)
    return ns


def remove_namespaces(count: int) -> None:
    for n in range(1, count + 1):
        subprocess.run(["ip", "netns", "del", f"{PREFIX}n{n}"], capture_output=True)  # its veth goes with it
        subprocess.run(["ip", "link", "del", f"{PREFIX}h{n}"], capture_output=True)


def start_server() -> tuple[PostgresServer, str]:
    bindir = find_bindir()
    if bindir is None:
        sys.exit("no PostgreSQL server here (apt-get install postgresql)")
    server = PostgresServer(bindir, durable=True, listen="*")
    server.start()
    with open(server.data / "pg_hba.conf", "a") as hba:
        hba.write("host all all 10.77.0.0/16 trust\n")
    server.execute("SELECT pg_reload_conf()")
    server.create_database("queue")
    return server, server.url("queue")


def daemon(ns: str, n: int, port: int, emulator_port: int, log: Path) -> subprocess.Popen[bytes]:
    url = f"postgresql://postgres@10.77.{n}.1:{port}/queue"
    env = {**os.environ, "OLLAMA_Q_STORE": url, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "ollama_cli", "daemon", "--json",
         "--host", f"http://10.77.{n}.1:{emulator_port}", "--concurrency", "1", "--grace", "1s"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("wb"))


def wait(what: str, predicate: Any, timeout: float, every: float = 0.1) -> float:
    """Poll until predicate() is true; the time it became so (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def alive(store: Any) -> dict[int, str]:
    """pid -> daemon id, of the daemons whose lock the server holds."""
    return {d.pid: d.id for d in store.daemons() if store.is_alive(d.id)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--job-seconds", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=6)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces need CAP_NET_ADMIN)")
    procs: list[subprocess.Popen[bytes]] = []
    server = None
    logs = Path(tempfile.mkdtemp(prefix="ollama-q-netns-"))
    emulator = Emulator(host="0.0.0.0", token_delay=TOKEN_DELAY, num_parallel=args.jobs)
    try:
        namespaces = [make_namespace(n) for n in range(1, args.daemons + 1)]
        server, url = start_server()
        emulator.start()
        emulator_port = int(emulator.url.rsplit(":", 1)[1])
        store = open_store(url)
        tokens = int(args.job_seconds / TOKEN_DELAY)
        jobs = store.submit_many([JobSpec(model="llama3.2", type=JobType.GENERATE, use_cache=False, request={
            "prompt": f"job {i}", "options": {"num_predict": tokens}}) for i in range(args.jobs)], store.now())
        for n, ns in enumerate(namespaces, start=1):
            procs.append(daemon(ns, n, server.port, emulator_port, logs / f"daemon{n}.log"))
        wait("every daemon alive", lambda: len(alive(store)) == args.daemons, 60)
        victim = alive(store)
        victim_pid = next(pid for pid in victim if _netns_of(pid) == namespaces[0])
        victim_id = victim[victim_pid]

        def running_of(owner: str) -> list[int]:
            return [j.id for j in store.list_jobs(statuses=[JobStatus.RUNNING])[0] if j.lease and j.lease.owner == owner]

        wait("the daemon to be cut runs a job", lambda: running_of(victim_id), 60)
        time.sleep(min(2.0, args.job_seconds / 3))  # mid-job: some tokens sent, more to come
        taken = running_of(victim_id)
        ip("link", "set", f"{PREFIX}p1", "down", ns=namespaces[0])
        cut = time.monotonic()
        print(f"cut the link of {namespaces[0]} (daemon {victim_id}) while it ran jobs {taken}", flush=True)
        noticed = wait("the server to drop the cut daemon's lock", lambda: not store.is_alive(victim_id), 300, 0.05)
        reclaimed = wait("its jobs to be reclaimed", lambda: all(
            (j.lease is None or j.lease.owner != victim_id) for j in store.get_jobs(taken)), 120, 0.05)
        restarted = wait("its jobs to start elsewhere", lambda: all(
            j.status is not JobStatus.PENDING for j in store.get_jobs(taken)), 120, 0.05)
        done = wait("every job to complete", lambda: store.counts()["completed"] == args.jobs,
                    300 + args.jobs * args.job_seconds, 0.2)
        final = store.get_jobs(j.id for j in jobs)
        problems = store.check()
        overlaps = list(emulator.overlaps)
        print(f"lock dropped by the server {noticed - cut:6.1f} s after the cut")
        print(f"jobs reclaimed             {reclaimed - cut:6.1f} s after the cut")
        print(f"jobs started elsewhere     {restarted - cut:6.1f} s after the cut")
        print(f"all {args.jobs} jobs completed     {done - cut:6.1f} s after the cut")
        for job in final:
            print(f"  job {job.id}: {job.status.value}, attempts {job.attempts}, host {job.host}"
                  + ("  (was on the cut daemon)" if job.id in taken else ""))
        print(f"requests that ran while the same request ran elsewhere: {len(overlaps)}")
        print(f"store check: {problems or 'sound'}")
        ok = not overlaps and not problems and all(j.status is JobStatus.COMPLETED for j in final)
        print("OK" if ok else "FAILED")
        store.close()
        return 0 if ok else 1
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        emulator.stop()
        if server is not None:
            server.close()
        remove_namespaces(args.daemons)
        print(f"daemon logs: {logs}")


def _netns_of(pid: int) -> str | None:
    """The name of the namespace a process runs in (`ip netns identify`)."""
    found = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True)
    return found.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
