"""The baseline: a bare tornado server answering every POST with a fixed, precomputed body.

It stands for "HTTP on this host and nothing else": what a serving system
would do if the model, the broker and the workers cost nothing. The body is
the one the model would answer, so that the bytes on the wire are the same.

    python scripts/bench_lib/echo_server.py --port 8123 --body-file answer.json
    python scripts/bench_lib/echo_server.py --port 8123 --body-file answer.json \
        --grpc-port 8124 --grpc-body-file answer.pb

With ``--grpc-port`` it also stands for "gRPC on this host and nothing else": a bare
grpc.aio server in the same loop answers every ``inference.GRPCInferenceService/ModelInfer``
call with the serialized ``ModelInferResponse`` of ``--grpc-body-file``, without decoding
the request (the model's answer, as the gateway sends it).

``GET /readyz`` answers 200 as soon as the ports are bound. Stops on SIGTERM or
SIGINT. Needs only tornado (and grpcio with ``--grpc-port``); this file imports nothing
else of the harness.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import tornado.web

_SLEEPER = ThreadPoolExecutor(1)


class AnswerHandler(tornado.web.RequestHandler):
    """``POST <any path>``: the precomputed JSON body, 200, without reading the request."""

    def initialize(self, body: bytes, sleep_s: float = 0.0) -> None:
        self.body = body
        self.sleep_s = sleep_s

    def post(self, _path: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(self.body)


class SleepingAnswerHandler(AnswerHandler):
    """``AnswerHandler`` after ``sleep_s`` in a one-thread executor: a model call in a worker
    thread, as gpu_sim's (``../shared/bench/sleep_echo.py``)."""

    async def post(self, _path: str) -> None:  # type: ignore[override]
        await asyncio.get_running_loop().run_in_executor(_SLEEPER, time.sleep, self.sleep_s)
        super().post(_path)


class ReadyHandler(tornado.web.RequestHandler):
    """``GET /readyz``: 200 once serving."""

    def get(self) -> None:
        self.write(b"ready")


def make_app(body: bytes, sleep_s: float = 0.0) -> tornado.web.Application:
    """The echo application answering ``body`` to every POST, after ``sleep_s``."""
    return tornado.web.Application([
        (r"/readyz", ReadyHandler),
        (r"/(.*)", SleepingAnswerHandler if sleep_s else AnswerHandler,
         {"body": body, "sleep_s": sleep_s}),
    ])


GRPC_SERVICE = "inference.GRPCInferenceService"


async def start_grpc(port: int, host: str, body: bytes):  # -> grpc.aio.Server
    """A grpc.aio server answering ``body`` (serialized bytes) to every ModelInfer call."""
    import grpc  # only the gRPC echo needs it

    async def model_infer(_request: bytes, _context: object) -> bytes:
        return body

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GRPC_SERVICE, {
        # no (de)serializers: the request arrives as bytes and the answer leaves as bytes
        "ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer),
    }),))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    return server


async def serve(port: int, host: str, body: bytes, grpc_port: int | None = None,
                grpc_body: bytes = b"", sleep_s: float = 0.0) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    grpc_server = None if grpc_port is None else await start_grpc(grpc_port, host, grpc_body)
    server = make_app(body, sleep_s).listen(port, address=host, xheaders=False)
    await stop.wait()
    server.stop()
    if grpc_server is not None:
        await grpc_server.stop(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--body-file", required=True,
                        help="file holding the response body (JSON) to answer every POST with")
    parser.add_argument("--grpc-port", type=int, default=None,
                        help="also answer gRPC ModelInfer calls on this port")
    parser.add_argument("--grpc-body-file", default=None,
                        help="file holding the serialized ModelInferResponse to answer with")
    parser.add_argument("--sleep-s", type=float, default=0.0,
                        help="sleep this long in a one-thread executor before each answer "
                             "(the gpu_sim baseline)")
    args = parser.parse_args()
    if (args.grpc_port is None) != (args.grpc_body_file is None):
        parser.error("--grpc-port and --grpc-body-file go together")
    with open(args.body_file, "rb") as f:
        body = f.read()
    grpc_body = b""
    if args.grpc_body_file is not None:
        with open(args.grpc_body_file, "rb") as f:
            grpc_body = f.read()
    asyncio.run(serve(args.port, args.host, body, args.grpc_port, grpc_body, args.sleep_s))


if __name__ == "__main__":
    main()
