"""A draining worker (it sent DISCONNECT on SIGTERM) gets no new batch, even with a queue,
while the batches it holds are answered; it leaves once they are, and the queue goes to the
others. What `scripts/cluster scale` relies on to shrink a fleet without failing a request."""
from test_broker_core import Harness

from zeroserve.wire.backend import disconnect
from zeroserve.wire.envelope import Command, Status, split_command


def _disconnects(h: Harness) -> list[bytes]:
    return [frames[0] for frames in h.back
            if split_command(frames[1:])[0] is Command.DISCONNECT]


def test_draining_worker_gets_no_new_batch_finishes_its_own_then_leaves():
    h = Harness()
    h.worker(b"W1", slots=2)
    held = h.request(0.0, timeout_ms=10_000)
    ((_, batch),) = h.batches()
    h.core.on_backend([b"W1", *disconnect()], 0.1)  # SIGTERM: draining
    assert _disconnects(h) == []  # not acknowledged while it holds a batch
    queued = [h.request(0.2, timeout_ms=10_000) for _ in range(3)]
    assert h.batches() == []  # a free slot, but draining: nothing more is sent
    h.result(b"W1", batch, 0.3)
    assert h.replies()[held].status is Status.OK
    assert _disconnects(h) == [b"W1"]  # drained: acknowledged and gone
    assert h.core.registry.get(b"W1") is None
    h.back.clear()
    h.worker(b"W2", slots=4, now=0.4)
    assert sorted(h.origin(b.items[0]) for _, b in h.batches()) == sorted(queued)


def test_a_batch_sent_before_the_disconnect_arrived_is_still_answered():
    h = Harness()
    h.worker(b"W1", slots=1)
    h.worker(b"W2", slots=1)
    first = h.request(0.0, timeout_ms=10_000)
    ((w, batch),) = h.batches()
    h.core.on_backend([w, *disconnect()], 0.1)
    h.request(0.2, timeout_ms=10_000)
    ((other, _),) = h.batches()
    assert other != w  # the new request goes to the worker that is not draining
    h.result(w, batch, 0.3)
    replies = h.replies()
    assert list(replies) == [first] and replies[first].status is Status.OK  # second: on W2
    assert [x["worker_id"] for x in h.core.stats(0.4)["workers"]] == [other.decode()]
