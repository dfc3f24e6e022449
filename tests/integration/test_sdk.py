"""The client SDK against a real cluster, over http:// and grpc:// alike."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from cluster import Cluster, free_port

import zeroserve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory):
    """One Probe worker with one slot behind a broker that queues one request per endpoint."""
    cluster = Cluster(tmp_path_factory.mktemp("sdk"))
    try:
        cluster.broker("--max-queue", "1")
        cluster.gateway()
        cluster.test_worker("Probe", "--slots", "1")
        cluster.wait_ready(1)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["http", "grpc"])
def url(request: pytest.FixtureRequest, probe: Cluster) -> str:
    return probe.url if request.param == "http" else f"grpc://127.0.0.1:{probe.grpc_port}"


def test_calls_services_health_and_infer(url: str) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with zeroserve.Client(url) as client:
        np.testing.assert_array_equal(client.call("probe", "double", x=x), x * 2)
        assert client.call("probe", "sleep", seconds=0.0)["slept"] == 0.0
        assert client.infer("probe.double", {"x": x})["output"].tolist() == (x * 2).tolist()
        assert "double" in client.services()["probe"]["endpoints"]
        health = client.health()
        assert health["ready"] and health["services"] == {"probe": 1}


def test_a_large_tensor_comes_back_whole(url: str) -> None:
    # 2 MiB each way, sent as a view of the array, read into one buffer by the gateway, its
    # answer written as a view, in slices
    x = np.random.default_rng(7).random((1 << 17, 4), dtype=np.float32)
    with zeroserve.Client(url) as client:
        answer = client.call("probe", "double", x=x, timeout=60)
        np.testing.assert_array_equal(answer, x * 2)
        np.testing.assert_array_equal(client.call("probe", "double", x=x[:2]), x[:2] * 2)


def test_every_error_is_a_typed_exception_with_the_servers_message(url: str) -> None:
    with zeroserve.Client(url, retry=False) as client:
        cases = [
            (lambda: client.call("probe", "nope"), zeroserve.NotFound, "no endpoint 'nope'"),
            (lambda: client.call("probe", "double", x=np.zeros((1, 3), np.float32)),
             zeroserve.BadRequest, "does not match [-1, 4]"),
            (lambda: client.call("probe", "fail", message="boom"), zeroserve.ServerError,
             "ValueError: boom"),
            (lambda: client.call("probe", "sleep", seconds=1.0, timeout=0.3),
             zeroserve.DeadlineExceeded, ""),
            (lambda: client.infer("nope", {"x": np.zeros(1)}), zeroserve.NotFound,
             "unknown model"),
        ]
        for call, kind, message in cases:
            with pytest.raises(kind) as info:
                call()
            assert message in info.value.message


def test_a_full_queue_is_overloaded_and_a_retry_gets_through(url: str) -> None:
    """One call runs, one waits in the queue: a third is refused, then retried in time."""
    with zeroserve.Client(url, timeout=10.0) as retrying:  # waits out earlier tests' sleeps
        retrying.call("probe", "sleep", seconds=0.0)
    with zeroserve.Client(url, retry=False) as client:
        busy = [threading.Thread(target=client.call, args=("probe", "sleep"),
                                 kwargs={"seconds": 0.8}) for _ in range(2)]
        for thread in busy:
            thread.start()
            time.sleep(0.15)
        with pytest.raises(zeroserve.Overloaded):
            client.call("probe", "sleep", seconds=0.0)
        retrying = zeroserve.Client(url, timeout=10.0)
        assert retrying.call("probe", "sleep", seconds=0.0)["slept"] == 0.0
        retrying.close()
        for thread in busy:
            thread.join()


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_retries_stop_at_the_deadline_when_no_gateway_answers(scheme: str) -> None:
    client = zeroserve.Client(f"{scheme}://127.0.0.1:{free_port()}", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(zeroserve.Unreachable):
        client.call("probe", "whoami")
    elapsed = time.monotonic() - started
    client.close()
    # it retried at least four times (waits of at least 25 + 50 + 100 + 200 ms: see
    # zeroserve/client/retry.py; a later wait that would not fit before the deadline ends it early)
    assert 0.35 < elapsed < 2.0, elapsed


def test_async_client(url: str) -> None:
    x = np.ones((1, 4), np.float32)

    async def main() -> None:
        async with zeroserve.AsyncClient(url) as client:
            answers = await asyncio.gather(*[client.call("probe", "double", x=x + k)
                                             for k in range(10)])
            for k, answer in enumerate(answers):
                np.testing.assert_array_equal(answer, (x + k) * 2)
            assert (await client.infer("probe.double", {"x": x}))["output"].tolist() == \
                [[2.0] * 4]
            assert (await client.health())["ready"]
            big = np.random.default_rng(3).random((1 << 18, 4), dtype=np.float32)  # 4 MiB
            np.testing.assert_array_equal(await client.call("probe", "double", x=big,
                                                            timeout=60), big * 2)
            with pytest.raises(zeroserve.NotFound):
                await client.call("probe", "nope")
            with pytest.raises(zeroserve.DeadlineExceeded):
                await client.call("probe", "sleep", seconds=1.0, timeout=0.3)

    asyncio.run(main())
