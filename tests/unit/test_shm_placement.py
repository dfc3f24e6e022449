"""Which shared memory inputs the gateway sends as references (gateway.shm_direct), and how the
workers' shared memory namespaces reach it: READY info -> the broker's MODELS answer ->
ModelsAnswer."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from broker.core import BrokerConfig, BrokerCore
from gateway.broker_link import ModelsAnswer
from gateway.oip_rest_body import parse_request
from gateway.shm_direct import place_shm_inputs
from gateway.shm_regions import CallerRegions, RegionError, RegionRegistry, owner_of
from zeroserve.schema import Field
from zeroserve.wire.backend import Ready
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import unpack_map
from zeroserve.wire.frontend import Control, ControlOp, parse_reply
from zeroserve.wire.shm_refs import ShmTensor

OWNER = owner_of("team-a", "10.0.0.1")
ENDPOINT = EndpointDescription("svc", "run", (
    Field("x", "tensor", "float32"), Field("any", "any"), Field("rows", "list"),
    Field("flags", "tensor", "bool"), Field("words", "tensor")))


@pytest.fixture
def registry(tmp_path: Path):
    regions = RegionRegistry("/zeroserve_", max_read_bytes=1 << 20, shm_dir=tmp_path)
    try:
        yield regions
    finally:
        regions.close()


def _here(registry: RegionRegistry) -> frozenset:
    return frozenset({(registry.space, "/zeroserve_")})


def _request(*inputs: tuple[str, str, list, int, int]):
    return parse_request(json.dumps({"inputs": [
        {"name": name, "datatype": datatype, "shape": shape, "parameters": {
            "shared_memory_region": "io", "shared_memory_byte_size": size,
            "shared_memory_offset": offset}}
        for name, datatype, shape, size, offset in inputs]}).encode(), None)


def _regions(registry: RegionRegistry, tmp_path: Path, data: bytes) -> CallerRegions:
    (tmp_path / "zeroserve_io").write_bytes(data)
    registry.register(OWNER, "io", "/zeroserve_io", 8, len(data) - 8)
    return CallerRegions(registry, OWNER)


def test_workers_read_in_place_only_where_all_share_the_namespace_and_prefix(registry):
    space = registry.space
    assert space is not None
    assert registry.reads_in_place(frozenset({(space, "/zeroserve_")}))
    assert registry.reads_in_place(frozenset({(space, "zeroserve")}))  # admits every key
    for workers in (frozenset(),
                    frozenset({(space, "/zeroserve_"), ("boot:1:2", "/zeroserve_")}),
                    frozenset({(space, "/zeroserve_"), (None, None)}),
                    frozenset({(space, None)}), frozenset({(space, "")}),
                    frozenset({(space, "/zeroserve_x")})):
        assert not registry.reads_in_place(workers), workers


def test_shm_direct_off_never_reads_in_place(tmp_path):
    off = RegionRegistry("/zeroserve_", shm_dir=tmp_path, direct=False)
    assert off.space is None and not off.reads_in_place(frozenset({(None, "/zeroserve_")}))


def test_a_tensor_input_goes_as_a_checked_reference_to_its_bytes(registry, tmp_path):
    data = np.arange(16, dtype=np.float32)
    regions = _regions(registry, tmp_path, bytes(8) + data.tobytes())
    request = _request(("x", "FP32", [2, 4], 32, 16), ("any", "FP32", [4], 16, 0))
    place_shm_inputs(request, regions, ENDPOINT, _here(registry))
    datatype, sent = request.inputs["x"]
    assert datatype == "FP32" and isinstance(sent, ShmTensor) and sent.shape == (2, 4)
    ref = sent.reference
    assert ref is not None
    assert (ref.namespace, ref.key, ref.offset, ref.byte_size) == (
        registry.space, "zeroserve_io", 8 + 16, 32)
    assert isinstance(request.inputs["any"][1], ShmTensor) and request.shm_inputs == {}


def test_inputs_a_worker_could_not_take_as_they_are_are_copied(registry, tmp_path):
    data = np.arange(16, dtype=np.float32)
    regions = _regions(registry, tmp_path, bytes(8) + data.tobytes() + bytes([1, 0, 1, 1]))
    request = _request(("rows", "FP32", [4], 16, 0), ("flags", "BOOL", [4], 4, 64),
                       ("x", "FP32", [4], 16, 16))
    place_shm_inputs(request, regions, ENDPOINT, frozenset({("boot:1:2", "/zeroserve_")}))
    place_shm_inputs(_request(("flags", "BOOL", [4], 4, 64)), regions, ENDPOINT, _here(registry))
    for name, want in (("rows", data[:4]), ("flags", [True, False, True, True]),
                       ("x", data[4:8])):
        got = request.inputs[name][1]
        assert not isinstance(got, ShmTensor)
        np.testing.assert_array_equal(got, want)
    copied = _request(("rows", "FP32", [4], 16, 0), ("flags", "BOOL", [4], 4, 64))
    place_shm_inputs(copied, regions, ENDPOINT, _here(registry))
    assert not any(isinstance(v, ShmTensor) for _, v in copied.inputs.values())


def test_a_reference_is_checked_like_a_read(registry, tmp_path):
    regions = _regions(registry, tmp_path, bytes(8 + 64))
    for request, reason in (
            (_request(("x", "FP32", [4], 20, 0)), "needs 16 bytes, got 20"),
            (_request(("x", "FP32", [4], 16, 56)), "outside shared memory region 'io'")):
        with pytest.raises(RegionError, match=reason):
            place_shm_inputs(request, regions, ENDPOINT, _here(registry))
    (tmp_path / "zeroserve_io").write_bytes(bytes(16))
    with pytest.raises(RegionError, match="shrank"):
        place_shm_inputs(_request(("x", "FP32", [4], 16, 0)), regions, ENDPOINT,
                         _here(registry))


def test_a_models_answer_gives_each_services_worker_namespaces():
    answer = {"broker_id": "b", "services": {}, "shm": {
        "a": [["ns", "/zeroserve_"], [None, None]], "b": [["ns", "/p"]],
        "c": [["ns"], "junk", ["ns", 3]], "d": "junk"}}
    shm = ModelsAnswer.read(answer).shm
    assert shm["a"] == {("ns", "/zeroserve_"), (None, None)}
    assert shm["b"] == {("ns", "/p")}
    assert shm["c"] == {(None, None)} and shm["d"] == {(None, None)}
    assert ModelsAnswer.read({"services": {}}).shm == {}


def test_the_broker_collects_the_namespaces_of_each_services_workers():
    front: list = []
    core = BrokerCore(BrokerConfig(heartbeat_s=1.0, liveness=3), front.append, lambda f: None,
                      now=0.0)
    endpoints = {"run": EndpointDescription("svc", "run")}
    for identity, service, info in (
            (b"W1", "svc", {"shm_namespace": "ns1", "shm_key_prefix": "/zeroserve_"}),
            (b"W2", "svc", {"shm_namespace": "ns1", "shm_key_prefix": "/zeroserve_"}),
            (b"W3", "svc", {"pid": 3}), (b"W4", "odd", {"shm_namespace": 5})):
        described = {n: replace(d, service=service) for n, d in endpoints.items()}
        core.on_backend([identity, *Ready(identity.decode(), service, described, 1,
                                          info).to_frames()], 0.0)
    core.on_frontend([b"G", *Control(b"\x00" * 8, ControlOp.MODELS, {}).to_frames()], 0.1)
    reply = parse_reply(front[-1][3:])  # after the gateway, the protocol and the command
    shm = unpack_map(reply.meta, "models")["shm"]
    assert sorted(map(tuple, shm["svc"]), key=str) == [("ns1", "/zeroserve_"), (None, None)]
    assert shm["odd"] == [[None, None]]
