"""BrokerCore routing streams, with an injected clock and captured sends: chunks to the
gateway, credit and cancel to the worker, deadlines and lost workers."""
from broker.core import BrokerConfig, BrokerCore, item_key
from zeroserve.wire.backend import Ready, Result, ResultItem, parse_batch
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import Command, Status, pack_map, split_command, unpack_map
from zeroserve.wire.frontend import Request, parse_reply
from zeroserve.wire.stream import (
    Cancel,
    Chunks,
    Credit,
    batch_id_of,
    batch_key,
    parse_cancel,
    parse_chunks,
    parse_credit,
)

ENDPOINTS = {"gen": EndpointDescription("svc", "gen", streams=True),
             "once": EndpointDescription("svc", "once", streams=True,
                                         retry_on_worker_loss=False)}


class Harness:
    def __init__(self) -> None:
        self.front: list = []
        self.back: list = []
        self.core = BrokerCore(BrokerConfig(heartbeat_s=1.0, liveness=3), self.front.append,
                               self.back.append, now=0.0)
        self.ids = 0

    def worker(self, identity=b"W1", slots=4, now=0.0) -> None:
        self.core.on_backend([identity, *Ready(identity.decode(), "svc", ENDPOINTS,
                                                 slots).to_frames()], now)

    def start(self, now=0.0, timeout_ms=1000, endpoint="gen", gateway=b"G") -> bytes:
        self.ids += 1
        rid = self.ids.to_bytes(8, "big")
        self.core.on_frontend([gateway, *Request(rid, "svc", endpoint, timeout_ms, b"in",
                                                  []).to_frames()], now)
        return rid

    def sent_back(self) -> list:
        out = []
        for frames in self.back:
            command, rest = split_command(frames[1:])
            out.append((frames[0], command, rest))
        self.back.clear()
        return [entry for entry in out if entry[1] is not Command.HEARTBEAT]

    def batches(self) -> list:
        return [(who, parse_batch(rest)) for who, cmd, rest in self.sent_back()
                if cmd is Command.BATCH]

    def chunk(self, identity, batch_id, seq, now=0.1) -> None:
        self.core.on_backend([identity, *Chunks(batch_key(batch_id), seq, [[b"v%d" % seq]])
                              .to_frames(Command.STREAM_CHUNK)], now)

    def end(self, identity, batch_id, status=Status.OK, now=0.2) -> None:
        result = Result(batch_id, 0.1, [ResultItem(item_key(0), status,
                                                   [pack_map({"chunks": 1})])])
        self.core.on_backend([identity, *result.to_frames()], now)

    def to_gateway(self) -> list:
        out = []
        for frames in self.front:
            command, rest = split_command(frames[1:])
            if command is Command.CHUNK:
                out.extend((frames[0], command, c) for c in parse_chunks(rest).chunks())
            else:
                out.append((frames[0], command, parse_reply(rest)))
        self.front.clear()
        return out


def test_a_stream_is_dispatched_alone_and_its_chunks_and_end_reach_its_gateway():
    h = Harness()
    h.worker()
    first, second = h.start(), h.start()
    batches = h.batches()
    assert [len(b.items) for _, b in batches] == [1, 1]  # one stream per batch
    (_, batch), _ = batches
    h.chunk(b"W1", batch.batch_id, 0)
    h.chunk(b"W1", batch.batch_id, 1)
    h.end(b"W1", batch.batch_id)
    (g0, c0, chunk0), (_, _, chunk1), (_, c2, end) = h.to_gateway()
    assert (g0, c0, chunk0.seq, chunk0.frames) == (b"G", Command.CHUNK, 0, [b"v0"])
    assert chunk1.seq == 1 and c2 is Command.REPLY and end.request_id == first
    assert end.status is Status.OK and second != first


def test_credit_goes_to_the_worker_running_the_stream():
    h = Harness()
    h.worker()
    rid = h.start()
    ((_, batch),) = h.batches()
    h.core.on_frontend([b"G", *Credit(rid, 3, 300).to_frames()], 0.1)
    ((who, command, rest),) = h.sent_back()
    credit = parse_credit(rest)
    assert (who, command, batch_id_of(credit.key), credit.chunks, credit.nbytes) == (
        b"W1", Command.STREAM_CREDIT, batch.batch_id, 3, 300)
    h.core.on_frontend([b"OTHER", *Credit(rid, 3, 300).to_frames()], 0.1)
    assert h.sent_back() == []  # another gateway's request id names no stream of this one


def test_cancel_of_a_running_stream_tells_the_worker_and_forwards_nothing_more():
    h = Harness()
    h.worker(slots=1)
    rid = h.start()
    ((_, batch),) = h.batches()
    h.core.on_frontend([b"G", *Cancel(rid).to_frames()], 0.1)
    ((who, command, rest),) = h.sent_back()
    assert (who, command) == (b"W1", Command.STREAM_CANCEL)
    assert batch_id_of(parse_cancel(rest, backend=True).key) == batch.batch_id
    h.chunk(b"W1", batch.batch_id, 0)
    h.end(b"W1", batch.batch_id, Status.CANCELLED)
    assert h.to_gateway() == []
    h.start(now=0.3)  # the slot is free again
    assert len(h.batches()) == 1


def test_cancel_of_a_queued_stream_takes_it_out_of_the_queue():
    h = Harness()
    h.worker(slots=1)
    h.start()
    waiting = h.start()
    h.batches()
    h.core.on_frontend([b"G", *Cancel(waiting).to_frames()], 0.1)
    assert len(h.core.endpoints[("svc", "gen", 1)].queue) == 0


def test_no_deadline_after_the_first_chunk_but_504_and_a_cancel_before_it():
    h = Harness()
    h.worker()
    slow, streaming = h.start(timeout_ms=100), h.start(timeout_ms=100)
    (_, b_slow), (_, b_streaming) = h.batches()
    h.chunk(b"W1", b_streaming.batch_id, 0, now=0.05)
    h.to_gateway()
    h.core.on_tick(0.5)
    ((_, _, reply),) = h.to_gateway()
    assert reply.request_id == slow and reply.status is Status.DEADLINE_EXCEEDED
    cancels = [(w, parse_cancel(rest, backend=True)) for w, cmd, rest in h.sent_back()
               if cmd is Command.STREAM_CANCEL]
    assert [batch_id_of(c.key) for _, c in cancels] == [b_slow.batch_id]
    h.chunk(b"W1", b_streaming.batch_id, 1, now=0.6)  # still forwarded
    ((_, command, chunk),) = h.to_gateway()
    assert command is Command.CHUNK and chunk.seq == 1 and streaming


def test_a_worker_lost_mid_stream_fails_it_and_one_lost_before_its_first_chunk_requeues_it():
    h = Harness()
    h.worker(b"W1")
    mid, before = h.start(timeout_ms=60_000), h.start(timeout_ms=60_000)
    (_, b_mid), _ = h.batches()
    h.chunk(b"W1", b_mid.batch_id, 0)
    h.to_gateway()
    h.worker(b"W2", now=3.0)
    h.core.on_tick(3.6)  # W1 evicted
    ((_, _, reply),) = h.to_gateway()
    assert reply.request_id == mid and reply.status is Status.INTERNAL
    assert "lost mid-stream after 1 chunks" in unpack_map(reply.meta, "m")["error"]
    ((who, again),) = h.batches()
    assert who == b"W2" and len(again.items) == 1 and before


def test_a_stream_that_may_not_run_twice_is_failed_when_its_worker_is_lost():
    h = Harness()
    h.worker(b"W1")
    rid = h.start(endpoint="once", timeout_ms=60_000)
    h.batches()
    h.worker(b"W2", now=3.0)
    h.core.on_tick(3.6)
    ((_, _, reply),) = h.to_gateway()
    assert reply.request_id == rid and reply.status is Status.INTERNAL
    assert h.batches() == []


def test_stream_figures_in_the_stats():
    h = Harness()
    h.worker()
    h.start()
    ((_, batch),) = h.batches()
    h.chunk(b"W1", batch.batch_id, 0, now=0.25)
    figures = h.core.stats(0.3)["endpoints"]["svc.gen"]["streams"]
    assert (figures["started"], figures["chunks"], figures["active"]) == (1, 1, 1)
    assert abs(figures["mean_first_chunk_ms"] - 250.0) < 1e-6
    h.end(b"W1", batch.batch_id, now=1.0)
    figures = h.core.stats(1.0)["endpoints"]["svc.gen"]["streams"]
    assert figures["active"] == 0 and abs(figures["mean_duration_ms"] - 1000.0) < 1e-6
