"""Settings, read once per run into one typed object: each value from a flag, else the
environment, else the config file, else its default, and remembering which. The only reader
of os.environ (click, under Typer, reads its completion variables itself: see `completing`)."""

# No `from __future__ import annotations` here: NamedTuple would compile each string
# annotation into a ForwardRef, as many compiles as fields on every run.

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from ollama_cli.errors import UsageError
from ollama_cli.jobs import Priority
from ollama_cli.settings.hosts import DEFAULT_HOST, Backend, backends
from ollama_cli.settings.schema import KEYS, plain

Source = Literal["flag", "env", "file", "default"]


def _data_dir() -> Path:
    """The folder of the LMDB environment unless a flag, a variable or the file says: the
    platform's user data dir."""
    from ollama_cli.settings.file import user_dir

    return Path(user_dir("data"))


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
    metrics_addr: str | None = None  # HOST:PORT of the Prometheus /metrics endpoint; None: none
    on_finish: str | None = None  # a command `sh -c` runs once per finished job
    log_level: str = "info"  # debug, info, warning or error


class CacheSettings(NamedTuple):
    """The result cache: the config file's [cache] table."""

    ttl: float | None = None  # seconds an entry answers after it was made; None: no limit
    max_bytes: int | None = None  # the least recently hit entries go first above it; None: no bound
    semantic: bool = False  # also answer from a similar earlier request (submit --semantic-cache)
    embedding_model: str | None = None  # embeds the last user text for the semantic cache
    similarity: float = 0.95  # the least cosine similarity a semantic hit has


class RoutingSettings(NamedTuple):
    """`submit auto --category C`: the config file's [routing] table."""

    default_model: str | None = None  # when no model has enough rated jobs of the category
    min_samples: int = 5  # rated jobs of the category a model needs to be chosen
    explore: float = 0.0  # the share of jobs sent to another model than the best; 0: never


class Settings(NamedTuple):
    """Everything a command or the daemon reads from outside, built once by `load`."""

    data_dir: Path  # the LMDB store lives here unless `store` says otherwise
    store: str | Path | None = None  # a postgresql:// URL, or a folder for LMDB; None: data_dir
    hosts: tuple[str, ...] = (DEFAULT_HOST,)  # as given: `backends` parses them
    json: bool = False  # one JSON document on stdout; JSON lines for the daemon's log
    priority: Priority = Priority.MEDIUM  # submit's defaults
    retries: int = 3
    timeout: float | None = None  # seconds an attempt may take; None: no limit
    keep_alive: float | None = None  # seconds Ollama keeps the model loaded (-1: for ever); None: Ollama's
    daemon: DaemonSettings = DaemonSettings()
    cache: CacheSettings = CacheSettings()
    routing: RoutingSettings = RoutingSettings()
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


# The groups of settings, by the prefix of their names (`cache.ttl` is Settings.cache.ttl);
# a name without a prefix is a field of Settings, else of DaemonSettings.
_GROUPS = {"cache": CacheSettings, "routing": RoutingSettings}
# How the settings are named as arguments of `load_settings` and keys of `load`'s flags.
_ARGUMENTS = {name.replace(".", "_"): name for name in KEYS}


def load(flags: Mapping[str, Any], env: Mapping[str, str] | None = None,
         file_values: Mapping[str, Any] | None = None, command: str | None = None) -> Settings:
    """The settings of one run: for each, the flag if given, else its variable if set and not
    empty (`env`, os.environ unless given), else the file's key, else the default. A flag is
    given unless it is None, False (a switch left off) or empty (a repeatable option never
    used); flags are named as `load_settings`'s arguments (cache_ttl for cache.ttl).
    `file_values`: the file's keys; unless given, the config file is read, and only when the
    `command` (None: every one) uses a setting that no flag or variable gave. A bad value,
    or a name that is no setting, raises UsageError."""
    env = os.environ if env is None else env
    unknown = sorted(flags.keys() - _ARGUMENTS.keys())
    if unknown:
        raise UsageError(f"unknown setting {unknown[0]!r}")
    given = {_ARGUMENTS[arg]: value for arg, value in flags.items() if _given(value)}
    if file_values is None:
        file_values = _file_values(given, env, command)
    unknown = sorted(file_values.keys() - KEYS.keys())
    if unknown:
        raise UsageError(f"unknown setting {unknown[0]!r}")
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for name, key in KEYS.items():
        variable = key.variable
        if name in given:
            raw, where, sources[name] = given[name], key.flag or "--" + name.replace("_", "-"), "flag"
        elif variable and env.get(variable):
            raw, where, sources[name] = env[variable], variable, "env"
        elif name in file_values:
            raw, where, sources[name] = file_values[name], f"{name!r} in the config file", "file"
        else:
            sources[name] = "default"
            continue
        values[name] = key.parse(raw, where)
    groups = {prefix: group(**{n.partition(".")[2]: v for n, v in values.items() if n.startswith(prefix + ".")})
              for prefix, group in _GROUPS.items()}
    daemon = DaemonSettings(**{k: v for k, v in values.items() if k in DaemonSettings._fields})
    top = {k: v for k, v in values.items() if k in Settings._fields}
    if "data_dir" not in top:
        top["data_dir"] = _data_dir()
    return Settings(**top, daemon=daemon, **groups, sources=MappingProxyType(sources))


def _file_values(given: Mapping[str, Any], env: Mapping[str, str], command: str | None) -> dict[str, Any]:
    """The config file's values, if the command uses a setting no flag or variable gave."""
    if all(name in given or (key.variable and env.get(key.variable))
           for name, key in KEYS.items() if key.in_file and key.used_by(command)):
        return {}
    from ollama_cli.settings import file

    return {name: value for name, (value, _) in file.read(file.config_path()).items()}


def shown(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each key the config file may set, with its effective value as JSON has it (durations
    in seconds, a store URL without its password) and where that value came from."""
    groups = {"": settings, "daemon": settings.daemon, **{p: getattr(settings, p) for p in _GROUPS}}
    shown = {}
    for name, key in KEYS.items():
        if not key.in_file:
            continue
        prefix, _, field = name.rpartition(".")
        value = getattr(groups["daemon" if not prefix and field in DaemonSettings._fields else prefix], field)
        if name == "store" and value is not None:
            from ollama_cli.store import shown as without_password

            value = without_password(value)
        shown[name] = {"value": plain(value), "source": settings.source(name)}
    return shown


def _given(flag: Any) -> bool:
    return flag is not None and flag is not False and flag != [] and flag != ()
