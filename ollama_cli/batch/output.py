"""Batch results out: one line of OpenAI's batch output file per job, bodies in the shape
OpenAI's endpoint for the job's type answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ollama_cli.errors import NotFound
from ollama_cli.jobs import JobStatus
from ollama_cli.wire import openai

if TYPE_CHECKING:
    from ollama_cli.store.base import Engine
    from ollama_cli.store.records import BatchEntry

# Jobs read per read transaction when writing results: reading a large batch never holds
# one transaction, and the old pages it pins, for long.
RESULTS_CHUNK = 1000


def results(store: Engine, name: str) -> Iterator[dict[str, Any]]:
    """One line of OpenAI's batch output file per job, in id (file) order. Raises
    NotFound at once for an unknown batch; reads in short transactions after that."""
    if not store.batch_jobs(name, limit=1):
        raise NotFound(f"batch {name!r} not found")
    return _result_lines(store, name)


def _result_lines(store: Engine, name: str) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        chunk = store.batch_jobs(name, after=after, limit=RESULTS_CHUNK, results=True)
        yield from map(_output_line, chunk)
        if len(chunk) < RESULTS_CHUNK:
            return
        after = chunk[-1].id


def _output_line(entry: BatchEntry) -> dict[str, Any]:
    job_id, job, body = entry.id, entry.job, entry.result
    if entry.corrupt is not None:
        return _line(job_id, None, None, {"code": "corrupt_record", "message": entry.corrupt.message})
    if job is None:  # an index entry whose job is gone
        return _line(job_id, None, None, {"code": "not_found", "message": f"job {job_id} was deleted"})
    if job.status is JobStatus.COMPLETED and body is not None:
        return _line(job_id, job.custom_id, openai.response_body(job, body), None)
    if job.status is JobStatus.COMPLETED:
        error = {"code": "result_missing", "message": f"job {job_id} completed but its result is gone"}
    elif job.error is not None:
        error = {"code": job.error.type.value, "message": job.error.message}
    elif job.status.finished:
        error = {"code": job.status.value, "message": f"job {job_id} {job.status.value}"}
    else:
        error = {"code": "not_finished", "message": f"job {job_id} is {job.status.value}"}
    return _line(job_id, job.custom_id, None, error)


def _line(job_id: int, custom_id: str | None, body: dict[str, Any] | None,
          error: dict[str, str] | None) -> dict[str, Any]:
    response = None if body is None else {"status_code": 200, "request_id": str(job_id), "body": body}
    return {"id": f"batch_req_{job_id}", "custom_id": custom_id, "response": response, "error": error}
