"""The Typer application, the options every command shares, and small helpers."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ollama_cli import __version__
from ollama_cli.settings import Settings, completing, load
from ollama_cli.errors import OllamaQError, UsageError

# Each command, in the order of --help, and the module that defines it. Typer builds
# every registered command on every run, so a run registers only the command it invokes.
COMMANDS = {
    "submit": "jobs",
    "status": "jobs",
    "result": "jobs",
    "list": "listing",
    "wait": "jobs",
    "cancel": "jobs",
    "retry": "jobs",
    "rerun": "jobs",
    "info": "admin",
    "pause": "admin",
    "resume": "admin",
    "clean": "admin",
    "batch": "batch",
    "cache": "admin",
    "models": "admin",
    "daemon": "admin",
}

# 2**64 has 20 digits; matched before int(), which refuses over 4,300 digits with a ValueError.
_ID = re.compile(r"[0-9]{1,20}")

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
DataDirOpt = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="Folder of the store [env: OLLAMA_Q_DATA_DIR].", show_default=False),
]


def _version(value: bool) -> None:
    if value:
        print(f"ollama-q {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """A durable job queue in front of Ollama."""


def load_settings(json_: bool, data_dir: Path | None, **flags: Any) -> Settings:
    """The command's settings, built once: its flags (named as the settings are) over the
    environment, the file and the defaults."""
    return load({"json": json_, "data_dir": data_dir, **flags})


def open_store(settings: Settings, *, readonly: bool = False) -> Any:
    """The store; `readonly` for commands that write nothing, so they never wait on a writer."""
    from ollama_cli import store

    path = settings.data_dir
    try:
        return store.open_store(path, readonly=readonly, on_wait=_waiting)
    except OllamaQError:
        raise
    except Exception as exc:  # lmdb.Error, OSError: say where, not a traceback
        from ollama_cli.errors import OperationFailed

        raise OperationFailed(f"cannot open the store in {path}: {exc}") from None


def _waiting(pid: int | None) -> None:
    holder = f" (pid {pid}; if it is suspended, `kill -CONT {pid}` or `fg` resumes it)" if pid else ""
    warn(f"waiting for another ollama-q process that holds the store{holder}")


def emit(obj: Any) -> None:
    """The one JSON document of a --json command."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def error_line(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def now() -> float:
    return time.time()


def parse_id(text: str) -> int:
    """A job id: ASCII digits only, as the ids are printed (int() would also take ' 1',
    '+1', '1_000' and other scripts' digits), 1 to 2**64 - 1."""
    if not (_ID.fullmatch(text) and 0 < int(text) < 2**64):
        raise UsageError(f"invalid job id {text!r} (a positive integer)")
    return int(text)


def parse_ids(texts: list[str]) -> list[int]:
    return [parse_id(t) for t in texts]


def quiet_or_json(quiet: bool, json_: bool) -> None:
    """-q (ids only) and --json each say what stdout holds: one of them."""
    if quiet and json_:
        raise UsageError("give --json or -q, not both")


def build(argv: list[str]) -> typer.Typer:
    """The application with the invoked command, or with all of them for --help."""
    import importlib

    app = typer.Typer(
        name="ollama-q",
        help="A durable job queue in front of Ollama.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        pretty_exceptions_show_locals=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    invoked = next((a for a in argv if not a.startswith("-")), None)
    if completing():
        # Shell completion (completions/): Typer registers its bash/zsh/fish handlers only
        # with add_completion, and completing any command needs all of them.
        from typer.completion import completion_init

        completion_init()
        invoked = None
    for name in [invoked] if invoked in COMMANDS else COMMANDS:
        module = importlib.import_module(f"ollama_cli.cli.{COMMANDS[name]}")
        command = module.COMMANDS[name]
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=name)
        else:
            app.command(name)(command)
    return app
