"""Commands on the queue as a whole: info, pause, resume, clean, cache, models, daemon."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.
from typing import Annotated, Optional

import typer

from ollama_cli import config
from ollama_cli.insight import snapshot
from ollama_cli.cli.app import DataDirOpt, JsonOpt, emit, open_store
from ollama_cli.errors import BackendUnavailable, UsageError

HostOpt = Annotated[
    Optional[list[str]],
    typer.Option("--host", help="Backend URL (repeatable); openai+URL for OpenAI-compatible servers [env: OLLAMA_HOST]."),
]


def info(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """The queue at a glance: counts, daemon, cache."""
    data = snapshot.info(open_store(data_dir, readonly=True))
    if json_:
        emit(data)
    else:
        from ollama_cli import render

        render.info(data)


cache_app = typer.Typer(help="The result cache: stats, clear.", no_args_is_help=True)


@cache_app.command("stats")
def cache_stats(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Entries, hits, misses and bytes of the result cache."""
    data = open_store(data_dir, readonly=True).cache_stats()
    if json_:
        emit(data)
    else:
        from ollama_cli import render

        render.mapping(data)


@cache_app.command("clear")
def cache_clear(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Empty the result cache."""
    n = open_store(data_dir).cache_clear()
    if json_:
        emit({"cleared": n})
    else:
        print(f"cleared {n} cache entries")


def models(host: HostOpt = None, json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """The models of the backend, and which are loaded."""
    import asyncio

    from ollama_cli.clients.base import BackendError, client_for

    backend = config.backends(host)[0]

    async def fetch() -> list[dict]:
        client = client_for(backend)
        try:
            return await client.models()
        finally:
            await client.aclose()

    try:
        rows = asyncio.run(fetch())
    except BackendError as exc:
        raise BackendUnavailable(f"{backend.label}: {exc.message}") from None
    if json_:
        emit(rows)
    else:
        from ollama_cli import render

        render.models_table(rows)


def daemon(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Jobs at once per backend.")] = 1,
    host: HostOpt = None,
    drain: Annotated[bool, typer.Option("--drain", help="Exit once nothing is pending or running.")] = False,
    grace: Annotated[str, typer.Option(help="On SIGTERM/SIGINT, how long running jobs may finish.")] = "30s",
    retry_backoff: Annotated[str, typer.Option(help="First retry delay; doubles per attempt, capped at 60s.")] = "1s",
    model_concurrency: Annotated[Optional[list[str]], typer.Option(
        help="NAME=N: at most N requests for this model at once (repeatable).")] = None,
    keep_finished: Annotated[Optional[str], typer.Option(
        help="Delete finished jobs this long after they finish (checked every minute).")] = None,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Drain pending jobs to the backends until stopped (logs to stderr; JSON lines with --json)."""
    from ollama_cli.daemon.loop import serve
    from ollama_cli.timefmt import parse_duration

    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    backends = config.backends(host)
    caps = dict(_model_cap(m) for m in model_concurrency or [])
    raise typer.Exit(serve(open_store(data_dir), backends, concurrency=concurrency, drain=drain,
                           model_caps=caps,
                           grace=parse_duration(grace), backoff=parse_duration(retry_backoff),
                           keep_finished=parse_duration(keep_finished) if keep_finished else None,
                           json_logs=json_))


def _model_cap(text: str) -> tuple[str, int]:
    from ollama_cli import submission

    name, sep, value = text.rpartition("=")
    if not sep or not value.strip().isdigit() or int(value) < 1:
        raise UsageError(f"malformed --model-concurrency {text!r} (expected NAME=N, N at least 1)")
    return submission.model_name(name.strip()), int(value)


def _set_paused(paused: bool, json_: bool, data_dir: object) -> None:
    store = open_store(data_dir)
    if paused:
        store.pause()
    else:
        store.resume()
    if json_:
        emit({"paused": paused})
    elif paused:
        print("paused: daemons take no new jobs; running ones go on (ollama-q resume)")
    else:
        print("resumed: daemons take jobs again")


def pause(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Daemons stop taking jobs; running jobs go on."""
    _set_paused(True, json_, data_dir)


def resume(json_: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Daemons take jobs again."""
    _set_paused(False, json_, data_dir)


def clean(
    status_: Annotated[Optional[list[str]], typer.Option(
        "--status", help="Only this status (repeatable; default completed, failed, cancelled).")] = None,
    older_than: Annotated[Optional[str], typer.Option(help="Only jobs finished longer ago than this.")] = None,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Delete finished jobs and their results."""
    import time

    from ollama_cli import submission
    from ollama_cli.jobs import JobStatus
    from ollama_cli.timefmt import parse_duration

    statuses = [submission.choice(JobStatus, s, "status") for s in status_ or []] or \
        [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]
    for s in statuses:
        if not s.finished:
            raise UsageError(f"clean deletes finished jobs only, not {s.value} ones")
    age = parse_duration(older_than) if older_than is not None else None
    t = time.time()
    n = open_store(data_dir).clean(statuses, t, older_than=age)
    if json_:
        emit({"deleted": n})
    else:
        print(f"deleted {n} jobs")


COMMANDS = {"info": info, "pause": pause, "resume": resume, "clean": clean, "cache": cache_app,
            "models": models, "daemon": daemon}
