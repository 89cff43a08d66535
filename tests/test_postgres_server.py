"""The private PostgreSQL server the suite runs against (tests/helpers/postgres.py): it must
run unprivileged (CI runs as root, the server refuses root), fast, and come back on the
same address after a restart."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.postgres import PostgresServer


def _one(server: PostgresServer, sql: str, dbname: str = "postgres") -> object:
    return server.execute(sql, dbname)[0][0]


def test_the_server_process_is_never_root(postgres_server: PostgresServer) -> None:
    pid = int((postgres_server.data / "postmaster.pid").read_text().split()[0])
    assert Path(f"/proc/{pid}").stat().st_uid != 0


def test_durability_is_off_for_speed(postgres_server: PostgresServer) -> None:
    for name in ("fsync", "synchronous_commit", "full_page_writes"):
        assert _one(postgres_server, f"SHOW {name}") == "off"


def test_each_test_gets_a_database_of_its_own(postgres_server: PostgresServer, pg_url: str) -> None:
    name = pg_url.rsplit("/", 1)[1]
    postgres_server.execute("CREATE TABLE mine (x int)", name)
    assert _one(postgres_server, "SELECT count(*) FROM pg_tables WHERE tablename = 'mine'") == 0
    assert _one(postgres_server, "SELECT count(*) FROM pg_tables WHERE tablename = 'mine'", name) == 1


def test_a_restarted_server_is_found_at_the_same_url(postgres_server: PostgresServer, pg_url: str) -> None:
    name = pg_url.rsplit("/", 1)[1]
    postgres_server.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)", name)
    postgres_server.restart()
    assert postgres_server.url(name) == pg_url
    assert _one(postgres_server, "SELECT x FROM kept", name) == 7
