"""The result cache on LMDB: a digest of the canonical request maps to a result body, beside
it what `cache list` shows of the entry, and the indexes that bound it.

Functions of a transaction, so that a lookup at submit and a store at completion land in the
same transaction as the job they belong to. An entry is
- `cache`: key -> the result body (apart, so that listing never loads answers);
- `cache_entries`: key -> model, type, created_at, last_hit_at, hits, bytes, source (the job
  whose answer it is), expires_at (with a TTL), and for the semantic cache its scope and the
  sealed block its vector is in (None: a row of its own; `semantic.py`);
- one key in `cache_lru` (by last hit: eviction takes the first, never scans), in
  `cache_created` (listing newest first, `clear --older-than`) and, with a TTL, in
  `cache_expiry` (expired entries go, a few per store, and never answer).
Counters: `cache/hits` (exact and semantic), `cache/misses` (exact lookups at submit),
`cache/bytes` (bodies and vectors), `cache/semantic_entries`, `cache/semantic_hits`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ollama_cli.codec import pack, sha256, unpack
from ollama_cli.jobs import full_name
from ollama_cli.jsontext import canonical
from ollama_cli.store.keys import u64

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx
    from ollama_cli.store.records import CacheWrite

_INDEXES = ("cache_entries", "cache_lru", "cache_created", "cache_expiry", "cache_vectors")
EXPIRE_PER_STORE = 64  # expired entries a store removes at most: bounds the daemon's transaction


def key_for(model: str, job_type: str, request: dict[str, Any]) -> bytes:
    """sha256 of model, type and the canonical request (keys sorted). The model's
    default tag is made explicit so that `m` and `m:latest` share entries."""
    return sha256(canonical([full_name(model), job_type, request]).encode())


def _ms(t: float) -> bytes:
    return u64(min(max(0, int(t * 1000)), (1 << 63) - 1))


def meta(tx: Tx, key: bytes) -> dict[str, Any] | None:
    raw = tx.get("cache_entries", key)
    if raw is None:
        return None
    try:
        found = unpack(key, raw)
    except Exception:
        return None
    return found if isinstance(found, dict) else None


def lookup(tx: Tx, key: bytes, now: float) -> tuple[dict[str, Any], int | None] | None:
    """The answer stored for this request and the job it came from (None: cleaned since), its
    hit counted; None (a miss counted) if there is none, or it expired (then it goes)."""
    raw = tx.get("cache", key)
    entry = meta(tx, key) if raw is not None else None
    if entry is not None and entry.get("expires_at") is not None and entry["expires_at"] <= now:
        remove(tx, key)
        raw = None
    try:
        result = unpack(key, raw) if raw is not None else None
    except Exception:
        result = None
    if result is None:
        tx.add("cache/misses", 1)
        return None
    return result, hit(tx, key, now)


def hit(tx: Tx, key: bytes, now: float, *, semantic: bool = False) -> int | None:
    """Count a hit of the entry (gone meanwhile: counted all the same) and move it to the back
    of the eviction order; the job its answer came from, if that job is still there."""
    tx.add("cache/hits", 1)
    if semantic:
        tx.add("cache/semantic_hits", 1)
    entry = meta(tx, key)
    if entry is None:
        return None
    tx.delete("cache_lru", _ms(entry["last_hit_at"]) + key)
    entry["last_hit_at"], entry["hits"] = now, entry.get("hits", 0) + 1
    tx.put("cache_lru", _ms(now) + key)
    tx.put("cache_entries", key, pack(entry))
    source = entry.get("source")
    return source if isinstance(source, int) and tx.get("jobs", u64(source)) is not None else None


def store(tx: Tx, key: bytes, result: dict[str, Any], *, model: str, job_type: str, source: int,
          now: float, policy: CacheWrite | None = None) -> None:
    """Store (or replace) the answer to a request, with the TTL, the bound and the semantic
    scope and vector of `policy`; then expired entries go (a few), and the least recently hit
    while the cache holds more than its bound."""
    from ollama_cli.cache import semantic

    remove(tx, key)
    body = pack(result)
    entry: dict[str, Any] = {"model": model, "type": job_type, "created_at": now, "last_hit_at": now,
                             "hits": 0, "source": source, "bytes": len(body)}
    if policy is not None and policy.ttl is not None:
        entry["expires_at"] = now + policy.ttl
        tx.put("cache_expiry", _ms(entry["expires_at"]) + key)
    sealed: list[tuple[bytes, int]] = []
    if policy is not None and policy.scope is not None and policy.vector is not None:
        entry["scope"], entry["block"] = policy.scope, None
        sealed = semantic.add(tx, policy.scope, key, policy.vector)
        entry["bytes"] += len(policy.vector)
        tx.add("cache/semantic_entries", 1)
    tx.put("cache", key, body)
    tx.put("cache_entries", key, pack(entry))
    for moved, number in sealed:  # vectors now in a sealed block (this entry's among them)
        moved_entry = meta(tx, moved)
        if moved_entry is not None:
            moved_entry["block"] = number
            tx.put("cache_entries", moved, pack(moved_entry))
    tx.put("cache_lru", _ms(now) + key)
    tx.put("cache_created", _ms(now) + key)
    tx.add("cache/bytes", entry["bytes"])
    expire(tx, now)
    if policy is not None and policy.max_bytes is not None:
        evict(tx, policy.max_bytes)


def remove(tx: Tx, key: bytes) -> bool:
    """Take one entry out with everything kept beside it; whether it was there."""
    from ollama_cli.cache import semantic

    raw = tx.get("cache", key)
    if raw is None:
        return False
    entry = meta(tx, key)
    tx.delete("cache", key)
    tx.delete("cache_entries", key)
    if entry is None:  # written before entries had records
        tx.add("cache/bytes", -len(raw))
        return True
    tx.delete("cache_lru", _ms(entry["last_hit_at"]) + key)
    tx.delete("cache_created", _ms(entry["created_at"]) + key)
    if entry.get("expires_at") is not None:
        tx.delete("cache_expiry", _ms(entry["expires_at"]) + key)
    if entry.get("scope") is not None:
        semantic.drop(tx, entry["scope"], entry.get("block"), key)
        tx.add("cache/semantic_entries", -1)
    tx.add("cache/bytes", -entry["bytes"])
    return True


def expire(tx: Tx, now: float, limit: int = EXPIRE_PER_STORE) -> int:
    """Remove up to `limit` entries whose TTL has run out, soonest first."""
    due = []
    for k, _ in tx.scan("cache_expiry"):
        if k[:8] > _ms(now) or len(due) >= limit:
            break
        due.append(k)
    for k in due:
        if not remove(tx, k[8:]):
            tx.delete("cache_expiry", k)  # an index key without its entry
    return len(due)


def evict(tx: Tx, max_bytes: int) -> int:
    """Remove the least recently hit entries until the cache holds at most `max_bytes`: each
    one is the first key of `cache_lru`, a seek."""
    n = 0
    while tx.counter("cache/bytes") > max_bytes:
        first = next(iter(tx.scan("cache_lru")), None)
        if first is None:
            break
        if not remove(tx, first[0][8:]):
            tx.delete("cache_lru", first[0])
        n += 1
    return n


def stats(tx: Tx) -> dict[str, Any]:
    return {
        "entries": tx.entries("cache"),
        "hits": tx.counter("cache/hits"),
        "misses": tx.counter("cache/misses"),
        "bytes": tx.counter("cache/bytes"),
        "semantic": {"entries": tx.counter("cache/semantic_entries"), "hits": tx.counter("cache/semantic_hits")},
    }


def entries(tx: Tx, *, limit: int | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """The entries newest first, of one model (as `full_name` compares names) if given."""
    out: list[dict[str, Any]] = []
    wanted = full_name(model) if model else None
    for k, _ in tx.scan("cache_created", reverse=True):
        if limit is not None and len(out) >= limit:
            break
        key = k[8:]
        entry = meta(tx, key)
        if entry is None or (wanted and full_name(entry["model"]) != wanted):
            continue
        out.append(listed(key, entry))
    return out


def listed(key: bytes, entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as `cache list` shows it (times in seconds; the CLI formats them)."""
    return {"key": key.hex(), "model": entry["model"], "type": entry["type"], "created_at": entry["created_at"],
            "last_hit_at": entry["last_hit_at"], "hits": entry.get("hits", 0), "bytes": entry["bytes"],
            "source": entry.get("source")}


def clear(tx: Tx, now: float = 0.0, *, model: str | None = None, older_than: float | None = None) -> int:
    """Remove every entry, or those of `model` and/or created at least `older_than` seconds
    before `now`; how many. Hits and misses are kept."""
    if model is None and older_than is None:
        n = tx.entries("cache")
        for table in ("cache", *_INDEXES):
            tx.clear(table)
        for counter in ("cache/bytes", "cache/semantic_entries"):
            tx.add(counter, -tx.counter(counter))
        return n
    wanted = full_name(model) if model else None
    cutoff = _ms(now - older_than) if older_than is not None else None
    doomed = []
    for k, _ in tx.scan("cache_created"):
        if cutoff is not None and k[:8] > cutoff:
            break
        entry = meta(tx, k[8:])
        if entry is not None and (wanted is None or full_name(entry["model"]) == wanted):
            doomed.append(k[8:])
    return sum(remove(tx, key) for key in doomed)


def check(tx: Tx) -> list[str]:
    """Where the entries, their indexes, vectors and counters disagree (`queue/doctor.py`)."""
    from ollama_cli.cache import semantic

    problems, size, with_vector, expiring = [], 0, 0, 0
    for key, _ in tx.scan("cache"):
        entry = meta(tx, key)
        if entry is None:
            problems.append(f"cache entry {key.hex()[:12]} has no record")
            continue
        size += entry["bytes"]
        for table, at in (("cache_lru", entry["last_hit_at"]), ("cache_created", entry["created_at"]),
                          ("cache_expiry", entry.get("expires_at"))):
            if at is not None and tx.get(table, _ms(at) + key) is None:
                problems.append(f"cache entry {key.hex()[:12]} is missing from {table}")
        expiring += entry.get("expires_at") is not None
        with_vector += entry.get("scope") is not None
    for table, n in (("cache_entries", tx.entries("cache")), ("cache_lru", tx.entries("cache")),
                     ("cache_created", tx.entries("cache")), ("cache_expiry", expiring)):
        if tx.entries(table) != n:
            problems.append(f"{table} holds {tx.entries(table)} keys for {n} entries")
    vectors = sum(semantic.entries_of(key, value) for key, value in tx.scan("cache_vectors"))
    for what, counted, actual in (("cache/bytes", tx.counter("cache/bytes"), size),
                                  ("cache/semantic_entries", tx.counter("cache/semantic_entries"), with_vector),
                                  ("vectors in cache_vectors", vectors, with_vector)):
        if counted != actual:
            problems.append(f"{what}: {counted}, the entries say {actual}")
    return problems


def needs_migration(tx: Tx) -> bool:
    """Entries stored before they had records (and indexes) beside them."""
    return tx.entries("cache") != tx.entries("cache_entries")


def migrate(tx: Tx, now: float) -> None:
    """Give each entry stored before records its record, as if created at `now`."""
    for key, raw in list(tx.scan("cache")):
        if tx.get("cache_entries", key) is None:
            entry = {"model": "", "type": "", "created_at": now, "last_hit_at": now, "hits": 0,
                     "source": None, "bytes": len(raw)}
            tx.put("cache_entries", key, pack(entry))
            tx.put("cache_lru", _ms(now) + key)
            tx.put("cache_created", _ms(now) + key)
