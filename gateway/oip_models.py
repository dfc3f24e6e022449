"""Service endpoints seen as Open Inference Protocol models (pure).

Each endpoint is a model: ``service`` names the service's default (first declared)
endpoint and ``service.endpoint`` names each one. Metadata and the Triton model
configuration come from the endpoint's declared inputs and output (or named outputs); a batching
endpoint reports ``max_batch_size`` > 0 and a leading ``-1`` in every metadata
shape (the configuration's ``dims`` leave the batch dimension out, as Triton's
do). A model's versions are its service's versions served (``@zeroserve.service(version=
...)``); each version has its own endpoints and schema, and a model names an endpoint of any of
them. A streaming endpoint is a decoupled model (``model_transaction_policy.decoupled``): each
chunk is one response.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import zeroserve
from gateway.json_body import parse_json
from zeroserve.schema import Field
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription
from zeroserve.wire.dtypes import dtype_named
from zeroserve.wire.oip_tensors import TensorError, as_output, datatype_of

PLATFORM = "zeroserve"

# the datatype and shape advertised for inputs and outputs that are not declared tensors
_SCALARS = {"int": ("INT64", [1]), "float": ("FP64", [1]), "bool": ("BOOL", [1]),
            "str": ("BYTES", [1])}


@dataclass(frozen=True)
class ServerIdentity:
    """What OIP server metadata says the server is (``gateway.server_name`` and
    ``gateway.server_version``: setups written for Triton may check them)."""

    name: str = "zeroserve"
    version: str = zeroserve.__version__


def server_metadata(server: ServerIdentity, extensions: list[str]) -> dict[str, Any]:
    """The server metadata object (``GET /v2``, gRPC ServerMetadata)."""
    return {"name": server.name, "version": server.version, "extensions": list(extensions)}


@dataclass(frozen=True)
class ModelRef:
    """A model name resolved to the endpoint that serves it, at one version of its service."""

    name: str
    service: str
    endpoint: str
    version: int = 1

    @property
    def is_default(self) -> bool:
        """Whether the model is its service's name: its default (first declared) endpoint."""
        return self.name == self.service


def _each_version(info: ServiceDescription) -> list[ServiceDescription]:
    return [d for v in info.served_versions() if (d := info.at(v)) is not None]


def model_names(services: Mapping[str, ServiceDescription]) -> list[ModelRef]:
    """Every model of ``services`` (by service name) at each version served: each service,
    then each of its endpoints."""
    refs = []
    for service, info in services.items():
        for at in _each_version(info):
            endpoints = list(at.endpoints)
            if endpoints:
                refs.append(ModelRef(service, service, endpoints[0], at.version))
            refs.extend(ModelRef(f"{service}.{ep}", service, ep, at.version)
                        for ep in endpoints)
    return refs


def versions_of(ref: ModelRef, services: Mapping[str, ServiceDescription]) -> list[ModelRef]:
    """Model ``ref`` at each version of its service that has it (:func:`model_names`)."""
    return [r for r in model_names({ref.service: services[ref.service]})
            if r.name == ref.name] if ref.service in services else []


def repository_index(services: Mapping[str, ServiceDescription], ready_only: bool = False
                     ) -> list[dict[str, str]]:
    """The model_repository index of ``services`` (as for :func:`model_names`, already limited
    to what the caller may see): every model at each version, ``READY`` while a worker serves
    that version."""
    index = []
    for ref in model_names(services):
        at = services[ref.service].at(ref.version)
        ready = at is not None and bool(at.workers)
        if ready or not ready_only:
            index.append({"name": ref.name, "version": str(ref.version),
                          "state": "READY" if ready else "UNAVAILABLE",
                          "reason": "" if ready else "no worker serves it"})
    return index


def resolve(model: str, services: Mapping[str, ServiceDescription]) -> ModelRef | None:
    """The endpoint serving ``model`` among ``services`` (as for :func:`model_names`) at the
    latest version that has it, or None if no service has it."""
    info = services.get(model)
    if info is not None and info.endpoints:
        return ModelRef(model, model, next(iter(info.endpoints)), info.version)
    service, dot, endpoint = model.rpartition(".")
    info = services.get(service) if dot else None
    if info is None:
        return None
    having = [at.version for at in _each_version(info) if endpoint in at.endpoints]
    if endpoint in info.endpoints:
        return ModelRef(model, service, endpoint, info.version)
    return ModelRef(model, service, endpoint, max(having)) if having else None


def batches(info: EndpointDescription) -> bool:
    """Whether OIP clients may send several rows: a batching endpoint along dimension 0."""
    return info.batchable and info.batch_dim == 0 and info.max_batch_size > 1


def _tensor(field: Field, batched: bool) -> tuple[str, list[int]]:
    if field.kind != "tensor":
        return _SCALARS.get(field.kind, ("BYTES", [-1]))
    datatype = "FP32" if field.dtype is None else datatype_of(dtype_named(field.dtype))
    shape = [-1] if field.shape is None else [int(d) for d in field.shape]
    if batched:
        shape = [-1, *shape[1:]] if field.shape is not None else [-1, -1]
    return datatype, shape


def _outputs(info: EndpointDescription) -> list[Field]:
    """The declared named outputs, else the one output unless it is a dict or undeclared
    (except a stream's chunks: one output, ``output``)."""
    if info.outputs:
        return list(info.outputs)
    if info.output.kind == "dict" or (info.output.kind == "any" and not info.streams):
        return []
    return [info.output]


def metadata(ref: ModelRef, info: EndpointDescription, versions: list[str] | None = None
             ) -> dict[str, Any]:
    """The model metadata object (``GET /v2/models/{m}``) of ``ref`` at its version;
    ``versions``: every version served (default: just that one)."""
    batched = batches(info)

    def describe(field: Field) -> dict[str, Any]:
        datatype, shape = _tensor(field, batched)
        return {"name": field.name, "datatype": datatype, "shape": shape}

    return {"name": ref.name, "versions": versions or [str(ref.version)], "platform": PLATFORM,
            "inputs": [describe(f) for f in info.inputs],
            "outputs": [describe(f) for f in _outputs(info)]}


def _config_tensor(field: Field, batched: bool) -> dict[str, Any]:
    datatype, shape = _tensor(field, batched)
    batch_dim = batched and field.kind == "tensor"  # _tensor put a leading -1 there
    entry: dict[str, Any] = {"name": field.name, "data_type": config_datatype(datatype),
                             "dims": shape[1:] if batch_dim else shape}
    if not field.required:
        entry["optional"] = True
    return entry


def config_datatype(datatype: str) -> str:
    """The model configuration's ``DataType`` name of an OIP datatype (``BYTES``:
    ``TYPE_STRING``, ``BF16``: ``TYPE_BF16``)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def config(ref: ModelRef, info: EndpointDescription) -> dict[str, Any]:
    """The Triton model configuration (``GET /v2/models/{m}/config``), as JSON.

    ``input`` and ``output`` list the same tensors as the metadata, with Triton's
    ``data_type`` names; on a batching model their ``dims`` leave out the batch dimension."""
    batched = batches(info)
    cfg: dict[str, Any] = {"name": ref.name, "platform": PLATFORM, "backend": PLATFORM,
                           "max_batch_size": info.max_batch_size if batched else 0,
                           "input": [_config_tensor(f, batched) for f in info.inputs],
                           "output": [_config_tensor(f, batched) for f in _outputs(info)]}
    if batched:
        cfg["dynamic_batching"] = {
            "max_queue_delay_microseconds": int(info.max_latency_ms * 1000)}
    if info.streams:  # each chunk is one response of the request (Triton's decoupled models)
        cfg["model_transaction_policy"] = {"decoupled": True}
    return cfg


def endpoint_inputs(info: EndpointDescription, tensors: dict[str, tuple[str, np.ndarray]],
                    model: str = "") -> dict[str, Any]:
    """The endpoint's inputs from OIP tensors ``{name: (datatype, array)}`` sent to ``model``
    (default: the service's name), whose errors begin as Triton's do (clients match them).

    A declared tensor must arrive with its declared datatype; scalar inputs (int, float,
    bool, str) take a one-element tensor; a ``dict`` input takes one BYTES element of JSON.
    The result still goes through :func:`zeroserve.schema.validate_inputs`.
    """
    fields = {f.name: f for f in info.inputs}
    out: dict[str, Any] = {}
    for name, (datatype, arr) in tensors.items():
        field = fields.get(name)
        if field is None:
            raise TensorError(f"unexpected inference input '{name}' for model "
                              f"'{model or info.service}': the model has no input '{name}'; "
                              f"its inputs are {sorted(fields)}")
        out[name] = _input_value(field, datatype, arr)
    return out


def _input_value(field: Field, datatype: str, arr: np.ndarray) -> Any:
    if field.kind == "tensor":
        if field.dtype is not None:
            want = datatype_of(dtype_named(field.dtype))
            if datatype != want:
                raise TensorError(f"input '{field.name}': datatype {datatype} does not match "
                                  f"the model's {want}")
        return arr
    if field.kind in ("list", "any"):
        return arr.tolist() if field.kind == "list" else arr
    if arr.size != 1:
        raise TensorError(f"input '{field.name}': expected one element, got shape "
                          f"{list(arr.shape)}")
    value = arr.reshape(-1)[0]
    if field.kind in ("str", "dict"):
        if not isinstance(value, bytes):
            raise TensorError(f"input '{field.name}': expected BYTES, got {datatype}")
        try:
            text = value.decode()
            return text if field.kind == "str" else parse_json(text)
        except (UnicodeDecodeError, ValueError):
            kind = "UTF-8 text" if field.kind == "str" else "a JSON object"
            raise TensorError(f"input '{field.name}': expected {kind}") from None
    return value.item() if isinstance(value, np.generic) else value


def endpoint_outputs(info: EndpointDescription, value: Any) -> list[tuple[str, np.ndarray]]:
    """The OIP output tensors of an endpoint's answer: a dict gives one output per key (in
    the order of the declared outputs, when it declares them), anything else one output named
    after the declared output."""
    if isinstance(value, dict) and info.outputs and all(f.name in value for f in info.outputs):
        return [(f.name, _output(f.name, value[f.name])) for f in info.outputs]
    if isinstance(value, dict):
        return [(str(k), _output(str(k), v)) for k, v in value.items()]
    return [(info.output.name, _output(info.output.name, value))]


def _output(name: str, value: Any) -> np.ndarray:
    try:
        return as_output(value)
    except TensorError as exc:
        raise TensorError(f"output '{name}': {exc}") from None
