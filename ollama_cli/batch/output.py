"""Batch results out: one line of OpenAI's batch output file per job, bodies in the shape
OpenAI's endpoint for the job's type answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ollama_cli.errors import NotFound
from ollama_cli.jobs import Job, JobStatus, JobType, result_stats, result_text

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
        return _line(job_id, job.custom_id, _response_body(job, body), None)
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


def _response_body(job: Job, result: dict[str, Any]) -> dict[str, Any]:
    """A completed job's result as OpenAI's endpoint for its type answers."""
    stats = result_stats(result)
    prompt_tokens, completion_tokens = stats.get("prompt_eval_count", 0), stats.get("eval_count", 0)
    created = int(job.finished_at or job.created_at)
    if job.type is JobType.EMBED:
        vectors = result.get("embeddings")
        return {
            "object": "list",
            "data": [{"object": "embedding", "embedding": vector, "index": i}
                     for i, vector in enumerate(vectors if isinstance(vectors, list) else [])],
            "model": job.model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    if job.type is JobType.CHAT:
        choice = {"index": 0, "message": {"role": "assistant", "content": result_text(job, result)},
                  "logprobs": None, "finish_reason": "stop"}
        return {"id": f"chatcmpl-{job.id}", "object": "chat.completion", "created": created,
                "model": job.model, "choices": [choice], "usage": usage}
    choice = {"index": 0, "text": result_text(job, result), "logprobs": None, "finish_reason": "stop"}
    return {"id": f"cmpl-{job.id}", "object": "text_completion", "created": created, "model": job.model,
            "choices": [choice], "usage": usage}
