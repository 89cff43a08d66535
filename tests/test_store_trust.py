"""A data dir that someone else prepared is not trusted: a folder of another user, or one
open to group and others, and store files that are symbolic links or someone else's, are
refused with one `error:` line and exit 2, before anything is read or written there.

Another user is uid 65534 (nobody): the tests run as root here and in CI, and root can
give files away; elsewhere they are skipped."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ollama_cli.jobs import JobSpec, JobType
from ollama_cli.store import open_store
from tests.helpers.cli import assert_one_error, run_main

OTHER_UID = 65534


def give_away(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a file of another uid needs root (CI runs as root)")
    os.chown(path, OTHER_UID, OTHER_UID, follow_symlinks=False)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    """A store with one job in it, made by the user."""
    path = tmp_path / "store"
    with open_store(path) as store:
        store.submit(JobSpec(model="m", type=JobType.GENERATE, request={"prompt": "a private prompt"}), 0.0)
    return path


def planted_link(name: str) -> Callable[[Path], str]:
    def plant(path: Path) -> str:
        elsewhere = path.parent / f"their-{name}"
        (path / name).rename(elsewhere)
        (path / name).symlink_to(elsewhere)
        return f"{path / name} is a symbolic link"
    return plant


def foreign(name: str) -> Callable[[Path], str]:
    def plant(path: Path) -> str:
        give_away(path / name)
        return f"{path / name} belongs to uid {OTHER_UID}"
    return plant


def foreign_folder(mode: int) -> Callable[[Path], str]:
    def plant(path: Path) -> str:
        os.chmod(path, mode)
        give_away(path)
        return f"the data dir {path} belongs to uid {OTHER_UID}"
    return plant


def open_folder(mode: int) -> Callable[[Path], str]:
    def plant(path: Path) -> str:
        os.chmod(path, mode)
        return f"the data dir {path} is open to other users (mode {mode:04o}): if what it holds is yours, " \
               f"run `chmod 700 {path}`"
    return plant


CASES = {
    "folder of another user": foreign_folder(0o700),
    "world-writable folder of another user": foreign_folder(0o777),
    "folder readable by group": open_folder(0o750),
    "folder readable by others": open_folder(0o705),
    "folder writable by all": open_folder(0o777),
    "data.mdb a symlink": planted_link("data.mdb"),
    "lock.mdb a symlink": planted_link("lock.mdb"),
    "data.mdb of another user": foreign("data.mdb"),
    "lock.mdb of another user": foreign("lock.mdb"),
}


@pytest.mark.parametrize("command", [["list"], ["submit", "m", "a new private prompt"]], ids=["read", "write"])
@pytest.mark.parametrize("case", CASES)
def test_a_store_someone_else_prepared_is_refused(existing: Path, case: str, command: list[str]) -> None:
    expected = CASES[case](existing)
    before = snapshot(existing.parent)
    inside = snapshot(existing)
    line = assert_one_error(run_main(*command, "--data-dir", str(existing)), 2)
    assert line.startswith(f"error: {expected}"), line
    assert snapshot(existing.parent) == before and snapshot(existing) == inside  # nothing written


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store"
    path.write_bytes(b"")
    line = assert_one_error(run_main("list", "--data-dir", str(path)), 2)
    assert line == f"error: the data dir {path} is not a folder: give a folder with --data-dir or OLLAMA_Q_DATA_DIR"


def test_chmod_700_as_the_error_says_makes_an_open_folder_usable(existing: Path) -> None:
    os.chmod(existing, 0o755)
    assert_one_error(run_main("list", "--data-dir", str(existing)), 2)
    os.chmod(existing, 0o700)
    done = run_main("submit", "m", "again", "--data-dir", str(existing))
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_a_folder_of_ones_own_that_is_private_is_used_through_a_symlink(existing: Path) -> None:
    # A data dir reached through a link (a home on another disk) is judged by the folder itself.
    link = existing.parent / "link"
    link.symlink_to(existing)
    assert run_main("list", "--data-dir", str(link)).returncode == 0
    assert stat.S_IMODE(existing.stat().st_mode) == 0o700
