"""`cache stats`, `cache list` and `cache clear`: the result cache."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.

from typing import Annotated, Any, Optional

import typer

from ollama_cli.cli.app import DataDirOpt, JsonOpt, StoreOpt, emit, load_settings, open_store


cache_app = typer.Typer(help="The result cache: stats, list, clear.", no_args_is_help=True)

DEFAULT_LIMIT = 50  # entries in the table unless --limit says otherwise
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Only this model's entries.")]


@cache_app.command("stats")
def cache_stats(json_: JsonOpt = False, data_dir: DataDirOpt = None, store_: StoreOpt = None) -> None:
    """Entries, hits, misses and bytes of the result cache, its semantic part, TTL and bound."""
    settings = load_settings(json_, data_dir, store_)
    data = open_store(settings, readonly=True).cache_stats()
    data["ttl"], data["max_bytes"] = settings.cache.ttl, settings.cache.max_bytes
    if settings.json:
        emit(data)
    else:
        from ollama_cli import render

        semantic = data.pop("semantic")
        data["semantic entries"], data["semantic hits"] = semantic["entries"], semantic["hits"]
        render.mapping(data)


@cache_app.command("list")
def cache_list(
    limit: Annotated[Optional[int], typer.Option(
        help=f"At most N entries; 0 for all (default: {DEFAULT_LIMIT} in the table, all with --json).", min=0)] = None,
    model: ModelOpt = None,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """The cache's entries, newest first."""
    from ollama_cli.timefmt import format_time

    settings = load_settings(json_, data_dir, store_)
    name = _model(model)
    cap = (limit or None) if limit is not None else None if settings.json else DEFAULT_LIMIT
    rows: list[dict[str, Any]] = open_store(settings, readonly=True).cache_list(limit=cap, model=name)
    for row in rows:
        row["created_at"], row["last_hit_at"] = format_time(row["created_at"]), format_time(row["last_hit_at"])
    if settings.json:
        emit(rows)
    else:
        from ollama_cli import render

        render.cache_table(rows)


@cache_app.command("clear")
def cache_clear(
    model: ModelOpt = None,
    older_than: Annotated[Optional[str], typer.Option(help="Only entries stored longer ago than this, e.g. 7d.")] = None,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Empty the result cache, or remove some of its entries."""
    from ollama_cli.timefmt import parse_duration

    settings = load_settings(json_, data_dir, store_)
    name = _model(model)
    age = parse_duration(older_than) if older_than is not None else None
    store = open_store(settings)
    n = store.cache_clear(store.now(), model=name, older_than=age)
    if settings.json:
        emit({"cleared": n})
    else:
        print(f"cleared {n} cache entries")


def _model(model: Optional[str]) -> Optional[str]:
    from ollama_cli import submission

    return submission.model_name(model) if model is not None else None


COMMANDS = {"cache": cache_app}
