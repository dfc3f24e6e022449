"""Services that call services: ``zeroserve.depends`` and what a call of a dependency raises.

::

    @zeroserve.service(name="rank")
    class Rank:
        embed = zeroserve.depends("embed")     # by name, or by the service class

        @zeroserve.api
        async def top(self, query: str) -> list:
            vector = await self.embed.call("encode", text=[query])
            ...

In a worker, the attribute is a handle on the other service (``call`` from async code,
``call_sync`` from a sync endpoint). A call is an ordinary request through the broker:
load-balanced over the callee's workers and batched with every other call of that endpoint.
It gets what is left of the calling request's deadline. A failure raises
:class:`DependencyError`, which names the callee and carries its status; if the endpoint lets
it escape, its caller is answered with that status and a message naming the failing stage.
"""
from __future__ import annotations

from typing import Any


class DependencyError(Exception):
    """A call of another service failed: ``service.endpoint`` answered ``status`` (an HTTP-like
    code: 400, 404, 500, 503, 504, ...) with ``message``."""

    def __init__(self, service: str, endpoint: str, status: int, message: str) -> None:
        super().__init__(f"{service}.{endpoint} answered {status}: {message}")
        self.service = service
        self.endpoint = endpoint
        self.status = status
        self.message = message


class Dependency:
    """A declared dependency on service ``name`` (what :func:`depends` returns). Outside a
    worker, reading the attribute raises: nothing can be called there."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.attribute = ""

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        raise RuntimeError(f"dependency {self.attribute!r} on service {self.name!r} can only "
                           "be called in a zeroserve worker")


def depends(target: str | type) -> Any:
    """Declare, as a class attribute of a service, that it calls service ``target`` (its name,
    or its ``@zeroserve.service`` class)."""
    if isinstance(target, str):
        if not target:
            raise ValueError("depends() needs a service name")
        return Dependency(target)
    from zeroserve.service import service_spec  # the service module imports this one

    try:
        return Dependency(service_spec(target).name)
    except TypeError:
        raise TypeError(f"depends({target!r}): give a service name or a class decorated with "
                        "@zeroserve.service") from None


def dependencies_of(cls: type) -> dict[str, str]:
    """The dependencies a service class declares: attribute name -> service name."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for attribute, value in vars(klass).items():
            if isinstance(value, Dependency):
                found[attribute] = value.name
    return found
