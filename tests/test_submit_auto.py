"""`submit auto --category C` through the real CLI, on stores whose rated jobs were built to
make one model the best: the routing rule's choice becomes the job's model, `status` shows
how it was chosen, the daemon says so when it starts the job, and every refusal is one error
line with nothing written."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_cli.jobs import JobType
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from ollama_cli.store.records import BackendState, DaemonInfo
from tests.emulator import Emulator
from tests.helpers.cli import assert_one_error, jobs_total, ok_json, run_cli, run_main
from tests.helpers.daemon import drain
from tests.helpers.engines import claim, complete
from tests.helpers.jobs import make_spec

T = (time.time() // 3600 - 2) * 3600  # two hours ago, at the start of the hour
GOOD, POOR = (0.9, 0.8, 1.0, 0.9, 0.9, 0.8), (0.2, 0.1, 0.3, 0.2, 0.1, 0.2)


@pytest.fixture(params=["lmdb", "postgresql"])
def where(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[list[str]]:
    """The `--store` arguments of each engine (none: LMDB in the data dir)."""
    yield [] if request.param == "lmdb" else ["--store", request.getfixturevalue("pg_store_url")]


def rate(store: Engine, model: str, scores: tuple[float, ...], category: str = "code",
         job_type: JobType = JobType.GENERATE) -> None:
    """Finish a job of `category` and `job_type` on `model` for each score, and rate it so."""
    for score in scores:
        job = store.submit(make_spec(model=model, category=category, job_type=job_type), T)
        (claimed,) = claim(store, T + 1)
        complete(store, claimed, T + 2, result={"response": "x", "stats": {"eval_count": 50, "eval_duration": 10**9}})
        store.feedback(job.id, score, None, None, T + 3)


def open_where(data_dir: Path, where: list[str]) -> Engine:
    return open_store(where[1] if where else data_dir)


def test_auto_takes_the_model_that_served_the_category_best(data_dir: Path, where: list[str]) -> None:
    with open_where(data_dir, where) as store:
        rate(store, "qwen2.5:0.5b", GOOD)
        rate(store, "llama3.2", POOR)
        rate(store, "llama3.2", (1.0,) * 6, category="chat")  # another category counts for nothing here
    out = ok_json(run_main("submit", "auto", "Write a haiku about B-trees", "--category", "code", "--json", *where))
    assert out["model"] == "qwen2.5:0.5b" and out["status"] == "pending"
    job = ok_json(run_main("status", str(out["id"]), "--json", *where))
    assert (job["model"], job["category"]) == ("qwen2.5:0.5b", "code")
    assert job["route"]["rule"] == "best" and job["route"]["rated"] == 6
    assert 0.8 < job["route"]["lower_bound"] < 0.9
    chat = ok_json(run_main("submit", "auto", "hi", "--category", "chat", "--json", *where))
    assert chat["model"] == "llama3.2:latest"


def test_with_no_model_qualified_and_no_default_auto_says_so_and_writes_nothing(data_dir: Path,
                                                                                where: list[str]) -> None:
    with open_where(data_dir, where) as store:
        rate(store, "qwen2.5:0.5b", GOOD[:4])  # below routing.min_samples
        before = store.counts()["total"]
    message = assert_one_error(run_main("submit", "auto", "hi", "--category", "code", *where), 2)
    assert "no model has 5 rated generate jobs of category 'code'" in message and "routing.default_model" in message
    with open_where(data_dir, where) as store:
        assert store.counts()["total"] == before


@pytest.mark.parametrize("args", [
    ["submit", "auto", "hi"],  # which category?
    ["submit", "auto", "hi", "--category", "not a category"],
])
def test_bad_auto_submissions_are_refused(data_dir: Path, args: list[str]) -> None:
    message = assert_one_error(run_main(*args), 2)
    assert "category" in message
    assert jobs_total(data_dir) == 0


def test_auto_for_people_and_a_fallback_equal_to_the_choice(data_dir: Path) -> None:
    with open_store(data_dir) as store:
        rate(store, "qwen2.5:0.5b", GOOD)
    res = run_main("submit", "auto", "hi", "--category", "code", "--fallback", "qwen2.5:0.5b", "--fallback", "llama3.2")
    assert res.returncode == 0 and res.stdout.startswith("job 7 queued (qwen2.5:0.5b (routing: best), medium, position 1")
    job = ok_json(run_main("status", "7", "--json"))
    assert job["fallbacks"] == ["llama3.2"]  # the chosen model is no fallback of itself
    shown = run_main("status", "7").stdout
    assert "by its ratings (lower bound 0.8" in shown and "of 6 rated jobs)" in shown


def test_the_daemon_says_the_model_was_chosen_when_it_starts_the_job(
        data_dir: Path, emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with open_store(data_dir) as store:
        rate(store, "qwen2.5:0.5b", GOOD)
    out = ok_json(run_main("submit", "auto", "hi", "--category", "code", "--json"))
    with open_store(data_dir) as store, caplog.at_level(logging.INFO, logger="ollama_q.daemon"):
        drain(store, emulator.url)
        assert store.get_job(out["id"]).status.value == "completed"
    [line] = [r.getMessage() for r in caplog.records if f"job {out['id']} started" in r.getMessage()]
    assert "(qwen2.5:0.5b, attempt 1 of 4; chosen by routing: lower bound 0.8" in line


def test_only_models_a_backend_has_are_chosen_while_a_daemon_says_what_they_have(data_dir: Path,
                                                                                 where: list[str]) -> None:
    with open_where(data_dir, where) as store:
        rate(store, "qwen2.5:0.5b", GOOD)
        rate(store, "llama3.2", POOR)
        lock = store.daemon_lock()
        store.register(DaemonInfo(lock.id, os.getpid(), ["http://gpu:11434"], 1, T, T))
        store.record_backends(lock.id, [BackendState("http://gpu:11434", lock.id, True, ("llama3.2:latest",), (), 1, 0, T)],
                              store.now())
        # Another process, as a user's: LMDB opens a store once per process.
        listed = ok_json(run_cli(data_dir, "submit", "auto", "hi", "--category", "code", "--json", *where))
        assert listed["model"] == "llama3.2:latest"  # the better model is not installed there
        store.record_backends(lock.id, [BackendState("http://gpu:11434", lock.id, True, ("llama3.2:latest",), (), 1, 0, T),
                                        BackendState("http://cpu:11434", lock.id, False, None, (), 1, 0, T)],
                              store.now())
        unknown = ok_json(run_cli(data_dir, "submit", "auto", "hi", "--category", "code", "--json", *where))
        assert unknown["model"] == "qwen2.5:0.5b"  # a backend whose list is not known yet may have it
        lock.release()
    gone = ok_json(run_main("submit", "auto", "hi", "--category", "code", "--json", *where))
    assert gone["model"] == "qwen2.5:0.5b"  # no living daemon: nothing is known of the backends


def test_auto_ranks_models_by_jobs_of_its_own_type_only(data_dir: Path, where: list[str]) -> None:
    with open_where(data_dir, where) as store:
        rate(store, "all-minilm", GOOD, job_type=JobType.EMBED)  # the best figures of `code`, all embeds
        rate(store, "llama3.2", POOR)
    out = ok_json(run_main("submit", "auto", "Write a parser", "--category", "code", "--json", *where))
    assert out["model"] == "llama3.2:latest"  # the only model rated on generate jobs of `code`
    embed = ok_json(run_main("submit", "auto", "--type", "embed", "--input", "x", "--category", "code", "--json",
                             *where))
    assert embed["model"] == "all-minilm:latest"
    message = assert_one_error(run_main("submit", "auto", "--type", "chat", "hi", "--category", "code", *where), 2)
    assert "no model has 5 rated chat jobs of category 'code'" in message


# -------------------------------------------------------- the config file's [routing]


def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    monkeypatch.setenv("OLLAMA_Q_CONFIG", str(path))


def test_the_default_model_takes_a_category_no_model_qualified_for(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config(tmp_path, monkeypatch, '[routing]\ndefault_model = "llama3.2"\n')
    with open_store(data_dir) as store:
        rate(store, "qwen2.5:0.5b", GOOD[:4])
    out = ok_json(run_main("submit", "auto", "hi", "--category", "code", "--json"))
    assert out["model"] == "llama3.2"
    assert ok_json(run_main("status", str(out["id"]), "--json"))["route"] == \
        {"rule": "default", "lower_bound": None, "rated": 0}


def test_min_samples_from_the_config(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config(tmp_path, monkeypatch, "[routing]\nmin_samples = 4\n")
    with open_store(data_dir) as store:
        rate(store, "qwen2.5:0.5b", GOOD[:4])
    assert ok_json(run_main("submit", "auto", "hi", "--category", "code", "--json"))["model"] == "qwen2.5:0.5b"


def test_explore_sends_jobs_to_a_random_model_of_the_category(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config(tmp_path, monkeypatch, "[routing]\nexplore = 1.0\n")
    with open_store(data_dir) as store:
        rate(store, "qwen2.5:0.5b", GOOD)
        rate(store, "llama3.2", POOR[:1])  # one rating: never the best, yet explored
    seen = set()
    for _ in range(40):
        out = ok_json(run_main("submit", "auto", "hi", "--category", "code", "--json"))
        job = ok_json(run_main("status", str(out["id"]), "--json"))
        assert job["route"]["rule"] == "explore"
        seen.add(out["model"])
    assert seen == {"qwen2.5:0.5b", "llama3.2:latest"}  # 40 fair draws all alike: 2 in 10^12
