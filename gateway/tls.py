"""TLS on the gateway's own ports: HTTP and gRPC serve TLS with the certificate and
key of ``gateway.tls_cert_file`` / ``gateway.tls_key_file``; with ``gateway.tls_client_ca_file``
they also require a client certificate issued by that CA (mTLS).

:func:`load_tls` reads the files once, at start, and checks them (a certificate and key that
do not match, or a file that is not PEM, is a :class:`TlsError` naming the setting and the
file); both servers then use the same bytes. :func:`exposure_warning` is the start-up line of
a gateway that takes API keys in clear text from other hosts. :class:`HandshakeFailures`
logs the failed handshakes, which any client can cause many times a second (a plain request
to the TLS port, a missing client certificate), as one line per interval.
"""
from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from gateway.accept import EventReport
from zeroserve import curve
from zeroserve.config import GatewaySettings

log = logging.getLogger("zeroserve.gateway")


class TlsError(Exception):
    """A TLS setting that cannot be used: a file missing, unreadable or not what it should be,
    or a certificate without its key."""


@dataclass(frozen=True)
class GatewayTls:
    """The gateway's TLS, ready for both servers: the HTTP context and gRPC's credentials."""

    http: ssl.SSLContext
    grpc: grpc.ServerCredentials
    client_certificates: bool  # mTLS: a client without a certificate of the CA is refused


def _read(setting: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsError(f"cannot read gateway.{setting} {path}: {exc.strerror or exc}") from None


def load_tls(gateway: GatewaySettings) -> GatewayTls | None:
    """The TLS of the ``gateway`` settings, or None when neither ``tls_cert_file`` nor
    ``tls_key_file`` is set (plain HTTP and gRPC). Raises :class:`TlsError` naming the setting
    and the file when one cannot be read or used, or when only one of the two is set."""
    cert_file, key_file = gateway.tls_cert_file, gateway.tls_key_file
    if not cert_file and not key_file:
        if gateway.tls_client_ca_file:
            raise TlsError("gateway.tls_client_ca_file needs gateway.tls_cert_file and "
                           "gateway.tls_key_file")
        return None
    if not cert_file or not key_file:
        raise TlsError("gateway.tls_cert_file and gateway.tls_key_file go together: set both")
    cert_pem = _read("tls_cert_file", cert_file)
    key_pem = _read("tls_key_file", key_file)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"gateway.tls_cert_file {cert_file} and gateway.tls_key_file {key_file} "
                       f"are not a matching PEM certificate and key: {exc}") from None
    ca_pem = None
    if gateway.tls_client_ca_file:
        ca_pem = _read("tls_client_ca_file", gateway.tls_client_ca_file)
        try:
            context.load_verify_locations(gateway.tls_client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(f"gateway.tls_client_ca_file {gateway.tls_client_ca_file} is not "
                           f"a PEM CA certificate: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    credentials = grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=ca_pem,
                                              require_client_auth=ca_pem is not None)
    return GatewayTls(context, credentials, client_certificates=ca_pem is not None)


def describe(tls: GatewayTls | None) -> str:
    """How the gateway's ports speak, for its start-up line."""
    if tls is None:
        return "off"
    return "on, client certificates required" if tls.client_certificates else "on"


def exposure_warning(host: str, keys_enforced: bool, tls: GatewayTls | None) -> str | None:
    """The warning of a gateway that requires API keys and binds ``host``, reachable from other
    hosts (not loopback), without TLS: every key crosses the network in clear text. None when
    there is nothing to warn of."""
    if tls is not None or not keys_enforced \
            or not curve.reachable_from_other_hosts(f"tcp://{host}:0"):
        return None
    return (f"gateway: TLS is off and API keys are on, on {host}, reachable from other hosts: "
            "every key crosses the network in clear text; set gateway.tls_cert_file and "
            "gateway.tls_key_file (docs/security.md)")


class HandshakeFailures:
    """Logs the HTTP server's failed TLS handshakes: one line at the first, then at most one
    per ``interval_s``, with the count since the last line and the last failure."""

    def __init__(self, interval_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.report = EventReport(interval_s)
        self._clock = clock

    def line(self, peer: object, error: BaseException) -> str | None:
        """Count one failure, from ``peer``; the line to log now, or None to stay quiet."""
        count = self.report.note(self._clock())
        if count is None:
            return None
        return (f"gateway: {count} TLS handshakes failed since the last report (the last, "
                f"from {peer}: {error})")

    def __call__(self, peer: object, error: BaseException) -> None:
        line = self.line(peer, error)
        if line is not None:
            log.warning(line)
