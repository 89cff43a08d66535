"""`feedback` (rate a job's answer) and `stats` (per-model statistics and advice)."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run; real objects come from bytecode for free.

import math
from typing import Annotated, Optional

import typer

from ollama_cli.cli.app import DataDirOpt, JsonOpt, StoreOpt, emit, load_settings, open_store, parse_id
from ollama_cli.errors import UsageError

REASON_LIMIT = 1000  # characters of a feedback's reason kept


def _score(text: str) -> float:
    try:
        score = float(text)
    except ValueError:
        raise UsageError(f"--score: {text[:40]!r} is not a number (from -1 to 1)") from None
    if not (math.isfinite(score) and -1 <= score <= 1):
        raise UsageError(f"--score: {text[:40]!r} is out of range (from -1 to 1)")
    return score


def feedback(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A completed job.")],
    score: Annotated[str, typer.Option(help="From -1 (useless) to 1 (perfect).")],
    reason: Annotated[Optional[str], typer.Option(help="Why, in a line.")] = None,
    category: Annotated[Optional[str], typer.Option(help="The job's task category (letters, digits, -, _, .).")] = None,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Rate a completed job's answer; rating again replaces the rating."""
    from ollama_cli import submission
    from ollama_cli.sanitize import one_line

    settings = load_settings(json_, data_dir, store_)
    wanted, value = parse_id(job_id), _score(score)
    why = one_line(submission.check_text(reason, "--reason"), REASON_LIMIT) if reason is not None else None
    kind = submission.category_name(category) if category is not None else None
    store = open_store(settings)
    job = store.feedback(wanted, value, why or None, kind, store.now())
    if settings.json:
        emit({"id": job.id, "score": value, "reason": why or None, "category": job.category})
    else:
        print(f"job {job.id} rated {value:g}" + (f" ({job.category})" if job.category else ""))


def stats(
    model: Annotated[Optional[str], typer.Option(help="Only this model.")] = None,
    since: Annotated[Optional[str], typer.Option(help="Only the last DURATION, e.g. 7d (hour granularity).")] = None,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Per-model statistics, kept as jobs finish, and advice drawn from them."""
    from ollama_cli import submission
    from ollama_cli.insight import advice
    from ollama_cli.insight import stats as figures
    from ollama_cli.timefmt import format_time, parse_duration

    settings = load_settings(json_, data_dir, store_)
    wanted = submission.model_name(model) if model is not None else None
    age = parse_duration(since) if since is not None else None
    store = open_store(settings, readonly=True)
    now = store.now()
    start = None if age is None else now - age
    rows = figures.model_stats(store, since=start, model=wanted, now=now)
    recommendations = advice.recommendations(rows, store.cache_stats())
    first = figures.since_hour(start)
    data = {"since": format_time(first * 3600.0) if first is not None else None,
            "models": [r.to_json() for r in rows], "recommendations": recommendations}
    if settings.json:
        emit(data)
    else:
        from ollama_cli.render import insight

        insight.stats(data)


COMMANDS = {"feedback": feedback, "stats": stats}
