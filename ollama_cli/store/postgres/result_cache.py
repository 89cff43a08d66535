"""The result cache on the server (exact and semantic), as functions of a transaction (`transactions.Tx`): LMDB's
`cache/` is the reference model of what each does.

One row per entry in `cache` (schema.py): the body, what `cache list` shows, the expiry, and
for the semantic cache its scope and vector (so a lookup reads one scope's rows, by a partial
index). Eviction reads `cache_by_last_hit` from its start; expiry `cache_by_expiry`.
Every removal is a DELETE ... RETURNING, so the counters move by what was really removed when
two transactions remove the same entry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ollama_cli.codec import pack, unpack
from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import full_name

if TYPE_CHECKING:
    from ollama_cli.store.postgres.transactions import Database, Tx
    from ollama_cli.store.records import CacheWrite, SemanticMatch

EXPIRE_PER_STORE = 64  # as LMDB's: expired entries a store removes at most
_EVICT_BATCH = 16
_REMOVED = "RETURNING bytes, scope IS NOT NULL"


def _removed(tx: Tx, rows: list[tuple[Any, ...]]) -> int:
    for size, semantic in rows:
        tx.add("cache/entries", -1)
        tx.add("cache/bytes", -int(size))
        if semantic:
            tx.add("cache/semantic_entries", -1)
    return len(rows)


def remove(tx: Tx, key: bytes) -> bool:
    return _removed(tx, tx.all(f"DELETE FROM cache WHERE key = %s {_REMOVED}", (key,))) > 0


def _source(tx: Tx, source: int | None) -> int | None:
    """The source job, if it is still there."""
    if source is None or tx.one("SELECT 1 FROM jobs WHERE id = %s", (source,)) is None:
        return None
    return int(source)


def hit(tx: Tx, key: bytes, now: float, *, semantic: bool = False) -> int | None:
    tx.add("cache/hits", 1)
    if semantic:
        tx.add("cache/semantic_hits", 1)
    found = tx.one("UPDATE cache SET hits = hits + 1, last_hit_at = %s WHERE key = %s RETURNING source", (now, key))
    return None if found is None else _source(tx, found[0])


def lookup(tx: Tx, key: bytes, now: float) -> tuple[dict[str, Any], int | None] | None:
    found = tx.one("SELECT body, expires_at FROM cache WHERE key = %s", (key,))
    result = None
    if found is not None and found[1] is not None and found[1] <= now:
        _removed(tx, tx.all(f"DELETE FROM cache WHERE key = %s AND expires_at <= %s {_REMOVED}", (key, now)))
    elif found is not None:
        try:
            result = unpack(key, bytes(found[0]))
        except CorruptRecord:
            result = None
    if result is None:
        tx.add("cache/misses", 1)
        return None
    return result, hit(tx, key, now)


def store(tx: Tx, key: bytes, result: dict[str, Any], *, model: str, job_type: str, source: int, now: float,
          policy: CacheWrite | None = None) -> None:
    body = pack(result)
    ttl = policy.ttl if policy is not None else None
    scope, vector = (policy.scope, policy.vector) if policy is not None and policy.vector else (None, None)
    size = len(body) + (len(vector) if vector else 0)
    while True:
        remove(tx, key)
        if tx.one("INSERT INTO cache (key, body, model, model_key, type, created_at, last_hit_at, hits, source, "
                  "expires_at, scope, vector, bytes) VALUES (%s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s, %s) "
                  "ON CONFLICT DO NOTHING RETURNING 1",
                  (key, body, model, full_name(model), job_type, now, now, source,
                   None if ttl is None else now + ttl, scope, vector, size)) is not None:
            break  # else another transaction stored it first: replace theirs
    tx.add("cache/entries", 1)
    tx.add("cache/bytes", size)
    if scope is not None:
        tx.add("cache/semantic_entries", 1)
    _removed(tx, tx.all(
        "DELETE FROM cache WHERE key IN (SELECT key FROM cache WHERE expires_at <= %s ORDER BY expires_at "
        f"LIMIT %s FOR UPDATE SKIP LOCKED) {_REMOVED}", (now, EXPIRE_PER_STORE)))
    if policy is not None and policy.max_bytes is not None:
        evict(tx, policy.max_bytes)


def _bytes(tx: Tx) -> int:
    """The cache's bytes as this transaction will leave them."""
    found = tx.one("SELECT coalesce(sum(n), 0) FROM counts WHERE name = 'cache/bytes'")
    return int(found[0]) + tx.deltas.get("cache/bytes", 0)


def evict(tx: Tx, max_bytes: int) -> int:
    """Least recently hit first, a batch at a time from the start of `cache_by_last_hit`."""
    n, excess = 0, _bytes(tx) - max_bytes
    while excess > 0:
        rows = tx.all("SELECT key, bytes FROM cache ORDER BY last_hit_at, key LIMIT %s FOR UPDATE SKIP LOCKED",
                      (_EVICT_BATCH,))
        if not rows:
            break
        doomed = []
        for key, size in rows:
            if excess <= 0:
                break
            doomed.append(bytes(key))
            excess -= int(size)
        n += _removed(tx, tx.all(f"DELETE FROM cache WHERE key = ANY(%s) {_REMOVED}", (doomed,)))
    return n


def stats(counters: dict[str, int]) -> dict[str, Any]:
    """The figures of `cache stats` from the `cache/` counters."""
    return {"entries": counters.get("cache/entries", 0), "hits": counters.get("cache/hits", 0),
            "misses": counters.get("cache/misses", 0), "bytes": counters.get("cache/bytes", 0),
            "semantic": {"entries": counters.get("cache/semantic_entries", 0),
                         "hits": counters.get("cache/semantic_hits", 0)}}


def entries(tx: Tx, *, limit: int | None = None, model: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE model_key = %s", [full_name(model)]) if model else ("", [])
    rows = tx.all("SELECT key, model, type, created_at, last_hit_at, hits, bytes, source FROM cache "
                  f"{where} ORDER BY created_at DESC, key DESC LIMIT %s", (*params, limit))
    return [{"key": bytes(k).hex(), "model": m, "type": t, "created_at": c, "last_hit_at": h, "hits": int(n),
             "bytes": int(b), "source": s} for k, m, t, c, h, n, b, s in rows]


def clear(tx: Tx, now: float = 0.0, *, model: str | None = None, older_than: float | None = None) -> int:
    if model is None and older_than is None:
        # No store may slip in between the delete and the reset of its counters.
        tx.cur.execute("LOCK TABLE cache IN EXCLUSIVE MODE")
        tx.cur.execute("DELETE FROM cache")
        deleted = tx.cur.rowcount
        tx.cur.execute("DELETE FROM counts WHERE name IN ('cache/entries', 'cache/bytes', 'cache/semantic_entries')")
        return int(deleted)
    where, params = [], []
    if model:
        where.append("model_key = %s")
        params.append(full_name(model))
    if older_than is not None:
        where.append("created_at <= %s")
        params.append(now - older_than)
    return _removed(tx, tx.all(f"DELETE FROM cache WHERE {' AND '.join(where)} {_REMOVED}", params))


def semantic_lookup(db: Database, scope: bytes, vector: bytes, threshold: float, now: float) -> SemanticMatch | None:
    from ollama_cli.cache import semantic
    from ollama_cli.store.records import CacheReuse, SemanticMatch

    def read(tx: Tx) -> SemanticMatch | None:
        rows = tx.all("SELECT key, vector FROM cache WHERE scope = %s", (scope,))
        found = semantic.nearest_of_rows([(bytes(k), bytes(v)) for k, v in rows], vector)
        if found is None or found[1] < threshold:
            return None
        key, similarity = found
        row = tx.one("SELECT body, source, expires_at FROM cache WHERE key = %s", (key,))
        if row is None or (row[2] is not None and row[2] <= now):
            return None
        try:
            result = unpack(key, bytes(row[0]))
        except CorruptRecord:
            return None
        return SemanticMatch(CacheReuse(key, _source(tx, row[1]), similarity), result)

    return db.snapshot(read)


def check(tx: Tx, counted: dict[str, int]) -> list[str]:
    """Where the cache's counters disagree with its rows."""
    problems = []
    entries_, size, semantic = tx.one("SELECT count(*), coalesce(sum(bytes), 0), count(scope) FROM cache")
    for name, n in (("cache/entries", entries_), ("cache/bytes", size), ("cache/semantic_entries", semantic)):
        if counted.get(name, 0) != int(n):
            problems.append(f"{name} is {counted.get(name, 0)}, the cache holds {n}")
    return problems
