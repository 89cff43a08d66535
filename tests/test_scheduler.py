"""The scheduling rules, as a pure function: priority, model-aware order with its bound,
placement, caps and coalescing."""

from __future__ import annotations

from ollama_cli.jobs import Job, JobType, Priority
from ollama_cli.jobs import full_name
from ollama_cli.daemon.scheduler import BackendView, Listed, plan
from tests.helpers.jobs import make_job


def picked(assignments: list) -> list[int]:
    return [j.id for a in assignments for j in a.jobs]


def test_full_name_adds_the_default_tag_and_ignores_case() -> None:
    assert full_name("Llama3.2") == "llama3.2:latest"
    assert full_name("qwen2.5:0.5b") == "qwen2.5:0.5b"
    assert full_name("registry.local:5000/ns/model") == "registry.local:5000/ns/model:latest"


def test_queue_order_when_nothing_is_loaded() -> None:
    out = plan([make_job(1, "a"), make_job(2, "b"), make_job(3, "c")], [BackendView(free=2)])
    assert picked(out) == [1, 2]


def test_a_loaded_model_goes_first_within_a_priority() -> None:
    backends = [BackendView(free=2, loaded={"b:latest"})]
    out = plan([make_job(1, "a"), make_job(2, "b"), make_job(3, "a"), make_job(4, "b")], backends)
    assert picked(out) == [2, 4]


def test_what_the_first_pick_loads_counts_as_loaded_for_the_next() -> None:
    out = plan([make_job(1, "a"), make_job(2, "b"), make_job(3, "a")], [BackendView(free=2)])
    assert picked(out) == [1, 3]


def test_strict_priority_beats_a_loaded_model() -> None:
    backends = [BackendView(free=1, loaded={"b:latest"})]
    out = plan([make_job(1, "a", Priority.HIGH), make_job(2, "b", Priority.MEDIUM)], backends)
    assert picked(out) == [1]


def test_a_capped_higher_priority_job_holds_back_lower_priorities() -> None:
    out = plan([make_job(1, "big", Priority.HIGH), make_job(2, "small", Priority.LOW)], [BackendView(free=2)],
               running_per_model={"big:latest": 1}, model_caps={"big": 1})
    assert out == []


def test_a_capped_model_lets_other_models_of_its_priority_pass() -> None:
    out = plan([make_job(1, "big"), make_job(2, "big"), make_job(3, "small")], [BackendView(free=3)],
               model_caps={"big": 1})
    assert picked(out) == [1, 3]


def test_overtaking_is_bounded() -> None:
    # Backend holds model b; an endless run of b jobs may pass job 1 only max_skip times.
    skips: dict[int, int] = {}
    order = []
    jobs = [make_job(1, "a")] + [make_job(i, "b") for i in range(2, 20)]
    for _ in range(10):
        out = plan(jobs, [BackendView(free=1, loaded={"b:latest"})], skips=skips, max_skip=3)
        (taken,) = picked(out)
        order.append(taken)
        jobs = [j for j in jobs if j.id != taken]
    assert order[:4] == [2, 3, 4, 1]
    assert skips.get(1) is None  # its count ends when it starts


def test_jobs_go_to_a_backend_that_has_their_model() -> None:
    backends = [BackendView(free=1, models={"a:latest"}), BackendView(free=1, models={"b:latest"})]
    out = plan([make_job(1, "b"), make_job(2, "a")], backends)
    assert {(a.backend, a.jobs[0].id) for a in out} == {(1, 1), (0, 2)}


def test_a_model_no_backend_has_may_go_anywhere_and_fail_there() -> None:
    backends = [BackendView(free=1, models={"a:latest"})]
    out = plan([make_job(1, "zzz")], backends)
    assert picked(out) == [1]


def test_a_busy_backend_with_the_model_means_waiting_not_a_wrong_backend() -> None:
    backends = [BackendView(free=0, models={"a:latest"}), BackendView(free=1, models={"b:latest"})]
    assert plan([make_job(1, "a")], backends) == []


def test_placement_prefers_where_the_model_is_loaded() -> None:
    backends = [BackendView(free=3), BackendView(free=1, loaded={"a:latest"})]
    out = plan([make_job(1, "a")], backends)
    assert out[0].backend == 1


def test_embeds_of_one_model_and_options_share_a_request() -> None:
    jobs = [make_job(i, "e", type=JobType.EMBED) for i in range(1, 6)] + [make_job(6, "a")]
    keys = {1: "x", 2: "x", 3: "y", 4: "x", 5: "x"}
    out = plan(jobs, [BackendView(free=2)], coalesce=3, request_key=lambda j: keys[j.id])
    # 3 is next in queue order and must go alone: its options differ from 5's.
    assert [tuple(j.id for j in a.jobs) for a in out] == [(1, 2, 4), (3,)]


class Asked(Listed):
    """Counts the questions the scheduler asks: each is a seek in the store."""

    def __init__(self, jobs: list[Job]) -> None:
        super().__init__(jobs)
        self.asked = 0

    def oldest(self, rank: int, model: str | None = None, after: int = 0) -> Job | None:
        self.asked += 1
        return super().oldest(rank, model, after)

    def models(self, rank: int) -> list[str]:
        self.asked += 1
        return super().models(rank)


def test_a_job_of_the_loaded_model_is_found_at_any_depth_in_a_few_questions() -> None:
    # The store answers each question with one seek: a tick costs the same at any depth.
    ready = Asked([make_job(i, "b") for i in range(1, 10_001)] + [make_job(10_001, "a")])
    out = plan(ready, [BackendView(free=1, loaded={"a:latest"})])
    assert picked(out) == [10_001]
    assert ready.asked <= len(Priority) + 1  # the head of each priority, and the loaded model's oldest


def test_with_the_head_loaded_two_picks_ask_about_the_head_only() -> None:
    ready = Asked([make_job(i, "a") for i in range(1, 101)])
    out = plan(ready, [BackendView(free=2, loaded={"a:latest"})])
    assert picked(out) == [1, 2]
    assert ready.asked <= len(Priority) + 1
