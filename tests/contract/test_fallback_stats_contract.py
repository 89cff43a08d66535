"""Statistics of jobs that fall back (`Engine.stat_buckets` in store/base.py), through the
engine interface only, on every engine: the life a job ends on the model it leaves (a FALLBACK
settle, or a reclaim out of attempts) is a failure of that model with its error's type,
counted in the transaction that moves it; the job counts once more, once, where it finally
ends."""

from __future__ import annotations

import pytest

from ollama_cli.insight.stats import category_scores, model_stats
from ollama_cli.jobs import ErrorType, JobError
from ollama_cli.store import buckets
from ollama_cli.store.base import Engine
from ollama_cli.store.records import DaemonInfo, SettleKind
from tests.helpers.engines import claim, complete, settle
from tests.helpers.jobs import make_spec

pytestmark = pytest.mark.usefixtures("rerun_writes")

T = 1_000_000 * 3600.0  # the start of an hour
MISSING = JobError(ErrorType.MODEL_NOT_FOUND, "model 'a' not found")


def figures(engine: Engine, kind: str = buckets.TYPE, group: str = "generate") -> dict[str, dict[str, float]]:
    """Each model's sums in the bucket of hour T, `kind` and `group`."""
    return {b.model: b.fields for b in engine.stat_buckets()
            if (b.hour, b.kind, b.group) == (buckets.hour_of(T), kind, group)}


def test_the_model_a_job_falls_back_from_counts_a_failure_and_the_next_one_the_job(engine: Engine) -> None:
    engine.submit(make_spec(model="a", fallbacks=("b",), category="code"), T)
    [on_a] = claim(engine, T + 1)
    settle(engine, on_a, SettleKind.FALLBACK, T + 2, error=MISSING)
    [on_b] = claim(engine, T + 3)
    complete(engine, on_b, T + 4)
    for kind, group in ((buckets.TYPE, "generate"), (buckets.CATEGORY, "generate:code")):
        by_model = figures(engine, kind, group)
        assert by_model["a:latest"] == {"jobs": 1, "failed": 1, "err/model_not_found": 1}
        assert (by_model["b:latest"]["jobs"], by_model["b:latest"]["completed"]) == (1, 1)
        assert "failed" not in by_model["b:latest"]
    rows = {r.model: r.to_json() for r in model_stats(engine, since=None, model=None, now=T + 10)}
    assert (rows["a:latest"]["success_rate"], rows["b:latest"]["success_rate"]) == (0.0, 1.0)
    assert {s.model: s.success_rate for s in category_scores(engine, "code", "generate", T + 10)} == \
        {"a:latest": 0.0, "b:latest": 1.0}  # routing's tie-break sees the failure


def test_each_model_of_a_job_that_fails_on_all_of_them_counts_its_own_failure(engine: Engine) -> None:
    engine.submit(make_spec(model="a", fallbacks=("b",)), T)
    settle(engine, claim(engine, T + 1)[0], SettleKind.FALLBACK, T + 2, error=MISSING)
    settle(engine, claim(engine, T + 3)[0], SettleKind.FALLBACK, T + 4,
           error=JobError(ErrorType.BACKEND_ERROR, "HTTP 500"))
    assert figures(engine) == {"a:latest": {"jobs": 1, "failed": 1, "err/model_not_found": 1},
                               "b:latest": {"jobs": 1, "failed": 1, "err/backend_error": 1}}


def test_a_job_reclaimed_out_of_attempts_onto_its_next_model_counts_a_failure_of_the_first(engine: Engine) -> None:
    engine.submit(make_spec(model="a", fallbacks=("b",), max_attempts=1), T)
    engine.register(DaemonInfo("dead", 1, [], 1, T, T))
    claim(engine, T + 1, owner="dead")
    [moved] = engine.reclaim(T + 5)
    assert moved.model == "b"
    assert figures(engine) == {"a:latest": {"jobs": 1, "failed": 1, "err/abandoned": 1}}
