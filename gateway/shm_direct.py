"""Shared memory inputs, read by the gateway or, on the gateway's host, by the worker itself.

An OIP input that names a system shared memory slice (:func:`gateway.shm_regions.slice_of`)
reaches the worker one of two ways:

- *in place*: when every worker of the endpoint's service shares the gateway's ``/dev/shm``
  (the ``(namespace, key prefix)`` their READY gave, in the broker's MODELS answer:
  :meth:`gateway.broker_link.BrokerLink.shm_namespaces`), ``gateway.shm_direct`` is on, the
  input is declared as a tensor (or ``Any``) and its datatype is a fixed-size number other than
  BOOL, the gateway checks the slice as for a read (owner, bounds, the object's size now, the
  byte size against the shape) and sends a reference
  (:class:`~zeroserve.wire.shm_refs.ShmRef`, standing in as a
  :class:`~zeroserve.wire.shm_refs.ShmTensor` through the schema checks); the worker reads the
  bytes itself;
- *copied*: otherwise the gateway reads the bytes (:func:`gateway.oip_rest_body.read_shm_inputs`)
  and they travel through the broker like a body's.

Outputs are always written by the gateway.
"""
from __future__ import annotations

from gateway.oip_rest_body import InferRequest, read_shm_inputs
from gateway.shm_regions import CallerRegions
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.oip_tensors import numpy_dtype
from zeroserve.wire.shm_refs import referable, stand_in

_IN_PLACE_KINDS = ("tensor", "any")  # inputs whose array reaches the worker as it is


def place_shm_inputs(request: InferRequest, regions: CallerRegions | None,
                     info: EndpointDescription,
                     workers: frozenset[tuple[str | None, str | None]]) -> None:
    """Put ``request``'s shared memory inputs into its ``inputs``: references where the
    endpoint's ``workers`` (their ``(namespace, key prefix)``) read them in place, copies
    otherwise. :class:`~gateway.shm_regions.RegionError` as for a read."""
    if request.shm_inputs and regions is not None and regions.registry.reads_in_place(workers):
        kinds = {f.name: f.kind for f in info.inputs}
        for name, (datatype, shape, where) in list(request.shm_inputs.items()):
            dtype = numpy_dtype(datatype, name)
            if kinds.get(name) not in _IN_PLACE_KINDS or not referable(dtype):
                continue
            request.inputs[name] = (datatype, stand_in(regions.reference(where, name, dtype,
                                                                         shape)))
            del request.shm_inputs[name]
    read_shm_inputs(request, regions)
