"""The SDK's transports against tiny real servers on 127.0.0.1: the call's timeout bounds the
whole call (a server that trickles its answer), a call is sent at most once (a server that
drops the connection after reading it), and ``https://`` and ``grpcs://`` speak TLS."""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

import zeroserve
from zeroserve.client import payloads
from zeroserve.client.operations import GATEWAY_504_GRACE_S
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


class SocketServer:
    """Accepts connections on a free port of 127.0.0.1 in a thread; reads each request (head
    and Content-Length body), counts it, and lets ``answer`` write to the connection."""

    def __init__(self, answer: Callable[[socket.socket], None],
                 tls: ssl.SSLContext | None = None) -> None:
        self.answer, self.tls = answer, tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self.request_lines: list[bytes] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5.0)
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                self.request_lines.append(self._read_request(conn))
                self.requests += 1
                self.answer(conn)
            except OSError:
                pass  # the client went away
            finally:
                conn.close()

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        """Read one request; its request line."""
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += conn.recv(65536)
        return head.split(b"\r\n", 1)[0]

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., SocketServer]]:
    servers: list[SocketServer] = []

    def start(answer: Callable[[socket.socket], None],
              tls: ssl.SSLContext | None = None) -> SocketServer:
        servers.append(SocketServer(answer, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def trickle(conn: socket.socket) -> None:
    """A 200 whose 100-byte body comes one byte every 0.2 s."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/msgpack\r\n"
                 b"Content-Length: 100\r\n\r\n")
    for _ in range(100):
        time.sleep(0.2)
        conn.sendall(b"\xc0")


def hang_up(conn: socket.socket) -> None:
    """Read the call, then close without an answer (a gateway that died mid-call)."""


def answer_ok(conn: socket.socket) -> None:
    body = payloads.encode_inputs({"ok": True})
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/msgpack\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


def test_a_trickled_answer_is_cut_at_the_calls_deadline(serve: Callable[..., SocketServer]
                                                        ) -> None:
    server = serve(trickle)
    with zeroserve.Client(f"http://127.0.0.1:{server.port}") as client:
        started = time.monotonic()
        with pytest.raises(zeroserve.DeadlineExceeded) as info:
            client.call("s", "e", timeout=1.0)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0 + GATEWAY_504_GRACE_S + 0.5, elapsed  # the deadline, the grace, slack
    assert not info.value.from_server and server.requests == 1


def test_the_async_client_cuts_a_trickled_answer_at_the_deadline(
        serve: Callable[..., SocketServer]) -> None:
    server = serve(trickle)

    async def main() -> float:
        async with zeroserve.AsyncClient(f"http://127.0.0.1:{server.port}") as client:
            started = time.monotonic()
            with pytest.raises(zeroserve.DeadlineExceeded):
                await client.call("s", "e", timeout=1.0)
            return time.monotonic() - started

    assert asyncio.run(main()) < 1.0 + GATEWAY_504_GRACE_S + 0.5


def gateway_dropping_the_first_call(server: list[SocketServer], resend: bool
                                    ) -> Callable[[socket.socket], None]:
    """A gateway whose connection breaks after reading every other call (the 1st, the 3rd...)
    and answers the others; it lists endpoint s.e with ``retry_on_worker_loss=resend``."""
    def answer(conn: socket.socket) -> None:
        line = server[0].request_lines[-1]
        if line.startswith(b"GET /v1/services"):
            body = json.dumps({"services": {"s": {"workers": 1, "endpoints": {
                "e": {"retry_on_worker_loss": resend}}}}}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        elif sum(r.startswith(b"POST ") for r in server[0].request_lines) % 2 == 1:
            hang_up(conn)
        else:
            answer_ok(conn)
    return answer


def posts(server: SocketServer) -> int:
    return sum(line.startswith(b"POST /s/e") for line in server.request_lines)


def test_a_call_whose_connection_dropped_after_sending_is_not_sent_again(
        serve: Callable[..., SocketServer]) -> None:
    holder: list[SocketServer] = []
    server = serve(gateway_dropping_the_first_call(holder, resend=False))
    holder.append(server)
    with zeroserve.Client(f"http://127.0.0.1:{server.port}", timeout=5.0) as client:
        with pytest.raises(zeroserve.CallInterrupted, match="may or may not have run") as info:
            client.call("s", "e")
    assert not info.value.from_server and posts(server) == 1

    async def main() -> None:
        async with zeroserve.AsyncClient(f"http://127.0.0.1:{server.port}") as client:
            with pytest.raises(zeroserve.CallInterrupted):
                await client.call("s", "e")

    server.request_lines.clear()
    asyncio.run(main())
    assert posts(server) == 1


def test_a_dropped_call_is_sent_again_when_its_endpoint_allows_running_twice(
        serve: Callable[..., SocketServer]) -> None:
    holder: list[SocketServer] = []
    server = serve(gateway_dropping_the_first_call(holder, resend=True))
    holder.append(server)
    with zeroserve.Client(f"http://127.0.0.1:{server.port}", timeout=5.0) as client:
        assert client.call("s", "e") == {"ok": True}
        assert [line.split()[0] for line in server.request_lines] == [b"POST", b"GET", b"POST"]
        assert client.call("s", "e") == {"ok": True}  # the declaration is known: no listing
        assert [line.split()[0] for line in server.request_lines[3:]] == [b"POST", b"POST"]

    async def main() -> None:
        async with zeroserve.AsyncClient(f"http://127.0.0.1:{server.port}") as client:
            assert await client.call("s", "e") == {"ok": True}

    asyncio.run(main())
    assert [line.split()[0] for line in server.request_lines[5:]] == [b"POST", b"GET", b"POST"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_https_calls_trust_the_given_ca_bundle(serve: Callable[..., SocketServer],
                                               certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = serve(answer_ok, tls=context)
    url = f"https://127.0.0.1:{server.port}"
    with zeroserve.Client(url, ca_file=str(cert), timeout=5.0) as client:
        assert client.call("s", "e") == {"ok": True}
    with zeroserve.Client(url, timeout=1.0) as untrusting, pytest.raises(zeroserve.Unreachable,
                                                                          match="CERTIFICATE"):
        untrusting.call("s", "e")  # not signed by a system CA: no connection


class Serving(pb_grpc.ServingServicer):
    def Call(self, request: pb.CallRequest, context: grpc.ServicerContext) -> pb.CallReply:
        return pb.CallReply(value=payloads.encode_inputs({"called": request.endpoint}))


def test_grpcs_calls_go_over_a_tls_channel(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_ServingServicer_to_server(Serving(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())]))
    server.start()
    try:
        with zeroserve.Client(f"grpcs://127.0.0.1:{port}", ca_file=str(cert),
                              timeout=5.0) as client:
            assert client.call("s", "e") == {"called": "e"}

        async def main() -> object:
            async with zeroserve.AsyncClient(f"grpcs://localhost:{port}", ca_file=str(cert),
                                             timeout=5.0) as client:
                return await client.call("s", "f")

        assert asyncio.run(main()) == {"called": "f"}
        with zeroserve.Client(f"grpc://127.0.0.1:{port}", timeout=1.0) as plain, \
                pytest.raises(zeroserve.ZeroserveError):
            plain.call("s", "e")  # a plain channel does not get through to a TLS port
    finally:
        server.stop(None)
