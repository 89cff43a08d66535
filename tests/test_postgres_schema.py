"""The PostgreSQL store's connections and schema: migrations applied once, atomically and
under concurrency; a newer schema refused; passwords never shown; the driver optional."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest

from ollama_cli.errors import ExitCode, OperationFailed, UsageError
from ollama_cli.store.postgres import schema
from ollama_cli.store.postgres.connection import INSTALL_HINT, connect, redact, scrub
from tests.helpers.postgres import PostgresServer


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def _tables(url: str) -> set[str]:
    return {r[0] for r in _rows(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'ollama_q'")}


def test_a_new_database_gets_every_table_and_a_second_open_changes_nothing(pg_url: str) -> None:
    conn = connect(pg_url)
    assert schema.version(conn) == 0
    assert schema.migrate(conn, redact(pg_url)) == schema.LATEST
    assert schema.migrate(conn, redact(pg_url)) == schema.LATEST
    conn.close()
    assert _tables(pg_url) == {"migrations", "jobs", "requests", "results", "dependencies", "cache",
                               "daemons", "meta", "serials", "counts", "stats", "backend_states", "run_progress",
                               "hook_events", "partials"}
    assert _rows(pg_url, "SELECT version FROM migrations ORDER BY version") == \
        [(n,) for n in range(1, schema.LATEST + 1)]


def test_processes_opening_a_new_database_together_apply_each_migration_once(pg_url: str) -> None:
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_it() -> None:
        conn = connect(pg_url)
        try:
            start.wait()
            schema.migrate(conn, "db")
        except BaseException as exc:  # reported below: a thread's exception is lost otherwise
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert _rows(pg_url, "SELECT count(*) FROM migrations") == [(schema.LATEST,)]


def test_a_failed_migration_leaves_nothing_behind(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS + (("broken", "CREATE TABLE jobs (x int)"),))
    monkeypatch.setattr(schema, "LATEST", len(schema.MIGRATIONS))
    conn = connect(pg_url)
    with pytest.raises(Exception, match="already exists"):
        schema.migrate(conn, "db")
    assert schema.version(conn) == 0
    conn.close()
    assert _tables(pg_url) == set()


def test_a_schema_newer_than_the_code_is_refused_without_showing_the_password(
        pg_url: str, postgres_server: PostgresServer) -> None:
    conn = connect(pg_url)
    schema.migrate(conn, redact(pg_url))
    with conn.cursor() as cur:
        cur.execute("INSERT INTO migrations (version, name) VALUES (%s, 'from the future')", (schema.LATEST + 1,))
    conn.commit()
    conn.close()
    secret_url = postgres_server.url(pg_url.rsplit("/", 1)[1], password="hunter2")
    conn = connect(secret_url)
    with pytest.raises(UsageError) as caught:
        schema.migrate(conn, redact(secret_url))
    conn.close()
    message = caught.value.message
    assert caught.value.exit_code is ExitCode.USAGE
    assert f"schema version {schema.LATEST + 1}, newer than" in message and "upgrade ollama-q" in message
    assert "hunter2" not in message and "postgres@127.0.0.1" in message


def test_every_connection_sets_keepalives_and_finds_our_tables(pg_url: str) -> None:
    settings = dict(_rows(pg_url, "SELECT name, setting FROM pg_settings WHERE name IN "
                                  "('tcp_keepalives_idle', 'tcp_keepalives_interval', "
                                  "'tcp_keepalives_count', 'tcp_user_timeout', 'search_path')"))
    assert settings == {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5",
                        "tcp_keepalives_count": "3", "tcp_user_timeout": "25000", "search_path": "ollama_q"}


def test_options_of_the_url_are_kept_beside_ours(pg_url: str) -> None:
    url = pg_url + "?options=-c%20statement_timeout%3D12345"
    assert _rows(url, "SHOW statement_timeout") == [("12345ms",)]
    assert _rows(url, "SHOW search_path") == [("ollama_q",)]


def test_an_unreachable_server_is_one_line_without_the_password(postgres_driver: None) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OperationFailed) as caught:
        connect(f"postgresql://alice:s3cr%40t@127.0.0.1:{port}/queue")
    message = caught.value.message
    assert message.startswith(f"cannot connect to the store at postgresql://alice@127.0.0.1:{port}/queue: ")
    assert "\n" not in message and "s3cr" not in message


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:pw@h:5432/db", "postgresql://u@h:5432/db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("postgres://h/db?sslmode=require&password=pw", "postgres://h/db?sslmode=require"),
    ("postgresql://u:p%40ss@[::1]:5433/db", "postgresql://u@[::1]:5433/db"),
    ("postgresql://u:pw@h1:5432,h2:5432/db", "postgresql://u@h1:5432,h2:5432/db"),
])
def test_urls_are_shown_without_a_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_driver_message_that_echoes_the_password_is_scrubbed() -> None:
    assert scrub("bad password 'p@ss' for u\nDETAIL: more", "postgresql://u:p%40ss@h/db") == \
        "bad password '***' for u"


def test_without_the_driver_a_url_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as if it were not installed
    with pytest.raises(UsageError) as caught:
        connect("postgresql://u:pw@127.0.0.1/db")
    assert caught.value.message == INSTALL_HINT
    assert caught.value.exit_code is ExitCode.USAGE


def test_a_database_copied_from_the_template_is_up_to_date_and_empty(pg_store_url: str) -> None:
    conn = connect(pg_store_url)
    assert schema.version(conn) == schema.LATEST
    conn.close()
    assert _rows(pg_store_url, "SELECT count(*) FROM jobs") == [(0,)]


def test_the_block_counters_migration_counts_the_ready_jobs_of_a_store(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ollama_cli.jobs import JobSpec, JobType, Priority
    from ollama_cli.store.postgres import partials
    from ollama_cli.store.postgres.engine import PostgresEngine

    before = [sql for _, sql in schema.MIGRATIONS].index(schema.BLOCK_COUNTS)
    with monkeypatch.context() as m:  # a store that the version before wrote: no block counters
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:before])
        m.setattr(schema, "LATEST", before)
        m.setattr(partials, "check", lambda tx: [])  # nor a partials table: migrations after this one add it
        with PostgresEngine(pg_url) as old:
            old.submit_many([JobSpec(model="m", type=JobType.GENERATE, request={"prompt": str(i)},
                                     priority=list(Priority)[i % 4]) for i in range(9)], 1.0)
            old._db.write(lambda tx: tx.cur.execute("DELETE FROM counts WHERE name ~ '^r[0-9]+/'"))
            assert any(" is 0, the jobs say " in p for p in old.check())
    with PostgresEngine(pg_url) as new:
        assert new.check() == []
        assert _rows(pg_url, "SELECT max(version) FROM migrations") == [(schema.LATEST,)]
