"""The per-endpoint queue: bounded, earliest deadline first, batch keys kept apart."""
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from batching.queue import EndpointQueue, Pending


def p(i, deadline, rows=1, key=b"", arrived=0.0):
    return Pending(bytes([i]), b"g", deadline, arrived, [b"m"], rows, key)


def test_earliest_deadline_comes_first():
    q = EndpointQueue(10)
    for i, d in enumerate([5.0, 1.0, 3.0]):
        q.push(p(i, d))
    assert q.head().deadline == 1.0
    assert [x.deadline for x in q.take(10)] == [1.0, 3.0, 5.0]


def test_equal_deadlines_keep_arrival_order():
    q = EndpointQueue(10)
    for i in range(5):
        q.push(p(i, 1.0))
    assert [x.request_id for x in q.take(10)] == [bytes([i]) for i in range(5)]


def test_full_queue_refuses_but_requeue_is_forced():
    q = EndpointQueue(1)
    assert q.push(p(1, 1.0)) and not q.push(p(2, 1.0))
    assert q.push(p(3, 1.0), force=True) and len(q) == 2


def test_expired_requests_are_removed():
    q = EndpointQueue(10)
    for i, d in enumerate([1.0, 2.0, 3.0]):
        q.push(p(i, d))
    assert [x.deadline for x in q.pop_expired(2.0)] == [1.0, 2.0] and len(q) == 1
    assert q.rows_by_key == {b"": 1}


def test_take_keeps_other_batch_keys_and_respects_row_limit():
    q = EndpointQueue(10)
    q.push(p(1, 1.0, rows=2, key=b"a"))
    q.push(p(2, 2.0, rows=1, key=b"b"))
    q.push(p(3, 3.0, rows=2, key=b"a"))
    q.push(p(4, 4.0, rows=2, key=b"a"))
    taken = q.take(4)
    assert [x.request_id for x in taken] == [b"\x01", b"\x03"]
    assert [x.request_id for x in q.pop_expired(float("inf"))] == [b"\x02", b"\x04"]


def test_head_is_always_taken_even_when_larger_than_the_limit():
    q = EndpointQueue(10)
    q.push(p(1, 1.0, rows=9))
    q.push(p(2, 2.0, rows=1))
    assert [x.rows for x in q.take(4)] == [9]


def test_rows_by_key_follows_push_take_and_expiry():
    q = EndpointQueue(10)
    q.push(p(1, 1.0, rows=3, key=b"a"))
    q.push(p(2, 2.0, rows=2, key=b"b"))
    q.push(p(3, 3.0, rows=4, key=b"a"))
    assert q.rows_by_key == {b"a": 7, b"b": 2}
    q.take(3)
    assert q.rows_by_key == {b"a": 4, b"b": 2}
    q.pop_expired(2.5)
    assert q.rows_by_key == {b"a": 4}
    q.pop_expired(float("inf"))
    assert q.rows_by_key == {} and len(q) == 0


def test_oldest_arrival_looks_at_every_request_not_only_the_head():
    q = EndpointQueue(10)
    assert q.oldest_arrival() == float("inf")
    q.push(p(1, 9.0, arrived=0.5, key=b"b"))
    q.push(p(2, 1.0, arrived=0.8, key=b"a"))
    assert q.head().request_id == b"\x02" and q.oldest_arrival() == 0.5


requests = st.lists(st.tuples(st.integers(0, 20), st.integers(1, 4), st.sampled_from(b"ab")),
                    max_size=40)


@settings(max_examples=200, deadline=None)
@given(requests, st.integers(1, 10), st.integers(0, 20))
def test_take_matches_a_naive_deadline_order(items, limit, expire_at):
    q = EndpointQueue(100)
    naive = []
    for i, (deadline, rows, key) in enumerate(items):
        item = Pending(i.to_bytes(2, "big"), b"g", float(deadline), float(-i), [], rows,
                       bytes([key]))
        q.push(item)
        naive.append(item)
    expired = q.pop_expired(float(expire_at))
    naive.sort(key=lambda x: (x.deadline, x.seq))
    assert expired == [x for x in naive if x.deadline <= expire_at]
    naive = [x for x in naive if x.deadline > expire_at]
    while naive:
        rows_by_key = Counter()
        for x in naive:
            rows_by_key[x.batch_key] += x.rows
        assert q.rows_by_key == dict(rows_by_key)
        assert q.oldest_arrival() == min(x.arrived for x in naive)
        expected, total = [naive[0]], naive[0].rows
        for x in naive[1:]:
            if x.batch_key != naive[0].batch_key:
                continue
            if total + x.rows > limit:
                break
            expected.append(x)
            total += x.rows
        taken = q.take(limit)
        assert taken == expected
        naive = [x for x in naive if x not in expected]
    assert len(q) == 0 and q.rows_by_key == {}
