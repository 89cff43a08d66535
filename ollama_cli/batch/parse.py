"""Batch files in: a JSONL file of requests, as OpenAI batch lines (`{"custom_id", "method",
"url", "body"}` for /v1/chat/completions, /v1/completions or /v1/embeddings) or native ones
(`{"model", "type"?, "prompt"?, "messages"?, "input"?, ...}`), to job specs. Every error is a
UsageError naming its 1-based line, raised before anything is written."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ollama_cli import submission
from ollama_cli.errors import UsageError
from ollama_cli.jobs import JobSpec, JobType, Priority
from ollama_cli.timefmt import bounded_duration
from ollama_cli.wire import openai

ENDPOINTS = {
    "/v1/chat/completions": JobType.CHAT,
    "/v1/completions": JobType.GENERATE,
    "/v1/embeddings": JobType.EMBED,
}
NATIVE_FIELDS = frozenset({"custom_id", "model", "type", "prompt", "system", "messages", "input", "options",
                           "format", "priority", "keep_alive"})


@contextmanager
def bulk() -> Iterator[None]:
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


@bulk()
def parse(text: str, *, model: str | None = None, priority: Priority | None = None,
          default_priority: Priority = Priority.MEDIUM) -> list[JobSpec]:
    """Every non-blank line as a job spec (its `batch` still unset). `model` is the
    default for lines without one; `priority`, when given, applies to every line, else a
    line's own, else `default_priority` (the config file's)."""
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
            specs.append(build(obj, custom_id, model, priority, default_priority))
        except UsageError as exc:
            raise UsageError(f"line {number}: {exc.message}") from None
    if not specs:
        raise UsageError("the file holds no requests")
    return specs


def _not_json(name: str) -> Any:
    raise UsageError(f"not JSON: {name} is Python's extension, not JSON")


def _openai(obj: dict[str, Any], custom_id: str, default_model: str | None,
            priority: Priority | None, default_priority: Priority) -> JobSpec:
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
        request = submission.build_request(kind, messages=chat, options=openai.options_from_body(body),
                                           format=openai.format_from_response_format(body.get("response_format")))
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise UsageError("body.prompt must be a string (one prompt per line)")
        _check_content(kind, prompt, None, None)
        request = submission.build_request(kind, prompt=prompt, options=openai.options_from_body(body),
                                           format=openai.format_from_response_format(body.get("response_format")))
    return JobSpec(model=model, type=kind, request=request, priority=priority or default_priority,
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


def _dimensions(body: dict[str, Any]) -> dict[str, Any] | None:
    dims = body.get("dimensions")
    if dims is None:
        return None
    if not isinstance(dims, int) or isinstance(dims, bool) or dims <= 0:
        raise UsageError("body.dimensions must be a positive integer")
    return {"dimensions": dims}


def _native(obj: dict[str, Any], custom_id: str, default_model: str | None,
            priority: Priority | None, default_priority: Priority) -> JobSpec:
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
        priority = submission.priority(own) if own else default_priority
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
        value = default
    elif not isinstance(value, str):
        raise UsageError(f"{field} must be a string")
    if value == submission.AUTO:  # routed only at submit: queued as it is, it would fail as model_not_found
        raise UsageError(f"{field} auto needs routing: use submit auto --category NAME")
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
