"""The config file parsed and checked, when its kept parse (`settings.read_file`) is missing or
stale: TOML in, each key's value as its parser gives it back, and the line it is on; and the
kept parse written for the next runs."""

from __future__ import annotations

import marshal
import os
from pathlib import Path
from typing import Any

from ollama_cli.errors import UsageError
from ollama_cli.settings.schema import GROUPS, KEYS, plain

# A key and its line in the file (None where it cannot be told), and its value.
Values = dict[str, tuple[Any, "int | None"]]


def parse(path: Path) -> Values:
    """Each key's checked value and its line. Not TOML, an unknown key or a value of the wrong
    type: UsageError naming the file, the line where it is known, and the key."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the config file {path}: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise UsageError(f"the config file {path} is not TOML: {exc}") from None
    values: Values = {}
    for name, value in _flatten(document):
        line = _line_of(text, name)
        where = f"{name!r} in {path}" + (f" (line {line})" if line else "")
        key = KEYS.get(name)
        if name in GROUPS:
            raise UsageError(f"{where} must be a table of settings ([{name}])")
        if key is None or not key.in_file:
            raise UsageError(f"unknown key {name!r} in {path}" + (f" (line {line})" if line else ""))
        try:
            parsed = key.parse(value, where)
        except UsageError as exc:  # the parsers shared with the flags may not say where
            raise exc if where in exc.message else UsageError(f"{where}: {exc.message}") from None
        values[name] = (plain(parsed), line)  # parsed again from here at no cost: "10m" is 600.0
    return values


def _flatten(document: dict[str, Any]) -> list[tuple[str, Any]]:
    """(key, value) for each setting: the keys of [cache] and [routing] as cache.KEY and
    routing.KEY; any other table (model_concurrency's) is one value."""
    pairs = []
    for name, value in document.items():
        if name in GROUPS and isinstance(value, dict):
            pairs += [(f"{name}.{sub}", v) for sub, v in value.items()]
        else:
            pairs.append((name, value))
    return pairs


def _line_of(text: str, name: str) -> int | None:
    """The line that sets `name` (cache.ttl: `ttl` under [cache], or `cache.ttl` above any
    table), or that opens its table; None if neither is found."""
    import re

    assignment = re.compile(r"\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")
    opening = re.compile(r"\s*\[\s*([A-Za-z0-9_\-.\"' ]+?)\s*\]")
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        found = opening.match(line)
        if found:
            table = _bare(found.group(1))
            if table == name:
                return number
            continue
        found = assignment.match(line)
        if found and ".".join(filter(None, (table, _bare(found.group(1))))) == name:
            return number
    return None


def _bare(key: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in key.split("."))


def keep(cache: Path, entry: tuple[Any, Values]) -> None:
    """Write the cache whole (a reader sees the old one or the new one), private to the user."""
    try:
        cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        part = cache.with_name(f"{cache.name}.{os.getpid()}")
        with open(part, "wb") as f:
            marshal.dump(entry, f)
        os.replace(part, cache)
    except (OSError, ValueError):  # a read-only home, a value marshal cannot write: parse next time
        pass
