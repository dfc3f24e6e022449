"""OpenAPI says which endpoints stream: their 200 answer is server-sent events or NDJSON, and
they take the stream limit headers; other endpoints' calls are described as before."""
from __future__ import annotations

from gateway.openapi import describe
from zeroserve.schema import Field
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription


def _doc() -> dict:
    inputs = (Field("n", kind="int"),)
    service = ServiceDescription("chat", {
        "generate": EndpointDescription("chat", "generate", inputs, streams=True),
        "ping": EndpointDescription("chat", "ping", inputs)})
    return describe({"chat": service}, "0")


def test_a_streaming_endpoint_answers_events_or_ndjson_and_takes_the_limit_headers() -> None:
    post = _doc()["paths"]["/chat/generate"]["post"]
    assert set(post["responses"]["200"]["content"]) == {"text/event-stream",
                                                        "application/x-ndjson"}
    assert post["x-zeroserve-streams"] is True
    assert {p["name"] for p in post["parameters"]} == {
        "X-Zeroserve-Timeout", "X-Zeroserve-Stream-Idle-Timeout",
        "X-Zeroserve-Stream-Total-Timeout"}
    assert post["responses"]["400"]["content"]["application/json"]


def test_an_ordinary_endpoint_answers_json_as_before() -> None:
    post = _doc()["paths"]["/chat/ping"]["post"]
    assert set(post["responses"]["200"]["content"]) == {"application/json"}
    assert "x-zeroserve-streams" not in post
    assert [p["name"] for p in post["parameters"]] == ["X-Zeroserve-Timeout"]
