"""`list`: jobs, newest first, as a table that fits the terminal and streams, as ids (-q), or
as one JSON array. Apart from jobs.py so that `submit` and `status` do not pay to define it."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string.
import itertools
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ollama_cli import submission
from ollama_cli.cli.app import DataDirOpt, JsonOpt, emit, load_settings, now, open_store, quiet_or_json, warn
from ollama_cli.jobs import Job, JobStatus, JobType

if TYPE_CHECKING:
    from ollama_cli.store.base import Engine

DEFAULT_LIMIT = 50  # rows of the table unless --limit says otherwise


def list_(
    status_: Annotated[Optional[list[JobStatus]], typer.Option(
        "--status", case_sensitive=False, help="Only this status (repeatable).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Only this model (llama3.2 is llama3.2:latest).")] = None,
    type_: Annotated[Optional[JobType], typer.Option(
        "--type", "-t", case_sensitive=False, help="Only this type.")] = None,
    batch: Annotated[Optional[str], typer.Option(help="Only this batch.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Only jobs of this name (submit --name).")] = None,
    limit: Annotated[Optional[int], typer.Option(
        help=f"At most N jobs; 0 for all (default: {DEFAULT_LIMIT} in the table, all with --json or -q).",
        min=0)] = None,
    offset: Annotated[int, typer.Option(help="Skip the N newest matches.", min=0)] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the ids, one a line.")] = False,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """List jobs, newest first."""
    settings = load_settings(json_, data_dir)
    if batch is not None:
        submission.check_text(batch, "--batch")
    if name is not None:
        submission.check_text(name, "--name")
    quiet_or_json(quiet, settings.json)
    filters: dict[str, Any] = {"statuses": status_ or [], "model": submission.model_name(model) if model else None,
                               "job_type": type_, "batch": batch, "name": name}
    cap = (limit or None) if limit is not None else None if settings.json or quiet else DEFAULT_LIMIT
    store = open_store(settings, readonly=True)
    if settings.json:  # one document from one read, as before
        jobs, corrupt = store.list_jobs(**filters, limit=cap, offset=offset)
        for bad in corrupt:
            warn(bad.message)
        where = store.positions(jobs, now())
        emit([j.to_json(where.get(j.id)) for j in jobs])
    elif quiet:
        for page in _pages(store, filters, cap, offset):
            sys.stdout.write("".join(f"{j.id}\n" for j in page))
    else:
        from ollama_cli import render

        rows = (j.to_json(where.get(j.id)) for page in _pages(store, filters, cap and cap + 1, offset)
                for where in [store.positions(page, now())] for j in page)
        printed = render.jobs_table(itertools.islice(rows, cap))
        if cap is not None and next(rows, None) is not None:
            _more(store, filters, offset + printed)


def _pages(store: "Engine", filters: dict[str, Any], limit: int | None, offset: int) -> Iterator[list[Job]]:
    """The jobs a list asks for, newest first, a page at a time, each page its own read and
    twice the one before: the first rows are out before the last are read, a reader that
    stops (`| head`) stops the reads, and no transaction is held open while output waits."""
    size, before = 100, None
    while limit is None or limit > 0:
        ask = size if limit is None else min(size, limit)
        jobs, corrupt = store.list_jobs(**filters, limit=ask, offset=offset if before is None else 0, before=before)
        for bad in corrupt:
            warn(bad.message)
        if jobs:
            yield jobs
        if len(jobs) < ask:
            return
        before, size = jobs[-1].id, min(size * 2, 10_000)
        limit = None if limit is None else limit - len(jobs)


def _more(store: "Engine", filters: dict[str, Any], seen: int) -> None:
    """The line under a table the default limit cut short: how many more, where counters can
    tell it at any queue length (no filter but status), else only that there are more."""
    hint = "; --limit 0 for all"
    if filters["model"] or filters["job_type"] or filters["batch"] or filters["name"] is not None:
        print(f"… more{hint}", file=sys.stderr)
        return
    counts = store.counts()
    total = sum(counts[s.value] for s in filters["statuses"]) if filters["statuses"] else counts["total"]
    print(f"… {total - seen:,} more{hint}" if total > seen else f"… more{hint}", file=sys.stderr)


COMMANDS = {"list": list_}
