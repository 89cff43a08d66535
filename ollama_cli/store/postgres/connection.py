"""Connections to the server: the driver (an optional extra, imported here and nowhere
else), URLs shown without their password, and the settings every connection gets."""

from __future__ import annotations

import os
import socket
from typing import Any

from ollama_cli.errors import StoreUnavailable, UsageError

SCHEMA = "ollama_q"  # every table of ours lives in this schema of the database

# A peer that vanished without closing its connection (a host powered off, a cable cut)
# is noticed after IDLE + INTERVAL * COUNT = 25 seconds of silence, at both ends: libpq's
# keepalives for a server that vanished, and the server's own, which a session sets for
# itself, for a client host that vanished: the server then ends its session, and a
# daemon's session advisory lock (its liveness) goes with it. TCP_USER_TIMEOUT bounds
# the same wait while data is unacknowledged, where keepalives do not apply; Linux also
# lets it override the keepalive count, so it is the same 25 s (it was 30 s, and the
# netns test measured 30 s: docs/several-hosts.md).
KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
TCP_USER_TIMEOUT_MS = (KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT) * 1000
CONNECT_TIMEOUT = 10

INSTALL_HINT = "a postgresql:// store needs the PostgreSQL driver: pip install 'ollama-q[postgres]'"


def driver() -> Any:
    """psycopg2, or a usage error saying what to install."""
    try:
        import psycopg2
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return psycopg2


def redact(url: str) -> str:
    """The URL without its password (in the user part or as a `password` parameter): the
    only form of a URL that `info`, logs and errors show."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            users, _, hosts = netloc.rpartition("@")
            netloc = users.partition(":")[0] + "@" + hosts
        query = "&".join(p for p in parts.query.split("&") if p and p.split("=", 1)[0] != "password")
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return url.split("://", 1)[0] + "://..."


def _password(url: str) -> str | None:
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password or urllib.parse.parse_qs(parts.query).get("password", [None])[0]
    except ValueError:
        return None
    return urllib.parse.unquote(password) if password else None


def scrub(message: str, url: str) -> str:
    """An error message of the driver's as one line, with the URL's password removed
    (a driver may echo what it was given)."""
    line = message.strip().splitlines()[0] if message.strip() else "unknown error"
    password = _password(url)
    return line.replace(password, "***") if password else line


def client() -> str:
    """This process, as the server's list of sessions shows it: `<host>-<pid>`."""
    return f"{socket.gethostname()}-{os.getpid()}"


def connect(url: str, *, role: str = "") -> Any:
    """A new connection (not in autocommit) with keepalives and our schema on the
    search path; an error names the server without the password. The server shows it
    (pg_stat_activity) as `ollama-q [role] <host>-<pid>`: which process on which host."""
    psycopg2 = driver()
    from psycopg2.extensions import parse_dsn

    try:
        given = parse_dsn(url)
    except psycopg2.ProgrammingError as exc:
        raise UsageError(f"invalid store URL {redact(url)}: {scrub(str(exc), url)}") from None
    server_side = {
        "tcp_keepalives_idle": KEEPALIVE_IDLE,
        "tcp_keepalives_interval": KEEPALIVE_INTERVAL,
        "tcp_keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        "search_path": SCHEMA,
    }
    options = " ".join([given.get("options", ""), *(f"-c {k}={v}" for k, v in server_side.items())]).strip()
    try:
        return psycopg2.connect(
            url, options=options, application_name=" ".join(filter(None, ("ollama-q", role, client())))[:63],
            connect_timeout=CONNECT_TIMEOUT,
            keepalives=1, keepalives_idle=KEEPALIVE_IDLE, keepalives_interval=KEEPALIVE_INTERVAL,
            keepalives_count=KEEPALIVE_COUNT, tcp_user_timeout=TCP_USER_TIMEOUT_MS,
        )
    except psycopg2.Error as exc:
        reason = scrub(str(exc), url)
        if reason.startswith(("invalid ", "missing ")):  # libpq refused the URL itself, before connecting
            raise UsageError(f"invalid store URL {redact(url)}: {reason}") from None
        raise StoreUnavailable(f"cannot connect to the store at {redact(url)}: {reason}") from None
