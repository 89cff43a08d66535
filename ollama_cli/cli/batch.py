"""`batch`: queue a JSONL file of requests in one step, follow it, write its answers."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.
import json
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TextIO

import typer

from ollama_cli import batch, submission
from ollama_cli.cli.app import (
    DataDirOpt, JsonOpt, StoreOpt, emit, error_line, load_settings, open_store, warn, warn_if_stalled,
)
from ollama_cli.errors import ExitCode, UsageError
from ollama_cli.jobs import Priority
from ollama_cli.timefmt import parse_duration

if TYPE_CHECKING:
    from ollama_cli.store.base import Engine

batch_app = typer.Typer(help="Batches of requests from a JSONL file: submit, list, status, results, wait, cancel.",
                        no_args_is_help=True)


def _batch_name(value: str) -> str:
    return submission.check_text(value, "batch name")


BatchArg = Annotated[str, typer.Argument(metavar="B", help="The batch's name.", callback=_batch_name)]


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise UsageError(f"no such file {path!r}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path!r}: {exc.strerror or exc}") from None


@batch_app.command("submit")
def submit(
    file: Annotated[str, typer.Argument(metavar="FILE", help="JSONL, one request a line; - reads stdin.")],
    model: Annotated[Optional[str], typer.Option(help="The model of lines that name none.")] = None,
    priority: Annotated[Optional[Priority], typer.Option(
        "--priority", "-p", case_sensitive=False,
        help="For every line (default: each line's, else `priority` in the config file, else medium).",
    )] = None,
    name: Annotated[Optional[str], typer.Option(help="The batch's name (default: batch-N).")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Then wait until every job has ended (exit 1 unless all completed).")] = False,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Queue every line of a JSONL file in one step (OpenAI batch lines or native ones).
    A bad line rejects the whole file."""
    settings = load_settings(json_, data_dir, store_, priority=priority)
    default_model = submission.model_name(model) if model is not None else None
    specs = batch.parse(batch.decode(_read(file)), model=default_model, priority=priority,
                        default_priority=settings.priority)
    store = open_store(settings)
    sub = batch.submit(store, specs, store.now(), name=name)
    if not settings.json:
        print(f"batch {sub.batch}: {sub.jobs} jobs queued (ids {sub.first_id}-{sub.last_id})")
    all_completed = _wait(store, sub.batch, None, json_=settings.json)[1] if wait else True
    if settings.json:
        emit(sub._asdict())
    if not all_completed:
        raise typer.Exit(ExitCode.FAILED)


@batch_app.command("status")
def status(
    name: BatchArg, json_: JsonOpt = False, data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Counts of a batch's jobs per status."""
    settings = load_settings(json_, data_dir, store_)
    counts = batch.status(open_store(settings, readonly=True), name)
    if settings.json:
        emit(counts)
    else:
        from ollama_cli import render

        render.mapping(counts)


@batch_app.command("results")
def results(
    name: BatchArg,
    output: Annotated[Optional[Path], typer.Option("--output", help="Write to this file, not stdout.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Accepted for uniformity: the output is JSONL.")] = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """One JSON line per request, keyed by custom_id, as in OpenAI's batch output file."""
    settings = load_settings(json_, data_dir, store_)
    lines = batch.results(open_store(settings, readonly=True), name)
    unfinished = 0

    def write(out: TextIO) -> None:
        nonlocal unfinished
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            unfinished += line["error"] is not None and line["error"]["code"] == "not_finished"

    if output is None:
        write(sys.stdout)
        sys.stdout.flush()
    else:
        _write_whole(output, write)
    if unfinished:
        warn(f"{unfinished} requests of batch {name} have not finished (their lines say not_finished)")


def _write_whole(path: Path, write: Callable[[TextIO], None]) -> None:
    """Write to a private temporary file beside `path`, then rename it over `path`: a
    reader sees the old file or the whole new one, never half of it."""
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    except OSError as exc:
        raise UsageError(f"--output: cannot write in {str(folder)!r}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@batch_app.command("wait")
def wait(
    name: BatchArg,
    timeout: Annotated[Optional[str], typer.Option(help="Give up after this long (exit 1).")] = None,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Block until every job of the batch has ended; exit 0 only if all completed."""
    settings = load_settings(json_, data_dir, store_)
    limit = parse_duration(timeout) if timeout is not None else None
    counts, all_completed = _wait(open_store(settings, readonly=True), name, limit, json_=settings.json)
    if settings.json:
        emit(counts)
    if not all_completed:
        raise typer.Exit(ExitCode.FAILED)


def _wait(store: "Engine", name: str, timeout: float | None, *, json_: bool) -> tuple[dict[str, Any], bool]:
    """Wait, with a progress bar on a terminal, and say how it ended: the batch's counts
    and whether every job completed."""
    with ExitStack() as stack:
        show = _progress_bar(stack) if sys.stderr.isatty() and not json_ else None
        counts, done = batch.wait(store, name, timeout=timeout, on_progress=show,
                                  on_wait=lambda: warn_if_stalled(store))
    if not json_:
        print(f"batch {name}: " + ", ".join(f"{counts[s]} {s}" for s in
                                            ("completed", "failed", "cancelled", "pending", "running") if counts[s]))
    if not done:
        error_line(f"timed out with {counts['pending'] + counts['running']} of {counts['total']} jobs unfinished")
    return counts, done and counts["completed"] == counts["total"]


@batch_app.command("list")
def list_(json_: JsonOpt = False, data_dir: DataDirOpt = None, store_: StoreOpt = None) -> None:
    """Every batch, the newest first, with its jobs' counts per status."""
    settings = load_settings(json_, data_dir, store_)
    rows = batch.listing(open_store(settings, readonly=True))
    if settings.json:
        emit(rows)
    else:
        from ollama_cli import render

        render.batches_table(rows)


@batch_app.command("cancel")
def cancel(
    name: BatchArg, json_: JsonOpt = False, data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Cancel every pending or running job of a batch (a running one is aborted)."""
    settings = load_settings(json_, data_dir, store_)
    store = open_store(settings)
    counts, cancelled = batch.cancel(store, name, store.now())
    if settings.json:
        emit(counts)
    else:
        finished = counts["completed"] + counts["failed"] + counts["cancelled"] - cancelled
        print(f"batch {name}: {cancelled} jobs cancelled" + (f", {finished} had finished" if finished else ""))


def _progress_bar(stack: ExitStack) -> Callable[[int, int], None]:
    """A bar that appears at the first report, which gives the total: the batch is
    walked once, not once more to count it."""
    from ollama_cli import render

    advance: list[Callable[[int], None]] = []

    def show(done: int, total: int) -> None:
        if not advance:
            advance.append(stack.enter_context(render.progress(total)))
        advance[0](done)

    return show


COMMANDS = {"batch": batch_app}
