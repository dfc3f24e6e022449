"""Metrics from a service's own code: the rules on names, the values a heartbeat carries, and
the broker's families of them, per worker."""
from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from broker.metrics import BrokerMetrics
from broker.worker_metrics import WorkerMetrics
from zeroserve.metrics import Counter, Gauge, Histogram, MetricError, Registry
from zeroserve.wire.backend import heartbeat, parse_heartbeat
from zeroserve.wire.envelope import ProtocolError, split_command


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "zeroserve_tokens", "__x", "a b"])
def test_a_bad_or_reserved_name_is_refused(name: str) -> None:
    with pytest.raises(MetricError):
        Counter(name, registry=Registry())


@pytest.mark.parametrize("labels", [["service"], ["worker"], ["le"], ["a", "a"], ["1x"],
                                    ["__x"], "model"])
def test_a_bad_or_reserved_label_is_refused(labels: list[str]) -> None:
    with pytest.raises(MetricError):
        Gauge("g", labelnames=labels, registry=Registry())


def test_the_same_name_defined_otherwise_is_refused_and_the_same_definition_shares() -> None:
    registry = Registry()
    first = Counter("hits_total", "Hits", ["cache"], registry=registry)
    again = Counter("hits", "Hits", ["cache"], registry=registry)  # _total is the exposition's
    first.labels(cache="a").inc()
    again.labels(cache="a").inc(2)
    assert registry.snapshot()["hits"]["series"] == [[["a"], 3.0]]
    with pytest.raises(MetricError):
        Gauge("hits", registry=registry)


def test_a_name_whose_samples_would_clash_with_another_metrics_is_refused() -> None:
    registry = Registry()
    Counter("requests", registry=registry)  # shows requests_total
    Histogram("latency", registry=registry)  # shows latency_bucket, _sum, _count
    for kind, name in ((Gauge, "requests_total"), (Gauge, "latency_count"),
                       (Gauge, "latency_bucket")):
        with pytest.raises(MetricError, match="same name"):
            kind(name, registry=registry)


def test_values_and_misuse() -> None:
    registry = Registry()
    counter = Counter("c", registry=registry)
    gauge = Gauge("g", labelnames=["m"], registry=registry)
    histogram = Histogram("h", buckets=(1, 2), registry=registry)
    counter.inc()
    counter.inc(2.5)
    gauge.labels("x").set(5)
    gauge.labels(m="x").dec(2)
    for value in (0.5, 1.0, 1.5, 9):
        histogram.observe(value)
    snapshot = registry.snapshot()
    assert snapshot["c"] == {"type": "counter", "help": "", "labels": [],
                             "series": [[[], 3.5]]}
    assert snapshot["g"]["series"] == [[["x"], 3.0]]
    assert snapshot["h"]["series"] == [[[], [[2, 1, 1], 12.0]]]
    assert snapshot["h"]["buckets"] == [1.0, 2.0]
    with pytest.raises(MetricError):
        counter.inc(-1)
    with pytest.raises(MetricError):
        gauge.set(1)  # it has labels
    with pytest.raises(MetricError):
        gauge.labels("x", "y")
    with pytest.raises(MetricError):
        counter.labels().set(1)


def test_a_heartbeat_carries_values_only_when_they_changed() -> None:
    registry = Registry()
    assert registry.snapshot_if_changed(force=True) is None  # no metric: nothing to send
    counter = Counter("c", registry=registry)
    assert registry.snapshot_if_changed() is not None  # a new metric is a change
    assert registry.snapshot_if_changed() is None
    counter.inc()
    assert registry.snapshot_if_changed()["c"]["series"] == [[[], 1.0]]
    assert registry.snapshot_if_changed() is None
    assert registry.snapshot_if_changed(force=True) is not None  # a new broker session


def test_a_label_set_past_the_bound_is_dropped_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry(max_series=3)
    counter = Counter("c", labelnames=["user"], registry=registry)
    with caplog.at_level(logging.WARNING, "zeroserve.metrics"):
        for user in range(10):
            counter.labels(user=user).inc()
        counter.labels(user=0).inc()  # a known label set still counts
    assert registry.snapshot()["c"]["series"] == [[["0"], 2.0], [["1"], 1.0], [["2"], 1.0]]
    assert len([r for r in caplog.records if "label sets" in r.message]) == 1


def test_the_heartbeat_frame_round_trips_and_a_bad_one_is_refused() -> None:
    _, rest = split_command(heartbeat({"c": {"type": "counter", "series": []}}))
    assert parse_heartbeat(rest) == {"c": {"type": "counter", "series": []}}
    _, rest = split_command(heartbeat())
    assert parse_heartbeat(rest) is None
    with pytest.raises(ProtocolError):
        parse_heartbeat([b"\x93\x01\x02\x03"])


def _frames(metrics: dict) -> list:
    """The frames after the command of a HEARTBEAT carrying ``metrics``."""
    return split_command(heartbeat(metrics))[1]


def _scrape(metrics: BrokerMetrics) -> dict:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_broker_shows_each_workers_values_and_forgets_a_worker_that_left() -> None:
    registry = Registry()
    tokens = Counter("tokens", "Tokens", ["model"], registry=registry)
    latency = Histogram("step_seconds", buckets=(0.1, 1), registry=registry)
    tokens.labels(model="s").inc(7)
    latency.observe(0.5)
    metrics = BrokerMetrics()
    metrics.workers.accept("w-1", "llm", _frames(registry.snapshot()))
    tokens.labels(model="s").inc(3)
    metrics.workers.accept("w-2", "llm", _frames(registry.snapshot()))
    samples = _scrape(metrics)
    labels = (("model", "s"), ("service", "llm"))
    assert samples[("tokens_total", (*labels, ("worker", "w-1")))] == 7
    assert samples[("tokens_total", (*labels, ("worker", "w-2")))] == 10
    assert samples[("step_seconds_bucket", (("le", "1.0"), ("service", "llm"),
                                            ("worker", "w-1")))] == 1
    assert samples[("step_seconds_sum", (("service", "llm"), ("worker", "w-1")))] == 0.5
    metrics.update({"workers": [{"worker_id": "w-2", "service": "llm", "slots": 1,
                                 "in_flight": 0}]})
    samples = _scrape(metrics)
    assert not [k for k in samples if ("worker", "w-1") in k[1]]
    assert samples[("tokens_total", (*labels, ("worker", "w-2")))] == 10


def test_the_broker_drops_bad_families_and_other_definitions(
        caplog: pytest.LogCaptureFixture) -> None:
    store = WorkerMetrics(max_series=2)
    good = {"type": "gauge", "labels": [], "series": [[[], 1.0]]}
    with caplog.at_level(logging.WARNING, "zeroserve.broker"):
        store.accept("w-1", "s", _frames({
            "ok": good,
            "zeroserve_broker_workers": good,  # would clash with the broker's own family
            "bad_type": {"type": "summary", "series": []},
            "bad_value": {"type": "gauge", "labels": [], "series": [[[], "x"]]},
            "too_many": {"type": "gauge", "labels": ["a"],
                         "series": [[["1"], 1], [["2"], 1], [["3"], 1]]},
            "bad_hist": {"type": "histogram", "labels": [], "buckets": [1],
                         "series": [[[], [[1], 1.0]]]},
        }))
        store.accept("w-2", "s", _frames({"ok": {"type": "counter", "labels": [],
                                                 "series": []}}))
        assert [f.name for f in store.families()] == ["ok"]
        store.accept("w-2", "s", _frames({"ok": {"type": "counter", "labels": [],
                                                 "series": []}}))
        store.accept("w-3", "s", [b"not msgpack \xc1"])
        names = [f.name for f in store.families()]
    assert names == ["ok"] and store.families()[0].type == "gauge"
    dropped = [r.message for r in caplog.records if "dropped metric" in r.message]
    assert len(dropped) == 7, dropped  # w-2's second refusal is not logged again
    registry = CollectorRegistry()
    registry.register(type("C", (), {"collect": lambda self: store.families()})())
    assert b'ok{service="s",worker="w-1"} 1.0' in generate_latest(registry)
