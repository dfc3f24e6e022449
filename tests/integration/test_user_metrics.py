"""Metrics from a service's own code reach the broker's Prometheus /metrics, per worker."""
from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster import Cluster
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

SERVICE = f"{Path(__file__).resolve().parents[1] / 'metrics_services.py'}:Greeter"


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _scrape_until(port: int, done: Callable[[dict], bool], timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            samples = _scrape(port)
        except OSError:  # a broker that is starting
            samples = {}
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def _by_worker(samples: dict, name: str, **labels: str) -> dict[str, float]:
    """The samples called ``name`` with ``labels`` (and service=greeter), by worker label."""
    wanted = {**labels, "service": "greeter"}
    out = {}
    for (sample, label_items), value in samples.items():
        found = dict(label_items)
        if sample == name and {k: found.get(k) for k in wanted} == wanted:
            out[found["worker"]] = value
    return out


def test_two_workers_metrics_reach_the_broker_and_a_stopped_workers_go(
        cluster: Cluster) -> None:
    cluster.broker()
    cluster.gateway()
    workers = [cluster.worker(SERVICE), cluster.worker(SERVICE)]
    cluster.wait_ready(2)
    pids: dict[int, int] = {}
    for i in range(40):
        language = "en" if i % 4 else "de"
        status, answer, _ = cluster.post("/greeter/greet", {"name": "ada", "language": language})
        assert status == 200, answer
        pids[answer["pid"]] = pids.get(answer["pid"], 0) + 1
    assert len(pids) == 2, pids  # both workers served

    def counted(samples: dict) -> bool:
        calls = _by_worker(samples, "greeter_calls_total", language="en")
        calls_de = _by_worker(samples, "greeter_calls_total", language="de")
        workers = samples.get(("zeroserve_broker_workers", (("service", "greeter"),)))
        return sum(calls.values()) == 30 and sum(calls_de.values()) == 10 and workers == 2
    samples = _scrape_until(cluster.metrics_port, counted)
    en = _by_worker(samples, "greeter_calls_total", language="en")
    de = _by_worker(samples, "greeter_calls_total", language="de")
    assert sum(en.values()) == 30 and sum(de.values()) == 10, (en, de)
    assert len(set(en) | set(de)) == 2  # a series per worker
    by_pid = _by_worker(samples, "greeter_pid")
    assert sorted(by_pid.values()) == sorted(pids)  # __init__'s gauge, one per worker
    counts = _by_worker(samples, "greeter_answer_chars_count")
    assert sorted(counts.values()) == sorted(pids.values())  # each worker's own calls
    short = _by_worker(samples, "greeter_answer_chars_bucket", le="16.0")
    assert sum(short.values()) == 40  # "hello ada": 9 characters
    assert samples[("zeroserve_broker_workers", (("service", "greeter"),))] == 2

    stopped = next(w for w, pid in by_pid.items() if pid == workers[0].pid)
    workers[0].stop()
    samples = _scrape_until(cluster.metrics_port, lambda s: stopped not in _by_worker(
        s, "greeter_pid"))
    assert stopped not in _by_worker(samples, "greeter_pid")
    assert not [k for k in samples if ("worker", stopped) in k[1]]
    assert len(_by_worker(samples, "greeter_pid")) == 1


def test_a_restarted_broker_gets_the_metrics_again_without_new_calls(cluster: Cluster) -> None:
    broker = cluster.broker()
    cluster.gateway()
    cluster.worker(SERVICE)
    cluster.wait_ready(1)
    for _ in range(3):
        status, answer, _ = cluster.post("/greeter/greet", {"name": "ada"})
        assert status == 200, answer

    def three(samples: dict) -> bool:
        return sum(_by_worker(samples, "greeter_calls_total", language="en").values()) == 3
    assert three(_scrape_until(cluster.metrics_port, three))
    broker.stop()
    cluster.broker()
    samples = _scrape_until(cluster.metrics_port, three, timeout=20.0)
    assert three(samples), [k for k in samples if k[0].startswith("greeter")]
