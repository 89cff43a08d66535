"""The real CLI in tests: `run_cli` runs the entry point in a new process, where processes
matter; `run_main` calls `main(argv)` in this process, for tables of bad input (8 ms a
case instead of 240). Both answer a CompletedProcess with text stdout and stderr, which
`one_json`, `ok_json` and `assert_one_error` read; `submit_id`, `status_json` and
`jobs_total` are the commands tests run most."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment for a CLI process on `data_dir`, less what would change
    its output: a backend, colour settings, a shell's completion request."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OLLAMA_HOST", "NO_COLOR") and not k.startswith(("_OLLAMA_Q", "_TYPER"))}
    env.update({"OLLAMA_Q_DATA_DIR": str(data_dir), "COLUMNS": "200"}, **extra)
    return env


def run_cli(data_dir: Path, *args: str | bytes, input: str | bytes | None = None, timeout: float = 60,
            **env: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a new process, as a user or script runs it. An argument given as
    bytes reaches it as those bytes (not UTF-8, say)."""
    if isinstance(input, str):
        input = input.encode()
    proc = subprocess.run(
        [sys.executable, "-m", "ollama_cli", *args], input=input if input is not None else b"",
        capture_output=True, timeout=timeout, env=cli_env(data_dir, **env),
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def run_main(*args: str, input: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
    """`main(args)` in this process, as `run_cli` runs it in another: stdin holds `input`
    (never a terminal), stdout and stderr are captured, the code is SystemExit's. The
    environment is this process's (the `data_dir` fixture sets OLLAMA_Q_DATA_DIR). An
    argument that is not UTF-8 is written as Python decodes argv: "\\udcff" for byte 0xff."""
    from ollama_cli.cli import main

    data = input.encode() if isinstance(input, str) else input or b""
    out, err, stdin = io.StringIO(), io.StringIO(), sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main(list(args))
        raise AssertionError("main() returned instead of exiting")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    finally:
        sys.stdin = stdin
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def one_json(res: subprocess.CompletedProcess[str]) -> Any:
    """The one JSON document a --json command printed, and nothing else on stdout."""
    assert res.stdout.endswith("\n"), (res.stdout, res.stderr)
    return json.loads(res.stdout)  # raises on a second document ("Extra data") or on text


def ok_json(res: subprocess.CompletedProcess[str]) -> Any:
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    return one_json(res)


def assert_one_error(res: subprocess.CompletedProcess[str], code: int, *, stdout_empty: bool = True) -> str:
    """The command failed with `code` and said why in exactly one `error:` line."""
    lines = res.stderr.splitlines()
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    if stdout_empty:
        assert res.stdout == "", res.stdout
    return lines[0]


def submit_id(data_dir: Path, *args: str, input: str | bytes | None = None) -> int:
    """`submit ARGS --json` through the real entry point, which must succeed; the new id."""
    return ok_json(run_cli(data_dir, "submit", *args, "--json", input=input))["id"]


def status_json(data_dir: Path, job_id: int) -> dict[str, Any]:
    """The contract's job object, from `status ID --json` through the real entry point."""
    return ok_json(run_cli(data_dir, "status", str(job_id), "--json"))


def jobs_total(data_dir: Path) -> int:
    """How many jobs the store holds, as `info --json` counts them."""
    return ok_json(run_cli(data_dir, "info", "--json"))["jobs"]["total"]
