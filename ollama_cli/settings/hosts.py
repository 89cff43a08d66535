"""Backends as the user writes them (--host, OLLAMA_HOST, the config file) and as the
daemon and the clients use them."""

# No `from __future__ import annotations` here: NamedTuple would compile each string
# annotation into a ForwardRef, as many compiles as fields on every run.

from collections.abc import Iterable
from typing import NamedTuple

from ollama_cli.errors import UsageError

OPENAI_PREFIX = "openai+"


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


def backends(hosts: Iterable[str]) -> list[Backend]:
    """Each host parsed, in order."""
    found = [parse_backend(h) for h in hosts]
    return list(dict.fromkeys(found))  # keep order, drop repeats
