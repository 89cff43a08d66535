"""The semantic cache's lookup (issue 12): `semantic_lookup` at 100,000 entries of 768
dimensions in one scope of an LMDB store, against numpy's own floor for the same work (one
matrix-vector product over the same vectors, held in memory, and its argmax), and against one
embed request to the emulator (what the daemon pays before every lookup), in the same run.

    python tests/bench/semantic_lookup.py [--entries 100000] [--dim 768] [--runs 21]

Medians of interleaved runs; target: lookup at most 1.5x the floor. numpy is imported as the
daemon imports it (`settings.one_blas_thread`: BLAS on one thread) for both. The store is written
through the cache's own functions (`cache.entries.store`, as a daemon's settle does), in transactions
of a few thousand entries."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from common import data_dir, emulator

from ollama_cli import cache
from ollama_cli.cache import entries, semantic
from ollama_cli.store import open_store
from ollama_cli.store.records import CacheWrite

from ollama_cli.settings import one_blas_thread  # noqa: E402

one_blas_thread()  # as the daemon does before it imports numpy: for the lookup and the floor alike
import numpy as np  # noqa: E402

NOW = 1_000_000.0
SCOPE_REQUEST = {"prompt": "x", "system": "You answer briefly."}


def fill(store: object, vectors: "np.ndarray", scope: bytes, batch: int = 5000) -> None:
    kv = store.kv  # type: ignore[attr-defined]
    for start in range(0, len(vectors), batch):
        def write(tx: object, start: int = start) -> None:
            for i in range(start, min(start + batch, len(vectors))):
                entries.store(tx, cache.key_for("bench", "generate", {"prompt": f"q{i}"}), {"response": f"a{i}"},
                            model="bench", job_type="generate", source=i + 1, now=NOW,
                            policy=CacheWrite(scope=scope, vector=vectors[i].astype("<f4").tobytes()))
        kv.write(write)


def embed_once(url: str, model: str) -> float:
    from ollama_cli.clients import client_for
    from ollama_cli.settings.hosts import Backend

    async def run() -> list[float]:
        client = client_for(Backend(url))
        try:
            await client.embed(model, ["warm up the connection and the model"])
            times = []
            for i in range(7):
                start = time.perf_counter()
                await client.embed(model, [f"how many jobs can the daemon run at once, take {i}"])
                times.append(time.perf_counter() - start)
            return times
        finally:
            await client.aclose()

    return statistics.median(asyncio.run(run()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.entries, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scope = semantic.scope_of("bench", "generate", SCOPE_REQUEST)[0]
    with data_dir() as path, open_store(path) as store:
        start = time.perf_counter()
        fill(store, vectors, scope)
        print(f"stored {args.entries} entries of {args.dim} dimensions in {time.perf_counter() - start:.1f}s")
        wanted = args.entries // 3
        query = (vectors[wanted] + rng.standard_normal(args.dim, dtype=np.float32) * 0.01)
        query = (query / np.linalg.norm(query)).astype("<f4")
        q = query.tobytes()
        match = store.semantic_lookup(scope, q, 0.9, NOW)
        assert match is not None and match.result == {"response": f"a{wanted}"}, match
        lookups, floors = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            store.semantic_lookup(scope, q, 0.9, NOW)
            lookups.append(time.perf_counter() - t)
            t = time.perf_counter()
            scores = vectors @ query
            int(scores.argmax())
            floors.append(time.perf_counter() - t)
    lookup, floor = statistics.median(lookups), statistics.median(floors)
    with emulator("--models", "nomic-embed-text") as url:
        embed = embed_once(url, "nomic-embed-text")
    print(f"lookup {lookup * 1000:.1f} ms, numpy floor {floor * 1000:.1f} ms: {lookup / floor:.2f}x (target <= 1.5x)")
    print(f"one embed request to the emulator ({args.dim} dimensions): {embed * 1000:.1f} ms; "
          f"lookup / embed {lookup / embed:.2f}x")


if __name__ == "__main__":
    main()
