"""1,000 streams whose readers never read: the windows hold every worker's generator back,
so the gateway's and the broker's memory stays flat, and closing the connections cancels
every stream. The chunks are 16 KiB, so that the kernel's socket buffers of a connection
that is not read fill after a few of them. Run with ``-s`` to see the figures."""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

STREAMS = 1000


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _streams_figures(cluster) -> dict:
    return cluster.stats()["endpoints"]["streamer.blobs"]["streams"]


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_thousand_readers_that_never_read_leave_memory_flat(cluster) -> None:
    env = {"ZEROSERVE_STREAM_IDLE_TIMEOUT_S": "120", "ZEROSERVE_STREAM_WINDOW_CHUNKS": "4"}
    # the default liveness (3 s), not the tests' 0.6 s: a worker running 1,000 streams on a
    # loaded machine was once evicted, which ends its streams as lost, not cancelled
    cluster.env["ZEROSERVE_HEARTBEAT_INTERVAL_S"] = "1.0"
    cluster.broker()
    cluster.gateway(env=env)
    cluster.test_worker("Streamer", "--slots", str(STREAMS + 100), env=env)
    cluster.wait_ready(1)
    body = json.dumps({"n": 10**9}).encode()
    request = (f"POST /streamer/blobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
               f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    readers = []
    try:
        for _ in range(STREAMS):
            s = socket.create_connection(("127.0.0.1", cluster.http_port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(request)
            readers.append(s)  # and never read
        _wait(lambda: _streams_figures(cluster)["active"] >= STREAMS, 60, "every stream")
        gateway = next(d for d in cluster.daemons if d.name == "gateway").proc.pid
        broker = next(d for d in cluster.daemons if d.name == "broker").proc.pid
        started_mb = _rss_mb(gateway)
        # the kernel's socket buffers of the unread connections fill first (a few seconds,
        # more on a loaded machine), then the windows: after that no chunk moves at all
        sent = [_streams_figures(cluster)["chunks"]]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(sent) < 4 or sent[-1] != sent[-4]):
            time.sleep(1.0)
            sent.append(_streams_figures(cluster)["chunks"])
        assert len(sent) >= 4 and sent[-1] == sent[-4], f"chunks never stopped: {sent}"
        first = (_rss_mb(gateway), _rss_mb(broker), _streams_figures(cluster)["chunks"])
        time.sleep(5.0)
        second = (_rss_mb(gateway), _rss_mb(broker), _streams_figures(cluster)["chunks"])
        print(f"\n{STREAMS} unread streams: held back after {len(sent) - 1} s at "
              f"{first[2]} chunks; gateway RSS {started_mb:.1f} -> {first[0]:.1f} -> "
              f"{second[0]:.1f} MB, broker RSS {first[1]:.1f} -> {second[1]:.1f} MB")
        assert second[2] == first[2]  # every generator is held back by its window
        assert second[0] - first[0] < 5 and second[1] - first[1] < 5
        # what the gateway holds is bounded by the windows: 4 chunks of 16 KiB a stream
        assert first[0] - started_mb < STREAMS * 4 * 16 / 1024 * 2
    finally:
        for s in readers:
            s.close()
    _wait(lambda: _streams_figures(cluster)["active"] == 0, 30, "every stream to be cancelled")
    figures = _streams_figures(cluster)
    print(f"after closing: {figures['cancelled']} streams cancelled, {figures['active']} active,"
          f" {figures['lost_mid_stream']} lost")
    assert figures["cancelled"] >= STREAMS
    assert all(d.alive() for d in cluster.daemons)
