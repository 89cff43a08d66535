"""The exact result cache: a digest of the canonical request maps to a result body.

Functions of a transaction, so that a lookup at submit and a store at completion land
in the same transaction as the job they belong to."""

from __future__ import annotations

import json
from typing import Any

from ollama_cli.models import pack, unpack
from ollama_cli.store import Tx


def key_for(model: str, job_type: str, request: dict[str, Any]) -> bytes:
    """sha256 of model, type and the canonical request (keys sorted). The model's
    default tag is made explicit so that `m` and `m:latest` share entries."""
    import hashlib  # OpenSSL's start-up costs 4 ms: only submit pays it

    canonical = json.dumps(
        [_full_name(model), job_type, request], sort_keys=True, separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).digest()


def _full_name(model: str) -> str:
    name = model.lower()
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def lookup(tx: Tx, key: bytes) -> dict[str, Any] | None:
    raw = tx.get("cache", key)
    if raw is None:
        tx.add("cache/misses", 1)
        return None
    try:
        result = unpack(key, raw)
    except Exception:
        tx.add("cache/misses", 1)
        return None
    tx.add("cache/hits", 1)
    return result


def store(tx: Tx, key: bytes, result: dict[str, Any]) -> None:
    body = pack(result)
    old = tx.get("cache", key)
    if old is not None:
        tx.add("cache/bytes", -len(old))
    tx.put("cache", key, body)
    tx.add("cache/bytes", len(body))


def stats(tx: Tx) -> dict[str, int]:
    return {
        "entries": tx.entries("cache"),
        "hits": tx.counter("cache/hits"),
        "misses": tx.counter("cache/misses"),
        "bytes": tx.counter("cache/bytes"),
    }


def clear(tx: Tx) -> int:
    n = tx.entries("cache")
    tx.clear("cache")
    tx.add("cache/bytes", -tx.counter("cache/bytes"))
    return n
