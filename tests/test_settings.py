"""Settings: OLLAMA_HOST parsed as ollama-python parses it (shared/ollama-api.md §12), every
setting's precedence (flag > variable > file > default) and source, durations and times."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import platformdirs
import pytest

from ollama_cli.errors import UsageError
from ollama_cli.jobs import Priority
from ollama_cli.settings import DaemonSettings, file, hosts, load, shown, user_dir
from ollama_cli.settings.hosts import Backend
from ollama_cli.settings.schema import KEYS, plain
from ollama_cli.store import open_store
from ollama_cli.timefmt import format_time, parse_duration, parse_time
from tests.helpers.cli import assert_one_error, ok_json, run_main

# ------------------------------------------------------------------ OLLAMA_HOST


@pytest.mark.parametrize(("value", "expected"), [
    (None, "http://127.0.0.1:11434"),
    ("", "http://127.0.0.1:11434"),
    ("1.2.3.4", "http://1.2.3.4:11434"),
    ("example.com", "http://example.com:11434"),
    (":56789", "http://127.0.0.1:56789"),
    ("host:56789", "http://host:56789"),
    ("1.2.3.4:56789", "http://1.2.3.4:56789"),
    # an explicit scheme changes the default port to the scheme's
    ("http://host", "http://host:80"),
    ("https://host", "https://host:443"),
    ("http://host:56789", "http://host:56789"),
    ("https://host:56789", "https://host:56789"),
    # a path is kept, its trailing slash dropped
    ("host:56789/path/", "http://host:56789/path"),
    ("example.com/path", "http://example.com:11434/path"),
    ("https://example.com:56789/path/to/", "https://example.com:56789/path/to"),
    ("http://host/", "http://host:80"),
    # IPv6 keeps its brackets
    ("[::1]", "http://[::1]:11434"),
    ("[::1]:8080", "http://[::1]:8080"),
    ("http://[::1]", "http://[::1]:80"),
    ("https://[::1]:56789/path/", "https://[::1]:56789/path"),
    ("[0001:002:003:0004::1]", "http://[0001:002:003:0004::1]:11434"),
    # 0.0.0.0 is not rewritten (the Go CLI does, the Python client does not)
    ("0.0.0.0", "http://0.0.0.0:11434"),
    ("0.0.0.0:56789", "http://0.0.0.0:56789"),
], ids=lambda v: repr(v))
def test_parse_host(value: str | None, expected: str) -> None:
    assert hosts.parse_host(value) == expected


@pytest.mark.parametrize("value", ["ftp://host", "unix:///run/ollama.sock", "host:port",
                                   "host:99999", "http://host:0", "host:0", ":0", "https://[::1]:0/p"])
def test_parse_host_refuses(value: str) -> None:
    with pytest.raises(UsageError):
        hosts.parse_host(value)


@pytest.mark.parametrize("value", ["http://user:s3cret@host", "user:s3cret@host:11434", "https://s3cret@host/p",
                                   "ftp://user:s3cret@host", "http://user:s3cret@host:99999"])
def test_parse_host_refuses_credentials_without_echoing_them(value: str) -> None:
    with pytest.raises(UsageError, match="credentials") as info:
        hosts.parse_host(value)
    assert "s3cret" not in info.value.message


def test_an_at_sign_in_the_path_is_not_a_credential() -> None:
    assert hosts.parse_host("http://host:8080/v1@x") == "http://host:8080/v1@x"


@pytest.mark.parametrize(("value", "expected"), [
    ("openai+http://127.0.0.1:8080", Backend("http://127.0.0.1:8080", "openai")),
    ("openai+localhost:8080", Backend("http://localhost:8080", "openai")),
    ("openai+https://api.example.com/v1/", Backend("https://api.example.com:443/v1", "openai")),
    ("http://127.0.0.1:8080", Backend("http://127.0.0.1:8080", "ollama")),
    ("box", Backend("http://box:11434", "ollama")),
])
def test_parse_backend(value: str, expected: Backend) -> None:
    got = hosts.parse_backend(value)
    assert got == expected
    # The label is how a user wrote it back: the prefix says the kind.
    assert got.label == ("openai+" if expected.kind == "openai" else "") + expected.url


def test_backends_default() -> None:
    for env in ({}, {"OLLAMA_HOST": ""}):  # set but empty: as unset
        got = load({}, env)
        assert got.backends == [Backend("http://127.0.0.1:11434")] and got.source("hosts") == "default"


def test_backends_from_ollama_host() -> None:
    got = load({"hosts": []}, {"OLLAMA_HOST": "gpu-box:12345"})  # a repeatable flag never given
    assert got.backends == [Backend("http://gpu-box:12345")] and got.source("hosts") == "env"
    assert load({}, {"OLLAMA_HOST": "openai+http://llama:8080"}).backends == [Backend("http://llama:8080", "openai")]


def test_backend_flags_win_over_ollama_host() -> None:
    flags = ["a", "openai+b:1", "http://a:11434", "c:2"]  # the third repeats the first
    got = load({"hosts": flags}, {"OLLAMA_HOST": "gpu-box:12345"})
    assert got.backends == [Backend("http://a:11434"), Backend("http://b:1", "openai"), Backend("http://c:2")]
    assert got.source("hosts") == "flag"


def test_a_bad_host_fails_only_the_commands_that_use_backends() -> None:
    got = load({}, {"OLLAMA_HOST": "ftp://box"})  # `status` never talks to a backend
    with pytest.raises(UsageError, match="unsupported scheme"):
        got.backends


# ---------------------------------------------------------- data dir, precedence


def test_data_dir_flag_wins(tmp_path: Path) -> None:
    env = {"OLLAMA_Q_DATA_DIR": str(tmp_path / "env")}
    for flag in (tmp_path / "flag", str(tmp_path / "flag")):
        got = load({"data_dir": flag}, env)
        assert got.data_dir == tmp_path / "flag" and got.source("data_dir") == "flag"


def test_data_dir_variable_over_platform_default(tmp_path: Path) -> None:
    got = load({"data_dir": None}, {"OLLAMA_Q_DATA_DIR": str(tmp_path / "env")})
    assert got.data_dir == tmp_path / "env" and got.source("data_dir") == "env"


def test_data_dir_expands_the_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load({}, {"OLLAMA_Q_DATA_DIR": "~/q"}).data_dir == tmp_path / "q"
    assert load({"data_dir": "~/flag"}, {}).data_dir == tmp_path / "flag"


@pytest.mark.parametrize("env", [{}, {"OLLAMA_Q_DATA_DIR": ""}])
def test_data_dir_platform_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str]) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    got = load({}, env)
    assert got.data_dir == Path(platformdirs.user_data_dir("ollama-q")) and got.source("data_dir") == "default"
    if sys.platform.startswith("linux"):
        assert got.data_dir == tmp_path / "xdg" / "ollama-q"


def test_no_test_reaches_the_users_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # This test asks for no data dir: conftest's autouse `data_dir` gives it one of its own,
    # and (on Linux) a platform default of its own too.
    assert load({}).data_dir == tmp_path / "store"
    monkeypatch.delenv("OLLAMA_Q_DATA_DIR")
    if sys.platform.startswith("linux"):
        assert tmp_path in load({}).data_dir.parents


def test_the_environment_is_read_when_none_is_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OLLAMA_Q_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:12345")
    got = load({})
    assert (got.data_dir, got.hosts) == (tmp_path / "env", ("gpu-box:12345",))


def test_flag_over_variable_over_file_over_default(tmp_path: Path) -> None:
    flag, env, file = tmp_path / "flag", {"OLLAMA_Q_DATA_DIR": str(tmp_path / "env")}, {"data_dir": str(tmp_path / "file")}
    assert load({"data_dir": flag}, env, file).data_dir == flag
    assert load({}, env, file).data_dir == tmp_path / "env"
    assert load({}, {}, file).data_dir == tmp_path / "file"
    got = load({}, {}, file)
    assert (got.source("data_dir"), got.source("hosts")) == ("file", "default")
    # Settings without a variable: the flag, else the file, else the default.
    assert load({"concurrency": 3}, {}, {"concurrency": 5}).daemon.concurrency == 3
    got = load({}, {}, {"concurrency": 5, "grace": 2})
    assert (got.daemon.concurrency, got.source("concurrency")) == (5, "file")
    assert (got.daemon.grace, got.source("grace")) == (2.0, "file")  # a number in the file: seconds
    got = load({}, {})
    assert got.daemon == DaemonSettings() and not got.json
    assert {got.source(name) for name in ("concurrency", "grace", "json", "seed")} == {"default"}


def test_the_store_flag_over_variable_over_file_and_lmdb_in_the_data_dir_by_default(tmp_path: Path) -> None:
    url, env, file = "postgresql://q@db/queue", {"OLLAMA_Q_STORE": "postgres://q@env/queue"}, {"store": "~/file"}
    got = load({"store": url}, env, file)
    assert (got.store, got.location, got.source("store")) == (url, url, "flag")
    got = load({}, env, file)
    assert (got.location, got.source("store")) == ("postgres://q@env/queue", "env")
    got = load({}, {}, file)
    assert (got.location, got.source("store")) == (Path(file["store"]).expanduser(), "file")
    got = load({"data_dir": tmp_path}, {})
    assert (got.store, got.location, got.source("store")) == (None, tmp_path, "default")
    assert load({"store": str(tmp_path / "q")}, {}).location == tmp_path / "q"  # a path: LMDB there


def test_a_store_url_of_another_kind_is_refused_without_echoing_it() -> None:
    for flags, env in (({"store": "mysql://q:s3cret@db/queue"}, {}), ({}, {"OLLAMA_Q_STORE": "mysql://q:s3cret@db/q"})):
        with pytest.raises(UsageError) as caught:
            load(flags, env)
        assert "postgresql://" in caught.value.message and "s3cret" not in caught.value.message


def test_a_switch_left_off_is_not_given() -> None:
    # Typer cannot tell `--drain` absent from off, so an off switch lets the file speak.
    got = load({"drain": False, "json": False}, {}, {"drain": True})
    assert got.daemon.drain and got.source("drain") == "file" and got.source("json") == "default"
    got = load({"drain": True, "json": True}, {})
    assert got.daemon.drain and got.json and got.source("json") == "flag"


def test_daemon_flags_are_parsed_into_typed_values() -> None:
    got = load({"concurrency": 4, "grace": "2m", "retry_backoff": "500ms", "keep_finished": "7d",
                "model_concurrency": ["llama3.1:70b=1", "all-minilm=8"]}, {})
    assert got.daemon == DaemonSettings(concurrency=4, grace=120.0, retry_backoff=0.5, keep_finished=604800.0,
                                        model_concurrency={"llama3.1:70b": 1, "all-minilm": 8})
    assert load({}, {}, {"model_concurrency": {"llama3.2": 2}}).daemon.model_concurrency == {"llama3.2": 2}


@pytest.mark.parametrize(("flags", "file", "message"), [
    ({"concurrency": 0}, {}, "--concurrency must be at least 1"),
    ({}, {"concurrency": "4"}, "'concurrency' in the config file must be a whole number"),
    ({}, {"drain": "yes"}, "'drain' in the config file must be true or false"),
    ({"grace": "soon"}, {}, "invalid duration 'soon'"),
    ({}, {"grace": -1}, "'grace' in the config file must be a duration"),
    ({"model_concurrency": ["llama3.2"]}, {}, "malformed --model-concurrency 'llama3.2'"),
    ({"model_concurrency": ["llama3.2=0"]}, {}, "malformed --model-concurrency"),
    ({}, {"model_concurrency": 3}, "must be NAME=N pairs"),
    ({}, {"hosts": []}, "'hosts' in the config file must name one host or more"),
    ({}, {"concurency": 2}, "unknown setting 'concurency'"),
])
def test_bad_settings_say_where_they_came_from(flags: dict, file: dict, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        load(flags, {}, file)


@pytest.mark.parametrize("name", ["timeout", "hook_timeout", "cache.ttl"])
def test_every_duration_that_must_be_positive_is_refused_at_0_in_the_same_words(name: str) -> None:
    # hook_timeout had a checker of its own ("longer than 0s"); one checker, one message.
    with pytest.raises(UsageError, match=re.escape(f"'{name}' in the config file must be more than 0")):
        load({}, {}, {name: 0})


# -------------------------------------------------------------------- durations


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5),
    ("30s", 30),
    ("10m", 600),
    ("2h", 7200),
    ("7d", 604800),
    ("12", 12),
    ("0", 0),
    ("3650d", 3650 * 86400),  # ten years, the longest
    ("1.5h", 5400),
    ("0.25s", 0.25),
    ("1ms", 0.001),
    (" 5m ", 300),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", " ", "abc", "-5s", "5x", "ms", "m5", "5 minutes",
                                  "inf", "nan", "5s5", "5w", "\u0661s", "\uff15m",
                                  "3651d", "99999999d", "9" * 400])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="duration"):
        parse_duration(text)


# ------------------------------------------------------------------------ times


def epoch(*args: int, micro: int = 0) -> float:
    return datetime(*args, micro, tzinfo=timezone.utc).timestamp()  # type: ignore[misc]


@pytest.fixture
def utc_plus_3() -> Iterator[None]:
    # A fixed local zone (POSIX spelling: "XYZ-3" is three hours east of UTC), so that
    # "local time" means the same on every machine.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "XYZ-3")
        time.tzset()
        yield
    time.tzset()


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-24T03:00:00Z", epoch(2026, 11, 24, 3, 0, 0)),
    ("2026-11-24T03:00:00z", epoch(2026, 11, 24, 3, 0, 0)),
    ("2026-11-24T03:00:00.250Z", epoch(2026, 11, 24, 3, 0, 0, micro=250000)),
    ("2026-11-24T03:00:00+00:00", epoch(2026, 11, 24, 3, 0, 0)),
    ("2026-11-24T03:00:00+01:00", epoch(2026, 11, 24, 2, 0, 0)),
    ("2026-11-24T03:00:00-05:30", epoch(2026, 11, 24, 8, 30, 0)),
    # no offset: local time (here UTC+3)
    ("2026-11-24T03:00:00", epoch(2026, 11, 24, 0, 0, 0)),
    ("2026-11-24T03:00:00.5", epoch(2026, 11, 24, 0, 0, 0, micro=500000)),
    # the bounds
    ("1970-01-01T00:00:00Z", 0.0),
    ("1970-01-01T03:00:00", 0.0),
    ("9999-12-31T23:59:59Z", epoch(9999, 12, 31, 23, 59, 59)),
    ("9999-12-31T23:59:59+00:00", epoch(9999, 12, 31, 23, 59, 59)),
])
def test_parse_time(utc_plus_3: None, text: str, expected: float) -> None:
    assert parse_time(text, 0.0) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text", ["", "tomorrow", "2026-13-01T00:00:00Z",
                                  "2026-11-24T25:00:00Z", "2026-11-24T03:00:00+25:00",
                                  "24/11/2026 03:00", "2026-11-24T03:00:00 UTC",
                                  # before 1970 or after 9999 (UTC), local or not
                                  "1969-12-31T23:59:59Z", "0026-11-24T03:00:00Z", "1970-01-01T02:59:59",
                                  "0001-01-01T00:00:00", "0001-01-01T00:00:00+01:00",
                                  "9999-12-31T23:00:00-14:00", "9999-12-31T23:59:59.5Z"])
def test_parse_time_refuses(utc_plus_3: None, text: str) -> None:
    with pytest.raises(UsageError, match="time"):
        parse_time(text, 0.0)


@pytest.mark.parametrize(("value", "text"), [
    (None, None),
    (0.0, "1970-01-01T00:00:00.000Z"),
    (1795423200.123, "2026-11-23T08:40:00.123Z"),
    (1795423200.0, "2026-11-23T08:40:00.000Z"),
    (1.9999, "1970-01-01T00:00:01.999Z"),  # milliseconds are cut, never rounded up a second
])
def test_format_time(value: float | None, text: str | None) -> None:
    assert format_time(value) == text


def test_format_time_is_utc_whatever_the_local_zone(utc_plus_3: None) -> None:
    assert format_time(epoch(2026, 11, 24, 3, 0, 0)) == "2026-11-24T03:00:00.000Z"


def test_times_round_trip_to_the_millisecond() -> None:
    for moment in (1795423200.123, 1700000000.5, 86400.001):
        assert parse_time(format_time(moment), 0.0) == pytest.approx(moment, abs=1e-3)


# ------------------------------------------------------------ through the command line


@pytest.mark.parametrize(("args", "env", "message"), [
    (["-c", "0"], {}, "--concurrency must be at least 1"),
    (["--host", "ftp://box"], {}, "unsupported scheme 'ftp'"),
    ([], {"OLLAMA_HOST": "ftp://box"}, "unsupported scheme 'ftp'"),
    (["--grace", "soon"], {}, "invalid duration 'soon'"),
    (["--retry-backoff", "-1s"], {}, "invalid duration '-1s'"),
    (["--model-concurrency", "llama3.2"], {}, "malformed --model-concurrency 'llama3.2'"),
    (["--max-overtake", "-1"], {}, "--max-overtake must be at least 0"),
])
def test_bad_daemon_settings_are_usage_errors_that_write_nothing(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], message: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert message in assert_one_error(run_main("daemon", *args), 2)
    assert not data_dir.exists()


# ------------------------------------------------------------------ the config file


def write_config(tmp_path: Path, text: str) -> Path:
    """The config file where the user's is (conftest points XDG_CONFIG_HOME into tmp_path)."""
    path = tmp_path / "xdg-config" / "ollama-q" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# Each key the file may set: a line of the file, the typed value it gives (read from the
# Settings), a flag or variable over it and what that gives.
FILE_KEYS = [
    ("data_dir", 'data_dir = "~/q"', lambda s: s.data_dir, None, None),
    ("store", 'store = "postgresql://q@db/queue"', lambda s: s.store, ("env", "postgres://q@env/q"), "postgres://q@env/q"),
    ("hosts", 'hosts = ["a:1", "openai+b:2"]', lambda s: s.hosts, ("flag", ["c:3"]), ("c:3",)),
    ("priority", 'priority = "HIGH"', lambda s: s.priority.value, ("flag", Priority.LOW), "low"),
    ("retries", "retries = 7", lambda s: s.retries, ("flag", 0), 0),
    ("timeout", 'timeout = "10m"', lambda s: s.timeout, ("flag", "30s"), 30.0),
    ("keep_alive", 'keep_alive = "-1"', lambda s: s.keep_alive, ("flag", "5m"), 300.0),
    ("concurrency", "concurrency = 4", lambda s: s.daemon.concurrency, ("flag", 2), 2),
    ("model_concurrency", '[model_concurrency]\n"llama3.1:70b" = 1', lambda s: dict(s.daemon.model_concurrency),
     ("flag", ["m=2"]), {"m": 2}),
    ("keep_finished", 'keep_finished = "7d"', lambda s: s.daemon.keep_finished, ("flag", "1h"), 3600.0),
    ("grace", "grace = 5", lambda s: s.daemon.grace, ("flag", "1s"), 1.0),
    ("retry_backoff", 'retry_backoff = "2s"', lambda s: s.daemon.retry_backoff, ("flag", "3s"), 3.0),
    ("max_overtake", "max_overtake = 0", lambda s: s.daemon.max_overtake, ("flag", 9), 9),
    ("metrics_addr", "metrics_addr = 9100", lambda s: s.daemon.metrics_addr, ("flag", "0.0.0.0:9200"), "0.0.0.0:9200"),
    ("on_finish", 'on_finish = "notify-send done"', lambda s: s.daemon.on_finish, ("flag", "true"), "true"),
    ("hook_timeout", 'hook_timeout = "5m"', lambda s: s.daemon.hook_timeout, ("flag", "1s"), 1.0),
    ("log_level", 'log_level = "warning"', lambda s: s.daemon.log_level, ("env", "DEBUG"), "debug"),
    ("cache.ttl", '[cache]\nttl = "7d"', lambda s: s.cache.ttl, None, None),
    ("cache.max_bytes", '[cache]\nmax_bytes = "512MiB"', lambda s: s.cache.max_bytes, None, None),
    ("cache.semantic", "cache.semantic = true", lambda s: s.cache.semantic, None, None),
    ("cache.embedding_model", '[cache]\nembedding_model = "nomic-embed-text"', lambda s: s.cache.embedding_model,
     None, None),
    ("cache.similarity", "[cache]\nsimilarity = 0.9", lambda s: s.cache.similarity, None, None),
    ("routing.default_model", '[routing]\ndefault_model = "llama3.2"', lambda s: s.routing.default_model, None, None),
    ("routing.min_samples", "[routing]\nmin_samples = 20", lambda s: s.routing.min_samples, None, None),
    ("routing.explore", "[routing]\nexplore = 0.1", lambda s: s.routing.explore, None, None),
]
FILE_VALUES = {
    "data_dir": None, "store": "postgresql://q@db/queue", "hosts": ("a:1", "openai+b:2"), "priority": "high",
    "retries": 7, "timeout": 600.0, "keep_alive": -1.0, "concurrency": 4, "model_concurrency": {"llama3.1:70b": 1},
    "keep_finished": 604800.0, "grace": 5.0, "retry_backoff": 2.0, "max_overtake": 0, "metrics_addr": "127.0.0.1:9100",
    "on_finish": "notify-send done", "hook_timeout": 300.0, "log_level": "warning", "cache.ttl": 604800.0, "cache.max_bytes": 512 * 2**20,
    "cache.semantic": True, "cache.embedding_model": "nomic-embed-text", "cache.similarity": 0.9,
    "routing.default_model": "llama3.2", "routing.min_samples": 20, "routing.explore": 0.1,
}
VARIABLES = {"data_dir": "OLLAMA_Q_DATA_DIR", "store": "OLLAMA_Q_STORE", "hosts": "OLLAMA_HOST",
             "log_level": "OLLAMA_Q_LOG"}


def test_every_key_of_the_contract_is_in_the_table() -> None:
    contract = {"hosts", "concurrency", "model_concurrency", "retries", "priority", "timeout", "keep_alive",
                "keep_finished", "metrics_addr", "on_finish", "log_level", "store", "cache.ttl", "cache.max_bytes",
                "cache.semantic", "cache.embedding_model", "cache.similarity", "routing.default_model",
                "routing.min_samples", "routing.explore"}
    assert contract <= {k for k, key in KEYS.items() if key.in_file} == {row[0] for row in FILE_KEYS}


@pytest.mark.parametrize(("name", "line", "get", "over", "over_value"), FILE_KEYS, ids=[r[0] for r in FILE_KEYS])
def test_each_key_from_the_file_and_what_wins_over_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, line: str, get, over, over_value) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for variable in VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    default = load({}, command="config")
    assert default.source(name) == "default"
    write_config(tmp_path, line + "\n")
    got = load({}, command="config")
    expected = tmp_path / "q" if name == "data_dir" else FILE_VALUES[name]
    assert (get(got), got.source(name)) == (expected, "file")
    assert shown(got)[name] == {"value": plain(get(got)), "source": "file"}
    if over is None:
        return
    kind, value = over
    if kind == "flag":
        got = load({name: value}, command="config")
    else:
        monkeypatch.setenv(VARIABLES[name], value)
        got = load({}, command="config")
    assert (get(got), got.source(name)) == (over_value, kind)
    if name in VARIABLES and kind == "flag":  # the variable is over the file, under the flag
        monkeypatch.setenv(VARIABLES[name], "x:9")
        assert load({}, command="config").source(name) == "env"
        assert load({name: value}, command="config").source(name) == "flag"


def test_dotted_keys_as_flags_and_tables_or_dotted_lines_in_the_file(tmp_path: Path) -> None:
    write_config(tmp_path, 'cache.ttl = "1h"\n[routing]\nmin_samples = 2\n')
    got = load({"cache_semantic": True}, command="config")
    assert (got.cache.ttl, got.cache.semantic, got.routing.min_samples) == (3600.0, True, 2)
    assert (got.source("cache.ttl"), got.source("cache.semantic"), got.source("cache.similarity")) == \
        ("file", "flag", "default")


def the_file(tmp_path: Path) -> str:
    return str(tmp_path / "xdg-config" / "ollama-q" / "config.toml")


@pytest.mark.parametrize(("text", "line", "message"), [
    ('retries = "five"\n', 1, "'retries' in {file} (line 1) must be a whole number"),
    ('priority = "high"\nretires = 3\n', 2, "unknown key 'retires' in {file} (line 2)"),
    ("[cache]\nttl = 0\n", 2, "'cache.ttl' in {file} (line 2) must be more than 0"),
    ('\n[cahce]\nttl = "1d"\n', 2, "unknown key 'cahce' in {file} (line 2)"),
    ("[cache]\nsemantic = 1\n", 2, "'cache.semantic' in {file} (line 2) must be true or false"),
    ("[routing]\nexplore = 2\n", 2, "'routing.explore' in {file} (line 2) must be a number from 0 to 1"),
    ("[routing]\nrouter = 1\n", 2, "unknown key 'routing.router' in {file} (line 2)"),
    ("cache = 3\n", 1, "'cache' in {file} (line 1) must be a table of settings ([cache])"),
    ('priority = "asap"\n', 1, "'priority' in {file} (line 1): unknown priority 'asap'"),
    ("json = true\n", 1, "unknown key 'json' in {file} (line 1)"),
    ("[model_concurrency]\nm = 0\n", 1, "'model_concurrency' in {file} (line 1)"),
    ("retries = \n", 1, "the config file {file} is not TOML: Invalid value (at line 1, column 11)"),
    ('hosts = ["a" "b"]\n', 1, "the config file {file} is not TOML"),
    ("started = 2026-01-01T00:00:00Z\n", 1, "unknown key 'started'"),
    ('store = "mysql://u:s3cret@h/db"\n', 1, "'store' in {file} (line 1) must be a folder or a postgresql:// URL"),
])
def test_a_bad_config_file_is_one_error_naming_file_line_and_key_and_writes_nothing(
        data_dir: Path, tmp_path: Path, text: str, line: int, message: str) -> None:
    write_config(tmp_path, text)
    for command in (("submit", "m", "x"), ("daemon",), ("config", "--json"), ("info",)):
        error = assert_one_error(run_main(*command), 2)
        assert message.format(file=the_file(tmp_path)) in error and "s3cret" not in error
        assert f"line {line}" in error
    assert not data_dir.exists()
    assert not (tmp_path / "xdg-cache" / "ollama-q" / "config.marshal").exists()  # nothing kept of it


def test_the_config_file_at_ollama_q_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text("retries = 9\n")
    write_config(tmp_path, "retries = 1\n")
    monkeypatch.setenv("OLLAMA_Q_CONFIG", str(path))
    assert load({}, command="submit").retries == 9
    assert ok_json(run_main("config", "--json"))["path"] == str(path)
    monkeypatch.setenv("OLLAMA_Q_CONFIG", "")  # set but empty: as unset
    assert load({}, command="submit").retries == 1


def test_config_json_shape_and_sources(monkeypatch: pytest.MonkeyPatch, data_dir: Path, tmp_path: Path) -> None:
    write_config(tmp_path, 'priority = "high"\nconcurrency = 3\n[cache]\nsemantic = true\n')
    monkeypatch.setenv("OLLAMA_Q_LOG", "error")
    out = ok_json(run_main("--store", str(tmp_path / "s"), "config", "--json"))
    assert set(out) == {"path", "values"} and out["path"] == the_file(tmp_path)
    assert set(out["values"]) == {k for k, key in KEYS.items() if key.in_file}
    assert all(set(v) == {"value", "source"} for v in out["values"].values())
    assert out["values"]["priority"] == {"value": "high", "source": "file"}
    assert out["values"]["concurrency"] == {"value": 3, "source": "file"}
    assert out["values"]["cache.semantic"] == {"value": True, "source": "file"}
    assert out["values"]["log_level"] == {"value": "error", "source": "env"}
    assert out["values"]["store"] == {"value": str(tmp_path / "s"), "source": "flag"}
    assert out["values"]["data_dir"] == {"value": str(data_dir), "source": "env"}
    assert out["values"]["retries"] == {"value": 3, "source": "default"}
    assert not data_dir.exists() and not (tmp_path / "s").exists()  # config opens no store


def test_config_never_shows_a_store_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_config(tmp_path, 'store = "postgresql://q:s3cret@db/queue"\n')
    out = run_main("config")
    assert out.returncode == 0 and "s3cret" not in out.stdout and "postgresql://q@db/queue" in out.stdout
    assert "s3cret" not in ok_json(run_main("config", "--json"))["values"]["store"]["value"]


def test_config_human_table(tmp_path: Path) -> None:
    out = run_main("config")
    assert out.returncode == 0 and f"config file: {the_file(tmp_path)} (none)" in out.stdout
    assert re.search(r"^retries\s+3\s+default\s*$", out.stdout, flags=re.MULTILINE)


def test_submit_takes_its_defaults_from_the_file_and_its_flags_over_them(tmp_path: Path) -> None:
    write_config(tmp_path, 'priority = "urgent"\nretries = 1\ntimeout = "2m"\nkeep_alive = "1h"\n')
    job = ok_json(run_main("status", str(ok_json(run_main("submit", "m", "x", "--json"))["id"]), "--json"))
    assert (job["priority"], job["max_attempts"]) == ("urgent", 2)
    flagged = ok_json(run_main("submit", "m", "y", "--json", "-p", "low", "--retries", "0", "--timeout", "5s",
                               "--keep-alive", "0"))["id"]
    assert ok_json(run_main("status", str(flagged), "--json"))["priority"] == "low"
    with open_store(load({}).location) as store:
        first, second = store.get_jobs([1, flagged])
    assert (first.timeout, first.keep_alive, first.max_attempts) == (120.0, 3600.0, 2)
    assert (second.timeout, second.keep_alive, second.max_attempts) == (5.0, 0.0, 1)


def test_a_command_reads_the_file_only_for_settings_no_flag_or_variable_gave(
        monkeypatch: pytest.MonkeyPatch, data_dir: Path, tmp_path: Path) -> None:
    ok_json(run_main("submit", "m", "x", "--json"))
    write_config(tmp_path, "not toml at all\n")
    monkeypatch.setenv("OLLAMA_Q_STORE", str(data_dir))
    assert ok_json(run_main("status", "1", "--json"))["id"] == 1  # its store is settled: no file
    assert "not TOML" in assert_one_error(run_main("submit", "m", "x"), 2)  # its defaults are in the file
    monkeypatch.delenv("OLLAMA_Q_STORE")
    assert "not TOML" in assert_one_error(run_main("status", "1"), 2)  # the store may be in the file


def test_a_parse_is_kept_until_the_file_changes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_config(tmp_path, "retries = 5\n")
    kept = tmp_path / "xdg-cache" / "ollama-q" / "config.marshal"
    assert load({}, command="submit").retries == 5 and kept.exists()
    parses: list[Path] = []
    with monkeypatch.context() as patched:
        patched.setattr(file, "parse", lambda p: parses.append(p) or {})
        assert load({}, command="submit").retries == 5 and parses == []  # from the cache
    path.write_text("retries = 6\n")  # same size: the mtime and ctime tell
    assert load({}, command="submit").retries == 6
    kept.write_bytes(b"\x00garbage")  # a broken cache costs a parse, never an error
    assert load({}, command="submit").retries == 6
    other = tmp_path / "other.toml"
    other.write_text("retries = 8\n")
    monkeypatch.setenv("OLLAMA_Q_CONFIG", str(other))
    assert load({}, command="submit").retries == 8


def test_a_cache_folder_that_cannot_be_written_only_costs_a_parse(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "xdg-cache").write_text("a file where the folder would be")
    write_config(tmp_path, "retries = 5\n")
    assert load({}, command="submit").retries == 5


@pytest.mark.parametrize("env", [
    {"XDG_CONFIG_HOME": "/x/conf", "XDG_DATA_HOME": "/x/data", "XDG_CACHE_HOME": "/x/cache", "HOME": "/home/u"},
    {"HOME": "/home/u"},
    {"HOME": "/home/u/", "XDG_CONFIG_HOME": "relative", "XDG_DATA_HOME": "", "XDG_CACHE_HOME": " "},
    {"HOME": "/"},
], ids=["xdg", "home", "relative-xdg", "root-home"])
def test_the_users_folders_are_platformdirs_own(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for kind in ("data", "config", "cache"):
        assert user_dir(kind) == getattr(platformdirs, f"user_{kind}_dir")("ollama-q")


def test_the_file_is_read_for_a_command_named_after_options_with_values(tmp_path: Path) -> None:
    # command_word once took --store's value for the command: submit then read no defaults.
    write_config(tmp_path, 'priority = "urgent"\n')
    store = str(tmp_path / "q")
    job = ok_json(run_main("--store", store, "submit", "m", "x", "--json"))
    assert ok_json(run_main("--store", store, "status", str(job["id"]), "--json"))["priority"] == "urgent"
