"""The routing rule (`insight/routing.py`) on tables of scores: who qualifies, how they rank,
ties, the default model, installed models, exploration, and the interval itself."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from dataclasses import dataclass

import pytest

from ollama_cli.errors import UsageError
from ollama_cli.insight.routing import NoRoute, Route, installed_models, lower_bound, route, t975


@dataclass(frozen=True)
class Score:
    """A model's figures for one category, as `category_scores` gives them."""

    model: str
    rated: int
    mean: float | None
    variance: float | None
    success_rate: float | None = 1.0
    tokens_per_s: float | None = 50.0


def rated(model: str, ratings: list[float], **kw: float | None) -> Score:
    """The figures of `ratings` for `model`."""
    return Score(model, len(ratings), statistics.fmean(ratings) if ratings else None,
                 statistics.variance(ratings) if len(ratings) > 1 else None, **kw)


def pick(*scores: Score, min_samples: int = 5, default: str | None = None, installed: list[str] | None = None) -> str:
    return route(scores, "code", "generate", min_samples=min_samples, default_model=default, installed=installed).model


# ------------------------------------------------------------------------ the interval


# Student's t, 97.5th percentile, exact to 4 places (published tables).
@pytest.mark.parametrize(("df", "t"), [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452),
                                       (30, 2.0423), (31, 2.0395), (40, 2.0211), (60, 2.0003), (120, 1.9799),
                                       (1000, 1.9623), (10 ** 6, 1.9600)])
def test_t_quantiles(df: int, t: float) -> None:
    assert t975(df) == pytest.approx(t, abs=0.001)


def test_the_bound_is_the_mean_less_t_standard_errors() -> None:
    ratings = [0.9, 0.7, 1.0, 0.8, 0.6]
    mean, var = statistics.fmean(ratings), statistics.variance(ratings)
    assert lower_bound(5, mean, var) == pytest.approx(mean - 2.776 * math.sqrt(var / 5), abs=1e-9)


@pytest.mark.parametrize(("n", "mean", "variance", "expected"), [
    (1, 0.9, None, -1.0),  # one rating bounds nothing
    (0, 0.0, None, -1.0),
    (5, 1.0, 0.0, 1.0),  # all perfect: certain
    (5, -1.0, 0.0, -1.0),
    (2, -0.9, 2.0, -1.0),  # clamped to the score range
    (3, 0.5, -1e-18, 0.5),  # a variance a hair below 0 (rounding in a sum of squares) is 0
])
def test_bounds_at_the_edges(n: int, mean: float, variance: float | None, expected: float) -> None:
    assert lower_bound(n, mean, variance) == pytest.approx(expected)


def test_more_ratings_of_the_same_spread_raise_the_bound() -> None:
    bounds = [lower_bound(n, 0.5, 0.2) for n in range(2, 200)]
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds)
    assert bounds[-1] < 0.5


# ------------------------------------------------------------------------- ranking


def test_few_good_ratings_do_not_beat_many_slightly_worse_ones() -> None:
    few = rated("few", [1.0, 0.9, 0.6, 1.0, 0.5])
    many = rated("many", [0.8, 0.7, 0.9] * 17)
    assert few.mean > many.mean
    assert pick(few, many) == "many"


def test_a_model_below_min_samples_does_not_qualify_however_good() -> None:
    assert pick(rated("new", [1.0] * 4), rated("old", [0.1, 0.2, 0.0, 0.1, 0.3])) == "old"
    assert pick(rated("new", [1.0] * 4), rated("old", [0.1, 0.2, 0.0, 0.1, 0.3]), min_samples=4) == "new"


def test_unrated_models_are_not_candidates() -> None:
    silent = Score("silent", 0, None, None, success_rate=1.0, tokens_per_s=999.0)
    with pytest.raises(NoRoute):
        pick(silent, min_samples=0)
    assert pick(silent, default="fallback-model", min_samples=0) == "fallback-model"


@pytest.mark.parametrize(("a", "b", "winner"), [
    ({}, {}, "a"),  # all equal: by name
    ({"success_rate": 0.9}, {"success_rate": 0.95}, "b"),
    ({"success_rate": 0.9, "tokens_per_s": 80.0}, {"success_rate": 0.9, "tokens_per_s": 20.0}, "a"),
    ({"success_rate": 0.9, "tokens_per_s": 20.0}, {"success_rate": 0.9, "tokens_per_s": 80.0}, "b"),
    ({"success_rate": 1.0, "tokens_per_s": 1.0}, {"success_rate": 0.99, "tokens_per_s": 900.0}, "a"),  # in order
    ({"success_rate": None}, {"success_rate": 0.1}, "b"),  # unknown counts as nothing
    ({"tokens_per_s": None}, {"tokens_per_s": 0.5}, "b"),
])
def test_ties_by_success_rate_then_tokens_per_second_then_name(a: dict, b: dict, winner: str) -> None:
    ratings = [0.5, 0.6, 0.7, 0.5, 0.6]
    for first, second in ((rated("a", ratings, **a), rated("b", ratings, **b)),
                          (rated("b", ratings, **b), rated("a", ratings, **a))):
        assert pick(first, second) == winner  # whatever order the figures come in


def test_the_bound_decides_before_success_rate() -> None:
    better = rated("better", [0.9, 0.8, 0.9, 0.8, 0.9], success_rate=0.5, tokens_per_s=1.0)
    faster = rated("faster", [0.5, 0.4, 0.5, 0.4, 0.5], success_rate=1.0, tokens_per_s=500.0)
    assert pick(better, faster) == "better"


def test_the_route_says_why() -> None:
    best = rated("m", [0.9, 0.7, 1.0, 0.8, 0.6])
    found = route([best], "code", "generate", min_samples=5, default_model="d")
    assert found == Route("m", "best", lower_bound(5, best.mean, best.variance), 5)
    assert route([], "code", "generate", min_samples=5, default_model="d") == Route("d", "default")


# Every table of up to four models drawn from these figures: the choice is always the one
# with the highest bound among the qualified, whatever their order, and the same every time.
POOL = [
    rated("a", [0.9, 0.8, 0.9, 0.7, 0.9]),
    rated("b", [0.9, 0.8, 0.9, 0.7, 0.9], success_rate=0.5),
    rated("c", [0.2] * 40),
    rated("d", [1.0, 1.0, 1.0]),
    rated("e", [-0.5, 0.0, 0.3, 0.9, -1.0, 0.2]),
    Score("f", 0, None, None),
    rated("g", [0.6, 0.7, 0.8] * 10, tokens_per_s=None),
]


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_every_table_of_models(size: int) -> None:
    for table in itertools.permutations(POOL, size):
        qualified = [s for s in table if s.rated >= 5]
        try:
            chosen = route(table, "code", "generate", min_samples=5, default_model=None)
        except NoRoute:
            assert qualified == []
            continue
        assert chosen.rule == "best"
        top = max(lower_bound(s.rated, s.mean, s.variance) for s in qualified)
        assert chosen.lower_bound == top
        assert chosen.model == route(list(reversed(table)), "code", "generate", min_samples=5, default_model=None).model
        assert chosen.model in {s.model for s in qualified}


# ------------------------------------------------------------- default and installed


def test_none_qualifies_and_no_default_is_a_usage_error_that_says_so() -> None:
    with pytest.raises(UsageError) as info:
        pick(rated("m", [0.9]))
    assert "no model has 5 rated generate jobs of category 'code'" in info.value.message
    assert "routing.default_model" in info.value.message


def test_only_installed_models_are_chosen_when_the_list_is_known() -> None:
    best, second = rated("best", [0.9] * 10), rated("second:7b", [0.5] * 10)
    assert pick(best, second) == "best"
    assert pick(best, second, installed=["second:7b", "other"]) == "second:7b"
    assert pick(best, second, installed=["BEST:latest"]) == "best"  # canonical names compare
    assert pick(best, second, installed=[], default="d") == "d"
    assert pick(best, second, installed=None) == "best"  # not known: every model


@dataclass(frozen=True)
class Backend:
    installed: tuple[str, ...] | None


@pytest.mark.parametrize(("backends", "expected"), [
    ([], None),  # no living daemon has looked
    ([Backend(None)], None),
    ([Backend(("a:latest",)), Backend(None)], None),  # the model may be on the one not known yet
    ([Backend(())], set()),
    ([Backend(("a:latest", "b:7b")), Backend(("b:7b", "c:latest"))], {"a:latest", "b:7b", "c:latest"}),
])
def test_installed_models_are_known_only_when_every_backend_listed_them(backends: list[Backend],
                                                                       expected: set[str] | None) -> None:
    assert installed_models(backends) == expected


# ------------------------------------------------------------------------ exploration


def test_without_explore_no_randomness_is_drawn() -> None:
    class NoDraws(random.Random):
        def random(self) -> float:
            raise AssertionError("drew")

    scores = [rated("a", [0.9] * 6), rated("b", [0.1] * 6)]
    assert route(scores, "code", "generate", min_samples=5, default_model=None, rng=NoDraws()).model == "a"


def test_explore_sends_about_that_share_elsewhere_and_reaches_new_models() -> None:
    scores = [rated("a", [0.9] * 6), rated("b", [0.1] * 6), rated("new", [0.5])]
    rng = random.Random(7)
    chosen = [route(scores, "code", "generate", min_samples=5, default_model=None, explore=0.3, rng=rng) for _ in range(3000)]
    explored = [r for r in chosen if r.rule == "explore"]
    assert 0.25 < len(explored) / len(chosen) < 0.35
    assert {r.model for r in explored} == {"a", "b", "new"}
    assert {r.model for r in chosen if r.rule == "best"} == {"a"}


def test_explore_skips_models_not_installed() -> None:
    scores = [rated("a", [0.9] * 6), rated("gone", [0.5] * 6)]
    rng = random.Random(1)
    assert {route(scores, "code", "generate", min_samples=5, default_model=None, explore=1.0, rng=rng,
                  installed=["a"]).model for _ in range(50)} == {"a"}
