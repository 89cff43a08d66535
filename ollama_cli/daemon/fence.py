"""The daemon's self-fencing, on a store whose other daemons may take its jobs back while it
still runs them (`Engine.fence_after`: PostgreSQL, where a host cut off from the server, or a
server restart, loses its lock with its session). Once no heartbeat has committed for
`fence_after` seconds, counted from before the last one that did, the daemon stops its running
requests (their streams close; each is handed back by a RELEASE settle that its lease token
refuses if another daemon took the job meanwhile) and claims nothing. The store's reclaim
waits longer than that (RECLAIM_AFTER) before it takes a silent daemon's jobs, so they are
never run twice at once. A heartbeat that commits again lifts the fence."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ollama_cli.daemon import events
from ollama_cli.daemon.attempt import InFlight, StopReason

CHECK_EVERY = 0.25  # while fenced: stops a request dispatched meanwhile within this time


class Fence:
    """When this daemon last knew it was alive for the store, and whether it has fenced itself.
    `after` None: never (LMDB)."""

    def __init__(self, after: Callable[[], float | None], publish: Callable[[events.Event], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._after = after  # read at each use: the engine's, which a test may shorten
        self._publish = publish
        self._clock = clock
        self._confirmed = clock()  # the daemon registers right after this
        self.fenced = False

    def beat(self, heartbeat: Callable[..., Any], *args: Any) -> float:
        """Run the store's heartbeat (on the writer thread); when it began, on this host's
        monotonic clock: the server's `now()` of that transaction is not earlier."""
        began = self._clock()
        heartbeat(*args)
        return began

    def confirmed(self, began: float) -> None:
        """A heartbeat that began at `began` has committed."""
        self._confirmed = max(self._confirmed, began)
        if self.fenced and not self.expired():
            self.fenced = False
            self._publish(events.DaemonUnfenced())

    def expired(self) -> bool:
        """Whether the daemon must not run or claim jobs now."""
        after = self._after()
        return after is not None and self._clock() - self._confirmed > after

    async def watch(self, runs: Callable[[], list[InFlight]]) -> None:
        """Until cancelled: once the last confirmed heartbeat is too old, stop every request
        in `runs()`, and go on stopping them while it stays so."""
        while (after := self._after()) is not None:
            left = self._confirmed + after - self._clock()
            if left >= 0:
                await asyncio.sleep(left + CHECK_EVERY / 10)
                continue
            stopped = sum(run.stop(StopReason.FENCED) for run in runs())
            if not self.fenced:
                self.fenced = True
                self._publish(events.DaemonFenced(after, stopped))
            await asyncio.sleep(CHECK_EVERY)
