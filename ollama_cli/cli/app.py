"""The Typer application, the options every command shares, and small helpers."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ollama_cli import __version__
from ollama_cli.settings import Settings, completing, load
from ollama_cli.errors import OllamaQError, UsageError

# Each command, in the order of --help, and the module that defines it. Typer builds
# every registered command on every run, so a run registers only the command it invokes.
COMMANDS = {
    "submit": "submit",
    "status": "jobs",
    "result": "jobs",
    "list": "listing",
    "wait": "jobs",
    "cancel": "jobs",
    "retry": "jobs",
    "rerun": "jobs",
    "info": "control",
    "top": "top",
    "pause": "control",
    "resume": "control",
    "clean": "control",
    "batch": "batch",
    "feedback": "stats",
    "stats": "stats",
    "cache": "cache",
    "models": "models",
    "daemon": "daemon",
    "config": "config",
    "completion": "completion",
}


JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
DataDirOpt = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="Folder of the store [env: OLLAMA_Q_DATA_DIR].", show_default=False),
]
StoreOpt = Annotated[
    Optional[str],
    typer.Option("--store", metavar="URL|PATH", show_default=False,
                 help="The store: postgresql://user@host/db, shared by several hosts, or a folder "
                      "(LMDB; default the data dir) [env: OLLAMA_Q_STORE]."),
]
HostOpt = Annotated[
    Optional[list[str]],
    typer.Option("--host", help="Backend URL (repeatable); openai+URL for OpenAI-compatible servers [env: OLLAMA_HOST]."),
]


def _version(value: bool) -> None:
    if value:
        print(f"ollama-q {__version__}")
        raise typer.Exit()


# The options every command takes, given before its name (`ollama-q --data-dir D list`, as
# `git -C D` goes): set by the root callback of each run, read by load_settings; and the
# command invoked (the config file is read only if it uses a setting no flag or variable gave).
_before: dict[str, Any] = {}


# The arguments of this run, as given: `daemon --print-systemd-unit` writes them into the unit.
ARGV: list[str] = []


VersionOpt = Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")]


def _root(
    version: VersionOpt = False,
    json_: Annotated[bool, typer.Option("--json", help="One JSON document on stdout (any command).")] = False,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="Folder of the store, for any command [env: OLLAMA_Q_DATA_DIR].", show_default=False,
    )] = None,
    store: Annotated[Optional[str], typer.Option(
        "--store", metavar="URL|PATH", show_default=False,
        help="The store, for any command: postgresql://user@host/db or a folder [env: OLLAMA_Q_STORE].",
    )] = None,
) -> None:
    """A durable job queue in front of Ollama."""
    _before.update(json=json_, data_dir=data_dir, store=store)


def _plain_root(version: VersionOpt = False) -> None:
    """A durable job queue in front of Ollama."""


def load_settings(json_: bool, data_dir: Path | None, store: str | None, **flags: Any) -> Settings:
    """The command's settings, built once: its flags (named as the settings are, cache_ttl for
    cache.ttl; given after its name, else before it) over the environment, the file and the
    defaults."""
    return load({"json": json_ or _before.get("json", False), "data_dir": data_dir or _before.get("data_dir"),
                 "store": store or _before.get("store"), **flags}, command=_before.get("command"))


def open_store(settings: Settings, *, readonly: bool = False) -> Any:
    """The store; `readonly` for commands that write nothing, so they never wait on a writer.
    Those create none where --data-dir or --store points (a mistyped one is an error, not an
    empty queue); the variables' stores and the default one are the user's settled choice."""
    from ollama_cli import store

    location = settings.location
    try:
        named = "store" if settings.store is not None else "data_dir"
        return store.open_store(location, readonly=readonly, on_wait=_waiting,
                                create=not readonly or settings.source(named) != "flag")
    except OllamaQError:
        raise
    except Exception as exc:  # lmdb.Error, OSError: say where, not a traceback
        from ollama_cli.errors import OperationFailed

        raise OperationFailed(f"cannot open the store in {store.shown(location)}: {exc}") from None


def _waiting(pid: int | None) -> None:
    holder = f" (pid {pid}; if it is suspended, `kill -CONT {pid}` or `fg` resumes it)" if pid else ""
    warn(f"waiting for another ollama-q process that holds the store{holder}")


def emit(obj: Any) -> None:
    """The one JSON document of a --json command."""
    from ollama_cli.jsontext import dumps

    text = dumps(obj) + "\n"
    out = sys.stdout
    binary = getattr(out, "buffer", None)
    if binary is None:  # a StringIO, in tests
        out.write(text)
        return
    # Python's buffered writer cuts a large write to a pipe whose reader went away short
    # without an error: say so as a smaller write would.
    out.flush()
    data = text.encode(out.encoding or "utf-8", out.errors or "strict")
    if binary.write(data) < len(data):
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
    binary.flush()


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def warn_if_stalled(store: Any) -> None:
    """Before a wait: say why it may never end, once."""
    from ollama_cli.insight import snapshot

    if store.is_paused():
        warn("the queue is paused: no job starts until `ollama-q resume`")
    if not snapshot.live_daemons(store):
        warn("no daemon is running: jobs wait until one starts (`ollama-q daemon`)")


def error_line(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def parse_id(text: str) -> int:
    """A job id: ASCII digits only, as the ids are printed (int() would also take ' 1',
    '+1', '1_000' and other scripts' digits), 1 to 2**64 - 1."""
    # 2**64 has 20 digits: checked before int(), which refuses over 4,300 digits with a
    # ValueError. (A regular expression would be compiled on every run.)
    if not (text.isascii() and text.isdigit() and len(text) <= 20 and 0 < int(text) < 2**64):
        raise UsageError(f"invalid job id {text!r} (a positive integer)")
    return int(text)


def parse_ids(texts: list[str]) -> list[int]:
    return [parse_id(t) for t in texts]


def quiet_or_json(quiet: bool, json_: bool) -> None:
    """-q (ids only) and --json each say what stdout holds: one of them."""
    if quiet and json_:
        raise UsageError("give --json or -q, not both")


def command_word(argv: list[str]) -> str | None:
    """The command named in `argv`, past the options that may come before it."""
    words = iter(argv)
    for word in words:
        if word in ("--data-dir", "--store"):
            next(words, None)  # its value
        elif not word.startswith("-"):
            return word
    return None


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
    _before.clear()
    ARGV[:] = argv
    invoked = _before["command"] = command_word(argv)
    # Options before the command cost every run their parse (3.6 M instructions, 1.4 % of the
    # import floor): declared only when something comes before the command, or for help.
    plain = bool(argv) and argv[0] == invoked and not completing()
    app.callback()(_plain_root if plain else _root)
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
