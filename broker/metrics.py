"""The broker's Prometheus metrics, served from a snapshot of its statistics.

The broker's loop refreshes the snapshot (:meth:`BrokerMetrics.update`, about once
a second); the metrics server's thread only ever reads the latest snapshot, never
the broker's live state. Every family is built from the same STATS answer that
``zeroserve status`` shows, stored jobs included: the job store keeps its counts per
state in memory (no pass over the store), and it is held with an exclusive lock, so
that no other connection, this thread's included, could read it anyway.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from broker.stats import TIME_BUCKETS_S
from broker.worker_metrics import WorkerMetrics
from gateway.ui.page import PAGE, data_answer, page_headers

log = logging.getLogger("zeroserve.broker")

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_ENDPOINT = ["service", "endpoint"]  # the labels of per-endpoint families, as on the gateway


def _batch_histogram(sizes: dict) -> tuple[list[tuple[str, float]], float]:
    """Cumulative buckets of a {batch size: batches} count, and the sum of the sizes."""
    counts = {int(k): int(v) for k, v in sizes.items()}
    buckets = [(str(bound), float(sum(n for size, n in counts.items() if size <= bound)))
               for bound in BATCH_SIZE_BUCKETS]
    buckets.append(("+Inf", float(sum(counts.values()))))
    return buckets, float(sum(size * n for size, n in counts.items()))


def _time_histogram(histogram: dict) -> tuple[list[tuple[str, float]], float]:
    """Cumulative buckets of a ``{"buckets": [count per TIME_BUCKETS_S bound, then past
    them], "sum": seconds}`` summary, and its sum."""
    counts = list(histogram.get("buckets", ()))
    if len(counts) != len(TIME_BUCKETS_S) + 1:
        counts = [0] * (len(TIME_BUCKETS_S) + 1)
    buckets, running = [], 0
    for bound, count in zip((*map(str, TIME_BUCKETS_S), "+Inf"), counts):
        running += int(count)
        buckets.append((bound, float(running)))
    return buckets, float(histogram.get("sum", 0.0))


def families(stats: dict[str, Any]) -> list[Metric]:
    """The metric families of one broker STATS answer."""
    workers = GaugeMetricFamily("zeroserve_broker_workers", "Workers registered, by service",
                                labels=["service"])
    slots = GaugeMetricFamily("zeroserve_broker_worker_slots",
                              "Slots the workers of a service advertise", labels=["service"])
    busy = GaugeMetricFamily("zeroserve_broker_worker_in_flight",
                             "Batches the workers of a service hold now", labels=["service"])
    per_service: dict[str, list[int]] = {}
    for w in stats.get("workers", []):
        totals = per_service.setdefault(w["service"], [0, 0, 0])
        totals[0] += 1
        totals[1] += int(w["slots"])
        totals[2] += int(w["in_flight"])
    for service, (count, total_slots, in_flight) in sorted(per_service.items()):
        workers.add_metric([service], count)
        slots.add_metric([service], total_slots)
        busy.add_metric([service], in_flight)

    queued = GaugeMetricFamily("zeroserve_broker_queue_depth",
                               "Requests waiting in the endpoint's queue", labels=_ENDPOINT)
    requests = CounterMetricFamily("zeroserve_broker_requests",
                                   "Requests answered, by endpoint and status",
                                   labels=[*_ENDPOINT, "status"])
    batches = CounterMetricFamily("zeroserve_broker_batches", "Batches run, by endpoint",
                                  labels=_ENDPOINT)
    sizes = HistogramMetricFamily("zeroserve_broker_batch_size", "Rows per batch",
                                  labels=_ENDPOINT)
    wait = GaugeMetricFamily("zeroserve_broker_queue_wait_seconds_mean",
                             "Mean time requests waited in the queue", labels=_ENDPOINT)
    run = GaugeMetricFamily("zeroserve_broker_exec_seconds_mean",
                            "Mean execution time of a batch, as workers report it",
                            labels=_ENDPOINT)
    waits = HistogramMetricFamily("zeroserve_broker_queue_wait_seconds",
                                  "Time each request waited in the queue before dispatch",
                                  labels=_ENDPOINT)
    runs = HistogramMetricFamily("zeroserve_broker_exec_seconds",
                                 "Execution time of each batch, as workers report it",
                                 labels=_ENDPOINT)
    for name, e in sorted(stats.get("endpoints", {}).items()):
        service, _, endpoint = name.partition(".")  # the broker's key: "service.endpoint"
        labels = [service, endpoint]
        queued.add_metric(labels, e["queued"])
        for status, count in sorted(e.get("statuses", {}).items()):
            requests.add_metric([*labels, str(status)], count)
        batches.add_metric(labels, e["batches"])
        buckets, total = _batch_histogram(e.get("batch_sizes", {}))
        sizes.add_metric(labels, buckets, total)
        wait.add_metric(labels, e["mean_queue_wait_ms"] / 1000)
        run.add_metric(labels, e["mean_exec_ms"] / 1000)
        waits.add_metric(labels, *_time_histogram(e.get("queue_wait_s", {})))
        runs.add_metric(labels, *_time_histogram(e.get("exec_s", {})))

    jobs = GaugeMetricFamily("zeroserve_jobs", "Stored jobs, by state", labels=["state"])
    job_stats = stats.get("jobs") or {}
    for state, count in sorted(job_stats.get("stored", {}).items()):
        jobs.add_metric([state], count)
    store_ok = GaugeMetricFamily("zeroserve_jobs_store_ok",
                                 "1 while the job store takes writes, 0 while it fails")
    if "store" in job_stats:
        store_ok.add_metric([], 1.0 if job_stats["store"].get("ok") else 0.0)
    dropped = CounterMetricFamily("zeroserve_broker_malformed_dropped",
                                  "Malformed messages dropped")
    dropped.add_metric([], stats.get("malformed_dropped", 0))
    uptime = GaugeMetricFamily("zeroserve_broker_uptime_seconds", "Seconds since the start")
    uptime.add_metric([], stats.get("uptime_s", 0.0))
    return [workers, slots, busy, queued, requests, batches, sizes, wait, run, waits, runs, jobs,
            store_ok, dropped, uptime, *_stream_families(stats), _dependency_family(stats)]


def _stream_families(stats: dict[str, Any]) -> list[Metric]:
    """The streams of each streaming endpoint: active, started, chunks, cancelled, lost,
    time to the first chunk, and their mean length."""
    active = GaugeMetricFamily("zeroserve_broker_streams_active", "Streams running now",
                               labels=_ENDPOINT)
    started = CounterMetricFamily("zeroserve_broker_streams_started", "Streams started",
                                  labels=_ENDPOINT)
    chunks = CounterMetricFamily("zeroserve_broker_stream_chunks",
                                 "Stream chunks forwarded to their callers", labels=_ENDPOINT)
    cancelled = CounterMetricFamily("zeroserve_broker_streams_cancelled",
                                    "Streams whose caller went away", labels=_ENDPOINT)
    lost = CounterMetricFamily("zeroserve_broker_streams_lost",
                               "Streams ended by a worker lost mid-stream", labels=_ENDPOINT)
    first = HistogramMetricFamily("zeroserve_broker_stream_first_chunk_seconds",
                                  "Time from a stream's arrival to its first chunk",
                                  labels=_ENDPOINT)
    length = GaugeMetricFamily("zeroserve_broker_stream_seconds_mean",
                               "Mean duration of the streams that ended", labels=_ENDPOINT)
    for name, e in sorted(stats.get("endpoints", {}).items()):
        s = e.get("streams")
        if s is None:
            continue
        labels = list(name.partition(".")[::2])
        active.add_metric(labels, s["active"])
        started.add_metric(labels, s["started"])
        chunks.add_metric(labels, s["chunks"])
        cancelled.add_metric(labels, s["cancelled"])
        lost.add_metric(labels, s["lost_mid_stream"])
        first.add_metric(labels, *_time_histogram(s.get("first_chunk_s", {})))
        length.add_metric(labels, s["mean_duration_ms"] / 1000)
    return [active, started, chunks, cancelled, lost, first, length]


def _dependency_family(stats: dict[str, Any]) -> Metric:
    calls = CounterMetricFamily("zeroserve_broker_dependency_calls",
                                "Calls of one service by another (zeroserve.depends)",
                                labels=["caller", "callee"])
    for c in stats.get("dependency_calls", []):
        calls.add_metric([c["caller"], c["callee"]], c["calls"])
    return calls


class BrokerMetrics:
    """A Prometheus collector over the latest statistics snapshot, and the metrics of the
    services' own code that the workers report (``workers``: its ``accept`` is what the
    broker's core calls with a heartbeat's metrics)."""

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] = {}
        self.workers = WorkerMetrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def update(self, stats: dict[str, Any]) -> None:
        """Replace the snapshot and drop the metrics of the workers it no longer lists (the
        broker's loop calls this)."""
        self.snapshot = stats
        self.workers.keep_only({w.get("worker_id", "") for w in stats.get("workers", [])})

    def collect(self) -> Iterator[Metric]:
        """The families of the latest snapshot, then the workers' own (called on the metrics
        server's thread)."""
        yield from families(self.snapshot)
        yield from self.workers.families()

    def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """The status, headers and body of a GET of ``path`` on the metrics port:
        ``/metrics``, the live page ``/ui`` and its data ``/ui/data`` (the latest snapshot)."""
        route = path.partition("?")[0]
        if route == "/metrics":
            return 200, {"Content-Type": CONTENT_TYPE_LATEST}, generate_latest(self.registry)
        if route == "/ui":
            return 200, page_headers(), PAGE.encode()
        if route == "/ui/data":
            body = json.dumps(data_answer(self.snapshot, TIME_BUCKETS_S)).encode()
            return 200, {"Content-Type": "application/json", "Cache-Control": "no-store"}, body
        return 404, {"Content-Type": "application/json"}, json.dumps(
            {"error": f"no route serves GET {route}: try /metrics or /ui"}).encode()

    def serve(self, host: str, port: int) -> bool:
        """Serve :meth:`answer` on ``host:port`` from a thread; False (logged) if it cannot."""
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                status, headers, body = metrics.answer(self.path)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # a scrape a second is not worth a line

        try:
            server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            log.error("broker: metrics not served, cannot listen on %s:%d: %s", host, port, exc)
            return False
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        log.info("broker: metrics on http://%s:%d/metrics, live page on /ui", host, port)
        return True
