"""Shared pieces of the depth benchmarks (issue 10): an emulator in its own process that
reports how many models it loaded, a store of N pending jobs built as `batch submit`
builds it and cached under /tmp, and medians with their spread."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from common import ROOT

from ollama_cli import batch
from ollama_cli.batch.parse import parse
from ollama_cli.jobs import JobSpec, JobType
from ollama_cli.store import open_store

# Shared by every checkout on the machine unless OLLAMA_Q_BENCH_CACHE names another folder.
CACHE = Path(os.environ.get("OLLAMA_Q_BENCH_CACHE") or Path(tempfile.gettempdir()) / "ollama-q-depth")
MODELS = ("m1", "m2", "m3")

# The emulator, and on each line read from stdin one line of JSON: its loads so far.
_SERVE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.emulator import Emulator
emu = Emulator(**json.loads(sys.argv[2])).start()
print(emu.url, flush=True)
for _ in sys.stdin:
    print(json.dumps({"loads": emu.loads, "log": emu.load_log}), flush=True)
emu.stop()
"""


class CountingEmulator:
    """`tests/emulator.py` in its own process (so that it shares no GIL with the daemon
    measured), asked for its load count over a pipe: the count is the emulator's own,
    not guessed from answers' load_duration."""

    def __init__(self, **options: object) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(ROOT), json.dumps(options)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://"), self.url

    def loads(self) -> int:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return int(json.loads(self.proc.stdout.readline())["loads"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


@contextlib.contextmanager
def counting_emulators(count: int, **options: object) -> Iterator[list[CountingEmulator]]:
    emus: list[CountingEmulator] = []
    try:
        for _ in range(count):
            emus.append(CountingEmulator(**options))
        yield emus
    finally:
        for emu in emus:
            emu.close()


def interleaved(models: Sequence[str], per_model: int, tokens: int = 4) -> list[JobSpec]:
    """m1 m2 m3 m1 m2 m3 ...: the order that makes FIFO load a model per job."""
    return [JobSpec(model=models[i % len(models)], type=JobType.GENERATE,
                          request={"prompt": f"job {i}", "options": {"num_predict": tokens}}, use_cache=False)
            for i in range(per_model * len(models))]


# --------------------------------------------------------------------- big stores


def _code_version() -> str:
    """A digest of the package's sources: a cached store is rebuilt by the code measured."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "ollama_cli").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _jsonl(first: int, count: int) -> str:
    """`batch submit` lines of native generate requests, the models interleaved."""
    return "".join(json.dumps({"custom_id": f"q{i}", "model": MODELS[(i - 1) % len(MODELS)],
                               "prompt": f"Say hello, number {i}.", "options": {"num_predict": 16}}) + "\n"
                   for i in range(first, first + count))


def pending_store(jobs: int, chunk: int = 100_000) -> Path:
    """A pristine store of `jobs` pending jobs (ids 1..jobs, models m1 m2 m3 interleaved),
    queued as `batch submit` of `chunk` lines at a time does it. Built once per size and
    code version under /tmp (1,000,000 jobs: about half a minute) and never written to:
    copy it with `working_copy`."""
    version = _code_version()
    path = CACHE / f"pending-{jobs}-{version}"
    if (path / "data.mdb").exists():
        return path
    CACHE.mkdir(exist_ok=True)
    for stale in CACHE.glob(f"pending-{jobs}-*"):  # the same size, built by other code
        shutil.rmtree(stale, ignore_errors=True)
    building = Path(tempfile.mkdtemp(dir=CACHE, prefix="building-"))
    start = time.perf_counter()
    with open_store(building / "store") as store:
        for first in range(1, jobs + 1, chunk):
            specs = parse(_jsonl(first, min(chunk, jobs - first + 1)))
            batch.submit(store, specs, time.time())
    (building / "store").rename(path)
    shutil.rmtree(building)
    print(f"built {path} ({jobs:,} pending) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return path


def one_job_store(folder: Path) -> Path:
    """The baseline: a store holding one pending job, of the first model."""
    path = folder / "one"
    with open_store(path) as store:
        store.submit(interleaved(MODELS[:1], 1)[0], time.time())
    return path


def working_copy(pristine: Path, folder: Path) -> Path:
    """A copy that commands may write to; LMDB's lock file is made anew on open."""
    path = folder / pristine.name
    path.mkdir(mode=0o700)
    shutil.copyfile(pristine / "data.mdb", path / "data.mdb")
    os.chmod(path / "data.mdb", 0o600)
    return path


# ------------------------------------------------------------------------ figures


def cell(values: Sequence[float], fmt: str = ".2f", unit: str = "x") -> str:
    """The median, then the lowest and highest: `1.05x (0.98-1.10)`."""
    med = statistics.median(values)
    return f"{med:{fmt}}{unit} ({min(values):{fmt}}-{max(values):{fmt}})"
