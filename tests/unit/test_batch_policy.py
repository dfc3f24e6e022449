"""The batching policy with a fake clock: plain floats in seconds, no sleeps."""
import heapq
import random

import pytest

from batching.policy import BatchLimits, BatchPolicy, LatencyModel
from batching.queue import EndpointQueue, Pending

LIMITS = BatchLimits(max_batch_size=64, max_latency_s=0.020)


def pending(i, now, deadline=10.0, rows=1, key=b""):
    return Pending(i.to_bytes(8, "big"), b"gw", now + deadline, now, [b"m"], rows, key)


def trained(a=0.0001, b=0.005):
    model = LatencyModel()
    for n in (1, 8, 32, 64, 16):
        model.observe(n, a * n + b)
    return model


def test_lone_request_on_an_idle_cluster_goes_at_once():
    policy = BatchPolicy(LIMITS, trained())
    queue = EndpointQueue(100)
    queue.push(pending(1, 0.0))
    policy.arrived(0.0, 1)
    assert policy.decide(queue, 0.0, free_slots=1, busy_slots=0).take_rows > 0


def test_no_free_slot_means_no_dispatch_and_no_timer():
    queue = EndpointQueue(100)
    queue.push(pending(1, 0.0))
    decision = BatchPolicy(LIMITS).decide(queue, 0.0, free_slots=0, busy_slots=2)
    assert decision.take_rows == 0 and decision.wake_at is None


def test_full_batch_goes_at_once():
    policy = BatchPolicy(LIMITS, trained())
    queue = EndpointQueue(1000)
    for i in range(70):
        queue.push(pending(i, 0.0))
    decision = policy.decide(queue, 0.0, 1, 0)
    assert decision.take_rows == 64 and len(queue.take(decision.take_rows)) == 64


def test_under_heavy_traffic_it_waits_for_more_but_never_past_max_latency():
    policy = BatchPolicy(LIMITS, trained())
    queue = EndpointQueue(1000)
    for i in range(200):  # 10,000 rows/s for 20 ms
        policy.arrived(i * 0.0001, 1)
    queue.push(pending(1, 0.0200))
    decision = policy.decide(queue, 0.0200, 1, 1)
    assert decision.take_rows == 0
    assert decision.wake_at == pytest.approx(0.0200 + LIMITS.max_latency_s)
    assert policy.decide(queue, decision.wake_at, 1, 1).take_rows > 0


def test_a_request_that_would_miss_its_deadline_is_not_held():
    policy = BatchPolicy(LIMITS, trained())
    queue = EndpointQueue(100)
    for i in range(200):
        policy.arrived(i * 0.0001, 1)
    queue.push(pending(1, 0.02, deadline=0.015))
    wake = policy.decide(queue, 0.02, 1, 1).wake_at  # waits, but only while the deadline allows
    assert wake is not None and wake <= 0.02 + 0.015 - policy.model.predict(64) + 1e-9
    urgent = EndpointQueue(100)
    urgent.push(pending(2, 0.02, deadline=0.010))  # cannot afford any wait: goes at once
    assert policy.decide(urgent, 0.02, 1, 1).take_rows > 0


def test_endpoint_without_batching_takes_one_at_a_time():
    policy = BatchPolicy(BatchLimits(1, 0.0))
    queue = EndpointQueue(100)
    for i in range(3):
        queue.push(pending(i, 0.0))
    assert len(queue.take(policy.decide(queue, 0.0, 1, 0).take_rows)) == 1


def test_fitted_latency_model_converges_on_a_noisy_linear_workload():
    rng = random.Random(7)
    model = LatencyModel()
    for _ in range(400):
        n = rng.randint(1, 64)
        model.observe(n, (0.0001 * n + 0.005) * rng.uniform(0.95, 1.05))
    assert model.a == pytest.approx(0.0001, rel=0.15)
    assert model.b == pytest.approx(0.005, rel=0.1)


def simulate(rate_rows_s, slots, duration_s=3.0, a=0.0001, b=0.005, seed=3):
    """Poisson arrivals against a simulated worker; returns (queue waits, batch sizes)."""
    rng = random.Random(seed)
    policy = BatchPolicy(LIMITS)
    queue = EndpointQueue(100000)
    events = []  # (time, kind, payload)
    t, i = 0.0, 0
    while t < duration_s:
        t += rng.expovariate(rate_rows_s)
        heapq.heappush(events, (t, 0, i))
        i += 1
    free, waits, sizes, wake = slots, [], [], None
    while events:
        now, kind, payload = heapq.heappop(events)
        if kind == 0:
            queue.push(pending(payload, now))
            policy.arrived(now, 1)
        elif kind == 1:
            free += 1
            policy.observe(*payload)
        while free:
            decision = policy.decide(queue, now, free, slots - free)
            if not decision.take_rows:
                if decision.wake_at is not None and decision.wake_at != wake:
                    wake = decision.wake_at
                    heapq.heappush(events, (wake, 2, None))
                break
            batch = queue.take(decision.take_rows)
            waits.extend(now - p.arrived for p in batch)
            sizes.append(len(batch))
            free -= 1
            exec_s = a * len(batch) + b
            heapq.heappush(events, (now + exec_s, 1, (len(batch), exec_s)))
    return waits, sizes


@pytest.mark.parametrize("rate", [50, 2000, 8000])
def test_simulated_traffic_never_waits_past_max_latency_when_slots_are_free(rate):
    waits, sizes = simulate(rate, slots=2)
    # 2 slots keep up at these rates, so the only waiting is the policy's own
    assert max(waits) <= LIMITS.max_latency_s + LatencyModel().predict(64) + 0.0066
    if rate == 50:
        assert sum(sizes) / len(sizes) < 1.2  # light traffic is not held back
    if rate == 8000:
        assert sum(sizes) / len(sizes) > 10  # heavy traffic is batched


def test_heavy_traffic_fills_batches_to_max():
    _, sizes = simulate(30000, slots=1, duration_s=1.0)
    assert max(sizes) == 64 and sorted(sizes)[len(sizes) // 2] == 64


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
