"""The daemon as a systemd service: the user unit `daemon --print-systemd-unit` prints, and
the two notifications of `Type=notify` (sd_notify(3)'s protocol: one datagram to the
socket in NOTIFY_SOCKET, a leading `@` naming the abstract namespace; no libsystemd)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ollama_cli.daemon import events

# What a word of ExecStart= may hold unquoted; anything else goes in double quotes.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_-.,:=+@")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
STOP_MARGIN = 10  # seconds TimeoutStopSec= leaves past the daemon's own grace before SIGKILL


def notify(message: str, address: str) -> bool:
    """Send `message` (`READY=1`...) to the service manager at `address`; whether it went.
    A manager that is gone must not stop the daemon."""
    import socket

    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


class Notifier:
    """A subscriber of the daemon's events: READY=1 once it serves (the first look at its
    backends is done), STOPPING=1 when it begins to stop."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._stopping = False

    def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.DaemonStarted):
            notify("READY=1", self.address)
        elif isinstance(event, (events.DaemonStopping, events.DaemonDrained)) and not self._stopping:
            self._stopping = True
            notify("STOPPING=1", self.address)


def _escaped(text: str) -> str:
    """Inside double quotes: C escapes, and `%` doubled (systemd's specifiers)."""
    return "".join(_ESCAPES.get(c, c) for c in text).replace("%", "%%")


def exec_word(word: str) -> str:
    """One word of an ExecStart= line, read back by systemd as `word` exactly: `$` doubled
    (no variable expansion), `%` doubled (no specifier), quoted unless plain."""
    if word and all(c in _PLAIN for c in word):
        return word
    return '"' + _escaped(word).replace("$", "$$") + '"'


def unit(command: Sequence[str], *, environment: Mapping[str, str], directory: str, grace: float,
         hooks: bool) -> str:
    """The user unit that runs `command` (the executable's absolute path, then its
    arguments) from `directory`, with `environment`. A stop waits for running jobs (`grace`)
    and then, with hooks, for running hooks as long again: TimeoutStopSec= is above both."""
    stop = math.ceil(grace * (2 if hooks else 1)) + STOP_MARGIN
    lines = [
        "# Written by `ollama-q daemon --print-systemd-unit`. Install:",
        "#   ollama-q daemon ... --print-systemd-unit > ~/.config/systemd/user/ollama-q.service",
        "#   systemctl --user daemon-reload && systemctl --user enable --now ollama-q",
        "# Logs: journalctl --user -u ollama-q -f",
        "[Unit]",
        "Description=ollama-q daemon: a durable job queue in front of Ollama",
        "",
        "[Service]",
        "Type=notify",
        "ExecStart=" + " ".join(exec_word(w) for w in command),
        "WorkingDirectory=" + directory.replace("%", "%%"),  # the whole value: no quotes here
        *(f'Environment="{_escaped(f"{name}={value}")}"' for name, value in sorted(environment.items())),
        "KillSignal=SIGTERM",
        "KillMode=mixed",
        f"TimeoutStopSec={stop}",
        "Restart=on-failure",
        "RestartSec=3",
        "",
        "[Install]",
        "WantedBy=default.target",
    ]
    return "\n".join(lines) + "\n"


def this_command(argv0: str, executable: str) -> list[str]:
    """How to run this program again by absolute path: its script, or `python -m ollama_cli`."""
    import os
    import shutil

    if os.path.basename(argv0) == "__main__.py":
        return [executable, "-m", "ollama_cli"]
    found = argv0 if os.sep in argv0 else shutil.which(argv0) or argv0
    return [os.path.abspath(found)]
