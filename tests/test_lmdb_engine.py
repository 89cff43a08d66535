"""What only the LMDB engine does: daemon liveness as flock'd files in `<data dir>/daemons/`,
which must not be turned against the user by a folder or file someone else planted there
(the contract suite covers everything the engines share)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from ollama_cli.errors import UsageError
from ollama_cli.jobs import JobSpec, JobType
from ollama_cli.store import open_store
from ollama_cli.store.records import DaemonInfo, Placement, Plan
from tests.helpers.cli import assert_one_error, run_cli

T = 1_000_000.0


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A folder of someone else's, with a file whose name looks like a lock."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "precious.lock").write_text("not ours")
    return folder


def test_a_daemons_folder_that_is_a_link_is_refused_and_nothing_behind_it_is_deleted(
        data_dir: Path, elsewhere: Path) -> None:
    with open_store(data_dir) as store:
        (data_dir / "daemons").symlink_to(elsewhere)
        for use in (store.daemon_lock, lambda: store.reclaim(T), lambda: store.is_alive("precious")):
            with pytest.raises(UsageError, match="daemons is not a folder"):
                use()
    assert (elsewhere / "precious.lock").read_text() == "not ours"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious.lock"]


def test_the_daemon_refuses_a_planted_daemons_link_with_one_error_line(data_dir: Path, elsewhere: Path) -> None:
    assert run_cli(data_dir, "info", "--json").returncode == 0  # makes the store
    (data_dir / "daemons").symlink_to(elsewhere)
    line = assert_one_error(run_cli(data_dir, "daemon", "--drain", "--host", "127.0.0.1:9"), 2)
    assert "daemons is not a folder" in line  # was: it ran, and its sweep deleted precious.lock
    assert (elsewhere / "precious.lock").exists()


def test_a_lock_file_that_is_a_link_is_no_daemon_and_only_the_link_goes(data_dir: Path, elsewhere: Path) -> None:
    fifo = elsewhere / "pipe"
    os.mkfifo(fifo)  # opening it to read would wait for a writer forever
    with open_store(data_dir) as store:
        store.daemon_lock().release()  # makes the folder
        (data_dir / "daemons" / "planted.lock").symlink_to(fifo)
        (data_dir / "daemons" / "precious.lock").symlink_to(elsewhere / "precious.lock")
        answers: list[bool] = []
        looker = threading.Thread(target=lambda: answers.append(store.is_alive("planted")), daemon=True)
        looker.start()
        looker.join(30)
        assert answers == [False]
        assert store.reclaim(T) == []
    assert sorted(p.name for p in (data_dir / "daemons").iterdir()) == []
    assert fifo.exists() and (elsewhere / "precious.lock").read_text() == "not ours"


def test_a_lease_owner_that_names_a_file_elsewhere_deletes_nothing(data_dir: Path, tmp_path: Path) -> None:
    # Lease owners and daemon ids are read from the store, which another process may have
    # written: "../../x" must not reach <data dir>/../x.lock.
    victim = tmp_path / "victim.lock"
    victim.write_text("keep me")
    with open_store(data_dir) as store:
        store.daemon_lock().release()
        store.register(DaemonInfo("../../victim", 1, [], 1, T, T))
        store.submit(JobSpec(model="m", type=JobType.GENERATE, request={"prompt": "p"}), T)
        store.settle_and_claim([], T, owner="../../victim", planner=lambda jobs, _: Plan(
            [Placement(0, "http://h:1", (j,)) for j in jobs]))
        assert not store.is_alive("../../victim")
        assert [j.id for j in store.reclaim(T)] == [1]
    assert victim.read_text() == "keep me"


def test_a_daemon_lock_file_is_private(data_dir: Path) -> None:
    with open_store(data_dir) as store:
        lock = store.daemon_lock()
        folder = data_dir / "daemons"
        assert oct(folder.stat().st_mode & 0o777) == oct(0o700)
        assert oct((folder / f"{lock.id}.lock").stat().st_mode & 0o777) == oct(0o600)
        lock.release()
        assert not (folder / f"{lock.id}.lock").exists()
