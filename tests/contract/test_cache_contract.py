"""The result cache's guarantees (`store/base.py`: submit, settle_and_claim, cache_stats,
cache_list, cache_clear, semantic_lookup), through the Engine interface only, on every engine:
exact entries with their source, TTL, the size bound (least recently hit first), listing,
clearing by model and age, and the semantic cache's vectors by scope."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ollama_cli.cache import key_for
from ollama_cli.cache import semantic
from ollama_cli.cache.semantic import normalised, scope_of
from ollama_cli.jobs import Job, JobStatus
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from ollama_cli.store.records import CacheReuse, CacheWrite, Placement, Plan, Settle, SettleKind
from tests.helpers.jobs import make_spec

pytestmark = pytest.mark.usefixtures("rerun_writes")

ENGINES: dict[str, Callable[[pytest.FixtureRequest, Path], Engine]] = {
    "lmdb": lambda request, tmp: open_store(tmp / "store"),
    "postgresql": lambda request, tmp: open_store(request.getfixturevalue("pg_store_url")),
}
T = 1_000_000.0
DIM = 8


@pytest.fixture(params=list(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with ENGINES[request.param](request, tmp_path) as e:
        yield e
        assert e.check() == []


def run(engine: Engine, prompt: str, now: float = T, *, answer: str | None = None, model: str = "m",
        cache: CacheWrite | None = None, reuse: CacheReuse | None = None, result: dict[str, Any] | None = None,
        **spec: Any) -> Job:
    """Submit a job, claim it and complete it (with `answer`, or `result`); the job as completed."""
    job = engine.submit(make_spec(prompt, model=model, **spec), now)
    assert job.status is JobStatus.PENDING, job
    tick = engine.settle_and_claim([], now, owner="d1", planner=lambda ready, _: Plan(
        [Placement(0, "http://h:1", (j,)) for j in ready if j.id == job.id]))
    claimed = tick.claimed[0][1][0].job
    body = result or {"response": answer or f"answer to {prompt}"}
    done = engine.settle_and_claim([Settle(SettleKind.COMPLETE, job.id, claimed.lease.token, result=body,
                                           host="http://h:1", cache=cache, reuse=reuse)], now, owner="d1").settled[0]
    assert done is not None and done.status is JobStatus.COMPLETED
    return done


def vector(*values: float) -> bytes:
    v = normalised(list(values) + [0.0] * (DIM - len(values)))
    assert v is not None
    return v


# ------------------------------------------------------------------------- exact


def test_an_exact_hit_names_the_job_whose_answer_it_reuses(engine: Engine) -> None:
    first = run(engine, "hello")
    assert first.cache_hit is None and not first.cached
    again = engine.submit(make_spec("hello", model="m"), T + 1)
    assert again.status is JobStatus.COMPLETED and again.cached
    assert again.cache_hit == ("exact", first.id, 1.0)
    assert engine.get_job(again.id).to_json()["cache"] == {"kind": "exact", "source": first.id, "similarity": 1.0}
    assert engine.get_result(again.id) == {"response": "answer to hello"}
    listed = engine.cache_list()
    assert [(e["source"], e["hits"], e["last_hit_at"]) for e in listed] == [(first.id, 1, T + 1)]


def test_the_source_is_null_once_its_job_was_cleaned(engine: Engine) -> None:
    run(engine, "hello")
    engine.clean([JobStatus.COMPLETED], T + 1)
    again = engine.submit(make_spec("hello", model="m"), T + 2)
    assert again.cache_hit == ("exact", None, 1.0)


def test_an_entry_answers_until_its_ttl_runs_out_then_goes(engine: Engine) -> None:
    run(engine, "hello", cache=CacheWrite(ttl=60))
    assert engine.submit(make_spec("hello", model="m"), T + 59).cached
    late = engine.submit(make_spec("hello", model="m"), T + 60)
    assert late.status is JobStatus.PENDING and not late.cached
    stats = engine.cache_stats()
    assert (stats["entries"], stats["hits"], stats["misses"], stats["bytes"]) == (0, 1, 2, 0)


def test_a_store_removes_expired_entries_of_other_requests(engine: Engine) -> None:
    run(engine, "old", cache=CacheWrite(ttl=10))
    run(engine, "new", T + 20, cache=CacheWrite(ttl=10))
    assert [e["key"] for e in engine.cache_list()] == [key_for("m", "generate", {"prompt": "new"}).hex()]


def test_the_bound_evicts_the_least_recently_hit_first(engine: Engine) -> None:
    body = {"response": "x" * 1000}
    for i, prompt in enumerate(("a", "b", "c")):
        run(engine, prompt, T + i, result=body)
    size = engine.cache_stats()["bytes"] // 3
    assert engine.submit(make_spec("a", model="m"), T + 10).cached  # a is now the most recently hit
    run(engine, "d", T + 20, result=body, cache=CacheWrite(max_bytes=3 * size))
    left = {e["key"] for e in engine.cache_list()}
    keys = {p: key_for("m", "generate", {"prompt": p}).hex() for p in "abcd"}
    assert left == {keys["a"], keys["c"], keys["d"]}  # b went: hit least recently (stored at T + 1)
    assert engine.cache_stats()["bytes"] <= 3 * size


def test_an_answer_larger_than_the_bound_is_not_kept(engine: Engine) -> None:
    run(engine, "small")
    run(engine, "big", T + 1, result={"response": "y" * 5000}, cache=CacheWrite(max_bytes=100))
    assert engine.cache_stats()["entries"] == 0


def test_list_is_newest_first_with_limit_and_model(engine: Engine) -> None:
    a = run(engine, "a", T, model="llama3.2")
    b = run(engine, "b", T + 1, model="qwen")
    c = run(engine, "c", T + 2, model="llama3.2:latest")
    entries = engine.cache_list()
    assert [e["source"] for e in entries] == [c.id, b.id, a.id]
    assert set(entries[0]) == {"key", "model", "type", "created_at", "last_hit_at", "hits", "bytes", "source"}
    assert entries[0]["model"] == "llama3.2:latest" and entries[0]["type"] == "generate"
    assert entries[0]["created_at"] == T + 2 and entries[0]["hits"] == 0 and entries[0]["bytes"] > 0
    assert [e["source"] for e in engine.cache_list(limit=2)] == [c.id, b.id]
    assert [e["source"] for e in engine.cache_list(model="LLAMA3.2")] == [c.id, a.id]
    assert engine.cache_list(model="nothing") == []


def test_clear_by_model_and_age_leaves_the_rest(engine: Engine) -> None:
    run(engine, "a", T, model="llama3.2")
    b = run(engine, "b", T + 100, model="llama3.2")
    c = run(engine, "c", T, model="qwen")
    assert engine.cache_clear(T + 200, model="llama3.2", older_than=150) == 1
    assert {e["source"] for e in engine.cache_list()} == {b.id, c.id}
    assert engine.cache_clear(T + 200, older_than=150) == 1
    assert engine.cache_clear(T + 200, model="qwen") == 0
    assert [e["source"] for e in engine.cache_list()] == [b.id]
    hits_before = engine.cache_stats()["hits"]
    assert engine.cache_clear() == 1
    stats = engine.cache_stats()
    assert (stats["entries"], stats["bytes"], stats["hits"]) == (0, 0, hits_before)


# ---------------------------------------------------------------------- semantic


def semantic_write(prompt: str, vec: bytes, **spec: Any) -> CacheWrite:
    request = {"prompt": prompt, **spec.get("request_extra", {})}
    scoped = scope_of("m", "generate", request)
    assert scoped is not None
    return CacheWrite(scope=scoped[0], vector=vec)


def test_the_nearest_entry_of_the_scope_answers_at_or_above_the_threshold(engine: Engine) -> None:
    scope = scope_of("m", "generate", {"prompt": "x"})[0]
    near = run(engine, "what is a queue", cache=CacheWrite(scope=scope, vector=vector(1, 0.1)))
    run(engine, "something else", cache=CacheWrite(scope=scope, vector=vector(0, 1)))
    query = vector(1, 0.12)
    match = engine.semantic_lookup(scope, query, 0.95, T)
    assert match is not None and match.reuse.key == near.cache_key and match.reuse.source == near.id
    assert match.result == {"response": "answer to what is a queue"}
    assert match.reuse.similarity == pytest.approx(float(np.frombuffer(query, "<f4") @ np.frombuffer(
        vector(1, 0.1), "<f4")), abs=1e-6)
    assert engine.semantic_lookup(scope, vector(1, 1), 0.95, T) is None  # 0.77 from the nearest
    other = scope_of("m", "generate", {"prompt": "x", "system": "another"})[0]
    assert engine.semantic_lookup(other, query, 0.5, T) is None  # another scope's vectors are never read
    assert engine.semantic_lookup(scope, vector(1, 0, 0, 0, 0, 0, 0, 0)[:-4], 0.1, T) is None  # another dimension
    stats = engine.cache_stats()
    assert stats["semantic"] == {"entries": 2, "hits": 0} and stats["hits"] == 0  # a lookup counts nothing


def test_a_settle_with_reuse_completes_the_job_as_a_semantic_hit(engine: Engine) -> None:
    scope = scope_of("m", "generate", {"prompt": "x"})[0]
    source = run(engine, "what is a queue", cache=CacheWrite(scope=scope, vector=vector(1, 0.1)))
    match = engine.semantic_lookup(scope, vector(1, 0.12), 0.95, T)
    assert match is not None
    hit = run(engine, "what's a queue", T + 5, reuse=match.reuse, result=match.result)
    assert hit.cached and hit.cache_hit == ("semantic", source.id, match.reuse.similarity)
    assert engine.get_job(hit.id).to_json()["cache"]["kind"] == "semantic"
    assert engine.get_result(hit.id) == {"response": "answer to what is a queue"}
    stats = engine.cache_stats()
    assert (stats["entries"], stats["hits"], stats["semantic"]) == (1, 1, {"entries": 1, "hits": 1})
    assert [(e["hits"], e["last_hit_at"]) for e in engine.cache_list()] == [(1, T + 5)]


def test_an_expired_or_removed_entry_never_answers_semantically(engine: Engine) -> None:
    scope = scope_of("m", "generate", {"prompt": "x"})[0]
    run(engine, "a", cache=CacheWrite(ttl=10, scope=scope, vector=vector(1)))
    assert engine.semantic_lookup(scope, vector(1), 0.9, T + 9) is not None
    assert engine.semantic_lookup(scope, vector(1), 0.9, T + 10) is None
    run(engine, "b", cache=CacheWrite(scope=scope, vector=vector(0, 1)))
    assert engine.cache_clear() == 2
    assert engine.semantic_lookup(scope, vector(0, 1), 0.9, T) is None
    assert engine.cache_stats()["semantic"]["entries"] == 0


def test_many_vectors_of_one_scope_and_removals_among_them(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small blocks, so that some vectors are sealed in blocks (LMDB) and some are not yet.
    monkeypatch.setattr(semantic, "BLOCK", 16)
    scope = scope_of("m", "generate", {"prompt": "x"})[0]
    n = 2 * semantic.BLOCK + 3
    angles = np.linspace(0, np.pi / 2, n)
    jobs = [run(engine, f"q{i}", T + i, cache=CacheWrite(scope=scope, vector=vector(np.cos(a), np.sin(a))))
            for i, a in enumerate(angles)]
    for i in (0, semantic.BLOCK - 1, semantic.BLOCK, n - 1):
        match = engine.semantic_lookup(scope, vector(np.cos(angles[i]), np.sin(angles[i])), 0.999999, T)
        assert match is not None and match.reuse.source == jobs[i].id
    assert engine.cache_clear(T + n, older_than=n - 5) == 6  # q0..q5 (created at T + 5 or before)
    match = engine.semantic_lookup(scope, vector(1, 0), 0.5, T)
    assert match is not None and match.reuse.source == jobs[6].id
    assert engine.cache_stats()["semantic"]["entries"] == n - 6


def test_scope_is_everything_but_the_last_user_text() -> None:
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": "what is a queue?"}]
    scope, text = scope_of("m", "chat", {"messages": chat, "options": {"temperature": 0}})
    assert text == "what is a queue?"
    reworded = [*chat[:3], {"role": "user", "content": "what's a queue"}]
    assert scope_of("M:latest", "chat", {"messages": reworded, "options": {"temperature": 0}})[0] == scope
    for other in ({"messages": reworded, "options": {"temperature": 1}},
                  {"messages": [chat[0], {"role": "user", "content": "x"}]},
                  {"messages": reworded, "options": {"temperature": 0}, "format": "json"}):
        assert scope_of("m", "chat", other)[0] != scope
    assert scope_of("m2", "chat", {"messages": reworded, "options": {"temperature": 0}})[0] != scope
    assert scope_of("m", "generate", {"prompt": "a", "system": "s"})[0] != scope_of("m", "generate", {"prompt": "a"})[0]
    # Vectors of two embedding models are never compared, even of one dimension.
    assert scope_of("m", "generate", {"prompt": "a"}, "e1")[0] != scope_of("m", "generate", {"prompt": "a"}, "e2")[0]
    assert scope_of("m", "embed", {"input": ["a"]}) is None
    assert scope_of("m", "generate", {"prompt": "  "}) is None
    assert scope_of("m", "chat", {"messages": [{"role": "assistant", "content": "a"}]}) is None
