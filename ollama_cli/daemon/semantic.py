"""The semantic cache's place in the daemon: once a generate or chat job is claimed, before its
request goes out, embed its last user text on the job's backend, and ask the store for the
nearest answer of the same scope (`cache/semantic.py`). At or above the threshold the job is
answered from it (a COMPLETE outcome with `reuse`, settled by the next tick as any other);
below, the job runs and its vector goes with its result into the cache.

The embedding is a network call and the lookup reads many vectors: neither runs inside a
transaction (the lookup is a read of its own, on a thread of its own, so the event loop streams
on meanwhile). The embedding model failing, or the store not answering the lookup, never fails
the job: it runs as if there were no semantic cache."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ollama_cli.daemon.outcomes import Outcome
from ollama_cli.jobs import Job, JobType
from ollama_cli.settings import CacheSettings
from ollama_cli.store.records import CacheWrite, SettleKind

if TYPE_CHECKING:
    from ollama_cli.daemon.attempt import InFlight
    from ollama_cli.store.base import Engine

log = logging.getLogger("ollama_q.daemon")

EMBED_TIMEOUT = 30.0  # seconds the embedding of a lookup may take before the job runs without it


class SemanticCache:
    def __init__(self, store: Engine, settings: CacheSettings, clock: Callable[[], float]) -> None:
        self.store, self.settings, self.clock = store, settings, clock
        self._reader: ThreadPoolExecutor | None = None  # one thread: PostgreSQL keeps a connection per thread
        self._numpy: bool | None = None  # installed? Asked once, when a job first wants the cache

    def wanted(self, job: Job) -> bool:
        return (job.type in (JobType.GENERATE, JobType.CHAT) and job.cache_key is not None
                and job.semantic)

    async def answer(self, run: InFlight) -> list[Outcome] | None:
        """The outcome of a job answered from the semantic cache; None to run it (then, when it
        can, `run.cache` says where its vector goes). Raises nothing but CancelledError."""
        from ollama_cli.cache import semantic

        claim = run.claims[0]
        job = claim.job
        if len(run.claims) != 1 or not self.wanted(job) or not self._has_numpy():
            return None
        model = self.settings.embedding_model
        scoped = semantic.scope_of(job.model, job.type.value, claim.request, model)
        if scoped is None:
            return None
        scope, text = scoped
        try:
            vectors = await asyncio.wait_for(run.slot.client.embed(model, [text]), EMBED_TIMEOUT)
            vector = semantic.normalised(vectors[0])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # BackendError, a timeout, a reply we cannot use: the job runs
            log.warning("job %d: no semantic cache lookup: embedding with %s failed: %s", job.id, model,
                        getattr(exc, "message", None) or type(exc).__name__)
            return None
        if vector is None:
            return None
        run.cache = CacheWrite(self.settings.ttl, self.settings.max_bytes, scope, vector)
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="ollama-q-lookup")
        try:
            match = await asyncio.get_running_loop().run_in_executor(
                self._reader, self.store.semantic_lookup, scope, vector, self.settings.similarity, self.clock())
        except Exception as exc:  # the store not answering: the job runs, its answer stored as usual
            log.warning("job %d: no semantic cache lookup: %s", job.id, getattr(exc, "message", None) or exc)
            return None
        if match is None:
            return None
        return [Outcome(claim, SettleKind.COMPLETE, result=match.result, host=run.slot.backend.label,
                        reuse=match.reuse)]

    def _has_numpy(self) -> bool:
        from ollama_cli.settings import one_blas_thread

        if self._numpy is None:
            one_blas_thread()
            try:
                import numpy  # noqa: F401

                self._numpy = True
            except ImportError:
                self._numpy = False
                log.warning("the semantic cache needs numpy (pip install 'ollama-q[semantic]'): jobs run without it")
        return self._numpy

    def close(self) -> None:
        if self._reader is not None:
            self._reader.shutdown(wait=False)
