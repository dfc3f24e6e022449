"""The gateway's CORS policy: which origins, methods and headers a browser may use."""
from __future__ import annotations

import pytest

from gateway.cors import CorsPolicy, PreflightRefused, cors_policy
from zeroserve.config import GatewaySettings

APP = "https://app.example"


def _policy(**settings: object) -> CorsPolicy:
    policy = cors_policy(GatewaySettings(**{"cors_allowed_origins": (APP,), **settings}))
    assert policy is not None
    return policy


def test_cors_is_off_without_an_allowed_origin() -> None:
    assert cors_policy(GatewaySettings()) is None
    assert cors_policy(GatewaySettings(cors_allowed_origins=(" ",))) is None


def test_an_allowed_origin_is_named_back_and_another_gets_nothing() -> None:
    policy = _policy()
    assert policy.answer_headers(APP) == {"Access-Control-Allow-Origin": APP, "Vary": "Origin",
                                          "Access-Control-Expose-Headers": "Retry-After"}
    assert policy.answer_headers("https://evil.example") == {}
    assert policy.answer_headers(None) == {}
    assert _policy(cors_allowed_origins=("*",)).answer_headers("http://x")[
        "Access-Control-Allow-Origin"] == "*"
    assert _policy(cors_allowed_origins=(APP + "/",)).allows_origin(APP)  # as browsers send it


def test_a_preflight_is_answered_with_what_is_allowed() -> None:
    headers = _policy(cors_max_age_s=60).preflight({
        "Origin": APP, "Access-Control-Request-Method": "post",
        "Access-Control-Request-Headers": "content-type, x-api-key"})
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Methods"] == "GET, POST, DELETE"
    assert "X-API-Key" in headers["Access-Control-Allow-Headers"]
    assert headers["Access-Control-Max-Age"] == "60"


@pytest.mark.parametrize("request_headers, refused", [
    ({"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}, "origin"),
    ({"Origin": APP, "Access-Control-Request-Method": "PUT"}, "method"),
    ({"Origin": APP, "Access-Control-Request-Method": "POST",
      "Access-Control-Request-Headers": "Content-Type, X-Secret"}, "X-Secret"),
])
def test_a_preflight_asking_for_more_is_refused_saying_what(request_headers: dict,
                                                            refused: str) -> None:
    with pytest.raises(PreflightRefused, match=refused):
        _policy().preflight(request_headers)
