"""Streams over gRPC (``zeroserve.v1.Serving/Stream``) through a real gateway, broker and
worker serving the test "streamer" service: with the generated stub, through the SDK's gRPC
transports and through ``zeroserve.Client("grpc://...")`` / ``AsyncClient``. Chunks in order
and as they come, errors before and after chunks, bad inputs, the idle and total limits from
metadata, cancellation that closes the generator at the worker, numpy values, API keys, a
reader that stops reading, and the client's own bounds when no chunk comes."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from cluster import Cluster

import zeroserve
from gateway.api_keys import digest, new_key
from zeroserve.client import errors
from zeroserve.client.grpc_transport import AsyncGrpcTransport, GrpcTransport
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc
from zeroserve.wire import codec

pytestmark = pytest.mark.integration

IDLE = "x-zeroserve-stream-idle-timeout"


@pytest.fixture(scope="module")
def streaming(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the module: broker, gateway and a worker of the "streamer" service."""
    cluster = Cluster(tmp_path_factory.mktemp("grpc-streams"))
    try:
        cluster.broker()
        cluster.gateway()
        cluster.test_worker("Streamer")
        cluster.wait_ready(1, "streamer")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def stub(streaming: Cluster) -> Iterator[pb_grpc.ServingStub]:
    with grpc.insecure_channel(f"127.0.0.1:{streaming.grpc_port}") as channel:
        yield pb_grpc.ServingStub(channel)


@pytest.fixture
def client(streaming: Cluster) -> Iterator[zeroserve.Client]:
    with zeroserve.Client(f"grpc://127.0.0.1:{streaming.grpc_port}", timeout=10) as sdk:
        yield sdk


def _request(endpoint: str, **inputs: Any) -> pb.CallRequest:
    return pb.CallRequest(service="streamer", endpoint=endpoint,
                          inputs=codec.encode(inputs, threshold=1 << 62)[0])


def _values(replies: Iterator[pb.CallReply]) -> list[Any]:
    return [codec.decode(reply.value) for reply in replies]


def _read_until_error(replies: Iterator[pb.CallReply]) -> tuple[list[Any], grpc.RpcError]:
    values = []
    try:
        for reply in replies:
            values.append(codec.decode(reply.value))
    except grpc.RpcError as exc:
        return values, exc
    raise AssertionError(f"the stream ended without an error after {values}")


def _wait_for_line(path: Path, line: str, timeout_s: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = path.read_text().split() if path.exists() else []
        if line in lines:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"{path} never got {line!r}: {path.read_text() if path.exists() else ''}")


def test_the_stub_gets_every_chunk_in_order(stub: pb_grpc.ServingStub) -> None:
    assert _values(stub.Stream(_request("count", n=20), timeout=10)) == list(range(20))
    assert _values(stub.Stream(_request("acount", n=3), timeout=10)) == [
        {"i": i, "text": f"token{i}"} for i in range(3)]
    assert _values(stub.Stream(_request("count", n=0), timeout=10)) == []


def test_the_sdk_transports_stream_sync_and_async(streaming: Cluster) -> None:
    url = f"grpc://127.0.0.1:{streaming.grpc_port}"
    transport = GrpcTransport(url)
    try:
        assert list(transport.stream("streamer", "count", {"n": 12}, 10.0, None)) == \
            list(range(12))
    finally:
        transport.close()

    async def read() -> list[Any]:
        sdk = AsyncGrpcTransport(url)
        try:
            return [value async for value in sdk.stream("streamer", "acount", {"n": 4}, 10.0,
                                                         5.0)]
        finally:
            await sdk.close()
    assert asyncio.run(read()) == [{"i": i, "text": f"token{i}"} for i in range(4)]


def test_the_clients_stream_over_grpc(streaming: Cluster, client: zeroserve.Client) -> None:
    assert list(client.stream("streamer", "count", n=12)) == list(range(12))
    assert list(client.stream("streamer", "count", n=0)) == []

    async def read() -> list[Any]:
        async with zeroserve.AsyncClient(f"grpc://127.0.0.1:{streaming.grpc_port}") as sdk:
            return [value async for value in sdk.stream("streamer", "acount", n=4,
                                                        idle_timeout=5.0)]
    assert asyncio.run(read()) == [{"i": i, "text": f"token{i}"} for i in range(4)]


def test_the_first_chunk_comes_before_the_generator_goes_on(
        stub: pb_grpc.ServingStub, client: zeroserve.Client, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    replies = stub.Stream(_request("first_then_wait", gate=str(gate), wait_s=20.0), timeout=30)
    started = time.monotonic()
    assert codec.decode(next(replies).value) == "first"
    assert time.monotonic() - started < 10  # not the generator's 20 s wait: it waits on us
    gate.touch()
    assert _values(replies) == ["second"]

    gate = tmp_path / "gate-sdk"
    chunks = client.stream("streamer", "first_then_wait", gate=str(gate), wait_s=20.0)
    assert next(chunks) == "first"
    gate.touch()
    assert list(chunks) == ["second"]


def test_an_error_after_chunks_ends_the_rpc_with_internal_and_its_message(
        stub: pb_grpc.ServingStub, client: zeroserve.Client) -> None:
    values, error = _read_until_error(stub.Stream(_request("fails_after", n=3), timeout=10))
    assert values == [0, 1, 2]
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "failed after 3 chunks" in error.details()

    got = []
    with pytest.raises(errors.ServerError, match="failed after 2 chunks") as raised:
        for value in client.stream("streamer", "fails_after", n=2):
            got.append(value)
    assert got == [0, 1] and raised.value.status == 500 and raised.value.from_server

    values, error = _read_until_error(stub.Stream(_request("bad_chunk"), timeout=10))
    assert values == [1] and error.code() is grpc.StatusCode.INTERNAL
    assert "cannot be sent (chunk 1)" in error.details()


def test_an_error_before_the_first_chunk_ends_the_rpc_with_internal(
        stub: pb_grpc.ServingStub, client: zeroserve.Client) -> None:
    values, error = _read_until_error(stub.Stream(_request("fails_first", why="no start"),
                                                  timeout=10))
    assert values == []
    assert error.code() is grpc.StatusCode.INTERNAL and "no start" in error.details()
    with pytest.raises(errors.ServerError, match="bad start"):
        list(client.stream("streamer", "fails_first"))


def test_bad_inputs_and_the_wrong_method_are_invalid_argument(
        stub: pb_grpc.ServingStub, client: zeroserve.Client) -> None:
    for request in (_request("count", n="many"), _request("count"),
                    pb.CallRequest(service="streamer", endpoint="count", inputs=b"\xc1")):
        values, error = _read_until_error(stub.Stream(request, timeout=10))
        assert values == [] and error.code() is grpc.StatusCode.INVALID_ARGUMENT, \
            error.details()
    with pytest.raises(errors.BadRequest):
        list(client.stream("streamer", "count", n="many"))

    with pytest.raises(grpc.RpcError) as called:
        stub.Call(_request("count", n=2), timeout=10)
    assert called.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "streamer.count is a streaming endpoint: use Stream" in called.value.details()
    _, error = _read_until_error(stub.Stream(_request("ping"), timeout=10))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "streamer.ping is not a streaming endpoint: use Call" in error.details()
    assert codec.decode(stub.Call(_request("ping"), timeout=10).value) == "pong"

    for metadata in ((IDLE, "soon"), ("x-zeroserve-timeout", "0")):
        _, error = _read_until_error(stub.Stream(_request("count", n=2), timeout=10,
                                                 metadata=(metadata,)))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert metadata[0] in error.details().lower()
    with pytest.raises(errors.NotFound):
        list(client.stream("streamer", "nothing"))


def test_cancelling_the_rpc_closes_the_generator(stub: pb_grpc.ServingStub,
                                                 tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    replies = stub.Stream(_request("count", n=10_000, delay_s=0.02, marker=str(marker)),
                          timeout=60)
    assert [codec.decode(next(replies).value) for _ in range(3)] == [0, 1, 2]
    replies.cancel()
    assert _wait_for_line(marker, "closed") == ["started", "closed"]

    # a gRPC deadline bounds the whole RPC: when it passes, the stream is cancelled too
    marker = tmp_path / "deadline"
    values, error = _read_until_error(stub.Stream(
        _request("count", n=10_000, delay_s=0.02, marker=str(marker)), timeout=1.0))
    assert 0 < len(values) < 10_000 and error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert _wait_for_line(marker, "closed") == ["started", "closed"]


def test_leaving_the_sdk_iteration_closes_the_generator(streaming: Cluster,
                                                        client: zeroserve.Client,
                                                        tmp_path: Path) -> None:
    marker = tmp_path / "sync"
    chunks = client.stream("streamer", "count", n=10_000, delay_s=0.02, marker=str(marker))
    assert [next(chunks) for _ in range(3)] == [0, 1, 2]
    chunks.close()
    assert _wait_for_line(marker, "closed") == ["started", "closed"]

    marker = tmp_path / "transport"
    transport = GrpcTransport(f"grpc://127.0.0.1:{streaming.grpc_port}")
    try:
        raw = transport.stream("streamer", "count", {"n": 10_000, "delay_s": 0.02,
                                                     "marker": str(marker)}, 10.0, None)
        assert [next(raw) for _ in range(3)] == [0, 1, 2]
        raw.close()
        assert _wait_for_line(marker, "closed") == ["started", "closed"]
    finally:
        transport.close()

    marker = tmp_path / "async"

    async def leave_early() -> list[Any]:
        got = []
        async with zeroserve.AsyncClient(f"grpc://127.0.0.1:{streaming.grpc_port}") as sdk:
            chunks = sdk.stream("streamer", "acount", n=10_000, delay_s=0.02,
                                marker=str(marker))
            async with contextlib.aclosing(chunks):
                async for value in chunks:
                    got.append(value["i"])
                    if len(got) == 3:
                        break
            return got
    assert asyncio.run(leave_early()) == [0, 1, 2]
    assert _wait_for_line(marker, "closed") == ["started", "closed"]


def test_the_idle_limit_from_metadata_ends_the_rpc_with_deadline_exceeded(
        stub: pb_grpc.ServingStub, client: zeroserve.Client, tmp_path: Path) -> None:
    gate = tmp_path / "never"
    started = time.monotonic()
    values, error = _read_until_error(stub.Stream(
        _request("first_then_wait", gate=str(gate), wait_s=20.0), timeout=30,
        metadata=((IDLE, "0.5"),)))
    assert values == ["first"]
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "idle for 0.5 s" in error.details()
    assert time.monotonic() - started < 10

    got = []
    with pytest.raises(errors.DeadlineExceeded, match="idle for 0.5 s") as raised:
        for value in client.stream("streamer", "first_then_wait", gate=str(gate),
                                   wait_s=20.0, idle_timeout=0.5):
            got.append(value)
    assert got == ["first"] and raised.value.from_server  # the gateway's, within the grace

    values, error = _read_until_error(stub.Stream(
        _request("acount", n=10_000, delay_s=0.02), timeout=30,
        metadata=(("x-zeroserve-stream-total-timeout", "0.5"),)))
    assert 3 < len(values) < 10_000
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "total limit of 0.5 s" in error.details()


def test_the_timeout_bounds_the_first_chunk(client: zeroserve.Client) -> None:
    started = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded) as raised:
        list(client.stream("streamer", "count", n=1, delay_s=2.5, timeout=0.3))
    assert raised.value.from_server and "first chunk" in raised.value.message
    assert time.monotonic() - started < 2.5  # not the 2.5 s the first chunk takes


def test_numpy_chunks_keep_their_dtype_and_shape(client: zeroserve.Client) -> None:
    # small arrays travel inline from the worker; 4096 float64s in frames of their own
    for size, dtype in ((3, "float16"), (4096, "float64"), (5, "int8")):
        chunks = list(client.stream("streamer", "arrays", n=3, size=size, dtype=dtype))
        assert len(chunks) == 3
        for i, chunk in enumerate(chunks):
            assert isinstance(chunk, np.ndarray)
            assert chunk.dtype == np.dtype(dtype) and chunk.shape == (size,)
            assert (chunk == i).all()


def test_api_keys_guard_streams(tmp_path: Path) -> None:
    streamer_key, other_key = new_key(), new_key()
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"""keys:
  - {{name: streams, sha256: {digest(streamer_key)}, services: [streamer]}}
  - {{name: elsewhere, sha256: {digest(other_key)}, services: [mlp]}}
""")
    cluster = Cluster(tmp_path)
    try:
        cluster.broker()
        cluster.gateway(env={"ZEROSERVE_GATEWAY_API_KEYS_FILE": str(keys)})
        cluster.test_worker("Streamer")
        cluster.wait_ready(1, "streamer")
        url = f"grpc://127.0.0.1:{cluster.grpc_port}"
        for key, refused in ((None, errors.Unauthorized), (other_key, errors.Forbidden)):
            with zeroserve.Client(url, api_key=key) as sdk, pytest.raises(refused):
                list(sdk.stream("streamer", "count", n=2))
        with zeroserve.Client(url, api_key=streamer_key) as sdk:
            assert list(sdk.stream("streamer", "count", n=2)) == [0, 1]
    finally:
        cluster.stop()


class _Silent(pb_grpc.ServingServicer):
    """A server whose streams stall until released or cancelled: endpoint "one" after its
    first chunk, any other before it."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def Stream(self, request: pb.CallRequest, context: grpc.ServicerContext
               ) -> Iterator[pb.CallReply]:
        if request.endpoint == "one":
            yield pb.CallReply(value=codec.encode("first")[0])
        while context.is_active() and not self.release.wait(0.05):
            pass  # stalls until released or until its caller goes away


def test_the_sdk_stops_waiting_when_no_chunk_comes() -> None:
    silent = _Silent()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_ServingServicer_to_server(silent, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    url = f"grpc://127.0.0.1:{port}"
    try:
        transport = GrpcTransport(url)
        try:
            chunks = transport.stream("s", "one", {}, 5.0, 0.2)
            assert next(chunks) == "first"
            started = time.monotonic()
            with pytest.raises(TimeoutError, match="in 0.2 s after chunk 1"):
                next(chunks)
            assert 1.1 < time.monotonic() - started < 5  # the idle timeout and the grace
            with pytest.raises(TimeoutError, match="in 0.1 s .the timeout"):
                next(transport.stream("s", "none", {}, 0.1, None))
        finally:
            transport.close()

        with zeroserve.Client(url, timeout=0.2) as client:
            chunks = client.stream("s", "one", idle_timeout=0.2)
            assert next(chunks) == "first"
            with pytest.raises(errors.DeadlineExceeded, match="no stream chunk") as raised:
                next(chunks)
            assert not raised.value.from_server
            with pytest.raises(errors.DeadlineExceeded, match="no answer") as raised:
                next(client.stream("s", "none"))
            assert not raised.value.from_server

        async def wait() -> errors.DeadlineExceeded:
            async with zeroserve.AsyncClient(url) as client:
                chunks = client.stream("s", "one", idle_timeout=0.2)
                assert await anext(chunks) == "first"
                with pytest.raises(errors.DeadlineExceeded, match="no stream chunk") as raised:
                    await anext(chunks)
                return raised.value
        assert not asyncio.run(wait()).from_server
    finally:
        silent.release.set()
        server.stop(0)


def test_a_client_that_stops_reading_loses_its_stream(stub: pb_grpc.ServingStub) -> None:
    replies = stub.Stream(_request("arrays", n=200, size=256 * 1024), timeout=60,
                          metadata=((IDLE, "1"),))
    assert codec.decode(next(replies).value).shape == (256 * 1024,)
    time.sleep(4)  # the gateway's writes stop once the flow-control windows are full
    values, error = _read_until_error(replies)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "did not read the stream for 1 s" in error.details()
    assert len(values) < 199
