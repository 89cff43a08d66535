"""`recommendations`: plain advice drawn from the statistics (`insight/stats.py`), each message
with the numbers it rests on. A rule speaks only past a minimum of jobs, so that a handful of
early jobs never sends anyone tuning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ollama_cli.insight.stats import CategoryScore, Figures

if TYPE_CHECKING:
    from ollama_cli.insight.stats import ModelStats

MIN_JOBS = 10  # jobs of a model (that ran, or that finished) before any advice about it
LOADS_PER_JOB = 0.2  # loads per job that ran, above which a model is loaded again and again
WAIT_RATIO = 4.0  # mean queue wait over mean run time above which jobs wait too long
MIN_WAIT_S = 5.0  # ...and only when that wait is at least this long
FAIL_RATE = 0.2  # failed among completed + failed, above which a model fails often
MIN_RATED = 5  # rated jobs of a category per model before models are compared (routing's default too)
SEMANTIC_MIN_LOOKUPS = 100  # semantic cache lookups before its hit rate is judged
SEMANTIC_HIT_RATE = 0.02  # a semantic cache answering fewer than this share is near useless


def _per_model(rows: list[ModelStats]) -> dict[str, Figures]:
    out: dict[str, Figures] = {}
    for r in rows:
        out.setdefault(r.model, Figures()).add(r.figures.sums)
    return out


def recommendations(rows: list[ModelStats], cache: dict[str, Any]) -> list[dict[str, Any]]:
    """Advice as the contract's `{"kind", "model", "message"}`, per model in name order, then
    per category, then for the cache."""
    out: list[dict[str, Any]] = []
    for model, f in sorted(_per_model(rows).items()):
        out += [{"kind": kind, "model": model, "message": message}
                for kind, message in (_loads(model, f), _waits(model, f), _failures(model, f)) if message]
    out += _categories(rows)
    semantic = _semantic(cache)
    if semantic:
        out.append({"kind": "semantic_cache", "model": None, "message": semantic})
    return out


def _ran(f: Figures) -> int:
    """Completed jobs that ran on a backend (cache hits did not): those with a latency."""
    return int(round(sum(f.histogram("lat/").values())))


def _loads(model: str, f: Figures) -> tuple[str, str | None]:
    ran, loads = _ran(f), f.count("loads")
    if ran < MIN_JOBS or loads / ran <= LOADS_PER_JOB:
        return "reloads", None
    return "reloads", (f"{model} was loaded {loads} times for {ran} jobs ({loads / ran:.2f} loads per job, "
                       f"{f.get('load_s'):.1f} s spent loading): keep it loaded longer (submit --keep-alive 30m), "
                       f"submit its jobs together, or serve fewer models per backend")


def _waits(model: str, f: Figures) -> tuple[str, str | None]:
    ran = _ran(f)
    if ran < MIN_JOBS:
        return "waiting", None
    wait, run = f.get("wait_sum") / ran, f.get("lat_sum") / ran  # means: exact, where percentiles are estimates
    if wait < MIN_WAIT_S or wait <= WAIT_RATIO * run:
        return "waiting", None
    return "waiting", (f"{model}'s jobs waited {wait:.1f} s in the queue on average for {run:.1f} s of running "
                       f"({wait / max(run, 1e-3):.0f}x): run more at once (daemon --concurrency, "
                       f"--model-concurrency) or add a backend (daemon --host)")


def _failures(model: str, f: Figures) -> tuple[str, str | None]:
    done, failed = f.count("completed") + f.count("failed"), f.count("failed")
    if done < MIN_JOBS or failed / done <= FAIL_RATE:
        return "failing", None
    errors = f.errors
    top = max(sorted(errors), key=lambda e: errors[e]) if errors else None
    most = f", most often {top} ({errors[top]})" if top else ""
    return "failing", (f"{model} failed {failed} of {done} jobs ({failed / done:.0%}){most}: "
                       f"see `ollama-q list --status failed --model {model}`")


def _categories(rows: list[ModelStats]) -> list[dict[str, Any]]:
    """Per category, each model rated enough whose mean score is below the lower bound of the
    best-rated model's (the highest lower bound of a 95 % interval, as routing ranks them)."""
    per: dict[str, dict[str, Figures]] = {}
    for r in rows:
        for name, f in r.categories.items():
            per.setdefault(name, {}).setdefault(r.model, Figures()).add(f.sums)
    out = []
    for name, models in sorted(per.items()):
        rated = [CategoryScore(m, f.count("jobs"), f.count("fb_n"), f.feedback_mean, f.get("fb_sq"),
                               f.success_rate, f.tokens_per_s) for m, f in sorted(models.items())]
        rated = [s for s in rated if s.rated >= MIN_RATED and s.mean is not None and s.lower_bound is not None]
        if len(rated) < 2:
            continue
        best = max(rated, key=lambda s: s.lower_bound or -1.0)
        for worse in rated:
            if worse is not best and worse.mean is not None and (best.lower_bound or -1.0) > worse.mean:
                out.append({"kind": "category", "model": worse.model, "message": (
                    f"category {name}: {best.model} scores {best.mean:.2f} (n={best.rated}, 95% lower bound "
                    f"{best.lower_bound:.2f}) where {worse.model} scores {worse.mean:.2f} (n={worse.rated}, "
                    f"{worse.jobs} jobs): send them to {best.model} (submit {best.model} --category {name}, "
                    f"or submit auto --category {name})")})
    return out


def _semantic(cache: dict[str, Any]) -> str | None:
    """The semantic cache's hit rate, when `cache stats` reports the semantic cache (a store
    without one has no `semantic` figures: nothing is said). Lookups are its misses and hits
    where the misses are reported, else its entries (each miss that completes adds one) and hits."""
    semantic = cache.get("semantic")
    if not isinstance(semantic, dict):
        return None
    hits = int(semantic.get("hits") or 0)
    misses = semantic.get("misses")
    lookups = hits + int(misses if isinstance(misses, int) else semantic.get("entries") or 0)
    if lookups < SEMANTIC_MIN_LOOKUPS or hits / lookups >= SEMANTIC_HIT_RATE:
        return None
    return (f"the semantic cache answered {hits} of about {lookups} lookups ({hits / lookups:.1%}): each costs "
            f"an embedding request; lower cache.similarity if its answers are good enough, or turn it off "
            f"(cache.semantic = false)")
