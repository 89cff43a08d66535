"""Ready jobs counted per (priority, model) on PostgreSQL, beside `ready/<rank>`, so that
`Engine.queue_depth` reads a counter per pair instead of counting the ready index."""

from __future__ import annotations

from ollama_cli.store.postgres.transactions import Tx

PREFIX = "rm/"


def name(rank: int, model_key: str) -> str:
    """The counter of ready jobs of this priority rank and model (canonical name)."""
    return f"{PREFIX}{rank}/{model_key}"


def read(tx: Tx) -> dict[tuple[int, str], int]:
    out = {}
    for counter, n in tx.all("SELECT name, sum(n) FROM counts WHERE name LIKE %s GROUP BY name HAVING sum(n) > 0",
                             (PREFIX + "%",)):
        rank, model = counter[len(PREFIX):].split("/", 1)  # a model's name may hold slashes; a rank never
        out[(int(rank), model)] = int(n)
    return out


def check(tx: Tx, counted: dict[str, int]) -> list[str]:
    """Where the counters (summed, by name) and the ready jobs disagree."""
    actual = {name(rank, model): int(n) for rank, model, n in tx.all(
        "SELECT priority, model_key, count(*) FROM jobs WHERE state = 'ready' GROUP BY priority, model_key")}
    kept = {k: v for k, v in counted.items() if k.startswith(PREFIX) and v}
    return [f"{k} is {kept.get(k, 0)}, the jobs say {actual.get(k, 0)}"
            for k in sorted(kept.keys() | actual.keys()) if kept.get(k, 0) != actual.get(k, 0)]
