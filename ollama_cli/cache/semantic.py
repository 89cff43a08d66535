"""The semantic cache: what makes two requests candidates for one answer, and their vectors.

Scope (the contract's rule): a request is a candidate for another's answer only when
everything but its last user text is equal: model, type, system prompt, earlier messages,
options, format. `scope_of` gives that digest and the text to embed; the vectors of a scope
are kept together, so a lookup reads one scope's vectors and no other.

On LMDB, a scope's vectors are blocks of up to BLOCK entries in `cache_vectors` (scope +
block number -> u32 dimension, the entries' keys, their vectors as little-endian float32,
normalised): a lookup is one matrix-vector product per block over the map itself (a read
transaction with buffers, nothing copied), so it costs what numpy's own product over the
same vectors costs, plus a step per block. A store appends to the scope's last block;
removing an entry rewrites its block without it.

numpy is imported only in the functions that compute: the daemon, with the semantic cache
on, is the only caller."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from ollama_cli.jobs import JobType

if TYPE_CHECKING:
    from ollama_cli.store.base import Tx

BLOCK = 256  # entries per block: bigger blocks cost more to append to, smaller ones more steps per lookup
KEY = 32  # bytes of a cache key (sha256)
_HEAD = struct.Struct(">I")
_BLOCK_NO = struct.Struct(">I")


def scope_of(model: str, job_type: str, request: dict[str, Any]) -> tuple[bytes, str] | None:
    """The request's scope (16 bytes) and its last user text; None for a request the semantic
    cache does not take (not generate or chat, or no user text to compare)."""
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
    return key_for(model, "semantic/" + job_type, rest)[:16], text


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
    """(dimension, entries) of a block."""
    dim = _HEAD.unpack_from(value)[0]
    return dim, (len(value) - _HEAD.size) // (KEY + 4 * dim) if dim else 0


def entries_of(block: Any) -> int:
    """How many entries a stored block holds."""
    return _split(block)[1]


def add(tx: Tx, scope: bytes, key: bytes, vector: bytes) -> int:
    """Append an entry's vector to its scope's last block (a new one when full, or when the
    embedding model's dimension changed); the block's number."""
    dim = len(vector) // 4
    last = next(iter(tx.scan("cache_vectors", scope, reverse=True)), None)
    if last is not None:
        number = _BLOCK_NO.unpack_from(last[0], len(scope))[0]
        old = bytes(last[1])
        old_dim, n = _split(old)
        if old_dim == dim and n < BLOCK:
            keys_end = _HEAD.size + KEY * n
            tx.put("cache_vectors", last[0], old[:keys_end] + key + old[keys_end:] + vector)
            return number
        number += 1
    else:
        number = 0
    tx.put("cache_vectors", scope + _BLOCK_NO.pack(number), _HEAD.pack(dim) + key + vector)
    return number


def drop(tx: Tx, scope: bytes, number: int, key: bytes) -> None:
    """Take an entry's vector out of its block (the block goes when it empties)."""
    block_key = scope + _BLOCK_NO.pack(number)
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
    best, best_key = -2.0, None
    for _, value in tx.scan("cache_vectors", scope):
        dim, n = _split(value)
        if dim != q.size or not n:
            continue
        matrix = np.frombuffer(value, dtype="<f4", count=n * dim, offset=_HEAD.size + KEY * n).reshape(n, dim)
        scores = matrix @ q
        i = int(scores.argmax())
        if scores[i] > best:
            best, best_key = float(scores[i]), bytes(value[_HEAD.size + KEY * i:_HEAD.size + KEY * (i + 1)])
    return None if best_key is None else (best_key, min(1.0, best))


def nearest_of_rows(values: list[tuple[bytes, bytes]], query: bytes) -> tuple[bytes, float] | None:
    """As `nearest`, over (key, vector) pairs read from a store that keeps one row per entry."""
    import numpy as np

    q = np.frombuffer(query, dtype="<f4")
    same = [(k, v) for k, v in values if len(v) == len(query)]
    if not same:
        return None
    scores = np.frombuffer(b"".join(v for _, v in same), dtype="<f4").reshape(len(same), q.size) @ q
    i = int(scores.argmax())
    return bytes(same[i][0]), min(1.0, float(scores[i]))
