"""The daemon in this process, against backends over real HTTP: `drain` runs it until
nothing is pending or running; `tick_once` makes one step of a daemon that is not running."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ollama_cli.daemon import events
from ollama_cli.daemon.loop import Daemon
from ollama_cli.daemon.scheduler import BackendView
from ollama_cli.daemon.tick import TickReport
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


def tick_once(daemon: Daemon, now: float, *, free: int = 1) -> TickReport:
    """One step of a daemon that is not running, its backends each taking `free` jobs (what
    they can take is the step's input: no pool refresh, no request sent), between taking its
    liveness lock and giving it back. What the step starts is claimed, not dispatched."""
    daemon.start()
    try:
        return asyncio.run(daemon.step.tick(now, [BackendView(free=free) for _ in daemon.pool.slots]))
    finally:
        assert daemon.liveness is not None
        daemon.liveness.release()
