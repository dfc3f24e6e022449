"""Triton's system shared memory extension against real daemons, with tritonclient's own
helpers (``tritonclient.utils.shared_memory``) unchanged: register, infer with inputs and
outputs in regions, status, unregister, over HTTP and gRPC; bad regions refused with a 400 /
INVALID_ARGUMENT and a reason; a region serves only the API key that registered it."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from cluster import ROOT, Cluster
from tritonclient.utils import InferenceServerException

from gateway.api_keys import digest, new_key

pytestmark = pytest.mark.integration

SERVICE = f"{ROOT / 'tests' / 'triton_services.py'}:TritonModels"
MODULES = pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
ROW_BYTES = 16 * 4  # one row of INT32[16]
BAD = {httpclient: "400", grpcclient: "StatusCode.INVALID_ARGUMENT"}


@pytest.fixture(scope="module")
def tri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("triton-shm"))
    try:
        yield cluster.start(SERVICE)
    finally:
        cluster.stop()


@pytest.fixture
def regions() -> Iterator[list]:
    """Shared memory objects made with tritonclient's helpers, destroyed after the test."""
    made: list = []
    yield made
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def _key(what: str) -> str:
    return f"/zeroserve_test_{what}_{uuid.uuid4().hex[:10]}"


def _client(cluster: Cluster, module):
    port = cluster.http_port if module is httpclient else cluster.grpc_port
    return module.InferenceServerClient(f"127.0.0.1:{port}")


def _status(client, module, **headers) -> dict:
    status = client.get_system_shared_memory_status(headers=headers or None)
    if module is httpclient:
        return {r["name"]: (r["key"], r["offset"], r["byte_size"]) for r in status}
    return {name: (r.key, r.offset, r.byte_size) for name, r in status.regions.items()}


def _shm_inputs(module, region: str, rows: int = 1) -> list:
    tensors = [module.InferInput("INPUT0", [rows, 16], "INT32"),
               module.InferInput("INPUT1", [rows, 16], "INT32")]
    for index, tensor in enumerate(tensors):
        tensor.set_shared_memory(region, rows * ROW_BYTES, offset=index * rows * ROW_BYTES)
    return tensors


def _shm_outputs(module, region: str, rows: int = 1) -> list:
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    for index, output in enumerate(outputs):
        output.set_shared_memory(region, rows * ROW_BYTES, offset=index * rows * ROW_BYTES)
    return outputs


def _refused(call, module, reason: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        call()
    assert info.value.status() == BAD[module], info.value
    assert reason in info.value.message()


@MODULES
def test_inputs_and_outputs_travel_in_registered_regions(tri: Cluster, module, regions) -> None:
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 5, np.int32)
    in_key, out_key = _key("in"), _key("out")
    ins = shm.create_shared_memory_region("in", in_key, 4 * ROW_BYTES)
    outs = shm.create_shared_memory_region("out", out_key, 4 * ROW_BYTES)
    regions.extend([ins, outs])
    shm.set_shared_memory_region(ins, [a, b])
    with _client(tri, module) as client:
        assert "system_shared_memory" in client.get_server_metadata(
            **({"as_json": True} if module is grpcclient else {}))["extensions"]
        client.register_system_shared_memory("in", in_key, 4 * ROW_BYTES)
        client.register_system_shared_memory("out", out_key, 4 * ROW_BYTES)
        assert _status(client, module) == {"in": (in_key, 0, 256), "out": (out_key, 0, 256)}

        result = client.infer("tri", _shm_inputs(module, "in", 2),
                              outputs=_shm_outputs(module, "out", 2))
        np.testing.assert_array_equal(
            shm.get_contents_as_numpy(outs, np.int32, [2, 16]), a + b)
        np.testing.assert_array_equal(
            shm.get_contents_as_numpy(outs, np.int32, [2, 16], offset=2 * ROW_BYTES), a - b)
        first = result.get_output("OUTPUT0")
        if module is httpclient:
            # no parameters, as Triton answers (its C++ client reads any as binary data)
            assert first == {"name": "OUTPUT0", "datatype": "INT32", "shape": [2, 16]}
        else:
            assert list(first.shape) == [2, 16] and not first.HasField("contents")
            assert first.parameters["shared_memory_region"].string_param == "out"
            assert result.get_output("OUTPUT1").parameters[
                "shared_memory_offset"].int64_param == 128

        # inputs from a region, outputs in the answer: the usual way back
        mixed = client.infer("tri", _shm_inputs(module, "in", 2))
        np.testing.assert_array_equal(mixed.as_numpy("OUTPUT1"), a - b)

        client.unregister_system_shared_memory("in")
        assert list(_status(client, module)) == ["out"]
        client.unregister_system_shared_memory()
        assert _status(client, module) == {}
        _refused(lambda: client.infer("tri", _shm_inputs(module, "in", 2)), module,
                 "Unable to find system shared memory region: 'in'")


@MODULES
def test_bad_regions_and_keys_are_refused_with_a_reason(tri: Cluster, module, regions) -> None:
    key = _key("bad")
    regions.append(shm.create_shared_memory_region("bad", key, 2 * ROW_BYTES))
    other = f"/notzeroserve_{uuid.uuid4().hex[:10]}"
    regions.append(shm.create_shared_memory_region("other", other, ROW_BYTES))
    with _client(tri, module) as client:
        _refused(lambda: client.register_system_shared_memory("o", other, ROW_BYTES), module,
                 "outside this gateway's prefix '/zeroserve_'")
        _refused(lambda: client.register_system_shared_memory("r", key, ROW_BYTES, 2 * ROW_BYTES),
                 module, "runs past the end of key")
        _refused(lambda: client.register_system_shared_memory("r", _key("gone"), 8), module,
                 "cannot open shared memory key")
        client.register_system_shared_memory("r", key, 2 * ROW_BYTES)
        try:
            _refused(lambda: client.register_system_shared_memory("r", key, 8), module,
                     "already in manager")
            _refused(lambda: client.infer("tri", _shm_inputs(module, "r", 2)), module,
                     "is outside shared memory region 'r' (128 bytes)")
            _refused(lambda: client.infer("tri", _shm_inputs(module, "r", 1),
                                          outputs=_shm_outputs(module, "nowhere")), module,
                     "Unable to find system shared memory region: 'nowhere'")
            small = _shm_outputs(module, "r")
            small[0].set_shared_memory("r", 8)
            _refused(lambda: client.infer("tri", _shm_inputs(module, "r"), outputs=small),
                     module, "64 bytes do not fit in the 8 bytes")
            _refused(lambda: client.get_system_shared_memory_status("nowhere"), module,
                     "Unable to find system shared memory region: 'nowhere'")
        finally:
            client.unregister_system_shared_memory()
        assert client.get_model_metadata("tri")  # the gateway lives on


def test_cuda_shared_memory_is_unlisted_and_refused(tri: Cluster) -> None:
    with _client(tri, httpclient) as client:
        assert "cuda_shared_memory" not in client.get_server_metadata()["extensions"]
        with pytest.raises(InferenceServerException) as info:
            client.get_cuda_shared_memory_status()
        assert info.value.status() == "400" and "CUDA shared memory is not supported" in \
            info.value.message()
    with _client(tri, grpcclient) as client:
        with pytest.raises(InferenceServerException) as info:
            client.unregister_cuda_shared_memory()
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "CUDA shared memory is not supported" in info.value.message()


def test_a_region_serves_only_the_api_key_that_registered_it(cluster: Cluster, regions) -> None:
    key_a, key_b = new_key(), new_key()
    keys = cluster.tmp / "keys.yaml"
    keys.write_text(f"""keys:
  - {{name: team-a, sha256: {digest(key_a)}, services: [tri]}}
  - {{name: team-b, sha256: {digest(key_b)}, services: [tri]}}
""")
    cluster.broker()
    cluster.gateway(env={"ZEROSERVE_GATEWAY_API_KEYS_FILE": str(keys)})
    cluster.worker(SERVICE)
    cluster.wait_ready()
    shm_key = _key("owned")
    handle = shm.create_shared_memory_region("data", shm_key, 2 * ROW_BYTES)
    regions.append(handle)
    shm.set_shared_memory_region(handle, [np.ones((1, 16), np.int32), np.ones((1, 16), np.int32)])
    for module in (httpclient, grpcclient):
        name = "X-API-Key" if module is httpclient else "x-api-key"  # gRPC: lower-case metadata
        _check_owned(cluster, module, shm_key, {name: key_a}, {name: key_b})


def _check_owned(cluster: Cluster, module, shm_key: str, owner: dict, other: dict) -> None:
    """``owner`` registers a region of ``shm_key`` and uses it; ``other`` can do neither."""
    with _client(cluster, module) as client:
        client.register_system_shared_memory("data", shm_key, 2 * ROW_BYTES, headers=owner)
        try:
            answer = client.infer("tri", _shm_inputs(module, "data"), headers=owner)
            assert answer.as_numpy("OUTPUT0").tolist() == [[2] * 16]
            _refused(lambda: client.infer("tri", _shm_inputs(module, "data"), headers=other),
                     module, "a region of that name is registered by another caller")
            _refused(lambda: client.register_system_shared_memory(
                "mine", shm_key, ROW_BYTES, headers=other),
                module, "is registered by another caller")
            assert _status(client, module, **other) == {}
            client.unregister_system_shared_memory(headers=other)  # none of owner's regions
            assert list(_status(client, module, **owner)) == ["data"]
            with pytest.raises(InferenceServerException) as info:
                client.get_system_shared_memory_status()
            assert info.value.status() in ("401", "StatusCode.UNAUTHENTICATED")
        finally:
            client.unregister_system_shared_memory(headers=owner)


def test_model_stream_infer_reads_and_writes_regions(tri: Cluster, regions) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    in_key, out_key = _key("sin"), _key("sout")
    ins = shm.create_shared_memory_region("sin", in_key, 2 * ROW_BYTES)
    outs = shm.create_shared_memory_region("sout", out_key, 2 * ROW_BYTES)
    regions.extend([ins, outs])
    shm.set_shared_memory_region(ins, [a, a * 3])
    answers: list = []
    with _client(tri, grpcclient) as client:
        client.register_system_shared_memory("sin", in_key, 2 * ROW_BYTES)
        client.register_system_shared_memory("sout", out_key, 2 * ROW_BYTES)
        try:
            client.start_stream(callback=lambda result, error: answers.append((result, error)))
            client.async_stream_infer("tri", _shm_inputs(grpcclient, "sin"), request_id="s1",
                                      outputs=_shm_outputs(grpcclient, "sout"))
            client.async_stream_infer("tri", _shm_inputs(grpcclient, "ghost"), request_id="s2")
            client.stop_stream()
        finally:
            client.unregister_system_shared_memory()
    by_id = {(r.get_response().id if r is not None else "error"): (r, e) for r, e in answers}
    assert by_id["s1"][1] is None
    np.testing.assert_array_equal(shm.get_contents_as_numpy(outs, np.int32, [1, 16]), a * 4)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(outs, np.int32, [1, 16], offset=ROW_BYTES), a - a * 3)
    errors = [e for r, e in answers if e is not None]
    assert len(errors) == 1 and "Unable to find system shared memory region: 'ghost'" in \
        errors[0].message()
