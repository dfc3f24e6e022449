"""BrokerCore with an injected clock and captured sends: routing, deadlines, eviction."""
from dataclasses import replace

from broker.core import BrokerConfig, BrokerCore
from zeroserve.wire.backend import (
    Ready,
    Result,
    ResultItem,
    disconnect,
    heartbeat,
    parse_batch,
    parse_disconnect,
)
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription
from zeroserve.wire.envelope import PROTOCOL, Command, Status, pack_map, split_command, unpack_map
from zeroserve.wire.frontend import Control, ControlOp, Request, error_details, parse_reply

ENDPOINTS = {"predict": EndpointDescription("svc", "predict"),
             "tag": EndpointDescription("svc", "tag", batchable=True, max_batch_size=8,
                                        max_latency_ms=10)}


class Harness:
    def __init__(self, **config):
        self.front, self.back = [], []
        self.core = BrokerCore(BrokerConfig(heartbeat_s=1.0, liveness=3, **config),
                               self.front.append, self.back.append, now=0.0)
        self.ids = 0

    def worker(self, identity=b"W1", slots=1, now=0.0, service="svc"):
        endpoints = {name: replace(desc, service=service) for name, desc in ENDPOINTS.items()}
        self.core.on_backend([identity, *Ready(identity.decode(), service, endpoints,
                                                 slots).to_frames()], now)

    def request(self, now, timeout_ms=1000, endpoint="predict", service="svc", key=b""):
        self.ids += 1
        rid = self.ids.to_bytes(8, "big")
        req = Request(rid, service, endpoint, timeout_ms, b"meta:" + rid, [], 1, key)
        self.core.on_frontend([b"G", *req.to_frames()], now)
        return rid

    @staticmethod
    def origin(item):
        """The gateway's request id of a batch item (from its meta, see ``request``)."""
        return bytes(item.frames[0]).removeprefix(b"meta:")

    def batches(self):
        out = []
        for frames in self.back:
            command, rest = split_command(frames[1:])
            if command is Command.BATCH:
                out.append((frames[0], parse_batch(rest)))
        self.back.clear()
        return out

    def replies(self):
        out = {}
        for frames in self.front:
            _, rest = split_command(frames[1:])
            reply = parse_reply(rest)
            out[reply.request_id] = reply
        self.front.clear()
        return out

    def result(self, identity, batch, now, status=Status.OK):
        res = Result(batch.batch_id, 0.001, [ResultItem(it.request_id, status, [b"out"])
                                              for it in batch.items])
        self.core.on_backend([identity, *res.to_frames()], now)


def test_request_goes_to_a_worker_and_the_reply_back_to_its_gateway():
    h = Harness()
    h.worker()
    rid = h.request(0.1)
    ((identity, batch),) = h.batches()
    assert identity == b"W1" and h.origin(batch.items[0]) == rid
    h.result(identity, batch, 0.2)
    reply = h.replies()[rid]
    assert reply.status is Status.OK and bytes(reply.meta) == b"out"


def test_a_request_that_asks_for_stages_gets_its_own_and_those_of_its_calls():
    h = Harness()
    h.request(0.0)  # waits for a worker
    h.core.on_frontend([b"G", *Request(b"asks", "svc", "predict", 1000, b"meta:asks", [],
                                       stages=True).to_frames()], 0.0)
    h.worker(now=0.25)
    ((identity, first),) = h.batches()
    h.result(identity, first, 0.3)
    ((_, batch),) = h.batches()
    assert [it.stages for it in batch.items] == [True]
    called = [{"service": "tok", "endpoint": "split"},
              {"service": "deep", "endpoint": "e", "caller": "tok.split"}]
    h.core.on_backend([identity, *Result(batch.batch_id, 0.125, [
        ResultItem(batch.items[0].request_id, Status.OK, [b"out"], called)]).to_frames()], 0.5)
    replies = h.replies()
    assert replies[b"asks"].stages == [
        {"service": "svc", "endpoint": "predict", "version": 1, "worker": "W1", "batch": 1,
         "queue_ms": 300.0, "exec_ms": 125.0},
        {"caller": "svc.predict", "service": "tok", "endpoint": "split"},
        {"service": "deep", "endpoint": "e", "caller": "tok.split"}]
    assert all(r.stages is None for rid, r in replies.items() if rid != b"asks")


def test_a_result_for_a_batch_of_the_broker_before_a_restart_answers_nothing():
    before, after = Harness(), Harness()  # the same worker, with a broker before and after
    for h in (before, after):
        h.worker()
        h.request(0.1)
    ((_, old),) = before.batches()
    ((_, new),) = after.batches()
    after.result(b"W1", old, 0.2)  # the worker finishes the old broker's batch
    assert after.replies() == {}
    after.result(b"W1", new, 0.3)
    assert len(after.replies()) == 1


def test_request_expired_in_queue_is_504_and_never_dispatched():
    h = Harness()
    h.worker(slots=1)
    h.request(0.0, timeout_ms=5000)  # occupies the only slot
    late = h.request(0.0, timeout_ms=100)
    h.batches()
    h.core.on_tick(0.2)
    assert h.replies()[late].status is Status.DEADLINE_EXCEEDED
    h.core.on_tick(0.3)
    assert not [b for _, b in h.batches() if h.origin(b.items[0]) == late]


def test_no_worker_waits_until_the_deadline_then_503():
    h = Harness()
    h.worker()
    h.core.on_backend([b"W1", *disconnect()], 0.0)  # leaves
    rid = h.request(10.0, timeout_ms=500)
    h.core.on_tick(10.4)
    assert rid not in h.replies()
    h.core.on_tick(10.6)
    assert h.replies()[rid].status is Status.NO_WORKER


def test_full_queue_is_refused_at_once_with_retry_after():
    h = Harness(max_queue=1, retry_after_s=2)
    h.worker(slots=1)
    h.request(0.0)
    h.request(0.0)  # queued
    rid = h.request(0.0)
    reply = h.replies()[rid]
    assert reply.status is Status.QUEUE_FULL and error_details(reply)["retry_after_s"] == 2


def test_silent_worker_is_evicted_and_its_request_requeued_to_another():
    h = Harness()
    h.worker(b"W1", now=0.0)
    rid = h.request(0.5, timeout_ms=10_000)
    ((first, _),) = h.batches()
    h.worker(b"W2", now=3.0)
    h.core.on_tick(3.6)  # W1 silent for 3.6 s > 3 s liveness
    ((second, batch),) = h.batches()
    assert (first, second) == (b"W1", b"W2") and h.origin(batch.items[0]) == rid


def test_a_result_from_another_worker_is_dropped_and_the_batch_still_recovered():
    h = Harness()  # as when a worker reconnects under a new identity while it runs a batch
    h.worker(b"W1", now=0.0)
    rid = h.request(0.5, timeout_ms=10_000)
    ((_, batch),) = h.batches()
    h.worker(b"W2", now=3.0)
    h.result(b"W2", batch, 3.1)  # not W2's batch: dropped
    assert h.replies() == {}
    h.core.on_tick(3.6)  # W1 evicted: its batch is requeued to W2, not lost
    ((second, again),) = h.batches()
    assert second == b"W2" and h.origin(again.items[0]) == rid
    h.result(b"W2", again, 3.7)
    assert h.replies()[rid].status is Status.OK


def test_deadline_during_execution_answers_504_and_drops_the_late_result():
    h = Harness()
    h.worker()
    rid = h.request(0.0, timeout_ms=100)
    ((identity, batch),) = h.batches()
    h.core.on_tick(0.2)
    assert h.replies()[rid].status is Status.DEADLINE_EXCEEDED
    h.result(identity, batch, 0.3)
    assert h.replies() == {}


def test_least_recently_used_worker_gets_the_next_request():
    h = Harness()
    for name in (b"W1", b"W2", b"W3"):
        h.worker(name, slots=4)
    for i in range(6):
        h.request(0.0 + i)
    assert [identity for identity, _ in h.batches()] == [b"W1", b"W2", b"W3"] * 2


def test_batchable_endpoint_merges_waiting_requests_of_one_key_only():
    h = Harness()
    h.worker(slots=1)
    h.request(0.0, endpoint="predict")  # occupies the slot
    for key in (b"a", b"b", b"a", b"a"):
        h.request(0.0, endpoint="tag", key=key)
    ((identity, busy),) = h.batches()
    h.result(identity, busy, 0.01)
    ((_, batch),) = h.batches()
    assert len(batch.items) == 3  # the three of key a; b waits for the next slot


def test_unknown_service_is_404_once_the_startup_grace_is_over():
    h = Harness()
    early = h.request(0.0, service="nosuch")
    assert early not in h.replies()  # a young broker waits for workers to register
    h.core.on_tick(7.0)
    assert h.replies()[early].status is Status.NOT_FOUND
    late = h.request(7.1, service="nosuch")
    assert h.replies()[late].status is Status.NOT_FOUND


def test_malformed_messages_are_counted_and_dropped():
    h = Harness()
    for frames in ([b"G"], [b"G", b"ZS1", b"\x7f"], [b"G", b"ZS1", b"\x01", b"x"],
                   [b"W", b"ZS1", b"\x10", b"\xc1"]):
        (h.core.on_backend if frames[0] == b"W" else h.core.on_frontend)(frames, 0.0)
    assert h.core.dropped == 4 and h.replies() == {}


def test_models_answer_carries_the_batching_limits_the_broker_applies():
    h = Harness(batching_overrides={"svc.tag": {"max_batch_size": 32, "max_latency_ms": 4}})
    h.worker()
    ctl = Control(b"\x00" * 8, ControlOp.MODELS, {})
    h.core.on_frontend([b"G", *ctl.to_frames()], 0.1)
    (reply,) = h.replies().values()
    endpoints = unpack_map(reply.meta, "models")["services"]["svc"]["endpoints"]
    assert endpoints["tag"]["max_batch_size"] == 32
    assert endpoints["tag"]["max_latency_ms"] == 4.0
    assert endpoints["predict"] == ENDPOINTS["predict"].to_map()


def test_models_answer_says_how_young_the_broker_is_against_its_grace():
    h = Harness()  # liveness 3 s: a grace of 6 s
    for now in (0.5, 6.5):
        h.core.on_frontend([b"G", *Control(b"\x00" * 8, ControlOp.MODELS, {}).to_frames()], now)
        (reply,) = h.replies().values()
        answer = unpack_map(reply.meta, "models")
        assert answer["grace_s"] == 6.0 and answer["uptime_s"] == now


def test_models_answer_describes_each_service_and_a_ready_with_a_bad_endpoint_is_dropped():
    h = Harness()
    h.worker()
    bad = {"worker_id": "W2", "service": "svc", "slots": 1,
           "endpoints": {"predict": {"max_batch_size": 0}}}
    h.core.on_backend([b"W2", PROTOCOL, Command.READY.value, pack_map(bad)], 0.0)
    assert h.core.dropped == 1 and h.core.registry.count("svc") == 1
    h.core.on_frontend([b"G", *Control(b"\x00" * 8, ControlOp.MODELS, {}).to_frames()], 0.1)
    (reply,) = h.replies().values()
    described = ServiceDescription.from_map(
        "svc", unpack_map(reply.meta, "models")["services"]["svc"])
    assert described == ServiceDescription("svc", ENDPOINTS, {}, workers=1)


def test_two_gateways_with_the_same_request_id_in_one_batch_both_get_their_answer():
    h = Harness()
    h.worker(slots=1)
    h.request(0.0, endpoint="tag")  # holds the only slot, so the next two wait together
    ((identity, first),) = h.batches()
    same = (7).to_bytes(8, "big")
    for gateway in (b"G1", b"G2"):
        req = Request(same, "svc", "tag", 5000, b"meta:" + gateway, [], 1, b"")
        h.core.on_frontend([gateway, *Request.to_frames(req)], 0.01)
    h.result(identity, first, 0.02)
    ((identity, batch),) = h.batches()
    assert len(batch.items) == 2 and len({it.request_id for it in batch.items}) == 2
    h.front.clear()
    res = Result(batch.batch_id, 0.001, [ResultItem(it.request_id, Status.OK, [it.frames[0]])
                                           for it in batch.items])
    h.core.on_backend([identity, *res.to_frames()], 0.03)
    answered = {frames[0]: bytes(parse_reply(split_command(frames[1:])[1]).meta)
                for frames in h.front}
    assert answered == {b"G1": b"meta:G1", b"G2": b"meta:G2"}
    assert all(parse_reply(split_command(f[1:])[1]).request_id == same for f in h.front)


def _ready_of(cluster, identity=b"F1"):
    return [identity, *Ready(identity.decode(), "svc", ENDPOINTS, 1, cluster=cluster).to_frames()]


def _disconnects(h):
    out = []
    for frames in h.back:
        command, rest = split_command(frames[1:])
        if command is Command.DISCONNECT:
            out.append((frames[0], parse_disconnect(rest)))
    h.back.clear()
    return out


def test_a_worker_of_another_cluster_is_refused_once_and_registers_nothing(caplog):
    h = Harness(cluster="a")
    with caplog.at_level("WARNING", "zeroserve.broker"):
        h.core.on_backend(_ready_of("b"), 0.0)
        h.core.on_backend(_ready_of("b"), 0.1)  # the same connection again: no answer
    ((identity, refusal),) = _disconnects(h)
    assert identity == b"F1" and "'a'" in refusal and "'b'" in refusal
    assert [r.getMessage() for r in caplog.records] == [
        "broker: refused worker F1 of cluster 'b' (this is 'a')"]
    assert "svc" not in h.core.registry.services and len(h.core.registry) == 0
    h.core.on_frontend([b"G", *Control(b"c1", ControlOp.MODELS, {}, "a").to_frames()], 0.2)
    assert unpack_map(h.replies()[b"c1"].meta, "models")["services"] == {}


def test_a_refused_worker_on_a_new_connection_is_answered_again_but_logged_once(caplog):
    h = Harness(cluster="a")
    with caplog.at_level("WARNING", "zeroserve.broker"):
        h.core.on_backend(_ready_of("b", b"F1"), 0.0)
        h.core.on_backend([b"F2", *Ready("F1", "svc", ENDPOINTS, 1, cluster="b").to_frames()],
                          1.0)
    assert [identity for identity, _ in _disconnects(h)] == [b"F1", b"F2"]
    assert len(caplog.records) == 1


def test_workers_of_this_cluster_or_naming_none_are_admitted():
    h = Harness(cluster="a")
    h.core.on_backend(_ready_of("a", b"W1"), 0.0)
    h.core.on_backend(_ready_of("", b"W2"), 0.0)
    assert h.core.registry.count("svc") == 2 and not _disconnects(h)


def test_control_calls_of_another_cluster_get_an_error_naming_both(caplog):
    h = Harness(cluster="a")
    h.worker()
    with caplog.at_level("WARNING", "zeroserve.broker"):
        for rid, op in ((b"c1", ControlOp.PING), (b"c2", ControlOp.MODELS),
                        (b"c3", ControlOp.JOB_LIST)):
            h.core.on_frontend([b"G", *Control(rid, op, {}, "b").to_frames()], 0.1)
    replies = h.replies()
    for rid in (b"c1", b"c2", b"c3"):
        details = error_details(replies[rid])
        assert replies[rid].status is Status.BAD_REQUEST and details["cluster"] == "a"
        assert "'a'" in details["error"] and "'b'" in details["error"]
    assert [r.getMessage() for r in caplog.records] == [
        "broker: refused control calls of cluster 'b' (this is 'a')"]


def test_control_calls_of_this_cluster_or_naming_none_are_answered():
    h = Harness(cluster="a")
    h.core.on_frontend([b"G", *Control(b"c1", ControlOp.PING, {}, "a").to_frames()], 0.1)
    h.core.on_frontend([b"G", *Control(b"c2", ControlOp.PING, {}).to_frames()], 0.1)
    replies = h.replies()
    assert replies[b"c1"].status is Status.OK and replies[b"c2"].status is Status.OK


def _ready(h, identity, worker_id, now, holds=frozenset()):
    h.core.on_backend([identity, *Ready(worker_id, "svc", ENDPOINTS, 1,
                                        holds=frozenset(holds)).to_frames()], now)


def test_a_worker_that_reconnected_answers_the_batch_it_took_before():
    h = Harness()
    _ready(h, b"old", "w-1", 0.0)
    rid = h.request(0.1)
    ((identity, batch),) = h.batches()
    assert identity == b"old"
    # the same worker on a new socket (it thought us silent), still running the batch
    _ready(h, b"new", "w-1", 0.2, holds={batch.batch_id})
    assert h.batches() == []  # not sent again
    assert [w.identity for w in h.core.registry] == [b"new"]  # the old connection is gone
    h.result(b"new", batch, 0.3)
    assert h.replies()[rid].status is Status.OK
    h.core.on_tick(5.0)
    assert h.batches() == [] and h.replies() == {}


def test_a_batch_lost_with_a_workers_old_connection_is_sent_again_at_once():
    h = Harness()
    _ready(h, b"old", "w-1", 0.0)
    rid = h.request(0.1, timeout_ms=60_000)
    ((_, batch),) = h.batches()
    _ready(h, b"new", "w-1", 0.2)  # reconnected, and the batch never reached it
    ((identity, again),) = h.batches()  # long before the old connection would be evicted
    assert identity == b"new" and h.origin(again.items[0]) == rid
    h.result(b"new", again, 0.3)
    assert h.replies()[rid].status is Status.OK


def test_a_worker_hears_from_the_broker_as_soon_as_it_registers():
    h = Harness()
    _ready(h, b"W", "w-1", 0.0)
    ((identity, *frames),) = h.back
    assert identity == b"W" and split_command(frames)[0] is Command.HEARTBEAT


def test_a_result_from_another_worker_leaves_the_batch_with_its_worker():
    h = Harness()
    _ready(h, b"A", "w-a", 0.0)
    rid = h.request(0.1, timeout_ms=60_000)
    ((_, batch),) = h.batches()
    _ready(h, b"B", "w-b", 0.2)
    h.result(b"B", batch, 0.3)  # not B's batch: dropped, and not forgotten
    assert rid not in h.replies()
    h.core.on_backend([b"B", *heartbeat()], 3.0)
    h.core.on_tick(3.5)  # A, silent past its liveness, is evicted: its batch goes to B
    ((identity, again),) = h.batches()
    assert identity == b"B" and h.origin(again.items[0]) == rid
