"""Settings read once: the data dir, the backends, store limits. The only reader of os.environ."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from ollama_cli.errors import UsageError

DEFAULT_HOST = "http://127.0.0.1:11434"
OPENAI_PREFIX = "openai+"

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
        port = split.port or port
    except ValueError as exc:
        raise UsageError(f"invalid host {value!r}: {exc}") from None
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
