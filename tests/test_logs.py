"""The daemon's log as it reaches stderr: its level (--log-level > OLLAMA_Q_LOG > default),
journald's form under systemd, and no prompt, message, input or answer text at info."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ollama_cli.errors import UsageError
from ollama_cli.settings import load
from tests.emulator import Emulator
from tests.helpers.cli import assert_one_error, ok_json, run_cli, run_main, submit_id


def drained(data_dir: Path, emulator: Emulator, *args: str, **env: str) -> str:
    """The log of a --drain daemon on `emulator`."""
    res = run_cli(data_dir, "daemon", "--host", emulator.url, "--drain", *args, **env)
    assert res.returncode == 0, res.stderr
    return res.stderr


def test_no_prompt_message_input_or_answer_text_is_logged_at_info(data_dir: Path, emulator: Emulator) -> None:
    secrets = ["zebraPROMPT7731", "quokkaMESSAGE1234", "quokkaSYSTEM9876", "narwhalINPUT5555"]
    ids = [
        submit_id(data_dir, "llama3.2", secrets[0]),
        submit_id(data_dir, "llama3.2", "-t", "chat", "--system", secrets[2], "-m", f"user:{secrets[1]}"),
        submit_id(data_dir, "all-minilm", "-t", "embed", "--input", secrets[3]),
    ]
    log = drained(data_dir, emulator, "--log-level", "info")
    answers = [ok_json(run_cli(data_dir, "result", "--json", str(i))) for i in ids[:2]]
    texts = [a["response"] if "response" in a else a["message"]["content"] for a in answers]
    assert all(len(t) > 20 for t in texts), texts  # long enough that a chance match means nothing
    assert log.count("completed in") == 3, log
    for text in secrets + texts:
        assert text not in log, text


def test_the_level_comes_from_the_flag_then_the_variable(data_dir: Path, emulator: Emulator) -> None:
    def log_of_a_job(*args: str, **env: str) -> str:
        job = submit_id(data_dir, "llama3.2", "hi", "--no-cache")
        log = drained(data_dir, emulator, *args, **env)
        assert f"job {job} completed" in log or "WARN" not in log, log
        return log

    assert " INFO  job 1 started" in log_of_a_job()
    assert " INFO " not in log_of_a_job(OLLAMA_Q_LOG="warning")
    assert " INFO  job 3 started" in log_of_a_job("--log-level", "info", OLLAMA_Q_LOG="error")
    assert load({"log_level": "Debug"}, env={"OLLAMA_Q_LOG": "error"}).daemon.log_level == "debug"
    assert load({}, env={"OLLAMA_Q_LOG": "error"}).source("log_level") == "env"
    assert load({}, env={}).daemon.log_level == "info"
    with pytest.raises(UsageError):
        load({}, env={"OLLAMA_Q_LOG": "loud"})


@pytest.mark.parametrize("args, env, where", [(["--log-level", "verbose"], {}, "--log-level"),
                                              ([], {"OLLAMA_Q_LOG": "loud"}, "OLLAMA_Q_LOG")])
def test_a_bad_level_is_refused_with_exit_2(data_dir: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
                                            env: dict[str, str], where: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    message = assert_one_error(run_main("daemon", *args), 2)
    assert message == f"error: {where} must be one of debug, info, warning, error"
    assert not data_dir.exists()


def test_debug_shows_a_hook_and_what_it_printed(data_dir: Path, emulator: Emulator) -> None:
    submit_id(data_dir, "llama3.2", "hi")
    log = drained(data_dir, emulator, "--log-level", "debug", "--on-finish", "echo hook-said-this")
    assert re.search(r" DEBUG hook for job 1 printed: hook-said-this\n", log), log


def test_under_journald_each_line_has_its_priority_and_no_time_of_ours(data_dir: Path, emulator: Emulator) -> None:
    submit_id(data_dir, "llama3.2", "hi")
    lines = drained(data_dir, emulator, "--on-finish", "exit 4", JOURNAL_STREAM="8:1234").splitlines()
    assert "<6>job 1 started on" in "\n".join(lines)
    assert "<4>hook for job 1 exited with 4" in lines
    assert all(re.match(r"<[3467]>[a-z]", line) for line in lines), lines
    json_lines = drained(data_dir, emulator, "--json", JOURNAL_STREAM="8:1234").splitlines()
    assert all(re.match(r"<[3467]>\{", line) for line in json_lines), json_lines
    assert json.loads(json_lines[-1][3:])["event"] == "daemon_drained"
