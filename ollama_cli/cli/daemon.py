"""`daemon`: drain the queue to the backends until stopped."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.

from typing import Annotated, Optional

import typer

from ollama_cli.cli.app import DataDirOpt, HostOpt, StoreOpt, load_settings, open_store
from ollama_cli.settings import DaemonSettings, Settings

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
    on_finish: Annotated[Optional[str], typer.Option(
        metavar="COMMAND", help="Run `sh -c COMMAND` once per finished job, the job's JSON on stdin and "
                                "OLLAMA_Q_JOB_ID/STATUS/MODEL/NAME/BATCH set; at least once.")] = None,
    hook_timeout: Annotated[Optional[str], typer.Option(
        help=f"Kill a hook running longer than this (default {_DEFAULTS.hook_timeout:g}s).")] = None,
    log_level: Annotated[Optional[str], typer.Option(
        metavar="LEVEL", help="debug, info, warning or error (default info) [env: OLLAMA_Q_LOG].")] = None,
    print_systemd_unit: Annotated[bool, typer.Option(
        "--print-systemd-unit", help="Print a systemd user unit that runs this daemon with these options, "
                                     "and exit.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Log JSON lines on stderr, one per event.")] = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Drain pending jobs to the backends until stopped (logs to stderr; JSON lines with --json)."""
    settings = load_settings(json_, data_dir, store_, hosts=host, concurrency=concurrency, drain=drain, grace=grace,
                             retry_backoff=retry_backoff, model_concurrency=model_concurrency,
                             keep_finished=keep_finished, max_overtake=max_overtake, metrics_addr=metrics_addr,
                             on_finish=on_finish, hook_timeout=hook_timeout, log_level=log_level)
    backends = settings.backends  # parsed before the store opens: a bad host writes nothing
    if print_systemd_unit:
        _print_unit(settings)
        return
    from ollama_cli.daemon.loop import serve

    raise typer.Exit(serve(open_store(settings), backends, settings))


def _print_unit(settings: Settings) -> None:
    """The unit runs this program by absolute path with this run's arguments but this one."""
    import os
    import sys

    from ollama_cli.cli.app import ARGV
    from ollama_cli.daemon import systemd
    from ollama_cli.settings import service_variables

    command = systemd.this_command(sys.argv[0], sys.executable)
    args = [a for a in ARGV if a != "--print-systemd-unit"]
    print(systemd.unit(command + args, environment=service_variables(), directory=os.getcwd(),
                       grace=settings.daemon.grace, hooks=settings.daemon.on_finish is not None), end="")


COMMANDS = {"daemon": daemon}
