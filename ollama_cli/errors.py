"""The error hierarchy. Each error carries its user-facing message and its exit code;
only the CLI turns them into an `error:` line and a process exit status."""

from __future__ import annotations


class ExitCode:
    """The process's exit statuses: plain ints, not an IntEnum, which would cost every command
    0.65M instructions to define."""

    OK = 0
    FAILED = 1  # the job or operation failed, or was not found
    USAGE = 2  # usage or validation error: nothing was written
    BACKEND = 3  # the backend could not be reached or refused the request


class OllamaQError(Exception):
    exit_code: int = ExitCode.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(OllamaQError):
    """Bad input: raised before anything is written."""

    exit_code = ExitCode.USAGE


class NotFound(OllamaQError):
    exit_code = ExitCode.FAILED


class OperationFailed(OllamaQError):
    exit_code = ExitCode.FAILED


class StoreWriteFailed(OperationFailed):
    """A commit the disk refused (full, or an I/O error): it did not land, and the same
    write may succeed later, so a daemon backs off and tries again."""


class StoreUnavailable(StoreWriteFailed):
    """The store's server could not be reached (restarting, the network cut): nothing was
    read or written, and the same call may succeed later. A write, like one the disk
    refused, so a daemon backs off and tries it again."""


class StoreLockLost(OperationFailed):
    """lock.mdb was deleted or replaced while this process had the store open. Its writer
    lock is no longer the one other processes take, so this process must not write again."""

    def __init__(self, path: object) -> None:
        super().__init__(f"{path} was deleted or replaced while this process had the store open: "
                         "it stops before a write could corrupt the store; start it again "
                         "(never delete lock.mdb while ollama-q runs)")


class BackendUnavailable(OllamaQError):
    """A command that talks to the backend directly could not reach it, or was refused."""

    exit_code = ExitCode.BACKEND


class CorruptRecord(OllamaQError):
    """Stored bytes that do not decode into a record of a known schema."""

    exit_code = ExitCode.FAILED

    def __init__(self, key: int | bytes, reason: str) -> None:
        super().__init__(f"record {key!r} is corrupt: {reason}")
        self.key = key
        self.reason = reason
