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
from zeroserve.async_client import AsyncClient
from zeroserve.client import Client
from zeroserve.errors import (
    BadRequest,
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
from zeroserve.jobs_client import Job, JobCancelled, JobFailed
from zeroserve.schema import Tensor
from zeroserve.service import api, service
from zeroserve.task import JobContext, task

__version__ = "0.1.0"

__all__ = ["service", "api", "Tensor", "Client", "AsyncClient", "ZeroserveError", "BadRequest",
           "NotFound", "Overloaded", "Unreachable", "DeadlineExceeded", "ServerError",
           "PayloadTooLarge", "Unauthorized", "Forbidden", "__version__",
           "task", "JobContext", "Job", "JobFailed", "JobCancelled", "Conflict"]
