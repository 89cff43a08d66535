"""Which ready jobs start now, and on which backend: a pure function of the ready jobs (as
the store answers questions about them, `records.ReadyJobs`) and what the daemon knows of
its backends. It asks, per pick, for the head of the most urgent priority and for the
oldest job of each model loaded on a backend with a free slot: a pick costs the same at
any depth of the queue, and a job of a loaded model is found however far back it is.

The rules, in order:
1. Strict priority. A job starts only when no job of a higher priority is still waiting
   for a place (for a free slot, or under its model's concurrency cap).
2. Model-aware within a priority. Ollama pays seconds to swap models, so a later job
   whose model is already loaded on a backend with a free slot goes before an older one
   whose model is not. Bounded: once `max_skip` jobs have overtaken the oldest waiting
   job of a priority, it goes next, so no job waits behind an endless run of another model
   (the daemon's `--max-overtake`).
3. Placement. A job goes only to backends that list its model (when some do; when none
   does, any backend may try, and its 404 fails the job at once), preferring one where
   the model is loaded, then the one with the most free slots.
4. Coalescing. Embed jobs for one model with the same options join the job picked, up to
   `coalesce` jobs in one request, looked for among the next `COALESCE_READS x coalesce`
   ready jobs of that model (so a run of its other jobs cannot lengthen a tick).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ollama_cli.jobs import Job, JobType, Priority, full_name

if TYPE_CHECKING:
    from ollama_cli.store.records import ReadyJobs

COALESCE_READS = 8


@dataclass
class BackendView:
    """What the scheduler needs to know of one backend."""

    free: int
    models: set[str] | None = None  # installed (full names); None: not known
    loaded: set[str] = field(default_factory=set)  # in memory now (full names)


@dataclass(frozen=True)
class Assignment:
    backend: int  # index into the backends given to `plan`
    jobs: tuple[Job, ...]  # more than one only for coalesced embeds


class Listed:
    """`ReadyJobs` over jobs given in queue order (tests, and callers with a list)."""

    def __init__(self, jobs: Iterable[Job]) -> None:
        self._jobs = list(jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs)

    def oldest(self, rank: int, model: str | None = None, after: int = 0) -> Job | None:
        return next((j for j in self._jobs if j.priority.rank == rank and j.id > after
                     and (model is None or full_name(j.model) == model)), None)

    def embeds(self, rank: int, model: str, after: int, limit: int) -> Iterator[Job]:
        same = [j for j in self._jobs if j.priority.rank == rank and j.id > after and full_name(j.model) == model]
        return (j for j in same[:limit] if j.type is JobType.EMBED)

    def models(self, rank: int) -> list[str]:
        return list(dict.fromkeys(full_name(j.model) for j in self._jobs if j.priority.rank == rank))


def plan(
    ready: ReadyJobs | Iterable[Job],
    backends: list[BackendView],
    *,
    running_per_model: dict[str, int] | None = None,
    model_caps: Mapping[str, int] | None = None,
    skips: dict[int, int] | None = None,
    max_skip: int = 50,
    coalesce: int = 1,
    request_key: Callable[[Job], object] | None = None,
) -> list[Assignment]:
    """The jobs to start now. `skips` (job id -> times overtaken) is updated in place and
    should live as long as the daemon; `request_key(job)` gives, for an embed job, what
    must be equal for two embeds to share a request (their options)."""
    if not hasattr(ready, "oldest"):
        ready = Listed(ready)
    free = [b.free for b in backends]
    running = dict(running_per_model or {})
    caps = {full_name(k): v for k, v in (model_caps or {}).items()}
    skips = skips if skips is not None else {}
    key_of = request_key or (lambda job: None)
    out: list[Assignment] = []
    taken: set[int] = set()  # picked by this plan, still in the store's ready index

    loaded = [set(b.loaded) for b in backends]  # what will be loaded once our picks land

    def placement(name: str) -> tuple[list[int], bool]:
        """The backends that can take a job of this model now, and whether it is
        loaded on one of them."""
        if name in caps and running.get(name, 0) >= caps[name]:
            return [], False
        listing = [i for i, b in enumerate(backends) if b.models is not None and name in b.models]
        unknown = [i for i, b in enumerate(backends) if b.models is None]
        eligible = listing + unknown if listing or unknown else range(len(backends))
        where = [i for i in eligible if free[i] > 0]
        return where, any(name in loaded[i] for i in where)

    def oldest(rank: int, model: str | None) -> Job | None:
        job = ready.oldest(rank, model)
        while job is not None and job.id in taken:
            job = ready.oldest(rank, model, job.id)
        return job

    for rank in sorted(p.rank for p in Priority):
        while any(free):
            head = oldest(rank, None)
            if head is None:
                break  # none of this priority left: the next one's turn
            head_where, head_hot = placement(full_name(head.model))
            pick: Job
            if head_where and (skips.get(head.id, 0) >= max_skip or head_hot):
                pick = head
            else:
                hot = {m for i, f in enumerate(free) if f > 0 for m in loaded[i]}
                found = [job for job in (oldest(rank, m) for m in sorted(hot)) if job is not None]
                found = [job for job in found if placement(full_name(job.model))[1]]
                if found:
                    pick = min(found, key=lambda j: j.id)
                elif head_where:
                    pick = head
                else:  # the head cannot be placed: the oldest job that can
                    found = [job for job in (oldest(rank, m) for m in ready.models(rank)) if job is not None]
                    found = [job for job in found if placement(full_name(job.model))[0]]
                    if not found:
                        return out  # rule 1: this priority still waits, so lower ones do too
                    pick = min(found, key=lambda j: j.id)
            if pick is not head:
                skips[head.id] = skips.get(head.id, 0) + 1
            skips.pop(pick.id, None)
            name = full_name(pick.model)
            where = placement(name)[0]
            target = max(where, key=lambda i: (name in loaded[i], free[i], -i))
            group = [pick]
            if pick.type is JobType.EMBED and coalesce > 1:
                key = key_of(pick)
                for other in ready.embeds(rank, name, pick.id, COALESCE_READS * coalesce):
                    if len(group) >= coalesce:
                        break
                    if other.id not in taken and other.model == pick.model and other.timeout == pick.timeout \
                            and other.keep_alive == pick.keep_alive and key_of(other) == key:
                        group.append(other)
            taken.update(j.id for j in group)
            free[target] -= 1
            running[name] = running.get(name, 0) + 1
            if name not in loaded[target]:
                loaded[target] = {name}  # a load: it evicts what the backend held (pool.started)
            out.append(Assignment(target, tuple(group)))
    return out
