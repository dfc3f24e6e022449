"""What a bare server costs per call, by the server library the gateway could use: the floor
under each of the gateway's routes at 64 connections, measured with h2load.

Each server answers every call with fixed bytes (a gRPC ``ModelInfer`` call with a 66-byte
message; an HTTP/1.1 POST with a 66-byte JSON body) and does nothing else:

- ``grpc-aio``: ``grpc.aio.server`` in an asyncio loop (the gateway's gRPC server);
- ``grpc-sync``: ``grpc.server`` with a 16-thread pool;
- ``h2``: an ``asyncio.Protocol`` framing HTTP/2 with the pure-Python ``h2`` package (not a
  zeroserve dependency: ``pip install h2``; skipped without it);
- ``tornado``: a tornado ``RequestHandler`` behind tornado's own ``HTTPServer``;
- ``tornado-httptools``: the same handler behind ``gateway.http_connection`` (the gateway's
  HTTP/1.1 server);
- ``httptools``: an ``asyncio.Protocol`` over ``httptools`` writing a prebuilt answer.

Each runs alone in its own process; one h2load warm-up window, then a measured one; the
server's CPU per call is its ``/proc`` user + system time over the window.

    PYTHONPATH=. python scripts/bench_lib/protocol_floor.py [--seconds 5] [--connections 64]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANSWER = b'{"model_name":"mlp","outputs":[' + b"0" * 34 + b"]}"  # 66 bytes either way
GRPC_SERVICE = "inference.GRPCInferenceService"
GRPC_PATH = f"/{GRPC_SERVICE}/ModelInfer"
KINDS = ("grpc-aio", "grpc-sync", "h2", "tornado", "tornado-httptools", "httptools")
_TICKS = os.sysconf("SC_CLK_TCK")


def _grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _serve_grpc_aio(port: int) -> None:
    import grpc

    async def main() -> None:
        async def infer(_request: bytes, _context: object) -> bytes:
            return ANSWER

        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            GRPC_SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def _serve_grpc_sync(port: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    server = grpc.server(ThreadPoolExecutor(16), options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        GRPC_SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(
            lambda _request, _context: ANSWER)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def _serve_h2(port: int) -> None:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    config = h2.config.H2Configuration(client_side=False, header_encoding=None)
    headers = [(b":status", b"200"), (b"content-type", b"application/grpc")]
    trailers = [(b"grpc-status", b"0")]
    body = _grpc_frame(ANSWER)

    class Http2(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.conn = h2.connection.H2Connection(config)
            self.conn.initiate_connection()
            transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            conn = self.conn
            try:
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length,
                                                       event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        conn.send_headers(event.stream_id, headers)
                        conn.send_data(event.stream_id, body)
                        conn.send_headers(event.stream_id, trailers, end_stream=True)
            except h2.exceptions.ProtocolError:  # the client closed (h2load's last calls)
                self.transport.close()
                return
            self.transport.write(conn.data_to_send())  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Http2, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


def _tornado_app():  # -> tornado.web.Application
    import tornado.web

    class Answer(tornado.web.RequestHandler):
        def post(self) -> None:
            self.set_header("Content-Type", "application/json")
            self.write(ANSWER)

    return tornado.web.Application([(r"/.*", Answer)])


def _serve_tornado(port: int) -> None:
    async def main() -> None:
        _tornado_app().listen(port, address="127.0.0.1")
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_tornado_httptools(port: int) -> None:
    from gateway.accept import ConnectionLimits, GatewayHTTPServer
    from gateway.http_connection import ConnectionSettings

    async def main() -> None:
        server = GatewayHTTPServer(_tornado_app(), ConnectionLimits(),
                                   ConnectionSettings(max_body_size=1 << 20))
        server.listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_httptools(port: int) -> None:
    import httptools

    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))

    class Http1(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            self.transport.write(answer)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Http1, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


SERVERS = {"grpc-aio": _serve_grpc_aio, "grpc-sync": _serve_grpc_sync, "h2": _serve_h2,
           "tornado": _serve_tornado, "tornado-httptools": _serve_tornado_httptools,
           "httptools": _serve_httptools}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _wait_listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not listen on {port}")


def _h2load(kind: str, port: int, connections: int, seconds: int, body: Path) -> int:
    """Calls that h2load saw succeed in one window."""
    if kind.startswith("grpc") or kind == "h2":
        argv = ["h2load", "-H", "content-type: application/grpc", "-H", "te: trailers",
                f"http://127.0.0.1:{port}{GRPC_PATH}"]
    else:
        argv = ["h2load", "--h1", "-H", "content-type: application/json",
                f"http://127.0.0.1:{port}/mlp/predict"]
    argv += [f"-c{connections}", "-m1", f"-D{seconds}", "-d", str(body)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    found = re.search(r"(\d+) succeeded", out)
    if found is None:
        raise RuntimeError(f"h2load printed no summary:\n{out[-2000:]}")
    return int(found.group(1))


def measure(kind: str, connections: int, seconds: int, work: Path) -> tuple[float, float]:
    """(calls per second, server µs of CPU per call) of ``kind`` in one window."""
    body = work / ("grpc.bin" if kind.startswith("grpc") or kind == "h2" else "post.json")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port)],
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                filter(None, [str(Path(__file__).resolve().parents[2]),
                                              os.environ.get("PYTHONPATH")]))})
    try:
        _wait_listening(port, proc)
        _h2load(kind, port, connections, 2, body)
        before = _cpu_s(proc.pid)
        ok = _h2load(kind, port, connections, seconds, body)
        used = _cpu_s(proc.pid) - before
    finally:
        proc.terminate()
        proc.wait(10)
    return ok / seconds, 1e6 * used / max(ok, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        SERVERS[args.serve](args.port)
        return 0
    if shutil.which("h2load") is None:
        parser.error("needs h2load (apt-get install nghttp2-client)")
    kinds = [k for k in args.kinds.split(",") if k]
    try:
        import h2  # noqa: F401
    except ImportError:
        if "h2" in kinds:
            print("protocol_floor: h2 is not installed (pip install h2); its run is skipped",
                  file=sys.stderr)
            kinds.remove("h2")
    print(f"{args.connections} connections, {args.seconds} s windows, {os.cpu_count()} cpus, "
          f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}\n")
    print("| server | calls/s | server µs CPU / call |\n|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="zeroserve-floor-") as tmp:
        work = Path(tmp)
        (work / "grpc.bin").write_bytes(_grpc_frame(b"\x0a\x03mlp" + b"\x00" * 200))
        (work / "post.json").write_bytes(b'{"x": [[' + b"0.5, " * 40 + b"0.5]]}")
        for kind in kinds:
            rate, cpu_us = measure(kind, args.connections, args.seconds, work)
            print(f"| {kind} | {rate:,.0f} | {cpu_us:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
