"""The large echo benchmark's client floor: a bare server that answers each path with the
answer the gateway gave it, recorded once.

The first call on a path (HTTP) or a method (gRPC) is forwarded to the upstream gateway and
its answer kept; every later call reads its request whole and answers the kept bytes. A
client called through it pays its own encoding and decoding, the sockets and a bare tornado
(or grpc.aio) server, and nothing of zeroserve: what is left of a path's latency when the
cluster costs nothing.

    python scripts/bench_lib/replay_server.py --port 8123 --upstream 127.0.0.1:8000 \
        --grpc-port 8124 --grpc-upstream 127.0.0.1:8001

``GET /readyz`` answers 200 once the ports are bound. Stops on SIGTERM or SIGINT. Needs
tornado and grpcio; imports nothing of the harness.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
import tornado.httpclient
import tornado.web

MAX_BYTES = 256 * 1024 * 1024
# what the benchmark's clients send and read besides the body
_REQUEST_HEADERS = ("Content-Type", "Accept", "Inference-Header-Content-Length")
_ANSWER_HEADERS = ("Content-Type", "Inference-Header-Content-Length")
_GRPC_OPTIONS = [("grpc.max_receive_message_length", MAX_BYTES),
                 ("grpc.max_send_message_length", MAX_BYTES), ("grpc.so_reuseport", 0)]


class ReplayHandler(tornado.web.RequestHandler):
    """``POST <path>``: the upstream's answer to the path's first request."""

    def initialize(self, upstream: str, kept: dict[str, tornado.httpclient.HTTPResponse]
                   ) -> None:
        self.upstream = upstream
        self.kept = kept

    async def post(self, path: str) -> None:
        answer = self.kept.get(path)
        if answer is None:
            headers = {name: self.request.headers[name] for name in _REQUEST_HEADERS
                       if name in self.request.headers}
            answer = await tornado.httpclient.AsyncHTTPClient(
                max_body_size=MAX_BYTES, max_buffer_size=MAX_BYTES).fetch(
                f"http://{self.upstream}/{path}", method="POST", body=self.request.body,
                headers=headers, request_timeout=120, raise_error=False)
            self.kept[path] = answer
        self.set_status(answer.code)
        for name in _ANSWER_HEADERS:
            if name in answer.headers:
                self.set_header(name, answer.headers[name])
        self.write(answer.body)


class ReadyHandler(tornado.web.RequestHandler):
    """``GET /readyz``: 200 once serving."""

    def get(self) -> None:
        self.write(b"ready")


class GrpcReplay(grpc.GenericRpcHandler):
    """Every unary method: the upstream's answer to the method's first call, as bytes."""

    def __init__(self, upstream: str) -> None:
        self.channel = grpc.aio.insecure_channel(upstream, options=_GRPC_OPTIONS)
        self.kept: dict[str, bytes] = {}

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        method = details.method

        async def replay(request: bytes, _context: object) -> bytes:
            if method not in self.kept:
                self.kept[method] = await self.channel.unary_unary(method)(request, timeout=120)
            return self.kept[method]

        return grpc.unary_unary_rpc_method_handler(replay)


async def serve(port: int, upstream: str, grpc_port: int, grpc_upstream: str) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    grpc_server = grpc.aio.server(options=_GRPC_OPTIONS)
    grpc_server.add_generic_rpc_handlers((GrpcReplay(grpc_upstream),))
    if grpc_server.add_insecure_port(f"127.0.0.1:{grpc_port}") == 0:
        raise OSError(f"cannot listen on 127.0.0.1:{grpc_port}")
    await grpc_server.start()
    app = tornado.web.Application([(r"/readyz", ReadyHandler),
                                   (r"/(.*)", ReplayHandler, {"upstream": upstream, "kept": {}})])
    server = app.listen(port, address="127.0.0.1", xheaders=False, max_body_size=MAX_BYTES,
                        max_buffer_size=MAX_BYTES)
    await stop.wait()
    server.stop()
    await grpc_server.stop(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the gateway's HTTP")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--grpc-upstream", required=True, help="HOST:PORT of its gRPC")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.upstream, args.grpc_port, args.grpc_upstream))


if __name__ == "__main__":
    main()
