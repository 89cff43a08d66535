"""`result ID --follow` from outside, on both engines: the real CLI in a subprocess following a
job that a real daemon process runs against the emulator, which holds the stream after its
first piece (`Emulator.hold`) so that the test sees text printed while the job still runs,
without sleeping. A new attempt (its daemon killed mid-stream, the next one taking the job
back), a cancel, --json, and bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulator import Emulator
from tests.helpers.cli import assert_one_error, cli_env, ok_json, run_cli, run_main, status_json, submit_id
from tests.helpers.processes import DaemonProcess, Output


class Follower:
    """`ollama-q result ID --follow ...` in its own process, its stdout and stderr read as they come."""

    def __init__(self, data_dir: Path, job_id: int, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "ollama_cli", "result", str(job_id), "--follow", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(data_dir))
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out, self.err = Output(self.proc.stdout), Output(self.proc.stderr)

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self.out.join()
        self.err.join()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def spawned() -> Iterator[list[Follower | DaemonProcess]]:
    """What a test starts, stopped when it ends, however it ends."""
    procs: list[Follower | DaemonProcess] = []
    yield procs
    for proc in procs:
        proc.kill() if isinstance(proc, Follower) else proc.stop()


@pytest.fixture
def held(emulator: Emulator) -> Iterator[Emulator]:
    """The emulator, parking every answer after its first piece until released."""
    emulator.hold()
    yield emulator
    emulator.release()


def started(spawned: list[Follower | DaemonProcess], data_dir: Path, emulator: Emulator) -> DaemonProcess:
    daemon = DaemonProcess(data_dir, emulator.url)
    spawned.append(daemon)
    assert daemon.wait_log("started"), daemon.log()
    return daemon


def following(spawned: list[Follower | DaemonProcess], data_dir: Path, job_id: int, *args: str) -> Follower:
    follower = Follower(data_dir, job_id, *args)
    spawned.append(follower)
    return follower


def answer(data_dir: Path, job_id: int) -> str:
    res = run_cli(data_dir, "result", str(job_id))
    assert res.returncode == 0, res.stderr
    return res.stdout


def a_job(data_dir: Path) -> int:
    return submit_id(data_dir, "llama3.2", "tell me", "-o", "num_predict=12")


def first_piece(follower: Follower) -> str:
    """What the follower printed once it printed something."""
    assert follower.out.wait_for(lambda text: text != ""), follower.err.text()
    return follower.out.text()


@pytest.mark.usefixtures("each_engine")
def test_follow_waits_while_pending_prints_the_answer_as_it_streams_and_exits_0(
        data_dir: Path, held: Emulator, spawned: list) -> None:
    job = a_job(data_dir)
    follower = following(spawned, data_dir, job)  # before any daemon: it waits
    started(spawned, data_dir, held)
    shown = first_piece(follower)
    assert status_json(data_dir, job)["status"] == "running"  # printed while the job runs
    held.release()
    assert follower.finish() == 0, follower.err.text()
    final = answer(data_dir, job)
    assert follower.out.text() == final and final.startswith(shown) and len(final) > len(shown) + 1
    assert "attempt" not in follower.err.text() and "error" not in follower.err.text()


@pytest.mark.usefixtures("each_engine")
def test_a_new_attempt_starts_the_text_over_and_says_so_on_stderr(
        data_dir: Path, held: Emulator, spawned: list) -> None:
    job = a_job(data_dir)
    first = started(spawned, data_dir, held)
    follower = following(spawned, data_dir, job)
    piece = first_piece(follower)
    first.signal(signal.SIGKILL)  # mid-stream: the next daemon takes the job back and runs it again
    first.wait()
    started(spawned, data_dir, held)
    assert follower.err.wait_for(lambda text: "attempt 2 started" in text), follower.err.text()
    assert follower.out.wait_for(lambda text: text.count(piece) == 2), follower.out.text()
    held.release()
    assert follower.finish() == 0, follower.err.text()
    assert follower.out.text() == piece + "\n" + answer(data_dir, job)
    assert follower.err.text().startswith(f"warning: job {job}: attempt 2 started") \
        and follower.err.text().count("\n") == 1


@pytest.mark.usefixtures("each_engine")
def test_a_cancel_ends_the_follow_with_exit_1(data_dir: Path, held: Emulator, spawned: list) -> None:
    job = a_job(data_dir)
    started(spawned, data_dir, held)
    follower = following(spawned, data_dir, job)
    piece = first_piece(follower)
    assert run_cli(data_dir, "cancel", str(job)).returncode == 0
    assert follower.finish() == 1
    assert follower.out.text() == piece + "\n"
    assert follower.err.text() == f"error: job {job} was cancelled\n"


@pytest.mark.usefixtures("each_engine")
def test_follow_json_prints_only_the_final_result_object(data_dir: Path, held: Emulator, spawned: list) -> None:
    job = a_job(data_dir)
    follower = following(spawned, data_dir, job, "--json")
    started(spawned, data_dir, held)
    held.wait_in_flight(1)
    held.release()
    assert follower.finish() == 0, follower.err.text()
    assert json.loads(follower.out.text()) == ok_json(run_cli(data_dir, "result", str(job), "--json"))


@pytest.mark.usefixtures("each_engine")
def test_an_embed_job_is_waited_for_and_printed_as_result_prints_it(
        data_dir: Path, emulator: Emulator, spawned: list) -> None:
    job = submit_id(data_dir, "all-minilm", "--type", "embed", "--input", "a")
    follower = following(spawned, data_dir, job)
    started(spawned, data_dir, emulator)
    assert follower.finish() == 0, follower.err.text()
    assert follower.out.text() == answer(data_dir, job)


def test_follow_of_a_failed_job_exits_1_saying_why(data_dir: Path) -> None:
    job = submit_id(data_dir, "llama3.2", "x")
    assert run_cli(data_dir, "cancel", str(job)).returncode == 0
    res = run_cli(data_dir, "result", str(job), "--follow")
    assert (res.returncode, res.stdout, res.stderr) == (1, "", f"error: job {job} was cancelled\n")


@pytest.mark.parametrize("args", [["1", "2", "--follow"], ["x", "--follow"], ["1", "--follow", "--timeout", "soon"]])
def test_bad_follow_input_is_refused_with_exit_2(data_dir: Path, args: list[str]) -> None:
    run_main("submit", "llama3.2", "x")
    assert_one_error(run_main("result", *args), 2)


def test_follow_of_an_unknown_job_exits_1(data_dir: Path) -> None:
    assert_one_error(run_main("result", "7", "--follow"), 1)


def test_follow_gives_up_after_its_timeout_with_exit_1(data_dir: Path) -> None:
    job = submit_id(data_dir, "llama3.2", "x")
    res = run_cli(data_dir, "result", str(job), "--follow", "--timeout", "0.3s")
    assert res.returncode == 1 and res.stdout == "" and "still pending after the timeout" in res.stderr
