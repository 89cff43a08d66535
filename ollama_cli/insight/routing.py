"""The routing rule of `submit auto --category C`, as a pure function of each model's figures
for the category and the job's type (`insight/stats.category_scores`), the models installed
where known, and the routing settings.

The rule (the contract's): among the models with at least `min_samples` rated jobs of the
category, of the job's own type (generate, chat or embed: an embed model rated well on
`code` must not be given a generate job), the highest lower bound of a 95 % interval of the mean score; ties by success rate,
then tokens per second (then by name, so that the same figures always give the same model).
The interval is Student's t with n - 1 degrees of freedom: a model with five ratings of 0.9
is not yet known to beat one with fifty of 0.8, and the t interval says so where the normal
approximation, at n = 5, gives an interval 30 % narrower than the data supports. Scores lie
in [-1, 1], and so does the bound (a single rating bounds nothing: -1).

None qualifies: the default model, else `NoRoute`. Randomness only with `explore` > 0: that
share of the choices goes to a model picked at random among those with any finished job of
the category, so that a model below `min_samples` can earn its place."""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ollama_cli.errors import UsageError
from ollama_cli.jobs import full_name

if TYPE_CHECKING:
    from ollama_cli.settings import RoutingSettings
    from ollama_cli.store.base import Engine

# Student's t, 97.5th percentile, by degrees of freedom 1..30; beyond, the Cornish-Fisher
# expansion below (within 0.001 of the exact value from 30 on).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_Z975 = 1.959964


class Scored(Protocol):
    """What the rule reads of a model's figures for one category."""

    model: str
    rated: int  # finished jobs of the category with a feedback score
    mean: float | None  # their mean score; None without any

    @property
    def variance(self) -> float | None: ...  # sample variance of the scores; None below 2

    success_rate: float | None
    tokens_per_s: float | None


class Route(NamedTuple):
    """The model chosen, and why: `rule` is "best" (the highest lower bound, `lower_bound` of
    `rated` ratings), "default" (none qualified) or "explore" (a random pick)."""

    model: str
    rule: str
    lower_bound: float | None = None
    rated: int = 0


class Listed(Protocol):
    """What the rule reads of a backend's state (`records.BackendState`)."""

    installed: tuple[str, ...] | None  # canonical names; None: not known yet


def installed_models(backends: Iterable[Listed]) -> set[str] | None:
    """The models some backend has installed, as the living daemons last saw them; None (not
    known: every model is a candidate) without a daemon, or while a backend's list is unknown,
    since the model could be on that one."""
    found: set[str] = set()
    seen = False
    for backend in backends:
        if backend.installed is None:
            return None
        seen = True
        found.update(backend.installed)
    return found if seen else None


class NoRoute(UsageError):
    """No model has enough rated jobs of the category, and no default model is configured."""


def t975(df: int) -> float:
    """The 97.5th percentile of Student's t with `df` (>= 1) degrees of freedom."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df * df)


def lower_bound(rated: int, mean: float, variance: float | None) -> float:
    """The lower end of the 95 % interval of a mean score of `rated` ratings, within [-1, 1]."""
    if rated < 2 or variance is None:
        return -1.0
    bound = mean - t975(rated - 1) * math.sqrt(max(0.0, variance) / rated)
    return min(1.0, max(-1.0, bound))


def route(scores: Iterable[Scored], category: str, job_type: str, *, min_samples: int, default_model: str | None,
          installed: Collection[str] | None = None, explore: float = 0.0,
          rng: random.Random | None = None) -> Route:
    """The model for a job of `category` and `job_type` (`scores`: that type's figures; the
    type only names them in the message). `installed`: the models some backend has (canonical
    names), or None when not known; a model that is not installed is never chosen by its
    figures. NoRoute when none qualifies and there is no `default_model`."""
    present = None if installed is None else {full_name(m) for m in installed}
    usable = [s for s in scores if present is None or full_name(s.model) in present]
    if explore > 0 and usable:
        pick = rng or random.Random()
        if pick.random() < explore:
            chosen = pick.choice(sorted(usable, key=lambda s: s.model))
            return Route(chosen.model, "explore", _bound(chosen), chosen.rated)
    ranked = sorted(((_bound(s), s) for s in usable if s.rated >= min_samples and s.mean is not None),
                    key=lambda bs: (-bs[0], -(bs[1].success_rate or 0.0), -(bs[1].tokens_per_s or 0.0), bs[1].model))
    if ranked:
        bound, best = ranked[0]
        return Route(best.model, "best", bound, best.rated)
    if default_model is not None:
        return Route(default_model, "default")
    raise NoRoute(f"no model has {min_samples} rated {job_type} jobs of category {category!r} yet "
                  f"(`ollama-q feedback ID --score X` rates a job), and routing.default_model is not set")


def choose(engine: Engine, category: str, job_type: str, settings: RoutingSettings, now: float) -> Route:
    """The route of a `submit auto --category C` job of `job_type`, from what the store holds
    (the figures of the category's jobs of that type, kept as jobs finish, and the models the
    living daemons found on their backends), with no network call."""
    from ollama_cli.insight.stats import category_scores

    return route(category_scores(engine, category, job_type, now), category, job_type,
                 min_samples=settings.min_samples,
                 default_model=settings.default_model, installed=installed_models(engine.backends()),
                 explore=settings.explore)


def _bound(s: Scored) -> float | None:
    return None if s.mean is None else lower_bound(s.rated, s.mean, s.variance)
