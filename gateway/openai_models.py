"""Which endpoints the OpenAI-compatible API serves, under which model names (pure).

An endpoint declared with ``@zeroserve.api(openai="chat")`` (or ``"completion"``) is the
model ``service.endpoint``; a service with one endpoint of a kind is also the model
``service`` for that kind (``/v1/chat/completions`` with ``"model": "chat"`` reaches the chat
endpoint of service ``chat``). ``GET /v1/models`` lists both names.
"""
from __future__ import annotations

from collections.abc import Mapping

from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription


def _of_kind(info: ServiceDescription, kind: str) -> list[EndpointDescription]:
    return [e for e in info.endpoints.values() if e.openai == kind]


def model_names(services: Mapping[str, ServiceDescription]) -> list[str]:
    """Every OpenAI model name of ``services``: a service (when each of its kinds has one
    endpoint), then each of its OpenAI endpoints."""
    names = []
    for service, info in services.items():
        endpoints = [e for e in info.endpoints.values() if e.openai]
        if not endpoints:
            continue
        kinds = [e.openai for e in endpoints]
        if len(set(kinds)) == len(kinds):
            names.append(service)
        names.extend(f"{service}.{e.name}" for e in endpoints)
    return names


def resolve(model: str, kind: str, services: Mapping[str, ServiceDescription]
            ) -> EndpointDescription | str:
    """The endpoint serving ``model`` as a ``kind`` model, or why none does (a message for a
    404)."""
    info = services.get(model)
    if info is not None:
        found = _of_kind(info, kind)
        if len(found) == 1:
            return found[0]
        if found:
            return (f"service '{model}' has {len(found)} {kind} models; name one: "
                    + ", ".join(f"'{model}.{e.name}'" for e in found))
        return f"the model '{model}' is not a {kind} model"
    service, dot, endpoint = model.rpartition(".")
    info = services.get(service) if dot else None
    found_ep = info.endpoints.get(endpoint) if info is not None else None
    if found_ep is None:
        return f"The model '{model}' does not exist"
    if found_ep.openai != kind:
        return f"the model '{model}' is not a {kind} model"
    return found_ep
