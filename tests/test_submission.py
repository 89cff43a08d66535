"""The contract's input rules for `submit`: from what a user typed to the request payload.
Every wrong input is a UsageError (exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ollama_cli import submission
from ollama_cli.errors import ExitCode, UsageError
from ollama_cli.jobs import JobType, Priority

GEN, CHAT, EMBED = JobType.GENERATE, JobType.CHAT, JobType.EMBED


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


# --------------------------------------------------------------- build_request


@pytest.mark.parametrize(("kind", "kw", "expected"), [
    (GEN, {"prompt": "hi"}, {"prompt": "hi"}),
    (GEN, {"prompt": "hi", "system": "be brief"}, {"prompt": "hi", "system": "be brief"}),
    # chat: --system leads, -m messages in order, PROMPT last as a user message
    (CHAT, {"prompt": "hi"}, {"messages": [user("hi")]}),
    (CHAT, {"prompt": "hi", "system": "sys"}, {"messages": [system("sys"), user("hi")]}),
    (CHAT, {"prompt": "last", "system": "sys",
            "messages": [user("a"), {"role": "assistant", "content": "b"}]},
     {"messages": [system("sys"), user("a"), {"role": "assistant", "content": "b"}, user("last")]}),
    (CHAT, {"messages": [user("only -m")]}, {"messages": [user("only -m")]}),
    (CHAT, {"system": "sys", "messages": [user("q")]}, {"messages": [system("sys"), user("q")]}),
    # embed: PROMPT first, then each --input
    (EMBED, {"prompt": "p", "inputs": ["a", "b"]}, {"input": ["p", "a", "b"]}),
    (EMBED, {"inputs": ["a"]}, {"input": ["a"]}),
    (EMBED, {"prompt": "p"}, {"input": ["p"]}),
    # options and format ride along
    (GEN, {"prompt": "x", "options": {"temperature": 0.2}},
     {"prompt": "x", "options": {"temperature": 0.2}}),
    (CHAT, {"prompt": "x", "format": "json"}, {"messages": [user("x")], "format": "json"}),
    (GEN, {"prompt": "x", "format": {"type": "object"}}, {"prompt": "x", "format": {"type": "object"}}),
    (EMBED, {"prompt": "x", "options": {"num_ctx": 512}}, {"input": ["x"], "options": {"num_ctx": 512}}),
], ids=lambda v: v.value if isinstance(v, JobType) else None)
def test_build_request(kind: JobType, kw: dict[str, Any], expected: dict[str, Any]) -> None:
    assert submission.build_request(kind, **kw) == expected


@pytest.mark.parametrize(("kind", "kw", "says"), [
    (GEN, {}, "prompt"),
    (GEN, {"prompt": ""}, "prompt"),
    (GEN, {"prompt": "x", "messages": [user("m")]}, "--type chat"),
    (GEN, {"prompt": "x", "inputs": ["i"]}, "--type embed"),
    (CHAT, {}, "message"),
    (CHAT, {"system": "only a system prompt"}, "message"),
    (CHAT, {"messages": [system("s")]}, "message"),
    (CHAT, {"prompt": "x", "inputs": ["i"]}, "--type embed"),
    (EMBED, {}, "input"),
    (EMBED, {"prompt": ""}, "input"),
    (EMBED, {"prompt": "x", "system": "s"}, "--system"),
    (EMBED, {"prompt": "x", "messages": [user("m")]}, "--type chat"),
    (EMBED, {"prompt": "x", "format": "json"}, "--format"),
], ids=lambda v: v.value if isinstance(v, JobType) else None)
def test_build_request_refuses(kind: JobType, kw: dict[str, Any], says: str) -> None:
    with pytest.raises(UsageError, match=says) as info:
        submission.build_request(kind, **kw)
    assert info.value.exit_code == ExitCode.USAGE


# -------------------------------------------------------------------- messages


@pytest.mark.parametrize(("text", "expected"), [
    ("user:hello", user("hello")),
    ("user:a: b: c", user("a: b: c")),  # split at the first colon only
    ("system:be terse", system("be terse")),
    ("assistant:ok", {"role": "assistant", "content": "ok"}),
    ("tool:{\"x\": 1}", {"role": "tool", "content": "{\"x\": 1}"}),
    ("USER:shout", user("shout")),
    ("user:", user("")),
    ("user:http://x.y:80/", user("http://x.y:80/")),
])
def test_parse_message(text: str, expected: dict[str, str]) -> None:
    assert submission.parse_message(text) == expected


@pytest.mark.parametrize("text", ["hello", "", ":no role", "bot:hi", "user hello", "use:r"])
def test_parse_message_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        submission.parse_message(text)


def test_parse_messages_file_content() -> None:
    data = [system("s"), user("u"), {"role": "assistant", "content": "a", "images": []}]
    assert submission.parse_messages(json.dumps(data), "m.json") == data


@pytest.mark.parametrize("raw", [
    "not json",
    "{}",
    '"a string"',
    "[1]",
    '[{"content": "no role"}]',
    '[{"role": 3, "content": "x"}]',
    '[{"role": "user", "content": 5}]',
    '[{"role": "wizard", "content": "x"}]',
])
def test_parse_messages_refuses(raw: str) -> None:
    with pytest.raises(UsageError, match="m.json"):
        submission.parse_messages(raw, "m.json")


@pytest.mark.parametrize(("raw", "says"), [
    ('[{"role": "user", "content": "x", "score": NaN}]', "NaN is not a JSON number"),
    ('[{"role": "user", "content": "x", "score": -Infinity}]', "-Infinity is not a JSON number"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_parse_messages_refuses_what_is_not_standard_json(raw: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        submission.parse_messages(raw, "m.json")


# --------------------------------------------------------------------- options


@pytest.mark.parametrize(("text", "expected"), [
    ("temperature=0.2", ("temperature", 0.2)),
    ("seed=42", ("seed", 42)),
    ("stop=[\"\\n\", \"###\"]", ("stop", ["\n", "###"])),
    ("flag=true", ("flag", True)),
    ("nothing=null", ("nothing", None)),
    ("obj={\"a\": 1}", ("obj", {"a": 1})),
    ("name=hello", ("name", "hello")),  # not JSON: kept as a string
    ("quoted=\"42\"", ("quoted", "42")),
    ("empty=", ("empty", "")),
    ("expr=a=b", ("expr", "a=b")),  # split at the first `=`
    ("num_ctx=4096", ("num_ctx", 4096)),
    ("odd=1.5.2", ("odd", "1.5.2")),
    (" spaced =1", ("spaced", 1)),
])
def test_parse_option(text: str, expected: tuple[str, Any]) -> None:
    got = submission.parse_option(text)
    assert got == expected
    assert type(got[1]) is type(expected[1])  # 42 is an int, not "42" or 42.0


@pytest.mark.parametrize("text", ["novalue", "=1", " =1", "", "deep=" + "[" * 100_000 + "]" * 100_000])
def test_parse_option_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        submission.parse_option(text)


# ------------------------------------------------- what can be sent as JSON

def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("kw", "says"), [
    ({"prompt": "x", "options": {"temperature": float("inf")}}, r"options\.temperature: inf is not a finite"),
    ({"prompt": "x", "options": {"stop": [float("-inf")]}}, r"options\.stop\[0\]: -inf"),
    ({"prompt": "x", "options": {"t": float("nan")}}, "nan is not a finite"),
    ({"prompt": "x", "options": {"seed": 2**64}}, "beyond a 64-bit integer"),
    ({"prompt": "x", "options": {"seed": -(2**63) - 1}}, "beyond a 64-bit integer"),
    ({"prompt": "a\udcff"}, r"prompt is not UTF-8 text \(the byte 0xff, or the escape \\udcff, at character 2\)"),
    ({"prompt": "x", "system": "\ud800"}, r"system is not UTF-8 text \(the lone surrogate \\ud800 at character 1\)"),
    ({"prompt": "x", "options": {"k\udcfe": 1}}, "a key in options is not UTF-8 text"),
    ({"prompt": "x", "format": {"a": {"b": "\udfff"}}}, r"format\.a\.b is not UTF-8"),
    ({"prompt": "x", "format": {"a": nested(100)}}, "^format: nested deeper than 100 levels"),
], ids=lambda v: None)
def test_build_request_refuses_what_json_cannot_carry(kw: dict[str, Any], says: str) -> None:
    with pytest.raises(UsageError, match=says):
        submission.build_request(GEN, **kw)


def test_build_request_refuses_such_values_in_messages_and_inputs() -> None:
    with pytest.raises(UsageError, match=r"messages\[0\]\.images\[0\]: inf"):
        submission.build_request(CHAT, messages=[{"role": "user", "content": "x", "images": [float("inf")]}])
    with pytest.raises(UsageError, match=r"input\[1\] is not UTF-8"):
        submission.build_request(EMBED, inputs=["ok", "\udc80"])


def test_build_request_takes_the_limits_themselves() -> None:
    options = {"seed": 2**63 - 1, "low": -(2**63), "big": 1.7e308, "deep": nested(99)}
    assert submission.build_request(GEN, prompt="caf\u00e9 \U0001f600", options=options)["options"] == options


@pytest.mark.parametrize(("text", "expected"), [
    ("5m", 300.0), ("0", 0.0), ("-1", -1.0), ("-5m", -1.0), (" -1s ", -1.0), ("3650d", 3650 * 86400.0)])
def test_keep_alive(text: str, expected: float) -> None:
    assert submission.keep_alive(text) == expected


@pytest.mark.parametrize("text", ["forever", "-", "-x", "--1", "3651d", "-99999999d", "1e999"])
def test_keep_alive_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        submission.keep_alive(text)


# ---------------------------------------------------------------------- format


def test_format_json() -> None:
    assert submission.parse_format("json") == "json"


def test_format_schema_file(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema), encoding="utf-8")
    assert submission.parse_format(f"@{path}") == schema


@pytest.mark.parametrize(("content", "says"), [
    (None, "no such file"),
    ("{not json", "not JSON"),
    ('{"type": "number", "maximum": NaN}', "NaN is not a JSON number"),
    ('{"maximum": Infinity}', "Infinity is not a JSON number"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("[1, 2]", "JSON object"),
    ("\"json\"", "JSON object"),
])
def test_format_schema_file_refuses(tmp_path: Path, content: str | None, says: str) -> None:
    path = tmp_path / "schema.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError, match=says):
        submission.parse_format(f"@{path}")


def test_format_of_a_folder_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        submission.parse_format(f"@{tmp_path}")


@pytest.mark.parametrize("value", ["xml", "JSON", "", "schema.json", "@"])
def test_format_refuses(value: str) -> None:
    with pytest.raises(UsageError):
        submission.parse_format(value)


# ------------------------------------------------------------- names and enums


@pytest.mark.parametrize("name", [
    "llama3.2", "llama3.2:latest", "qwen2.5:0.5b", "llama3:8b-instruct-q4_K_M",
    "library/llama3", "registry.ollama.ai/library/llama3:8b",
    "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "_private", "m", "a" * 80,
    "Mixed_Case-1", "ns/m:" + "t" * 80,
    pytest.param("localhost:5000/library/llama3"),
])
def test_valid_model_names(name: str) -> None:
    assert submission.model_name(name) == name


@pytest.mark.parametrize("name", [
    "", " ", "-leading-dash", ".leading-dot", "has space", "tab\tname", "m:", ":tag",
    "m:tag:more", "a/b/c/d", "/m", "m/", "a//b", "a" * 81, "m:" + "t" * 81, "m:-tag",
    "ümlaut", "m@sha256",
    pytest.param("m\n"),
    pytest.param("my.ns/model"),
])
def test_invalid_model_names(name: str) -> None:
    with pytest.raises(UsageError, match="model name"):
        submission.model_name(name)


@pytest.mark.parametrize(("text", "expected"), [
    ("generate", GEN), ("chat", CHAT), ("embed", EMBED), ("CHAT", CHAT)])
def test_job_type(text: str, expected: JobType) -> None:
    assert submission.job_type(text) is expected


@pytest.mark.parametrize(("text", "expected"), [
    ("urgent", Priority.URGENT), ("high", Priority.HIGH), ("medium", Priority.MEDIUM),
    ("low", Priority.LOW), ("Low", Priority.LOW)])
def test_priority(text: str, expected: Priority) -> None:
    assert submission.priority(text) is expected


@pytest.mark.parametrize(("fn", "text"), [
    (submission.job_type, "image"), (submission.job_type, ""), (submission.priority, "critical"),
    (submission.priority, "1")])
def test_unknown_choice_names_the_choices(fn: Any, text: str) -> None:
    with pytest.raises(UsageError) as info:
        fn(text)
    assert info.value.exit_code == ExitCode.USAGE
    assert "choose from" in info.value.message
