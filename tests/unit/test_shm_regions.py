"""The system shared memory registry (gateway.shm_regions) and the OIP bodies' shared memory
parameters: keys under the prefix only, regions per owner, every read and write bounded."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import shared_memory as shm

from gateway.oip_grpc_body import build_response
from gateway.oip_grpc_body import parse_request as parse_grpc
from gateway.oip_rest_body import (
    encode_response,
    parse_request,
    read_shm_inputs,
    write_shm_outputs,
)
from gateway.shm_regions import (
    CallerRegions,
    RegionError,
    RegionRegistry,
    ShmSlice,
    grpc_peer_host,
    owner_of,
    slice_of,
)
from zeroserve.grpc_gen import grpc_service_pb2 as pb
from zeroserve.wire.oip_tensors import TensorError

A, B = owner_of("team-a", "10.0.0.1"), owner_of("team-b", "10.0.0.1")


def _object(folder: Path, name: str, data: bytes) -> str:
    (folder / name).write_bytes(data)
    return "/" + name


@pytest.fixture
def registry(tmp_path: Path):
    regions = RegionRegistry("/zeroserve_", max_read_bytes=48, shm_dir=tmp_path)
    try:
        yield regions
    finally:
        regions.close()


def test_a_registered_region_is_read_and_written_within_its_bounds(registry, tmp_path):
    key = _object(tmp_path, "zeroserve_in", bytes(range(32)))
    registry.register(A, "in", key, 8, 16)
    assert [r.status() for r in registry.status(A)] == [
        {"name": "in", "key": key, "offset": 8, "byte_size": 16}]
    assert bytes(registry.read(A, ShmSlice("in", 4, 2), "x")) == bytes([10, 11, 12, 13])
    assert registry.write(A, ShmSlice("in", 16, 0), "y", b"\xff\xfe") == 2
    assert (tmp_path / "zeroserve_in").read_bytes()[8:10] == b"\xff\xfe"


def test_keys_outside_the_prefix_or_not_plain_names_are_never_opened(registry, tmp_path):
    (tmp_path / "secret").write_bytes(b"x" * 16)
    (tmp_path / "zeroserve_link").symlink_to(tmp_path / "secret")
    (tmp_path / "zeroserve_dir").mkdir()
    with pytest.raises(RegionError, match="outside this gateway's prefix '/zeroserve_'"):
        registry.register(A, "r", "/secret", 0, 16)
    for key in ("/zeroserve_x/../secret", "/", "", ".."):
        with pytest.raises(RegionError, match="not a plain name"):
            registry.register(A, "r", key, 0, 1)
    with pytest.raises(RegionError, match="cannot open"):
        registry.register(A, "r", "/zeroserve_link", 0, 1)  # O_NOFOLLOW
    with pytest.raises(RegionError, match="cannot open|not a shared memory object"):
        registry.register(A, "r", "/zeroserve_dir", 0, 1)
    with pytest.raises(RegionError, match="cannot open shared memory key '/zeroserve_none'"):
        registry.register(A, "r", "/zeroserve_none", 0, 1)
    assert registry.status(A) == []


def test_a_region_must_lie_inside_its_object(registry, tmp_path):
    key = _object(tmp_path, "zeroserve_small", b"x" * 16)
    with pytest.raises(RegionError, match=r"offset 8 \+ byte_size 9 runs past the end"):
        registry.register(A, "r", key, 8, 9)
    for offset, size in ((-1, 4), (0, -4), (True, 4), (0, "4")):
        with pytest.raises(RegionError, match="non-negative integer"):
            registry.register(A, "r", key, offset, size)
    registry.register(A, "r", key, 8, 8)
    with pytest.raises(RegionError, match="already in manager"):
        registry.register(A, "r", key, 0, 8)


def test_tensors_outside_their_region_are_refused(registry, tmp_path):
    key = _object(tmp_path, "zeroserve_t", b"x" * 64)
    registry.register(A, "r", key, 16, 32)
    for where in (ShmSlice("r", 33), ShmSlice("r", 1, 32), ShmSlice("r", 8, 30)):
        with pytest.raises(RegionError, match="outside shared memory region 'r' "):
            registry.read(A, where, "x")
        with pytest.raises(RegionError, match="outside shared memory region 'r' "):
            registry.write(A, where, "y", b"")
    with pytest.raises(RegionError, match="do not fit in the 4 bytes"):
        registry.write(A, ShmSlice("r", 4), "y", b"12345")
    with pytest.raises(RegionError, match="^Unable to find system shared memory region: 'q'$"):
        registry.read(A, ShmSlice("q", 1), "x")


def test_an_input_larger_than_the_body_limit_is_refused(registry, tmp_path):
    registry.register(A, "big", _object(tmp_path, "zeroserve_big", bytes(64)), 0, 64)
    assert len(registry.read(A, ShmSlice("big", 48), "x")) == 48
    with pytest.raises(RegionError, match="49 bytes in shared memory are more than the "
                                          "gateway's limit of 48 bytes"):
        registry.read(A, ShmSlice("big", 49), "x")


def test_an_object_shrunk_after_registering_is_an_error_not_a_crash(registry, tmp_path):
    key = _object(tmp_path, "zeroserve_shrinks", b"x" * 64)
    registry.register(A, "r", key, 0, 64)
    os.truncate(tmp_path / "zeroserve_shrinks", 10)
    with pytest.raises(RegionError, match="shrank to 10 bytes"):
        registry.read(A, ShmSlice("r", 16), "x")
    with pytest.raises(RegionError, match="shrank to 10 bytes"):
        registry.write(A, ShmSlice("r", 16), "y", b"z" * 16)
    assert (tmp_path / "zeroserve_shrinks").stat().st_size == 10


def test_regions_belong_to_their_owner(registry, tmp_path):
    key = _object(tmp_path, "zeroserve_a", b"a" * 16)
    registry.register(A, "data", key, 0, 16)
    with pytest.raises(RegionError, match="registered by another caller"):
        registry.register(B, "mine", key, 0, 16)  # B never reaches A's memory
    os.link(tmp_path / "zeroserve_a", tmp_path / "zeroserve_alias")
    with pytest.raises(RegionError, match="registered by another caller"):
        registry.register(B, "mine", "zeroserve_alias", 0, 16)  # nor through another name
    with pytest.raises(RegionError, match="'data' for this caller: a region of that name is "
                                          "registered by another caller"):
        registry.read(B, ShmSlice("data", 16), "x")
    with pytest.raises(RegionError, match="registered by another caller"):
        registry.status(B, "data")
    assert registry.status(B) == []
    assert registry.unregister(B) == []
    key_b = _object(tmp_path, "zeroserve_b", b"b" * 16)
    registry.register(B, "data", key_b, 0, 16)  # names are per owner
    assert bytes(registry.read(B, ShmSlice("data", 2), "x")) == b"bb"
    assert bytes(registry.read(A, ShmSlice("data", 2), "x")) == b"aa"
    registry.register(A, "again", key, 4, 4)  # one owner may name one key twice
    assert registry.unregister(A) == ["data", "again"]
    assert [r.name for r in registry.status(B)] == ["data"]


def test_unregister_one_or_all_and_unknown_names(registry, tmp_path):
    key = _object(tmp_path, "zeroserve_u", b"u" * 16)
    registry.register(A, "one", key, 0, 8)
    registry.register(A, "two", key, 8, 8)
    registry.register(B, "three", _object(tmp_path, "zeroserve_b3", b"3"), 0, 1)
    assert registry.unregister(A, "one") == ["one"]
    assert registry.unregister(A, "one") == []  # as with Triton: nothing to do
    assert registry.unregister(A, "three") == []  # B's region stays
    assert [r.name for r in registry.status(B)] == ["three"]
    with pytest.raises(RegionError, match="Unable to find"):
        registry.read(A, ShmSlice("one", 1), "x")
    assert [r.name for r in registry.status(A)] == ["two"]
    registry.close()
    assert registry.status(A) == []


def test_an_empty_prefix_turns_the_extension_off(tmp_path):
    key = _object(tmp_path, "zeroserve_off", b"x" * 8)
    registry = RegionRegistry("", shm_dir=tmp_path)
    assert not registry.enabled
    for call in (lambda: registry.register(A, "r", key, 0, 8), lambda: registry.status(A),
                 lambda: registry.unregister(A), lambda: registry.read(A, ShmSlice("r", 1), "x")):
        with pytest.raises(RegionError, match="off on this gateway"):
            call()


def test_tritonclients_helpers_make_objects_the_registry_reads():
    key = f"/zeroserve_unit_{uuid.uuid4().hex[:12]}"
    handle = shm.create_shared_memory_region("in", key, 64)
    registry = RegionRegistry("/zeroserve_")
    try:
        shm.set_shared_memory_region(handle, [np.arange(16, dtype=np.float32)])
        registry.register(A, "in", key, 0, 64)
        got = np.frombuffer(registry.read(A, ShmSlice("in", 64), "x"), np.float32)
        np.testing.assert_array_equal(got, np.arange(16, dtype=np.float32))
        registry.write(A, ShmSlice("in", 8, 8), "y", np.array([7, 9], np.float32).data)
        np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float32, [4]),
                                      [0, 1, 7, 9])
    finally:
        registry.close()
        shm.destroy_shared_memory_region(handle)


def test_slice_parameters_follow_tritons_rules():
    assert slice_of({}, "x") is None
    assert slice_of({"shared_memory_region": "r", "shared_memory_byte_size": 8}, "x") == \
        ShmSlice("r", 8, 0)
    assert slice_of({"shared_memory_region": "r", "shared_memory_byte_size": 8,
                     "shared_memory_offset": 4}, "x") == ShmSlice("r", 8, 4)
    with pytest.raises(RegionError, match="needs shared_memory_byte_size"):
        slice_of({"shared_memory_region": "r"}, "x")
    with pytest.raises(RegionError, match="need shared_memory_region"):
        slice_of({"shared_memory_byte_size": 8}, "x")
    with pytest.raises(RegionError, match="must be a non-negative integer"):
        slice_of({"shared_memory_region": "r", "shared_memory_byte_size": -1}, "x")
    with pytest.raises(RegionError, match="region's name"):
        slice_of({"shared_memory_region": 3, "shared_memory_byte_size": 1}, "x")


def test_owners_are_key_names_or_client_hosts():
    assert owner_of("team-a", "1.2.3.4") == "key:team-a"
    assert owner_of(None, "1.2.3.4") == "peer:1.2.3.4"
    assert grpc_peer_host("ipv4:127.0.0.1:5123") == "127.0.0.1"
    assert grpc_peer_host("ipv6:[::1]:5123") == "::1"
    assert grpc_peer_host("unix:/tmp/x") == "unix:/tmp/x"


def test_http_bodies_read_inputs_from_and_write_outputs_to_regions(registry, tmp_path):
    data = np.arange(8, dtype=np.int32)
    key = _object(tmp_path, "zeroserve_http", data.tobytes() + bytes(32))
    registry.register(A, "io", key, 0, 64)
    regions = CallerRegions(registry, A)
    doc = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 4], "parameters": {
        "shared_memory_region": "io", "shared_memory_byte_size": 32}}],
        "outputs": [{"name": "y", "parameters": {
            "shared_memory_region": "io", "shared_memory_byte_size": 32,
            "shared_memory_offset": 32}}]}
    request = parse_request(json.dumps(doc).encode(), None)
    assert request.inputs == {} and list(request.outputs) == ["y"]
    read_shm_inputs(request, regions)
    np.testing.assert_array_equal(request.inputs["x"][1], data.reshape(2, 4))
    out = [("y", data.reshape(2, 4) * 2)]
    write_shm_outputs(request, out, regions)
    header, blobs = encode_response("m", "1", request, out)
    assert blobs == [] and json.loads(header)["outputs"] == [  # as Triton's HTTP answer
        {"name": "y", "datatype": "INT32", "shape": [2, 4]}]
    assert (tmp_path / "zeroserve_http").read_bytes()[32:] == (data * 2).tobytes()
    with pytest.raises(RegionError, match="off on this gateway"):
        read_shm_inputs(parse_request(json.dumps(doc).encode(), None), None)
    doc["inputs"][0]["data"] = data.tolist()
    with pytest.raises(TensorError, match="has data too"):
        parse_request(json.dumps(doc).encode(), None)


def test_grpc_bodies_pair_raw_entries_with_the_inputs_not_in_regions(registry, tmp_path):
    key = _object(tmp_path, "zeroserve_grpc", np.arange(4, dtype=np.float32).tobytes())
    registry.register(A, "in", key, 0, 16)
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="a", datatype="FP32", shape=[4]).parameters[
        "shared_memory_region"].string_param = "in"
    request.inputs[0].parameters["shared_memory_byte_size"].int64_param = 16
    request.inputs.add(name="b", datatype="FP32", shape=[2])
    request.raw_input_contents.append(np.array([5, 6], np.float32).tobytes())
    out = request.outputs.add(name="y")
    out.parameters["shared_memory_region"].string_param = "in"
    out.parameters["shared_memory_byte_size"].int64_param = 8
    request.outputs.add(name="z")
    parsed, typed = parse_grpc(request)
    assert not typed and list(parsed.inputs) == ["b"]
    read_shm_inputs(parsed, CallerRegions(registry, A))
    np.testing.assert_array_equal(parsed.inputs["a"][1], [0, 1, 2, 3])
    outputs = [("y", np.array([8, 9], np.float32)), ("z", np.array([1], np.int64))]
    write_shm_outputs(parsed, outputs, CallerRegions(registry, A))
    response = build_response("m", "1", parsed, typed, outputs)
    assert response.raw_output_contents[0] == b""  # keeps z's entry at z's position
    assert np.frombuffer(response.raw_output_contents[1], np.int64).tolist() == [1]
    assert response.outputs[0].parameters["shared_memory_byte_size"].int64_param == 8
    assert np.frombuffer((tmp_path / "zeroserve_grpc").read_bytes()[:8], np.float32).tolist() \
        == [8, 9]
    request.raw_input_contents.append(b"")
    with pytest.raises(TensorError, match="2 raw_input_contents for 1 inputs"):
        parse_grpc(request)
