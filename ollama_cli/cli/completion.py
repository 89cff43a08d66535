"""`completion SHELL`: the shell's completion script, as completions/ ships it."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.
from enum import Enum
from typing import Annotated

import typer


class Shell(str, Enum):
    BASH = "bash"
    ZSH = "zsh"
    FISH = "fish"


# How to install each script; the first line names the shell.
_HEADERS = {
    Shell.BASH: """\
# bash completion for ollama-q.
# Install: ollama-q completion bash > ~/.local/share/bash-completion/completions/ollama-q
#   (or source it from ~/.bashrc: source <(ollama-q completion bash))""",
    Shell.ZSH: """\
#compdef ollama-q
# zsh completion for ollama-q.
# Install: in ~/.zshrc, after `autoload -Uz compinit && compinit`:
#   source <(ollama-q completion zsh)""",
    Shell.FISH: """\
# fish completion for ollama-q.
# Install: ollama-q completion fish > ~/.config/fish/completions/ollama-q.fish""",
}


def completion(shell: Annotated[Shell, typer.Argument(case_sensitive=False, help="bash, zsh or fish.")]) -> None:
    """Print the shell completion script (install it as its first lines say)."""
    from typer.completion import completion_init, get_completion_script

    completion_init()
    script = get_completion_script(prog_name="ollama-q", complete_var="_OLLAMA_Q_COMPLETE", shell=shell.value)
    # Typer's zsh script starts with its own #compdef line: ours comes first.
    body = "\n".join(line for line in script.splitlines() if not line.startswith("#compdef"))
    print(f"{_HEADERS[shell]}\n# Each <TAB> runs `ollama-q` (with _OLLAMA_Q_COMPLETE set) to ask for candidates.\n"
          f"{body.strip()}")


COMMANDS = {"completion": completion}
