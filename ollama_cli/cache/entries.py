"""The result cache's entries on LMDB beyond the lookup (`__init__.py` says what an entry is):
storing one as a daemon's settle does, with its TTL, the bound and its semantic vector;
removal, expiry and eviction by index; `cache stats`, `cache list`, `cache clear`; the
doctor's check; and the migration of entries stored before they had records."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ollama_cli.cache import CREATED, EXPIRY, LAST_HIT, index_key, meta, semantic
from ollama_cli.codec import pack
from ollama_cli.jobs import full_name

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx
    from ollama_cli.store.records import CacheWrite

_TABLES = ("cache", "cache_entries", "cache_index", "cache_vectors")
EXPIRE_PER_STORE = 64  # expired entries a store removes at most: bounds the daemon's transaction


def store(tx: Tx, key: bytes, result: dict[str, Any], *, model: str, job_type: str, source: int,
          now: float, policy: CacheWrite | None = None) -> None:
    """Store (or replace) the answer to a request, with the TTL, the bound and the semantic
    scope and vector of `policy`; then expired entries go (a few), and the least recently hit
    while the cache holds more than its bound."""
    remove(tx, key)
    body = pack(result)
    entry: dict[str, Any] = {"model": model, "type": job_type, "created_at": now, "last_hit_at": now,
                             "hits": 0, "source": source, "bytes": len(body)}
    if policy is not None and policy.ttl is not None:
        entry["expires_at"] = now + policy.ttl
        tx.put("cache_index", index_key(EXPIRY, entry["expires_at"], key))
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
    tx.put("cache_index", index_key(LAST_HIT, now, key))
    tx.put("cache_index", index_key(CREATED, now, key))
    tx.add("cache/bytes", entry["bytes"])
    expire(tx, now)
    if policy is not None and policy.max_bytes is not None:
        evict(tx, policy.max_bytes)


def remove(tx: Tx, key: bytes) -> bool:
    """Take one entry out with everything kept beside it; whether it was there."""
    raw = tx.get("cache", key)
    if raw is None:
        return False
    entry = meta(tx, key)
    tx.delete("cache", key)
    tx.delete("cache_entries", key)
    if entry is None:  # written before entries had records
        tx.add("cache/bytes", -len(raw))
        return True
    tx.delete("cache_index", index_key(LAST_HIT, entry["last_hit_at"], key))
    tx.delete("cache_index", index_key(CREATED, entry["created_at"], key))
    if entry.get("expires_at") is not None:
        tx.delete("cache_index", index_key(EXPIRY, entry["expires_at"], key))
    if entry.get("scope") is not None:
        semantic.drop(tx, entry["scope"], entry.get("block"), key)
        tx.add("cache/semantic_entries", -1)
    tx.add("cache/bytes", -entry["bytes"])
    return True


def expire(tx: Tx, now: float, limit: int = EXPIRE_PER_STORE) -> int:
    """Remove up to `limit` entries whose TTL has run out, soonest first."""
    due = []
    for k, _ in tx.scan("cache_index", EXPIRY):
        if k[:9] > index_key(EXPIRY, now, b"") or len(due) >= limit:
            break
        due.append(k)
    for k in due:
        if not remove(tx, k[9:]):
            tx.delete("cache_index", k)  # an index key without its entry
    return len(due)


def evict(tx: Tx, max_bytes: int) -> int:
    """Remove the least recently hit entries until the cache holds at most `max_bytes`: each
    one is the first LAST_HIT key of `cache_index`, a seek."""
    n = 0
    while tx.counter("cache/bytes") > max_bytes:
        first = next(iter(tx.scan("cache_index", LAST_HIT)), None)
        if first is None:
            break
        if not remove(tx, first[0][9:]):
            tx.delete("cache_index", first[0])
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


def newest(tx: Tx, *, limit: int | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """The entries newest first, of one model (as `full_name` compares names) if given."""
    out: list[dict[str, Any]] = []
    wanted = full_name(model) if model else None
    for k, _ in tx.scan("cache_index", CREATED, reverse=True):
        if limit is not None and len(out) >= limit:
            break
        key = k[9:]
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
        for table in _TABLES:
            tx.clear(table)
        for counter in ("cache/bytes", "cache/semantic_entries"):
            tx.add(counter, -tx.counter(counter))
        return n
    wanted = full_name(model) if model else None
    cutoff = index_key(CREATED, now - older_than, b"") if older_than is not None else None
    doomed = []
    for k, _ in tx.scan("cache_index", CREATED):
        if cutoff is not None and k[:9] > cutoff:
            break
        entry = meta(tx, k[9:])
        if entry is not None and (wanted is None or full_name(entry["model"]) == wanted):
            doomed.append(k[9:])
    return sum(remove(tx, key) for key in doomed)


def check(tx: Tx) -> list[str]:
    """Where the entries, their indexes, vectors and counters disagree (`queue/doctor.py`)."""
    problems, size, with_vector, expiring = [], 0, 0, 0
    for key, _ in tx.scan("cache"):
        entry = meta(tx, key)
        if entry is None:
            problems.append(f"cache entry {key.hex()[:12]} has no record")
            continue
        size += entry["bytes"]
        for kind, at in ((LAST_HIT, entry["last_hit_at"]), (CREATED, entry["created_at"]),
                         (EXPIRY, entry.get("expires_at"))):
            if at is not None and tx.get("cache_index", index_key(kind, at, key)) is None:
                problems.append(f"cache entry {key.hex()[:12]} is missing from cache_index ({kind.decode()})")
        expiring += entry.get("expires_at") is not None
        with_vector += entry.get("scope") is not None
    if tx.entries("cache_entries") != tx.entries("cache"):
        problems.append(f"cache_entries holds {tx.entries('cache_entries')} keys for {tx.entries('cache')} entries")
    if tx.entries("cache_index") != 2 * tx.entries("cache") + expiring:
        problems.append(f"cache_index holds {tx.entries('cache_index')} keys for {tx.entries('cache')} entries, "
                        f"{expiring} of them with a TTL")
    vectors = sum(semantic.entries_of(key, value) for key, value in tx.scan("cache_vectors"))
    for what, counted, actual in (("cache/bytes", tx.counter("cache/bytes"), size),
                                  ("cache/semantic_entries", tx.counter("cache/semantic_entries"), with_vector),
                                  ("vectors in cache_vectors", vectors, with_vector)):
        if counted != actual:
            problems.append(f"{what}: {counted}, the entries say {actual}")
    return problems


def migrate(tx: Tx, now: float) -> None:
    """Give each entry stored before records its record, as if created at `now`."""
    for key, raw in list(tx.scan("cache")):
        if tx.get("cache_entries", key) is None:
            entry = {"model": "", "type": "", "created_at": now, "last_hit_at": now, "hits": 0,
                     "source": None, "bytes": len(raw)}
            tx.put("cache_entries", key, pack(entry))
            tx.put("cache_index", index_key(LAST_HIT, now, key))
            tx.put("cache_index", index_key(CREATED, now, key))
