"""Streams over REST and the SDK over http://, with real daemons (the "streamer" test
service): SSE and NDJSON framing and order, chunks sent as they come (not collected and
replayed), errors before the first chunk as statuses and after it as error events, a client
that goes away closes the generator, the idle limit from the header, numpy chunks kept by
the SDK, and a worker lost mid-stream."""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cluster import Cluster

import zeroserve
from gateway.rest_stream import Framing, chunk_frame

pytestmark = pytest.mark.integration

IDLE_HEADER = "X-Zeroserve-Stream-Idle-Timeout"


@pytest.fixture(scope="module")
def streamer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A broker, a gateway and one streamer worker with room for a few streams at once."""
    cluster = Cluster(tmp_path_factory.mktemp("stream-rest"))
    try:
        cluster.broker()
        cluster.gateway()
        cluster.test_worker("Streamer", "--slots", "4")
        cluster.wait_ready(1)
        yield cluster
    finally:
        cluster.stop()


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event name, data) of each server-sent event, as it arrives."""
    event, data = "message", None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            data = json.loads(line[len("data: "):])
        elif line == "" and data is not None:
            yield event, data
            event, data = "message", None


@contextlib.contextmanager
def open_stream(cluster: Cluster, endpoint: str, body: dict, **headers: str
                ) -> Iterator[httpx.Response]:
    with httpx.stream("POST", f"{cluster.url}/streamer/{endpoint}", json=body,
                      headers=headers, timeout=15.0) as response:
        yield response


def sse(cluster: Cluster, endpoint: str, body: dict, **headers: str) -> list[tuple[str, Any]]:
    with open_stream(cluster, endpoint, body, **headers) as response:
        assert response.status_code == 200, response.read()
        return list(sse_events(response))


def wait_for_line(path: Path, text: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text().split():
            return
        time.sleep(0.02)
    found = path.read_text() if path.exists() else "nothing"
    raise AssertionError(f"{path} never said {text!r} (has {found!r})")


def test_sse_sends_every_chunk_in_order_then_done(streamer: Cluster) -> None:
    with open_stream(streamer, "count", {"n": 5}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        events = list(sse_events(response))
    assert events == [("message", i) for i in range(5)] + [("done", {"chunks": 5})]


def test_ndjson_sends_one_object_a_line_in_order(streamer: Cluster) -> None:
    with open_stream(streamer, "acount", {"n": 3}, Accept="application/x-ndjson") as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines == [{"data": {"i": i, "text": f"token{i}"}} for i in range(3)] + [
        {"done": True, "chunks": 3}]


def test_a_stream_of_no_chunks_is_just_its_end(streamer: Cluster) -> None:
    assert sse(streamer, "count", {"n": 0}) == [("done", {"chunks": 0})]


def test_the_first_chunk_arrives_while_the_generator_waits_before_its_second(
        streamer: Cluster, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with open_stream(streamer, "first_then_wait", {"gate": str(gate)}) as response:
        events = sse_events(response)
        assert next(events) == ("message", "first")
        assert not gate.exists()
        gate.touch()  # only now may the generator yield its second chunk
        assert list(events) == [("message", "second"), ("done", {"chunks": 2})]


def test_an_error_after_chunks_is_an_error_event(streamer: Cluster) -> None:
    events = sse(streamer, "fails_after", {"n": 2})
    assert events[:2] == [("message", 0), ("message", 1)]
    assert len(events) == 3 and events[2][0] == "error"
    assert events[2][1]["status"] == 500 and "failed after 2 chunks" in events[2][1]["error"]


def test_an_error_before_the_first_chunk_is_an_http_status(streamer: Cluster) -> None:
    status, body, headers = streamer.post("/streamer/fails_first", {"why": "no start"})
    assert status == 500 and "no start" in body["error"]
    assert headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("body", [{"n": "five"}, {}, {"n": 1, "extra": 2}])
def test_bad_inputs_are_answered_400_before_streaming(streamer: Cluster, body: dict) -> None:
    status, answer, _ = streamer.post("/streamer/count", body)
    assert status == 400 and answer["error"]


def test_a_chunk_that_cannot_be_encoded_ends_with_an_error_event_naming_its_type(
        streamer: Cluster) -> None:
    events = sse(streamer, "bad_chunk", {}, Accept="text/event-stream")
    assert events[0] == ("message", 1)
    assert events[1][0] == "error" and "object" in events[1][1]["error"]
    assert len(events) == 2


def test_a_client_that_goes_away_closes_the_generator(streamer: Cluster,
                                                      tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with open_stream(streamer, "count", {"n": 10_000, "delay_s": 0.02,
                                         "marker": str(marker)}) as response:
        events = sse_events(response)
        assert [next(events), next(events)] == [("message", 0), ("message", 1)]
    wait_for_line(marker, "closed")
    assert marker.read_text().split() == ["started", "closed"]


def test_a_client_that_goes_away_while_no_chunk_comes_closes_the_generator_at_once(
        streamer: Cluster, tmp_path: Path) -> None:
    """The gateway notices the closed connection itself (not at its next write)."""
    marker = tmp_path / "marker"
    with open_stream(streamer, "acount", {"n": 3, "delay_s": 2.0,
                                          "marker": str(marker)}) as response:
        assert next(sse_events(response))[1] == {"i": 0, "text": "token0"}
    gone = time.monotonic()
    wait_for_line(marker, "closed")
    assert time.monotonic() - gone < 1.0  # the next chunk was due 2 s after the first


def test_the_idle_header_ends_a_stream_whose_next_chunk_is_late(streamer: Cluster) -> None:
    started = time.monotonic()
    events = sse(streamer, "count", {"n": 3, "delay_s": 1.5}, **{IDLE_HEADER: "0.3"})
    assert events[0] == ("message", 0)
    assert events[1][0] == "error" and events[1][1]["status"] == 504
    assert "idle" in events[1][1]["error"] and len(events) == 2
    assert time.monotonic() - started < 1.5 + 1.2  # ended at the idle limit, not the chunk


def test_a_client_that_asks_one_answer_is_refused_before_the_stream_runs(
        streamer: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "marks"
    for accept in ("application/json", "application/msgpack"):
        status, answer, _ = streamer.post("/streamer/count", {"n": 2, "marker": str(marker)},
                                          headers={"Accept": accept})
        assert status == 400 and "streamer.count streams" in answer["error"]
    assert not marker.exists()  # the generator never started


def test_a_bad_idle_header_is_400(streamer: Cluster) -> None:
    status, answer, _ = streamer.post("/streamer/count", {"n": 1}, headers={IDLE_HEADER: "0"})
    assert status == 400 and IDLE_HEADER in answer["error"]


def test_the_listing_and_openapi_say_which_endpoints_stream(streamer: Cluster) -> None:
    _, listing = streamer.get("/v1/services")
    endpoints = listing["services"]["streamer"]["endpoints"]
    assert endpoints["count"]["streams"] is True and endpoints["ping"]["streams"] is False
    _, doc = streamer.get("/openapi.json")
    streams = doc["paths"]["/streamer/count"]["post"]["responses"]["200"]["content"]
    assert set(streams) == {"text/event-stream", "application/x-ndjson"}
    plain = doc["paths"]["/streamer/ping"]["post"]["responses"]["200"]["content"]
    assert set(plain) == {"application/json"}


def test_sdk_stream_keeps_dtypes_and_shapes_and_raises_typed_errors(streamer: Cluster) -> None:
    with zeroserve.Client(streamer.url, timeout=10.0) as client:
        chunks = list(client.stream("streamer", "arrays", n=3, size=5, dtype="float16"))
        assert [c.dtype for c in chunks] == [np.float16] * 3
        assert [c.shape for c in chunks] == [(5,)] * 3
        assert [float(c[0]) for c in chunks] == [0.0, 1.0, 2.0]
        assert list(client.stream("streamer", "acount", n=2)) == [
            {"i": 0, "text": "token0"}, {"i": 1, "text": "token1"}]
        got: list = []
        with pytest.raises(zeroserve.ServerError, match="failed after 2 chunks"):
            got.extend(client.stream("streamer", "fails_after", n=2))
        assert got == [0, 1]
        with pytest.raises(zeroserve.ServerError, match="bad start"):
            list(client.stream("streamer", "fails_first"))
        with pytest.raises(zeroserve.BadRequest):
            list(client.stream("streamer", "count", n="many"))
        with pytest.raises(zeroserve.NotFound):
            list(client.stream("streamer", "nope"))
        with pytest.raises(zeroserve.DeadlineExceeded) as idle:
            list(client.stream("streamer", "count", n=3, delay_s=1.5, idle_timeout=0.3))
        assert idle.value.from_server
        with pytest.raises(zeroserve.BadRequest, match=r"iterate client.stream"):
            client.call("streamer", "count", n=1)


def test_sdk_leaving_a_stream_early_closes_the_generator(streamer: Cluster,
                                                         tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with zeroserve.Client(streamer.url) as client:
        for value in client.stream("streamer", "count", n=10_000, delay_s=0.02,
                                   marker=str(marker)):
            if value == 2:
                break
    wait_for_line(marker, "closed")


def test_async_sdk_stream_keeps_dtypes_and_raises_typed_errors(streamer: Cluster,
                                                               tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    async def main() -> None:
        async with zeroserve.AsyncClient(streamer.url, timeout=10.0) as client:
            chunks = [c async for c in client.stream("streamer", "arrays", n=2, size=3,
                                                     dtype="int8")]
            assert [(c.dtype, c.shape) for c in chunks] == [(np.int8, (3,))] * 2
            got: list = []
            with pytest.raises(zeroserve.ServerError, match="failed after 1 chunks"):
                async for value in client.stream("streamer", "fails_after", n=1):
                    got.append(value)
            assert got == [0]
            with pytest.raises(zeroserve.DeadlineExceeded):
                async for _ in client.stream("streamer", "acount", n=3, delay_s=1.5,
                                             idle_timeout=0.3):
                    pass
            async with contextlib.aclosing(client.stream(
                    "streamer", "acount", n=10_000, delay_s=0.02, marker=str(marker))) as it:
                async for value in it:
                    if value["i"] == 1:
                        break

    asyncio.run(main())
    wait_for_line(marker, "closed")


def test_a_worker_lost_mid_stream_ends_it_with_an_error_event(cluster: Cluster) -> None:
    cluster.broker()
    cluster.gateway()
    cluster.test_worker("Streamer")
    cluster.wait_ready(1)
    events = sse(cluster, "exits_after", {"n": 2})
    assert events[:2] == [("message", 0), ("message", 1)]
    assert events[2][0] == "error" and events[2][1]["status"] == 500
    assert "mid-stream" in events[2][1]["error"] and len(events) == 3


@contextlib.contextmanager
def stalled_gateway(first_chunk: bool) -> Iterator[str]:
    """A server that takes one request and answers a stream's headers and first chunk (or
    nothing, with ``first_chunk`` False), then stalls until the client goes away."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            if first_chunk:
                frame = chunk_frame(Framing.MSGPACK, "first")
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: " + Framing.MSGPACK.value.encode()
                             + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + b"%x\r\n" % len(frame) + frame + b"\r\n")
            conn.settimeout(10.0)
            with contextlib.suppress(OSError):
                while conn.recv(65536):  # the rest of the request, then until the client closes
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()
        thread.join(10.0)


def test_sdk_bounds_the_wait_for_the_next_chunk_on_its_own() -> None:
    with stalled_gateway(first_chunk=True) as url, zeroserve.Client(url) as client:
        chunks = client.stream("s", "e", idle_timeout=0.2)
        assert next(chunks) == "first"
        started = time.monotonic()
        with pytest.raises(zeroserve.DeadlineExceeded) as late:
            next(chunks)
        assert not late.value.from_server and 0.2 < time.monotonic() - started < 3.0


def test_sdk_bounds_the_wait_for_the_first_chunk_on_its_own() -> None:
    async def main() -> None:
        async with zeroserve.AsyncClient(url, retry=False) as client:
            with pytest.raises(zeroserve.DeadlineExceeded) as late:
                await anext(client.stream("s", "e", timeout=0.3))
            assert not late.value.from_server

    with stalled_gateway(first_chunk=False) as url:
        started = time.monotonic()
        asyncio.run(main())
        assert time.monotonic() - started < 4.0
