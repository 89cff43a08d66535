"""The statistics' guarantees (`Engine.feedback`, `Engine.stat_buckets` in store/base.py),
through the engine interface only, on every engine: each way a job ends is counted once, in the
transaction that records it, in the bucket of its finish hour; a rating replaces the one before;
`clean` leaves the statistics."""

from __future__ import annotations

from typing import Any

import pytest

from ollama_cli.errors import NotFound, OperationFailed
from ollama_cli.insight.stats import category_scores, model_stats
from ollama_cli.jobs import JobStatus, JobType
from ollama_cli.store import buckets
from ollama_cli.store.base import Engine
from ollama_cli.store.records import SettleKind
from tests.helpers.engines import claim, complete, fail, settle
from tests.helpers.jobs import make_spec

pytestmark = pytest.mark.usefixtures("rerun_writes")

T = 1_000_000 * 3600.0  # the start of an hour
H = buckets.hour_of(T)
COMPLETED, FAILED, CANCELLED = JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED
FIGURES = {"load_duration": 2_000_000_000, "prompt_eval_count": 7, "eval_count": 20, "eval_duration": 4_000_000_000}
ANSWER = {"response": "hi", "stats": FIGURES}


def sums(engine: Engine, kind: str = buckets.TYPE, group: str = "generate", model: str = "m:latest",
         hour: int = H) -> dict[str, float]:
    found = [b for b in engine.stat_buckets() if (b.hour, b.kind, b.model, b.group) == (hour, kind, model, group)]
    assert len(found) <= 1
    return found[0].fields if found else {}


def run(engine: Engine, spec_kw: dict[str, Any] | None = None, *, submitted: float = T, started: float = T + 10,
        finished: float = T + 12, result: dict[str, Any] = ANSWER) -> int:
    job = engine.submit(make_spec(**(spec_kw or {})), submitted)
    (claimed,) = claim(engine, started)
    assert claimed.id == job.id
    complete(engine, claimed, finished, result=result)
    return job.id


def test_a_completed_job_is_counted_with_its_times_load_and_tokens(engine: Engine) -> None:
    run(engine, {"category": "code"})
    f = sums(engine)
    assert f["jobs"] == f["completed"] == 1 and "failed" not in f
    assert f[f"lat/{buckets.hist_index(2.0)}"] == 1 and f[f"wait/{buckets.hist_index(10.0)}"] == 1
    assert (f["lat_sum"], f["wait_sum"]) == (2.0, 10.0)
    assert (f["loads"], f["load_s"], f["prompt_tokens"], f["gen_tokens"]) == (1, 2.0, 7, 20)
    assert (f["timed_tokens"], f["gen_s"]) == (20, 4.0)
    assert sums(engine, buckets.CATEGORY, "generate:code")["completed"] == 1
    (row,) = model_stats(engine, since=None, model="m", now=T + 20)
    assert (row.model, row.type, row.figures.tokens_per_s, row.figures.success_rate) == ("m:latest", "generate", 5.0, 1.0)
    assert set(row.categories) == {"code"}


def test_a_warm_start_is_no_load(engine: Engine) -> None:
    run(engine, result={"response": "x", "stats": {"load_duration": 20_000_000, "eval_count": 1}})
    assert "loads" not in sums(engine)


def test_every_way_a_job_ends_is_counted_once(engine: Engine) -> None:
    # failed after its attempts; cancelled while pending and while running; a failed dependency;
    # a cache hit at submit; a retry that waits is not an end.
    a = engine.submit(make_spec(max_attempts=2), T)
    fail(engine, claim(engine, T)[0], T + 1, retry_after=5)
    assert sums(engine) == {}
    fail(engine, claim(engine, T + 10)[0], T + 11)
    engine.submit(make_spec(after=(a.id,)), T + 12)
    c = engine.submit(make_spec(), T + 13)
    engine.cancel([c.id], T + 14)
    d = engine.submit(make_spec(), T + 15)
    (running,) = claim(engine, T + 16)
    engine.cancel([d.id], T + 17)
    settle(engine, running, SettleKind.COMPLETE, T + 18, result=ANSWER)  # closes the run: not counted again
    run(engine, {"prompt": "same"}, submitted=T + 20, started=T + 20, finished=T + 21)
    hit = engine.submit(make_spec("same"), T + 22)
    assert hit.cached
    f = sums(engine)
    assert (f["jobs"], f["failed"], f["cancelled"], f["completed"], f["cache_hits"]) == (6, 2, 2, 2, 1)
    assert f["err/backend_error"] == 1 and f["err/dependency_failed"] == 1
    assert sum(v for k, v in f.items() if k.startswith("lat/")) == 1  # the cache hit did not run


def test_buckets_are_per_finish_hour_model_and_type_and_clean_leaves_them(engine: Engine) -> None:
    run(engine, {"model": "a"})
    run(engine, {"model": "A:latest", "job_type": JobType.CHAT}, submitted=T + 3600, started=T + 3600,
        finished=T + 3601)
    assert sums(engine, model="a:latest")["jobs"] == 1
    assert sums(engine, group="chat", model="a:latest", hour=H + 1)["jobs"] == 1
    assert [b.hour for b in engine.stat_buckets(H + 1)] == [H + 1]
    assert engine.clean([COMPLETED], T + 7200) == 2
    assert len(engine.stat_buckets()) == 2
    since = model_stats(engine, since=T + 3600, model=None, now=T + 7200)
    assert [(r.type, r.figures.count("jobs")) for r in since] == [("chat", 1)]


def test_feedback_rates_a_completed_job_and_rating_again_replaces_it(engine: Engine) -> None:
    job_id = run(engine, {"category": "code"})
    job = engine.feedback(job_id, 0.5, "fine", None, T + 7200)
    assert (job.category, job.feedback) == ("code", (0.5, "fine", "code"))
    assert engine.get_job(job_id) == job
    engine.feedback(job_id, -1.0, None, None, T + 7300)
    for f in (sums(engine), sums(engine, buckets.CATEGORY, "generate:code")):
        assert (f["fb_n"], f["fb_sum"], f["fb_sq"]) == (1, -1.0, 1.0)
    assert engine.get_job(job_id).feedback == (-1.0, None, "code")


def test_feedback_with_a_category_moves_the_job_to_it(engine: Engine) -> None:
    job_id = run(engine, {"category": "code"})
    engine.feedback(job_id, 1.0, None, "math", T + 100)
    assert sums(engine, buckets.CATEGORY, "generate:code") == {}
    moved = sums(engine, buckets.CATEGORY, "generate:math")
    assert (moved["jobs"], moved["completed"], moved["gen_tokens"], moved["fb_n"]) == (1, 1, 20, 1)
    assert sums(engine)["jobs"] == 1  # the type's bucket counts it once still
    uncategorised = run(engine)
    engine.feedback(uncategorised, 0.0, None, "math", T + 100)
    assert sums(engine, buckets.CATEGORY, "generate:math")["jobs"] == 2


def test_feedback_refuses_unknown_and_unfinished_jobs_and_writes_nothing(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.feedback(42, 1.0, None, None, T)
    job = engine.submit(make_spec(category="x"), T)
    with pytest.raises(OperationFailed):
        engine.feedback(job.id, 1.0, None, "y", T)
    engine.cancel([job.id], T)
    with pytest.raises(OperationFailed):
        engine.feedback(job.id, 1.0, None, "y", T)
    assert engine.get_job(job.id).category == "x" and engine.get_job(job.id).feedback is None
    assert "fb_n" not in sums(engine)


def test_category_scores_give_routing_its_figures(engine: Engine) -> None:
    for model, scores in (("good", [1.0, 0.8, 0.9]), ("poor", [0.0, -0.5])):
        for score in scores:
            engine.feedback(run(engine, {"model": model, "category": "code"}), score, None, None, T + 100)
    run(engine, {"model": "good", "category": "chat"})
    good, poor = category_scores(engine, "code", "generate", T + 100)
    assert (good.model, good.rated, good.jobs, poor.rated) == ("good:latest", 3, 3, 2)
    assert good.mean == pytest.approx(0.9) and good.variance == pytest.approx(0.01)
    assert good.lower_bound == pytest.approx(0.9 - 4.303 * (0.01 / 3) ** 0.5)  # routing's: Student t, 2 df
    assert (good.success_rate, good.tokens_per_s) == (1.0, 5.0)
    assert category_scores(engine, "none", "generate", T + 100) == []
