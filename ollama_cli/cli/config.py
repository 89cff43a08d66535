"""`config`: the effective settings, and where each comes from."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.

from ollama_cli.cli.app import DataDirOpt, JsonOpt, StoreOpt, emit, load_settings


def config(json_: JsonOpt = False, data_dir: DataDirOpt = None, store_: StoreOpt = None) -> None:
    """Show each setting's value and its source: a flag, a variable, the config file
    (OLLAMA_Q_CONFIG, else config.toml in the user's config folder) or the default."""
    from ollama_cli.settings import config_path, shown

    settings = load_settings(json_, data_dir, store_)
    path = config_path()
    values = shown(settings)
    if settings.json:
        emit({"path": str(path), "values": values})
    else:
        from ollama_cli.render import insight

        insight.settings_table({"path": str(path), "exists": path.is_file(), "values": values})


COMMANDS = {"config": config}
