"""The result cache on LMDB: a digest of the canonical request maps to a result body, beside
it what `cache list` shows of the entry, and the indexes that bound it.

Functions of a transaction, so that a lookup at submit and a store at completion land in the
same transaction as the job they belong to. An entry is
- `cache`: key -> the result body (apart, so that listing never loads answers);
- `cache_entries`: key -> model, type, created_at, last_hit_at, hits, bytes, source (the job
  whose answer it is), expires_at (with a TTL), and for the semantic cache its scope and the
  sealed block its vector is in (None: a row of its own; `semantic.py`);
- keys in `cache_index`, each a kind byte + a time (ms) + the digest: LAST_HIT (eviction takes
  the first, never scans), CREATED (listing newest first, `clear --older-than`) and, with a
  TTL, EXPIRY (expired entries go, a few per store, and never answer). One table, not three:
  every command opens every table, `submit` too.
Counters: `cache/hits` (exact and semantic), `cache/misses` (exact lookups at submit),
`cache/bytes` (bodies and vectors), `cache/semantic_entries`, `cache/semantic_hits`.

Here is what `submit` needs (the key, the lookup, a hit); storing, eviction, expiry, listing and
clearing are `entries.py`, which submit never loads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ollama_cli.codec import pack, sha256, unpack
from ollama_cli.jobs import Job, full_name
from ollama_cli.jsontext import canonical
from ollama_cli.store.keys import u64

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx

def key_for(model: str, job_type: str, request: dict[str, Any]) -> bytes:
    """sha256 of model, type and the canonical request (keys sorted). The model's
    default tag is made explicit so that `m` and `m:latest` share entries."""
    return sha256(canonical([full_name(model), job_type, request]).encode())


def key_on(model: str, job: Job, request: dict[str, Any]) -> bytes | None:
    """The key of a job's request asked of another model (a fallback's); None for a job that
    uses no cache."""
    return None if job.cache_key is None else key_for(model, job.type.value, request)


LAST_HIT, CREATED, EXPIRY = b"l", b"c", b"e"  # the kinds of `cache_index` keys


def index_key(kind: bytes, t: float, key: bytes) -> bytes:
    return kind + u64(min(max(0, int(t * 1000)), (1 << 63) - 1)) + key


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
        from ollama_cli.cache.entries import remove

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
    tx.delete("cache_index", index_key(LAST_HIT, entry["last_hit_at"], key))
    entry["last_hit_at"], entry["hits"] = now, entry.get("hits", 0) + 1
    tx.put("cache_index", index_key(LAST_HIT, now, key))
    tx.put("cache_entries", key, pack(entry))
    source = entry.get("source")
    return source if isinstance(source, int) and tx.get("jobs", u64(source)) is not None else None


def needs_migration(tx: Tx) -> bool:
    """Entries stored before they had records (and indexes) beside them."""
    return tx.entries("cache") != tx.entries("cache_entries")
