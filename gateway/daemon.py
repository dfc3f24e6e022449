"""The gateway process: one asyncio loop serving HTTP (tornado's handlers on
:mod:`gateway.http_connection`) and gRPC (grpc.aio) over one broker link."""
from __future__ import annotations

import asyncio
import logging
import signal

import tornado.web

from gateway.accept import ConnectionLimits, GatewayHTTPServer
from gateway.access import Access, load_access
from gateway.api_keys import KeysFileError
from gateway.broker_link import BrokerLink
from gateway.cors import cors_policy
from gateway.grpc_server import GrpcKeepalive, start_server
from gateway.http_connection import ConnectionSettings
from gateway.jobs_rest import job_routes
from gateway.metrics import observe
from gateway.oip_http import oip_routes
from gateway.oip_models import ServerIdentity
from gateway.openai_api import openai_routes
from gateway.port_owner import check_sharing
from gateway.request_log import RequestLog, open_request_log
from gateway.rest import NotFoundHandler, handler_args, routes
from gateway.shm_regions import RegionRegistry
from gateway.tls import HandshakeFailures, TlsError, describe, exposure_warning, load_tls
from gateway.ui.handlers import ui_routes
from zeroserve import curve, event_loop
from zeroserve.config import GatewaySettings, JobsSettings, RequestSettings, StreamSettings
from zeroserve.container import Container
from zeroserve.tracing import TracingError, start_tracing

log = logging.getLogger("zeroserve.gateway")

_CHUNK_BYTES = 64 * 1024  # the most a gzip piece inflates to at once; the body limit's slack


def _finished(handler: tornado.web.RequestHandler) -> None:
    """Every answered request: counted in the metrics and, when it is on, in the request log;
    an error also gets a log line (the hot path logs nothing). The line has the path, not the
    query: a query may carry an API key."""
    status = handler.get_status()
    request_log = handler.settings.get("request_log")  # gateway.request_log.RequestLog or None
    if request_log is not None:
        request_log.record(handler)
    observe(getattr(handler, "metric_service", ""), getattr(handler, "metric_endpoint", ""),
            getattr(handler, "metric_route", "other"), status, handler.request.request_time())
    if status >= 400:
        log.log(logging.WARNING if status >= 500 else logging.INFO, "gateway: %d %s %s",
                status, handler.request.method, handler.request.path)


def connection_limits(gateway: GatewaySettings) -> tuple[ConnectionLimits, GrpcKeepalive]:
    """The bounds on HTTP and gRPC connections, from the ``gateway`` settings."""
    http = ConnectionLimits(
        header_timeout_s=gateway.header_timeout_s, idle_timeout_s=gateway.idle_timeout_s,
        body_timeout_s=gateway.body_timeout_s, max_connections=gateway.max_connections,
        accept_pause_s=gateway.accept_pause_s)
    grpc = GrpcKeepalive(interval_s=gateway.grpc_keepalive_s,
                         timeout_s=gateway.grpc_keepalive_timeout_s,
                         max_idle_s=gateway.idle_timeout_s, handshake_s=gateway.header_timeout_s)
    return http, grpc


def make_app(link: BrokerLink, gateway: GatewaySettings, request: RequestSettings,
             jobs: JobsSettings, access: Access,
             stream: StreamSettings | None = None,
             shm_regions: RegionRegistry | None = None,
             request_log: RequestLog | None = None) -> tornado.web.Application:
    """The tornado application of every HTTP route: jobs, OIP, OpenAI and the live page first,
    then the REST route (which would take their paths). ``shm_regions``: the system shared
    memory registry (None: no shared memory)."""
    args = handler_args(link, request.default_timeout_s, request.max_timeout_s,
                        gateway.max_body_bytes, access, stream)
    return tornado.web.Application(job_routes(args, jobs.max_input_bytes)
                                   + oip_routes(args) + openai_routes(args) + ui_routes(args)
                                   + routes(args),
                                   log_function=_finished,
                                   default_handler_class=NotFoundHandler,
                                   default_handler_args=args,
                                   oip_server=server_identity(gateway),
                                   max_json_depth=gateway.max_json_depth,
                                   shm_regions=shm_regions, cors=cors_policy(gateway),
                                   request_log=request_log)


def server_identity(gateway: GatewaySettings) -> ServerIdentity:
    """What OIP server metadata answers, from ``gateway.server_name`` and
    ``gateway.server_version``."""
    return ServerIdentity(gateway.server_name, gateway.server_version)


async def may_share_ports(gateway: GatewaySettings, cluster: str) -> bool:
    """Whether this gateway may listen: always without ``gateway.reuse_port`` (a taken port is
    then a start-up error), else only when the ports are free or held by gateways of
    ``cluster`` (:mod:`gateway.port_owner`); a refusal is logged."""
    if not gateway.reuse_port:
        return True
    refusal = await check_sharing(gateway.http_host, gateway.http_port, gateway.grpc_port,
                                  cluster)
    if refusal is not None:
        log.error("gateway: %s", refusal)
    return refusal is None


async def serve(parts: Container) -> int:
    """Serve HTTP and gRPC until SIGINT or SIGTERM; return the exit code."""
    gateway, request, jobs = parts.gateway.get(), parts.request.get(), parts.jobs.get()
    heartbeat = parts.heartbeat.get()
    try:
        access = load_access(gateway.api_keys_file, gateway.public_paths)
        keys = curve.from_settings(parts.curve.get(), "client")
        tls = load_tls(gateway)
    except KeysFileError as exc:
        log.error("gateway: cannot use the API keys file: %s", exc)
        return 1
    except (curve.CurveError, TlsError) as exc:
        log.error("gateway: %s", exc)
        return 1
    try:
        request_log = open_request_log(gateway)
    except (OSError, ValueError) as exc:
        log.error("gateway: cannot write the request log %s: %s", gateway.request_log_path, exc)
        return 1
    try:
        tracing = start_tracing(parts.settings.get().tracing, "gateway")
    except TracingError as exc:
        log.error("gateway: %s", exc)
        return 1
    cluster = parts.settings.get().cluster.name
    if not await may_share_ports(gateway, cluster):
        return 1
    link = BrokerLink(gateway.frontend, heartbeat.interval_s, heartbeat.liveness,
                      gateway.schema_refresh_s, keys, cluster)
    link.tracing = tracing
    link.start()
    http_limits, grpc_keepalive = connection_limits(gateway)
    shm_regions = RegionRegistry(gateway.shm_key_prefix, gateway.max_body_bytes,
                                 direct=gateway.shm_direct)
    server = GatewayHTTPServer(
        make_app(link, gateway, request, jobs, access, parts.stream.get(), shm_regions,
                 request_log),
        http_limits,
        # one read chunk of slack: handlers refuse at the limit with a JSON 413, while the
        # connection would answer a bare 400 and close
        ConnectionSettings(max_body_size=gateway.max_body_bytes + _CHUNK_BYTES,
                           chunk_size=_CHUNK_BYTES),
        ssl_context=tls.http if tls else None,
        handshake_failures=HandshakeFailures() if tls else None)
    host, port, grpc_port = gateway.http_host, gateway.http_port, gateway.grpc_port
    grpc_server = None
    try:
        server.listen(port, address=host, reuse_port=gateway.reuse_port)
        if grpc_port:
            grpc_server = await start_server(link, host, grpc_port, request.default_timeout_s,
                                             request.max_timeout_s, access,
                                             jobs.max_input_bytes, gateway.reuse_port,
                                             gateway.max_body_bytes, grpc_keepalive,
                                             tls.grpc if tls else None, parts.stream.get(),
                                             server_identity(gateway), shm_regions)
    except (OSError, ValueError) as exc:  # ValueError: reuse_port without SO_REUSEPORT
        log.error("gateway: cannot listen on %s (HTTP port %d, gRPC port %d): %s", host, port,
                  grpc_port, exc)
        server.stop()
        await link.close()
        shm_regions.close()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("gateway: HTTP on %s:%d, gRPC %s, broker %s, API keys %s, event loop %s", host,
             port, f"on {host}:{grpc_port}" if grpc_server else "off", link.address,
             "required" if access.enforced else "off", event_loop.running_loop())
    log.info("gateway: TLS %s", describe(tls))
    exposed = exposure_warning(host, access.enforced, tls)
    if exposed:
        log.warning(exposed)
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
    shm_regions.close()
    if tracing is not None:
        tracing.shutdown()  # exports the spans still buffered
    log.info("gateway: stopped")
    return 0


def run(parts: Container) -> int:
    """Run the gateway until SIGINT or SIGTERM; return the exit code (the composition root:
    every section it uses comes from ``parts``). The loop is ``gateway.event_loop``'s
    (:mod:`zeroserve.event_loop`)."""
    try:
        loop_kind = event_loop.chosen_loop(parts.gateway.get().event_loop,
                                           event_loop.uvloop_installed())
    except event_loop.LoopUnavailable as exc:
        log.error("gateway: %s", exc)
        return 1
    return event_loop.run(serve(parts), loop_kind)
