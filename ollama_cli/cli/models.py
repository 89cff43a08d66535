"""`models`: what each backend has installed and loaded."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.

import typer

from ollama_cli.cli.app import DataDirOpt, HostOpt, JsonOpt, StoreOpt, emit, error_line, load_settings
from ollama_cli.errors import ExitCode
from ollama_cli.settings.hosts import Backend


def models(
    host: HostOpt = None, json_: JsonOpt = False, data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """The models of each backend, and which are loaded."""
    import asyncio

    from ollama_cli.clients import client_for
    from ollama_cli.clients.base import BackendError

    settings = load_settings(json_, data_dir, store_, hosts=host)
    backends = settings.backends

    async def listing(backend: Backend) -> list[dict]:
        client = client_for(backend)
        try:
            return [{**m, "host": backend.label} for m in await client.models()]
        finally:
            await client.aclose()

    async def every_listing() -> list:
        return await asyncio.gather(*map(listing, backends), return_exceptions=True)

    rows, failures = [], []
    for backend, got in zip(backends, asyncio.run(every_listing())):
        if isinstance(got, BackendError):
            failures.append(f"{backend.label}: {got.message}")
        elif isinstance(got, BaseException):
            raise got
        else:
            rows += got
    if rows or not failures:
        if settings.json:
            emit(rows)
        else:
            from ollama_cli import render

            render.models_table(rows)
    for failure in failures:  # what the others listed is printed all the same
        error_line(failure)
    if failures:
        raise typer.Exit(ExitCode.BACKEND)


COMMANDS = {"models": models}
