"""OpenAI's shapes, both ways, in one place: what a batch line's body means as an Ollama-shaped
request, how a stored request is sent to an OpenAI-compatible server, and how a result
answers in the shape of OpenAI's endpoints (batch output files). Pure: no I/O."""

from __future__ import annotations

from typing import Any

from ollama_cli.errors import UsageError
from ollama_cli.jobs import Job, JobType, result_stats, result_text

# OpenAI's sampling parameters that Ollama takes as options of the same name.
SAME_NAME_OPTIONS = ("temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty")


def options_from_body(body: dict[str, Any]) -> dict[str, Any]:
    """Ollama options from an OpenAI request body."""
    options = {k: v for k, v in body.items() if k in SAME_NAME_OPTIONS and v is not None}
    if isinstance(options.get("stop"), str):
        options["stop"] = [options["stop"]]  # Ollama takes a list only
    # max_completion_tokens is the newer name OpenAI gives max_tokens for chat.
    tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if tokens is not None:
        options["num_predict"] = tokens
    return options


def format_from_response_format(value: Any) -> Any:
    """Ollama's `format` from OpenAI's `response_format`: "json", a schema, or None."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise UsageError("body.response_format.json_schema.schema must be a JSON object")
        return schema
    raise UsageError("body.response_format must be of type text, json_object or json_schema")


def response_format_from_format(fmt: Any) -> dict[str, Any] | None:
    """OpenAI's `response_format` from Ollama's `format` (the inverse of the above)."""
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "schema", "schema": fmt}}
    return None


def response_body(job: Job, result: dict[str, Any]) -> dict[str, Any]:
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
