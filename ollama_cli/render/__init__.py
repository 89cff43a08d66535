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


def _epoch(stamp: str) -> float:
    """Seconds since the epoch of a time of the JSON form (`2026-11-23T08:40:00.123Z`)."""
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _when(stamp: str | None) -> str:
    """A time of the JSON form (UTC) as people read it: local, with its offset."""
    if not stamp:
        return "-"
    from ollama_cli.timefmt import local_time

    return local_time(_epoch(stamp))


def _seconds_since(stamp: str, now: float | None = None) -> float:
    """Seconds from `stamp` to `now` (the store's clock; this host's when not given)."""
    import time

    return (time.time() if now is None else now) - _epoch(stamp)


def _age(stamp: str | None, now: float | None = None) -> str:
    """How long ago, in the largest whole unit: 12s, 5m, 3h, 2d."""
    if not stamp:
        return "-"
    seconds = _seconds_since(stamp, now)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def span(seconds: float) -> str:
    """A duration for people: 0.8s, 12s, 3m05s, 2h10m, 3d04h."""
    if seconds < 10:
        return f"{max(0.0, seconds):.1f}s"
    whole = int(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if whole >= size:
            return f"{whole // size}{unit}{whole % size // small_size:02d}{small}"
    return f"{whole}s"


def human_bytes(size: int) -> str:
    """A size as `ollama list` prints it (decimal units): 45 MB, 2.0 GB, 812 B."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            value = size / scale
            return f"{int(value)} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


# The job table (`list`, `wait`). ID and STATUS are always shown whole: scripts cut them out
# of a line with awk. When the table is wider than the terminal (or than 80 columns in a
# pipe), these give way first, the widest first, shortened with an ellipsis down to widths
# that still say something;
_ROOMY = {"ERROR": 24, "MODEL": 16, "NAME": 10}
# then these columns go, in this order;
_OPTIONAL = ("POS", "TYPE", "PRIORITY", "TRIES", "AGE")
# then the first ones are shortened further, and at last go too, in this order.
_LEAST = {"ERROR": 12, "MODEL": 12, "NAME": 8}
_LAST_RESORT = ("ERROR", "NAME", "MODEL")
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


def _layout(natural: dict[str, int], columns: list[str], width: int) -> tuple[list[str], dict[str, int]]:
    """The columns to show within `width`, and their widths (the rules above)."""
    columns = list(columns)
    for least, droppable in ((_ROOMY, _OPTIONAL), (_LEAST, _LAST_RESORT)):
        while True:
            widths = _fit(natural, columns, width, least)
            if widths is not None:
                return columns, widths
            drop = next((c for c in droppable if c in columns), None)
            if drop is None:
                break
            columns.remove(drop)
    return columns, {c: natural[c] for c in columns}  # ID and STATUS, however narrow the terminal


def _fit(natural: dict[str, int], columns: list[str], width: int, least: dict[str, int]) -> dict[str, int] | None:
    """Widths of `columns` within `width`, shortening what may be shortened down to `least`;
    None if even that does not fit."""
    widths = {c: natural[c] for c in columns}
    over = sum(widths.values()) + GAP * (len(columns) - 1) - width
    while over > 0:  # the widest of them gives way, a character at a time
        able = [c for c in least if c in widths and widths[c] > least[c]]
        if not able:
            return None
        widest = max(able, key=lambda c: widths[c])
        widths[widest] -= 1
        over -= 1
    last = columns[-1]
    if last in _LEAST:  # the last column takes what is left: it is never padded
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
    if size > width and col in _LEAST:
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
    columns, widths = _layout(natural, columns, console.width)
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


_TIMES = frozenset({"run_at", "created_at", "started_at", "finished_at"})


def job_detail(job: dict[str, Any]) -> None:
    """One job for people: the keys of its JSON form, with values as people read them (local
    times, yes and no), and how long it ran."""
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in job.items():
        if key == "status":
            shown = f"[{_STATUS_STYLE.get(value, '')}]{value}[/]"
        elif key == "error" and value:
            shown = f"[red]{value['type']}[/]: {_shown(value['message'])}"
        elif key in ("after", "fallbacks"):
            shown = ", ".join(map(str, value)) or "-"
        elif key == "cache" and value:
            source = "a job since cleaned" if value["source"] is None else f"job {value['source']}"
            shown = f"{value['kind']}, the answer of {source}, similarity {value['similarity']:.3f}"
        elif key == "feedback" and value:
            shown = f"{value['score']:+g}" + (f": {_shown(value['reason'])}" if value["reason"] else "")
        elif key == "route" and value:
            shown = _route(value)
        elif key in _TIMES:
            shown = _when(value)
        elif isinstance(value, bool):
            shown = "yes" if value else "no"
        else:
            shown = "-" if value is None else _shown(value)
        table.add_row(key, shown)
        if key == "finished_at":
            table.add_row("run time", _run_time(job))
    _console().print(table)


def _route(route: dict[str, Any]) -> str:
    """How `submit auto` chose the model, for people."""
    if route["rule"] == "best":
        return f"by its ratings (lower bound {route['lower_bound']:.2f} of {route['rated']} rated jobs)"
    return {"default": "routing.default_model (no model had enough rated jobs)",
            "explore": "at random (routing.explore)"}.get(route["rule"], route["rule"])


def _run_time(job: dict[str, Any]) -> str:
    started, finished = job.get("started_at"), job.get("finished_at")
    if not started:
        return "-"
    if finished:
        took = span(_epoch(finished) - _epoch(started))
        return f"{took} (its last attempt)" if job.get("attempts", 0) > 1 else took
    return f"{span(_seconds_since(started))} so far"


def job_input(kind: str, request: dict[str, Any]) -> None:
    """What a job was asked, as it will be sent: the prompt, the messages or the inputs, then
    the rest of the request as JSON. Prompts are the user's own text: printed whole, line
    breaks kept, other control characters shown as spaces."""
    import json

    from ollama_cli.sanitize import printable

    console = _console()
    rest = dict(request)
    if kind == "chat":
        for message in rest.pop("messages", None) or []:
            if isinstance(message, dict):
                console.print(f"[bold]{_shown(message.get('role'))}:[/] ", end="")
                console.print(printable(str(message.get("content") or "")), markup=False, highlight=False)
    elif kind == "embed":
        inputs = rest.pop("input", None)
        for n, text in enumerate([inputs] if isinstance(inputs, str) else inputs or [], start=1):
            console.print(f"[bold]input {n}:[/] ", end="")
            console.print(printable(str(text)), markup=False, highlight=False)
    else:
        if "system" in rest:
            console.print("[bold]system:[/] ", end="")
            console.print(printable(str(rest.pop("system"))), markup=False, highlight=False)
        console.print("[bold]prompt:[/] ", end="")
        console.print(printable(str(rest.pop("prompt", "") or "")), markup=False, highlight=False)
    for key, value in rest.items():
        console.print(f"[bold]{_shown(key)}:[/] ", end="")
        console.print(printable(json.dumps(value, ensure_ascii=False)), markup=False, highlight=False)


def mapping(data: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in data.items():
        table.add_row(_shown(key), _shown(value))
    _console().print(table)


def info(data: dict[str, Any], now: float) -> None:
    """The queue at a glance, a section a line; a section too long for the terminal goes on
    to the next line between two items, never inside one. `now`: the store's clock, that
    heartbeats were written with (on a shared store, not this host's)."""
    console = _console()
    jobs = data["jobs"]
    _section(console, "jobs", [(f"{k} {v}", f"[{_STATUS_STYLE.get(k, '')}]{k} {v}[/]")
                               for k, v in jobs.items() if k != "total"] + [f"total {jobs['total']}"])
    d = data["daemon"]
    if d["running"]:
        more = len(data.get("daemons", [])) - 1
        _section(console, "daemon", [
            ("running", "[green]running[/]"), f"pid {d['pid']}", f"concurrency {d['concurrency']}",
            *((h, _shown(h)) for h in d["hosts"]), f"heartbeat {_age(d['last_heartbeat'], now)} ago",
            f"since {_when(d['started_at'])}", *([f"+{more} more"] if more > 0 else []),
        ])
    else:
        _section(console, "daemon", [("not running", "[yellow]not running[/]"), "(start one: ollama-q daemon)"])
    if data["paused"]:
        _section(console, "queue", [("paused", "[yellow]paused[/]"), "(ollama-q resume)"])
    c = data["cache"]
    _section(console, "cache", [f"{c['entries']} entries", f"{c['hits']} hits", f"{c['misses']} misses"])
    store = data["store"]
    _section(console, "store", [(store["location"], _shown(store["location"])), f"({store['engine']})"])
    _section(console, "version", [str(data["version"])])


def _section(console: Any, label: str, items: list[str | tuple[str, str]]) -> None:
    """`label` and its items two spaces apart, on as many lines as the console's width needs,
    the later ones indented under the first. An item is text without markup, or (its plain
    text, the same with markup)."""
    indent = 9
    lines: list[list[str]] = [[]]
    used = indent
    for item in items:
        plain, markup = item if isinstance(item, tuple) else (item, item)
        need = len(plain) + (2 if lines[-1] else 0)
        if lines[-1] and used + need > console.width:
            lines.append([])
            used, need = indent, len(plain)
        lines[-1].append(markup)
        used += need
    for n, parts in enumerate(lines):
        head = f"[bold]{label:<{indent - 1}}[/] " if n == 0 else " " * indent
        console.print(head + "  ".join(parts), soft_wrap=True)


def batches_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    if not rows:
        _console().print("no batches")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("BATCH", no_wrap=True, overflow="ellipsis")
    for status in ("total", "pending", "running", "completed", "failed", "cancelled"):
        table.add_column(status.upper(), justify="right", no_wrap=True)
    for r in rows:
        table.add_row(_shown(r["batch"]), *(str(r[k]) for k in ("total", "pending", "running", "completed",
                                                                 "failed", "cancelled")))
    _console().print(table)


def models_table(rows: list[dict[str, Any]]) -> None:
    """Models as `ollama list` shows them; with a HOST column when they come from several backends."""
    from rich.table import Table

    if not rows:
        _console().print("no models installed (ollama pull MODEL)")
        return
    several = len({r.get("host") for r in rows}) > 1
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("NAME", *(("HOST",) if several else ()), "SIZE", "FAMILY", "PARAMS", "QUANT", "LOADED"):
        table.add_column(col, justify="right" if col == "SIZE" else "left", no_wrap=True,
                         overflow="ellipsis")
    for r in rows:
        size = human_bytes(r["size"]) if isinstance(r.get("size"), int) else "-"
        table.add_row(_shown(r["name"]), *((_shown(r["host"]),) if several else ()), size,
                      *(_shown(r.get(k) or "") for k in ("family", "parameter_size", "quantization_level")),
                      "[green]yes[/]" if r["loaded"] else "")
    _console().print(table)


def cache_table(rows: list[dict[str, Any]]) -> None:
    """Cache entries (their `cache list --json` form), newest first; the key shortened as git
    shortens commits."""
    from rich.table import Table

    if not rows:
        _console().print("no cache entries")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("KEY", "MODEL", "TYPE", "CREATED", "LAST HIT", "HITS", "SIZE", "SOURCE"):
        table.add_column(col, justify="right" if col in ("HITS", "SIZE", "SOURCE") else "left", no_wrap=True,
                         overflow="ellipsis")
    for r in rows:
        table.add_row(r["key"][:12], _shown(r["model"]), _shown(r["type"]), _age(r["created_at"]),
                      _age(r["last_hit_at"]) if r["hits"] else "-", str(r["hits"]), human_bytes(r["bytes"]),
                      "-" if r["source"] is None else str(r["source"]))
    _console().print(table)
