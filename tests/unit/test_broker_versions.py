"""BrokerCore with workers of two versions of one service: routing by version, the latest
for version-less requests, MODELS per version, and the set_traffic control call."""
from __future__ import annotations

from broker.core import BrokerConfig, BrokerCore
from zeroserve.wire.backend import Ready
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription
from zeroserve.wire.envelope import Command, Status, split_command, unpack_map
from zeroserve.wire.frontend import Control, ControlOp, Request, error_details, parse_reply


class Harness:
    def __init__(self) -> None:
        self.front: list = []
        self.back: list = []
        self.core = BrokerCore(BrokerConfig(heartbeat_s=1.0, liveness=3), self.front.append,
                               self.back.append, now=0.0)
        self.ids = 0

    def worker(self, identity: bytes, version: int, now: float = 0.0) -> None:
        endpoints = {"score": EndpointDescription("rank", "score", version=version)}
        if version == 1:
            endpoints["old"] = EndpointDescription("rank", "old", version=1)
        self.core.on_backend([identity, *Ready(identity.decode(), "rank", endpoints, 4,
                                               version=version).to_frames()], now)

    def request(self, version: int, endpoint: str = "score", now: float = 0.1) -> bytes:
        self.ids += 1
        rid = self.ids.to_bytes(8, "big")
        self.core.on_frontend([b"G", *Request(rid, "rank", endpoint, 1000, b"m",
                                              version=version).to_frames()], now)
        return rid

    def control(self, op: ControlOp, args: dict, now: float = 0.1):
        self.core.on_frontend([b"G", *Control(b"c" * 8, op, args).to_frames()], now)
        (frames,) = self.front
        self.front.clear()
        return parse_reply(split_command(frames[1:])[1])

    def dispatched_to(self) -> list[bytes]:
        out = [frames[0] for frames in self.back
               if split_command(frames[1:])[0] is Command.BATCH]
        self.back.clear()
        return out


def test_a_request_goes_only_to_workers_of_its_version_and_none_to_the_latest():
    h = Harness()
    h.worker(b"V1", 1)
    h.worker(b"V2", 2)
    h.back.clear()
    h.request(1)
    h.request(2)
    h.request(0)
    assert h.dispatched_to() == [b"V1", b"V2", b"V2"]
    h.request(0, endpoint="old")  # the latest version has no such endpoint
    (reply,) = [parse_reply(split_command(f[1:])[1]) for f in h.front]
    assert reply.status is Status.NOT_FOUND
    assert "has no endpoint 'old'" in error_details(reply)["error"]


def test_a_version_no_worker_serves_is_404_past_the_grace():
    h = Harness()
    h.worker(b"V1", 1)
    h.front.clear()
    h.request(3, now=7.0)  # past the 6 s grace
    (frames,) = h.front
    reply = parse_reply(split_command(frames[1:])[1])
    assert reply.status is Status.NOT_FOUND
    assert error_details(reply)["error"] == "service 'rank' has no version 3"


def test_models_describes_the_latest_version_with_every_version_and_the_split():
    h = Harness()
    h.worker(b"V1", 1)
    h.worker(b"V2", 2)
    reply = h.control(ControlOp.MODELS, {})
    described = ServiceDescription.from_map(
        "rank", unpack_map(reply.meta, "models")["services"]["rank"])
    assert described.version == 2 and set(described.endpoints) == {"score"}
    assert described.served_versions() == [1, 2]
    assert set(described.at(1).endpoints) == {"score", "old"} and described.at(1).workers == 1
    assert described.traffic == {}


def test_set_traffic_is_checked_logged_and_answered_with_models(caplog):
    h = Harness()
    h.worker(b"V1", 1)
    h.worker(b"V2", 2)
    h.front.clear()
    with caplog.at_level("INFO", logger="zeroserve.broker"):
        ok = h.control(ControlOp.SET_TRAFFIC, {"service": "rank", "weights": {"1": 90, "2": 10}})
    assert ok.status is Status.OK
    assert unpack_map(ok.meta, "answer") == {"service": "rank", "traffic": {"1": 90, "2": 10}}
    assert "traffic split of rank set to 1=90 2=10 (was none)" in caplog.text
    models = unpack_map(h.control(ControlOp.MODELS, {}).meta, "models")
    assert models["services"]["rank"]["traffic"] == {"1": 90, "2": 10}
    bad = h.control(ControlOp.SET_TRAFFIC, {"service": "rank", "weights": {"1": 90, "3": 10}})
    assert bad.status is Status.BAD_REQUEST and "serves no version 3" in error_details(bad)["error"]
    unknown = h.control(ControlOp.SET_TRAFFIC, {"service": "nope", "weights": {}})
    assert unknown.status is Status.NOT_FOUND
    cleared = h.control(ControlOp.SET_TRAFFIC, {"service": "rank", "weights": {}})
    assert unpack_map(cleared.meta, "answer")["traffic"] == {}
    assert "traffic" not in unpack_map(h.control(ControlOp.MODELS, {}).meta,
                                       "models")["services"]["rank"]


def test_version_less_requests_go_to_the_older_version_once_the_latest_has_no_worker():
    h = Harness()
    h.worker(b"V1", 1)
    h.worker(b"V2", 2)
    h.core.on_backend([b"V2", b"ZS1", Command.DISCONNECT.value], 0.05)  # V2 drains and leaves
    h.back.clear()
    h.request(0)
    assert h.dispatched_to() == [b"V1"]
