"""`cache stats` and `cache clear`: the result cache."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.

import typer

from ollama_cli.cli.app import DataDirOpt, JsonOpt, StoreOpt, emit, load_settings, open_store


cache_app = typer.Typer(help="The result cache: stats, clear.", no_args_is_help=True)


@cache_app.command("stats")
def cache_stats(json_: JsonOpt = False, data_dir: DataDirOpt = None, store_: StoreOpt = None) -> None:
    """Entries, hits, misses and bytes of the result cache."""
    settings = load_settings(json_, data_dir, store_)
    data = open_store(settings, readonly=True).cache_stats()
    if settings.json:
        emit(data)
    else:
        from ollama_cli import render

        render.mapping(data)


@cache_app.command("clear")
def cache_clear(json_: JsonOpt = False, data_dir: DataDirOpt = None, store_: StoreOpt = None) -> None:
    """Empty the result cache."""
    settings = load_settings(json_, data_dir, store_)
    n = open_store(settings).cache_clear()
    if settings.json:
        emit({"cleared": n})
    else:
        print(f"cleared {n} cache entries")


COMMANDS = {"cache": cache_app}
