"""The per-endpoint queue: bounded, earliest deadline first, batch keys kept apart."""
from batching.queue import EndpointQueue, Pending


def p(i, deadline, rows=1, key=b""):
    return Pending(bytes([i]), b"g", deadline, 0.0, [b"m"], rows, key)


def test_earliest_deadline_comes_first():
    q = EndpointQueue(10)
    for i, d in enumerate([5.0, 1.0, 3.0]):
        q.push(p(i, d))
    assert [x.deadline for x in q.take(10)] == [1.0, 3.0, 5.0]


def test_full_queue_refuses_but_requeue_is_forced():
    q = EndpointQueue(1)
    assert q.push(p(1, 1.0)) and not q.push(p(2, 1.0))
    assert q.push(p(3, 1.0), force=True) and len(q) == 2


def test_expired_requests_are_removed():
    q = EndpointQueue(10)
    for i, d in enumerate([1.0, 2.0, 3.0]):
        q.push(p(i, d))
    assert [x.deadline for x in q.pop_expired(2.0)] == [1.0, 2.0] and len(q) == 1


def test_take_keeps_other_batch_keys_and_respects_row_limit():
    q = EndpointQueue(10)
    q.push(p(1, 1.0, rows=2, key=b"a"))
    q.push(p(2, 2.0, rows=1, key=b"b"))
    q.push(p(3, 3.0, rows=2, key=b"a"))
    q.push(p(4, 4.0, rows=2, key=b"a"))
    assert q.compatible(4)[:2] == (2, 4)
    taken = q.take(4)
    assert [x.request_id for x in taken] == [b"\x01", b"\x03"]
    assert [x.request_id for x in q.drain()] == [b"\x02", b"\x04"]
