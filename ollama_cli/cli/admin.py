"""Commands on the queue as a whole: info, pause, resume, clean, cache, models, daemon."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.
from pathlib import Path
from typing import Annotated, Optional

import typer

from ollama_cli.settings import DaemonSettings
from ollama_cli.insight import snapshot
from ollama_cli.cli.app import DataDirOpt, JsonOpt, StoreOpt, emit, error_line, load_settings, open_store
from ollama_cli.errors import ExitCode, UsageError
from ollama_cli.jobs import JobStatus
from ollama_cli.settings.hosts import Backend

_DEFAULTS = DaemonSettings()  # what the daemon's help says when a flag is not given
HostOpt = Annotated[
    Optional[list[str]],
    typer.Option("--host", help="Backend URL (repeatable); openai+URL for OpenAI-compatible servers [env: OLLAMA_HOST]."),
]


def info(json_: JsonOpt = False, data_dir: DataDirOpt = None, store_: StoreOpt = None) -> None:
    """The queue at a glance: counts, daemon, cache."""
    settings = load_settings(json_, data_dir, store_)
    data = snapshot.info(open_store(settings, readonly=True))
    if settings.json:
        emit(data)
    else:
        from ollama_cli import render

        render.info(data)


cache_app = typer.Typer(help="The result cache: stats, clear.", no_args_is_help=True)


@cache_app.command("stats")
def cache_stats(json_: JsonOpt = False, data_dir: DataDirOpt = None, store_: StoreOpt = None) -> None:
    """Entries, hits, misses and bytes of the result cache."""
    settings = load_settings(json_, data_dir, store_)
    data = open_store(settings, readonly=True).cache_stats()
    if settings.json:
        emit(data)
    else:
        from ollama_cli import render

        render.mapping(data)


@cache_app.command("clear")
def cache_clear(json_: JsonOpt = False, data_dir: DataDirOpt = None, store_: StoreOpt = None) -> None:
    """Empty the result cache."""
    settings = load_settings(json_, data_dir, store_)
    n = open_store(settings).cache_clear()
    if settings.json:
        emit({"cleared": n})
    else:
        print(f"cleared {n} cache entries")


def models(
    host: HostOpt = None, json_: JsonOpt = False, data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """The models of each backend, and which are loaded."""
    import asyncio

    from ollama_cli.clients import client_for
    from ollama_cli.clients.base import BackendError

    settings = load_settings(json_, data_dir, store_, hosts=host)
    backends = settings.backends

    async def listing(backend: Backend) -> list[dict]:
        client = client_for(backend)
        try:
            return [{**m, "host": backend.label} for m in await client.models()]
        finally:
            await client.aclose()

    async def every_listing() -> list:
        return await asyncio.gather(*map(listing, backends), return_exceptions=True)

    rows, failures = [], []
    for backend, got in zip(backends, asyncio.run(every_listing())):
        if isinstance(got, BackendError):
            failures.append(f"{backend.label}: {got.message}")
        elif isinstance(got, BaseException):
            raise got
        else:
            rows += got
    if rows or not failures:
        if settings.json:
            emit(rows)
        else:
            from ollama_cli import render

            render.models_table(rows)
    for failure in failures:  # what the others listed is printed all the same
        error_line(failure)
    if failures:
        raise typer.Exit(ExitCode.BACKEND)


def daemon(
    concurrency: Annotated[Optional[int], typer.Option(
        "--concurrency", "-c", help=f"Jobs at once per backend (default {_DEFAULTS.concurrency}).")] = None,
    host: HostOpt = None,
    drain: Annotated[bool, typer.Option("--drain", help="Exit once nothing is pending or running.")] = False,
    grace: Annotated[Optional[str], typer.Option(
        help=f"On SIGTERM/SIGINT, how long running jobs may finish (default {_DEFAULTS.grace:g}s).")] = None,
    retry_backoff: Annotated[Optional[str], typer.Option(
        help=f"First retry delay (default {_DEFAULTS.retry_backoff:g}s); doubles per attempt, capped at 60s.")] = None,
    model_concurrency: Annotated[Optional[list[str]], typer.Option(
        help="NAME=N: at most N requests for this model at once (repeatable).")] = None,
    keep_finished: Annotated[Optional[str], typer.Option(
        help="Delete finished jobs this long after they finish (checked every minute).")] = None,
    max_overtake: Annotated[Optional[int], typer.Option(
        help=f"Jobs of a loaded model that may start before the oldest waiting job of another model "
             f"(default {_DEFAULTS.max_overtake}): higher, fewer model loads; lower, shorter waits.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Log JSON lines on stderr, one per event.")] = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Drain pending jobs to the backends until stopped (logs to stderr; JSON lines with --json)."""
    from ollama_cli.daemon.loop import serve

    settings = load_settings(json_, data_dir, store_, hosts=host, concurrency=concurrency, drain=drain, grace=grace,
                             retry_backoff=retry_backoff, model_concurrency=model_concurrency,
                             keep_finished=keep_finished, max_overtake=max_overtake)
    backends = settings.backends  # parsed before the store opens: a bad host writes nothing
    raise typer.Exit(serve(open_store(settings), backends, settings))


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


COMMANDS = {"info": info, "pause": pause, "resume": resume, "clean": clean, "cache": cache_app,
            "models": models, "daemon": daemon}
