"""The exact result cache on the server: request digest -> result body, with its figures
(entries, bytes, hits, misses) in the sharded counters."""

from __future__ import annotations

from typing import Any

from ollama_cli.codec import pack, unpack
from ollama_cli.errors import CorruptRecord
from ollama_cli.store.postgres.transactions import Tx

FIGURES = ("entries", "hits", "misses", "bytes")


def lookup(tx: Tx, key: bytes) -> dict[str, Any] | None:
    """The cached result for `key`, counted as a hit or a miss (a corrupt entry misses)."""
    found = tx.one("SELECT body FROM cache WHERE key = %s", (key,))
    try:
        result = unpack(key, found[0]) if found is not None else None
    except CorruptRecord:
        result = None
    tx.add("cache/hits" if result is not None else "cache/misses", 1)
    return result


def store(tx: Tx, key: bytes, result: dict[str, Any]) -> None:
    body = pack(result)
    while True:
        old = tx.one("SELECT length(body) FROM cache WHERE key = %s FOR UPDATE", (key,))
        if old is not None:
            tx.cur.execute("UPDATE cache SET body = %s WHERE key = %s", (body, key))
            tx.add("cache/bytes", len(body) - old[0])
            return
        if tx.one("INSERT INTO cache (key, body) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                  (key, body)) is not None:
            tx.add("cache/entries", 1)
            tx.add("cache/bytes", len(body))
            return  # else another transaction stored it first: replace theirs


def clear(tx: Tx) -> int:
    # No store may slip in between the delete and the reset of its counters.
    tx.cur.execute("LOCK TABLE cache IN EXCLUSIVE MODE")
    tx.cur.execute("DELETE FROM cache")
    deleted = tx.cur.rowcount
    tx.cur.execute("DELETE FROM counts WHERE name IN ('cache/entries', 'cache/bytes')")
    return int(deleted)
