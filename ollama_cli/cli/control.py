"""Commands on the queue as a whole: info, pause, resume, clean."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.

from pathlib import Path
from typing import Annotated, Optional

import typer

from ollama_cli.cli.app import DataDirOpt, JsonOpt, StoreOpt, emit, load_settings, open_store
from ollama_cli.errors import UsageError
from ollama_cli.insight import snapshot
from ollama_cli.jobs import JobStatus


def info(json_: JsonOpt = False, data_dir: DataDirOpt = None, store_: StoreOpt = None) -> None:
    """The queue at a glance: counts, daemon, cache."""
    settings = load_settings(json_, data_dir, store_)
    store = open_store(settings, readonly=True)
    data = snapshot.info(store)
    if settings.json:
        emit(data)
    else:
        from ollama_cli import render

        render.info(data, store.now())


def _set_paused(paused: bool, json_: bool, data_dir: Optional[Path], store_: Optional[str]) -> None:
    settings = load_settings(json_, data_dir, store_)
    store = open_store(settings)
    if paused:
        store.pause()
    else:
        store.resume()
    if settings.json:
        emit({"paused": paused})
    elif paused:
        print("paused: daemons take no new jobs; running ones go on (ollama-q resume)")
    else:
        print("resumed: daemons take jobs again")


def pause(json_: JsonOpt = False, data_dir: DataDirOpt = None, store_: StoreOpt = None) -> None:
    """Daemons stop taking jobs; running jobs go on."""
    _set_paused(True, json_, data_dir, store_)


def resume(json_: JsonOpt = False, data_dir: DataDirOpt = None, store_: StoreOpt = None) -> None:
    """Daemons take jobs again."""
    _set_paused(False, json_, data_dir, store_)


def clean(
    status_: Annotated[Optional[list[JobStatus]], typer.Option(
        "--status", case_sensitive=False, help="Only this status (repeatable; default completed, failed, cancelled).",
    )] = None,
    older_than: Annotated[Optional[str], typer.Option(help="Only jobs finished longer ago than this.")] = None,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Delete finished jobs and their results."""
    from ollama_cli.timefmt import parse_duration

    settings = load_settings(json_, data_dir, store_)
    statuses = status_ or [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]
    for s in statuses:
        if not s.finished:
            raise UsageError(f"clean deletes finished jobs only, not {s.value} ones")
    age = parse_duration(older_than) if older_than is not None else None
    store = open_store(settings)
    n = store.clean(statuses, store.now(), older_than=age)
    if settings.json:
        emit({"deleted": n})
    else:
        print(f"deleted {n} jobs")


COMMANDS = {"info": info, "pause": pause, "resume": resume, "clean": clean}
