"""The result cache end to end: the daemon's semantic lookups against the emulator over real
HTTP (its embeddings are bags of hashed words, so texts that differ by a word are near by
design), the TTL and bound reaching the store, and the `cache` commands."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ollama_cli.daemon import events
from ollama_cli.daemon.loop import Daemon
from ollama_cli.jobs import Job, JobSpec, JobStatus, JobType
from ollama_cli.settings import CacheSettings, DaemonSettings
from ollama_cli.settings.hosts import Backend
from ollama_cli.store.base import Engine
from tests.emulator import Emulator
from tests.helpers.cli import assert_one_error, ok_json, run_cli, run_main

MODELS = ["llama3.2", "qwen2.5:0.5b", {"name": "all-minilm", "embedding_length": 256}]
SYSTEM = "You answer questions about the queue in one short sentence."
QUESTION = ("how many jobs can the daemon run at once on one backend when several models are loaded "
            "and the queue holds many pending requests from different terminals tonight")
REWORDED = QUESTION.replace("tonight", "today")  # one word of 28 differs: similarity about 0.96
OTHER = "what colour is the river stone in the quiet green morning window"


@pytest.fixture
def emu() -> Any:
    with Emulator(MODELS) as emulator:
        yield emulator


def spec(prompt: str, *, system: str | None = SYSTEM, semantic: bool = True, **fields: Any) -> JobSpec:
    request = {"prompt": prompt, **({"system": system} if system else {})}
    return JobSpec(model="llama3.2", type=JobType.GENERATE, request=request, semantic_cache=semantic, **fields)


def drain(store: Engine, url: str, *, kind: str = "ollama", seen: list[Any] | None = None, **cache: Any) -> None:
    """A --drain daemon with the cache settings `cache` (CacheSettings' fields), embedding with
    all-minilm at 0.9 unless told."""
    daemon = Daemon(store, [Backend(url, kind)], DaemonSettings(drain=True, retry_backoff=0.01, poll=0.02),
                    cache=CacheSettings(**{"embedding_model": "all-minilm", "similarity": 0.9, **cache}))
    if seen is not None:
        daemon.events.subscribe(seen.append)
    asyncio.run(daemon.run())


def generated(emu: Emulator) -> list[str]:
    return [body["prompt"] for _, path, body in emu.requests if path in ("/api/generate", "/v1/completions")]


def embedded(emu: Emulator) -> list[Any]:
    return [body["input"] for _, path, body in emu.requests if path in ("/api/embed", "/v1/embeddings")]


def run_one(store: Engine, emu: Emulator, job_spec: JobSpec, **cache: Any) -> Job:
    job = store.submit(job_spec, store.now())
    drain(store, emu.url, **cache)
    done = store.get_job(job.id)
    assert done is not None and done.status is JobStatus.COMPLETED, done
    return done


def test_a_reworded_question_is_answered_from_the_semantic_cache(store: Engine, emu: Emulator,
                                                                data_dir: Path) -> None:
    first = run_one(store, emu, spec(QUESTION))
    assert first.cache_hit is None and generated(emu) == [QUESTION] and embedded(emu) == [[QUESTION]]
    seen: list[Any] = []
    second = store.submit(spec(REWORDED), store.now())
    drain(store, emu.url, seen=seen)
    hit = store.get_job(second.id)
    assert hit.status is JobStatus.COMPLETED and hit.cached
    assert hit.cache_hit[:2] == ("semantic", first.id)
    assert 0.9 <= hit.cache_hit[2] < 1.0
    assert generated(emu) == [QUESTION]  # the backend generated nothing for it
    assert store.get_result(second.id)["response"] == store.get_result(first.id)["response"]
    assert [e.cache for e in seen if isinstance(e, events.JobFinished)] == ["semantic"]
    stats = store.cache_stats()
    assert (stats["entries"], stats["hits"], stats["semantic"]) == (1, 1, {"entries": 1, "hits": 1})
    assert store.cache_list()[0]["hits"] == 1
    # Visible where a hit is: status, result.
    status = ok_json(run_cli(data_dir, "status", str(second.id), "--json"))
    assert status["cached"] is True and status["cache"] == dict(zip(("kind", "source", "similarity"), hit.cache_hit))
    result = ok_json(run_cli(data_dir, "result", str(second.id), "--json"))
    assert result["cached"] is True and result["cache"]["kind"] == "semantic"


def test_a_different_question_with_the_same_system_prompt_does_not_hit(store: Engine, emu: Emulator) -> None:
    run_one(store, emu, spec(QUESTION))
    other = run_one(store, emu, spec(OTHER))
    assert other.cache_hit is None and not other.cached
    assert generated(emu) == [QUESTION, OTHER]
    assert store.cache_stats()["semantic"] == {"entries": 2, "hits": 0}


def test_the_same_question_under_another_system_prompt_is_out_of_scope(store: Engine, emu: Emulator) -> None:
    run_one(store, emu, spec(QUESTION))
    elsewhere = run_one(store, emu, spec(REWORDED, system="You are a pirate."))
    assert elsewhere.cache_hit is None and generated(emu) == [QUESTION, REWORDED]


def test_below_the_threshold_the_job_runs(store: Engine, emu: Emulator) -> None:
    run_one(store, emu, spec(QUESTION))
    strict = run_one(store, emu, spec(REWORDED), similarity=0.999)
    assert strict.cache_hit is None and generated(emu) == [QUESTION, REWORDED]


def test_without_the_flag_or_the_setting_nothing_is_embedded(store: Engine, emu: Emulator, data_dir: Path,
                                                             tmp_path: Path) -> None:
    run_one(store, emu, spec(QUESTION, semantic=False))
    assert embedded(emu) == [] and store.cache_stats()["semantic"]["entries"] == 0
    # cache.semantic = true in the config file: submit marks the job as --semantic-cache does.
    config = tmp_path / "config.toml"
    config.write_text("[cache]\nsemantic = true\n")
    submitted = ok_json(run_cli(data_dir, "submit", "llama3.2", REWORDED, "--system", SYSTEM, "--json",
                                OLLAMA_Q_CONFIG=str(config)))
    assert store.get_job(submitted["id"]).semantic
    drain(store, emu.url)
    assert embedded(emu) == [[REWORDED]] and store.get_job(submitted["id"]).cache_hit is None
    no = ok_json(run_cli(data_dir, "submit", "llama3.2", QUESTION + " now", "--system", SYSTEM, "--no-cache", "--json",
                         OLLAMA_Q_CONFIG=str(config)))
    assert not store.get_job(no["id"]).semantic


def test_no_cache_means_no_semantic_cache_either(store: Engine, emu: Emulator) -> None:
    run_one(store, emu, spec(QUESTION))
    job = run_one(store, emu, spec(REWORDED, use_cache=False))
    assert job.cache_hit is None and len(embedded(emu)) == 1


def test_a_failing_embedding_model_never_fails_the_job(store: Engine, emu: Emulator) -> None:
    job = run_one(store, emu, spec(QUESTION), embedding_model="no-such-embedder")
    assert job.error is None and job.attempts == 1 and generated(emu) == [QUESTION]
    stats = store.cache_stats()
    assert (stats["entries"], stats["semantic"]["entries"]) == (1, 0)  # stored, exact only


def test_chat_scope_is_the_conversation_before_the_last_user_text(store: Engine, emu: Emulator) -> None:
    def chat(last: str, earlier: str = "hello") -> JobSpec:
        messages = [{"role": "user", "content": earlier}, {"role": "assistant", "content": "hi"},
                    {"role": "user", "content": last}]
        return JobSpec(model="llama3.2", type=JobType.CHAT, request={"messages": messages}, semantic_cache=True)

    first = run_one(store, emu, chat(QUESTION))
    assert run_one(store, emu, chat(REWORDED)).cache_hit[1] == first.id
    assert run_one(store, emu, chat(REWORDED, earlier="good evening")).cache_hit is None


def test_an_openai_backend_embeds_through_v1_embeddings(store: Engine, emu: Emulator) -> None:
    first = store.submit(spec(QUESTION), store.now())
    drain(store, emu.url, kind="openai")
    second = store.submit(spec(REWORDED), store.now())
    drain(store, emu.url, kind="openai")
    assert store.get_job(second.id).cache_hit[1] == first.id
    assert [p for _, p, _ in emu.requests if p.startswith("/v1/") and p != "/v1/models"].count("/v1/embeddings") == 2


def test_the_daemons_ttl_and_bound_reach_the_store(store: Engine, emu: Emulator) -> None:
    run_one(store, emu, spec(QUESTION, semantic=False), ttl=3600.0)
    [entry] = store.cache_list()
    assert entry["source"] == 1
    assert store.submit(spec(QUESTION, semantic=False), store.now()).cache_hit == ("exact", 1, 1.0)
    run_one(store, emu, spec(OTHER, semantic=False), max_bytes=1)
    assert store.cache_stats()["entries"] == 0  # nothing fits one byte


# ---------------------------------------------------------------------------- CLI


def test_cache_list_and_clear_through_the_cli(store: Engine, emu: Emulator) -> None:
    for prompt, model in (("a", "llama3.2"), ("b", "qwen2.5:0.5b"), ("c", "llama3.2")):
        run_one(store, emu, JobSpec(model=model, type=JobType.GENERATE, request={"prompt": prompt}))
    store.close()  # the commands below open it in this process
    listed = ok_json(run_main("cache", "list", "--json"))
    assert [e["source"] for e in listed] == [3, 2, 1]
    assert set(listed[0]) == {"key", "model", "type", "created_at", "last_hit_at", "hits", "bytes", "source"}
    assert listed[0]["created_at"].endswith("Z") and len(listed[0]["key"]) == 64
    assert [e["source"] for e in ok_json(run_main("cache", "list", "--model", "llama3.2", "--limit", "1",
                                                  "--json"))] == [3]
    table = run_main("cache", "list")
    assert table.returncode == 0 and listed[0]["key"][:12] in table.stdout and "qwen2.5:0.5b" in table.stdout
    stats = ok_json(run_main("cache", "stats", "--json"))
    assert stats["entries"] == 3 and stats["semantic"] == {"entries": 0, "hits": 0}
    assert stats["ttl"] is None and stats["max_bytes"] is None
    assert ok_json(run_main("cache", "clear", "--older-than", "1h", "--json")) == {"cleared": 0}
    assert ok_json(run_main("cache", "clear", "--model", "LLAMA3.2:latest", "--json")) == {"cleared": 2}
    assert [e["source"] for e in ok_json(run_main("cache", "list", "--json"))] == [2]
    assert ok_json(run_main("cache", "clear", "--json")) == {"cleared": 1}


@pytest.mark.parametrize("args", [
    ("cache", "list", "--limit", "-1"),
    ("cache", "list", "--limit", "x"),
    ("cache", "list", "--model", "bad name!"),
    ("cache", "clear", "--older-than", "soon"),
    ("cache", "clear", "--model", ""),
    ("submit", "llama3.2", "hi", "--semantic-cache", "--no-cache"),
])
def test_bad_cache_input_is_one_error_line_and_nothing_written(data_dir: Path, args: tuple[str, ...]) -> None:
    assert ok_json(run_main("submit", "llama3.2", "kept", "--json"))["id"] == 1
    assert_one_error(run_main(*args), 2)
    assert ok_json(run_main("info", "--json"))["jobs"]["total"] == 1
