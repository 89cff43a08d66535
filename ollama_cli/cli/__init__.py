"""The command line: parsing, validation, rendering. The only place where errors become
an `error:` line on stderr and an exit code."""

from __future__ import annotations

import errno
import os
import sys

from ollama_cli.errors import ExitCode, OllamaQError

# The reader of stdout went away (`| head -1`): 128 + SIGPIPE, the status git and the shell's
# own tools end with there. Not 1, which says the job or operation failed.
BROKEN_PIPE = 141


def run() -> None:
    """The console entry point (`ollama-q`, `python -m ollama_cli`): the process is the
    command's own, so it sets the umask. Prompts and answers are private: every file any
    command creates is the user's alone."""
    os.umask(0o077)
    main()


def main(argv: list[str] | None = None) -> None:
    """Run one command and exit (SystemExit) with its code. It leaves the umask alone, so
    a test may call it in process."""
    import typer

    from ollama_cli.cli.app import build

    args = sys.argv[1:] if argv is None else argv
    try:
        code = build(args)(args=args, prog_name="ollama-q", standalone_mode=False)
    except SystemExit as exc:
        # Typer turns EPIPE into exit 1 (a failed job, to a script): exit as a closed pipe.
        cause = exc.__context__
        if isinstance(cause, OSError) and cause.errno == errno.EPIPE:
            _closed_pipe()
        raise
    except OllamaQError as exc:
        _fail(exc.message, exc.exit_code)
    except typer.TyperException as exc:  # click's usage errors: one line, exit 2
        if type(exc).__name__ == "NoArgsIsHelpError":  # `ollama-q`, `ollama-q batch`: the help
            print(exc.format_message())
            sys.exit(ExitCode.OK)
        _fail(exc.format_message(), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except BrokenPipeError:
        _closed_pipe()
    sys.exit(code if isinstance(code, int) else ExitCode.OK)


def _closed_pipe() -> None:
    # Nothing more can reach the reader; stdout goes to /dev/null so that the flush at
    # exit does not fail again.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(BROKEN_PIPE)


def _fail(message: str, code: int) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"error: {first}", file=sys.stderr)
    sys.exit(code)
