"""The gateway's Prometheus metrics: requests by service, endpoint, route and status, and
their latency, in a registry of the process's own (``GET /metrics``).

Counting is two dictionary lookups and two additions per request: the handlers call
:func:`observe` once, when they answer.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)

REQUESTS = Counter("zeroserve_gateway_requests", "Requests answered by this gateway",
                   ["service", "endpoint", "route", "status"], registry=REGISTRY)
LATENCY = Histogram("zeroserve_gateway_request_duration_seconds",
                    "Time from a request's arrival to its answer",
                    ["service", "endpoint", "route"], buckets=LATENCY_BUCKETS,
                    registry=REGISTRY)

_children: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}


def observe(service: str, endpoint: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request. ``route`` is ``rest``, ``oip_http``, ``oip_grpc``,
    ``grpc`` or ``jobs``; ``service`` and ``endpoint`` are empty when the request named no
    known endpoint (so that unknown names cannot grow the label set)."""
    key = (service, endpoint, route, status)
    children = _children.get(key)
    if children is None:
        children = (REQUESTS.labels(service, endpoint, route, str(status)),
                    LATENCY.labels(service, endpoint, route))
        _children[key] = children
    children[0].inc()
    children[1].observe(seconds)
