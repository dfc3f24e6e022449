"""Streams through a real broker and worker, read by a raw DEALER on the broker's frontend
(what a gateway does): chunk order, the window that holds the generator back while the
reader gives no credit, cancellation that closes the generator, and a worker lost
mid-stream. The front ends' framings have their own tests."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from zeroserve.wire import codec
from zeroserve.wire.envelope import Command, Status, split_command
from zeroserve.wire.frontend import Request, parse_reply
from zeroserve.wire.stream import Cancel, Credit, parse_chunks

pytestmark = pytest.mark.integration

WINDOW = 4


class Reader:
    """A DEALER on the broker's frontend that starts streams and reads their messages."""

    def __init__(self, port: int) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.ids = 0
        self.arrived: list = []  # chunks of a CHUNK message not yet handed out

    def start(self, endpoint: str, timeout_s: float = 10.0, **inputs: object) -> bytes:
        self.ids += 1
        request_id = self.ids.to_bytes(8, "big")
        meta, frames = codec.encode(inputs)
        self.sock.send_multipart(Request(request_id, "streamer", endpoint,
                                         int(timeout_s * 1000), meta, frames).to_frames())
        return request_id

    def next(self, timeout_s: float = 10.0) -> tuple[str, object]:
        """("chunk", (seq, value)) or ("end", (status, meta)); raises TimeoutError."""
        if self.arrived:
            return self.arrived.pop(0)
        if not self.sock.poll(int(timeout_s * 1000)):
            raise TimeoutError("nothing from the broker")
        command, rest = split_command(self.sock.recv_multipart())
        if command is Command.CHUNK:
            self.arrived = [("chunk", (c.seq, codec.decode(c.frames[0], c.frames[1:])))
                            for c in parse_chunks(rest).chunks()]
            return self.arrived.pop(0)
        reply = parse_reply(rest)
        return "end", (reply.status, msgpack.unpackb(reply.meta))

    def quiet(self, seconds: float) -> bool:
        return not self.arrived and not self.sock.poll(int(seconds * 1000))

    def send(self, frames: list) -> None:
        self.sock.send_multipart(frames)

    def close(self) -> None:
        self.sock.close()
        self.context.term()


@pytest.fixture
def streams(cluster):
    env = {"ZEROSERVE_STREAM_WINDOW_CHUNKS": str(WINDOW),
           "ZEROSERVE_STREAM_IDLE_TIMEOUT_S": "3"}
    cluster.broker()
    cluster.gateway()
    cluster.test_worker("Streamer", env=env)
    cluster.wait_ready(1)
    reader = Reader(cluster.frontend_port)
    try:
        yield cluster, reader
    finally:
        reader.close()


def _marks(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _wait_marks(path: Path, expected: list[str], timeout_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _marks(path) != expected:
        time.sleep(0.02)
    return _marks(path)


def test_chunks_arrive_in_order_and_the_stream_ends_ok(streams) -> None:
    _, reader = streams
    reader.start("count", n=3)
    events = [reader.next() for _ in range(4)]
    assert events[:3] == [("chunk", (0, 0)), ("chunk", (1, 1)), ("chunk", (2, 2))]
    assert events[3] == ("end", (Status.OK, {"chunks": 3}))


def test_the_window_holds_the_generator_until_the_reader_gives_credit(streams) -> None:
    _, reader = streams
    request_id = reader.start("count", n=10)
    seen = [reader.next() for _ in range(WINDOW)]
    assert [kind for kind, _ in seen] == ["chunk"] * WINDOW
    assert reader.quiet(0.5)  # the window is full: the generator is not advanced
    reader.send(Credit(request_id, 2, 0).to_frames())
    assert [reader.next()[1] for _ in range(2)] == [(WINDOW, WINDOW), (WINDOW + 1, WINDOW + 1)]
    assert reader.quiet(0.3)
    reader.send(Credit(request_id, 100, 1 << 30).to_frames())
    rest = [reader.next() for _ in range(WINDOW)]
    assert [value for _, value in rest] == [(i, i) for i in range(WINDOW + 2, 10)]
    # the end is known only by advancing the generator once more: it waits for credit too
    assert reader.quiet(0.3)
    reader.send(Credit(request_id, WINDOW, 0).to_frames())
    assert reader.next() == ("end", (Status.OK, {"chunks": 10}))


def test_a_reader_that_never_credits_loses_its_stream_and_the_slot_frees(streams) -> None:
    _, reader = streams
    reader.start("count", n=100)
    for _ in range(WINDOW):
        reader.next()
    time.sleep(3.5)  # past the worker's idle limit, waiting for credit
    reader.start("count", n=1)  # the slot is free again
    events = [reader.next() for _ in range(2)]
    assert ("chunk", (0, 0)) in events


@pytest.mark.parametrize("endpoint", ["count", "acount"])
def test_cancel_closes_the_generator(streams, tmp_path: Path, endpoint: str) -> None:
    _, reader = streams
    marker = tmp_path / f"{endpoint}.marks"
    request_id = reader.start(endpoint, n=1000, delay_s=0.05, marker=str(marker))
    assert reader.next()[0] == "chunk"
    cancelled = time.monotonic()
    reader.send(Cancel(request_id).to_frames())
    assert _wait_marks(marker, ["started", "closed"]) == ["started", "closed"]
    if endpoint == "acount":  # an async generator is interrupted where it awaits
        assert time.monotonic() - cancelled < 1.0
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # chunks already in flight may still come
        try:
            kind, _ = reader.next(0.2)
        except TimeoutError:
            break
        assert kind == "chunk"  # never an answer: the caller is gone


def test_an_error_after_chunks_ends_the_stream_with_it(streams) -> None:
    _, reader = streams
    reader.start("fails_after", n=2)
    events = [reader.next() for _ in range(3)]
    assert events[2][0] == "end"
    status, meta = events[2][1]
    assert status is Status.USER_ERROR and "failed after 2 chunks" in meta["error"]


def test_a_chunk_that_cannot_be_encoded_ends_the_stream_naming_its_type(streams) -> None:
    _, reader = streams
    reader.start("bad_chunk")
    assert reader.next() == ("chunk", (0, 1))
    kind, (status, meta) = reader.next()
    assert kind == "end" and status is Status.USER_ERROR and "object" in meta["error"]


def test_a_worker_lost_mid_stream_ends_it_with_an_error(streams) -> None:
    cluster, reader = streams
    reader.start("exits_after", n=2)
    assert [reader.next()[0] for _ in range(2)] == ["chunk", "chunk"]
    kind, (status, meta) = reader.next(timeout_s=10)
    assert kind == "end" and status is Status.INTERNAL
    assert "lost mid-stream after 2 chunks" in meta["error"]
    worker = next(d for d in cluster.daemons if d.name == "worker")
    worker.proc.wait(timeout=5)
    worker.stopped = True


def test_a_stream_past_its_first_deadline_is_answered_504(streams, tmp_path: Path) -> None:
    _, reader = streams
    marker = tmp_path / "slow.marks"
    reader.start("count", timeout_s=0.3, n=2, delay_s=1.0, marker=str(marker))
    kind, (status, _) = reader.next()
    assert kind == "end" and status is Status.DEADLINE_EXCEEDED
    assert _wait_marks(marker, ["started", "closed"]) == ["started", "closed"]


def test_streams_count_in_the_broker_stats(streams) -> None:
    cluster, reader = streams
    reader.start("count", n=3)
    for _ in range(4):
        reader.next()
    figures = cluster.stats()["endpoints"]["streamer.count"]["streams"]
    assert figures["started"] == 1 and figures["chunks"] == 3 and figures["active"] == 0


def test_worker_sigterm_waits_for_a_running_stream(streams) -> None:
    cluster, reader = streams
    reader.start("count", n=5, delay_s=0.1)
    assert reader.next()[0] == "chunk"
    worker = next(d for d in cluster.daemons if d.name == "worker")
    os.kill(worker.proc.pid, signal.SIGTERM)
    request_id = reader.ids.to_bytes(8, "big")
    events = []
    while not events or events[-1][0] != "end":
        kind, value = reader.next()
        if kind == "chunk":
            reader.send(Credit(request_id, 1, 0).to_frames())
        events.append((kind, value))
    assert events[-1] == ("end", (Status.OK, {"chunks": 5}))
