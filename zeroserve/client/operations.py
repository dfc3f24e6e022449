"""The serving operations of the SDK, in both protocols' forms (pure): call an endpoint, run
an OIP model, list the services, ask for health; and the HTTP request of a stream
(:func:`stream_request`). The job operations are in ``job_operations``.
"""
from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from zeroserve.client import payloads
from zeroserve.client.transport import GrpcAnswer, GrpcRequest, HttpAnswer, HttpRequest, Operation
from zeroserve.grpc_gen import grpc_service_pb2 as oip_pb
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb

# How long past a call's deadline the client waits for the gateway's own 504 over HTTP (the
# gateway sends it 0.5 s past the deadline when the broker has not answered by then).
GATEWAY_504_GRACE_S = 1.0


def checked(answer: HttpAnswer, ok: range = range(200, 201)) -> HttpAnswer:
    """``answer``, or raises the typed exception of its error status."""
    if answer.status not in ok:
        raise payloads.http_error(answer.status, answer.body, answer.headers.get("retry-after"))
    return answer


def _deadline_header(timeout_s: float) -> dict[str, str]:
    return {payloads.TIMEOUT_HEADER: f"{timeout_s:.3f}"}


@dataclass(frozen=True)
class Call(Operation):
    """``service/endpoint`` with named inputs, at ``version`` (None: the gateway's choice: the
    traffic split's, else the latest); its value."""

    service: str
    endpoint: str
    inputs: Mapping[str, Any]
    version: int | None = None

    def http(self, timeout_s: float) -> HttpRequest:
        version = {payloads.VERSION_HEADER: str(self.version)} if self.version else {}
        return HttpRequest(
            "POST", f"/{self.service}/{self.endpoint}",
            payloads.encode_inputs_parts(self.inputs),
            {"Content-Type": payloads.MSGPACK, "Accept": payloads.MSGPACK,
             **_deadline_header(timeout_s), **version}, GATEWAY_504_GRACE_S)

    def from_http(self, answer: HttpAnswer) -> Any:
        ctype = checked(answer).headers.get("content-type", "")
        if ctype.startswith(payloads.MSGPACK):
            return payloads.decode_value(answer.body)
        return json.loads(answer.body)

    def grpc(self) -> Sequence[GrpcRequest]:
        version = ((payloads.VERSION_METADATA, str(self.version)),) if self.version else ()
        return [GrpcRequest("Serving", "Call", pb.CallRequest(
            service=self.service, endpoint=self.endpoint,
            inputs=payloads.encode_inputs(self.inputs)), version)]

    def from_grpc(self, replies: Sequence[Any]) -> Any:
        return payloads.decode_value(replies[0].value)

    def runs(self) -> str:
        return f"{self.service}.{self.endpoint}"


STAGES_HEADER = "X-Zeroserve-Stages"  # asks for the stages that answered a call
STAGES_METADATA = "zeroserve-stages"  # ... as gRPC metadata, and its trailing answer
REQUEST_ID_METADATA = "zeroserve-request-id"


@dataclass(frozen=True)
class Staged:
    """A call's value, with its request id and the stages that answered it: one map per
    stage (``service``, ``endpoint``, ``version``, ``worker``, ``batch``, ``queue_ms``,
    ``exec_ms``, and ``caller`` for the stages it called; ``docs/composition.md``)."""

    value: Any
    request_id: str
    stages: list


@dataclass(frozen=True)
class StagedCall(Call):
    """A :class:`Call` that asks for its stages; a :class:`Staged`."""

    def http(self, timeout_s: float) -> HttpRequest:
        plain = super().http(timeout_s)
        return HttpRequest(plain.method, plain.path, plain.body,
                           {**plain.headers, STAGES_HEADER: "1"}, plain.grace_s)

    def from_http(self, answer: HttpAnswer) -> Staged:
        return Staged(super().from_http(answer), answer.headers.get("x-request-id", ""),
                      _stages(answer.headers.get(STAGES_HEADER.lower())))

    def grpc(self) -> Sequence[GrpcRequest]:
        (plain,) = super().grpc()
        return [GrpcRequest(plain.service, plain.method, plain.message,
                            (*plain.metadata, (STAGES_METADATA, "1")), trailing=True)]

    def from_grpc(self, replies: Sequence[Any]) -> Staged:
        answer: GrpcAnswer = replies[0]
        return Staged(super().from_grpc([answer.reply]),
                      answer.trailing.get(REQUEST_ID_METADATA, ""),
                      _stages(answer.trailing.get(STAGES_METADATA)))


def _stages(text: str | None) -> list:
    """The stages a gateway answered (an empty list for none, or for what is not a list)."""
    try:
        stages = json.loads(text) if text else []
    except ValueError:
        return []
    return stages if isinstance(stages, list) else []


def stream_request(service: str, endpoint: str, inputs: Mapping[str, Any], timeout_s: float,
                   idle_timeout_s: float | None) -> HttpRequest:
    """The REST request of a stream of ``service/endpoint``: chunks in the msgpack stream
    framing (:class:`~zeroserve.client.payloads.StreamFrames`), the first within
    ``timeout_s``, each next within ``idle_timeout_s`` (None: the gateway's setting)."""
    headers = {"Content-Type": payloads.MSGPACK, "Accept": payloads.STREAM_MSGPACK,
               **_deadline_header(timeout_s)}
    if idle_timeout_s is not None:
        headers[payloads.STREAM_IDLE_HEADER] = f"{idle_timeout_s:.3f}"
    return HttpRequest("POST", f"/{service}/{endpoint}", payloads.encode_inputs(inputs),
                       headers, GATEWAY_504_GRACE_S)


@dataclass(frozen=True)
class Infer(Operation):
    """An Open Inference Protocol model on named tensors; its outputs by name."""

    model: str
    inputs: Mapping[str, Any]
    outputs: list[str] | None

    def http(self, timeout_s: float) -> HttpRequest:
        body, length = payloads.infer_body(self.inputs, self.outputs)
        return HttpRequest(
            "POST", f"/v2/models/{urllib.parse.quote(self.model)}/infer", body,
            {payloads.HEADER_LENGTH: str(length), "Content-Type": "application/octet-stream",
             **_deadline_header(timeout_s)}, GATEWAY_504_GRACE_S)

    def from_http(self, answer: HttpAnswer) -> dict[str, np.ndarray]:
        length = checked(answer).headers.get(payloads.HEADER_LENGTH.lower())
        return payloads.infer_outputs(answer.body, None if length is None else int(length))

    def grpc(self) -> Sequence[GrpcRequest]:
        return [GrpcRequest("Inference", "ModelInfer",
                            payloads.infer_request(self.model, self.inputs, self.outputs))]

    def from_grpc(self, replies: Sequence[Any]) -> dict[str, np.ndarray]:
        return payloads.infer_response_outputs(replies[0])

    def runs(self) -> str:
        return self.model


def _services_of(reply: pb.ServicesReply) -> dict[str, Any]:
    return dict(msgpack.unpackb(reply.services, raw=False))


class Services(Operation):
    """The services the cluster serves: ``{name: {"endpoints": {...}, "workers": n}}``."""

    resendable = True

    def http(self, timeout_s: float) -> HttpRequest:
        return HttpRequest("GET", "/v1/services")

    def from_http(self, answer: HttpAnswer) -> dict[str, Any]:
        return dict(json.loads(checked(answer).body)["services"])

    def grpc(self) -> Sequence[GrpcRequest]:
        return [GrpcRequest("Serving", "Services", pb.ServicesRequest())]

    def from_grpc(self, replies: Sequence[Any]) -> dict[str, Any]:
        return _services_of(replies[0])


class Health(Operation):
    """``{"live", "ready", "services": {name: workers}, "reason"}``."""

    resendable = True

    def http(self, timeout_s: float) -> HttpRequest:
        return HttpRequest("GET", "/readyz")

    def from_http(self, answer: HttpAnswer) -> dict[str, Any]:
        state = json.loads(answer.body) if answer.body else {}
        return {"live": True, "ready": answer.status == 200,
                "services": state.get("services", {}), "reason": state.get("reason", "")}

    def grpc(self) -> Sequence[GrpcRequest]:
        return [GrpcRequest("Inference", "ServerReady", oip_pb.ServerReadyRequest()),
                GrpcRequest("Serving", "Services", pb.ServicesRequest())]

    def from_grpc(self, replies: Sequence[Any]) -> dict[str, Any]:
        ready = replies[0].ready
        return {"live": True, "ready": ready,
                "services": {k: v.get("workers", 0) for k, v in _services_of(replies[1]).items()},
                "reason": "" if ready else "no worker has registered, or no broker answers"}
