"""Random and mutated multipart messages at the broker's frontend, backend and job sink.

No daemon may exit, the broker's memory must stay flat, and valid traffic must
keep succeeding while the garbage flows.
"""
from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from cluster import Cluster, free_port

import zeroserve
from zeroserve.wire.backend import Ready, Result, ResultItem, disconnect, heartbeat
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import Control, ControlOp, Request
from zeroserve.wire.jobs import EventKind, JobEvent

pytestmark = pytest.mark.integration

MESSAGES = 120_000  # in all, spread over the three sockets
ROUNDS = 3
CHUNK = 3_000  # messages sent before waiting for the broker to catch up
ROW = np.zeros((1, 64), np.float32)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _valid_messages() -> list[list[bytes]]:
    """Well-formed messages of every kind, for the mutator to start from."""
    request = Request(b"\x00" * 8, "fuzzsvc", "run", 1000, b"\x81\xa1x\x90", [b"raw"], 1, b"")
    ready = Ready("fuzz-worker", "fuzzsvc", {"run": EndpointDescription("fuzzsvc", "run")}, 2)
    result = Result(7, 0.001, [ResultItem(b"\x00" * 8, Status.OK, [b"\x80"])])
    event = JobEvent("job-1", 1, "fuzz-worker", EventKind.PROGRESS, progress=0.5)
    frames = [request.to_frames(), Control(b"c", ControlOp.PING, {}).to_frames(),
              ready.to_frames(), heartbeat(), disconnect(), result.to_frames(),
              event.to_frames()]
    return [[bytes(f) for f in message] for message in frames]


def _garbage(rng: random.Random, seeds: list[list[bytes]]) -> Iterator[list[bytes]]:
    while True:
        roll = rng.random()
        if roll < 0.3:  # random frames
            yield [rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.randrange(1, 9))]
            continue
        message = [bytearray(f) for f in rng.choice(seeds)]
        for _ in range(rng.randrange(1, 4)):
            op = rng.random()
            index = rng.randrange(len(message))
            if op < 0.4 and message[index]:  # flip a byte
                message[index][rng.randrange(len(message[index]))] = rng.randrange(256)
            elif op < 0.6:  # truncate a frame
                del message[index][rng.randrange(len(message[index]) + 1):]
            elif op < 0.75 and len(message) > 1:  # drop a frame
                del message[index]
            elif op < 0.9:  # duplicate a frame
                message.insert(index, bytearray(message[index]))
            else:  # replace a frame with random bytes
                message[index] = bytearray(rng.randbytes(rng.randrange(0, 64)))
        yield [bytes(f) for f in message] or [b""]


def test_broker_survives_garbage_on_every_socket(cluster: Cluster, tmp_path: Path) -> None:
    cluster.broker()
    cluster.gateway()
    cluster.worker()
    cluster.wait_ready(1)
    broker = cluster.daemons[0]
    context = zmq.Context()
    sockets: list[zmq.Socket] = []

    def open_socket(kind: int, address: str, bind: bool = False) -> zmq.Socket:
        sock = context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        (sock.bind if bind else sock.connect)(address)
        sockets.append(sock)
        return sock

    try:
        frontend = open_socket(zmq.DEALER, f"tcp://127.0.0.1:{cluster.frontend_port}")
        backend = open_socket(zmq.DEALER, f"tcp://127.0.0.1:{cluster.backend_port}")
        # a fake job lane, so that the broker connects its sink to our PUSH
        lane_pull, lane_push = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        open_socket(zmq.PULL, lane_pull, bind=True)
        sink = open_socket(zmq.PUSH, lane_push, bind=True)
        lane = open_socket(zmq.DEALER, f"tcp://127.0.0.1:{cluster.backend_port}")
        lane.send_multipart(Ready(
            "fuzz-lane", "fuzzlane", {"noop": EndpointDescription("fuzzlane", "noop")}, 1,
            jobs={"slots": 1, "pull": lane_pull, "push": lane_push, "tasks": {}}).to_frames())

        assert sink.poll(5000, zmq.POLLOUT), "the broker never connected its job sink"
        client = zeroserve.Client(cluster.url, timeout=20.0)
        assert client.call("mlp", "predict", x=ROW).shape == (1, 10)
        rng = random.Random(1234)
        garbage = _garbage(rng, _valid_messages())
        targets = [frontend, backend, sink]
        sent = ok_calls = blocked = pings = 0

        def catch_up() -> None:
            """Wait until the broker has read what the frontend sent before a PING (one peer's
            messages are read in order, and it drains the other sockets as it goes), so that
            a backlog in ZeroMQ's queues, which would depend on the machine's load, never
            grows past a chunk and memory measures the broker alone."""
            nonlocal pings
            pings += 1
            ping_id = b"catch-up-%d" % pings
            frontend.send_multipart(Control(ping_id, ControlOp.PING, {}).to_frames())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if frontend.poll(1000) and frontend.recv_multipart()[2:3] == [ping_id]:
                    return
            raise AssertionError("the broker stopped answering on its frontend")

        next_beat = 0.0
        rss = [_rss_kib(broker.pid)]
        for _ in range(ROUNDS):
            for _ in range(MESSAGES // ROUNDS):
                try:
                    targets[sent % 3].send_multipart(next(garbage), zmq.NOBLOCK)
                except zmq.Again:  # the fake lane was evicted: the sink has no peer now
                    blocked += 1
                sent += 1
                if sent % 1000 == 0 and time.monotonic() >= next_beat:
                    lane.send_multipart(heartbeat())  # keep the fake lane registered
                    next_beat = time.monotonic() + 0.1
                if sent % 10_000 == 0:  # valid traffic keeps succeeding meanwhile
                    assert client.call("mlp", "predict", x=ROW).shape == (1, 10)
                    ok_calls += 1
                if sent % CHUNK == 0:
                    catch_up()
            for _ in range(10):  # let the broker work through what it has queued
                lane.send_multipart(heartbeat())
                time.sleep(0.1)
            rss.append(_rss_kib(broker.pid))
        for _ in range(20):
            assert client.call("mlp", "predict", x=ROW).shape == (1, 10)
            ok_calls += 1
        for daemon in cluster.daemons:
            assert daemon.alive(), f"{daemon.name} died:\n{daemon.log()[-3000:]}"
        print(f"\nfuzz: {sent - blocked} messages, {ok_calls} valid calls ok, broker RSS (KiB) "
              f"at start and after each round: {rss}")
        assert blocked < sent // 10
        # the first round warms the broker's allocations up; after it, memory must stay flat
        assert rss[-1] - rss[1] < 8 * 1024, rss
        client.close()
    finally:
        for sock in sockets:
            sock.close(0)
        context.term()
