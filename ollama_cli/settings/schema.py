"""Every setting in one table: its name (that of its flag, its field and its key in the config
file; `cache.ttl` is the key `ttl` of the file's `[cache]` table), how a given value becomes the
typed one, its variable, whether the file may set it, and the commands that use it. The
defaults are those of the fields of `Settings` and its groups."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ollama_cli.errors import UsageError

Parse = Callable[[Any, str], Any]

# The commands that open a store: every one but `completion` and `config` (`*` in Key.commands).
EVERY = ("*",)
# The command that shows every setting, and so reads the file whatever gave the others.
SHOWS_ALL = "config"


class Key:
    """One setting. `flag` is how messages name its flag; `commands` those that read it."""

    __slots__ = ("parse", "commands", "variable", "flag", "in_file")

    def __init__(self, parse: Parse, commands: tuple[str, ...], *, variable: str | None = None,
                 flag: str | None = None, in_file: bool = True) -> None:
        self.parse, self.commands, self.variable, self.flag, self.in_file = parse, commands, variable, flag, in_file

    def used_by(self, command: str | None) -> bool:
        return command in (None, SHOWS_ALL) or command in self.commands or self.commands == EVERY


def _path(value: Any, where: str) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise UsageError(f"{where} must be a path")
    return Path(value).expanduser()


def _store(value: Any, where: str) -> str | Path:
    """A postgresql:// (or postgres://) URL as given, or a path (LMDB there)."""
    from ollama_cli.store import POSTGRES_SCHEMES

    if isinstance(value, str) and value.startswith(POSTGRES_SCHEMES):
        return value
    if isinstance(value, str) and "://" in value:  # never echoed: a URL may carry a password
        raise UsageError(f"{where} must be a folder or a postgresql:// URL, not a "
                         f"{value.split('://', 1)[0]}:// URL")
    return _path(value, where)


def _hosts(value: Any, where: str) -> tuple[str, ...]:
    hosts = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, (list, tuple)) else ()
    if not hosts or not all(isinstance(h, str) for h in hosts):
        raise UsageError(f"{where} must name one host or more")
    return hosts


def _switch(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{where} must be true or false")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where} must be a non-empty string")
    return value


def _number(least: float, most: float) -> Parse:
    def number(value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not least <= value <= most:
            raise UsageError(f"{where} must be a number from {least:g} to {most:g}")
        return float(value)

    return number


def _at_least(least: int, most: int | None = None) -> Parse:
    def count(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{where} must be a whole number")
        if value < least or (most is not None and value > most):
            raise UsageError(f"{where} must be at least {least}" + (f" and at most {most}" if most is not None else ""))
        return value

    return count


def _duration(value: Any, where: str) -> float:
    if isinstance(value, str):
        from ollama_cli.timefmt import parse_duration

        return parse_duration(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise UsageError(f"{where} must be a duration (examples: 500ms, 30s, 10m)")
    return float(value)  # a number in the file: seconds


def _positive_duration(value: Any, where: str) -> float:
    seconds = _duration(value, where)
    if seconds <= 0:  # nothing could ever finish, or stay
        raise UsageError(f"{where} must be more than 0")
    return seconds


def _keep_alive(value: Any, where: str) -> float:
    """Seconds; negative (`-1`, `"-1m"`) keeps the model loaded for ever, as in Ollama."""
    if isinstance(value, str):
        from ollama_cli.submission import keep_alive

        return keep_alive(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where} must be a duration (examples: 5m, 1h, -1 for ever)")
    return -1.0 if value < 0 else float(value)


def _priority(value: Any, where: str) -> Any:
    from ollama_cli.jobs import Priority
    from ollama_cli.submission import priority

    if isinstance(value, Priority):  # Typer parsed the flag
        return value
    if not isinstance(value, str):
        raise UsageError(f"{where} must be one of urgent, high, medium, low")
    return priority(value)


def _model_caps(value: Any, where: str) -> Mapping[str, int]:
    """NAME=N strings (the flags), or a table of names and counts (the file)."""
    from ollama_cli.submission import model_name

    if not isinstance(value, (Mapping, list, tuple)):
        raise UsageError(f"{where} must be NAME=N pairs")
    caps = {}
    for text in (f"{k}={v}" for k, v in value.items()) if isinstance(value, Mapping) else value:
        name, sep, n = str(text).rpartition("=")
        if not sep or not n.strip().isdigit() or int(n) < 1:
            raise UsageError(f"malformed {where} {text!r} (expected NAME=N, N at least 1)")
        caps[model_name(name.strip())] = int(n)
    return MappingProxyType(caps)


def _model(value: Any, where: str) -> str:
    from ollama_cli.submission import model_name

    return model_name(_text(value, where))


def _address(value: Any, where: str) -> str:
    """[HOST:]PORT (a bare port, in the file a number too; an IPv6 host in brackets) as
    HOST:PORT; loopback by default: metrics are not shown to the network unless asked."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else _text(value, where).strip()
    host, sep, port = text.rpartition(":")
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536) or (sep and not name) \
            or any(c in name for c in "[]/ ") or (":" in name and name == host):
        raise UsageError(f"{where} must be [HOST:]PORT, PORT from 1 to 65535 (examples: 9464, 0.0.0.0:9464, "
                         f"[::1]:9464), not {text!r}")
    return f"{host or '127.0.0.1'}:{int(port)}"


_LEVELS = ("debug", "info", "warning", "error")


def _level(value: Any, where: str) -> str:
    if not isinstance(value, str) or value.lower() not in _LEVELS:
        raise UsageError(f"{where} must be one of {', '.join(_LEVELS)}")
    return value.lower()


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _size(value: Any, where: str) -> int:
    """Bytes: a whole number, or a string such as 512MiB or 2GB."""
    if isinstance(value, str):
        digits = value.strip().rstrip("BbIiKkMmGgTt ")
        unit = value.strip()[len(digits):].strip().lower()
        if digits.isdigit() and unit in _UNITS:
            value = int(digits) * _UNITS[unit]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where} must be a size in bytes (examples: 1000000, 512MiB, 2GB)")
    return value


SUBMIT = ("submit",)
DAEMON = ("daemon",)

# Every setting. The daemon's are fields of DaemonSettings, `cache.*` of CacheSettings,
# `routing.*` of RoutingSettings, the others of Settings.
KEYS: dict[str, Key] = {
    "data_dir": Key(_path, EVERY, variable="OLLAMA_Q_DATA_DIR"),
    "store": Key(_store, EVERY, variable="OLLAMA_Q_STORE"),
    "hosts": Key(_hosts, ("daemon", "models"), variable="OLLAMA_HOST", flag="--host"),
    "json": Key(_switch, EVERY, in_file=False),
    "priority": Key(_priority, ("submit", "batch")),
    "retries": Key(_at_least(0, 100), SUBMIT),
    "timeout": Key(_positive_duration, SUBMIT),
    "keep_alive": Key(_keep_alive, SUBMIT),
    "concurrency": Key(_at_least(1), DAEMON),
    "model_concurrency": Key(_model_caps, DAEMON),
    "keep_finished": Key(_duration, DAEMON),
    "grace": Key(_duration, DAEMON),
    "retry_backoff": Key(_duration, DAEMON),
    "max_overtake": Key(_at_least(0), DAEMON),
    "metrics_addr": Key(_address, DAEMON),
    "on_finish": Key(_text, DAEMON),
    "hook_timeout": Key(_positive_duration, DAEMON),
    "log_level": Key(_level, DAEMON, variable="OLLAMA_Q_LOG"),
    "drain": Key(_switch, DAEMON, in_file=False),  # a way of running, not a default
    "coalesce": Key(_at_least(1), DAEMON, in_file=False),  # the tests' knobs
    "poll": Key(_duration, DAEMON, in_file=False),
    "seed": Key(_at_least(0), DAEMON, in_file=False),
    "cache.ttl": Key(_positive_duration, ("submit", "daemon", "cache")),
    "cache.max_bytes": Key(_size, ("daemon", "cache")),
    "cache.semantic": Key(_switch, ("submit",), flag="--semantic-cache"),
    "cache.embedding_model": Key(_model, ("daemon",)),
    "cache.similarity": Key(_number(0.0, 1.0), ("daemon",)),
    "routing.default_model": Key(_model, SUBMIT),
    "routing.min_samples": Key(_at_least(1), SUBMIT),
    "routing.explore": Key(_number(0.0, 1.0), SUBMIT),
}

# The tables of the file whose keys are settings (`[cache]`: `cache.ttl`, ...).
GROUPS = ("cache", "routing")


def plain(value: Any) -> Any:
    """A typed value as JSON and marshal hold it, and as its key's parser takes it back:
    durations in seconds, a priority by its name, a path as text."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    return list(value) if isinstance(value, tuple) else value
