"""The baseline: a bare tornado server answering every POST with a fixed, precomputed body.

It stands for "HTTP on this host and nothing else": what a serving system
would do if the model, the broker and the workers cost nothing. The body is
the one the model would answer, so that the bytes on the wire are the same.

    python scripts/bench_lib/echo_server.py --port 8123 --body-file answer.json

``GET /readyz`` answers 200 as soon as the port is bound. Stops on SIGTERM or
SIGINT. Needs only tornado; this file imports nothing else of the harness.
"""
from __future__ import annotations

import argparse
import asyncio
import signal

import tornado.web


class AnswerHandler(tornado.web.RequestHandler):
    """``POST <any path>``: the precomputed JSON body, 200, without reading the request."""

    def initialize(self, body: bytes) -> None:
        self.body = body

    def post(self, _path: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(self.body)


class ReadyHandler(tornado.web.RequestHandler):
    """``GET /readyz``: 200 once serving."""

    def get(self) -> None:
        self.write(b"ready")


def make_app(body: bytes) -> tornado.web.Application:
    """The echo application answering ``body`` to every POST."""
    return tornado.web.Application([
        (r"/readyz", ReadyHandler),
        (r"/(.*)", AnswerHandler, {"body": body}),
    ])


async def serve(port: int, host: str, body: bytes) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = make_app(body).listen(port, address=host, xheaders=False)
    await stop.wait()
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--body-file", required=True,
                        help="file holding the response body (JSON) to answer every POST with")
    args = parser.parse_args()
    with open(args.body_file, "rb") as f:
        body = f.read()
    asyncio.run(serve(args.port, args.host, body))


if __name__ == "__main__":
    main()
