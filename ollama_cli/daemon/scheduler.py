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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ollama_cli.jobs import Job, JobType, full_name


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


class _Ahead:
    """The candidates, in queue order, read one at a time and only as far as a decision
    needs: reading one costs the daemon a lookup and a decode in its write transaction."""

    __slots__ = ("_rest", "peek")

    def __init__(self, candidates: Iterable[Job]) -> None:
        self._rest = iter(candidates)
        self.peek = next(self._rest, None)

    def read(self, rank: int, into: list[Job]) -> bool:
        """Append the next candidate to `into` if it has this priority rank."""
        job = self.peek
        if job is None or job.priority.rank != rank:
            return False
        into.append(job)
        self.peek = next(self._rest, None)
        return True


def plan(
    candidates: Iterable[Job],
    backends: list[BackendView],
    *,
    running_per_model: dict[str, int] | None = None,
    model_caps: Mapping[str, int] | None = None,
    skips: dict[int, int] | None = None,
    max_skip: int = 50,
    coalesce: int = 1,
    request_key: Callable[[Job], object] | None = None,
) -> list[Assignment]:
    """The jobs to start now, from `candidates` in queue order (priority, then age).
    `skips` (job id -> times overtaken) is updated in place and should live as long as
    the daemon; `request_key(job)` gives, for an embed job, what must be equal for two
    embeds to share a request (their options)."""
    free = [b.free for b in backends]
    running = dict(running_per_model or {})
    caps = {full_name(k): v for k, v in (model_caps or {}).items()}
    skips = skips if skips is not None else {}
    key_of = request_key or (lambda job: None)
    out: list[Assignment] = []

    loaded = [set(b.loaded) for b in backends]  # what will be loaded once our picks land
    names: dict[str, str] = {}

    def name_of(job: Job) -> str:
        name = names.get(job.model)
        if name is None:
            name = names[job.model] = full_name(job.model)
        return name

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

    # Placement depends on the model only: worked out once per model per pick.
    seen: dict[str, tuple[list[int], bool]] = {}

    def place(job: Job) -> tuple[list[int], bool]:
        name = name_of(job)
        if name not in seen:
            seen[name] = placement(name)
        return seen[name]

    ahead = _Ahead(candidates)
    while ahead.peek is not None:
        rank = ahead.peek.priority.rank
        waiting: list[Job] = []  # jobs of this priority read and not picked, in queue order
        while True:
            if not any(free):
                return out
            if not waiting and not ahead.read(rank, waiting):
                break  # none of this priority left: the next one's turn
            seen.clear()  # free slots, caps and loaded models moved with the last pick
            head = waiting[0]
            head_where, head_hot = place(head)
            if head_where and (skips.get(head.id, 0) >= max_skip or head_hot):
                pick, where = head, head_where
            else:
                first: tuple[Job, list[int]] | None = None
                i = 0
                while i < len(waiting) or ahead.read(rank, waiting):
                    job = waiting[i]
                    i += 1
                    job_where, job_hot = place(job)
                    if not job_where:
                        continue
                    if job_hot:
                        first = (job, job_where)
                        break
                    first = first or (job, job_where)
                if first is None:
                    return out  # rule 1: this priority still waits, so lower ones do too
                pick, where = first
            if pick is not head:
                skips[head.id] = skips.get(head.id, 0) + 1
            skips.pop(pick.id, None)
            name = name_of(pick)
            target = max(where, key=lambda i: (name in loaded[i], free[i], -i))
            group = [pick]
            if pick.type is JobType.EMBED and coalesce > 1:
                key = key_of(pick)
                i = 0
                while len(group) < coalesce and (i < len(waiting) or ahead.read(rank, waiting)):
                    other = waiting[i]
                    i += 1
                    if other is not pick and other.type is JobType.EMBED and other.model == pick.model \
                            and other.timeout == pick.timeout and other.keep_alive == pick.keep_alive \
                            and key_of(other) == key:
                        group.append(other)
            for job in group:
                waiting.remove(job)
            free[target] -= 1
            running[name] = running.get(name, 0) + 1
            loaded[target].add(name)
            out.append(Assignment(target, tuple(group)))
    return out
