"""Batches: a JSONL file of requests queued in one write transaction, followed as a
whole, and answered in the shape of OpenAI's batch output file.

A line is an OpenAI batch request (`{"custom_id", "method", "url", "body"}` for
/v1/chat/completions, /v1/completions or /v1/embeddings) or a native one
(`{"model", "type"?, "prompt"?, "messages"?, "input"?, ...}`). Every error is a
UsageError naming its 1-based line, raised before anything is written.

A batch is the name its jobs were submitted under (`JobSpec.batch`), nothing more: `clean`
and `list --batch` need no batch record."""

from __future__ import annotations

import gc
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from ollama_cli import submission
from ollama_cli.errors import NotFound, UsageError
from ollama_cli.jobs import Job, JobStatus, JobType, Priority, result_stats, result_text
from ollama_cli.store.base import Engine, JobSpec
from ollama_cli.store.records import BatchEntry
from ollama_cli.timefmt import bounded_duration

ENDPOINTS = {
    "/v1/chat/completions": JobType.CHAT,
    "/v1/completions": JobType.GENERATE,
    "/v1/embeddings": JobType.EMBED,
}
# OpenAI's sampling parameters that Ollama takes as options of the same name.
SAME_NAME_OPTIONS = frozenset({"temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty"})
NATIVE_FIELDS = frozenset({"custom_id", "model", "type", "prompt", "system", "messages", "input", "options",
                           "format", "priority", "keep_alive"})
# A name is typed on command lines and is a key prefix ended by NUL: printable, not
# taken for an option, and short (LMDB keys are at most 511 bytes).
_NAME = re.compile(r"^[^\x00-\x1f\x7f\s-][^\x00-\x1f\x7f]*$")
NAME_MAX_BYTES = 200
# Jobs read per read transaction when writing results: reading a large batch never holds
# one transaction, and the old pages it pins, for long.
RESULTS_CHUNK = 1000
POLL = 0.1


class Submitted(NamedTuple):
    batch: str
    jobs: int
    first_id: int
    last_id: int


# ---------------------------------------------------------------------------- parsing


@contextmanager
def _bulk() -> Iterator[None]:
    """No cyclic garbage collection: a large batch makes millions of objects, none in a
    cycle, and the collector would walk all of them again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def decode(data: bytes) -> str:
    """The file as text; a byte that is not UTF-8 is reported by its line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UsageError(f"line {line}: not UTF-8 text") from None
    return text[1:] if text.startswith("\ufeff") else text  # a BOM, as some editors write


@_bulk()
def parse(text: str, *, model: str | None = None, priority: Priority | None = None) -> list[JobSpec]:
    """Every non-blank line as a job spec (its `batch` still unset). `model` is the
    default for lines without one; `priority`, when given, applies to every line."""
    raw_decode = json.JSONDecoder(parse_constant=_not_json).raw_decode
    specs: list[JobSpec] = []
    seen: dict[str, int] = {}
    # Splitting at "\n" only: str.splitlines() would also split at U+2028 inside a string.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            try:
                obj, end = raw_decode(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"not JSON: {exc.msg} (column {exc.colno})") from None
            except RecursionError:
                raise UsageError("not JSON that Python can read: nested too deeply") from None
            if end != len(line):
                raise UsageError(f"not JSON: extra data after the object (column {end + 1})")
            if not isinstance(obj, dict):
                raise UsageError("not a JSON object")
            custom_id = obj.get("custom_id")
            if custom_id is None:
                custom_id = f"request-{number}"
            elif not isinstance(custom_id, str) or not custom_id:
                raise UsageError("custom_id must be a non-empty string")
            else:
                submission.check_text(custom_id, "custom_id")
            if custom_id in seen:
                raise UsageError(f"custom_id {custom_id!r} is already used on line {seen[custom_id]}")
            seen[custom_id] = number
            build = _openai if "url" in obj or "body" in obj or "method" in obj else _native
            specs.append(build(obj, custom_id, model, priority))
        except UsageError as exc:
            raise UsageError(f"line {number}: {exc.message}") from None
    if not specs:
        raise UsageError("the file holds no requests")
    return specs


def _not_json(name: str) -> Any:
    raise UsageError(f"not JSON: {name} is Python's extension, not JSON")


def _openai(obj: dict[str, Any], custom_id: str, default_model: str | None,
            priority: Priority | None) -> JobSpec:
    """An OpenAI batch line, mapped as Ollama's own /v1 endpoints map the body."""
    method = obj.get("method", "POST")
    if method != "POST":
        raise UsageError(f"method must be POST, not {method!r}")
    url = obj.get("url")
    kind = ENDPOINTS.get(url) if isinstance(url, str) else None
    if kind is None:
        raise UsageError(f"unknown url {url!r} (use {', '.join(ENDPOINTS)})")
    if "body" not in obj:
        raise UsageError("no body")
    body = obj["body"]
    if not isinstance(body, dict):
        raise UsageError("body must be a JSON object")
    model = _model(body.get("model"), default_model, "body.model")
    if kind is JobType.EMBED:
        if body.get("encoding_format", "float") != "float":
            raise UsageError("body.encoding_format: only float is supported")
        request = submission.build_request(kind, inputs=_inputs(body.get("input"), "body.input"),
                                           extra=_dimensions(body))
    elif kind is JobType.CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise UsageError("body.messages must be a non-empty array of messages")
        chat = [_message(m, i, "body.messages") for i, m in enumerate(messages)]
        _check_content(kind, None, chat, None)
        request = submission.build_request(kind, messages=chat, options=_openai_options(body),
                                           format=_response_format(body.get("response_format")))
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise UsageError("body.prompt must be a string (one prompt per line)")
        _check_content(kind, prompt, None, None)
        request = submission.build_request(kind, prompt=prompt, options=_openai_options(body),
                                           format=_response_format(body.get("response_format")))
    return JobSpec(model=model, type=kind, request=request, priority=priority or Priority.MEDIUM,
                   custom_id=custom_id)


def _message(msg: Any, index: int, field: str) -> dict[str, str]:
    """`{role, content}` of a message in OpenAI's form or Ollama's."""
    if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
        raise UsageError(f"{field}[{index}] is not an object with a string role")
    role = "system" if msg["role"] == "developer" else msg["role"]  # OpenAI's newer name for it
    if role not in submission.ROLES:
        raise UsageError(f"{field}[{index}] has unknown role {role!r}")
    content = msg.get("content")
    if isinstance(content, list):  # content parts: the text ones, in order
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise UsageError(f"{field}[{index}]: only text content parts are supported")
            texts.append(part["text"])
        content = "\n".join(texts)
    elif content is None:  # an assistant turn that only called tools
        content = ""
    elif not isinstance(content, str):
        raise UsageError(f"{field}[{index}].content must be a string or an array of text parts")
    return {"role": role, "content": content}


def _openai_options(body: dict[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in body.items() if k in SAME_NAME_OPTIONS and v is not None}
    if isinstance(options.get("stop"), str):
        options["stop"] = [options["stop"]]  # Ollama takes a list only
    # max_completion_tokens is the newer name OpenAI gives max_tokens for chat.
    tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if tokens is not None:
        options["num_predict"] = tokens
    return options


def _response_format(value: Any) -> Any:
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


def _dimensions(body: dict[str, Any]) -> dict[str, Any] | None:
    dims = body.get("dimensions")
    if dims is None:
        return None
    if not isinstance(dims, int) or isinstance(dims, bool) or dims <= 0:
        raise UsageError("body.dimensions must be a positive integer")
    return {"dimensions": dims}


def _native(obj: dict[str, Any], custom_id: str, default_model: str | None,
            priority: Priority | None) -> JobSpec:
    """A native line: the fields of `submit`, as JSON."""
    unknown = sorted(set(obj) - NATIVE_FIELDS)
    if unknown:
        raise UsageError(f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(NATIVE_FIELDS))})")
    model = _model(obj.get("model"), default_model, "model")
    if "type" in obj:
        if not isinstance(obj["type"], str):
            raise UsageError("type must be a string")
        kind = submission.job_type(obj["type"])
    else:  # what the line holds says what it is
        kind = JobType.CHAT if "messages" in obj else JobType.EMBED if "input" in obj else JobType.GENERATE
    prompt, system = _text(obj, "prompt"), _text(obj, "system")
    messages = obj.get("messages")
    if messages is not None:
        if kind is not JobType.CHAT:
            raise UsageError(f"messages need type chat, not {kind.value}")
        if not isinstance(messages, list):
            raise UsageError("messages must be an array of messages")
        # Ollama's own message fields (images, tool_calls...) go through as they are.
        messages = [{**m, **_message(m, i, "messages")} for i, m in enumerate(messages)]
    inputs = None
    if obj.get("input") is not None:
        if kind is not JobType.EMBED:
            raise UsageError(f"input needs type embed, not {kind.value}")
        inputs = _inputs(obj["input"], "input")
    options = obj.get("options")
    if options is not None and not isinstance(options, dict):
        raise UsageError("options must be a JSON object")
    fmt = obj.get("format")
    if fmt is not None and fmt != "json" and not isinstance(fmt, dict):
        raise UsageError('format must be "json" or a JSON schema object')
    if kind is JobType.EMBED and (system or fmt is not None):
        raise UsageError("system and format do not apply to type embed")
    _check_content(kind, prompt, messages, inputs)
    request = submission.build_request(kind, prompt=prompt, system=system, messages=messages, inputs=inputs,
                                       options=options, format=fmt)
    own = obj.get("priority")
    if own is not None and not isinstance(own, str):
        raise UsageError("priority must be a string")
    if priority is None:
        priority = submission.priority(own) if own else Priority.MEDIUM
    return JobSpec(model=model, type=kind, request=request, priority=priority, custom_id=custom_id,
                   keep_alive=_keep_alive(obj.get("keep_alive")))


def _check_content(kind: JobType, prompt: str | None, messages: list[dict[str, Any]] | None,
                   inputs: list[str] | None) -> None:
    """What submission.build_request checks too, said in a batch line's words, not in
    the command line's."""
    if kind is JobType.GENERATE and not prompt:
        raise UsageError("a generate request needs a non-empty prompt")
    if kind is JobType.CHAT and not prompt and all(m["role"] == "system" for m in messages or ()):
        raise UsageError("a chat needs a message that is not a system message")
    if kind is JobType.EMBED and not inputs and not prompt:
        raise UsageError("an embed request needs input")


def _model(value: Any, default: str | None, field: str) -> str:
    if value is None:
        if default is None:
            raise UsageError(f"no {field}, and no --model to default to")
        return default
    if not isinstance(value, str):
        raise UsageError(f"{field} must be a string")
    return submission.model_name(value)


def _text(obj: dict[str, Any], field: str) -> str | None:
    value = obj.get(field)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{field} must be a string")
    return value


def _inputs(value: Any, field: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{field} must be a string or a non-empty array of strings")
    return value


def _keep_alive(value: Any) -> float | None:
    """Seconds as a number, or a duration; a negative one keeps the model loaded, as in Ollama."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return -1.0 if value < 0 else float(bounded_duration(value, f"keep_alive {value}"))
    if isinstance(value, str):
        return submission.keep_alive(value)
    raise UsageError("keep_alive must be a number of seconds or a duration such as 5m")


# ----------------------------------------------------------------------------- submit


@_bulk()
def submit(store: Engine, specs: Sequence[JobSpec], now: float, *, name: str | None = None) -> Submitted:
    """Queue every spec in ONE write transaction under the batch `name` (refused if in
    use) or a new `batch-<n>`."""
    if name is not None and (not _NAME.match(submission.check_text(name, "batch name"))
                             or len(name.encode()) > NAME_MAX_BYTES):
        raise UsageError(f"invalid batch name {name!r} (printable, at most {NAME_MAX_BYTES} bytes, "
                         "not starting with - or a space)")
    if not specs:
        raise UsageError("no requests to submit")
    batch, jobs = store.submit_batch(specs, now, name=name)
    return Submitted(batch, len(jobs), jobs[0].id, jobs[-1].id)


# ----------------------------------------------------------------------------- status


def status(store: Engine, name: str) -> dict[str, Any]:
    """`{"batch", "total", "pending", "running", "completed", "failed", "cancelled"}`."""
    return store.batch_counts(name)


def listing(store: Engine) -> list[dict[str, Any]]:
    """Every batch's status, the newest batch first. It reads every job of every batch (a
    batch keeps no counters of its own)."""
    out = []
    for name in store.batch_names():
        try:
            out.append(store.batch_counts(name))
        except NotFound:  # its last job was cleaned away since the names were read
            continue
    return out


def cancel(store: Engine, name: str, now: float) -> tuple[dict[str, Any], int]:
    """Cancel every pending or running job of the batch (a running one is aborted): the
    batch's status after, and how many were cancelled. NotFound for an unknown batch."""
    entries = store.batch_jobs(name)
    if not entries:
        raise NotFound(f"batch {name!r} not found")
    live = [e.id for e in entries if e.job is not None and not e.job.status.finished]
    cancelled = sum(c.changed for c in store.cancel(live, now)) if live else 0
    return store.batch_counts(name), cancelled


def _walk(store: Engine, name: str) -> tuple[dict[str, Any], dict[int, JobStatus]]:
    """The batch's counts, and the jobs not finished with their status, read at once."""
    counts: dict[str, Any] = {"batch": name, "total": 0, **{s.value: 0 for s in JobStatus}}
    left: dict[int, JobStatus] = {}
    entries = store.batch_jobs(name)
    if not entries:
        raise NotFound(f"batch {name!r} not found")
    for entry in entries:
        job = entry.job  # None: corrupt, which `status ID` reports and a count cannot
        if job is None:
            continue
        counts[job.status.value] += 1
        counts["total"] += 1
        if not job.status.finished:
            left[job.id] = job.status
    return counts, left


def wait(store: Engine, name: str, *, timeout: float | None = None,
         on_progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, Any], bool]:
    """Until every job of the batch has finished, or the timeout: the batch's status and
    whether all finished. Each poll re-reads only the jobs not yet finished, so it costs
    what is left of the batch, not the whole of it. `on_progress(done, total)`."""
    counts, left = _walk(store, name)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if on_progress is not None:
            on_progress(counts["total"] - len(left), counts["total"])
        if not left:
            return counts, True
        if deadline is not None and time.monotonic() >= deadline:
            return counts, False
        started = time.monotonic()
        for (job_id, was), job in zip(list(left.items()), store.get_jobs(list(left))):
            is_ = job.status if isinstance(job, Job) else None
            if is_ is was:
                continue
            counts[was.value] -= 1
            if is_ is None:  # cleaned away (so it had finished), or unreadable
                counts["total"] -= 1
            else:
                counts[is_.value] += 1
            if is_ is None or is_.finished:
                del left[job_id]
            else:
                left[job_id] = is_
        # A poll of a large batch takes a while: rest long enough that waiting costs a
        # small share of a core.
        pause = max(POLL, 4 * (time.monotonic() - started))
        if deadline is not None:
            pause = min(pause, max(0.0, deadline - time.monotonic()))
        store.notifier.wait(pause)


# ---------------------------------------------------------------------------- results


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
