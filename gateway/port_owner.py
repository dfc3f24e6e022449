"""Before a gateway shares its ports (``gateway.reuse_port``): are they its cluster's?

With SO_REUSEPORT the kernel spreads the connections of a port over every
socket that listens on it with that option, whoever opened it (any process of
the same user). A gateway of another cluster on the same port would get a part
of this cluster's calls and answer them from its own. So a gateway about to
share a port first asks the port's current listener ``GET /readyz``, whose
answer names the listener's cluster, and does not join another cluster's port,
nor one whose listener does not say. The gRPC port cannot be asked: it is
joined only together with an HTTP port of this cluster.

Two gateways of different clusters that start at the same instant can both
find a port free; the check makes that window small, it does not close it.
"""
from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request

_ASK_TIMEOUT_S = 3.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local question


class OwnerUnknown(Exception):
    """Something listens on the port but does not say its cluster; the message says why."""


def _local(host: str) -> str:
    """Where to reach what listens on ``host`` (a wildcard address means loopback)."""
    return {"": "127.0.0.1", "*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(
        host, host)


def listener_cluster(host: str, port: int, timeout_s: float = _ASK_TIMEOUT_S) -> str | None:
    """The cluster that the gateway listening on ``host:port`` names in ``/readyz``; None when
    nothing listens there. Raise OwnerUnknown when the listener does not say."""
    address = _local(host)
    url = f"http://[{address}]:{port}/readyz" if ":" in address else \
        f"http://{address}:{port}/readyz"
    try:
        with _NO_PROXY.open(url, timeout=timeout_s) as resp:
            body = resp.read()
    except urllib.error.HTTPError as err:  # 503: not ready, yet it names its cluster
        body = err.read()
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None
        raise OwnerUnknown(f"it does not answer GET /readyz ({exc.reason})") from None
    except OSError as exc:  # a timeout or a reset while reading
        raise OwnerUnknown(f"it does not answer GET /readyz ({exc})") from None
    try:
        cluster = json.loads(body).get("cluster")
    except (ValueError, AttributeError):
        cluster = None
    if not isinstance(cluster, str):
        raise OwnerUnknown("its GET /readyz names no cluster")
    return cluster


def _listening(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((_local(host), port), timeout=timeout_s):
            return True
    except OSError:
        return False


def sharing_refusal(host: str, http_port: int, grpc_port: int, cluster: str,
                    timeout_s: float = _ASK_TIMEOUT_S) -> str | None:
    """Why a gateway of ``cluster`` must not share ``http_port`` and ``grpc_port`` (0: no
    gRPC) on ``host``, or None when they are free or held by gateways of ``cluster``."""
    try:
        owner = listener_cluster(host, http_port, timeout_s)
    except OwnerUnknown as exc:
        return f"HTTP port {http_port} is in use and {exc}: not sharing it with this " \
               f"gateway of cluster '{cluster}'"
    if owner is not None and owner != cluster:
        return f"HTTP port {http_port} is held by a gateway of cluster '{owner}' and this " \
               f"gateway is of cluster '{cluster}': not sharing it (gateway.reuse_port); " \
               "choose another port"
    if owner is None and grpc_port and _listening(host, grpc_port, timeout_s):
        return f"gRPC port {grpc_port} is in use, and HTTP port {http_port} is not held by " \
               f"a gateway of cluster '{cluster}': not sharing it"
    return None


async def check_sharing(host: str, http_port: int, grpc_port: int, cluster: str) -> str | None:
    """:func:`sharing_refusal` without blocking the running loop."""
    return await asyncio.to_thread(sharing_refusal, host, http_port, grpc_port, cluster)
