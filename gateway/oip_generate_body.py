"""Triton's generate extension: its request and response JSON (pure).

A request is a JSON object whose keys name the model's inputs (``text_input``, say), plus an
optional ``parameters`` object; a parameter whose name is an input of the endpoint is that
input too (``{"text_input": "hi", "parameters": {"max_tokens": 8}}``), the others are
ignored, as a model ignores parameters it does not read. A response is
``{"model_name", "model_version", <output name>: value, ...}``: each output tensor of one
chunk (:func:`gateway.oip_models.endpoint_outputs`) under its name, a bare value when it has
one element, else its flat ``data`` list.

``/generate`` answers one response. Triton refuses a model that produces several; zeroserve
joins the chunks of a text generator into one (each output a single text element, joined in
order, as ``generate_stream``'s events would be read) and refuses the others with Triton's
message.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.oip_tensors import TensorError, to_json

ONE_RESPONSE = ("generate expects the model to produce exactly 1 response, use "
                "generate_stream for a model that generates various number of responses")

Outputs = list[tuple[str, np.ndarray]]


def generate_inputs(doc: Any, info: EndpointDescription) -> dict[str, Any]:
    """The endpoint's inputs of a generate request body (parsed JSON); :class:`TensorError`
    (400) if it is not an object, or names an input both as a key and as a parameter."""
    if not isinstance(doc, dict):
        raise TensorError("the generate request must be a JSON object")
    params = doc.get("parameters", {})
    if not isinstance(params, dict):
        raise TensorError("'parameters' must be an object")
    inputs = {k: v for k, v in doc.items() if k != "parameters"}
    declared = {f.name for f in info.inputs}
    for name, value in params.items():
        if name in declared:
            if name in inputs:
                raise TensorError(f"'{name}' is given both as an input and as a parameter")
            inputs[name] = value
    return inputs


def generate_response(model: str, outputs: Outputs, version: int = 1) -> dict[str, Any]:
    """One generate response carrying ``outputs`` of ``model`` at ``version``."""
    doc: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    for name, arr in outputs:
        data = to_json(arr)
        doc[name] = data[0] if arr.size == 1 else data
    return doc


def _is_text(arr: np.ndarray) -> bool:
    return arr.dtype.kind == "O" and arr.size == 1


def text_size(outputs: Outputs) -> int:
    """Bytes that ``outputs`` take (what ``/generate`` keeps while it joins chunks)."""
    return sum(len(to_json(a)[0]) if _is_text(a) else a.nbytes for _, a in outputs)


def joined(chunks: list[Outputs]) -> Outputs:
    """The outputs of the one ``/generate`` response made of every chunk's ``outputs``:
    the one chunk's, or the text of every chunk joined per output; :class:`TensorError`
    with Triton's message when they are not all text of the same outputs."""
    if len(chunks) == 1:
        return chunks[0]
    names = [name for name, _ in chunks[0]] if chunks else []
    if not chunks or any([n for n, _ in outs] != names or not all(_is_text(a) for _, a in outs)
                         for outs in chunks):
        raise TensorError(f"{ONE_RESPONSE}; it produced {len(chunks)}")
    out = []
    for index, name in enumerate(names):
        text = "".join(to_json(outs[index][1])[0] for outs in chunks)
        out.append((name, np.array([text], dtype=object)))
    return out
