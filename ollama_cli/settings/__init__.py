"""Settings, read once per run into one typed object: each value from a flag, else the
environment, else the config file, else its default, and remembering which; where the user's
folders and the config file are, and the file's kept parse. The only reader of os.environ (click, under Typer, reads its completion variables itself: see `completing`)."""

import marshal
import os
import sys
from collections import namedtuple
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from ollama_cli import __version__
from ollama_cli.errors import UsageError
from ollama_cli.jobs import Priority
from ollama_cli.settings.schema import KEYS, plain

if TYPE_CHECKING:
    from ollama_cli.settings.hosts import Backend

Source = Literal["flag", "env", "file", "default"]
# Ollama's own. hosts.py (and its Backend NamedTuple, 1M instructions to define) loads only
# for the commands that talk to backends.
DEFAULT_HOST = "http://127.0.0.1:11434"

APP = "ollama-q"

# platformdirs' method, and on Linux its variable and the folder under HOME.
_KINDS = {
    "data": ("user_data_dir", "XDG_DATA_HOME", ".local/share"),
    "config": ("user_config_dir", "XDG_CONFIG_HOME", ".config"),
    "cache": ("user_cache_dir", "XDG_CACHE_HOME", ".cache"),
}


def user_dir(kind: str) -> str:
    """platformdirs.user_<kind>_dir("ollama-q"). Importing platformdirs costs a command 15 M
    instructions, 6 % of the start-up floor of `submit`. On Linux its answer is the XDG
    variable when it holds an absolute path, else a folder under an absolute HOME: worked out
    here for that case, and asked of platformdirs in every other (macOS, Windows, Android, no
    usable HOME). tests/test_settings.py checks the two agree."""
    env = os.environ
    method, variable, under_home = _KINDS[kind]
    if sys.platform == "linux" and not hasattr(sys, "getandroidapilevel") and env.get("ANDROID_DATA") != "/data":
        base = env.get(variable, "")
        if base.startswith("/"):
            return os.path.join(base, APP)
        home = env.get("HOME", "")
        if home.startswith("/"):
            return os.path.join(home.rstrip("/") or "/", under_home, APP)
    import platformdirs

    return str(getattr(platformdirs.PlatformDirs(APP), method))


_FORMAT = 1
# What a cached parse was checked against: another version of the schema checks again.
_SCHEMA = f"{_FORMAT} {__version__} " + " ".join(k for k, key in KEYS.items() if key.in_file)


def config_path() -> Path:
    """Where the config file is (it need not exist)."""
    given = os.environ.get("OLLAMA_Q_CONFIG")
    if given:
        return Path(given).expanduser()
    return Path(user_dir("config"), "config.toml")


def read_file(path: Path) -> dict[str, tuple[Any, int | None]]:
    """The settings the file at `path` gives, each checked, by key, with its line (a missing
    file gives none). Not TOML, an unknown key or a value of the wrong type: UsageError naming
    the file, the line where it is known, and the key.

    Parsing TOML costs more than a command may spend starting (tomllib's import alone is 4.6 %
    of `submit`'s floor), so a file is parsed once (`file.py`): its checked values are kept in
    the user's cache folder with the file's identity (path, inode, size, mtime and ctime in
    nanoseconds) and the schema they were checked against, and read back here with marshal
    while that identity holds. An edit changes the identity; a kept parse that cannot be read
    or written only costs a parse."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read the config file {path}: {exc.strerror}") from None
    # HOME too: a path in the file is kept with its ~ expanded.
    identity = (_SCHEMA, os.environ.get("HOME"), str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                st.st_ctime_ns)
    cache = Path(user_dir("cache"), "config.marshal")
    try:
        with open(cache, "rb") as f:
            kept, values = marshal.load(f)
        if kept == identity:
            return values
    except (OSError, EOFError, ValueError, TypeError):
        pass
    from ollama_cli.settings import file

    values = file.parse(path)
    file.keep(cache, (identity, values))
    return values


def _data_dir() -> Path:
    """The folder of the LMDB environment unless a flag, a variable or the file says: the
    platform's user data dir."""
    return Path(user_dir("data"))


def completing() -> bool:
    """Whether a shell asks for completions. Click reads this variable (and COMP_WORDS,
    COMP_CWORD) again itself, outside our reach; the CLI asks only to register every command."""
    return bool(os.environ.get("_OLLAMA_Q_COMPLETE"))


# The groups of settings and Settings are collections.namedtuple, not typing.NamedTuple, which
# checks each field's type as it defines the class: about twice the cost, paid by every
# command; the types are in comments.

# How `ollama-q daemon` runs. The names are those of its flags and of the config file's keys.
DaemonSettings = namedtuple("DaemonSettings", ("concurrency", "drain", "grace", "retry_backoff", "keep_finished",
                                               "model_concurrency", "max_overtake", "coalesce", "poll", "seed",
                                               "metrics_addr", "on_finish", "hook_timeout", "log_level"), defaults=(
    1,  # concurrency: int, requests at once per backend
    False,  # drain: bool, exit once nothing is pending or running
    30.0,  # grace: float, seconds running jobs may go on after SIGTERM or SIGINT
    1.0,  # retry_backoff: float, seconds before the first retry; doubles per attempt
    None,  # keep_finished: float | None, delete finished jobs this many seconds after they finish
    MappingProxyType({}),  # model_concurrency: Mapping[str, int], model -> requests at once, at most
    50,  # max_overtake: int, times later jobs of a loaded model may pass the oldest waiting job
    16,  # coalesce: int, embed jobs in one request, at most
    0.2,  # poll: float, seconds between ticks when nothing wakes the loop
    None,  # seed: int | None, of the retry jitter, for runs that must repeat
    None,  # metrics_addr: str | None, HOST:PORT of the Prometheus /metrics endpoint; None: none
    None,  # on_finish: str | None, a command `sh -c` runs once per finished job
    60.0,  # hook_timeout: float, seconds a hook may run before it is killed
    "info",  # log_level: str, debug, info, warning or error
))

# The result cache: the config file's [cache] table.
CacheSettings = namedtuple("CacheSettings", ("ttl", "max_bytes", "semantic", "embedding_model", "similarity"),
                           defaults=(
    None,  # ttl: float | None, seconds an entry answers after it was made; None: no limit
    None,  # max_bytes: int | None, the least recently hit entries go first above it; None: no bound
    False,  # semantic: bool, also answer from a similar earlier request (submit --semantic-cache)
    "nomic-embed-text",  # embedding_model: str, embeds the last user text, on the job's backend
    0.95,  # similarity: float, the least cosine similarity a semantic hit has
))

# `submit auto --category C`: the config file's [routing] table.
RoutingSettings = namedtuple("RoutingSettings", ("default_model", "min_samples", "explore"), defaults=(
    None,  # default_model: str | None, when no model has enough rated jobs of the category
    5,  # min_samples: int, rated jobs of the category a model needs to be chosen
    0.0,  # explore: float, the share of jobs sent to another model than the best; 0: never
))


class Settings(namedtuple("Settings", ("data_dir", "store", "hosts", "json", "priority", "retries", "timeout",
                                       "keep_alive", "daemon", "cache", "routing", "sources"), defaults=(
    None,  # store: str | Path | None, a postgresql:// URL, or a folder for LMDB; None: data_dir
    (DEFAULT_HOST,),  # hosts: tuple[str, ...], as given: `backends` parses them
    False,  # json: bool, one JSON document on stdout; JSON lines for the daemon's log
    Priority.MEDIUM,  # priority: Priority, submit's defaults
    3,  # retries: int
    None,  # timeout: float | None, seconds an attempt may take; None: no limit
    None,  # keep_alive: float | None, seconds Ollama keeps the model loaded (-1: for ever); None: Ollama's
    DaemonSettings(),  # daemon: DaemonSettings
    CacheSettings(),  # cache: CacheSettings
    RoutingSettings(),  # routing: RoutingSettings
    MappingProxyType({}),  # sources: Mapping[str, Source]
))):
    """Everything a command or the daemon reads from outside, built once by `load`. `data_dir`
    (Path): the LMDB store lives here unless `store` says otherwise."""

    __slots__ = ()

    @property
    def location(self) -> str | Path:
        """Where the store is: the `store` setting, else LMDB in the data dir."""
        return self.data_dir if self.store is None else self.store

    def source(self, name: str) -> Source:
        """Where the value of setting `name` came from."""
        return self.sources.get(name, "default")

    @property
    def backends(self) -> "list[Backend]":
        """The hosts, parsed when asked: a command that talks to no backend never rejects
        OLLAMA_HOST."""
        from ollama_cli.settings.hosts import backends

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
    return {name: value for name, (value, _) in read_file(config_path()).items()}


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


def one_blas_thread() -> None:
    """Ask numpy's BLAS for one thread, unless the environment says otherwise; BLAS reads these
    when numpy is first imported. The semantic cache's lookup is one pass over memory, which a
    second thread barely speeds up, and on a machine whose cores a model server is using each
    product waits for that thread to be scheduled (measured: 12x numpy's own product at
    100,000 vectors, against 1.3x on one thread)."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")


def _given(flag: Any) -> bool:
    return flag is not None and flag is not False and flag != [] and flag != ()


# What the daemon learns of the service manager that runs it (systemd), and what a hook
# inherits. Functions, not a class: this module is on every command's path.


def journal() -> bool:
    """JOURNAL_STREAM is set: stderr goes to journald, which stamps the time itself."""
    return bool(os.environ.get("JOURNAL_STREAM"))


def notify_socket() -> str | None:
    """NOTIFY_SOCKET: where READY=1 and STOPPING=1 go."""
    return os.environ.get("NOTIFY_SOCKET") or None


def service_variables() -> dict[str, str]:
    """The settings' variables that are set, and the config file's, for a systemd unit's
    Environment=."""
    names = [key.variable for key in KEYS.values() if key.variable] + ["OLLAMA_Q_CONFIG"]
    return {name: os.environ[name] for name in names if os.environ.get(name)}


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with `extra` over it: for a hook's command."""
    return {**os.environ, **extra}
