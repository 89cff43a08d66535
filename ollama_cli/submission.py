"""The contract's input rules: from what a user typed (or a batch line holds) to a
validated request payload. Every violation is a UsageError, raised before anything
is written."""

from __future__ import annotations

import json
import re
from enum import Enum
from functools import lru_cache
from typing import Any, TypeVar

from ollama_cli.errors import UsageError
from ollama_cli.jobs import JobType, Priority

ROLES = ("system", "user", "assistant", "tool")
# Ollama's name rule (types/model/name.go): [host/][namespace/]model[:tag]; a host may
# carry a port, a namespace has no dot.
_HOST = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"
_NAMESPACE = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"
_MODEL = re.compile(rf"(?:(?:{_HOST}/)?{_NAMESPACE}/)?{_PART}(?::{_PART})?")

E = TypeVar("E", bound=Enum)


def choice(enum: type[E], value: str, what: str) -> E:
    try:
        return enum(value.lower())
    except ValueError:
        options = ", ".join(m.value for m in enum)  # type: ignore[attr-defined]
        raise UsageError(f"unknown {what} {value!r} (choose from {options})") from None


def job_type(value: str) -> JobType:
    return choice(JobType, value, "type")


def priority(value: str) -> Priority:
    return choice(Priority, value, "priority")


@lru_cache(maxsize=256)  # a batch names the same few models on every line
def model_name(value: str) -> str:
    if not _MODEL.fullmatch(value):
        raise UsageError(f"invalid model name {value!r}")
    return value


def parse_message(text: str) -> dict[str, str]:
    """`ROLE:CONTENT`, split at the first colon."""
    role, sep, content = text.partition(":")
    role = role.strip().lower()
    if not sep or role not in ROLES:
        raise UsageError(f"malformed --message {text!r} (expected ROLE:CONTENT, ROLE one of {', '.join(ROLES)})")
    return {"role": role, "content": content}


def parse_messages(raw: str, source: str) -> list[dict[str, Any]]:
    """A JSON array of {role, content} objects, as Ollama's chat takes them."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{source} is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise UsageError(f"{source} must hold a JSON array of messages")
    for i, msg in enumerate(data, start=1):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) \
                or not isinstance(msg.get("content", ""), str):
            raise UsageError(f"{source}: message {i} is not an object with a string role and content")
        if msg["role"].lower() not in ROLES:
            raise UsageError(f"{source}: message {i} has unknown role {msg['role']!r}")
    return data


def parse_option(text: str) -> tuple[str, Any]:
    """`KEY=VALUE`; VALUE is read as JSON where it parses, else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"malformed --option {text!r} (expected KEY=VALUE)")
    try:
        return key.strip(), json.loads(value, parse_constant=_not_json)
    except ValueError:
        return key.strip(), value


def _not_json(name: str) -> Any:
    """NaN and Infinity are Python's extension, not JSON: keep such values as strings."""
    raise ValueError(name)


def parse_format(value: str) -> Any:
    """`json`, or `@schema.json` for a JSON schema."""
    if value == "json":
        return "json"
    if value.startswith("@"):
        path = value[1:]
        try:
            with open(path, encoding="utf-8") as f:
                schema = json.load(f)
        except FileNotFoundError:
            raise UsageError(f"--format: no such file {path!r}") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"--format: cannot read a JSON schema from {path!r}: {exc}") from None
        if not isinstance(schema, dict):
            raise UsageError(f"--format: {path!r} must hold a JSON object (a JSON schema)")
        return schema
    raise UsageError(f"invalid --format {value!r} (use json or @schema.json)")


def build_request(
    kind: JobType,
    *,
    prompt: str | None = None,
    system: str | None = None,
    messages: list[dict[str, Any]] | None = None,
    inputs: list[str] | None = None,
    options: dict[str, Any] | None = None,
    format: Any = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The request payload stored with a job and sent to the backend (less model,
    stream and keep_alive, which the daemon adds)."""
    messages, inputs = messages or [], inputs or []
    if kind is JobType.GENERATE:
        if messages:
            raise UsageError("--message/--messages need --type chat")
        if inputs:
            raise UsageError("--input needs --type embed")
        if not prompt:
            raise UsageError("empty prompt: give PROMPT, or pipe it on stdin")
        req: dict[str, Any] = {"prompt": prompt}
        if system:
            req["system"] = system
    elif kind is JobType.CHAT:
        if inputs:
            raise UsageError("--input needs --type embed")
        chat = ([{"role": "system", "content": system}] if system else []) + list(messages)
        if prompt:
            chat.append({"role": "user", "content": prompt})
        if not any(m["role"] != "system" for m in chat):
            raise UsageError("a chat needs a message: give PROMPT, --message ROLE:CONTENT or --messages FILE")
        req = {"messages": chat}
    else:
        if messages:
            raise UsageError("--message/--messages need --type chat")
        if system:
            raise UsageError("--system does not apply to --type embed")
        texts = ([prompt] if prompt else []) + list(inputs)
        if not texts:
            raise UsageError("an embed needs input: give PROMPT or --input TEXT")
        req = {"input": texts}
    if options:
        req["options"] = options
    if format is not None:
        if kind is JobType.EMBED:
            raise UsageError("--format does not apply to --type embed")
        req["format"] = format
    if extra:
        req.update(extra)
    return req
