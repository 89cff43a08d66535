"""The daemon's backends as it sees them: free slots, health (unreachable, cooling down
after failures or as the server asked), and which models each has installed and loaded,
refreshed in the background from /api/tags and /api/ps.

A backend takes jobs only once it has answered a listing since it was last seen up: one
that accepts connections and then says nothing is down, probed with backoff like one
that refuses them, and never a place for jobs."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ollama_cli.clients.base import BackendError, Client
from ollama_cli.daemon import events
from ollama_cli.settings.hosts import Backend
from ollama_cli.jobs import ErrorType, full_name
from ollama_cli.daemon.scheduler import BackendView
from ollama_cli.store.records import BackendState

log = logging.getLogger("ollama_q.daemon")

COOLDOWN_AFTER = 3  # different jobs failing in a row before a backend rests
COOLDOWN_CAP = 60.0
LOADED_EVERY = 5.0  # /api/ps
TAGS_EVERY = 30.0  # /api/tags


class Backoff(NamedTuple):
    """Seconds between probes of a backend that is down: `first`, doubling up to `cap`."""

    first: float = 0.5
    cap: float = 30.0


@dataclass
class Slot:
    backend: Backend
    client: Client
    capacity: int
    running: int = 0
    running_models: Counter[str] = field(default_factory=Counter)
    down_since: float | None = None
    probe_at: float = 0.0
    probe_delay: float = 0.0  # set when it goes down
    probing: bool = False
    failures: int = 0  # different jobs whose attempts failed in a row here
    failed_jobs: set[int] = field(default_factory=set)  # those jobs
    cooldown_until: float = 0.0
    models: set[str] | None = None  # installed (full names); None: the server does not say
    answered: bool = False  # it answered a listing since it was last up: no job before
    loaded: set[str] = field(default_factory=set)
    listed: set[str] | None = None  # what /api/ps said last time; None: not asked yet
    loads: int = 0  # loads we caused: an /api/ps reply asked before the latest one is stale
    next_loaded: float = 0.0
    next_tags: float = 0.0
    refreshing: bool = False

    @property
    def up(self) -> bool:
        return self.down_since is None

    def free(self, now: float) -> int:
        if not self.up or not self.answered or now < self.cooldown_until:
            return 0
        return max(0, self.capacity - self.running)

    def view(self, now: float) -> BackendView:
        return BackendView(free=self.free(now), models=self.models, loaded=set(self.loaded))


class Pool:
    def __init__(self, slots: list[Slot], clock: Callable[[], float], publish: events.Subscriber,
                 *, probe_backoff: Backoff = Backoff()) -> None:
        self.slots = slots
        self.clock = clock
        self.publish = publish
        self.probe_backoff = probe_backoff
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cancel probes and refreshes still running, before their clients close."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def looked(self) -> bool:
        """Whether every backend has answered a listing or been found down."""
        return all(s.answered or not s.up for s in self.slots)

    def found(self) -> tuple[events.BackendFound, ...]:
        return tuple(events.BackendFound(s.backend.label, s.up and s.answered,
                                         None if s.models is None else len(s.models)) for s in self.slots)

    def states(self, daemon_id: str, now: float) -> list[BackendState]:
        """What the pool knows of each backend, as the store records it for `top` and routing."""
        return [BackendState(s.backend.label, daemon_id, s.up, None if s.models is None else tuple(sorted(s.models)),
                             tuple(sorted(s.loaded)), s.capacity, s.running, now) for s in self.slots]

    def views(self, now: float) -> list[BackendView]:
        return [s.view(now) for s in self.slots]

    def free(self, now: float) -> int:
        return sum(s.free(now) for s in self.slots)

    def running_per_model(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for s in self.slots:
            total.update(s.running_models)
        return dict(total)

    def started(self, slot: Slot, model: str) -> None:
        slot.running += 1
        slot.running_models[full_name(model)] += 1
        name = full_name(model)
        if name not in slot.loaded:
            # A load. On a server holding fewer models than it serves, it evicts the others
            # once their requests end: believing them still loaded would keep their jobs
            # "hot" and swap at every pick. /api/ps corrects this belief when it can.
            slot.loaded = {name}
            slot.loads += 1

    def finished(self, slot: Slot, model: str, now: float) -> None:
        slot.running -= 1
        slot.running_models[full_name(model)] -= 1
        slot.next_loaded = min(slot.next_loaded, now + 0.25)  # a swap may have happened: look soon

    def succeeded(self, slot: Slot) -> None:
        self.mark_up(slot)
        slot.failures = 0
        slot.failed_jobs.clear()

    def failed(self, slot: Slot, now: float, jobs: Iterable[int], retry_after: float | None = None) -> None:
        """A failed attempt of these jobs (not unreachability). After failures of a few
        different jobs in a row the backend rests, so that work flows to the others. One
        job's own failures (a prompt the server cannot take) count once, and a backend
        with no other to take its work does not rest for failures alone: resting it would
        stall every job for a fault of one. One that said when to come back (Retry-After)
        rests at least that long, whatever else."""
        slot.failed_jobs.update(jobs)
        slot.failures = len(slot.failed_jobs)
        rest = 0.0
        if slot.failures >= COOLDOWN_AFTER and self._another_can_work(slot, now):
            rest = min(COOLDOWN_CAP, 2.0 ** (slot.failures - COOLDOWN_AFTER + 1))
        asked = retry_after is not None and retry_after > rest
        if retry_after is not None and asked:
            rest = retry_after
        if rest:
            if now >= slot.cooldown_until:
                self.publish(events.BackendResting(slot.backend.label, slot.failures, rest, asked))
            slot.cooldown_until = max(slot.cooldown_until, now + rest)

    def _another_can_work(self, slot: Slot, now: float) -> bool:
        return any(s is not slot and s.up and s.answered and now >= s.cooldown_until for s in self.slots)

    def mark_down(self, slot: Slot, why: str, now: float) -> None:
        if slot.up:
            self.publish(events.BackendDown(slot.backend.label, why))
            slot.down_since = now
            slot.probe_delay = self.probe_backoff.first
        slot.probe_at = now + slot.probe_delay

    def mark_up(self, slot: Slot) -> None:
        if not slot.up:
            self.publish(events.BackendUp(slot.backend.label))
            slot.down_since = None
            slot.answered = False  # a look at its models first: it may have restarted with others
            slot.next_loaded = slot.next_tags = 0.0

    def elsewhere(self, slot: Slot, model: str) -> bool:
        """After `slot` said it has no such model: whether another backend lists it. The
        listing of `slot` was stale, so forget the model there."""
        name = full_name(model)
        if slot.models is not None:
            slot.models.discard(name)
        return any(s is not slot and s.models is not None and name in s.models for s in self.slots)

    def maintain(self, now: float, wake: asyncio.Event | None) -> None:
        """Start probes of unreachable backends and refreshes of the others, as due."""
        for slot in self.slots:
            if not slot.up and not slot.probing and now >= slot.probe_at:
                slot.probing = True
                self._spawn(self._probe(slot, wake))
            elif slot.up and not slot.refreshing and (now >= slot.next_loaded or now >= slot.next_tags):
                slot.refreshing = True
                self._spawn(self._refresh(slot, now, wake))

    async def _probe(self, slot: Slot, wake: asyncio.Event | None) -> None:
        try:
            if await slot.client.ping():
                self.mark_up(slot)
                if wake:
                    wake.set()
            else:
                slot.probe_delay = min(self.probe_backoff.cap, slot.probe_delay * 2)
                slot.probe_at = self.clock() + slot.probe_delay
        finally:
            slot.probing = False

    def _note_loads(self, slot: Slot, listed: set[str]) -> None:
        """ModelLoaded for each model /api/ps names that its previous answer did not. The
        server's own word on what is in memory, once per load whoever caused it, on both
        APIs; a result's load_duration is in every Ollama answer (milliseconds when the model
        was there already), so it would need a threshold, and every request queued behind a
        load reports that load again. The price: a load is seen up to LOADED_EVERY late
        (0.25 s after a job on the backend ends), and one unloaded before the next look is
        never seen. The first answer is what was there before the daemon: no news."""
        if slot.listed is not None:
            for model in sorted(listed - slot.listed):
                self.publish(events.ModelLoaded(slot.backend.label, model))
        slot.listed = listed

    async def _refresh(self, slot: Slot, now: float, wake: asyncio.Event | None) -> None:
        try:
            if now >= slot.next_tags:
                slot.next_tags = now + TAGS_EVERY
                try:
                    slot.models = {full_name(m["name"]) for m in await slot.client.models()}
                except BackendError as err:
                    if err.kind in (ErrorType.UNREACHABLE, ErrorType.TIMEOUT):
                        # Silent or gone: down, and probed, rather than a backend that
                        # "may hold any model" and swallows jobs until they time out.
                        self.mark_down(slot, err.message, self.clock())
                        return
                    # It answered, but not with a listing: keep what we knew.
                if not slot.answered:
                    slot.answered = True
                    if wake:
                        wake.set()
            if now >= slot.next_loaded:
                slot.next_loaded = now + LOADED_EVERY
                try:
                    loads = slot.loads
                    listed = {full_name(m) for m in await slot.client.loaded() if m}
                    self._note_loads(slot, listed)
                    # A reply asked for before our latest load does not show it; one asked
                    # while requests of the models it evicts still run may show them too, and
                    # believing them loaded would swap back and forth: the belief `started`
                    # formed stands until those requests end.
                    busy = {m for m, n in slot.running_models.items() if n > 0}
                    if slot.loads == loads and busy <= slot.loaded:
                        slot.loaded = listed | busy
                except BackendError:
                    pass
        except Exception as exc:  # a refresh is advice: it must never stop the daemon
            log.debug("refreshing %s failed: %s", slot.backend.label, type(exc).__name__)
        finally:
            slot.refreshing = False
