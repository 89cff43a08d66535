"""Per-model statistics drawn from the hour buckets the store keeps as jobs finish
(`store/buckets.py`): what `stats` shows, what `recommendations` reads, and the per-category
scores that routing ranks models by. Every figure is a sum over buckets, so each answer costs
models x hours, never the number of jobs; percentiles are estimates from the fixed histogram
buckets (within 10 %)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ollama_cli.store import buckets

if TYPE_CHECKING:
    from ollama_cli.store.base import Engine


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


@dataclass
class Figures:
    """Sums of bucket fields, and what is read from them."""

    sums: dict[str, float] = field(default_factory=dict)

    def add(self, fields: dict[str, float]) -> None:
        buckets.merge(self.sums, fields)

    def get(self, name: str) -> float:
        return self.sums.get(name, 0)

    def count(self, name: str) -> int:
        return int(round(self.get(name)))

    def histogram(self, prefix: str) -> dict[int, float]:
        return {int(k[len(prefix):]): v for k, v in self.sums.items() if k.startswith(prefix)}

    def quantiles(self, prefix: str) -> dict[str, float | None]:
        hist = self.histogram(prefix)
        return {"p50": _round(buckets.percentile(hist, 0.5)), "p95": _round(buckets.percentile(hist, 0.95))}

    @property
    def success_rate(self) -> float | None:
        """Completed among the jobs that completed or failed (a cancel is the user's, not the model's)."""
        return _ratio(self.get("completed"), self.get("completed") + self.get("failed"))

    @property
    def tokens_per_s(self) -> float | None:
        return _ratio(self.get("timed_tokens"), self.get("gen_s"))

    @property
    def feedback_mean(self) -> float | None:
        return _ratio(self.get("fb_sum"), self.get("fb_n"))

    @property
    def errors(self) -> dict[str, int]:
        return {k[4:]: int(round(v)) for k, v in self.sums.items() if k.startswith("err/")}


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


@dataclass
class ModelStats:
    """One (model, job type) over the hours asked for; `categories` by name."""

    model: str
    type: str
    figures: Figures
    categories: dict[str, Figures]

    def to_json(self) -> dict[str, Any]:
        f = self.figures
        return {
            "model": self.model, "type": self.type, "jobs": f.count("jobs"), "completed": f.count("completed"),
            "failed": f.count("failed"), "cancelled": f.count("cancelled"),
            "success_rate": _round(f.success_rate), "latency_s": f.quantiles("lat/"),
            "queue_wait_s": f.quantiles("wait/"), "loads": f.count("loads"), "load_s": _round(f.get("load_s")),
            "tokens_per_s": _round(f.tokens_per_s, 1), "prompt_tokens": f.count("prompt_tokens"),
            "generated_tokens": f.count("gen_tokens"), "cache_hits": f.count("cache_hits"),
            "feedback": {"count": f.count("fb_n"), "mean": _round(f.feedback_mean)},
            "categories": {name: {"jobs": c.count("jobs"), "feedback_count": c.count("fb_n"),
                                  "feedback_mean": _round(c.feedback_mean)}
                           for name, c in sorted(self.categories.items())},
        }


@dataclass
class CategoryScore:
    """How a model served one category, for ranking: `rated` jobs with a mean score and
    its sum of squares, and the category's success rate and generation speed."""

    model: str
    jobs: int
    rated: int
    mean: float | None
    sum_sq: float
    success_rate: float | None
    tokens_per_s: float | None

    @property
    def variance(self) -> float | None:
        """The sample variance of the scores (None below 2 ratings)."""
        if self.rated < 2 or self.mean is None:
            return None
        return max(0.0, (self.sum_sq - self.rated * self.mean ** 2) / (self.rated - 1))

    @property
    def lower_bound(self) -> float | None:
        """The lower end of a 95 % interval of the mean score, as routing ranks models
        (`routing.lower_bound`); None without any rating."""
        from ollama_cli.insight.routing import lower_bound

        return None if self.mean is None else lower_bound(self.rated, self.mean, self.variance)


def since_hour(since: float | None) -> int | None:
    """The first hour bucket counted for `--since`: the one holding `since` (hour granularity)."""
    return None if since is None else buckets.hour_of(since)


def model_stats(engine: Engine, *, since: float | None, model: str | None, now: float) -> list[ModelStats]:
    """Per (model, type), sorted by model then type, over the buckets from `since`'s hour to
    `now`'s (None: all); `model` keeps one model (as `jobs.full_name` compares names)."""
    from ollama_cli.jobs import full_name

    wanted = full_name(model) if model is not None else None
    last = buckets.hour_of(now)
    by_type: dict[tuple[str, str], Figures] = {}
    by_category: dict[tuple[str, str], dict[str, Figures]] = {}
    for b in engine.stat_buckets(since_hour(since)):
        if b.hour > last or (wanted is not None and b.model != wanted):
            continue
        if b.kind == buckets.TYPE:
            by_type.setdefault((b.model, b.group), Figures()).add(b.fields)
        else:
            kind, _, category = b.group.partition(":")
            by_category.setdefault((b.model, kind), {}).setdefault(category, Figures()).add(b.fields)
    return [ModelStats(m, t, f, by_category.get((m, t), {})) for (m, t), f in sorted(by_type.items())]


def category_scores(engine: Engine, category: str, job_type: str, now: float) -> list[CategoryScore]:
    """Per model that finished jobs of `category` and of type `job_type` (an embed model's
    figures say nothing of how it writes), over every hour to `now`'s: sorted by model name.
    Routing ranks them; this only counts."""
    last = buckets.hour_of(now)
    group = f"{job_type}:{category}"
    per_model: dict[str, Figures] = {}
    for b in engine.stat_buckets(None):
        if b.kind == buckets.CATEGORY and b.hour <= last and b.group == group:
            per_model.setdefault(b.model, Figures()).add(b.fields)
    return [CategoryScore(model=m, jobs=f.count("jobs"), rated=f.count("fb_n"), mean=f.feedback_mean,
                          sum_sq=f.get("fb_sq"), success_rate=f.success_rate, tokens_per_s=f.tokens_per_s)
            for m, f in sorted(per_model.items())]
