"""Connections that try to outlast or outnumber the gateway: slowloris headers, bodies that
never end, idle keep-alives, more connections than gateway.max_connections, more than the
gateway's file descriptor limit. Each is closed (or waits) as the settings say, while the
connections that behave keep being served."""
from __future__ import annotations

import http.client
import os
import re
import resource
import select
import socket
import time

import pytest
from cluster import Cluster

pytestmark = pytest.mark.integration

HEADER_S, IDLE_S, BODY_S = 1.0, 3.0, 1.5
MARGIN_S = 2.0


def _connect(cluster: Cluster) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", cluster.http_port), timeout=5)
    sock.setblocking(False)
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the gateway has closed ``sock`` (reads EOF or a reset; answers are skipped)."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def _hold(socks: list[socket.socket], trickle: bytes | None, every_s: float,
          limit_s: float) -> dict[socket.socket, float]:
    """Keep sending ``trickle`` on every socket every ``every_s`` until the gateway closes
    them or ``limit_s`` passes; seconds from now to each socket's closing."""
    start = time.monotonic()
    closed: dict[socket.socket, float] = {}
    next_send = start + every_s
    while len(closed) < len(socks) and time.monotonic() - start < limit_s:
        open_socks = [s for s in socks if s not in closed]
        select.select(open_socks, [], [], 0.1)
        now = time.monotonic()
        for sock in open_socks:
            if _closed_by_peer(sock):
                closed[sock] = now - start
        if trickle is not None and now >= next_send:
            next_send = now + every_s
            for sock in socks:
                if sock not in closed:
                    try:
                        sock.send(trickle)
                    except OSError:
                        closed[sock] = now - start
    return closed


def _healthz(cluster: Cluster, conn: http.client.HTTPConnection | None = None) -> int:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        if own:
            conn.close()


def _limited_gateway(cluster: Cluster, **settings: object) -> Cluster:
    env = {f"ZEROSERVE_GATEWAY_{k.upper()}": str(v) for k, v in settings.items()}
    cluster.broker()
    cluster.gateway(env=env)
    cluster.wait_http()
    return cluster


def test_slow_headers_bodies_and_idle_connections_are_closed_within_their_timeouts(
        cluster: Cluster) -> None:
    _limited_gateway(cluster, header_timeout_s=HEADER_S, idle_timeout_s=IDLE_S,
                     body_timeout_s=BODY_S)
    kept = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=5)
    assert _healthz(cluster, kept) == 200

    # 500 slowloris connections: a header line every 0.4 s, forever
    loris = [_connect(cluster) for _ in range(500)]
    for sock in loris:
        sock.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    closed = _hold(loris, b"X-Slow: 1\r\n", 0.4, HEADER_S + MARGIN_S + 5)
    assert len(closed) == 500, f"{500 - len(closed)} slowloris connections still open"
    slowest = max(closed.values())
    assert slowest < HEADER_S + MARGIN_S, slowest
    print(f"slowloris: 500 of 500 closed, the last after {slowest:.2f} s")

    # a body that announces 200 MB and sends 5 bytes; a chunked body that never ends
    short = _connect(cluster)
    short.send(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 200000000\r\n\r\n{\"a\":")
    endless = _connect(cluster)
    endless.send(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    closed = _hold([short, endless], b"1\r\n \r\n", 0.3, BODY_S + MARGIN_S + 5)
    assert set(closed) == {short, endless}
    assert max(closed.values()) < BODY_S + MARGIN_S, closed
    print(f"bodies: short closed after {closed[short]:.2f} s, endless after "
          f"{closed[endless]:.2f} s")

    # an idle keep-alive connection: closed after the idle timeout, not the header timeout
    idle = _connect(cluster)
    idle.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    closed = _hold([idle], None, 1.0, IDLE_S + MARGIN_S + 5)
    assert idle in closed and HEADER_S + 0.5 < closed[idle] < IDLE_S + MARGIN_S, closed
    print(f"idle: closed after {closed[idle]:.2f} s")
    for sock in [*loris, short, endless, idle]:
        sock.close()
    assert _healthz(cluster) == 200
    log = cluster.daemons[1].log()
    header_lines = log.count("whose headers took over")
    print(f"log: {header_lines} header-timeout lines, {len(log.splitlines())} lines in all")
    assert "Traceback" not in log and 1 <= header_lines <= 2, log[-3000:]


def test_past_max_connections_a_new_connection_is_closed_at_once(cluster: Cluster) -> None:
    _limited_gateway(cluster, max_connections=20)
    kept = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=5)
    assert _healthz(cluster, kept) == 200
    held = [_connect(cluster) for _ in range(19)]
    time.sleep(0.5)  # all accepted
    extra = [_connect(cluster) for _ in range(5)]
    closed = _hold(extra, None, 1.0, 2.0)
    assert len(closed) == 5 and max(closed.values()) < 0.5, closed
    print(f"past the limit: 5 of 5 closed after at most {max(closed.values()):.3f} s")
    assert not any(_closed_by_peer(s) for s in held)
    assert _healthz(cluster, kept) == 200
    for sock in held:
        sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if _healthz(cluster) == 200:
                break
        except OSError:
            time.sleep(0.1)
    else:
        pytest.fail("no new connection was served after the held ones closed")
    log = cluster.daemons[1].log()
    assert len(re.findall("closed at once", log)) == 1, log[-2000:]


def test_out_of_file_descriptors_the_gateway_pauses_accepting_and_recovers(
        cluster: Cluster) -> None:
    _limited_gateway(cluster)
    gateway = cluster.daemons[1]
    kept = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=5)
    assert _healthz(cluster, kept) == 200
    in_use = len(os.listdir(f"/proc/{gateway.pid}/fd"))
    limit = in_use + 10
    resource.prlimit(gateway.pid, resource.RLIMIT_NOFILE, (limit, limit))
    idle = [socket.create_connection(("127.0.0.1", cluster.http_port), timeout=5)
            for _ in range(60)]  # the kernel's backlog completes them; the gateway cannot
    time.sleep(3.0)
    assert _healthz(cluster, kept) == 200  # the connection it has is served
    log = gateway.log()
    pauses = log.count("cannot accept HTTP connections")
    tracebacks = log.count("Traceback")
    print(f"fd limit {limit} ({in_use} in use), 60 idle connections, 3 s: {pauses} log "
          f"lines, {tracebacks} tracebacks")
    assert 1 <= pauses <= 3 and tracebacks == 0, log[-3000:]
    for sock in idle:
        sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if _healthz(cluster) == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        pytest.fail("no new connection was served after the idle ones closed")
    assert gateway.alive()


def test_grpc_connections_idle_or_without_a_handshake_are_closed(cluster: Cluster) -> None:
    import grpc

    _limited_gateway(cluster, header_timeout_s=HEADER_S, idle_timeout_s=IDLE_S)
    silent = socket.create_connection(("127.0.0.1", cluster.grpc_port), timeout=5)
    silent.setblocking(False)
    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
    states: list[tuple[float, grpc.ChannelConnectivity]] = []
    start = time.monotonic()
    channel.subscribe(lambda state: states.append((time.monotonic() - start, state)),
                      try_to_connect=True)
    grpc.channel_ready_future(channel).result(timeout=5)
    closed = _hold([silent], None, 1.0, HEADER_S + MARGIN_S + 5)
    assert silent in closed and closed[silent] < HEADER_S + MARGIN_S, closed
    deadline = time.monotonic() + IDLE_S + MARGIN_S + 3
    while time.monotonic() < deadline and states[-1][1] is grpc.ChannelConnectivity.READY:
        time.sleep(0.1)
    channel.close()
    silent.close()
    idle_at = [t for t, s in states if s is grpc.ChannelConnectivity.IDLE and t > 0.5]
    print(f"gRPC: no handshake closed after {closed[silent]:.2f} s, idle channel let go after "
          f"{idle_at[0] if idle_at else float('nan'):.2f} s")
    assert idle_at and IDLE_S - 0.5 < idle_at[0] < IDLE_S + MARGIN_S, states
