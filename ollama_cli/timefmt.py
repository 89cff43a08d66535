"""Durations (`500ms`, `30s`, `10m`, `2h`, `7d`, bare seconds) and RFC 3339 times, bounded
to what the store and the clocks can hold."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from ollama_cli.errors import UsageError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.ASCII)
# Ten years: more is a typo. It keeps every deadline below threading.TIMEOUT_MAX (292
# years), Ollama's keep_alive below int64 nanoseconds, and now + any duration below MAX_TIME.
MAX_DURATION = 3650 * 86400.0
# The times a job may carry: the store keys them as unsigned integers (nothing before
# 1970) and datetime shows no year after 9999.
MIN_TIME = 0.0
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `500ms`, `30s`, `10m`, `2h`, `7d` or `12` (seconds),
    at most MAX_DURATION."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"invalid duration {text!r} (examples: 500ms, 30s, 10m, 2h, 7d)")
    return bounded_duration(float(match.group(1)) * _UNITS[match.group(2) or "s"], f"duration {text!r}")


def bounded_duration(seconds: float, what: str) -> float:
    """`seconds` if it is at most MAX_DURATION (and so not infinite)."""
    if not seconds <= MAX_DURATION:
        raise UsageError(f"{what} is longer than {MAX_DURATION / 86400:.0f}d (ten years)")
    return seconds


def parse_time(text: str) -> float:
    """Epoch seconds of an RFC 3339 time from 1970 to 9999; one without an offset is local time."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            moment = moment.astimezone()  # fails on a year 1 that is year 0 in UTC
        epoch = moment.timestamp()
    except (ValueError, OverflowError, OSError):
        raise UsageError(f"invalid time {text!r} (example: 2026-11-24T03:00:00Z)") from None
    if not MIN_TIME <= epoch <= MAX_TIME:
        raise UsageError(f"time {text!r} is outside 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59Z")
    return epoch


def format_time(epoch: float | None) -> str | None:
    """RFC 3339 UTC with milliseconds and `Z`, as the JSON contract writes times."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def local_time(epoch: float) -> str:
    """A time for people: local, to the second, with its offset (`2026-11-23T13:27:46+01:00`).
    The daemon's log, `info` and `status` all show this one clock; JSON keeps UTC."""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")
