"""A damaged data.mdb gets one clear answer instead of a crash or a new store. Real
processes throughout."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ollama_cli.store.lmdb import Store
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def submit(data_dir: Path, *args: str) -> int:
    out = run_cli(data_dir, "submit", "llama3.2", *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["id"]


def one_error(out: subprocess.CompletedProcess[str], code: int) -> str:
    lines = out.stderr.splitlines()
    assert out.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), \
        (out.returncode, out.stderr)
    return lines[0]


# ----------------------------------------------------------------- damaged data.mdb


def grown_store(data_dir: Path) -> None:
    """A store of some megabytes, so that half of it cuts into committed pages."""
    submit(data_dir, "the first job")
    with Store(data_dir) as store:
        store.write(lambda tx: [tx.put("meta", b"filler-%d" % i, b"x" * 3000) for i in range(1000)])


def test_a_truncated_data_mdb_is_refused_not_a_crash(data_dir: Path) -> None:
    grown_store(data_dir)
    data = data_dir / "data.mdb"
    size = data.stat().st_size
    os.truncate(data, size // 2)
    for command in (["list"], ["status", "1"], ["submit", "m", "x"]):
        line = one_error(run_cli(data_dir, *command), 1)  # was: killed by SIGBUS, no message
        assert line == f"error: {data} is damaged: {size // 2} bytes, but its last committed page ends at " \
                       f"byte {size} (truncated?). Restore it from a backup; nothing was changed"
    assert data.stat().st_size == size // 2


def test_an_empty_data_mdb_beside_its_lock_file_is_not_a_new_store(data_dir: Path) -> None:
    submit(data_dir, "the first job")
    data = data_dir / "data.mdb"
    os.truncate(data, 0)
    for command in (["list"], ["submit", "m", "x"]):
        line = one_error(run_cli(data_dir, *command), 1)  # was: a new store, ids from 1 again
        assert line == f"error: {data} is empty: the store lost its data (truncated?). Restore data.mdb from " \
                       "a backup, or delete data.mdb and lock.mdb to start an empty store"
    assert data.stat().st_size == 0
