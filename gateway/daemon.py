"""The gateway process: one asyncio loop serving HTTP (tornado) and gRPC (grpc.aio) over one
broker link."""
from __future__ import annotations

import asyncio
import logging
import signal

import tornado.web

from gateway.accept import ConnectionLimits, GatewayHTTPServer
from gateway.access import Access, load_access
from gateway.api_keys import KeysFileError
from gateway.broker_link import BrokerLink
from gateway.grpc_server import GrpcKeepalive, start_server
from gateway.jobs_rest import job_routes
from gateway.metrics import observe
from gateway.oip_http import oip_routes
from gateway.rest import handler_args, routes
from zeroserve import curve
from zeroserve.config import Settings

log = logging.getLogger("zeroserve.gateway")

_CHUNK_BYTES = 64 * 1024  # tornado's read size, also the most a gzip chunk inflates to at once


def _finished(handler: tornado.web.RequestHandler) -> None:
    """Every answered request: counted in the metrics; an error also gets a log line (the hot
    path logs nothing). The line has the path, not the query: a query may carry an API key."""
    status = handler.get_status()
    observe(getattr(handler, "metric_service", ""), getattr(handler, "metric_endpoint", ""),
            getattr(handler, "metric_route", "other"), status, handler.request.request_time())
    if status >= 400:
        log.log(logging.WARNING if status >= 500 else logging.INFO, "gateway: %d %s %s",
                status, handler.request.method, handler.request.path)


def connection_limits(settings: Settings) -> tuple[ConnectionLimits, GrpcKeepalive]:
    """The bounds on HTTP and gRPC connections, from the ``gateway`` settings."""
    http = ConnectionLimits(
        header_timeout_s=settings.get("gateway.header_timeout_s"),
        idle_timeout_s=settings.get("gateway.idle_timeout_s"),
        body_timeout_s=settings.get("gateway.body_timeout_s"),
        max_connections=settings.get("gateway.max_connections"),
        accept_pause_s=settings.get("gateway.accept_pause_s"))
    grpc = GrpcKeepalive(interval_s=settings.get("gateway.grpc_keepalive_s"),
                         timeout_s=settings.get("gateway.grpc_keepalive_timeout_s"),
                         max_idle_s=settings.get("gateway.idle_timeout_s"),
                         handshake_s=settings.get("gateway.header_timeout_s"))
    return http, grpc


def make_app(link: BrokerLink, settings: Settings, access: Access) -> tornado.web.Application:
    """The tornado application of every HTTP route: OIP first, then the REST route."""
    args = handler_args(link, settings.get("request.default_timeout_s"),
                        settings.get("request.max_timeout_s"),
                        settings.get("gateway.max_body_bytes"), access)
    return tornado.web.Application(job_routes(args, settings.get("jobs.max_input_bytes"))
                                   + oip_routes(args) + routes(args),
                                   log_function=_finished,
                                   max_json_depth=settings.get("gateway.max_json_depth"))


async def serve(settings: Settings) -> int:
    try:
        access = load_access(settings.get("gateway.api_keys_file"),
                             settings.get("gateway.public_paths"))
        keys = curve.from_settings(settings, "client")
    except KeysFileError as exc:
        log.error("gateway: cannot use the API keys file: %s", exc)
        return 1
    except curve.CurveError as exc:
        log.error("gateway: %s", exc)
        return 1
    link = BrokerLink(settings.get("gateway.broker"), settings.get("heartbeat.interval_s"),
                      settings.get("heartbeat.liveness"), settings.get("gateway.schema_refresh_s"),
                      keys)
    link.start()
    http_limits, grpc_keepalive = connection_limits(settings)
    server = GatewayHTTPServer(
        make_app(link, settings, access), http_limits, decompress_request=True,
        # one read chunk of slack: handlers refuse at the limit with a JSON 413, while
        # tornado would close the connection without an answer
        max_body_size=settings.get("gateway.max_body_bytes") + _CHUNK_BYTES,
        max_buffer_size=settings.get("gateway.max_body_bytes") + _CHUNK_BYTES,
        chunk_size=_CHUNK_BYTES)
    host, port = settings.get("gateway.http_host"), settings.get("gateway.http_port")
    grpc_port = settings.get("gateway.grpc_port")
    grpc_server = None
    try:
        server.listen(port, address=host, reuse_port=settings.get("gateway.reuse_port"))
        if grpc_port:
            grpc_server = await start_server(link, host, grpc_port,
                                             settings.get("request.default_timeout_s"),
                                             settings.get("request.max_timeout_s"), access,
                                             settings.get("jobs.max_input_bytes"),
                                             settings.get("gateway.reuse_port"),
                                             settings.get("gateway.max_body_bytes"),
                                             grpc_keepalive)
    except (OSError, ValueError) as exc:  # ValueError: reuse_port without SO_REUSEPORT
        log.error("gateway: cannot listen on %s: %s", host, exc)
        server.stop()
        await link.close()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("gateway: HTTP on %s:%d, gRPC %s, broker %s, API keys %s", host, port,
             f"on {host}:{grpc_port}" if grpc_server else "off", link.address,
             "required" if access.enforced else "off")
    await stop.wait()
    log.info("gateway: stopping, %d requests in flight", link.pending_count())
    server.stop()
    grpc_stopped = asyncio.ensure_future(grpc_server.stop(grace=5.0)) if grpc_server else None
    for _ in range(50):
        if not link.pending_count():
            break
        await asyncio.sleep(0.1)
    await server.close_all_connections()
    if grpc_stopped is not None:
        await grpc_stopped
    await link.close()
    log.info("gateway: stopped")
    return 0


def run(settings: Settings) -> int:
    """Run the gateway until SIGINT or SIGTERM; return the exit code."""
    return asyncio.run(serve(settings))
