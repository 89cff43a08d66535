"""`top`: the queue live, redrawn about twice a second until `q` or Ctrl-C; `--once` (or a
stdout that is not a terminal) prints one frame.

Each frame is one `insight.live.frame`: short read transactions, none held between frames, so
`top` never keeps a writer waiting. It is drawn with rich's Live on the alternate screen, once
per frame from this thread (auto-refresh off: it would redraw the same frame from a thread of
its own). Rich reads no keys (Textualize/rich#3248): the terminal is put in cbreak mode
(keys unechoed, one at a time, Ctrl-C still a signal) and restored however `top` ends."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run; real objects come from bytecode for free.

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from ollama_cli.cli.app import DataDirOpt, StoreOpt, load_settings, open_store
from ollama_cli.errors import StoreUnavailable, UsageError

INTERVAL = 0.5  # seconds between frames: about twice a second
INTERVAL_RANGE = (0.1, 60.0)
ONCE_ROWS = 20  # running jobs shown in a frame printed to a pipe, which has no height
QUIT_KEYS = frozenset("qQ")


def top(
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit (also when stdout is not a terminal).")] = False,
    interval: Annotated[float, typer.Option(
        "--interval", "-d", metavar="SECONDS", help="Seconds between frames (0.1 to 60).")] = INTERVAL,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """The queue live: jobs per status, throughput and ETA, running jobs, the queue per model,
    backends. q or Ctrl-C quits."""
    settings = load_settings(False, data_dir, store_)
    if settings.json:  # `ollama-q --json top`
        raise UsageError("top has no JSON form: `ollama-q info --json` and `list --json` have the same facts")
    low, high = INTERVAL_RANGE
    if not low <= interval <= high:  # also NaN
        raise UsageError(f"--interval must be between {low:g} and {high:g} seconds, not {interval:g}")
    from rich.console import Console

    from ollama_cli.insight import live

    store = open_store(settings, readonly=True)
    console = Console(highlight=False)

    def draw(rows: int) -> Any:
        from ollama_cli.render import insight

        frame = live.frame(store, limit=rows)
        return insight.top(frame, frame.counts["running"])

    if once or not console.is_terminal:
        console.print(draw(ONCE_ROWS if not console.is_terminal else _rows(console.height)))
        return
    try:
        _run(console, lambda: draw(_rows(console.height)), interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one leaves a live view: no error


def _rows(height: int) -> int:
    """Running jobs that fit with the rest of a frame: about half the screen."""
    return max(3, height // 2 - 4)


def _run(console: Any, draw: Callable[[], Any], interval: float) -> None:
    from rich.live import Live

    last = draw()
    with _keys() as key, Live(last, console=console, screen=True, auto_refresh=False,
                              redirect_stdout=False, redirect_stderr=False) as view:
        due = time.monotonic() + interval
        while True:
            if key(max(0.0, due - time.monotonic())) in QUIT_KEYS:
                return
            if time.monotonic() >= due:  # a key other than q does not hurry the next frame
                shown, last = frame_or_stale(draw, last)
                view.update(shown, refresh=True)
                due = time.monotonic() + interval


def frame_or_stale(draw: Callable[[], Any], last: Any) -> tuple[Any, Any]:
    """What to show now, and the last good frame: a new frame; or, while the store cannot be
    reached (a PostgreSQL server restarting), the last frame under a line that says so, and
    the next frame tries again."""
    try:
        frame = draw()
    except StoreUnavailable as exc:
        from rich.console import Group
        from rich.text import Text

        return Group(Text(f"stale: {exc.message}; trying again", style="bold red"), last), last
    return frame, frame


@contextmanager
def _keys() -> Iterator[Callable[[float], str]]:
    """A reader of single key presses from the terminal (waiting at most its argument in
    seconds; "" for none), with the terminal as it was restored on the way out, however it
    goes. Without a terminal on stdin it only waits."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):  # no stdin, or one that is no file
        fd = -1
    if fd < 0 or not os.isatty(fd):
        def wait(timeout: float) -> str:
            time.sleep(timeout)
            return ""

        yield wait
        return
    import select
    import termios
    import tty

    saved = termios.tcgetattr(fd)

    def read(timeout: float) -> str:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="replace") if ready else ""

    try:
        tty.setcbreak(fd)
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


COMMANDS = {"top": top}
