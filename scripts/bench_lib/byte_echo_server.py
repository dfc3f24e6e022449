"""The large echo benchmark's baseline: a bare tornado server answering every POST with the
request's own body (``application/octet-stream``), read whole by tornado as any handler reads
it. It stands for "HTTP on this host, the same bytes in and out, and nothing else".

    python scripts/bench_lib/byte_echo_server.py --port 8123

``GET /readyz`` answers 200 once the port is bound. Stops on SIGTERM or SIGINT. Needs only
tornado; imports nothing of the harness.
"""
from __future__ import annotations

import argparse
import asyncio
import signal

import tornado.web


class EchoHandler(tornado.web.RequestHandler):
    """``POST <any path>``: the request's body, 200."""

    def post(self, _path: str) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        self.write(self.request.body)


class ReadyHandler(tornado.web.RequestHandler):
    """``GET /readyz``: 200 once serving."""

    def get(self) -> None:
        self.write(b"ready")


async def serve(port: int, host: str, max_body_bytes: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = tornado.web.Application([(r"/readyz", ReadyHandler), (r"/(.*)", EchoHandler)])
    server = app.listen(port, address=host, xheaders=False, max_body_size=max_body_bytes,
                        max_buffer_size=max_body_bytes)
    await stop.wait()
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--max-body-bytes", type=int, default=256 * 1024 * 1024)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.host, args.max_body_bytes))


if __name__ == "__main__":
    main()
