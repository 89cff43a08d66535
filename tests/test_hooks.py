"""`daemon --on-finish`: a command per finished job, with its JSON and variables, at least
once (across a `kill -9` of the daemon), its failures logged and harmless, and `--drain`
waiting for it. The store's side (events, claims) is in tests/contract/test_hooks_contract.py."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_cli.jobs import JobStatus
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from tests.emulator import Emulator
from tests.helpers.cli import assert_one_error, run_cli, run_main, submit_id
from tests.helpers.daemon import drain
from tests.helpers.jobs import make_spec, submit_spec

# Each hook writes its own files: two hooks at once must not interleave their lines.
RECORDING = ('cat > {dir}/"$OLLAMA_Q_JOB_ID.json"; printf "%s|%s|%s|%s\\n" "$OLLAMA_Q_JOB_STATUS" '
             '"$OLLAMA_Q_JOB_MODEL" "$OLLAMA_Q_JOB_NAME" "$OLLAMA_Q_JOB_BATCH" > {dir}/"$OLLAMA_Q_JOB_ID.env"')


@pytest.fixture(params=["lmdb", "postgresql"])
def engine(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Engine]:
    location = data_dir if request.param == "lmdb" else request.getfixturevalue("pg_store_url")
    with open_store(location) as store:
        yield store


def ran(folder: Path) -> dict[int, tuple[dict[str, object], str]]:
    """Job id -> (the JSON its hook read, the variables it saw)."""
    return {int(p.stem): (json.loads(p.read_text()), (folder / f"{p.stem}.env").read_text().strip())
            for p in folder.glob("*.json")}


def test_a_hook_runs_for_each_finished_job_with_its_json_and_variables_before_drain_exits(
        engine: Engine, emulator: Emulator, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    before = engine.submit(make_spec(model="llama3.2"), engine.now()).id
    engine.cancel([before], engine.now())  # no daemon has said it runs hooks yet: no event
    done = submit_spec(engine, "first", name="nightly", now=engine.now())
    batch, (in_batch,) = engine.submit_batch([make_spec("second", model="llama3.2")], engine.now())
    drain(engine, emulator.url, on_finish=RECORDING.format(dir=shlex.quote(str(hooks))))
    assert engine.hook_events_pending() == 0  # --drain waited for them
    seen = ran(hooks)
    assert sorted(seen) == [done, in_batch.id]
    assert seen[done][0] == engine.get_job(done).to_json()
    assert seen[done][1] == "completed|llama3.2|nightly|"
    assert seen[in_batch.id][1] == f"completed|llama3.2||{batch}"
    # Hooks are recorded for a while after a daemon that runs them stops: a cancel by the CLI
    # meanwhile (and a failed dependent) has its hook run by the next daemon.
    parent = submit_spec(engine, now=engine.now())
    child = submit_spec(engine, now=engine.now(), after=(parent,))
    engine.cancel([parent], engine.now())
    drain(engine, emulator.url, on_finish=RECORDING.format(dir=shlex.quote(str(hooks))))
    seen = ran(hooks)
    assert seen[parent][1].startswith("cancelled|") and seen[child][1].startswith("failed|")
    assert seen[child][0]["error"] == {"type": "dependency_failed",
                                       "message": "a job it depends on failed or was cancelled"}


def test_a_hook_that_fails_or_outlives_its_timeout_is_logged_and_changes_nothing(
        store: Engine, emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ollama_q")
    first = submit_spec(store, now=store.now())
    drain(store, emulator.url, on_finish="cat >/dev/null; exit 3")
    assert f"hook for job {first} exited with 3" in caplog.text
    second = submit_spec(store, now=store.now())
    # `exec`: the shell is the sleep, so the kill of its group is what ends it.
    drain(store, emulator.url, on_finish="exec sleep 60", hook_timeout=0.3)
    assert f"hook for job {second} killed after 0.3s (--hook-timeout)" in caplog.text
    assert [store.get_job(i).status for i in (first, second)] == [JobStatus.COMPLETED] * 2
    assert store.hook_events_pending() == 0  # run is run, whatever it came to


def test_bad_hook_options_are_refused_before_anything_runs(data_dir: Path) -> None:
    for args, message in ((["--hook-timeout", "0"], "--hook-timeout must be more than 0"),
                          (["--hook-timeout", "soon"], "invalid duration 'soon'"),
                          (["--on-finish", " "], "--on-finish must be a non-empty string")):
        assert message in assert_one_error(run_main("daemon", *args), 2)
        assert not data_dir.exists()


@pytest.mark.slow
def test_a_hook_cut_short_by_a_kill_9_of_its_daemon_is_run_by_the_next(
        data_dir: Path, emulator: Emulator, tmp_path: Path, start_daemon: object) -> None:
    log, release, started = tmp_path / "hooks.log", tmp_path / "release", tmp_path / "started"
    os.mkfifo(started)
    job = submit_id(data_dir, "llama3.2", "hello")
    first = start_daemon(emulator.url, "--on-finish",  # type: ignore[operator]
                         f'echo "first $OLLAMA_Q_JOB_ID" >> {log}; echo "$OLLAMA_Q_JOB_ID" > {started}; '
                         f'while [ ! -e {release} ]; do sleep 0.05; done')
    try:
        assert started.read_text() == f"{job}\n"  # the hook has begun (the read waits for it)
        first.signal(signal.SIGKILL)
        first.wait()
        res = run_cli(data_dir, "daemon", "--host", emulator.url, "--drain", "--on-finish",
                      f'echo "second $OLLAMA_Q_JOB_ID $OLLAMA_Q_JOB_STATUS" >> {log}')
        assert res.returncode == 0, res.stderr
        assert f"second {job} completed" in log.read_text().splitlines()
        with open_store(data_dir) as store:
            assert store.hook_events_pending() == 0
    finally:
        release.touch()  # the first daemon's hook, orphaned, ends
