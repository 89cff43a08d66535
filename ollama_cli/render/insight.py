"""Human output of what `insight/` draws from the store: one frame of `top`, `stats` with its
advice, and `config`'s settings. Apart from the tables of jobs, so that each module has one
kind of view; the shared helpers (the console, `_shown`, times) are the package's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ollama_cli.render import _STATUS_STYLE, _console, _shown, _when, span

if TYPE_CHECKING:
    from ollama_cli.insight.live import Frame

_TOP_RIGHT = frozenset({"ID", "ELAPSED", "TOKENS", "TOK/S", "READY", "IN USE", "INSTALLED"})


def top(frame: Frame, running_total: int) -> Any:
    """One frame of `top`: a header of counts and rates, then tables of the running jobs (the
    first of `running_total`), the ready queue per priority and model, and the backends."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from ollama_cli.insight.live import RATE_MINUTES
    from ollama_cli.timefmt import local_time

    def table(title: str, *columns: str) -> Any:
        t = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False,
                  show_edge=False, header_style="dim")
        for column in columns:
            t.add_column(column, justify="right" if column in _TOP_RIGHT else "left",
                         overflow="ellipsis", no_wrap=True)
        return t

    state = "[yellow]paused[/]" if frame.paused else "[green]taking jobs[/]"
    daemons = f"{frame.daemons} daemon{'s' if frame.daemons != 1 else ''}" if frame.daemons else \
        "[yellow]no daemon[/]"
    counts = "  ".join(f"[{_STATUS_STYLE.get(k, '')}]{k} {v:,}[/]" for k, v in frame.counts.items() if k != "total")
    rate = "—" if frame.per_minute is None else f"{frame.per_minute:,.1f}/min"
    eta = "none pending" if not frame.counts["pending"] else "—" if frame.eta is None else span(frame.eta)
    head = Text.from_markup(
        f"[bold]ollama-q top[/]  {local_time(frame.at)}  queue {state}  {daemons}\n"
        f"jobs  {counts}\n"
        f"finished  {rate} (last {RATE_MINUTES} min)  {frame.finished_last_hour:,} in the last hour  "
        f"ETA of the queue {eta}")

    running = table(f"running {running_total:,}" + (f" (first {len(frame.running)})"
                                                     if running_total > len(frame.running) else ""),
                    "ID", "MODEL", "BACKEND", "ELAPSED", "TOKENS", "TOK/S")
    for r in frame.running:
        running.add_row(str(r.id), _shown(r.model), _shown(r.backend), span(r.elapsed),
                        "—" if r.tokens is None else f"{r.tokens:,}",
                        "—" if r.tokens_per_second is None else f"{r.tokens_per_second:,.1f}")
    depth = table("ready per priority and model", "PRIORITY", "MODEL", "READY")
    for priority, model, n in frame.depth:
        depth.add_row(priority.value, _shown(model), f"{n:,}")
    backends = table("backends", "BACKEND", "UP", "IN USE", "LOADED", "INSTALLED")
    for b in frame.backends:
        backends.add_row(_shown(b.url), "[green]up[/]" if b.up else "[red]down[/]", f"{b.in_use}/{b.slots}",
                         _shown(", ".join(b.loaded) or "—"),
                         "?" if b.installed is None else str(len(b.installed)))
    parts: list[Any] = [head, Text()]
    for section, empty in ((running, "no job running"), (depth, "no job ready"),
                           (backends, "no backend reported (no daemon running)")):
        parts += [section if section.row_count else Text.from_markup(f"[bold]{section.title}[/]  [dim]{empty}[/]"),
                  Text()]
    return Group(*parts[:-1])


def stats(data: dict[str, Any]) -> None:
    """`stats`: one row per model and type, then the advice. Percentiles are estimates from
    the histogram buckets (`~`)."""
    from rich.table import Table

    console = _console()
    if not data["models"]:
        console.print("no finished jobs" + (" since " + _when(data["since"]) if data["since"] else ""))
    else:
        # P50, P95: latency; WAIT: median queue wait; HITS: answered from the cache.
        table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 0))
        for col in ("MODEL", "TYPE", "JOBS", "OK%", "P50", "P95", "WAIT", "LOADS", "TOK/S", "HITS", "SCORE"):
            table.add_column(col, justify="left" if col in ("MODEL", "TYPE") else "right",
                             no_wrap=col != "MODEL", overflow="fold")
        for r in data["models"]:
            rate, fb = r["success_rate"], r["feedback"]
            table.add_row(
                _shown(r["model"]), r["type"], str(r["jobs"]), "-" if rate is None else f"{rate:.0%}",
                *(_secs(r[k][p]) for k, p in (("latency_s", "p50"), ("latency_s", "p95"), ("queue_wait_s", "p50"))),
                str(r["loads"]), "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.1f}",
                str(r["cache_hits"]), "-" if fb["mean"] is None else f"{fb['mean']:+.2f} ({fb['count']})")
        console.print(table)
        categories = [(r["model"], name, c) for r in data["models"] for name, c in r["categories"].items()]
        if categories:
            table = Table(box=None, header_style="bold", pad_edge=False)
            for col in ("CATEGORY", "MODEL", "JOBS", "SCORE"):
                table.add_column(col, justify="right" if col in ("JOBS", "SCORE") else "left", no_wrap=True)
            for model, name, c in sorted(categories, key=lambda x: (x[1], x[0])):
                score = "-" if c["feedback_mean"] is None else f"{c['feedback_mean']:+.2f} ({c['feedback_count']})"
                table.add_row(_shown(name), _shown(model), str(c["jobs"]), score)
            console.print()
            console.print(table)
    for rec in data["recommendations"]:
        console.print(f"* {_shown(rec['message'])}", soft_wrap=True)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"~{span(value)}" if value >= 60 else f"~{value:.2f}s"


def settings_table(data: dict[str, Any]) -> None:
    """`config`: the file, then each setting with its value and where the value came from."""
    from rich.table import Table

    print(f"config file: {data['path']}" + ("" if data["exists"] else " (none)"))  # whole, never wrapped
    console = _console()
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("KEY", no_wrap=True, min_width=max(map(len, data["values"]), default=3))
    table.add_column("VALUE", overflow="fold")
    table.add_column("SOURCE", no_wrap=True, min_width=7)
    for key, entry in data["values"].items():
        value = entry["value"]
        text = "-" if value is None else str(value).lower() if isinstance(value, bool) else \
            ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else \
            ", ".join(map(str, value)) if isinstance(value, list) else f"{value:g}" if isinstance(value, float) \
            else str(value)
        table.add_row(key, _shown(text), entry["source"])
    console.print(table)
