"""Which ready jobs start now, and on which backend: a pure function of the candidates
(in queue order) and what the daemon knows of its backends.

The rules, in order:
1. Strict priority. A job starts only when no job of a higher priority is still waiting
   for a place (for a free slot, or under its model's concurrency cap).
2. Model-aware within a priority. Ollama pays seconds to swap models, so a later job
   whose model is already loaded on a backend with a free slot goes before an older one
   whose model is not. Bounded: once `max_skip` jobs have overtaken the oldest waiting
   job of a priority, it goes next, so no job waits behind an endless run of another model.
3. Placement. A job goes only to backends that list its model (when some do; when none
   does, any backend may try, and its 404 fails the job at once), preferring one where
   the model is loaded, then the one with the most free slots.
4. Coalescing. Embed jobs for one model with the same options join the job picked, up to
   `coalesce` jobs in one request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ollama_cli.models import Job, JobType, full_name


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


def plan(
    candidates: Iterable[Job],
    backends: list[BackendView],
    *,
    running_per_model: dict[str, int] | None = None,
    model_caps: dict[str, int] | None = None,
    skips: dict[int, int] | None = None,
    max_skip: int = 50,
    coalesce: int = 1,
    request_key: dict[int, object] | None = None,
) -> list[Assignment]:
    """The jobs to start now. `skips` (job id -> times overtaken) is updated in place and
    should live as long as the daemon; `request_key` gives, per embed job id, what must
    be equal for two embeds to share a request (their options)."""
    free = [b.free for b in backends]
    running = dict(running_per_model or {})
    caps = {full_name(k): v for k, v in (model_caps or {}).items()}
    skips = skips if skips is not None else {}
    out: list[Assignment] = []

    def eligible(job: Job) -> list[int]:
        name = full_name(job.model)
        listing = [i for i, b in enumerate(backends) if b.models is not None and name in b.models]
        unknown = [i for i, b in enumerate(backends) if b.models is None]
        return listing + unknown if listing or unknown else list(range(len(backends)))

    def placeable(job: Job) -> list[int]:
        name = full_name(job.model)
        if name in caps and running.get(name, 0) >= caps[name]:
            return []
        return [i for i in eligible(job) if free[i] > 0]

    loaded = [set(b.loaded) for b in backends]  # what will be loaded once our picks land

    def hot(job: Job, where: list[int]) -> bool:
        return any(full_name(job.model) in loaded[i] for i in where)

    by_rank: dict[int, list[Job]] = {}
    for job in candidates:
        by_rank.setdefault(job.priority.rank, []).append(job)
    for rank in sorted(by_rank):
        waiting = by_rank[rank]
        while waiting:
            if not any(free):
                return out
            options = [(j, placeable(j)) for j in waiting]
            options = [(j, w) for j, w in options if w]
            if not options:
                return out  # rule 1: this priority still waits, so lower ones do too
            head = waiting[0]
            head_where = next((w for j, w in options if j is head), None)
            if head_where is not None and (skips.get(head.id, 0) >= max_skip or hot(head, head_where)):
                pick, where = head, head_where
            else:
                pick, where = next(((j, w) for j, w in options if hot(j, w)), options[0])
            if pick is not head:
                skips[head.id] = skips.get(head.id, 0) + 1
            skips.pop(pick.id, None)
            target = max(where, key=lambda i: (full_name(pick.model) in loaded[i], free[i], -i))
            group = [pick]
            if pick.type is JobType.EMBED and coalesce > 1:
                key = (request_key or {}).get(pick.id)
                for other in waiting:
                    if len(group) >= coalesce:
                        break
                    if other is not pick and other.type is JobType.EMBED and other.model == pick.model \
                            and (request_key or {}).get(other.id) == key and other.timeout == pick.timeout \
                            and other.keep_alive == pick.keep_alive:
                        group.append(other)
            for job in group:
                waiting.remove(job)
            free[target] -= 1
            name = full_name(pick.model)
            running[name] = running.get(name, 0) + 1
            loaded[target].add(name)
            out.append(Assignment(target, tuple(group)))
    return out
