"""The daemon's Prometheus metrics (`daemon --metrics-addr [HOST:]PORT`), in the contract's
names, served at /metrics by prometheus-client on a thread of its own.

Two kinds of figure:
- The store's, read when scraped (`StoreCollector`): jobs per status and ready jobs per model
  and priority, from the counters kept beside the records (`Engine.counts`,
  `Engine.ready_depth`: a read per label, never a walk of the jobs), and the cache's lookups.
  They are the whole store's: every daemon of a shared store reports the same.
- This daemon's, fed from its typed events (`on_event`): jobs finished, their durations and
  waits, model loads, tokens, failed attempts; and read from its pool when scraped: each
  backend up or not, and its requests in flight.

Imported only when --metrics-addr is given: prometheus-client is the daemon's alone."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import lru_cache
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as ReadTimedOut  # not the builtin before Python 3.11
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ollama_cli import __version__
from ollama_cli.daemon import events
from ollama_cli.errors import OllamaQError, OperationFailed
from ollama_cli.jobs import Priority, full_name

if TYPE_CHECKING:
    from ollama_cli.daemon.loop import Daemon
    from ollama_cli.daemon.pool import Pool
    from ollama_cli.store.base import Engine

log = logging.getLogger("ollama_q.daemon")

# vLLM's buckets for request times (seconds), which run from a short answer to a long batch job.
DURATION_BUCKETS = (0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680)
# A wait in the queue: from a job taken at once to one that waited out a night's batch.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
# Ollama reports a load_duration with every answer, a few milliseconds when the model was in
# memory already: from this many seconds on, the answer had to load it.
LOAD_SEEN = 0.1
PRIORITY_OF_RANK = {p.rank: p.value for p in Priority}
STORE_READ_TIMEOUT = 10.0  # seconds a scrape waits for the store's figures


class StoreCollector(Collector):
    """What a scrape reads now: the store's counters, and this daemon's pool."""

    def __init__(self, store: Engine, pool: Pool) -> None:
        self.store, self.pool = store, pool
        # One thread reads the store for every scrape: the server answers each on a thread of
        # its own, and a PostgreSQL engine opens a connection per thread that uses it.
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="ollama-q-metrics")

    def _store_figures(self) -> tuple[dict[str, int], list[tuple[int, str, int]], dict[str, int]]:
        return self.store.counts(), self.store.ready_depth(), self.store.cache_stats()

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("ollama_q_daemon_info", "This daemon's version (always 1).", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        up = GaugeMetricFamily("ollama_q_backend_up", "Whether the backend answers (1) or not (0).",
                               labels=["backend"])
        inflight = GaugeMetricFamily("ollama_q_backend_inflight", "This daemon's requests in flight to the backend.",
                                     labels=["backend"])
        for slot in list(self.pool.slots):
            up.add_metric([slot.backend.label], 1 if slot.up else 0)
            inflight.add_metric([slot.backend.label], slot.running)
        yield up
        yield inflight
        try:
            counts, depth, cache = self._reader.submit(self._store_figures).result(STORE_READ_TIMEOUT)
        except (OllamaQError, ReadTimedOut) as exc:  # a server restarting: the rest of the scrape stands
            log.warning("metrics: the store's figures are left out of this scrape: %s",
                        getattr(exc, "message", None) or type(exc).__name__)
            return
        jobs = GaugeMetricFamily("ollama_q_jobs", "Jobs in the store, by status.", labels=["status"])
        for status, n in counts.items():
            if status != "total":
                jobs.add_metric([status], n)
        yield jobs
        queued = GaugeMetricFamily("ollama_q_queue_depth", "Ready jobs in the store, by model and priority.",
                                   labels=["model", "priority"])
        for rank, model, n in depth:
            queued.add_metric([model, PRIORITY_OF_RANK.get(rank, str(rank))], n)
        yield queued
        lookups = CounterMetricFamily("ollama_q_cache_requests", "Cache lookups at submit, by what they found.",
                                      labels=["result"])
        for result, n in (("exact_hit", cache.get("hits", 0)), ("semantic_hit", cache.get("semantic_hits", 0)),
                          ("miss", cache.get("misses", 0))):
            lookups.add_metric([result], n)
        yield lookups


class Metrics:
    """This daemon's counters and histograms, fed by its events, in a registry of its own."""

    def __init__(self, store: Engine, pool: Pool) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.finished = Counter("ollama_q_jobs_finished", "Jobs this daemon saw end, by model, type and status.",
                                ["model", "type", "status"], registry=r)
        self.duration = Histogram("ollama_q_job_duration_seconds", "Seconds of the attempt that completed a job.",
                                  ["model", "type"], buckets=DURATION_BUCKETS, registry=r)
        self.wait = Histogram("ollama_q_queue_wait_seconds", "Seconds from submit (or its --at/--delay time) "
                              "to its first start.", ["model"], buckets=WAIT_BUCKETS, registry=r)
        self.loads = Histogram("ollama_q_model_load_seconds", "Model loads an answer reported, in seconds.",
                               ["model", "backend"], buckets=LOAD_BUCKETS, registry=r)
        self.tokens = Counter("ollama_q_tokens", "Tokens of completed jobs: prompt or generated.",
                              ["model", "kind"], registry=r)
        self.failures = Counter("ollama_q_attempt_failures", "Attempts that failed, by model and error type.",
                                ["model", "error_type"], registry=r)
        self.collector = StoreCollector(store, pool)
        r.register(self.collector)
        # Each labelled series, once found: prometheus-client's labels() takes a lock and
        # checks its arguments each time, which was a third of what a job cost here.
        self._series: dict[tuple[object, tuple[str, ...]], Any] = {}

    def _of(self, metric: Counter | Histogram, *labels: str) -> Any:
        series = self._series.get((metric, labels))
        if series is None:
            series = self._series[(metric, labels)] = metric.labels(*labels)
        return series

    def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.JobFinished):
            self._finished(event)
        elif isinstance(event, events.JobRetrying):
            self._of(self.failures, _model(event.job.model), event.error.type.value).inc()
        elif isinstance(event, events.JobStarted):
            for job in event.jobs:
                if job.attempts == 1 and job.started_at is not None:
                    due = max(job.created_at, job.run_at or job.created_at)
                    self._of(self.wait, _model(job.model)).observe(max(0.0, job.started_at - due))

    def _finished(self, event: events.JobFinished) -> None:
        job, model = event.job, _model(event.job.model)
        self._of(self.finished, model, job.type.value, event.status.value).inc()
        if event.error is not None:
            self._of(self.failures, model, event.error.type.value).inc()
        if event.took is not None:
            self._of(self.duration, model, job.type.value).observe(event.took)
        stats = event.stats or {}
        for kind, key in (("prompt", "prompt_eval_count"), ("generated", "eval_count")):
            if stats.get(key):
                self._of(self.tokens, model, kind).inc(stats[key])
        load = stats.get("load_duration", 0) / 1e9
        if load >= LOAD_SEEN:
            self._of(self.loads, model, event.backend).observe(load)


_model = lru_cache(maxsize=1024)(full_name)  # the label of a model as jobs name it


def attach(daemon: Daemon, address: str) -> None:
    """Serve the daemon's metrics at http://HOST:PORT/metrics from now on, until the process
    ends (`address` as the settings give it: an IPv6 host in brackets; port 0: one the kernel
    chooses, which the log says). OperationFailed if it cannot listen there."""
    metrics = Metrics(daemon.store, daemon.pool)
    host, _, port_text = address.rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    try:
        server, _ = start_http_server(port, host, registry=metrics.registry)
    except OSError as exc:
        raise OperationFailed(f"--metrics-addr: cannot listen on {_shown(host, port)}: {exc.strerror or exc}") \
            from None
    daemon.events.subscribe(metrics.on_event)
    log.info("metrics at http://%s/metrics", _shown(host, server.server_address[1]))


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
