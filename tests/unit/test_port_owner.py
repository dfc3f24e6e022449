"""The question a sharing gateway asks a port's listener (gateway/port_owner.py), against small
real HTTP servers on loopback."""
from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.port_owner import sharing_refusal


@contextmanager
def answering(body: bytes, status: int = 200) -> Iterator[int]:
    """An HTTP server on a loopback port answering every GET with ``body``; yields its port."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_free_port_or_one_of_this_cluster_may_be_shared():
    assert sharing_refusal("127.0.0.1", _free_port(), 0, "a") is None
    with answering(json.dumps({"cluster": "a"}).encode(), status=503) as port:
        assert sharing_refusal("0.0.0.0", port, 0, "a") is None  # not ready: still a's


def test_another_clusters_port_is_refused_naming_both():
    with answering(json.dumps({"cluster": "b"}).encode()) as port:
        refusal = sharing_refusal("127.0.0.1", port, 0, "a")
    assert refusal is not None and f"HTTP port {port}" in refusal
    assert "'a'" in refusal and "'b'" in refusal


def test_a_listener_that_does_not_say_its_cluster_is_refused():
    for body in (b"<html>hello</html>", json.dumps({"services": {}}).encode()):
        with answering(body) as port:
            refusal = sharing_refusal("127.0.0.1", port, 0, "a")
        assert refusal is not None and "names no cluster" in refusal


def test_a_taken_grpc_port_beside_a_free_http_port_is_refused():
    with socket.socket() as grpc:
        grpc.bind(("127.0.0.1", 0))
        grpc.listen()
        refusal = sharing_refusal("127.0.0.1", _free_port(), grpc.getsockname()[1], "a")
    assert refusal is not None and "gRPC port" in refusal
