"""The autoscaler's decisions, with the clock passed in."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from cluster_lib.autoscale import (  # noqa: E402
    Autoscaler,
    Observation,
    ScalePolicy,
    observe,
    service_of,
)

POLICY = ScalePolicy(minimum=1, maximum=3, up_queue_per_worker=2, up_utilisation=0.85,
                     down_utilisation=0.3, idle_s=10, cooldown_s=5, smoothing=1.0)


def test_a_queue_adds_a_worker_then_it_cools_down() -> None:
    scaler = Autoscaler(POLICY)
    assert scaler.decide(Observation(1, 3, 2, 2), now=0).target == 2
    scaler.changed(0, 2)
    assert scaler.decide(Observation(2, 10, 4, 4), now=3).reason == "cooling down"
    assert scaler.decide(Observation(2, 10, 4, 4), now=8).target == 3  # 5 s after it showed
    scaler.changed(8, 3)
    assert scaler.decide(Observation(3, 50, 6, 6), now=20).target == 3  # the maximum


def test_it_waits_for_the_broker_to_count_a_change_then_cools_down_from_there() -> None:
    scaler = Autoscaler(POLICY)
    assert scaler.decide(Observation(1, 6, 2, 2), now=0).target == 2
    scaler.changed(0, 2)
    waiting = scaler.decide(Observation(1, 6, 2, 2), now=6)  # past the cooldown, not yet seen
    assert waiting.target == 1 and waiting.reason == "waiting for 2 workers to register"
    assert scaler.decide(Observation(2, 6, 4, 4), now=8).reason == "cooling down"
    assert scaler.decide(Observation(2, 6, 4, 4), now=12.5).reason == "cooling down"
    assert scaler.decide(Observation(2, 6, 4, 4), now=13).target == 3


def test_a_change_that_never_shows_is_given_up_after_settle_s() -> None:
    scaler = Autoscaler(ScalePolicy(minimum=1, maximum=3, cooldown_s=5, settle_s=30,
                                    smoothing=1.0))
    scaler.changed(0, 2)
    assert scaler.decide(Observation(1, 6, 2, 2), now=29).target == 1
    assert scaler.decide(Observation(1, 6, 2, 2), now=30).reason == "cooling down"
    assert scaler.decide(Observation(1, 6, 2, 2), now=35).target == 2


def test_full_slots_add_a_worker_even_without_a_queue() -> None:
    assert Autoscaler(POLICY).decide(Observation(1, 0, 2, 2), now=0).target == 2


def test_idleness_removes_a_worker_after_idle_s_down_to_the_minimum() -> None:
    scaler = Autoscaler(POLICY)
    assert scaler.decide(Observation(2, 0, 0, 4), now=0).target == 2
    assert scaler.decide(Observation(2, 0, 0, 4), now=9).target == 2
    assert scaler.decide(Observation(2, 1, 0, 4), now=9.5).target == 2  # a request: not idle
    assert scaler.decide(Observation(2, 0, 0, 4), now=12).target == 2   # idle again from 12
    decision = scaler.decide(Observation(2, 0, 0, 4), now=22)
    assert decision.target == 1 and "idle" in decision.reason
    scaler.changed(22, 1)
    assert scaler.decide(Observation(1, 0, 0, 2), now=100).target == 1  # the minimum


def test_outside_the_bounds_comes_back_at_once() -> None:
    assert Autoscaler(POLICY).decide(Observation(0, 0, 0, 0), now=0).target == 1
    assert Autoscaler(POLICY).decide(Observation(5, 0, 0, 10), now=0).target == 3


def test_utilisation_is_smoothed() -> None:
    scaler = Autoscaler(ScalePolicy(smoothing=0.5, up_utilisation=0.85, cooldown_s=0))
    assert scaler.decide(Observation(1, 0, 2, 2), now=0).target == 1  # 0.5 so far
    assert scaler.decide(Observation(1, 0, 2, 2), now=1).target == 1  # 0.75
    assert scaler.decide(Observation(1, 0, 2, 2), now=2).target == 2  # 0.875


def test_observe_reads_the_service_from_broker_stats() -> None:
    stats = {"workers": [{"service": "probe", "slots": 2, "in_flight": 2},
                         {"service": "probe", "slots": 2, "in_flight": 1, "draining": True},
                         {"service": "other", "slots": 4, "in_flight": 4}],
             "endpoints": {"probe.sleep": {"queued": 3}, "probe.double": {"queued": 1},
                           "other.run": {"queued": 9}}}
    assert observe(stats, "probe") == Observation(1, 4, 2, 2)


def test_a_long_queue_adds_as_many_workers_as_it_asks_for_at_most_doubling() -> None:
    scaler = Autoscaler(ScalePolicy(minimum=1, maximum=8, up_queue_per_worker=2, cooldown_s=0,
                                    smoothing=1.0))
    assert scaler.decide(Observation(2, 7, 4, 4), now=0).target == 4   # 7 / 2 -> 4
    assert scaler.decide(Observation(2, 40, 4, 4), now=1).target == 4  # doubling at most
    assert scaler.decide(Observation(6, 40, 12, 12), now=2).target == 8  # the maximum


def test_at_the_maximum_the_decision_says_so() -> None:
    decision = Autoscaler(POLICY).decide(Observation(3, 50, 6, 6), now=0)
    assert decision.target == 3 and decision.reason.startswith("at the maximum of 3")


def test_with_a_minimum_of_zero_one_waiting_request_starts_a_worker() -> None:
    scaler = Autoscaler(ScalePolicy(minimum=0, maximum=2, idle_s=5, cooldown_s=0))
    assert scaler.decide(Observation(0, 0, 0, 0), now=0).target == 0
    assert scaler.decide(Observation(0, 1, 0, 0), now=1).target == 1


@pytest.mark.parametrize("bad", [{"minimum": 3, "maximum": 2}, {"maximum": 0},
                                 {"up_queue_per_worker": 0}, {"smoothing": 0}])
def test_a_policy_outside_its_bounds_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        ScalePolicy(**bad)


def test_service_of_names_the_one_service_the_workers_serve() -> None:
    assert service_of({"workers": [{"service": "mlp"}, {"service": "mlp"}]}) == "mlp"
    assert service_of({"workers": [{"service": "a"}, {"service": "b"}]}) == ""
    assert service_of({"workers": []}) == ""
