"""Other processes in tests: `ollama-q daemon` (`DaemonProcess`), Python snippets
(`run_python`, `start_python`) such as the submitter and the stuck writer, a pipe read line
by line as it comes (`Lines`) or as it comes whatever it holds (`Output`), and a port nothing
listens on (`free_port`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tests.helpers.cli import cli_env

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port the kernel just gave out and took back: nothing listens there, as at a
    backend that is down (until a test starts one on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lines:
    """A pipe read to its end on a thread of its own, so that a test awaits a line (or a
    number of lines) instead of polling for it."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._lines: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._reader.start()

    def _read(self, pipe: IO[bytes]) -> None:
        for raw in pipe:
            with self._changed:
                self._lines.append(raw.decode(errors="replace"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def read(self) -> list[str]:
        """The lines so far; the last lacks its newline if the writer died mid-line."""
        with self._changed:
            return list(self._lines)

    def wait_for(self, done: Callable[[list[str]], bool], timeout: float = 30) -> bool:
        """Until `done(lines)` holds (True) or the pipe ends or time runs out without it."""
        with self._changed:
            self._changed.wait_for(lambda: self._ended or done(self._lines), timeout)
            return done(self._lines)

    def join(self, timeout: float = 10) -> None:
        """Until the pipe has been read to its end (its writer has exited)."""
        self._reader.join(timeout)


class Output:
    """A pipe read as it comes, whatever it holds (text without a newline too), on a thread
    of its own, so that a test awaits what a process printed instead of polling for it."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._data = b""
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._reader.start()

    def _read(self, pipe: IO[bytes]) -> None:
        while chunk := os.read(pipe.fileno(), 65536):
            with self._changed:
                self._data += chunk
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def text(self) -> str:
        with self._changed:
            return self._data.decode(errors="replace")

    def wait_for(self, done: Callable[[str], bool], timeout: float = 30) -> bool:
        """Until `done(text so far)` holds (True) or the pipe ends or time runs out without it."""
        with self._changed:
            self._changed.wait_for(lambda: self._ended or done(self._data.decode(errors="replace")), timeout)
            return done(self._data.decode(errors="replace"))

    def join(self, timeout: float = 10) -> None:
        self._reader.join(timeout)


class DaemonProcess:
    """`ollama-q daemon` in its own process. Its log (stderr) is read line by line, so a
    test can await a line instead of polling for it."""

    def __init__(self, data_dir: Path, host: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ollama_cli", "daemon", "--host", host, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env(data_dir),
        )
        assert self.proc.stderr is not None
        self._log = Lines(self.proc.stderr)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if self.proc.poll() is not None:
            self._log.join()  # an exited daemon's log is complete once read to the end
        return "".join(self._log.read())

    def wait_log(self, text: str, timeout: float = 30) -> bool:
        """Until the daemon has logged `text` (its log is the only signal it gives)."""
        return self._log.wait_for(lambda lines: text in "".join(lines), timeout)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.join()


def run_python(code: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`code` in a separate process (its own LMDB environment handle, its own imports), as
    another command would be; run to its end."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)


def start_python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`code` in a separate process that runs on beside the test, its output piped."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)


# Submits `count` generate jobs, one transaction each, printing "<id> <prompt>" once each
# is committed (acknowledged), with a random pause of up to `pause` seconds after each.
SUBMITTER = """
import random, sys, time
from ollama_cli.jobs import JobSpec, JobType
from ollama_cli.store import open_store

location, tag, count, pause, seed, max_attempts = sys.argv[1:]
rng = random.Random(int(seed))
store = open_store(location)
for i in range(int(count)):
    spec = JobSpec(model="llama3.2", type=JobType.GENERATE, request={"prompt": f"{tag} {i}"},
                   max_attempts=int(max_attempts))
    job = store.submit(spec, store.now())
    print(job.id, spec.request["prompt"], flush=True)
    if float(pause):
        time.sleep(rng.uniform(0, float(pause)))
store.close()
"""


def start_submitter(location: Path | str, tag: str, count: int, *, pause: float = 0.0, seed: int = 0,
                    max_attempts: int = 4) -> subprocess.Popen[bytes]:
    """A process submitting jobs with prompts "<tag> 0", "<tag> 1"... to the store at `location`
    (a data dir, or a PostgreSQL URL): read its stdout with `acknowledged`."""
    env = cli_env(location) if isinstance(location, Path) else dict(os.environ)
    return start_python(SUBMITTER, str(location), tag, str(count), str(pause), str(seed), str(max_attempts),
                        env=env)


def acknowledged(out: str) -> dict[int, str]:
    """id -> prompt of each submission the submitter acknowledged: a line cut short by a kill
    was not."""
    found = {}
    for line in out.splitlines(keepends=True):
        if line.endswith("\n"):
            job_id, prompt = line.rstrip("\n").split(" ", 1)
            found[int(job_id)] = prompt
    return found


STUCK_WRITER = """
import sys, threading, time
from ollama_cli.store.lmdb import Store

store = Store(sys.argv[1])

def stuck(tx):
    tx.put("meta", b"half-written", b"x" * 100_000)
    print("inside", flush=True)
    time.sleep(600)

# On a thread of its own: LMDB's writer lock names a thread id, which then is not the pid.
threading.Thread(target=store.write, args=(stuck,)).start()
"""


def start_stuck_writer(data_dir: Path) -> subprocess.Popen[bytes]:
    """A process inside a write transaction that never ends, once it has put 100 KB under
    b"half-written" in the meta table. Returns once it is inside."""
    writer = start_python(STUCK_WRITER, str(data_dir), env=cli_env(data_dir))
    assert writer.stdout is not None
    assert writer.stdout.readline() == b"inside\n"
    return writer
