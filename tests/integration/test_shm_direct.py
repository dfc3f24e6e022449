"""Shared memory inputs read in place by a worker on the gateway's host (gateway.shm_direct),
against real daemons with tritonclient's own shared memory helpers: the worker's input maps the
caller's object (the test service says so), the answer is the copied path's, a gateway with
``shm_direct`` off copies, a service with a worker that cannot read in place is copied, and bad
regions are still refused with 400 / INVALID_ARGUMENT while the cluster keeps serving, and a
worker refuses (BAD_REQUEST) a reference it must not read, then goes on serving."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
import zmq
from cluster import ROOT, Cluster, free_port
from tritonclient.utils import InferenceServerException

from zeroserve.wire import codec
from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import Reply, Request, error_details
from zeroserve.wire.shm_refs import ShmRef, namespace, stand_in
from zeroserve.wire.stream import parse_answer

pytestmark = pytest.mark.integration

SERVICE = f"{ROOT / 'tests' / 'shm_services.py'}:Probe"
MODULES = pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
BAD = {httpclient: "400", grpcclient: "StatusCode.INVALID_ARGUMENT"}
X = np.arange(64 * 4, dtype=np.float32).reshape(64, 4) / 7


class _Copying:
    """The second gateway of the cluster, with ``gateway.shm_direct`` off."""

    def __init__(self) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, _Copying]]:
    cluster = Cluster(tmp_path_factory.mktemp("shm-direct"))
    copying = _Copying()
    try:
        cluster.start(SERVICE)
        cluster.gateway("--http-port", str(copying.http_port), "--grpc-port",
                        str(copying.grpc_port), env={"ZEROSERVE_GATEWAY_SHM_DIRECT": "false"})
        client = httpclient.InferenceServerClient(f"127.0.0.1:{copying.http_port}")
        deadline = time.monotonic() + 20
        while not _ready(client):
            assert time.monotonic() < deadline, "the copying gateway never became ready"
            time.sleep(0.1)
        client.close()
        yield cluster, copying
    finally:
        cluster.stop()


def _ready(client) -> bool:
    try:
        return bool(client.is_model_ready("probe.run"))
    except (InferenceServerException, OSError):
        return False


@pytest.fixture
def region() -> Iterator[tuple[str, object]]:
    """A shared memory object holding :data:`X`, made with tritonclient's helpers."""
    key = f"/zeroserve_test_direct_{uuid.uuid4().hex[:10]}"
    handle = shm.create_shared_memory_region("probe", key, 2 * X.nbytes)
    shm.set_shared_memory_region(handle, [X])
    yield key, handle
    shm.destroy_shared_memory_region(handle)


def _client(module, port: int):
    return module.InferenceServerClient(f"127.0.0.1:{port}")


def _ports(module, cluster: Cluster | _Copying) -> int:
    return cluster.http_port if module is httpclient else cluster.grpc_port


def _shm_call(client, module, rows: int = 64, byte_size: int | None = None, offset: int = 0,
              name: str = "in") -> tuple[np.ndarray, bool]:
    tensor = module.InferInput("x", [rows, 4], "FP32")
    tensor.set_shared_memory(name, rows * 16 if byte_size is None else byte_size,
                             offset=offset)
    result = client.infer("probe.run", [tensor])
    return result.as_numpy("twice"), bool(result.as_numpy("in_place")[0])


def _binary_call(client, module) -> tuple[np.ndarray, bool]:
    tensor = module.InferInput("x", list(X.shape), "FP32")
    if module is httpclient:
        tensor.set_data_from_numpy(X, binary_data=True)
    else:
        tensor.set_data_from_numpy(X)
    result = client.infer("probe.run", [tensor])
    return result.as_numpy("twice"), bool(result.as_numpy("in_place")[0])


@MODULES
def test_a_worker_on_the_gateways_host_maps_the_callers_input(probe, region, module):
    cluster, _ = probe
    key, handle = region
    client = _client(module, _ports(module, cluster))
    try:
        client.register_system_shared_memory("in", key, 2 * X.nbytes)
        twice, in_place = _shm_call(client, module)
        assert in_place
        copied, through_broker = _binary_call(client, module)
        assert not through_broker
        np.testing.assert_array_equal(twice, copied)
        np.testing.assert_array_equal(twice, X * 2)
        half, in_place = _shm_call(client, module, rows=32, offset=32 * 16)  # at an offset
        assert in_place
        np.testing.assert_array_equal(half, X[32:] * 2)
        output = module.InferRequestedOutput("twice")  # outputs: written by the gateway
        output.set_shared_memory("in", X.nbytes, offset=X.nbytes)
        tensor = module.InferInput("x", list(X.shape), "FP32")
        tensor.set_shared_memory("in", X.nbytes)
        client.infer("probe.run", [tensor], outputs=[output])
        written = shm.get_contents_as_numpy(handle, np.float32, [64, 4], offset=X.nbytes)
        np.testing.assert_array_equal(written, X * 2)
    finally:
        client.unregister_system_shared_memory()
        client.close()


@MODULES
def test_a_gateway_with_shm_direct_off_copies_the_input(probe, region, module):
    _, copying = probe
    key, _ = region
    client = _client(module, _ports(module, copying))
    try:
        client.register_system_shared_memory("in", key, 2 * X.nbytes)
        twice, in_place = _shm_call(client, module)
        assert not in_place
        np.testing.assert_array_equal(twice, X * 2)
    finally:
        client.unregister_system_shared_memory()
        client.close()


@MODULES
def test_bad_slices_are_refused_and_the_cluster_keeps_serving(probe, region, module):
    cluster, _ = probe
    key, _ = region
    client = _client(module, _ports(module, cluster))
    try:
        client.register_system_shared_memory("in", key, 2 * X.nbytes)
        for kwargs, reason in (
                ({"byte_size": 64 * 16 + 4}, "needs 1024 bytes, got 1028"),
                ({"offset": 2 * X.nbytes - 16}, "outside shared memory region 'in'"),
                ({"name": "nowhere"}, "Unable to find system shared memory region")):
            with pytest.raises(InferenceServerException) as info:
                _shm_call(client, module, **kwargs)
            assert info.value.status() == BAD[module], info.value
            assert reason in str(info.value), info.value
        twice, in_place = _shm_call(client, module)
        assert in_place
        np.testing.assert_array_equal(twice, X * 2)
    finally:
        client.unregister_system_shared_memory()
        client.close()


def _in_place_after(client, want: bool, timeout_s: float = 15.0) -> None:
    """Call until the answer's ``in_place`` is ``want`` three times in a row (the gateway learns
    of workers from the broker's models every half second)."""
    deadline, streak = time.monotonic() + timeout_s, 0
    while streak < 3:
        assert time.monotonic() < deadline, f"inputs never came {'in place' if want else 'copied'}"
        twice, in_place = _shm_call(client, httpclient)
        np.testing.assert_array_equal(twice, X * 2)
        streak = streak + 1 if in_place is want else 0


def test_a_service_with_a_worker_that_cannot_read_in_place_is_copied(probe, region):
    cluster, _ = probe
    key, _ = region
    client = _client(httpclient, cluster.http_port)
    # no key prefix: the worker reads nothing in place and says no namespace in its READY
    other = cluster.worker(SERVICE, env={"ZEROSERVE_WORKER_SHM_KEY_PREFIX": ""})
    try:
        cluster.wait_ready(2)
        client.register_system_shared_memory("in", key, 2 * X.nbytes)
        _in_place_after(client, False)
        other.stop()
        _in_place_after(client, True)
    finally:
        other.stop()
        client.unregister_system_shared_memory()
        client.close()


def _ref_call(cluster: Cluster, ref: ShmRef) -> Reply:
    """One REQUEST to ``probe.run`` with ``ref`` as its input, sent to the broker as a gateway
    would (without the gateway's checks)."""
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{cluster.frontend_port}")
    try:
        meta, frames = codec.encode({"x": stand_in(ref)})
        sock.send_multipart(Request(uuid.uuid4().bytes[:8], "probe", "run", 10_000, meta,
                                    frames).to_frames())
        assert sock.poll(15_000), "no answer from the broker"
        answer = parse_answer(sock.recv_multipart())
        assert isinstance(answer, Reply)
        return answer
    finally:
        sock.close()


def test_a_worker_refuses_references_it_must_not_read_and_keeps_serving(probe, region, tmp_path):
    cluster, _ = probe
    key, _ = region
    here = namespace()
    assert here is not None
    (tmp_path / "zeroserve_elsewhere").write_bytes(X.tobytes())
    good = ShmRef(here, key.lstrip("/"), 0, X.nbytes, X.dtype, X.shape)
    for ref, reason in (
            (replace(good, namespace="another-boot:1:2"), "another host or container"),
            (replace(good, key="zeroserve_../" + key.lstrip("/")), "not a plain name"),
            (replace(good, key=str(tmp_path / "zeroserve_elsewhere")), "not a plain name"),
            (replace(good, key="other_" + key.lstrip("/")), "outside this worker's prefix"),
            (replace(good, offset=X.nbytes + 16), "runs past the end"),
            (replace(good, byte_size=X.nbytes - 4), "the reference gives"),
            (replace(good, key="zeroserve_test_direct_missing"), "cannot open")):
        reply = _ref_call(cluster, ref)
        assert reply.status is Status.BAD_REQUEST, reply
        assert reason in str(error_details(reply)["error"])
    reply = _ref_call(cluster, good)
    assert reply.status is Status.OK
    answer = codec.decode(reply.meta, reply.body)
    np.testing.assert_array_equal(answer["twice"], X * 2)
    assert bool(answer["in_place"][0])
