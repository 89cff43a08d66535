"""Bad input through the real CLI, run in this process (`main(argv)`): exactly one `error:`
line on stderr, the documented exit code (2: usage or validation; 1: not found), nothing on
stdout, and not a byte of the store changed. The store holds job 1, so an id that should be
refused but would name a job shows. Every input found to slip through becomes a row here;
tests/test_cli.py runs a few through the real entry point in a new process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers.cli import assert_one_error, ok_json, run_main

B = "\udcff"  # the byte 0xff in an argument, as Python decodes argv (PEP 383)
DEEP = 1000  # JSON nested this deep: past the recursion limit


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


FILES = {
    "not-json.json": "this is not json",
    "not-list.json": '{"role": "user", "content": "hi"}',
    "non-messages.json": '[1, "two"]',
    "no-role.json": '[{"content": "hi"}]',
    "bad-role.json": '[{"role": "robot", "content": "hi"}]',
    "schema-list.json": "[1, 2]",
    "nan.json": '[{"role": "user", "content": "hi", "score": NaN}]',
    "infinity.json": '[{"role": "user", "content": "hi", "score": -Infinity}]',
    "overflow.json": '[{"role": "user", "content": "hi", "score": 1e999}]',
    "surrogate.json": '[{"role": "user", "content": "caf\\ud800"}]',
    "deep.json": '[{"role": "user", "content": "hi", "images": ' + deep(DEEP) + "}]",
    "nan-schema.json": '{"type": "number", "maximum": NaN}',
    "overflow-schema.json": '{"type": "number", "maximum": 1e999}',
    "surrogate-schema.json": '{"description": "\\udcff"}',
    "deep-schema.json": '{"items": ' + deep(DEEP) + "}",
    "deep-150-schema.json": '{"items": ' + deep(150) + "}",
    # batch lines
    "keep-alive-overflow.jsonl": '{"model": "m", "prompt": "x", "keep_alive": 1e400}',
    "keep-alive-huge-int.jsonl": '{"model": "m", "prompt": "x", "keep_alive": 1' + "0" * 400 + "}",
    "keep-alive-huge.jsonl": '{"model": "m", "prompt": "x", "keep_alive": "99999999d"}',
    "option-overflow.jsonl": '{"model": "m", "prompt": "x", "options": {"temperature": 1e999}}',
    "openai-overflow.jsonl": json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                                         "body": {"model": "m", "messages": [{"role": "user", "content": "x"}]}}
                                        )[:-2] + ', "temperature": 1e999}}',
    "line-deep.jsonl": '{"model": "m", "prompt": "x", "options": {"a": ' + deep(DEEP) + "}}",
    "line-deep-150.jsonl": '{"model": "m", "prompt": "x", "options": {"a": ' + deep(150) + "}}",
    "line-surrogate-prompt.jsonl": '{"model": "m", "prompt": "\\ud800"}',
    "line-surrogate-key.jsonl": '{"model": "m", "prompt": "x", "options": {"\\udcff": 1}}',
    "line-surrogate-custom-id.jsonl": '{"custom_id": "\\udcff", "model": "m", "prompt": "x"}',
    "line-nan.jsonl": '{"model": "m", "prompt": "x", "options": {"temperature": NaN}}',
    "good.jsonl": '{"model": "m", "prompt": "x"}',
}
LATIN1 = '[{"role": "user", "content": "caf\xe9"}]'.encode("latin-1")

BAD_INPUT = [
    # choices, shapes and files
    pytest.param(["submit", "llama3.2", "hi", "--type", "poem", "--json"], None, id="unknown-type"),
    pytest.param(["submit", "llama3.2", "hi", "-p", "asap"], None, id="unknown-priority"),
    pytest.param(["submit", "llama3.2", "hi", "-o", "temperature"], None, id="option-without-equals"),
    pytest.param(["submit", "llama3.2", "hi", "-o", "=5"], None, id="option-empty-key"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "-m", "hello there"], None, id="message-without-colon"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "-m", "robot:hi"], None, id="message-unknown-role"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--messages", "{tmp}/not-json.json"], None,
                 id="messages-not-json"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--messages", "{tmp}/not-list.json"], None,
                 id="messages-not-a-list"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--messages", "{tmp}/non-messages.json"], None,
                 id="messages-list-of-non-messages"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--messages", "{tmp}/no-role.json"], None,
                 id="messages-without-role"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--messages", "{tmp}/bad-role.json"], None,
                 id="messages-unknown-role"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--messages", "{tmp}/missing.json"], None,
                 id="messages-missing-file"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--messages", "{tmp}/latin1.json"], None,
                 id="messages-not-utf8"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--messages", "{tmp}"], None, id="messages-a-folder"),
    pytest.param(["submit", "llama3.2", "", "--json"], None, id="empty-prompt"),
    pytest.param(["submit", "llama3.2"], "  \n\t \n", id="whitespace-stdin"),
    pytest.param(["submit", "llama3.2", "-"], " \n", id="whitespace-stdin-dash"),
    pytest.param(["submit", "llama3.2"], "", id="no-prompt-empty-stdin"),
    pytest.param(["submit", "llama3.2", "-t", "chat"], None, id="chat-without-message"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--system", "be brief"], None, id="chat-only-system"),
    pytest.param(["submit", "all-minilm", "-t", "embed"], None, id="embed-without-input"),
    pytest.param(["submit", "all-minilm", "-t", "embed", ""], None, id="embed-empty-prompt"),
    pytest.param(["submit", "llama3.2", "hi", "--input", "x"], None, id="input-without-embed"),
    pytest.param(["submit", "llama3.2", "hi", "-m", "user:x"], None, id="message-without-chat"),
    pytest.param(["submit", "all-minilm", "-t", "embed", "x", "--format", "json"], None, id="format-with-embed"),
    pytest.param(["submit", "llama3.2", "--json"], b"\xff\xfe not utf-8 \xc3\x28", id="non-utf8-stdin"),
    pytest.param(["submit", "llama3.2", "hi", "--format", "@{tmp}/missing-schema.json"], None,
                 id="format-missing-file"),
    pytest.param(["submit", "llama3.2", "hi", "--format", "@{tmp}/not-json.json"], None, id="format-not-json"),
    pytest.param(["submit", "llama3.2", "hi", "--format", "@{tmp}/schema-list.json"], None,
                 id="format-not-an-object"),
    pytest.param(["submit", "llama3.2", "hi", "--format", "xml"], None, id="format-xml"),
    pytest.param(["submit", "llama3.2", "hi", "--retries", "-1"], None, id="negative-retries"),
    pytest.param(["submit", "bad model!", "hi", "--json"], None, id="model-with-space"),
    pytest.param(["submit", "../etc/passwd", "hi"], None, id="model-path"),
    pytest.param(["submit", "", "hi"], None, id="model-empty"),
    pytest.param(["list", "--status", "done", "--json"], None, id="list-unknown-status"),
    pytest.param(["list", "--type", "poem"], None, id="list-unknown-type"),
    pytest.param(["models", "--host", "ftp://127.0.0.1:1", "--json"], None, id="models-bad-host-scheme"),
    pytest.param(["submit", "--no-such-flag", "llama3.2", "hi"], None, id="unknown-flag"),
    pytest.param(["no-such-command"], None, id="unknown-command"),
    # ids
    pytest.param(["status", "abc", "--json"], None, id="status-non-numeric"),
    pytest.param(["result", "abc"], None, id="result-non-numeric"),
    pytest.param(["cancel", "abc"], None, id="cancel-non-numeric"),
    pytest.param(["status", "0"], None, id="status-zero"),
    pytest.param(["result", "0"], None, id="result-zero"),
    pytest.param(["cancel", "0", "--json"], None, id="cancel-zero"),
    pytest.param(["status", "-3"], None, id="status-negative"),
    pytest.param(["result", "--", "-3"], None, id="result-negative"),
    pytest.param(["cancel", "--", "-3"], None, id="cancel-negative"),
    pytest.param(["submit", "llama3.2", "hi", "--after", "abc"], None, id="after-non-numeric"),
    pytest.param(["submit", "llama3.2", "hi", "--after", "0"], None, id="after-zero"),
    pytest.param(["status", "18446744073709551616"], None, id="status-beyond-64-bits"),
    pytest.param(["result", "99999999999999999999999"], None, id="result-beyond-64-bits"),
    pytest.param(["cancel", "18446744073709551616"], None, id="cancel-beyond-64-bits"),
    pytest.param(["submit", "llama3.2", "hi", "--after", "18446744073709551616"], None, id="after-beyond-64-bits"),
    pytest.param(["status", "1" * 5000], None, id="status-5000-digits"),
    pytest.param(["status", " 1"], None, id="id-leading-space"),
    pytest.param(["status", "1 "], None, id="id-trailing-space"),
    pytest.param(["cancel", " 1"], None, id="cancel-id-leading-space"),
    pytest.param(["status", "+1"], None, id="id-plus"),
    pytest.param(["status", "1_000"], None, id="id-underscore"),
    pytest.param(["status", "\u0661"], None, id="id-arabic-indic-digit"),
    pytest.param(["result", "\uff11"], None, id="id-fullwidth-digit"),
    pytest.param(["submit", "llama3.2", "hi", "--after", "\u0661"], None, id="after-arabic-indic-digit"),
    pytest.param(["submit", "llama3.2", "hi", "--after", "7", "--json"], None, id="after-unknown-id"),
    # times: 1970 to 9999, in UTC
    pytest.param(["submit", "llama3.2", "hi", "--at", "1969-12-31T23:59:59Z"], None, id="at-before-1970"),
    pytest.param(["submit", "llama3.2", "hi", "--at", "0026-11-24T03:00:00Z"], None, id="at-year-26"),
    pytest.param(["submit", "llama3.2", "hi", "--at", "0001-01-01T00:00:00"], None, id="at-year-1-local"),
    pytest.param(["submit", "llama3.2", "hi", "--at", "9999-12-31T23:00:00-14:00"], None, id="at-year-10000-utc"),
    pytest.param(["submit", "llama3.2", "hi", "--at", "tomorrow", "--json"], None, id="bad-at"),
    pytest.param(["submit", "llama3.2", "hi", "--at", ""], None, id="empty-at"),
    pytest.param(["submit", "llama3.2", "hi", "--delay", "5m", "--at", "2030-01-01T00:00:00Z"], None,
                 id="delay-and-at"),
    # durations: at most ten years, never infinite
    pytest.param(["submit", "llama3.2", "hi", "--delay", "soon"], None, id="bad-delay"),
    pytest.param(["submit", "llama3.2", "hi", "--delay", "99999999d"], None, id="delay-past-9999"),
    pytest.param(["submit", "llama3.2", "hi", "--delay", "3651d"], None, id="delay-over-ten-years"),
    pytest.param(["submit", "llama3.2", "hi", "--delay", "9" * 400], None, id="delay-infinite"),
    pytest.param(["submit", "llama3.2", "hi", "--delay", "\u0665s"], None, id="delay-arabic-indic-digit"),
    pytest.param(["submit", "llama3.2", "hi", "--timeout", "5x"], None, id="bad-timeout"),
    pytest.param(["submit", "llama3.2", "hi", "--timeout", "0"], None, id="timeout-zero"),
    pytest.param(["submit", "llama3.2", "hi", "--timeout", "0ms"], None, id="timeout-zero-ms"),
    pytest.param(["submit", "llama3.2", "hi", "--timeout", "99999999d"], None, id="timeout-huge"),
    pytest.param(["submit", "llama3.2", "hi", "--keep-alive", "forever"], None, id="bad-keep-alive"),
    pytest.param(["submit", "llama3.2", "hi", "--keep-alive", "99999999d"], None, id="keep-alive-huge"),
    pytest.param(["submit", "llama3.2", "hi", "--keep-alive", "-forever"], None, id="keep-alive-negative-junk"),
    pytest.param(["submit", "llama3.2", "hi", "--fallback", "bad name"], None, id="fallback-bad-name"),
    pytest.param(["submit", "llama3.2", "hi", "--fallback", "LLAMA3.2:latest"], None, id="fallback-own-model"),
    pytest.param(["submit", "llama3.2", "hi", "--fallback", "qwen", "--fallback", "qwen:latest"], None,
                 id="fallback-twice"),
    pytest.param(["submit", "llama3.2", "hi", *[a for n in range(17) for a in ("--fallback", f"m{n}")]], None,
                 id="fallback-too-many"),
    pytest.param(["submit", "llama3.2", "hi", "--fallback", f"m{B}"], None, id="not-utf8-fallback"),
    pytest.param(["result", "2", "--wait", "--timeout", "a while"], None, id="result-bad-timeout"),
    pytest.param(["result", "2", "--wait", "--timeout", "99999999d"], None, id="result-timeout-huge"),
    pytest.param(["wait", "2", "--timeout", "99999999d"], None, id="wait-timeout-huge"),
    pytest.param(["clean", "--older-than", "99999999d"], None, id="clean-older-than-huge"),
    pytest.param(["batch", "wait", "b", "--timeout", "99999999d"], None, id="batch-wait-timeout-huge"),
    # values JSON cannot carry (Python reads 1e999 as inf, and NaN where JSON has none)
    pytest.param(["submit", "llama3.2", "hi", "-o", "temperature=1e999"], None, id="option-overflow"),
    pytest.param(["submit", "llama3.2", "hi", "-o", "x=-1e999"], None, id="option-negative-overflow"),
    pytest.param(["submit", "llama3.2", "hi", "-o", "stop=[1, 1e999]"], None, id="option-overflow-in-list"),
    pytest.param(["submit", "llama3.2", "hi", "-o", "seed=18446744073709551616"], None, id="option-beyond-int64"),
    pytest.param(["submit", "llama3.2", "hi", "-o", "x=" + deep(DEEP)], None, id="option-nested-1000-deep"),
    pytest.param(["submit", "llama3.2", "hi", "-o", "x=" + deep(150)], None, id="option-nested-150-deep"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--messages", "{tmp}/nan.json"], None, id="messages-nan"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--messages", "{tmp}/infinity.json"], None,
                 id="messages-infinity"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--messages", "{tmp}/overflow.json"], None,
                 id="messages-overflow"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--messages", "{tmp}/deep.json"], None,
                 id="messages-nested-1000-deep"),
    pytest.param(["submit", "llama3.2", "hi", "--format", "@{tmp}/nan-schema.json"], None, id="format-nan"),
    pytest.param(["submit", "llama3.2", "hi", "--format", "@{tmp}/overflow-schema.json"], None,
                 id="format-overflow"),
    pytest.param(["submit", "llama3.2", "hi", "--format", "@{tmp}/deep-schema.json"], None,
                 id="format-nested-1000-deep"),
    pytest.param(["submit", "llama3.2", "hi", "--format", "@{tmp}/deep-150-schema.json"], None,
                 id="format-nested-150-deep"),
    pytest.param(["batch", "submit", "{tmp}/keep-alive-overflow.jsonl"], None, id="batch-keep-alive-overflow"),
    pytest.param(["batch", "submit", "{tmp}/keep-alive-huge-int.jsonl"], None, id="batch-keep-alive-huge-int"),
    pytest.param(["batch", "submit", "{tmp}/keep-alive-huge.jsonl"], None, id="batch-keep-alive-huge"),
    pytest.param(["batch", "submit", "{tmp}/option-overflow.jsonl"], None, id="batch-option-overflow"),
    pytest.param(["batch", "submit", "{tmp}/openai-overflow.jsonl"], None, id="batch-openai-overflow"),
    pytest.param(["batch", "submit", "{tmp}/line-nan.jsonl"], None, id="batch-nan"),
    pytest.param(["batch", "submit", "{tmp}/line-deep.jsonl"], None, id="batch-nested-1000-deep"),
    pytest.param(["batch", "submit", "{tmp}/line-deep-150.jsonl"], None, id="batch-nested-150-deep"),
    # text that is not UTF-8: bytes in arguments, \ud800 escapes in JSON
    pytest.param(["submit", "llama3.2", f"caf{B}"], None, id="not-utf8-prompt"),
    pytest.param(["submit", "llama3.2", "hi", "--name", f"n{B}"], None, id="not-utf8-name"),
    pytest.param(["submit", "llama3.2", "hi", "--system", f"s{B}"], None, id="not-utf8-system"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "hi", "--system", f"s{B}"], None, id="not-utf8-chat-system"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "-m", f"user:{B}"], None, id="not-utf8-message"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "-m", f"us{B}er:hi"], None, id="not-utf8-message-role"),
    pytest.param(["submit", "llama3.2", "hi", "-o", f"k{B}=1"], None, id="not-utf8-option-key"),
    pytest.param(["submit", "llama3.2", "hi", "-o", f"k=v{B}"], None, id="not-utf8-option-value"),
    pytest.param(["submit", "all-minilm", "-t", "embed", "--input", f"i{B}"], None, id="not-utf8-input"),
    pytest.param(["submit", f"m{B}", "hi"], None, id="not-utf8-model"),
    pytest.param(["submit", "llama3.2", "hi", "-p", f"hi{B}"], None, id="not-utf8-priority"),
    pytest.param(["list", "--batch", f"b{B}"], None, id="not-utf8-list-batch"),
    pytest.param(["batch", "submit", "{tmp}/good.jsonl", "--name", f"b{B}"], None, id="not-utf8-batch-name"),
    pytest.param(["batch", "status", f"b{B}"], None, id="not-utf8-batch-status"),
    pytest.param(["batch", "results", f"b{B}"], None, id="not-utf8-batch-results"),
    pytest.param(["batch", "wait", f"b{B}"], None, id="not-utf8-batch-wait"),
    pytest.param(["submit", "llama3.2", "-t", "chat", "--messages", "{tmp}/surrogate.json"], None,
                 id="surrogate-escape-in-messages"),
    pytest.param(["submit", "llama3.2", "hi", "--format", "@{tmp}/surrogate-schema.json"], None,
                 id="surrogate-escape-in-format"),
    pytest.param(["submit", "llama3.2", "hi", "-o", 'stop=["\\ud800"]'], None, id="surrogate-escape-in-option"),
    pytest.param(["batch", "submit", "{tmp}/line-surrogate-prompt.jsonl"], None, id="surrogate-escape-batch-prompt"),
    pytest.param(["batch", "submit", "{tmp}/line-surrogate-key.jsonl"], None, id="surrogate-escape-batch-key"),
    pytest.param(["batch", "submit", "{tmp}/line-surrogate-custom-id.jsonl"], None,
                 id="surrogate-escape-batch-custom-id"),
    # hosts
    pytest.param(["models", "--host", "http://user:s3cret@127.0.0.1:1"], None, id="host-with-credentials"),
    pytest.param(["models", "--host", "http://127.0.0.1:0", "--json"], None, id="host-port-0"),
    pytest.param(["models", "--host", ":0"], None, id="host-bare-port-0"),
]

NOT_FOUND = [
    pytest.param(["status", "2"], "", id="status"),
    pytest.param(["status", "2", "--json"], "", id="status-json"),
    pytest.param(["result", "2"], "", id="result"),
    pytest.param(["result", "2", "--json"], "", id="result-json"),
    pytest.param(["result", "2", "--wait"], "", id="result-wait"),
    pytest.param(["cancel", "2"], "", id="cancel"),
    pytest.param(["cancel", "2", "--json"], '[{"id": 2, "status": null}]\n', id="cancel-json"),  # its array all the same
    pytest.param(["retry", "2"], "", id="retry"),
]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name, text in FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "latin1.json").write_bytes(LATIN1)
    return folder


@pytest.fixture
def one_job(data_dir: Path) -> Path:
    """The store, holding job 1."""
    assert ok_json(run_main("submit", "llama3.2", "the only job", "--json"))["id"] == 1
    return data_dir / "data.mdb"


@pytest.mark.parametrize("args, stdin", BAD_INPUT)
def test_bad_input_exits_2_with_one_error_line_and_writes_nothing(
        one_job: Path, inputs: Path, args: list[str], stdin: str | bytes | None) -> None:
    before = one_job.read_bytes()
    res = run_main(*[a.replace("{tmp}", str(inputs)) for a in args], input=stdin)
    assert_one_error(res, 2)
    assert one_job.read_bytes() == before


@pytest.mark.parametrize("args, stdout", NOT_FOUND)
def test_unknown_id_exits_1_with_one_error_line_and_writes_nothing(
        one_job: Path, args: list[str], stdout: str) -> None:
    before = one_job.read_bytes()
    res = run_main(*args)
    line = assert_one_error(res, 1, stdout_empty=False)
    assert res.stdout == stdout
    assert "job 2 " in line
    assert one_job.read_bytes() == before


def test_a_password_in_a_host_is_never_echoed(data_dir: Path) -> None:
    for host in ("http://user:s3cret@127.0.0.1:1", "ftp://user:s3cret@host", "http://u:s3cret@host:99999"):
        res = run_main("models", "--host", host)
        assert "s3cret" not in assert_one_error(res, 2)


def test_main_in_process_leaves_the_umask_alone(data_dir: Path) -> None:
    before = os.umask(0o022)
    try:
        ok_json(run_main("submit", "llama3.2", "hi", "--json"))
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)
