"""The batching policy with a fake clock: plain floats in seconds, no sleeps."""
import bisect
import heapq
import math
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batching.policy import BatchLimits, BatchPolicy, LatencyModel
from batching.queue import EndpointQueue, Pending

LIMITS = BatchLimits(max_batch_size=64, max_latency_s=0.020)
A, B = 0.0001, 0.005  # the simulated endpoint: a·n + b seconds for n rows


def pending(i, now, deadline=10.0, rows=1, key=b""):
    return Pending(i.to_bytes(8, "big"), b"gw", now + deadline, now, [b"m"], rows, key)


def trained(a=A, b=B):
    model = LatencyModel()
    for n in (1, 8, 32, 64, 16):
        model.observe(n, a * n + b)
    return model


def busy_traffic(policy, until, rate=10_000):
    """Tell the policy about ``rate`` one-row arrivals per second during the second before
    ``until`` (long enough for the rate estimate to settle)."""
    count = int(rate)
    for i in range(count):
        policy.arrived(until - (count - i) / rate, 1)


# ---------------------------------------------------------------- single decisions


def test_lone_request_on_an_idle_cluster_goes_at_once():
    policy = BatchPolicy(LIMITS, trained())
    queue = EndpointQueue(100)
    queue.push(pending(1, 5.0))
    policy.arrived(5.0, 1)
    assert policy.decide(queue, 5.0, free_slots=1, busy_slots=0).take_rows > 0


def test_light_traffic_is_never_held_back():
    policy = BatchPolicy(LIMITS, trained())
    queue = EndpointQueue(100)
    for i in range(20):  # 20 requests per second: each one alone
        now = i * 0.05
        queue.push(pending(i, now))
        policy.arrived(now, 1)
        decision = policy.decide(queue, now, free_slots=1, busy_slots=0)
        assert decision.take_rows > 0
        queue.take(decision.take_rows)


def test_a_policy_that_has_seen_no_batch_yet_does_not_wait():
    policy = BatchPolicy(LIMITS)
    busy_traffic(policy, 0.02)
    queue = EndpointQueue(100)
    queue.push(pending(1, 0.02))
    assert policy.decide(queue, 0.02, 1, 0).take_rows > 0


def test_no_free_slot_means_no_dispatch_and_no_timer():
    queue = EndpointQueue(100)
    queue.push(pending(1, 0.0))
    decision = BatchPolicy(LIMITS).decide(queue, 0.0, free_slots=0, busy_slots=2)
    assert decision.take_rows == 0 and decision.wake_at is None


def test_empty_queue_means_no_dispatch_and_no_timer():
    decision = BatchPolicy(LIMITS).decide(EndpointQueue(1), 0.0, 1, 0)
    assert decision.take_rows == 0 and decision.wake_at is None


def test_full_batch_goes_at_once():
    policy = BatchPolicy(LIMITS, trained())
    busy_traffic(policy, 0.02)
    queue = EndpointQueue(1000)
    for i in range(70):
        queue.push(pending(i, 0.02))
    decision = policy.decide(queue, 0.02, 1, 0)
    assert decision.take_rows == 64 and len(queue.take(decision.take_rows)) == 64


def test_a_batch_that_cannot_grow_goes_at_once():
    # 40 + 40 rows: the second does not fit in 64, so waiting cannot make the batch bigger
    policy = BatchPolicy(LIMITS, trained())
    busy_traffic(policy, 0.02)
    queue = EndpointQueue(100)
    queue.push(pending(1, 0.02, rows=40))
    queue.push(pending(2, 0.02, rows=40))
    assert policy.decide(queue, 0.02, 1, 1).take_rows > 0


def test_a_free_slot_is_not_held_while_a_full_batch_waits_behind_the_head():
    policy = BatchPolicy(LIMITS, trained())
    busy_traffic(policy, 0.02)
    queue = EndpointQueue(1000)
    queue.push(pending(0, 0.02, deadline=1.0, key=b"small"))
    for i in range(1, 65):
        queue.push(pending(i, 0.02, deadline=5.0, key=b"other"))
    decision = policy.decide(queue, 0.02, 1, 1)
    assert decision.take_rows > 0
    assert [x.batch_key for x in queue.take(decision.take_rows)] == [b"small"]  # EDF first
    assert len(queue.take(policy.decide(queue, 0.02, 1, 1).take_rows)) == 64


def test_under_heavy_traffic_it_waits_for_more_but_never_past_max_latency():
    policy = BatchPolicy(LIMITS, trained())
    busy_traffic(policy, 0.02)
    queue = EndpointQueue(1000)
    queue.push(pending(1, 0.0200))
    decision = policy.decide(queue, 0.0200, 1, 1)
    assert decision.take_rows == 0
    assert decision.wake_at == pytest.approx(0.0200 + LIMITS.max_latency_s)
    assert policy.decide(queue, decision.wake_at, 1, 1).take_rows > 0


def test_max_latency_counts_from_the_oldest_request_even_behind_another_batch_key():
    policy = BatchPolicy(LIMITS, trained())
    busy_traffic(policy, 0.02)
    queue = EndpointQueue(100)
    queue.push(pending(1, 0.005, deadline=5.0, key=b"old"))
    queue.push(pending(2, 0.02, deadline=1.0, key=b"new"))  # the head: earlier deadline
    decision = policy.decide(queue, 0.02, 1, 1)
    assert decision.wake_at == pytest.approx(0.005 + LIMITS.max_latency_s)


def test_earliest_deadline_first_decides_both_the_batch_and_the_timer():
    policy = BatchPolicy(LIMITS, trained())
    busy_traffic(policy, 0.02)
    queue = EndpointQueue(100)
    queue.push(pending(1, 0.02, deadline=5.0))
    queue.push(pending(2, 0.02, deadline=0.5))
    queue.push(pending(3, 0.02, deadline=2.0))
    decision = policy.decide(queue, 0.02, 1, 1)
    assert decision.take_rows == 0  # 3 rows at 10,000 rows/s: worth waiting
    # a request that arrives later but must finish sooner goes first
    queue.push(pending(4, 0.021, deadline=0.025))
    decision = policy.decide(queue, 0.021, 1, 1)
    assert decision.wake_at == pytest.approx(0.021 + 0.025 - policy.model.predict(64))
    taken = queue.take(policy.decide(queue, decision.wake_at, 1, 1).take_rows)
    assert [x.request_id[-1] for x in taken] == [4, 2, 3, 1]


def test_a_request_that_would_miss_its_deadline_is_not_held():
    policy = BatchPolicy(LIMITS, trained())
    busy_traffic(policy, 0.02)
    queue = EndpointQueue(100)
    queue.push(pending(1, 0.02, deadline=0.015))
    wake = policy.decide(queue, 0.02, 1, 1).wake_at  # waits, but only while the deadline allows
    assert wake is not None and wake <= 0.02 + 0.015 - policy.model.predict(64) + 1e-12
    urgent = EndpointQueue(100)
    urgent.push(pending(2, 0.02, deadline=0.010))  # cannot afford any wait: goes at once
    assert policy.decide(urgent, 0.02, 1, 1).take_rows > 0


def test_endpoint_without_batching_takes_one_at_a_time():
    policy = BatchPolicy(BatchLimits(1, 0.0))
    busy_traffic(policy, 0.02)
    queue = EndpointQueue(100)
    for i in range(3):
        queue.push(pending(i, 0.02))
    decision = policy.decide(queue, 0.02, 1, 0)
    assert decision.wake_at is None and len(queue.take(decision.take_rows)) == 1


def test_cheap_unbatched_calls_travel_several_to_a_message_only_when_work_is_waiting():
    model = LatencyModel()
    model.observe(1, 0.0001)
    policy = BatchPolicy(BatchLimits(1, 0.0), model)
    queue = EndpointQueue(100)
    for i in range(12):
        queue.push(pending(i, 0.0))
    assert policy.decide(queue, 0.0, free_slots=2, busy_slots=0).take_rows == 6
    assert policy.decide(queue, 0.0, free_slots=20, busy_slots=0).take_rows == 1
    slow = LatencyModel()
    slow.observe(1, 0.005)
    assert BatchPolicy(BatchLimits(1, 0.0), slow).decide(queue, 0.0, 2, 0).take_rows == 1


def test_target_batch_grows_with_traffic_and_shrinks_with_more_slots():
    policy = BatchPolicy(LIMITS, trained())
    assert policy.target_rows(0.0, 1) == 1
    busy_traffic(policy, 1.0, rate=2000)
    assert 1 < policy.target_rows(1.0, 1) < 64
    assert policy.target_rows(1.0, 8) < policy.target_rows(1.0, 1)
    busy_traffic(policy, 1.0, rate=50_000)
    assert policy.target_rows(1.0, 1) == 64


def test_arrival_rate_estimate_follows_steady_traffic_and_decays_when_it_stops():
    policy = BatchPolicy(LIMITS)
    for i in range(3000):
        policy.arrived(i / 1000, 1)
    assert policy.arrival_rate(3.0) == pytest.approx(1000, rel=0.05)
    assert policy.arrival_rate(6.0) < 10


queued = st.lists(st.tuples(st.floats(0, 0.05), st.floats(0.001, 0.2), st.integers(1, 8),
                            st.sampled_from([b"", b"k"])), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(queued, st.floats(0, 20_000), st.integers(0, 4), st.integers(0, 4),
       st.floats(0, 0.001), st.floats(0, 0.02))
def test_any_wait_ends_before_every_latency_and_deadline_bound(items, rate, free, busy, a, b):
    now = 0.05
    model = trained(a, b)
    policy = BatchPolicy(LIMITS, model)
    busy_traffic(policy, now, rate)
    queue = EndpointQueue(100)
    for i, (arrived, budget, rows, key) in enumerate(items):
        queue.push(Pending(bytes([i]), b"g", now + budget, arrived, [], rows, key))
    decision = policy.decide(queue, now, free, busy)
    if free == 0:
        assert decision.take_rows == 0 and decision.wake_at is None
        return
    if max(queue.rows_by_key.values()) >= LIMITS.max_batch_size:
        assert decision.take_rows == LIMITS.max_batch_size
    if decision.take_rows == 0:
        assert decision.wake_at is not None and decision.wake_at > now
        for item in queue:
            assert decision.wake_at <= item.arrived + LIMITS.max_latency_s
            assert decision.wake_at <= item.deadline - model.predict(LIMITS.max_batch_size)


# ---------------------------------------------------------------- the latency model


def test_fitted_latency_model_converges_on_a_noisy_linear_workload():
    rng = random.Random(7)
    model = LatencyModel()
    for _ in range(400):
        n = rng.randint(1, 64)
        model.observe(n, (A * n + B) * rng.uniform(0.95, 1.05))
    assert model.a == pytest.approx(A, rel=0.15)
    assert model.b == pytest.approx(B, rel=0.1)
    assert model.samples == 400


def test_latency_model_follows_a_slower_endpoint():
    model = trained()
    for n in [1, 16, 64, 32] * 100:
        model.observe(n, 3 * (A * n + B))
    assert model.predict(64) == pytest.approx(3 * (A * 64 + B), rel=0.01)


def test_latency_model_keeps_its_slope_while_every_batch_has_the_same_size():
    model = trained()
    for _ in range(3000):  # a saturated endpoint: only full batches, for a long time
        model.observe(4096, A * 4096 + B)
    assert model.a == pytest.approx(A, rel=0.01)
    assert model.predict(1) == pytest.approx(A + B, rel=0.05)


def test_latency_model_predicts_zero_before_data_and_ignores_nonsense_reports():
    model = LatencyModel()
    assert model.predict(64) == 0.0
    model.observe(1, 0.002)
    assert model.predict(1) == pytest.approx(0.002)  # one size seen: all of it fixed cost
    for rows, seconds in [(0, 1.0), (4, math.nan), (4, math.inf), (4, -1.0)]:
        model.observe(rows, seconds)
    assert model.samples == 1 and model.predict(1) == pytest.approx(0.002)


# ---------------------------------------------------------------- simulated traffic


@dataclass
class Served:
    arrived: float
    deadline: float
    dispatched: float | None = None  # None: expired in the queue
    finished: float | None = None
    batch: int = 0


def simulate(rate_rows_s, slots, duration_s=2.0, deadline_s=10.0, model=None, seed=3):
    """The broker's loop in miniature: Poisson one-row arrivals, ``slots`` simulated worker
    slots that run a batch of n rows in A·n + B seconds, timers at ``wake_at``.

    Returns every request's fate and the free-slot :class:`Timeline`."""
    rng = random.Random(seed)
    policy = BatchPolicy(LIMITS, model)
    queue = EndpointQueue(1_000_000)
    events = []  # (time, kind, payload); kind 0 arrival, 1 batch done, 2 timer
    t, i = 0.0, 0
    while True:
        t += rng.expovariate(rate_rows_s)
        if t >= duration_s:
            break
        heapq.heappush(events, (t, 0, i))
        i += 1
    served = [Served(0.0, 0.0) for _ in range(i)]
    free, timeline, timer = slots, [(0.0, slots)], None
    while events:
        now, kind, payload = heapq.heappop(events)
        if kind == 0:
            served[payload] = Served(now, now + deadline_s)
            queue.push(Pending(payload.to_bytes(8, "big"), b"gw", now + deadline_s, now, []))
            policy.arrived(now, 1)
        elif kind == 1:
            free += 1
            policy.observe(*payload)
        queue.pop_expired(now)
        while free:
            decision = policy.decide(queue, now, free, slots - free)
            if not decision.take_rows:
                if decision.wake_at is not None and decision.wake_at != timer:
                    timer = decision.wake_at
                    heapq.heappush(events, (timer, 2, None))
                break
            batch = queue.take(decision.take_rows)
            exec_s = A * len(batch) + B
            for item in batch:
                s = served[int.from_bytes(item.request_id, "big")]
                s.dispatched, s.finished, s.batch = now, now + exec_s, len(batch)
            free -= 1
            heapq.heappush(events, (now + exec_s, 1, (len(batch), exec_s)))
        timeline.append((now, free))
    return served, Timeline(timeline)


class Timeline:
    """Free slots over time: one entry per simulated event, after it was handled."""

    def __init__(self, entries):
        self.times = [t for t, _ in entries]
        self.free = [f for _, f in entries]

    def free_at(self, t):
        """Free slots once every event up to and including ``t`` was handled."""
        return self.free[bisect.bisect_right(self.times, t) - 1]

    def all_busy_during(self, start, end):
        """Whether every slot was busy at some moment in [start, end]."""
        lo = bisect.bisect_right(self.times, start) - 1
        hi = bisect.bisect_right(self.times, end)
        return 0 in self.free[lo:hi]


def assert_held_only_while_every_slot_was_busy(served, timeline, predicted_full_batch):
    """A request still waiting at its bound (arrival + max latency, or deadline minus a full
    batch's predicted execution) must have found every slot busy at that moment."""
    for s in served:
        bound = min(s.arrived + LIMITS.max_latency_s, s.deadline - predicted_full_batch)
        if s.dispatched is None or s.dispatched > bound + 1e-12:
            assert timeline.free_at(bound) == 0, s


@pytest.mark.parametrize("rate", [50, 2000, 8000, 30_000])
def test_simulated_traffic_waits_past_its_bound_only_while_every_slot_is_busy(rate):
    served, timeline = simulate(rate, slots=2)
    assert_held_only_while_every_slot_was_busy(served, timeline, 0.0)
    sizes = [s.batch for s in served]
    if rate == 50:
        assert sum(sizes) / len(sizes) < 1.2  # light traffic is not held back
    if rate >= 8000:
        assert sum(sizes) / len(sizes) > 10  # heavy traffic is batched


def test_latency_stays_within_max_latency_plus_execution_unless_every_slot_was_busy():
    served, timeline = simulate(2000, slots=4, model=trained())
    late = [s for s in served
            if s.finished - s.arrived > LIMITS.max_latency_s + A * s.batch + B + 1e-12]
    for s in late:
        assert timeline.all_busy_during(s.arrived, s.dispatched), s
    assert len(late) < 0.05 * len(served)
    assert sum(s.batch for s in served) / len(served) > 2  # and it did batch


def test_simulated_tight_deadlines_are_met_unless_every_slot_was_busy():
    # 15 ms budgets, shorter than max latency plus a full batch's 11.4 ms execution
    served, timeline = simulate(3000, slots=3, deadline_s=0.015, model=trained())
    assert_held_only_while_every_slot_was_busy(served, timeline, A * 64 + B)
    met = sum(1 for s in served if s.finished is not None and s.finished <= s.deadline)
    assert met / len(served) > 0.99


def test_heavy_traffic_fills_batches_to_max():
    served, _ = simulate(30_000, slots=1, duration_s=1.0)
    sizes = [s.batch for s in served]
    assert max(sizes) == 64 and sorted(sizes)[len(sizes) // 2] == 64
