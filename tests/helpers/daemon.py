"""The daemon in this process, against backends over real HTTP: `drain` runs it until
nothing is pending or running; `tick_once` makes one step of a daemon that is not running."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ollama_cli.daemon import events
from ollama_cli.daemon.loop import Daemon, TickReport
from ollama_cli.settings import DaemonSettings
from ollama_cli.settings.hosts import Backend
from ollama_cli.store.base import Engine


def drain(store: Engine, *urls: str, cpu: Any = None, subscribers: Sequence[events.Subscriber] = (),
          **settings: Any) -> Daemon:
    """A --drain daemon on `urls`, with short retry backoff and poll unless told, its events
    heard by `subscribers`; returns it once it exits."""
    options = {"drain": True, "retry_backoff": 0.01, "poll": 0.02, **settings}
    daemon = Daemon(store, [Backend(u) for u in urls], DaemonSettings(**options), cpu=cpu)
    for subscriber in subscribers:
        daemon.events.subscribe(subscriber)
    asyncio.run(daemon.run())
    return daemon


def tick_once(daemon: Daemon, now: float) -> TickReport:
    """One `tick(now)`, between taking the daemon's liveness lock and giving it back. The
    pool has not been refreshed (only `run` does that): no backend has a free slot."""
    daemon.start()
    try:
        return asyncio.run(daemon.tick(now))
    finally:
        assert daemon.liveness is not None
        daemon.liveness.release()
