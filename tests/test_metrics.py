"""`daemon --metrics-addr`: a real daemon process against the emulator, its /metrics scraped
over HTTP while a job runs and once the queue is drained, the text parsed with
prometheus-client's own parser; on both engines. And what --metrics-addr refuses."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.emulator import Emulator
from tests.helpers.cli import assert_one_error, run_cli, run_main, submit_id
from tests.helpers.processes import DaemonProcess, free_port

LLAMA, QWEN = "llama3.2:latest", "qwen2.5:0.5b"


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, by name and labels."""
    reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.mark.usefixtures("each_engine")
def test_a_scrape_during_a_run_and_after_it_gives_the_contracts_metrics(data_dir: Path) -> None:
    emulator = Emulator(load_time=0.2).start()  # a load Ollama would report: load_duration 0.2 s
    emulator.hold()
    port = free_port()
    daemon = None
    try:
        first = submit_id(data_dir, "llama3.2", "a", "-o", "num_predict=3")
        submit_id(data_dir, "llama3.2", "b", "--retries", "0")
        submit_id(data_dir, "qwen2.5:0.5b", "c", "-p", "low", "-o", "num_predict=5")
        daemon = DaemonProcess(data_dir, emulator.url, "--concurrency", "1", "--metrics-addr", str(port))
        assert emulator.wait_in_flight(1), daemon.log()
        running = scrape(port)
        backend = emulator.url
        assert value(running, "ollama_q_daemon_info", version=__import__("ollama_cli").__version__) == 1
        assert value(running, "ollama_q_jobs", status="running") == 1
        assert value(running, "ollama_q_jobs", status="pending") == 2
        assert value(running, "ollama_q_jobs", status="completed") == 0
        assert value(running, "ollama_q_queue_depth", model=LLAMA, priority="medium") == 1
        assert value(running, "ollama_q_queue_depth", model=QWEN, priority="low") == 1
        assert value(running, "ollama_q_backend_up", backend=backend) == 1
        assert value(running, "ollama_q_backend_inflight", backend=backend) == 1
        assert value(running, "ollama_q_cache_requests_total", result="miss") == 3
        assert value(running, "ollama_q_cache_requests_total", result="exact_hit") == 0

        emulator.fail_next(kind="status", status=400, message="bad input", model="llama3.2")  # job b, at once
        emulator.release()
        waited = run_cli(data_dir, "wait", str(first), str(first + 1), str(first + 2), "--timeout", "60s")
        assert waited.returncode == 1, waited.stderr  # b failed
        # Subscribers see events in order: once a later job has started, the metrics have seen the rest.
        emulator.hold()
        last = submit_id(data_dir, "all-minilm", "--type", "embed", "--input", "d")
        assert daemon.wait_log(f"job {last} started"), daemon.log()
        done = scrape(port)
        assert value(done, "ollama_q_jobs_finished_total", model=LLAMA, type="generate", status="completed") == 1
        assert value(done, "ollama_q_jobs_finished_total", model=LLAMA, type="generate", status="failed") == 1
        assert value(done, "ollama_q_jobs_finished_total", model=QWEN, type="generate", status="completed") == 1
        assert value(done, "ollama_q_attempt_failures_total", model=LLAMA, error_type="bad_request") == 1
        assert value(done, "ollama_q_job_duration_seconds_count", model=LLAMA, type="generate") == 1
        assert value(done, "ollama_q_job_duration_seconds_bucket", model=LLAMA, type="generate", le="+Inf") == 1
        assert value(done, "ollama_q_queue_wait_seconds_count", model=LLAMA) == 2
        assert value(done, "ollama_q_queue_wait_seconds_count", model=QWEN) == 1
        assert value(done, "ollama_q_model_load_seconds_count", model=LLAMA, backend=backend) == 1
        assert value(done, "ollama_q_model_load_seconds_count", model=QWEN, backend=backend) == 1
        assert value(done, "ollama_q_tokens_total", model=LLAMA, kind="generated") == 3
        assert value(done, "ollama_q_tokens_total", model=QWEN, kind="generated") == 5
        assert value(done, "ollama_q_tokens_total", model=LLAMA, kind="prompt") > 0
        assert value(done, "ollama_q_jobs", status="completed") == 2 and value(done, "ollama_q_jobs", status="failed") == 1
        assert not any(name == "ollama_q_queue_depth" for name, _ in done)  # nothing ready
        assert value(done, "ollama_q_backend_inflight", backend=backend) == 1  # the embed
        assert "tell" not in str(done) and "job" not in {k for _, labels in done for k, _ in labels}
    finally:
        if daemon is not None:
            daemon.stop()
        emulator.stop()


@pytest.mark.parametrize("addr", ["", "abc", "0", "65536", "host:", ":9464", "[::1", "::1:9464", "1.2.3.4:x",
                                  "a b:9464", "９４６４"])
def test_a_bad_metrics_address_is_refused_with_exit_2(data_dir: Path, addr: str) -> None:
    message = assert_one_error(run_main("daemon", "--metrics-addr", addr), 2)
    assert "--metrics-addr" in message
    assert not data_dir.exists()  # nothing opened


def test_an_address_in_use_fails_with_exit_1(data_dir: Path, emulator: Emulator) -> None:
    port = int(emulator.url.rsplit(":", 1)[1])
    res = run_cli(data_dir, "daemon", "--host", emulator.url, "--metrics-addr", f"127.0.0.1:{port}")
    assert res.returncode == 1 and res.stderr.startswith("error: --metrics-addr: cannot listen on 127.0.0.1:")
    assert "Traceback" not in res.stderr
