"""Durations (`500ms`, `30s`, `10m`, `2h`, `7d`, `1h30m` as Go writes them, bare seconds)
and times (RFC 3339, or `HH:MM` for the next such local time), bounded to what the store
and the clocks can hold."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from ollama_cli.errors import UsageError

# Go's units (time.ParseDuration, which Ollama's keep_alive takes), and days. The patterns are
# compiled (and cached by `re`) when first used: `status` never parses a duration, and five
# compilations at import would cost it 3 % of its start-up.
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0,
          "d": 86400.0}
_PART = r"(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|μs|ms|s|m|h|d)"
_DURATION = rf"(?:{_PART}\s*)+"
_BARE = r"\d+(?:\.\d*)?|\.\d+"
_CLOCK = r"([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?"
# A fraction of a second of any length: Python 3.10's fromisoformat takes 3 or 6 digits only.
_FRACTION = r"([Tt ]\d\d:\d\d:\d\d)[.,](\d+)"
# Ten years: more is a typo. It keeps every deadline below threading.TIMEOUT_MAX (292
# years), Ollama's keep_alive below int64 nanoseconds, and now + any duration below MAX_TIME.
MAX_DURATION = 3650 * 86400.0
# The times a job may carry: the store keys them as unsigned integers (nothing before
# 1970) and datetime shows no year after 9999.
MIN_TIME = 0.0
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `500ms`, `30s`, `10m`, `2h`, `7d`, `1h30m` or `12`
    (seconds), at most MAX_DURATION."""
    raw = text.strip()
    if re.fullmatch(_BARE, raw, re.ASCII):
        seconds = float(raw)
    elif re.fullmatch(_DURATION, raw, re.ASCII):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in re.findall(_PART, raw, re.ASCII))
    else:
        raise UsageError(f"invalid duration {text!r} (examples: 500ms, 30s, 10m, 1h30m, 7d)")
    return bounded_duration(seconds, f"duration {text!r}")


def bounded_duration(seconds: float, what: str) -> float:
    """`seconds` if it is at most MAX_DURATION (and so not infinite)."""
    if not seconds <= MAX_DURATION:
        raise UsageError(f"{what} is longer than {MAX_DURATION / 86400:.0f}d (ten years)")
    return seconds


def parse_time(text: str, now: float) -> float:
    """Epoch seconds of an RFC 3339 time from 1970 to 9999 (one without an offset is local
    time), or of `HH:MM[:SS]`: the next such local time after `now`, today or tomorrow."""
    raw = text.strip()
    clock = re.fullmatch(_CLOCK, raw, re.ASCII)
    if clock:
        return _next_clock(now, *(int(g or 0) for g in clock.groups()))
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    raw = re.sub(_FRACTION, lambda m: f"{m.group(1)}.{(m.group(2) + '000000')[:6]}", raw, flags=re.ASCII)
    try:
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            moment = moment.astimezone()  # fails on a year 1 that is year 0 in UTC
        epoch = moment.timestamp()
    except (ValueError, OverflowError, OSError):
        raise UsageError(f"invalid time {text!r} (examples: 2026-11-24T03:00:00Z, 03:00)") from None
    if not MIN_TIME <= epoch <= MAX_TIME:
        raise UsageError(f"time {text!r} is outside 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59Z")
    return epoch


def _next_clock(now: float, hour: int, minute: int, second: int) -> float:
    today = datetime.fromtimestamp(now).replace(hour=hour, minute=minute, second=second, microsecond=0)
    moment = today if today.timestamp() > now else today + timedelta(days=1)
    return moment.timestamp()


def format_time(epoch: float | None) -> str | None:
    """RFC 3339 UTC with milliseconds and `Z`, as the JSON contract writes times. A time out of
    MIN_TIME..MAX_TIME (which a store written before times were bounded may hold) shows as the
    bound it passed: it is not a time anyone meant, and it must not stop `list` or `status`."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(_bounded(epoch), tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def local_time(epoch: float) -> str:
    """A time for people: local, to the second, with its offset (`2026-11-23T13:27:46+01:00`).
    The daemon's log, `info` and `status` all show this one clock; JSON keeps UTC. Bounded
    as `format_time` is."""
    try:
        return datetime.fromtimestamp(_bounded(epoch)).astimezone().isoformat(timespec="seconds")
    except (OverflowError, ValueError):  # a bound, in a zone where it falls past year 9999
        return datetime.fromtimestamp(_bounded(epoch), tz=timezone.utc).isoformat(timespec="seconds")


def _bounded(epoch: float) -> float:
    """`epoch` within MIN_TIME..MAX_TIME (NaN: MIN_TIME)."""
    return MIN_TIME if not epoch >= MIN_TIME else min(epoch, MAX_TIME)
