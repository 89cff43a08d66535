"""Statistics in hour buckets: what one finished job adds to the bucket of its model and type
and to that of its model and category, as a flat mapping of field names to numbers. Both
engines keep buckets as such sums, written in the transaction that records the job's end, so
that reading them costs models x hours, never jobs.

A job's contribution is a pure function of its record and its result's figures: a rating or a
new category later (`feedback`) subtracts what the job added and adds what it adds now.

Fields (absent = 0): `jobs`, `completed`, `failed`, `cancelled`, `cache_hits`; for completed
jobs that ran (not cache hits): `lat/<i>` and `wait/<i>` (histograms, below), `lat_sum`,
`wait_sum`, `loads`, `load_s`, `prompt_tokens`, `gen_tokens`, `timed_tokens` and `gen_s`
(tokens and seconds of the answers whose generation time is known: tokens/s is their ratio);
`err/<error type>` for failed jobs; `fb_n`, `fb_sum`, `fb_sq` (count, sum and sum of squares of
feedback scores)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ollama_cli.jobs import Job

TYPE, CATEGORY = "t", "c"  # bucket kinds: per (model, job type), per (model, category)

# A load_duration (Ollama's final chunk, nanoseconds) from this up counts as a model load.
# A request to a model already in memory reports a few milliseconds (the runner's warm
# start); loading even a small model from the page cache takes several tenths of a second.
LOAD_THRESHOLD_S = 0.25

# Histogram buckets, log-spaced: bucket i holds values in (BASE * STEP**(i-1), BASE * STEP**i],
# bucket 0 everything up to BASE and the last everything above. A quarter octave each (19 %
# wide), 1 ms to about 28 hours: a percentile read from them is within 10 % of the truth.
HIST_BASE = 0.001
HIST_PER_OCTAVE = 4
HIST_BUCKETS = 118


class Bucket(NamedTuple):
    """One hour bucket as stored: `group` is the job type (kind TYPE) or `type:category` (kind
    CATEGORY: a category never holds a colon); `model` is the canonical name (`jobs.full_name`)."""

    hour: int  # hours since the epoch
    kind: str
    model: str
    group: str
    fields: dict[str, float]


def hour_of(at: float) -> int:
    return int(at // 3600)


def hist_index(seconds: float) -> int:
    if not seconds > HIST_BASE:
        return 0
    return min(HIST_BUCKETS - 1, math.ceil(HIST_PER_OCTAVE * math.log2(seconds / HIST_BASE) - 1e-9))


def hist_upper(i: int) -> float:
    return HIST_BASE * 2 ** (i / HIST_PER_OCTAVE)


def percentile(hist: dict[int, float], q: float) -> float | None:
    """The q-quantile (0..1) estimated from a histogram {bucket index: count}: the bucket that
    holds it, interpolated geometrically within the bucket. None when empty."""
    total = sum(hist.values())
    if total <= 0:
        return None
    rank, seen = q * total, 0.0
    for i in sorted(hist):
        n = hist[i]
        if n <= 0:
            continue
        if seen + n >= rank:
            if i == 0:
                return HIST_BASE
            low, high = hist_upper(i - 1), hist_upper(i)
            return low * (high / low) ** ((rank - seen) / n)
        seen += n
    return hist_upper(max(hist))


def contribution(job: Job, stats: dict[str, int] | None) -> dict[str, float]:
    """What a finished job adds to its buckets; `stats` are its result's figures (`jobs.result_stats`)."""
    status = job.status.value
    out: dict[str, float] = {"jobs": 1, status: 1}
    if job.cached:
        out["cache_hits"] = 1
    elif status == "completed" and job.started_at is not None and job.finished_at is not None:
        run = max(0.0, job.finished_at - job.started_at)
        wait = max(0.0, job.started_at - max(job.created_at, job.run_at or 0.0))
        out[f"lat/{hist_index(run)}"] = 1
        out[f"wait/{hist_index(wait)}"] = 1
        out["lat_sum"], out["wait_sum"] = run, wait
        stats = stats or {}
        load = stats.get("load_duration", 0) / 1e9
        if load >= LOAD_THRESHOLD_S:
            out["loads"], out["load_s"] = 1, load
        for source, field in (("prompt_eval_count", "prompt_tokens"), ("eval_count", "gen_tokens")):
            if stats.get(source):
                out[field] = stats[source]
        if stats.get("eval_count") and stats.get("eval_duration"):
            out["timed_tokens"], out["gen_s"] = stats["eval_count"], stats["eval_duration"] / 1e9
    if status == "failed" and job.error is not None:
        out[f"err/{job.error.type.value}"] = 1
    if job.feedback is not None:
        score = job.feedback[0]
        out["fb_n"], out["fb_sum"], out["fb_sq"] = 1, score, score * score
    return out


def keys(job: Job) -> list[tuple[int, str, str, str]]:
    """The buckets a finished job counts in: (hour, kind, model, group)."""
    from ollama_cli.jobs import full_name

    hour, model = hour_of(job.finished_at or job.created_at), full_name(job.model)
    out = [(hour, TYPE, model, job.type.value)]
    if job.category is not None:
        out.append((hour, CATEGORY, model, f"{job.type.value}:{job.category}"))
    return out


def changes(old: Job | None, new: Job, stats: dict[str, int] | None) -> list[tuple[tuple[int, str, str, str],
                                                                                      dict[str, float]]]:
    """(bucket key, deltas) for a job that finishes (`old` None) or whose finished record
    changes (a rating, a category): what `old` added is taken away, what `new` adds is added."""
    deltas: dict[tuple[int, str, str, str], dict[str, float]] = {}
    for job, sign in ((old, -1), (new, 1)):
        if job is None:
            continue
        figures = contribution(job, stats)
        for key in keys(job):
            merge(deltas.setdefault(key, {}), figures, sign)
    return [(key, {f: v for f, v in d.items() if v}) for key, d in sorted(deltas.items())
            if any(d.values())]


def merge(into: dict[str, Any], deltas: dict[str, float], sign: float = 1) -> dict[str, Any]:
    """Add `deltas` (times `sign`) into `into`, dropping fields that come to zero."""
    for field, value in deltas.items():
        total = into.get(field, 0) + sign * value
        if abs(total) < 1e-9:
            into.pop(field, None)
        else:
            into[field] = total
    return into
