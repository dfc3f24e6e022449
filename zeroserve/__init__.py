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
from zeroserve.client import (
                              BadRequest,
                              Client,
                              DeadlineExceeded,
                              NotFound,
                              Overloaded,
                              ServerError,
                              ZeroserveError,
)
from zeroserve.schema import Tensor
from zeroserve.service import api, service

__version__ = "0.1.0"

__all__ = ["service", "api", "Tensor", "Client", "ZeroserveError", "BadRequest", "NotFound",
           "Overloaded", "DeadlineExceeded", "ServerError", "__version__"]
