"""The streams baseline: a bare tornado server that answers every POST with the SSE stream
that zeroserve sends for ``scripts/bench_lib/stream_service.py`` (``n`` chunks ``"token{i}"``,
each flushed as it is written, then the done event), without reading the request.

    python scripts/bench_lib/sse_server.py --port 8123 --chunks 200

``GET /readyz`` answers 200. Stops on SIGTERM or SIGINT. Needs only tornado.
"""
from __future__ import annotations

import argparse
import asyncio
import signal

import tornado.web


class StreamHandler(tornado.web.RequestHandler):
    def initialize(self, chunks: int) -> None:
        self.chunks = chunks

    async def post(self, _path: str) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        for i in range(self.chunks):
            self.write(f'data: "token{i}"\n\n'.encode())
            await self.flush()
        self.write(f'event: done\ndata: {{"chunks": {self.chunks}}}\n\n'.encode())


class ReadyHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(b"ready")


async def serve(port: int, chunks: int) -> None:
    app = tornado.web.Application([(r"/readyz", ReadyHandler),
                                   (r"/(.*)", StreamHandler, {"chunks": chunks})])
    server = app.listen(port, address="127.0.0.1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.chunks))


if __name__ == "__main__":
    main()
