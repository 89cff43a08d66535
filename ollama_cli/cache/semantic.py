"""The semantic cache: what makes two requests candidates for one answer, and their vectors.

Scope (the contract's rule): a request is a candidate for another's answer only when
everything but its last user text is equal: model, type, system prompt, earlier messages,
options, format. `scope_of` gives that digest and the text to embed; the vectors of a scope
are kept together, so a lookup reads one scope's vectors and no other.

On LMDB, `cache_vectors` holds a scope's vectors (normalised, little-endian float32) in two
forms: a new entry's vector is a row of its own (scope + TAIL + key), a small write; when a
scope has BLOCK such rows they are sealed into one block (scope + SEALED + number -> u32
dimension, the entries' keys, their vectors), written once. A lookup is one matrix-vector
product per sealed block over the map itself (a read transaction with buffers, nothing
copied), so it costs what numpy's own product over the same vectors costs plus a step per
block, and one more over the rows not yet sealed. Removing an entry deletes its row, or
rewrites its block without it (eviction and expiry: rare next to stores).

numpy is imported only in the functions that compute: the daemon, with the semantic cache
on, is the only caller (it asks BLAS for one thread first: `settings.one_blas_thread`)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from ollama_cli.jobs import JobType

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx

BLOCK = 1024  # entries per sealed block: a lookup's steps are blocks, so fewer is nearer numpy's own product
KEY = 32  # bytes of a cache key (sha256)
SEALED, TAIL = b"\x00", b"\x01"  # after the scope: a sealed block (+ its number), or one entry (+ its key)
_HEAD = struct.Struct(">I")
_BLOCK_NO = struct.Struct(">I")


def scope_of(model: str, job_type: str, request: dict[str, Any], embedder: str = "") -> tuple[bytes, str] | None:
    """The request's scope (16 bytes) and its last user text; None for a request the semantic
    cache does not take (not generate or chat, or no user text to compare). The embedding
    model is part of the scope: vectors of two models are not comparable, even of one size."""
    from ollama_cli.cache import key_for

    rest = dict(request)
    if job_type == JobType.GENERATE.value:
        text = rest.pop("prompt", None)
    elif job_type == JobType.CHAT.value:
        messages = rest.get("messages")
        if not isinstance(messages, list):
            return None
        last = next((i for i in range(len(messages) - 1, -1, -1)
                     if isinstance(messages[i], dict) and messages[i].get("role") == "user"), None)
        if last is None:
            return None
        text = messages[last].get("content")
        messages = list(messages)
        messages[last] = {k: v for k, v in messages[last].items() if k != "content"}
        rest["messages"] = messages
    else:
        return None
    if not isinstance(text, str) or not text.strip():
        return None
    return key_for(model, f"semantic/{job_type}/{embedder}", rest)[:16], text


def normalised(vector: list[float]) -> bytes | None:
    """A vector as stored: little-endian float32 of unit length; None for one that cannot be
    (empty, zero, not finite)."""
    import numpy as np

    v = np.asarray(vector, dtype="<f4")
    norm = float(np.linalg.norm(v)) if v.ndim == 1 and v.size else 0.0
    if not np.isfinite(norm) or norm == 0.0:
        return None
    return (v / norm).astype("<f4").tobytes()


def _split(value: Any) -> tuple[int, int]:
    """(dimension, entries) of a sealed block."""
    dim = _HEAD.unpack_from(value)[0]
    return dim, (len(value) - _HEAD.size) // (KEY + 4 * dim) if dim else 0


def entries_of(key: bytes, value: Any) -> int:
    """How many entries a stored item of `cache_vectors` holds (a row: one)."""
    return _split(value)[1] if key[16:17] == SEALED else 1


def _tail_counter(scope: bytes) -> str:
    return "cache/tail/" + scope.hex()


def add(tx: Tx, scope: bytes, key: bytes, vector: bytes) -> list[tuple[bytes, int]]:
    """Store an entry's vector as a row of its scope; when the scope has BLOCK rows, seal them
    into blocks (one per dimension: an embedding model changed leaves its old vectors apart).
    The entries sealed now, each with its block's number (the caller records it)."""
    tx.put("cache_vectors", scope + TAIL + key, vector)
    if tx.add(_tail_counter(scope), 1) < BLOCK:
        return []
    rows = [(k[len(scope) + 1:], bytes(v)) for k, v in tx.scan("cache_vectors", scope + TAIL)]
    last = next(iter(tx.scan("cache_vectors", scope + SEALED, reverse=True)), None)
    number = _BLOCK_NO.unpack_from(last[0], len(scope) + 1)[0] + 1 if last is not None else 0
    sealed = []
    for dim in sorted({len(v) // 4 for _, v in rows}):
        group = [(k, v) for k, v in rows if len(v) == 4 * dim]
        tx.put("cache_vectors", scope + SEALED + _BLOCK_NO.pack(number),
               _HEAD.pack(dim) + b"".join(k for k, _ in group) + b"".join(v for _, v in group))
        sealed += [(k, number) for k, _ in group]
        number += 1
    for k, _ in rows:
        tx.delete("cache_vectors", scope + TAIL + k)
    tx.add(_tail_counter(scope), -len(rows))
    return sealed


def drop(tx: Tx, scope: bytes, number: int | None, key: bytes) -> None:
    """Take an entry's vector out: its row (`number` None), or out of its sealed block (the
    block goes when it empties)."""
    if number is None:
        if tx.delete("cache_vectors", scope + TAIL + key):
            tx.add(_tail_counter(scope), -1)
        return
    block_key = scope + SEALED + _BLOCK_NO.pack(number)
    raw = tx.get("cache_vectors", block_key)
    if raw is None:
        return
    value = bytes(raw)
    dim, n = _split(value)
    keys = [value[_HEAD.size + KEY * i:_HEAD.size + KEY * (i + 1)] for i in range(n)]
    if key not in keys:
        return
    i = keys.index(key)
    if n == 1:
        tx.delete("cache_vectors", block_key)
        return
    vectors_at, size = _HEAD.size + KEY * n, 4 * dim
    vectors = value[vectors_at:]
    tx.put("cache_vectors", block_key, _HEAD.pack(dim) + b"".join(keys[:i] + keys[i + 1:])
           + vectors[:size * i] + vectors[size * (i + 1):])


def nearest(tx: Tx, scope: bytes, query: bytes) -> tuple[bytes, float] | None:
    """The key of the scope's entry most similar to `query` (normalised, as stored) and its
    cosine similarity; None if the scope has no vector of that dimension."""
    import numpy as np

    q = np.frombuffer(query, dtype="<f4")
    best: tuple[bytes, float] | None = None
    for _, value in tx.scan("cache_vectors", scope + SEALED):
        dim, n = _split(value)
        if dim != q.size or not n:
            continue
        scores = np.frombuffer(value, dtype="<f4", count=n * dim, offset=_HEAD.size + KEY * n).reshape(n, dim) @ q
        i = int(scores.argmax())
        if best is None or scores[i] > best[1]:
            best = bytes(value[_HEAD.size + KEY * i:_HEAD.size + KEY * (i + 1)]), float(scores[i])
    rows = [(k[len(scope) + 1:], v) for k, v in tx.scan("cache_vectors", scope + TAIL)]
    found = nearest_of_rows(rows, query)
    if found is not None and (best is None or found[1] > best[1]):
        best = found
    return None if best is None else (best[0], min(1.0, best[1]))


def nearest_of_rows(values: list[tuple[bytes, Any]], query: bytes) -> tuple[bytes, float] | None:
    """As `nearest`, over (key, vector) pairs: the rows not yet sealed, or a store that keeps
    one row per entry (PostgreSQL)."""
    import numpy as np

    q = np.frombuffer(query, dtype="<f4")
    same = [(k, v) for k, v in values if len(v) == len(query)]
    if not same:
        return None
    scores = np.frombuffer(b"".join(v for _, v in same), dtype="<f4").reshape(len(same), q.size) @ q
    i = int(scores.argmax())
    return bytes(same[i][0]), min(1.0, float(scores[i]))
