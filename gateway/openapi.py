"""The gateway's OpenAPI 3 description, built from the services the broker knows (pure).

Every endpoint gets its own path (``POST /{service}/{endpoint}``) whose JSON body
schema follows the endpoint's declared inputs; the Open Inference Protocol
paths take the model names as an enum. ``/openapi.json`` serves it and
``/docs`` renders it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ml_dtypes
import numpy as np

from gateway.oip_models import model_names
from gateway.streams import IDLE_HEADER, TOTAL_HEADER
from zeroserve.schema import Field
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription
from zeroserve.wire.dtypes import dtype_named, is_float
from zeroserve.wire.jobs import JobState
from zeroserve.wire.oip_tensors import DATATYPES, MAX_DIMS

_ERROR = {"$ref": "#/components/schemas/Error"}
_JSON_SCALAR = {"int": {"type": "integer"}, "float": {"type": "number"},
                "bool": {"type": "boolean"}, "str": {"type": "string"},
                "list": {"type": "array"}, "dict": {"type": "object"}}


def _element(name: str | None) -> dict[str, Any]:
    if name is None:
        return {"type": "number"}
    dtype = dtype_named(name)
    if dtype.kind == "b":
        return {"type": "boolean"}
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return {"type": "integer", "minimum": int(info.min), "maximum": int(info.max)}
    if is_float(dtype):
        limit = float(ml_dtypes.finfo(dtype).max)  # numpy's finfo does not know bfloat16
        return {"type": "number", "minimum": -limit, "maximum": limit}
    return {"type": "string"}


def _tensor(field: Field) -> dict[str, Any]:
    """Nested arrays, one level per dimension, sized where the declaration fixes the size."""
    schema = _element(field.dtype)
    if field.shape is None:
        return {"type": "array", "description": "an array of any shape"}
    for dim in reversed(field.shape):
        level: dict[str, Any] = {"type": "array", "items": schema}
        if dim >= 0:
            level.update(minItems=dim, maxItems=dim)
        schema = level
    return schema


def input_schema(fields: Sequence[Field]) -> dict[str, Any]:
    """The JSON schema of an endpoint's body: an object of its named inputs."""
    properties = {f.name: _tensor(f) if f.kind == "tensor" else dict(_JSON_SCALAR.get(f.kind, {}))
                  for f in fields}
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "required": [f.name for f in fields if f.required]}


def _responses(ok: str, *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": ok, "content": {"application/json": {}}}}
    for status in errors:
        out[str(status)] = {"description": _ERROR_TEXT[status],
                            "content": {"application/json": {"schema": _ERROR}}}
    return out


_ERROR_TEXT = {400: "invalid input", 401: "no valid API key", 403: "key may not use it",
               404: "no such service, endpoint, model or job", 409: "the job's state forbids it",
               413: "body too large",
               500: "the endpoint raised", 503: "no worker, or queue full",
               504: "deadline passed"}
_CALL_ERRORS = (400, 401, 403, 404, 413, 500, 503, 504)


def _get(summary: str, ok: str, *errors: int) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": _responses(ok, *errors)}}


_JOB_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_JOB_STATES = [state.value for state in JobState]


def _job_paths() -> dict[str, Any]:
    """The durable jobs routes (docs/jobs.md)."""
    submitted = _responses("the job already stored under this idempotency key",
                           400, 401, 403, 404, 413, 503)
    submitted["202"] = {"description": "the job, stored", "content": {"application/json": {}}}
    by_id = {"parameters": [_JOB_ID]}
    return {
        "/v1/jobs": {
            "post": {"summary": "Submit a durable job to a task",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"type": "object", "required": ["service", "endpoint"],
                                    "properties": {"service": {"type": "string"},
                                                   "endpoint": {"type": "string"},
                                                   "inputs": {"type": "object"},
                                                   "idempotency_key": {"type": "string"}}}}}},
                     "responses": submitted},
            "get": {"summary": "Stored jobs, oldest first, a page at a time", "parameters": [
                {"name": "service", "in": "query", "schema": {"type": "string"}},
                {"name": "state", "in": "query", "schema": {"type": "string",
                                                            "enum": _JOB_STATES}},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                {"name": "cursor", "in": "query", "schema": {"type": "integer"}}],
                    "responses": _responses("a page of jobs", 400, 401)}},
        "/v1/jobs/{id}": {
            **by_id,
            "get": {"summary": "A job's status", "responses": _responses("the job", 401, 404)},
            "delete": {"summary": "Cancel a job",
                       "responses": _responses("the job", 401, 404, 409)}},
        "/v1/jobs/{id}/result": {
            **by_id, **_get("A succeeded job's result", "the result", 401, 404, 409)},
        "/v1/jobs/{id}/retry": {
            **by_id, "post": {"summary": "Run a failed or cancelled job again",
                              "responses": _responses("the job", 401, 404, 409)}},
    }


def _header(name: str, description: str, exclusive_minimum: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "number", "minimum": 0, "exclusiveMinimum": exclusive_minimum}}


def _stream_responses() -> dict[str, Any]:
    """The answers of an endpoint that streams: its chunks as server-sent events or NDJSON
    (``docs/streaming.md``), or an error answered before the first chunk."""
    out = _responses("", *_CALL_ERRORS)
    out["200"] = {
        "description": "the endpoint's chunks as they come: server-sent events (`data:` per "
                       "chunk, then `event: done`, or `event: error` with `{error, status}`), "
                       "or with `Accept: application/x-ndjson` one JSON object a line "
                       "(`{data}`, then `{done, chunks}` or `{error, status}`)",
        "content": {"text/event-stream": {"schema": {"type": "string"}},
                    "application/x-ndjson": {"schema": {"type": "string"}}}}
    return out


def _call(service: str, endpoint: str, desc: EndpointDescription) -> dict[str, Any]:
    """``POST /{service}/{endpoint}``: one answer, or a stream when the endpoint streams."""
    parameters = [_header("X-Zeroserve-Timeout", "deadline, seconds (of the first chunk of a "
                          "stream)" if desc.streams else "deadline, seconds")]
    if desc.streams:
        parameters += [_header(IDLE_HEADER, "longest gap between chunks, seconds"),
                       _header(TOTAL_HEADER, "longest stream, seconds; 0: no limit", False)]
    verb = "Stream" if desc.streams else "Call"
    operation: dict[str, Any] = {
        "summary": f"{verb} {service}.{endpoint}", "parameters": parameters,
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": input_schema(desc.inputs)}}},
        "responses": _stream_responses() if desc.streams else
        _responses("the endpoint's answer", *_CALL_ERRORS)}
    if desc.streams:
        operation["x-zeroserve-streams"] = True
    return operation


def describe(services: Mapping[str, ServiceDescription], version: str) -> dict[str, Any]:
    """The OpenAPI document for ``services`` (by service name)."""
    paths: dict[str, Any] = {
        "/healthz": _get("The gateway process is up", "up"),
        "/readyz": _get("The broker answers and a worker serves", "ready", 503),
        "/v1/services": _get("Services, their endpoints' schemas and workers", "services", 401),
        "/v2": _get("Open Inference Protocol server metadata", "metadata", 401),
        "/v2/health/live": _get("OIP liveness", "live"),
        "/v2/health/ready": _get("OIP readiness", "ready", 503),
        "/v2/repository/index": {"post": {
            "summary": "OIP model repository index", "requestBody": {"content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "ready": {"type": "boolean"}}}}}},
            "responses": _responses("the models", 400, 401)}},
        **_job_paths(),
    }
    for service, info in sorted(services.items()):
        for endpoint, desc in info.endpoints.items():
            paths[f"/{service}/{endpoint}"] = {"post": _call(service, endpoint, desc)}
    models = sorted(ref.name for ref in model_names(services))
    if models:
        model = {"name": "model", "in": "path", "required": True,
                 "schema": {"type": "string", "enum": models}}
        base = "/v2/models/{model}"
        paths[base] = {"get": {"summary": "OIP model metadata", "parameters": [model],
                               "responses": _responses("metadata", 401, 403, 404)}}
        paths[base + "/ready"] = {"get": {"summary": "OIP model readiness",
                                          "parameters": [model],
                                          "responses": _responses("ready", 404, 503)}}
        paths[base + "/config"] = {"get": {"summary": "Triton model configuration",
                                           "parameters": [model],
                                           "responses": _responses("config", 401, 403, 404)}}
        paths[base + "/infer"] = {"post": {
            "summary": "OIP inference (JSON tensors)", "parameters": [model],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/InferenceRequest"}}}},
            "responses": _responses("outputs", *_CALL_ERRORS)}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "zeroserve gateway", "version": version,
                 "description": "REST calls of every served endpoint and the Open Inference "
                                "Protocol (KServe V2)."},
        "paths": paths,
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"}}},
            "InferenceRequest": {
                "type": "object", "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "inputs": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["name", "datatype", "shape", "data"],
                        "properties": {
                            "name": {"type": "string"},
                            "datatype": {"type": "string", "enum": list(DATATYPES)},
                            "shape": {"type": "array", "maxItems": MAX_DIMS,
                                      "items": {"type": "integer", "minimum": 0}},
                            "data": {"type": "array"}}}},
                    "outputs": {"type": "array", "items": {
                        "type": "object", "required": ["name"],
                        "properties": {"name": {"type": "string"}}}}}}}},
    }
