"""The man page and the shell completions keep up with the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man" / "ollama-q.1"
COMPLETIONS = {shell: ROOT / "completions" / f"ollama-q.{shell}" for shell in ("bash", "zsh", "fish")}


def cli(data_dir: Path, *args: str, **env: str) -> str:
    proc = run_cli(data_dir, *args, **env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def commands_in_help(data_dir: Path, *args: str) -> list[str]:
    """The names under `Commands:` in `ollama-q [ARGS] --help`."""
    section = cli(data_dir, *args, "--help").split("\nCommands:\n", 1)[1]
    return re.findall(r"^  (\S+)", section, flags=re.MULTILINE)


def man_headings() -> set[str]:
    """`submit`, `batch submit`, ... from the `.SS` headings of COMMANDS."""
    found = set()
    for m in re.finditer(r'^\.SS "?([a-z]+)(?: ([a-z]+))?', MAN.read_text(), flags=re.MULTILINE):
        found.add(m.group(1))
        if m.group(2):
            found.add(f"{m.group(1)} {m.group(2)}")
    return found


def test_the_man_page_lists_every_command(data_dir: Path) -> None:
    commands = commands_in_help(data_dir, )
    assert "submit" in commands and "daemon" in commands  # the parse saw the real list
    headings = man_headings()
    assert [c for c in commands if c not in headings] == []
    for group in ("batch", "cache"):
        subs = commands_in_help(data_dir, group)
        assert subs, group
        assert [s for s in subs if f"{group} {s}" not in headings] == []


def test_the_man_page_describes_every_option_of_the_daemon(data_dir: Path) -> None:
    options = set(re.findall(r"^\s+(?:-\w, )?(--[a-z-]+)", cli(data_dir, "daemon", "--help"), flags=re.MULTILINE))
    assert {"--on-finish", "--print-systemd-unit", "--log-level"} <= options  # the parse saw the real list
    section = MAN.read_text().split('.SS "daemon', 1)[1].split("\n.SS ", 1)[0].replace("\\-", "-")
    assert sorted(o for o in options - {"--help", "--json", "--data-dir", "--store"} if o not in section) == []


@pytest.mark.parametrize("shell", sorted(COMPLETIONS))
def test_each_completion_script_is_what_the_cli_generates(data_dir: Path, shell: str) -> None:
    text = COMPLETIONS[shell].read_text()
    assert "ollama-q" in text and "_OLLAMA_Q_COMPLETE" in text
    generated = cli(data_dir, _OLLAMA_Q_COMPLETE=f"source_{shell}")

    def body(script: str) -> list[str]:
        return [line for line in script.splitlines() if line.strip() and not line.startswith("#")]

    assert body(text) == body(generated)


@pytest.mark.parametrize(("words", "expected"), [
    ("ollama-q sub", ["submit"]),
    ("ollama-q batch submit --pri", ["--priority"]),
    ("ollama-q submit m --fall", ["--fallback"]),  # a subcommand's options, despite lazy registration
])
def test_bash_completion_protocol(data_dir: Path, words: str, expected: list[str]) -> None:
    out = cli(data_dir, COMP_WORDS=words, COMP_CWORD=str(len(words.split()) - 1), _OLLAMA_Q_COMPLETE="complete_bash")
    assert out.split() == expected


CONTRACT = ROOT / "docs" / "cli-contract.md"


def contract_commands() -> dict[str, bool]:
    """Command words of the contract's command tables, each with whether it is planned."""
    found: dict[str, bool] = {}
    for row in re.findall(r"^\| ([^|]+) \|", CONTRACT.read_text(), flags=re.MULTILINE):
        planned = row.startswith("(planned)")
        # `pause` / `resume`, `cache stats` / `cache clear`: each backquoted form names a command.
        for first, second in re.findall(r"`([a-z]+)(?: ([a-z]+))?[ `]", row):
            found.setdefault(first, planned)
            if second and first in ("batch", "cache"):
                found.setdefault(f"{first} {second}", planned)
    return found


def test_the_contract_in_docs_describes_every_shipped_command(data_dir: Path) -> None:
    documented = contract_commands()
    shipped = commands_in_help(data_dir, )
    assert "submit" in shipped and "submit" in documented  # both parses saw real lists
    shipped += [f"{g} {s}" for g in ("batch", "cache") for s in commands_in_help(data_dir, g)]
    assert [c for c in shipped if c not in documented] == []
    # A command the CLI ships is not marked planned, and a planned one is not shipped yet.
    assert [c for c in shipped if documented[c]] == []


def test_the_contract_exit_codes_are_the_clis() -> None:
    from ollama_cli.errors import ExitCode

    table = CONTRACT.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = {int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}
    assert codes == {v for k, v in vars(ExitCode).items() if k.isupper()}


def man_section(command: str) -> str:
    """The text of the man page's `.SS` section of `command`, up to the next heading."""
    text = MAN.read_text()
    start = re.search(rf'^\.SS "?{re.escape(command)}\b', text, flags=re.MULTILINE)
    assert start, command
    end = re.compile(r"^\.S[SH] ", flags=re.MULTILINE).search(text, start.end())
    return text[start.end():end.start() if end else len(text)].replace("\\-", "-")


@pytest.mark.parametrize("command", ["submit", "status", "result", "list", "wait", "retry", "daemon"])
def test_the_man_page_describes_every_option_of_a_command(data_dir: Path, command: str) -> None:
    options = set(re.findall(r"(--[a-z][a-z-]+)", cli(data_dir, command, "--help"))) - {"--help", "--json",
                                                                                        "--data-dir", "--store"}
    assert options, command  # the parse saw the real help
    section = man_section(command)
    assert sorted(o for o in options if o not in section) == []
