"""Durations (`500ms`, `30s`, `10m`, `2h`, `7d`, bare seconds) and RFC 3339 times."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from ollama_cli.errors import UsageError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `500ms`, `30s`, `10m`, `2h`, `7d` or `12` (seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"invalid duration {text!r} (examples: 500ms, 30s, 10m, 2h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_time(text: str) -> float:
    """Epoch seconds of an RFC 3339 time; one without an offset is local time."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"invalid time {text!r} (example: 2026-11-24T03:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.timestamp()


def format_time(epoch: float | None) -> str | None:
    """RFC 3339 UTC with milliseconds and `Z`, as the JSON contract writes times."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

