"""Which calls may be sent again after their connection broke once they were sent.

Such a call may have run. An endpoint declares whether running it twice is
acceptable (``retry_on_worker_loss``, True unless the endpoint has side effects);
the client learns the declarations from the gateway's service listing the first
time a connection breaks, and keeps them.
"""
from __future__ import annotations

from typing import Any

from zeroserve.client.transport import Operation


class ResendRule:
    """The endpoints' declarations, by OIP model name (``service.endpoint``, and ``service``
    for its first endpoint, as the gateway names them)."""

    def __init__(self) -> None:
        self._allowed: dict[str, bool] = {}

    def allows(self, operation: Operation) -> bool | None:
        """Whether ``operation`` may be sent again after its connection broke; None while
        the declaration of the endpoint it runs is not known (ask the service listing)."""
        model = operation.runs()
        return operation.resendable if model is None else self._allowed.get(model)

    def learn(self, services: dict[str, Any]) -> None:
        """Take the declarations of a service listing (``Client.services()``)."""
        for service, info in services.items():
            endpoints = dict(info.get("endpoints") or {})
            for i, (name, desc) in enumerate(endpoints.items()):
                allowed = bool(desc.get("retry_on_worker_loss", True)) \
                    if isinstance(desc, dict) else False
                self._allowed[f"{service}.{name}"] = allowed
                if i == 0:
                    self._allowed[service] = allowed
