"""zeroserve: serve models from a cluster of processes joined by ZeroMQ.

Write a service::

    import numpy as np
    import zeroserve

    @zeroserve.service(name="mlp")
    class MLP:
        @zeroserve.api
        def predict(self, x: np.ndarray) -> np.ndarray:
            ...

serve it with ``zeroserve serve file.py:MLP`` and call it with
``zeroserve.Client("http://localhost:8000").call("mlp", "predict", x=array)``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zeroserve import metrics
from zeroserve.dependency import DependencyError, depends
from zeroserve.schema import Tensor
from zeroserve.service import api, service
from zeroserve.task import JobContext, task

if TYPE_CHECKING:
    from zeroserve.client.async_client import AsyncClient
    from zeroserve.client.client import Client
    from zeroserve.client.errors import (
        BadRequest,
        CallInterrupted,
        Conflict,
        DeadlineExceeded,
        Forbidden,
        NotFound,
        Overloaded,
        PayloadTooLarge,
        ServerError,
        Unauthorized,
        Unreachable,
        ZeroserveError,
    )
    from zeroserve.client.jobs import Job, JobCancelled, JobFailed

__version__ = "0.1.0"

# The client SDK (and grpc with it) is imported on first use, so that a daemon that
# imports the user API or the wire contract never loads it.
_SDK = {
    "Client": "zeroserve.client.client",
    "AsyncClient": "zeroserve.client.async_client",
    "Job": "zeroserve.client.jobs",
    "JobFailed": "zeroserve.client.jobs",
    "JobCancelled": "zeroserve.client.jobs",
    **{name: "zeroserve.client.errors" for name in (
        "ZeroserveError", "BadRequest", "NotFound", "Overloaded", "Unreachable",
        "DeadlineExceeded", "ServerError", "PayloadTooLarge", "Unauthorized", "Forbidden",
        "Conflict", "CallInterrupted")},
}


def __getattr__(name: str) -> Any:
    module = _SDK.get(name)
    if module is None:
        raise AttributeError(f"module 'zeroserve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["service", "api", "Tensor", "depends", "DependencyError", "Client", "AsyncClient",
           "ZeroserveError", "BadRequest",
           "NotFound", "Overloaded", "Unreachable", "DeadlineExceeded", "ServerError",
           "PayloadTooLarge", "Unauthorized", "Forbidden", "__version__",
           "task", "JobContext", "metrics", "Job", "JobFailed", "JobCancelled", "Conflict",
           "CallInterrupted"]
