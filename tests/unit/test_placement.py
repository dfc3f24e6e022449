"""Sync endpoints move inline once proven fast, and back to threads for good when slow."""
from worker.placement import Placement


def test_fast_endpoint_moves_inline_after_the_trial():
    place = Placement(trial_calls=5)
    for _ in range(4):
        place.observe(0.0001)
    assert not place.inline
    place.observe(0.0001)
    assert place.inline


def test_one_slow_trial_call_keeps_the_endpoint_in_threads():
    place = Placement(trial_calls=3)
    for seconds in (0.0001, 0.5, 0.0001, 0.0001):
        place.observe(seconds)
    assert not place.inline


def test_slow_inline_call_sends_the_endpoint_back_to_threads_for_good():
    place = Placement(trial_calls=1)
    place.observe(0.0001)
    assert place.inline
    place.observe(0.2)
    assert not place.inline
    for _ in range(100):
        place.observe(0.0001)
    assert not place.inline
