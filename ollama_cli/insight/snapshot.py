"""The queue at a glance, as `info` reports it: counts, pause flag, live daemons and their
backends, cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ollama_cli import __version__
from ollama_cli.timefmt import format_time

if TYPE_CHECKING:
    from ollama_cli.store.base import Engine
    from ollama_cli.store.records import BackendState, DaemonInfo


def live_daemons(store: Engine) -> list[DaemonInfo]:
    return [d for d in store.daemons() if store.is_alive(d.id)]


def backend_json(b: BackendState) -> dict[str, Any]:
    """A backend as a living daemon knows it, in the contract's JSON form."""
    return {"url": b.url, "daemon": b.daemon_id, "up": b.up,
            "installed": None if b.installed is None else list(b.installed), "loaded": list(b.loaded),
            "slots": b.slots, "in_use": b.in_use, "updated_at": format_time(b.updated_at)}


def info(store: Engine) -> dict[str, Any]:
    counts = store.counts()
    paused = store.is_paused()
    alive = live_daemons(store)
    cache_stats = store.cache_stats()
    first = alive[0] if alive else None
    return {
        "jobs": counts,
        "paused": paused,
        "daemon": {
            "running": first is not None,
            "pid": first.pid if first else None,
            "concurrency": first.concurrency if first else None,
            "hosts": first.hosts if first else [],
            "started_at": format_time(first.started_at) if first else None,
            "last_heartbeat": format_time(first.last_heartbeat) if first else None,
        },
        "daemons": [
            {"id": d.id, "pid": d.pid, "concurrency": d.concurrency, "hosts": d.hosts,
             "started_at": format_time(d.started_at), "last_heartbeat": format_time(d.last_heartbeat)}
            for d in alive
        ],
        "backends": [backend_json(b) for b in store.backends()],
        "cache": {k: cache_stats[k] for k in ("entries", "hits", "misses")},
        "store": {"engine": store.name, "location": store.location},
        "data_dir": store.location,
        "version": __version__,
    }
