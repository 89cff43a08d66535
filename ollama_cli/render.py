"""Human output: rich tables and panels. rich is imported inside each function so that
commands run with --json never load it. Never imports the store or the backends.

Text that came from outside (job names, models, error messages, what a backend listed)
goes through `_shown`: a `[/]` in a name is not rich markup, an escape sequence never
reaches the terminal, a stored 10 MB error is not printed whole."""

from __future__ import annotations

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


def jobs_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    if not rows:
        _console().print("no jobs")
        return
    cells = []
    for r in rows:
        status = r["status"]
        error = _shown(f"{r['error']['type']}: {r['error']['message']}") if r.get("error") else ""
        cells.append([
            str(r["id"]), status, r["priority"], r["type"], _shown(r["model"]), _shown(r.get("name") or ""),
            str(r["position"] or ""), f"{r['attempts']}/{r['max_attempts']}", _age(r["created_at"]), error,
        ])
    table = Table(box=None, header_style="bold", pad_edge=False)
    headers = ("ID", "STATUS", "PRIORITY", "TYPE", "MODEL", "NAME", "POS", "TRIES", "AGE", "ERROR")
    # Columns that say nothing for these rows make room for those that do.
    shown = [i for i, col in enumerate(headers)
             if col not in ("NAME", "POS", "ERROR") or any(c[i] for c in cells)]
    for i in shown:
        col = headers[i]
        if col == "ERROR":  # the one column that gives way on a narrow terminal
            table.add_column(col, no_wrap=True, overflow="ellipsis", ratio=1)
        else:
            widest = max([len(col)] + [len(c[i]) for c in cells])
            table.add_column(col, justify="right" if col in ("ID", "POS", "TRIES", "AGE") else "left",
                             no_wrap=True, min_width=min(widest, 32), max_width=32)
    for row, r in zip(cells, rows):
        row[1] = f"[{_STATUS_STYLE.get(r['status'], '')}]{row[1]}[/]"
        table.add_row(*(row[i] for i in shown))
    _console().print(table)


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
    console.print(f"[bold]store[/]   {_shown(data['store']['location'])} ({data['store']['engine']})")
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
