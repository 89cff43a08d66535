"""Settings, read once per run into one typed object: each value from a flag, else the
environment, else the config file, else its default, and remembering which. The only reader
of os.environ (click, under Typer, reads its completion variables itself: see `completing`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from ollama_cli.errors import UsageError
from ollama_cli.settings.hosts import DEFAULT_HOST, Backend, backends

Source = Literal["flag", "env", "file", "default"]


def _data_dir(value: str | Path | None = None) -> Path:
    """The folder of the LMDB environment: `value` (from --data-dir, OLLAMA_Q_DATA_DIR or
    the file), else the platform's user data dir."""
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("ollama-q"))


def completing() -> bool:
    """Whether a shell asks for completions. Click reads this variable (and COMP_WORDS,
    COMP_CWORD) again itself, outside our reach; the CLI asks only to register every command."""
    return bool(os.environ.get("_OLLAMA_Q_COMPLETE"))


class DaemonSettings(NamedTuple):
    """How `ollama-q daemon` runs. The names are those of its flags and of the config file's keys."""

    concurrency: int = 1  # requests at once per backend
    drain: bool = False  # exit once nothing is pending or running
    grace: float = 30.0  # seconds running jobs may go on after SIGTERM or SIGINT
    retry_backoff: float = 1.0  # seconds before the first retry; doubles per attempt
    keep_finished: float | None = None  # delete finished jobs this many seconds after they finish
    model_concurrency: Mapping[str, int] = MappingProxyType({})  # model -> requests at once, at most
    max_overtake: int = 50  # times later jobs of a loaded model may pass the oldest waiting job
    coalesce: int = 16  # embed jobs in one request, at most
    poll: float = 0.2  # seconds between ticks when nothing wakes the loop
    seed: int | None = None  # of the retry jitter, for runs that must repeat
    metrics_addr: tuple[str, int] | None = None  # (host, port) of Prometheus' /metrics; None: not served


class Settings(NamedTuple):
    """Everything a command or the daemon reads from outside, built once by `load`."""

    data_dir: Path  # the LMDB store lives here unless `store` says otherwise
    store: str | Path | None = None  # a postgresql:// URL, or a folder for LMDB; None: data_dir
    hosts: tuple[str, ...] = (DEFAULT_HOST,)  # as given: `backends` parses them
    json: bool = False  # one JSON document on stdout; JSON lines for the daemon's log
    daemon: DaemonSettings = DaemonSettings()
    sources: Mapping[str, Source] = MappingProxyType({})

    @property
    def location(self) -> str | Path:
        """Where the store is: the `store` setting, else LMDB in the data dir."""
        return self.data_dir if self.store is None else self.store

    def source(self, name: str) -> Source:
        """Where the value of setting `name` came from."""
        return self.sources.get(name, "default")

    @property
    def backends(self) -> list[Backend]:
        """The hosts, parsed when asked: a command that talks to no backend never rejects
        OLLAMA_HOST."""
        return backends(self.hosts)


def _path(value: Any, where: str) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise UsageError(f"{where} must be a path")
    return _data_dir(value)


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


def _at_least(least: int) -> Callable[[Any, str], int]:
    def count(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{where} must be a whole number")
        if value < least:
            raise UsageError(f"{where} must be at least {least}")
        return value

    return count


def _duration(value: Any, where: str) -> float:
    if isinstance(value, str):
        from ollama_cli.timefmt import parse_duration

        return parse_duration(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise UsageError(f"{where} must be a duration (examples: 500ms, 30s, 10m)")
    return float(value)  # a number in the file: seconds


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


def _listen_address(value: Any, where: str) -> tuple[str, int]:
    """[HOST:]PORT (an IPv6 host in brackets), on 127.0.0.1 unless a host is given: metrics
    are not shown to the network unless asked."""
    text = value.strip() if isinstance(value, str) else ""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536 or (sep and not host) \
            or any(c in host for c in "[]/ ") or (":" in host and not text.startswith("[")):
        raise UsageError(f"{where} must be [HOST:]PORT, PORT from 1 to 65535 (examples: 9464, 0.0.0.0:9464), "
                         f"not {text!r}")
    return host or "127.0.0.1", int(port)


# Every setting, by the name it has as a field, a flag and a key of the file: how a given
# value becomes the typed one. Settings not named in _VARIABLES have no variable.
_PARSE: dict[str, Callable[[Any, str], Any]] = {
    "data_dir": _path, "store": _store, "hosts": _hosts, "json": _switch,
    "concurrency": _at_least(1), "drain": _switch, "grace": _duration, "retry_backoff": _duration,
    "keep_finished": _duration, "model_concurrency": _model_caps, "max_overtake": _at_least(0),
    "coalesce": _at_least(1), "poll": _duration, "seed": _at_least(0), "metrics_addr": _listen_address,
}
_VARIABLES = {"data_dir": "OLLAMA_Q_DATA_DIR", "store": "OLLAMA_Q_STORE", "hosts": "OLLAMA_HOST"}
_FLAGS = {"hosts": "--host"}  # the others are --name-with-dashes


def load(flags: Mapping[str, Any], env: Mapping[str, str] | None = None,
         file_values: Mapping[str, Any] | None = None) -> Settings:
    """The settings of one run: for each, the flag if given, else its variable if set and not
    empty (`env`, os.environ unless given), else the file's key (`file_values`, none until
    the config file exists), else the default. A flag is given unless it is None, False (a
    switch left off) or empty (a repeatable option never used). A bad value, or a name
    that is no setting, raises UsageError."""
    env = os.environ if env is None else env
    file_values = file_values or {}
    unknown = sorted((flags.keys() | file_values.keys()) - _PARSE.keys())
    if unknown:
        raise UsageError(f"unknown setting {unknown[0]!r}")
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for name, parse in _PARSE.items():
        variable = _VARIABLES.get(name)
        if _given(flags.get(name)):
            raw, where, sources[name] = flags[name], _FLAGS.get(name, "--" + name.replace("_", "-")), "flag"
        elif variable and env.get(variable):
            raw, where, sources[name] = env[variable], variable, "env"
        elif name in file_values:
            raw, where, sources[name] = file_values[name], f"{name!r} in the config file", "file"
        else:
            sources[name] = "default"
            continue
        values[name] = parse(raw, where)
    daemon = DaemonSettings(**{k: v for k, v in values.items() if k in DaemonSettings._fields})
    top = {k: v for k, v in values.items() if k in Settings._fields}
    if "data_dir" not in top:
        top["data_dir"] = _data_dir()
    return Settings(**top, daemon=daemon, sources=MappingProxyType(sources))


def _given(flag: Any) -> bool:
    return flag is not None and flag is not False and flag != [] and flag != ()
