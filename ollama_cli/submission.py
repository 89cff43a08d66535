"""The contract's input rules: from what a user typed (or a batch line holds) to a
validated request payload. Every violation is a UsageError, raised before anything
is written."""

from __future__ import annotations

import math
import re
from enum import Enum
from functools import lru_cache
from typing import Any, TypeVar

from ollama_cli.errors import UsageError
from ollama_cli.jobs import JobType, Priority, full_name
from ollama_cli.timefmt import parse_duration

ROLES = ("system", "user", "assistant", "tool")
# Ollama's name rule (types/model/name.go): [host/][namespace/]model[:tag]; a host may
# carry a port, a namespace has no dot.
_HOST = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"
_NAMESPACE = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"
# Compiled (and cached by `re`) when first used: `status` and others never check a name.
_MODEL = rf"(?:(?:{_HOST}/)?{_NAMESPACE}/)?{_PART}(?::{_PART})?"

# The deepest nesting a request may hold: far more than any JSON schema needs, far less
# than what json, msgpack (511) and the recursion limit can take.
MAX_DEPTH = 100
# Ollama reads integers as Go's int64.
_INT_RANGE = range(-(2**63), 2**63)

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


# `submit auto --category C`: the model is chosen by the routing rule (`insight/routing.py`);
# not a model a job can be queued for as it is.
AUTO = "auto"


@lru_cache(maxsize=256)  # a batch names the same few models on every line
def model_name(value: str) -> str:
    if not re.fullmatch(_MODEL, value):
        raise UsageError(f"invalid model name {value!r}")
    return value


def category_name(value: str, what: str = "--category") -> str:
    """A task category: ASCII letters, digits, `-`, `_` and `.`, 1 to 64 of them (a key of
    the statistics, shown in tables). The pattern is compiled only when a category is given."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
        raise UsageError(f"{what}: invalid category {value[:80]!r} (letters, digits, -, _ and ., at most 64)")
    return value


MAX_FALLBACKS = 16


def fallbacks(model: str, values: list[str]) -> tuple[str, ...]:
    """The models a job starts again on, in order (`--fallback`, repeatable): each a valid
    name, none twice and none the job's own model (that is what --retries is for)."""
    seen, out = {full_name(model)}, []
    for value in values:
        name = full_name(model_name(value))
        if name in seen:
            why = "the job's own model" if name == full_name(model) else "given twice"
            raise UsageError(f"--fallback {value!r}: {why}")
        seen.add(name)
        out.append(value)
    if len(out) > MAX_FALLBACKS:
        raise UsageError(f"at most {MAX_FALLBACKS} --fallback models, not {len(out)}")
    return tuple(out)


def check_text(value: str, what: str) -> str:
    """`value`, if UTF-8 can carry it. Python hands over argv bytes that are not UTF-8 as
    lone surrogates (PEP 383), and json.loads makes them of "\\ud800" escapes: neither can
    be stored or sent. The error names the bad character, never the text around it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        bad = f"the byte 0x{code - 0xDC00:02x}, or the escape \\u{code:04x}," if 0xDC80 <= code <= 0xDCFF \
            else f"the lone surrogate \\u{code:04x}"
        raise UsageError(f"{what} is not UTF-8 text ({bad} at character {exc.start + 1})") from None
    return value


def check_sendable(value: Any, what: str) -> None:
    """Refuse what the daemon could store but never send as JSON: numbers that are not
    finite (1e999 reads as inf) or beyond int64, text that is not UTF-8, nesting deeper
    than MAX_DEPTH. Walked without recursion, so depth itself cannot break the walk."""
    todo = [(value, what, 0)]  # the value, its path in messages, its depth
    while todo:
        item, path, depth = todo.pop()
        if isinstance(item, str):
            check_text(item, path)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise UsageError(f"{path}: {item} is not a finite number")
        elif isinstance(item, int):
            if item not in _INT_RANGE:
                raise UsageError(f"{path}: {item} is beyond a 64-bit integer")
        elif isinstance(item, (dict, list)):
            if depth == MAX_DEPTH:
                raise UsageError(f"{what}: nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for key, sub in item.items():
                    todo.append((sub, f"{path}.{check_text(key, f'a key in {path}')}", depth + 1))
            else:
                todo.extend((sub, f"{path}[{i}]", depth + 1) for i, sub in enumerate(item))


def keep_alive(value: str) -> float:
    """Seconds Ollama keeps the model loaded; a negative duration (`-1`, `-1m`) means for
    ever, as in Ollama."""
    raw = value.strip()
    if not raw.startswith("-"):
        return parse_duration(raw)
    try:
        parse_duration(raw[1:])  # a duration all the same, though only its sign matters
    except UsageError:
        raise UsageError(f"invalid keep-alive {value!r} (a duration such as 5m, or -1 to keep the model "
                         "loaded)") from None
    return -1.0


def parse_message(text: str) -> dict[str, str]:
    """`ROLE:CONTENT`, split at the first colon."""
    role, sep, content = text.partition(":")
    role = role.strip().lower()
    if not sep or role not in ROLES:
        raise UsageError(f"malformed --message {text!r} (expected ROLE:CONTENT, ROLE one of {', '.join(ROLES)})")
    return {"role": role, "content": content}


def parse_messages(raw: str, source: str) -> list[dict[str, Any]]:
    """A JSON array of {role, content} objects, as Ollama's chat takes them."""
    data = load_json(raw, source)
    if not isinstance(data, list):
        raise UsageError(f"{source} must hold a JSON array of messages")
    for i, msg in enumerate(data, start=1):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) \
                or not isinstance(msg.get("content", ""), str):
            raise UsageError(f"{source}: message {i} is not an object with a string role and content")
        if msg["role"].lower() not in ROLES:
            raise UsageError(f"{source}: message {i} has unknown role {msg['role']!r}")
    return data


def load_json(raw: str, source: str) -> Any:
    """JSON as the standard defines it: NaN and Infinity, Python's extension, are refused,
    and so is nesting too deep to decode."""
    import json

    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise UsageError(f"{source} is not JSON: {exc}") from None
    except RecursionError:
        raise UsageError(f"{source} is not JSON that can be read: nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_option(text: str) -> tuple[str, Any]:
    """`KEY=VALUE`; VALUE is read as JSON where it parses, else kept as a string (so
    `NaN`, which is not JSON, stays the string "NaN")."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"malformed --option {text!r} (expected KEY=VALUE)")
    import json

    try:
        return key.strip(), json.loads(value, parse_constant=_refuse_constant)
    except ValueError:
        return key.strip(), value
    except RecursionError:
        raise UsageError(f"--option {key.strip()!r}: JSON nested too deeply") from None


def parse_format(value: str) -> Any:
    """`json`, or `@schema.json` for a JSON schema."""
    if value == "json":
        return "json"
    if value.startswith("@"):
        path = value[1:]
        try:
            with open(path, encoding="utf-8") as f:
                raw = f.read()
        except FileNotFoundError:
            raise UsageError(f"--format: no such file {path!r}") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"--format: cannot read a JSON schema from {path!r}: {exc}") from None
        schema = load_json(raw, f"--format {path!r}")
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
    for key, value in req.items():
        check_sendable(value, key)
    return req
