"""Wake-ups from the store: a thread waits on the store's notifier and wakes the daemon's loop
when it returns early, so that a job submitted on another host is picked up at once instead of
at the next poll. The loop's own poll stays the backstop (a notification is not durable)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ollama_cli.store.base import Notifier

WAIT = 5.0  # seconds per wait on the notifier; the loop polls on its own meanwhile


def listen(notifier: Notifier, wake: asyncio.Event) -> Callable[[], None]:
    """Wake `wake` (an event of the running loop) whenever `notifier` returns before its
    timeout; the function that stops listening. A notifier that cannot hear of changes (LMDB)
    sleeps the whole timeout, and so never wakes the loop."""
    loop = asyncio.get_running_loop()
    stopped = threading.Event()

    def run() -> None:
        while not stopped.is_set():
            started = time.monotonic()
            notifier.wait(WAIT)
            if time.monotonic() - started < WAIT * 0.9 and not stopped.is_set():
                loop.call_soon_threadsafe(wake.set)

    threading.Thread(target=run, name="ollama-q-wakeups", daemon=True).start()
    return stopped.set
