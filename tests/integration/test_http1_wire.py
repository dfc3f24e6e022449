"""The gateway's HTTP/1.1 on the wire, from raw sockets: keep-alive and pipelining, chunked
and gzip request bodies, ``Connection: close`` and HTTP/1.0, ``Expect: 100-continue``, HEAD,
malformed requests (400, then the connection closes; 431 for headers past 64 KiB), clients
that leave mid-body, large bodies however they arrive, a large answer to a slow reader, JSON
404s, and a streamed answer's chunked framing. What a client
relies on, not one server's bytes."""
from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from cluster import Cluster
from reference_models import mlp

pytestmark = pytest.mark.integration

TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A broker, a gateway, an mlp worker, a streamer worker and a probe worker."""
    cluster = Cluster(tmp_path_factory.mktemp("http1-wire"))
    try:
        cluster.broker()
        cluster.gateway()
        cluster.worker()
        cluster.test_worker("Streamer")
        cluster.test_worker("Probe")
        cluster.wait_ready(3)
        yield cluster
    finally:
        cluster.stop()


@dataclass
class Response:
    version: bytes
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)  # the chunks of a chunked body

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return values[-1] if values else None

    def json(self) -> object:
        return json.loads(self.body)


class Wire:
    """One raw connection: send bytes, read whole responses (several on one connection)."""

    def __init__(self, cluster: Cluster, receive_buffer: int | None = None) -> None:
        self.sock = socket.socket()
        if receive_buffer is not None:  # before connecting, so that the window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(TIMEOUT_S)
        self.sock.connect(("127.0.0.1", cluster.http_port))
        self.buffer = b""
        self.eof = False

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise EOFError("the gateway closed the connection")
        self.buffer += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def response(self, head: bool = False) -> Response:
        """The next response; ``head``: it answers a HEAD request (no body, whatever the
        headers say). A 1xx interim response is returned as it is (no body)."""
        version, status, *_ = self._line().split(b" ", 2)
        headers = []
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        response = Response(version, int(status), headers)
        if head or 100 <= response.status < 200 or response.status in (204, 304):
            return response
        if (response.header("Transfer-Encoding") or "").lower() == "chunked":
            while size := int(self._line().split(b";")[0], 16):
                response.chunks.append(self._exactly(size))
                assert self._exactly(2) == b"\r\n"
            while self._line():  # trailers
                pass
            response.body = b"".join(response.chunks)
        elif (length := response.header("Content-Length")) is not None:
            response.body = self._exactly(int(length))
        else:  # delimited by the connection's end
            try:
                while True:
                    self._fill()
            except EOFError:
                response.body, self.buffer = self.buffer, b""
        return response

    def closed(self, wait_s: float = 2.0) -> bool:
        """Whether the gateway closes the connection within ``wait_s`` (without sending
        anything more); False if it is still open then."""
        if self.eof:
            return True
        assert not self.buffer, f"unexpected bytes after the response: {self.buffer!r}"
        self.sock.settimeout(wait_s)
        try:
            self._fill()
        except EOFError:
            return True
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(TIMEOUT_S)
        raise AssertionError(f"unexpected bytes after the response: {self.buffer!r}")


def _rows(value: float) -> dict:
    return {"x": [[value] * 64]}


def _predict(body: bytes, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"POST /mlp/predict HTTP/{version}", "Host: x", "Content-Type: application/json",
             *headers]
    if not any(h.lower().startswith("transfer-encoding") for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    host = ["Host: x"] if version == "1.1" else []
    return ("\r\n".join([f"{method} {path} HTTP/{version}", *host, *headers]) +
            "\r\n\r\n").encode()


def _assert_predicted(response: Response, value: float) -> None:
    assert response.status == 200, (response.status, response.body)
    expected = mlp(np.full((1, 64), value, np.float32))
    assert np.allclose(np.asarray(response.json(), np.float32), expected, rtol=1e-5)


def _assert_healthy(response: Response) -> None:
    assert response.status == 200 and response.json() == {"status": "ok"}


def _assert_serving(cluster: Cluster) -> None:
    """A fresh connection is answered, and the gateway lives."""
    with Wire(cluster) as wire:
        wire.send(_predict(json.dumps(_rows(0.25)).encode()))
        _assert_predicted(wire.response(), 0.25)
    assert cluster.daemons[1].alive()


def test_keep_alive_answers_two_requests_on_one_connection(gateway: Cluster) -> None:
    with Wire(gateway) as wire:
        wire.send(_get("/healthz"))
        _assert_healthy(wire.response())
        wire.send(_predict(json.dumps(_rows(0.5)).encode()))
        _assert_predicted(wire.response(), 0.5)
        assert not wire.closed(0.3)


def test_pipelined_requests_are_answered_in_order(gateway: Cluster) -> None:
    with Wire(gateway) as wire:
        wire.send(_predict(json.dumps(_rows(0.1)).encode()) + _get("/healthz") +
                  _get("/no/such/path") + _predict(json.dumps(_rows(0.9)).encode()))
        _assert_predicted(wire.response(), 0.1)
        _assert_healthy(wire.response())
        assert wire.response().status == 404
        _assert_predicted(wire.response(), 0.9)
        assert not wire.closed(0.3)


def test_chunked_request_body_is_read_like_a_sized_one(gateway: Cluster) -> None:
    body = json.dumps(_rows(0.75)).encode()
    with Wire(gateway) as wire:
        wire.send(_predict(b"", "Transfer-Encoding: chunked"))
        for part in (body[:7], body[7:100], body[100:]):
            time.sleep(0.05)
            wire.send(b"%x\r\n%s\r\n" % (len(part), part))
        time.sleep(0.05)
        wire.send(b"0\r\n\r\n")
        chunked = wire.response()
        wire.send(_predict(body))
        sized = wire.response()
    _assert_predicted(chunked, 0.75)
    assert chunked.body == sized.body


def test_connection_close_is_answered_then_closed(gateway: Cluster) -> None:
    with Wire(gateway) as wire:
        wire.send(_get("/healthz", "Connection: close"))
        response = wire.response()
        _assert_healthy(response)
        assert (response.header("Connection") or "").lower() == "close"
        assert wire.closed()


def test_http10_without_keep_alive_is_answered_then_closed(gateway: Cluster) -> None:
    with Wire(gateway) as wire:
        wire.send(_get("/healthz", version="1.0"))
        _assert_healthy(wire.response())
        assert wire.closed()


def test_http10_keep_alive_keeps_the_connection(gateway: Cluster) -> None:
    with Wire(gateway) as wire:
        wire.send(_get("/healthz", "Connection: keep-alive", version="1.0"))
        response = wire.response()
        _assert_healthy(response)
        assert response.header("Content-Length") is not None
        assert (response.header("Connection") or "").lower() == "keep-alive"
        assert not wire.closed(0.3)
        wire.send(_predict(json.dumps(_rows(0.5)).encode(), "Connection: keep-alive",
                           version="1.0"))
        _assert_predicted(wire.response(), 0.5)


def test_expect_100_continue_gets_an_interim_response_before_the_body(
        gateway: Cluster) -> None:
    body = json.dumps(_rows(0.5)).encode()
    request = _predict(body, "Expect: 100-continue")
    with Wire(gateway) as wire:
        wire.send(request[:-len(body)])
        interim = wire.response()
        assert (interim.version, interim.status) == (b"HTTP/1.1", 100)
        assert not wire.buffer
        wire.send(body)
        _assert_predicted(wire.response(), 0.5)
        assert not wire.closed(0.3)


def test_gzip_request_body_is_accepted_like_a_plain_one(gateway: Cluster) -> None:
    body = json.dumps(_rows(0.3)).encode()
    with Wire(gateway) as wire:
        wire.send(_predict(gzip.compress(body), "Content-Encoding: gzip"))
        zipped = wire.response()
        wire.send(_predict(body))
        plain = wire.response()
    _assert_predicted(zipped, 0.3)
    assert zipped.body == plain.body


@pytest.mark.parametrize("request_bytes", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"POST /mlp/predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /mlp/predict HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    b"POST /mlp/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /mlp/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
], ids=["start-line", "content-length-abc", "content-length-negative", "header-no-colon",
        "chunk-size", "length-and-chunked"])
def test_malformed_request_gets_400_then_the_connection_closes(
        gateway: Cluster, request_bytes: bytes) -> None:
    with Wire(gateway) as wire:
        wire.send(request_bytes)
        assert wire.response().status == 400
        assert wire.closed()
    _assert_serving(gateway)


def test_a_malformed_request_pipelined_behind_a_good_one_waits_for_its_answer(
        gateway: Cluster) -> None:
    with Wire(gateway) as wire:
        wire.send(_predict(json.dumps(_rows(0.3)).encode()) + b"NOT HTTP AT ALL\r\n\r\n")
        _assert_predicted(wire.response(), 0.3)
        assert wire.response().status == 400
        assert wire.closed()


def test_headers_past_64_kib_get_431_then_the_connection_closes(gateway: Cluster) -> None:
    with Wire(gateway) as wire:
        wire.send(_get("/healthz", *(f"X-Filler-{i}: {'a' * 1000}" for i in range(70))))
        assert wire.response().status == 431
        assert wire.closed()
    _assert_serving(gateway)


def test_head_has_headers_and_no_body_and_the_next_request_parses(gateway: Cluster) -> None:
    with Wire(gateway) as wire:
        wire.send(_get("/healthz", method="HEAD") + _get("/healthz"))
        head = wire.response(head=True)
        assert head.status in (200, 405)  # 405 today: /healthz serves GET only
        assert head.header("Content-Type") is not None
        _assert_healthy(wire.response())  # a body sent for HEAD would break this parse
        assert not wire.closed(0.3)


@pytest.mark.parametrize("declared", [1000, 8 << 20], ids=["small", "read-into-one-buffer"])
@pytest.mark.parametrize("sent", [b"", b'{"x": [[0.5'], ids=["headers-only", "part-body"])
def test_client_leaving_mid_body_leaves_the_gateway_serving(
        gateway: Cluster, sent: bytes, declared: int) -> None:
    for _ in range(3):
        with Wire(gateway) as wire:
            wire.send(b"POST /mlp/predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"application/json\r\nContent-Length: %d\r\n\r\n" % declared + sent)
            time.sleep(0.05)
    _assert_serving(gateway)
    assert "Traceback" not in gateway.daemons[1].log()


def _large_double(rows: int, *headers: str) -> tuple[bytes, bytes]:
    """A request of about ``rows`` × 21 bytes for probe.double, split before its body."""
    body = json.dumps({"x": [[0.25] * 4] * rows}, separators=(",", ":")).encode()
    head = "\r\n".join(["POST /probe/double HTTP/1.1", "Host: x",
                         "Content-Type: application/json", f"Content-Length: {len(body)}",
                         *headers]) + "\r\n\r\n"
    return head.encode(), body


def _assert_doubled(response: Response, rows: int) -> None:
    assert response.status == 200, response.body[:200]
    assert np.array_equal(np.asarray(response.json(), np.float32),
                          np.full((rows, 4), 0.5, np.float32))


def test_large_body_sent_in_pieces_is_read_whole_and_the_next_request_parses(
        gateway: Cluster) -> None:
    rows = 100_000  # a 2 MB body: read straight into one buffer, however it arrives
    head, body = _large_double(rows)
    with Wire(gateway) as wire:
        wire.send(head + body[:1000])
        for start in range(1000, len(body), 300_000):
            time.sleep(0.02)
            wire.send(body[start:start + 300_000])
        wire.send(_predict(json.dumps(_rows(0.5)).encode()) + _get("/healthz"))
        _assert_doubled(wire.response(), rows)
        _assert_predicted(wire.response(), 0.5)
        _assert_healthy(wire.response())
        assert not wire.closed(0.3)


def test_large_body_and_the_next_request_in_one_send_are_both_answered(
        gateway: Cluster) -> None:
    rows = 60_000
    head, body = _large_double(rows)
    with Wire(gateway) as wire:
        wire.send(head + body + _get("/healthz") + head + body)
        _assert_doubled(wire.response(), rows)
        _assert_healthy(wire.response())
        _assert_doubled(wire.response(), rows)


def test_large_body_after_100_continue_is_read_whole(gateway: Cluster) -> None:
    rows = 60_000
    head, body = _large_double(rows, "Expect: 100-continue")
    with Wire(gateway) as wire:
        wire.send(head)
        interim = wire.response()
        assert (interim.version, interim.status) == (b"HTTP/1.1", 100)
        wire.send(body)
        _assert_doubled(wire.response(), rows)


def test_unknown_path_is_a_json_404_on_a_kept_connection(gateway: Cluster) -> None:
    with Wire(gateway) as wire:
        wire.send(_get("/no/such/path"))
        response = wire.response()
        assert response.status == 404
        assert "json" in (response.header("Content-Type") or "")
        assert "error" in response.json()
        wire.send(_get("/healthz"))
        _assert_healthy(wire.response())


def _sse_events(body: bytes) -> list[tuple[str, object]]:
    events = []
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


STREAM_BODY = b'{"n": 3}'
STREAM_EVENTS = [("message", 0), ("message", 1), ("message", 2), ("done", {"chunks": 3})]


def _stream(version: str) -> bytes:
    return (f"POST /streamer/count HTTP/{version}\r\nHost: x\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(STREAM_BODY)}\r\n\r\n").encode() + \
        STREAM_BODY


def test_large_answer_to_a_slow_reader_comes_whole_and_the_next_request_parses(
        gateway: Cluster) -> None:
    rows = 400_000  # about 7 MB of JSON each way, more than the kernel buffers: the gateway
    # hands the answer over in slices as the socket drains
    head, body = _large_double(rows)
    with Wire(gateway, receive_buffer=16384) as wire:
        wire.send(head + body + _get("/healthz"))  # pipelined behind the large answer
        time.sleep(1.0)  # the gateway's socket fills while nobody reads
        response = wire.response()
        assert int(response.header("Content-Length") or 0) == len(response.body)
        _assert_doubled(response, rows)
        _assert_healthy(wire.response())
        assert not wire.closed(0.3)


def test_streamed_answer_is_chunked_on_http11_and_the_connection_is_kept(
        gateway: Cluster) -> None:
    with Wire(gateway) as wire:
        wire.send(_stream("1.1") + _get("/healthz"))  # pipelined behind the stream
        response = wire.response()
        assert response.status == 200
        assert (response.header("Content-Type") or "").startswith("text/event-stream")
        assert (response.header("Transfer-Encoding") or "").lower() == "chunked"
        assert response.header("Content-Length") is None
        assert _sse_events(response.body) == STREAM_EVENTS
        _assert_healthy(wire.response())
        assert not wire.closed(0.3)


def test_streamed_answer_on_http10_ends_with_the_connection(gateway: Cluster) -> None:
    with Wire(gateway) as wire:
        wire.send(_stream("1.0"))
        response = wire.response()
        assert response.status == 200
        assert response.header("Transfer-Encoding") is None
        assert _sse_events(response.body) == STREAM_EVENTS
        assert wire.closed()
