"""The store's files damaged, its disk full, its lock file deleted under a daemon, its
writer suspended: each gets one clear answer instead of a crash, a traceback, a new
store or a silent hang. Real processes throughout, and a real full disk (a small tmpfs,
skipped where it cannot be mounted)."""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_cli.store.lmdb import Store
from tests.emulator import Emulator
from tests.helpers.cli import assert_one_error, cli_env, run_cli, status_json, submit_id
from tests.helpers.invariants import check_invariants
from tests.helpers.processes import DaemonProcess, start_stuck_writer

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------- damaged data.mdb


def grown_store(data_dir: Path) -> None:
    """A store of some megabytes, so that half of it cuts into committed pages."""
    submit_id(data_dir, "llama3.2", "the first job")
    with Store(data_dir) as store:
        store.write(lambda tx: [tx.put("meta", b"filler-%d" % i, b"x" * 3000) for i in range(1000)])


def test_a_truncated_data_mdb_is_refused_not_a_crash(data_dir: Path) -> None:
    grown_store(data_dir)
    data = data_dir / "data.mdb"
    size = data.stat().st_size
    os.truncate(data, size // 2)
    for command in (["list"], ["status", "1"], ["submit", "m", "x"]):
        line = assert_one_error(run_cli(data_dir, *command), 1)  # was: killed by SIGBUS, no message
        assert line == f"error: {data} is damaged: {size // 2} bytes, but its last committed page ends at " \
                       f"byte {size} (truncated?). Restore it from a backup; nothing was changed"
    assert data.stat().st_size == size // 2


def test_an_empty_data_mdb_beside_its_lock_file_is_not_a_new_store(data_dir: Path) -> None:
    submit_id(data_dir, "llama3.2", "the first job")
    data = data_dir / "data.mdb"
    os.truncate(data, 0)
    for command in (["list"], ["submit", "m", "x"]):
        line = assert_one_error(run_cli(data_dir, *command), 1)  # was: a new store, ids from 1 again
        assert line == f"error: {data} is empty: the store lost its data (truncated?). Restore data.mdb from " \
                       "a backup, or delete data.mdb and lock.mdb to start an empty store"
    assert data.stat().st_size == 0


# --------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir(mode=0o700)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
                              capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def disk_dir(small_disk: Path) -> Path:
    """A data dir on the small disk."""
    return small_disk / "store"


def fill(disk: Path) -> Path:
    """Fill the disk up to its last byte; the file that does it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * 4096
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return filler


def test_a_full_disk_is_one_error_line_and_nothing_written(disk_dir: Path, small_disk: Path) -> None:
    first = submit_id(disk_dir, "llama3.2", "fits")
    filler = fill(small_disk)
    big = "a prompt that needs new pages " * 8000  # 240 KB: more than the store's free pages
    line = assert_one_error(run_cli(disk_dir, "submit", "llama3.2", input=big), 1)  # was: a traceback
    assert line == f"error: the disk holding the store in {disk_dir} is full: nothing was written; " \
                   "free some space and try again"
    filler.unlink()
    listed = json.loads(run_cli(disk_dir, "list", "--json").stdout)
    assert [j["id"] for j in listed] == [first]
    again = run_cli(disk_dir, "submit", "llama3.2", "--json", input=big)
    assert json.loads(again.stdout)["id"] == first + 1, again.stderr
    check_invariants(disk_dir)


def test_the_daemon_waits_out_a_full_disk_and_records_the_job_after(
        disk_dir: Path, small_disk: Path, emulator: Emulator) -> None:
    # About 150 KB of answer: its record needs pages the full disk cannot give.
    job_id = submit_id(disk_dir, "llama3.2", "a long answer", "-o", "num_predict=25000")
    emulator.hold()
    daemon = DaemonProcess(disk_dir, emulator.url)
    try:
        assert emulator.wait_in_flight(1)
        filler = fill(small_disk)
        emulator.release()
        # Was: the daemon died with a traceback, leaving the job running until a restart.
        assert daemon.wait_log("is full: nothing was written; free some space and try again; trying again in"), \
            daemon.log()
        filler.unlink()
        out = run_cli(disk_dir, "result", str(job_id), "--wait", "--timeout", "60s", "--json")
        assert out.returncode == 0, out.stderr + daemon.log()
        assert daemon.proc.poll() is None
    finally:
        daemon.stop()  # before the disk goes
    job = status_json(disk_dir, job_id)
    assert job["status"] == "completed" and job["attempts"] == 1
    check_invariants(disk_dir)


# ------------------------------------------------------------ lock.mdb deleted


def test_a_daemon_stops_loudly_when_lock_mdb_is_deleted(
        data_dir: Path, emulator: Emulator, start_daemon) -> None:
    daemon = start_daemon(emulator.url)
    (data_dir / "lock.mdb").unlink()
    # A submit now makes a new lock.mdb: acknowledged, it must survive the old daemon.
    job_id = submit_id(data_dir, "llama3.2", "after the deletion")
    assert daemon.wait(30) == 1  # was: ran on, writing past the new lock
    assert f"{data_dir / 'lock.mdb'} was deleted or replaced" in daemon.log()
    assert status_json(data_dir, job_id)["status"] == "pending"
    assert start_daemon(emulator.url, "--drain", wait=False).wait(60) == 0
    assert status_json(data_dir, job_id)["status"] == "completed"
    check_invariants(data_dir)


# --------------------------------------------------------------- a suspended writer


def test_a_writer_blocked_by_a_suspended_one_says_so_once(data_dir: Path) -> None:
    first = submit_id(data_dir, "llama3.2", "before")
    writer = start_stuck_writer(data_dir)
    try:
        writer.send_signal(signal.SIGSTOP)  # Ctrl-Z
        blocked = subprocess.Popen([sys.executable, "-m", "ollama_cli", "submit", "llama3.2", "x", "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(data_dir))
        ready, _, _ = select.select([blocked.stderr], [], [], 60)
        assert ready, "no word from a blocked writer"  # was: silence
        line = blocked.stderr.readline().decode()
        assert line == f"warning: waiting for another ollama-q process that holds the store (pid {writer.pid}; " \
                       f"if it is suspended, `kill -CONT {writer.pid}` or `fg` resumes it)\n"
    finally:
        writer.kill()
        writer.communicate()
    out, err = blocked.communicate(timeout=60)
    assert blocked.returncode == 0 and err == b"", err
    assert json.loads(out)["id"] == first + 1
