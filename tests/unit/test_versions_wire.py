"""Service versions on the wire: READY's version, the REQUEST's version after the service's
name, and service descriptions with their versions and traffic split."""
from __future__ import annotations

import pytest

from zeroserve.schema import Field
from zeroserve.wire.backend import Ready, parse_ready
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription
from zeroserve.wire.envelope import PROTOCOL, Command, ProtocolError, pack_map, split_command
from zeroserve.wire.frontend import Request, endpoint_stats_key, parse_request

V1 = {"score": EndpointDescription("rank", "score", (Field("x", "tensor", "int32"),))}
V2 = {"score": EndpointDescription("rank", "score", (Field("x", "tensor", "float32"),),
                                   version=2)}


def test_ready_carries_its_version_into_every_endpoint_description():
    ready = parse_ready(split_command(Ready("w", "rank", V2, 1, version=2).to_frames())[1])
    assert ready.version == 2 and ready.endpoints == V2
    assert ready.endpoints["score"].version == 2


def test_a_ready_without_a_version_is_version_1_and_a_bad_one_is_refused():
    body = {"worker_id": "w", "service": "rank", "slots": 1, "endpoints": {"score": {}}}
    assert parse_ready([pack_map(body)]).version == 1
    for bad in (0, "2", True, 1.5):
        with pytest.raises(ProtocolError, match="version"):
            parse_ready([pack_map({**body, "version": bad})])


def test_a_request_names_its_version_after_the_service_name_and_none_means_latest():
    for version in (0, 1, 7, 2 ** 32 - 1):
        frames = Request(b"r", "rank", "score", 100, b"m", version=version).to_frames()
        assert frames[:2] == [PROTOCOL, Command.REQUEST.value]
        parsed = parse_request(frames[2:])
        assert (parsed.service, parsed.endpoint, parsed.version) == ("rank", "score", version)
    assert Request(b"r", "rank", "score", 100, b"m").to_frames()[3] == b"rank"
    with pytest.raises(ProtocolError, match="4-byte version"):
        parse_request([b"r", b"rank\x00\x02", b"score", b"\0" * 9, b"m"])


def test_a_service_description_keeps_its_versions_and_traffic_through_its_map():
    one = ServiceDescription("rank", V1, workers=1)
    two = ServiceDescription("rank", V2, workers=2, version=2)
    top = ServiceDescription("rank", V2, workers=2, version=2, versions={1: one, 2: two},
                             traffic={1: 90, 2: 10})
    back = ServiceDescription.from_map("rank", top.to_map())
    assert back == top
    assert back.at(1) == one and back.at(2) == two and back.at(3) is None
    assert back.at(1).endpoints["score"].version == 1
    assert back.served_versions() == [1, 2]
    assert ServiceDescription("rank", V1).served_versions() == [1]


@pytest.mark.parametrize("change, reason", [
    ({"versions": {"x": {}}}, "not a version"),
    ({"versions": {"1": {"versions": {}}}}, "may not list versions"),
    ({"version": 3, "versions": {"1": {}}}, "lack its own, 3"),
    ({"traffic": {"1": 101}}, "must be a percent"),
])
def test_a_bad_versions_map_makes_the_description_bad(change, reason):
    with pytest.raises(ProtocolError, match=reason):
        ServiceDescription.from_map("rank", {**ServiceDescription("rank", V1).to_map(),
                                             **change})


def test_statistics_keys_name_a_version_other_than_1():
    assert endpoint_stats_key("rank", "score") == "rank.score"
    assert endpoint_stats_key("rank", "score", 2) == "rank.score@2"
