"""Settings read once: the data dir, the backends, store limits. The only reader of os.environ."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from ollama_cli.errors import UsageError

DEFAULT_HOST = "http://127.0.0.1:11434"
OPENAI_PREFIX = "openai+"

# Every process opens the environment with these same values: max_dbs is per handle and
# max_readers is fixed by whichever process creates the lock file first.
MAX_DBS = 16
MAX_READERS = 1024
# Virtual address space only: data.mdb grows with the pages in use, and the store doubles
# the map when it fills.
MAP_SIZE = 1 << 30


def data_dir(flag: str | Path | None = None) -> Path:
    """The folder of the LMDB environment: --data-dir, else OLLAMA_Q_DATA_DIR, else the
    platform's user data dir."""
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get("OLLAMA_Q_DATA_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("ollama-q"))


class Backend(NamedTuple):
    """One server the daemon sends work to. `kind` is "ollama" (native API) or "openai"."""

    url: str
    kind: str = "ollama"

    @property
    def label(self) -> str:
        return OPENAI_PREFIX + self.url if self.kind == "openai" else self.url


def parse_host(value: str | None) -> str:
    """Parse a host the way ollama-python's client does, so one OLLAMA_HOST serves both:
    a bare host gets port 11434, an explicit http:// gets 80, https:// 443; a path is kept."""
    import ipaddress
    import urllib.parse

    host, port = (value or "").strip(), 11434
    # Checked first, so that no message below echoes a password.
    if "@" in host.rpartition("://")[2].partition("/")[0]:
        raise UsageError("a host URL cannot carry credentials (user:password@): "
                         "ollama-q would not send them")
    scheme, _, hostport = host.partition("://")
    if not hostport:
        scheme, hostport = "http", host
    elif scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    else:
        raise UsageError(f"unsupported scheme {scheme!r} in host {value!r} (use http or https)")
    try:
        split = urllib.parse.urlsplit(f"{scheme}://{hostport}")
        hostname = split.hostname or "127.0.0.1"
        port = port if split.port is None else split.port
    except ValueError as exc:
        raise UsageError(f"invalid host {value!r}: {exc}") from None
    if port == 0:
        raise UsageError(f"invalid host {value!r}: port 0 (use a port from 1 to 65535)")
    try:
        if isinstance(ipaddress.ip_address(hostname), ipaddress.IPv6Address):
            hostname = f"[{hostname}]"
    except ValueError:
        pass
    path = split.path.strip("/")
    return f"{scheme}://{hostname}:{port}/{path}" if path else f"{scheme}://{hostname}:{port}"


def parse_backend(value: str) -> Backend:
    if value.startswith(OPENAI_PREFIX):
        return Backend(parse_host(value[len(OPENAI_PREFIX):]), "openai")
    return Backend(parse_host(value), "ollama")


def backends(flags: list[str] | None = None) -> list[Backend]:
    """The backends: every --host given, else OLLAMA_HOST, else the local default."""
    if flags:
        found = [parse_backend(f) for f in flags]
        return list(dict.fromkeys(found))  # keep order, drop repeats
    return [parse_backend(os.environ.get("OLLAMA_HOST") or DEFAULT_HOST)]
