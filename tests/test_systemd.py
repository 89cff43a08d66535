"""The daemon as a systemd service: the unit `--print-systemd-unit` prints, read back as
systemd reads it, and READY=1 / STOPPING=1 on NOTIFY_SOCKET."""

from __future__ import annotations

import configparser
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_cli.daemon import systemd
from tests.emulator import Emulator
from tests.helpers.cli import cli_env, run_cli


def exec_words(line: str) -> list[str]:
    """An ExecStart= value split as systemd splits it (for the quoting this project writes:
    bare words, double quotes with C escapes, `%%` and `$$`)."""
    words, i = [], 0
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"'}
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        word = ""
        if line[i] == '"':
            i += 1
            while line[i] != '"':
                if line[i] == "\\":
                    i += 1
                    word += escapes[line[i]]
                else:
                    word += line[i]
                i += 1
            i += 1
        else:
            while i < len(line) and line[i] != " ":
                word += line[i]
                i += 1
        words.append(word.replace("%%", "%").replace("$$", "$"))
    return words


def read_unit(text: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=False, comment_prefixes=("#",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    unit.read_string(text)
    return unit


def test_the_unit_runs_this_daemon_with_these_options_as_a_notify_service(data_dir: Path) -> None:
    hook = 'printf "%s done\\n" "$OLLAMA_Q_JOB_ID" >> "/tmp/a b/100%.log"'
    args = ["daemon", "--host", "http://127.0.0.1:11434", "-c", "2", "--grace", "45s", "--on-finish", hook,
            "--log-level", "warning"]
    res = run_cli(data_dir, "--data-dir", str(data_dir), *args[:3], "--print-systemd-unit", *args[3:],
                  OLLAMA_Q_STORE=str(data_dir), OLLAMA_HOST="http://gpu:11434")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert not data_dir.exists()  # printing a unit opens no store
    unit = read_unit(res.stdout)
    service = unit["Service"]
    assert exec_words(service["ExecStart"]) == [sys.executable, "-m", "ollama_cli", "--data-dir", str(data_dir),
                                                *args]
    assert os.path.isabs(exec_words(service["ExecStart"])[0])
    assert (service["Type"], service["KillSignal"], service["Restart"], service["RestartSec"]) == \
        ("notify", "SIGTERM", "on-failure", "3")
    assert int(service["TimeoutStopSec"]) > 2 * 45  # jobs' grace, then hooks' as long again
    environment = [line.split("=", 1)[1] for line in res.stdout.splitlines() if line.startswith("Environment=")]
    assert environment == ['"OLLAMA_HOST=http://gpu:11434"', f'"OLLAMA_Q_DATA_DIR={data_dir}"',
                           f'"OLLAMA_Q_STORE={data_dir}"']
    assert unit["Install"]["WantedBy"] == "default.target"


def test_exec_words_come_back_as_they_were() -> None:
    words = ["/usr/bin/ollama-q", "plain", "", "two words", 'a "quote"', "back\\slash", "100%", "$HOME", "new\nline"]
    assert exec_words(" ".join(systemd.exec_word(w) for w in words)) == words


def test_this_command_is_the_script_by_absolute_path_or_python_m(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert systemd.this_command("/opt/venv/bin/ollama-q", "/usr/bin/python3") == ["/opt/venv/bin/ollama-q"]
    assert systemd.this_command("/x/ollama_cli/__main__.py", "/usr/bin/python3") == \
        ["/usr/bin/python3", "-m", "ollama_cli"]
    monkeypatch.chdir(tmp_path)
    assert systemd.this_command("bin/ollama-q", "/usr/bin/python3") == [str(tmp_path / "bin/ollama-q")]


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket as systemd's, in the abstract namespace (`@name` in NOTIFY_SOCKET)."""
    name = f"ollama-q-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(60)
        yield sock, "@" + name


def test_the_daemon_says_ready_once_serving_and_stopping_on_sigterm(
        data_dir: Path, emulator: Emulator, notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    proc = subprocess.Popen([sys.executable, "-m", "ollama_cli", "daemon", "--host", emulator.url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=cli_env(data_dir, NOTIFY_SOCKET=address))
    try:
        assert sock.recv(4096) == b"READY=1"
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_notify_reaches_a_socket_by_path_and_never_fails_the_daemon() -> None:
    with tempfile.TemporaryDirectory(prefix="oq") as folder, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # short: a socket path has 108 bytes
        path = os.path.join(folder, "notify")
        sock.bind(path)
        assert systemd.notify("READY=1", path) and sock.recv(64) == b"READY=1"
        assert not systemd.notify("READY=1", os.path.join(folder, "gone"))
        assert not systemd.notify("READY=1", "relative/path")
