"""`daemon`: drain the queue to the backends until stopped."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.

from typing import Annotated, Optional

import typer

from ollama_cli.cli.app import DataDirOpt, HostOpt, StoreOpt, load_settings, open_store
from ollama_cli.settings import DaemonSettings

_DEFAULTS = DaemonSettings()  # what the daemon's help says when a flag is not given


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
    metrics_addr: Annotated[Optional[str], typer.Option(
        metavar="[HOST:]PORT", help="Serve Prometheus metrics at /metrics there (host 127.0.0.1 unless given).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Log JSON lines on stderr, one per event.")] = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Drain pending jobs to the backends until stopped (logs to stderr; JSON lines with --json)."""
    from ollama_cli.daemon.loop import serve

    settings = load_settings(json_, data_dir, store_, hosts=host, concurrency=concurrency, drain=drain, grace=grace,
                             retry_backoff=retry_backoff, model_concurrency=model_concurrency,
                             keep_finished=keep_finished, max_overtake=max_overtake, metrics_addr=metrics_addr)
    backends = settings.backends  # parsed before the store opens: a bad host writes nothing
    raise typer.Exit(serve(open_store(settings), backends, settings))


COMMANDS = {"daemon": daemon}
