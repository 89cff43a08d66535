"""Human output: rich tables and panels. rich is imported inside each function so that
commands run with --json never load it. Never imports the store or the backends.

Text that came from outside (job names, models, error messages, what a backend listed)
goes through `_shown`: a `[/]` in a name is not rich markup, an escape sequence never
reaches the terminal, a stored 10 MB error is not printed whole."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ollama_cli.sanitize import one_line

SHOWN_MAX = 500  # characters of one value in a table

_STATUS_STYLE = {
    "pending": "yellow",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
}


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _shown(value: Any) -> str:
    """A value as one line of plain text for a rich cell."""
    from rich.markup import escape

    return escape(one_line(str(value), SHOWN_MAX))


def _when(stamp: str | None) -> str:
    return stamp.replace("T", " ")[:19] if stamp else "-"


def _age(stamp: str | None) -> str:
    """How long ago, in the largest whole unit: 12s, 5m, 3h, 2d."""
    if not stamp:
        return "-"
    from datetime import datetime, timezone

    seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


# The job table (`list`, `wait`). ID and STATUS are always shown whole: scripts cut them out
# of a line with awk. When the table is wider than the terminal (or than 80 columns in a
# pipe), these give way first, the widest first, shortened with an ellipsis down to a least width:
_SHRINK = {"ERROR": 12, "MODEL": 12, "NAME": 8}
# then whole columns go, in this order, until what is left fits.
_DROP = ("POS", "TYPE", "PRIORITY", "TRIES", "AGE", "ERROR", "NAME", "MODEL")
_HEADERS = ("ID", "STATUS", "PRIORITY", "TYPE", "MODEL", "NAME", "POS", "TRIES", "AGE", "ERROR")
_RIGHT = frozenset({"ID", "POS", "TRIES", "AGE"})
_WIDEST = {"STATUS": 9, "PRIORITY": 6, "TYPE": 8}  # the longest value each can take
GAP = 2
# Rows read before the columns are sized; later rows are fit to those widths, so the first
# lines are printed before the last rows are read.
TABLE_BLOCK = 200


def _job_cells(r: dict[str, Any]) -> list[str]:
    error = f"{r['error']['type']}: {r['error']['message']}" if r.get("error") else ""
    return [
        str(r["id"]), r["status"], r["priority"], r["type"], one_line(r["model"], SHOWN_MAX),
        one_line(r.get("name") or "", SHOWN_MAX), str(r["position"] or ""),
        f"{r['attempts']}/{r['max_attempts']}", _age(r["created_at"]), one_line(error, SHOWN_MAX),
    ]


def _fit(natural: dict[str, int], columns: list[str], width: int) -> dict[str, int] | None:
    """Widths of `columns` within `width`, shortening what may be shortened; None if even
    that does not fit."""
    widths = {c: natural[c] for c in columns}
    over = sum(widths.values()) + GAP * (len(columns) - 1) - width
    while over > 0:  # the widest of them gives way, a character at a time
        able = [c for c in _SHRINK if c in widths and widths[c] > _SHRINK[c]]
        if not able:
            return None
        widest = max(able, key=lambda c: widths[c])
        widths[widest] -= 1
        over -= 1
    last = columns[-1]
    if last in _SHRINK:  # the last column takes what is left: it is never padded
        widths[last] += -over
    return widths


def _width(text: str) -> int:
    """Terminal cells `text` takes (a CJK character takes two)."""
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def _cell(text: str, width: int, col: str) -> str:
    size = _width(text)
    if size > width and col in _SHRINK:
        from rich.cells import set_cell_size

        return set_cell_size(text, width - 1) + "…"
    if size >= width:
        return text  # a number or a status is never cut: a longer one pushes the line
    return " " * (width - size) + text if col in _RIGHT else text + " " * (width - size)


def jobs_table(rows: Iterable[dict[str, Any]]) -> int:
    """Print jobs (their JSON form) as a table that fits the terminal, as the rows come;
    how many were printed. Columns that say nothing for these rows make room for those
    that do, unless more rows than TABLE_BLOCK come: those may need them."""
    import itertools
    import sys

    console = _console()
    it = iter(rows)
    block = [_job_cells(r) for r in itertools.islice(it, TABLE_BLOCK)]
    if not block:
        print("no jobs")
        return 0
    following = next(it, None)
    natural = {col: max(len(col), *(_width(c[i]) for c in block)) for i, col in enumerate(_HEADERS)}
    if following is None:
        columns = [col for i, col in enumerate(_HEADERS)
                   if col not in ("NAME", "POS", "ERROR") or any(c[i] for c in block)]
    else:
        columns = list(_HEADERS)
        natural.update((col, max(len(col), n)) for col, n in _WIDEST.items())
    widths = None
    while widths is None and len(columns) > 2:
        widths = _fit(natural, columns, console.width)
        if widths is None:
            columns.remove(next(c for c in _DROP if c in columns))
    widths = widths or {c: natural[c] for c in columns}
    places = [(_HEADERS.index(c), c, widths[c]) for c in columns]
    colours = _status_colours(console)
    out = sys.stdout

    def line(cells: list[str], status: str | None = None) -> str:
        parts = [_cell(cells[i], width, col) for i, col, width in places]
        if status is not None:  # STATUS is the second column, left-aligned: colour the word, not the pad
            parts[1] = colours[status] + parts[1][len(status):]
        return "  ".join(parts).rstrip(" ") + "\n"

    out.write(line(list(_HEADERS)))
    for cells in block:
        out.write(line(cells, cells[1]))
    out.flush()  # the first screen now, not once the last row is read
    printed = len(block)
    for r in itertools.chain([] if following is None else [following], it):
        cells = _job_cells(r)
        out.write(line(cells, cells[1]))
        printed += 1
    out.flush()
    return printed


def _status_colours(console: Any) -> dict[str, str]:
    """Each status as the console shows it: coloured on a terminal (unless NO_COLOR), plain otherwise."""
    from rich.text import Text

    out = {}
    for status, style in _STATUS_STYLE.items():
        with console.capture() as captured:
            console.print(Text(status, style=style), end="")
        out[status] = captured.get()
    return out


def progress(total: int) -> Any:
    """A context manager giving `advance(done)`: a bar with done / total, rate and ETA on
    stderr, for a person waiting on jobs."""
    from contextlib import contextmanager

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, \
        TimeElapsedColumn, TimeRemainingColumn

    @contextmanager
    def bar() -> Any:
        columns = (TextColumn("jobs"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=False) as prog:
            task = prog.add_task("wait", total=total, rate="")

            def advance(done: int) -> None:
                speed = prog.tasks[0].speed
                prog.update(task, completed=done, rate=f"{speed:.1f}/s" if speed else "")

            yield advance

    return bar()


def job_detail(job: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in job.items():
        if key == "status":
            value = f"[{_STATUS_STYLE.get(value, '')}]{value}[/]"
        elif key == "error" and value:
            value = f"[red]{value['type']}[/]: {_shown(value['message'])}"
        elif key == "after":
            value = ", ".join(map(str, value)) or None
        elif value is not None:
            value = _shown(value)
        table.add_row(key, "-" if value is None else str(value))
    _console().print(table)


def mapping(data: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in data.items():
        table.add_row(_shown(key), _shown(value))
    _console().print(table)


def info(data: dict[str, Any]) -> None:
    console = _console()
    jobs = data["jobs"]
    console.print(
        "[bold]jobs[/]    " + "  ".join(
            f"[{_STATUS_STYLE.get(k, '')}]{k} {v}[/]" for k, v in jobs.items() if k != "total"
        ) + f"  total {jobs['total']}"
    )
    d = data["daemon"]
    if d["running"]:
        more = f" (+{len(data['daemons']) - 1} more)" if len(data.get("daemons", [])) > 1 else ""
        console.print(f"[bold]daemon[/]  [green]running[/] pid {d['pid']}, concurrency {d['concurrency']}, "
                      f"{_shown(', '.join(d['hosts']))}, heartbeat {_when(d['last_heartbeat'])}{more}")
    else:
        console.print("[bold]daemon[/]  [yellow]not running[/] (start one: ollama-q daemon)")
    if data["paused"]:
        console.print("[bold]queue[/]   [yellow]paused[/] (ollama-q resume)")
    c = data["cache"]
    console.print(f"[bold]cache[/]   {c['entries']} entries, {c['hits']} hits, {c['misses']} misses")
    console.print(f"[bold]store[/]   {_shown(data['data_dir'])}")
    console.print(f"[bold]version[/] {data['version']}")


def models_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    if not rows:
        _console().print("no models installed (ollama pull MODEL)")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("NAME", "SIZE", "FAMILY", "PARAMS", "QUANT", "LOADED"):
        table.add_column(col, justify="right" if col == "SIZE" else "left")
    for r in rows:
        size = f"{(r['size'] or 0) / 1e9:.1f} GB"
        table.add_row(_shown(r["name"]), size, *(_shown(r.get(k) or "") for k in
                                                 ("family", "parameter_size", "quantization_level")),
                      "[green]yes[/]" if r["loaded"] else "")
    _console().print(table)
