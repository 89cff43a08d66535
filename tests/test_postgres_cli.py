"""Choosing the PostgreSQL engine from the command line (`--store`, OLLAMA_Q_STORE), what `info`
says of it, and the password of a store URL, which no output, log or error ever shows. The CLI's
contract on PostgreSQL is tests/test_cli.py's, which runs on both engines."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from tests.emulator import Emulator
from tests.helpers.cli import assert_one_error, ok_json, run_cli, run_main

SECRET = "s3cr%40t"  # in the URL; the password itself is "s3cr@t"


def with_password(url: str) -> str:
    """The URL with a password (the test server trusts every local connection, and ignores it)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")


def never_shown(*texts: str) -> None:
    for text in texts:
        assert "s3cr" not in text, text


def test_store_flag_and_variable_select_postgresql_and_info_says_so_without_the_password(
        data_dir: Path, pg_store_url: str) -> None:
    url = with_password(pg_store_url)
    submitted = run_cli(data_dir, "submit", "llama3.2", "hi", "--json", "--store", url)
    assert ok_json(submitted)["id"] == 1
    info = run_cli(data_dir, "info", "--json", OLLAMA_Q_STORE=url)
    data = ok_json(info)
    assert data["store"] == {"engine": "postgresql", "location": pg_store_url}
    assert data["jobs"]["total"] == 1 and data["data_dir"] == pg_store_url
    human = run_cli(data_dir, "info", "--store", url)
    assert human.returncode == 0 and "postgresql" in human.stdout
    missing = run_cli(data_dir, "status", "7", "--store", url)
    assert_one_error(missing, 1)
    never_shown(submitted.stdout, submitted.stderr, info.stdout, info.stderr, human.stdout, human.stderr,
                missing.stderr)
    assert not data_dir.exists()  # nothing of LMDB was made


def test_the_flag_wins_over_the_variable(data_dir: Path, pg_store_url: str, tmp_path: Path) -> None:
    ok_json(run_cli(data_dir, "submit", "llama3.2", "hi", "--json", "--store", str(tmp_path / "q"),
                    OLLAMA_Q_STORE=pg_store_url))
    assert (tmp_path / "q" / "data.mdb").exists()
    assert ok_json(run_cli(data_dir, "info", "--json", OLLAMA_Q_STORE=pg_store_url))["jobs"]["total"] == 0


def test_an_unreachable_server_is_one_error_line_without_the_password(data_dir: Path, postgres_driver: None) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run_cli(data_dir, "submit", "llama3.2", "hi", "--store", f"postgresql://q:{SECRET}@127.0.0.1:{port}/q")
    line = assert_one_error(res, 1)
    assert f"postgresql://q@127.0.0.1:{port}/q" in line
    never_shown(res.stderr)


@pytest.mark.parametrize("url", ["mysql://q:s3cr@t@db/q", "postgresql://q:s3cr@t@[::1/q"])
def test_a_store_url_that_is_not_postgresql_or_not_a_url_is_a_usage_error(data_dir: Path, url: str) -> None:
    res = run_main("submit", "llama3.2", "hi", "--store", url)
    assert_one_error(res, 2)
    never_shown(res.stderr)
    assert not data_dir.exists()


def test_without_the_driver_a_url_says_what_to_install_and_exits_2(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as if it were not installed
    for args in (["submit", "llama3.2", "hi"], ["info", "--json"], ["daemon"]):
        res = run_main(*args, "--store", f"postgresql://q:{SECRET}@127.0.0.1:1/q")
        assert "pip install 'ollama-q[postgres]'" in assert_one_error(res, 2)
        never_shown(res.stderr)
    assert not data_dir.exists()


def test_a_daemon_log_never_shows_the_password(data_dir: Path, pg_store_url: str, emulator: Emulator) -> None:
    url = with_password(pg_store_url)
    ok_json(run_cli(data_dir, "submit", "llama3.2", "hi", "--json", "--store", url))
    res = run_cli(data_dir, "daemon", "--drain", "--host", emulator.url, "--store", url)
    assert res.returncode == 0, res.stderr
    assert "completed" in res.stderr
    never_shown(res.stdout, res.stderr)


def test_store_before_the_command_name_and_a_read_makes_no_tables_where_the_flag_points(
        data_dir: Path, pg_url: str) -> None:
    # pg_url: a database without our tables. A read where --store points is an error (a
    # mistyped URL must not become an empty queue); a write makes the tables.
    missing = run_cli(data_dir, "--store", pg_url, "status", "1")
    assert "no store at" in assert_one_error(missing, 1)
    assert_one_error(run_cli(data_dir, "--store", pg_url, "list"), 1)
    assert ok_json(run_cli(data_dir, "--store", pg_url, "submit", "llama3.2", "hi", "--json"))["id"] == 1
    assert ok_json(run_cli(data_dir, "--store", pg_url, "--json", "status", "1"))["id"] == 1
    assert ok_json(run_cli(data_dir, "info", "--json", OLLAMA_Q_STORE=pg_url))["store"]["engine"] == "postgresql"


def test_info_ages_a_heartbeat_on_the_servers_clock_not_this_hosts(
        data_dir: Path, pg_store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The server runs on this machine; this process's wall clock is then set an hour ahead, as
    # a host whose clock is wrong: a daemon that beat just now must not look an hour silent.
    import time

    from ollama_cli.store.postgres.engine import PostgresEngine
    from ollama_cli.store.records import DaemonInfo

    with PostgresEngine(pg_store_url) as daemon:
        lock = daemon.daemon_lock()
        t = daemon.now()
        daemon.register(DaemonInfo(lock.id, 1, ["http://127.0.0.1:11434"], 2, t, t))
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3600)
        res = run_main("info", "--store", pg_store_url)
    assert res.returncode == 0, res.stderr
    assert "heartbeat 0s ago" in " ".join(res.stdout.split()), res.stdout


def test_the_stores_clock_stays_the_servers_when_this_hosts_clock_is_set(
        pg_store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A daemon runs for weeks; its host's clock may be stepped meanwhile (NTP, a person).
    import time

    from ollama_cli.store.postgres.engine import PostgresEngine

    with PostgresEngine(pg_store_url) as store:
        before, real = store.now(), time.time
        monkeypatch.setattr(time, "time", lambda: real() - 3600)
        assert abs(store.now() - before) < 60
