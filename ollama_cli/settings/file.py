"""The user's folders for ollama-q (data, config, cache), and the config file: TOML at
OLLAMA_Q_CONFIG, else config.toml in the user's config folder.

Importing platformdirs costs a command 15 M instructions, 6 % of the start-up floor of
`submit`. On Linux its answer is the XDG variable when it holds an absolute path, else a folder
under an absolute HOME: worked out here for that case, and asked of platformdirs in every other
(macOS, Windows, Android, no usable HOME). tests/test_settings.py checks the two agree.

Parsing TOML costs more than a command may spend starting (tomllib's import alone is 4.6 % of
`submit`'s floor), so a file is parsed once: its checked values are kept in the user's cache
folder with the file's identity (path, inode, size, mtime and ctime in nanoseconds) and the
schema they were checked against, and later runs read them back with marshal while that
identity holds. An edit changes the identity; a cache that cannot be read or written only
costs a parse."""

from __future__ import annotations

import marshal
import os
import sys
from pathlib import Path
from typing import Any

from ollama_cli import __version__
from ollama_cli.errors import UsageError
from ollama_cli.settings.schema import GROUPS, KEYS, plain

APP = "ollama-q"

# platformdirs' method, and on Linux its variable and the folder under HOME.
_KINDS = {
    "data": ("user_data_dir", "XDG_DATA_HOME", ".local/share"),
    "config": ("user_config_dir", "XDG_CONFIG_HOME", ".config"),
    "cache": ("user_cache_dir", "XDG_CACHE_HOME", ".cache"),
}


def user_dir(kind: str) -> str:
    """platformdirs.user_<kind>_dir("ollama-q")."""
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


# A key and its line in the file (None where it cannot be told), and its raw value.
Values = dict[str, tuple[Any, "int | None"]]

_FORMAT = 1
# What a cached parse was checked against: another version of the schema checks again.
_SCHEMA = f"{_FORMAT} {__version__} " + " ".join(k for k, key in KEYS.items() if key.in_file)


def config_path() -> Path:
    """Where the config file is (it need not exist)."""
    given = os.environ.get("OLLAMA_Q_CONFIG")
    if given:
        return Path(given).expanduser()
    return Path(user_dir("config"), "config.toml")


def read(path: Path) -> Values:
    """The settings the file at `path` gives, each checked (a missing file gives none). Not
    TOML, an unknown key or a value of the wrong type: UsageError naming the file, the line
    where it is known, and the key."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read the config file {path}: {exc.strerror}") from None
    # HOME too: a path in the file is kept with its ~ expanded.
    identity = (_SCHEMA, os.environ.get("HOME"), str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    cache = Path(user_dir("cache"), "config.marshal")
    try:
        with open(cache, "rb") as f:
            kept, values = marshal.load(f)
        if kept == identity:
            return values
    except (OSError, EOFError, ValueError, TypeError):
        pass
    values = _parse(path)
    _keep(cache, (identity, values))
    return values


def _parse(path: Path) -> Values:
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


def _keep(cache: Path, entry: tuple[Any, Values]) -> None:
    """Write the cache whole (a reader sees the old one or the new one), private to the user."""
    try:
        cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        part = cache.with_name(f"{cache.name}.{os.getpid()}")
        with open(part, "wb") as f:
            marshal.dump(entry, f)
        os.replace(part, cache)
    except (OSError, ValueError):  # a read-only home, a value marshal cannot write: parse next time
        pass
