"""Jobs in tests: `make_spec` and `make_job` build a submission and a record, `submit_spec`
submits one through the engine, `read_job` reads one that must be there."""

from __future__ import annotations

import itertools
from typing import Any

from ollama_cli import queue
from ollama_cli.jobs import Job, JobSpec, JobStatus, JobType, Priority
from ollama_cli.store.base import Engine
from ollama_cli.store.lmdb import Store

_prompts = itertools.count()


def make_spec(prompt: str | None = None, *, model: str = "m", job_type: JobType = JobType.GENERATE,
              request: dict[str, Any] | None = None, **fields: Any) -> JobSpec:
    """A submission whose request fits its type. Its prompt is its own unless given, so that
    no two jobs share a cache key by accident."""
    text = prompt if prompt is not None else f"prompt {next(_prompts)}"
    if request is None:
        request = ({"input": [text]} if job_type is JobType.EMBED else
                   {"messages": [{"role": "user", "content": text}]} if job_type is JobType.CHAT else
                   {"prompt": text})
    return JobSpec(model=model, type=job_type, request=request, **fields)


def submit_spec(store: Engine, prompt: str | None = None, *, model: str = "llama3.2", now: float = 0.0,
                **spec: Any) -> int:
    """Submit one job (for a model the emulator serves, unless told); its id."""
    return store.submit(make_spec(prompt, model=model, **spec), now).id


def make_job(id: int = 1, model: str = "llama3.2", priority: Priority = Priority.MEDIUM, **fields: Any) -> Job:
    """A job record that no store holds: a pending generate job created at 0, unless told."""
    return Job(**{"id": id, "model": model, "priority": priority, "type": JobType.GENERATE,
                  "status": JobStatus.PENDING, "created_at": 0.0, **fields})


def read_job(store: Engine | Store, job_id: int) -> Job:
    """The stored record of a job that must exist, through the engine or LMDB's own layer."""
    if isinstance(store, Store):
        with store.read() as tx:
            found = queue.get_job(tx, job_id)
    else:
        found = store.get_job(job_id)
    assert found is not None, f"job {job_id} is not in the store"
    return found
