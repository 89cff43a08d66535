"""PostgreSQL's migration of `activity`: a store written before it gets the ready counters per (priority,
model) of the jobs it holds, so `top` and metrics read queue depth per model from counters."""

from __future__ import annotations

import pytest

from ollama_cli.jobs import Priority
from ollama_cli.store import open_store
from ollama_cli.store.postgres import schema
from ollama_cli.store.postgres.connection import connect
from tests.helpers.jobs import make_spec


def test_its_migration_counts_the_ready_jobs_already_queued_per_priority_and_model(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as before:  # the store as the version before wrote it
        ours = [sql for _, sql in schema.MIGRATIONS].index(schema.ACTIVITY)
        before.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:ours])
        before.setattr(schema, "LATEST", ours)
        with open_store(pg_url) as old:
            for model, priority in (("a", Priority.LOW), ("a", Priority.LOW), ("b", Priority.HIGH)):
                old.submit(make_spec(model=model, priority=priority), 1.0)
            old.submit(make_spec(model="c", run_at=100.0), 1.0)  # held: not ready
        conn = connect(pg_url)  # the version before kept no counters per model
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM ollama_q.counts WHERE name LIKE 'ready_model/%'")
        conn.close()
    with open_store(pg_url) as store:
        assert store.ready_depth() == [(1, "b:latest", 1), (3, "a:latest", 2)]
        assert store.check() == []
