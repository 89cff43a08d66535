"""`submit --category`, `feedback` and `stats` through the real CLI: bad input refused with one
error line and nothing written; the figures of jobs run by a daemon against the emulator; and
each recommendation on a store built to trigger it, and none on a healthy one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ollama_cli.insight import advice
from ollama_cli.jobs import ErrorType, JobError, JobStatus
from ollama_cli.store import open_store
from ollama_cli.store.base import Engine
from ollama_cli.store.lmdb_engine import LmdbEngine
from ollama_cli.store.records import Settle, SettleKind
from tests.emulator import Emulator
from tests.helpers.cli import assert_one_error, ok_json, run_main
from tests.helpers.daemon import drain
from tests.helpers.engines import claim, complete
from tests.helpers.jobs import make_spec

NOW = time.time()
T = (NOW // 3600 - 2) * 3600  # two hours ago, at the start of the hour


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("category", ["", "a b", "x" * 65, "naïve", "a/b", "a:b"])
def test_submit_refuses_a_bad_category_and_writes_nothing(data_dir: Path, category: str) -> None:
    assert_one_error(run_main("submit", "llama3.2", "hi", "--category", category), 2)
    assert not data_dir.exists()


def test_submit_stores_the_category(data_dir: Path) -> None:
    assert ok_json(run_main("submit", "llama3.2", "hi", "--category", "code-review_2.0", "--json"))["id"] == 1
    assert ok_json(run_main("status", "1", "--json"))["category"] == "code-review_2.0"


@pytest.mark.parametrize(("args", "code"), [
    (["1", "--score", "1.5"], 2), (["1", "--score", "-1.01"], 2), (["1", "--score", "nan"], 2),
    (["1", "--score", "inf"], 2), (["1", "--score", "good"], 2), (["x", "--score", "1"], 2),
    (["1"], 2), (["1", "--score", "1", "--category", "a b"], 2),
    (["1", "--score", "1", "--reason", "\udcff"], 2),
    (["2", "--score", "1"], 1),  # pending, not completed
    (["9", "--score", "1"], 1),  # unknown
])
def test_feedback_refuses_what_it_must(data_dir: Path, args: list[str], code: int) -> None:
    with open_store(data_dir) as store:
        job_id = _finish(store, category="code")
        store.submit(make_spec(), T)
    res = run_main("feedback", *args)
    if code == 2 and args == ["1"]:  # Typer's own usage error: exit 2, said on stderr
        assert res.returncode == 2
    else:
        assert_one_error(res, code)
    with open_store(data_dir) as store:
        assert store.get_job(job_id).feedback is None


def test_feedback_rates_and_rates_again(data_dir: Path) -> None:
    with open_store(data_dir) as store:
        _finish(store, category="code")
    assert ok_json(run_main("feedback", "1", "--score", "0.5", "--reason", "ok\x1b[31m", "--json")) == \
        {"id": 1, "score": 0.5, "reason": "ok [31m", "category": "code"}
    assert run_main("feedback", "1", "--score", "-1", "--category", "math").stdout == "job 1 rated -1 (math)\n"
    job = ok_json(run_main("status", "1", "--json"))
    assert (job["category"], job["feedback"]) == ("math", {"score": -1.0, "reason": None, "category": "math"})
    run_main("feedback", "1", "--score", "0.25", "--reason", "so so")
    shown = run_main("status", "1").stdout
    assert "\ncategory      math " in shown and "\nfeedback      +0.25: so so " in shown
    (row,) = ok_json(run_main("stats", "--json"))["models"]
    assert row["feedback"] == {"count": 1, "mean": 0.25}
    assert row["categories"] == {"math": {"jobs": 1, "feedback_count": 1, "feedback_mean": 0.25}}


def test_stats_refuses_bad_options(data_dir: Path) -> None:
    assert_one_error(run_main("stats", "--since", "soon"), 2)
    assert_one_error(run_main("stats", "--model", "no good"), 2)


# ------------------------------------------------------------ with a daemon


def test_stats_of_jobs_a_daemon_ran_against_the_emulator(data_dir: Path) -> None:
    with open_store(data_dir) as store:
        # One model loaded at a time, each load 0.4 s: every switch of model is a load.
        with Emulator(["a", "b"], load_time=0.4, max_loaded=1) as emu:
            for i, model in enumerate(["a", "b", "a", "b"]):
                store.submit(make_spec(f"q{i}", model=model, category="code", max_attempts=1), store.now())
            store.submit(make_spec("gone", model="missing", max_attempts=1), store.now())
            drain(store, emu.url, concurrency=1)
            loads = emu.loads
        store.submit(make_spec("q0", model="a"), store.now())  # answered from the cache
        store.feedback(1, 1.0, None, None, store.now())
    data = ok_json(run_main("stats", "--json", "--since", "1h"))
    rows = {r["model"]: r for r in data["models"]}
    a = rows["a:latest"]
    assert (a["jobs"], a["completed"], a["cache_hits"], a["success_rate"]) == (3, 3, 1, 1.0)
    assert a["loads"] + rows["b:latest"]["loads"] == loads >= 2  # the emulator's own count
    assert a["load_s"] >= 0.4 * a["loads"]
    assert a["generated_tokens"] > 0 and a["tokens_per_s"] > 0 and a["prompt_tokens"] > 0
    assert a["latency_s"]["p95"] >= 0.4 >= a["latency_s"]["p50"] > 0  # one of two ran with its load
    assert a["queue_wait_s"]["p50"] is not None
    assert a["categories"] == {"code": {"jobs": 2, "feedback_count": 1, "feedback_mean": 1.0}}
    assert rows["missing:latest"]["failed"] == 1 and rows["missing:latest"]["success_rate"] == 0.0
    assert [r["model"] for r in ok_json(run_main("stats", "--json", "--model", "B"))["models"]] == ["b:latest"]
    assert run_main("clean").returncode == 0
    assert ok_json(run_main("stats", "--json", "--since", "1h"))["models"] == data["models"]


# --------------------------------------------------------------- recommendations


def _finish(store: Engine, *, model: str = "m", category: str | None = None, wait: float = 1.0, run: float = 2.0,
            load_s: float = 0.0, error: ErrorType | None = None, score: float | None = None) -> int:
    """One job submitted at T, started after `wait`, finished after `run`, as given."""
    job = store.submit(make_spec(model=model, category=category), T)
    (claimed,) = claim(store, T + wait)
    figures = {"load_duration": int(load_s * 1e9), "eval_count": 50, "eval_duration": int(run * 1e9)}
    if error is None:
        complete(store, claimed, T + wait + run, result={"response": "x", "stats": figures})
    else:
        assert claimed.lease is not None
        store.settle_and_claim([Settle(SettleKind.FAIL, claimed.id, claimed.lease.token,
                                       error=JobError(error, "no"))], T + wait + run, owner="d1")
    if score is not None:
        store.feedback(job.id, score, None, None, T + 100)
    return job.id


def _advice(data_dir: Path) -> list[dict[str, Any]]:
    return ok_json(run_main("stats", "--json"))["recommendations"]


def test_a_healthy_store_gets_no_advice(data_dir: Path) -> None:
    with open_store(data_dir) as store:
        for i in range(12):
            _finish(store, model="a" if i % 2 else "b", category="code", score=0.5)
    assert _advice(data_dir) == []
    assert advice.recommendations([], {"semantic": {"entries": 500, "hits": 100}}) == []


def test_a_model_loaded_again_and_again(data_dir: Path) -> None:
    with open_store(data_dir) as store:
        for _ in range(10):
            _finish(store, model="a", load_s=3.0)
    (rec,) = _advice(data_dir)
    assert (rec["kind"], rec["model"]) == ("reloads", "a:latest")
    assert "loaded 10 times for 10 jobs (1.00 loads per job, 30.0 s spent loading)" in rec["message"]


def test_jobs_that_wait_far_longer_than_they_run(data_dir: Path) -> None:
    with open_store(data_dir) as store:
        for _ in range(10):
            _finish(store, model="a", wait=100.0, run=2.0)
    (rec,) = _advice(data_dir)
    assert (rec["kind"], rec["model"]) == ("waiting", "a:latest")
    assert "for 2.0 s of running" in rec["message"] and "--concurrency" in rec["message"]


def test_a_model_failing_often_with_its_top_error(data_dir: Path) -> None:
    with open_store(data_dir) as store:
        for error in [None] * 10 + [ErrorType.TIMEOUT] * 4 + [ErrorType.BACKEND_ERROR]:
            _finish(store, model="a", error=error)
    (rec,) = _advice(data_dir)
    assert (rec["kind"], rec["model"]) == ("failing", "a:latest")
    assert "failed 5 of 15 jobs (33%), most often timeout (4)" in rec["message"]


def test_a_category_another_model_serves_better(data_dir: Path) -> None:
    with open_store(data_dir) as store:
        for i in range(10):
            _finish(store, model="small", category="code", score=0.1 if i < 6 else None)
        for score in (0.9, 0.8, 0.9, 1.0, 0.9, 0.9):
            _finish(store, model="big", category="code", score=score)
    (rec,) = _advice(data_dir)
    assert (rec["kind"], rec["model"]) == ("category", "small:latest")
    assert "category code: big:latest scores 0.90 (n=6, 95% lower bound 0.83) where small:latest scores " \
        "0.10 (n=6, 10 jobs)" in rec["message"]


def test_too_few_ratings_compare_no_models(data_dir: Path) -> None:
    with open_store(data_dir) as store:
        for i in range(10):
            _finish(store, model="small", category="code", score=0.1 if i < 6 else None)
        for score in (1.0, 1.0, 1.0, 1.0):  # four: below the minimum
            _finish(store, model="big", category="code", score=score)
    assert _advice(data_dir) == []


def test_a_semantic_cache_that_almost_never_answers() -> None:
    (rec,) = advice.recommendations([], {"semantic": {"entries": 499, "hits": 1}})
    assert rec["kind"] == "semantic_cache" and "answered 1 of about 500 lookups (0.2%)" in rec["message"]
    # No semantic figures (a store without the semantic cache): nothing said about it.
    assert advice.recommendations([], {"entries": 3, "hits": 0, "misses": 900, "bytes": 10}) == []


def test_the_human_table_shows_the_figures_and_the_advice(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    with open_store(data_dir) as store:
        for _ in range(10):
            _finish(store, model="a", load_s=3.0, category="code", score=0.5)
    out = run_main("stats").stdout
    assert "a:latest" in out and "generate" in out and "~1.88s" in out and "+0.50 (10)" in out
    assert "code" in out and "* a:latest was loaded 10 times" in out
    assert run_main("stats", "--since", "1h").stdout.startswith("no finished jobs since ")
    assert JobStatus.COMPLETED.value in ok_json(run_main("stats", "--json"))["models"][0]


def test_a_quarantined_job_is_counted_once(data_dir: Path) -> None:
    # LMDB quarantines a job whose step raises: a finished one keeps its count, a pending
    # one counts as failed (it was written as a new record before, and counted again).
    from ollama_cli import queue

    with open_store(data_dir) as store:
        done = _finish(store)
        pending = store.submit(make_spec(), T).id
        for job_id in (done, pending, done):
            store.kv.write(lambda tx: queue.quarantine(tx, job_id, "test", T + 50))
        (bucket,) = store.stat_buckets()
        assert (bucket.fields["jobs"], bucket.fields["completed"], bucket.fields["failed"]) == (2, 1, 1)
        assert store.check() == []


def test_an_unreadable_bucket_starts_again_and_never_stops_a_job_s_end(data_dir: Path) -> None:
    from ollama_cli.codec import pack

    with open_store(data_dir) as store:
        _finish(store)
        (key, _), = list(_scan(store))
        for junk in (b"\xc1", pack({"m": "m:latest", "g": "generate", "f": {"jobs": "many"}}), pack([1])):
            store.kv.write(lambda tx: tx.put("stats", key, junk))
            _finish(store)
            (bucket,) = store.stat_buckets()
            assert (bucket.fields["jobs"], bucket.fields["completed"]) == (1, 1)


def _scan(store: LmdbEngine) -> list[tuple[bytes, bytes]]:
    with store.kv.read() as tx:
        return list(tx.scan("stats"))
