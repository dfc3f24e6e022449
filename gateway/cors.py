"""Cross-origin calls from browser front ends (CORS): which origins, methods and headers the
gateway allows, and the headers that say so.

Off unless ``gateway.cors_allowed_origins`` names an origin (``*``: any). A simple call from an
allowed origin gets ``Access-Control-Allow-Origin`` (and ``Vary: Origin``) on its answer, errors
included; a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered 204 with
the allowed methods and headers when the origin, the method and every requested header are
allowed, else 403 saying which is not. A preflight needs no API key (browsers send none); the
call it clears does. Pure: headers in, headers out.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from zeroserve.config import GatewaySettings

ANY = "*"
REQUEST_METHOD = "Access-Control-Request-Method"
REQUEST_HEADERS = "Access-Control-Request-Headers"


class PreflightRefused(Exception):
    """A preflight that asks for an origin, a method or a header that is not allowed."""


@dataclass(frozen=True)
class CorsPolicy:
    """The allowed origins (exact, as browsers send them: ``https://app.example``), methods and
    request headers (case-insensitive), the headers answers expose, and how long a browser may
    keep a preflight's answer."""

    origins: frozenset[str]
    methods: tuple[str, ...]
    headers: tuple[str, ...]
    exposed: tuple[str, ...] = ()
    max_age_s: int = 600

    def allows_origin(self, origin: str) -> bool:
        return ANY in self.origins or origin in self.origins

    def answer_headers(self, origin: str | None) -> dict[str, str]:
        """The headers every answer to a call from ``origin`` carries (none for a call
        without an Origin, or from an origin not allowed)."""
        if not origin or not self.allows_origin(origin):
            return {}
        headers = {"Access-Control-Allow-Origin": ANY if ANY in self.origins else origin,
                   "Vary": "Origin"}
        if self.exposed:
            headers["Access-Control-Expose-Headers"] = ", ".join(self.exposed)
        return headers

    def preflight(self, request: Mapping[str, str]) -> dict[str, str]:
        """The headers of the 204 answer to a preflight with the request's ``headers``
        (case-insensitive names); PreflightRefused says what is not allowed."""
        origin = request.get("Origin", "")
        if not self.allows_origin(origin):
            raise PreflightRefused(f"origin {origin!r} may not call this gateway")
        method = request.get(REQUEST_METHOD, "").upper()
        if method not in self.methods:
            raise PreflightRefused(f"method {method!r} is not allowed from other origins "
                                   f"(allowed: {', '.join(self.methods)})")
        allowed = {h.lower() for h in self.headers}
        asked = [h.strip() for h in request.get(REQUEST_HEADERS, "").split(",") if h.strip()]
        refused = [h for h in asked if h.lower() not in allowed]
        if refused:
            raise PreflightRefused(f"headers {', '.join(refused)} are not allowed from other "
                                   f"origins (allowed: {', '.join(self.headers)})")
        return {**self.answer_headers(origin),
                "Access-Control-Allow-Methods": ", ".join(self.methods),
                "Access-Control-Allow-Headers": ", ".join(self.headers),
                "Access-Control-Max-Age": str(self.max_age_s)}


def _upper(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(n.strip().upper() for n in names if n.strip())


def cors_policy(gateway: GatewaySettings) -> CorsPolicy | None:
    """The gateway's CORS policy from its settings; None (off) without an allowed origin."""
    origins = frozenset(o.strip().rstrip("/") if o.strip() != ANY else ANY
                        for o in gateway.cors_allowed_origins if o.strip())
    if not origins:
        return None
    return CorsPolicy(origins, _upper(gateway.cors_allowed_methods),
                      tuple(h.strip() for h in gateway.cors_allowed_headers if h.strip()),
                      tuple(h.strip() for h in gateway.cors_exposed_headers if h.strip()),
                      gateway.cors_max_age_s)
