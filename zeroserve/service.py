"""The service API: ``@zeroserve.service`` on a class, ``@zeroserve.api`` on its methods.

Inputs and outputs come from the method's type hints (``np.ndarray``, int,
float, str, bool, list, dict, or ``Annotated[np.ndarray, Tensor(dtype, shape)]``)
or from ``inputs=`` / ``outputs=`` given to ``@api``. Endpoints may be plain or
``async def``; a generator or async generator method is a streaming endpoint (each value it
yields is one chunk of the answer). A worker creates the service instance once and calls endpoints
on it.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeroserve.dependency import dependencies_of
from zeroserve.schema import Field, field_from_hint
from zeroserve.task import task_specs
from zeroserve.wire.descriptions import OPENAI_KINDS, EndpointDescription

_API_ATTR = "__zeroserve_api__"
_SERVICE_ATTR = "__zeroserve_service__"
@dataclass(frozen=True)
class ApiOptions:
    """What ``@api`` was given, before the service decorator resolves the schema."""

    name: str | None
    batchable: bool
    max_batch_size: int
    max_latency_ms: float
    batch_dim: int
    inputs: dict | None
    outputs: Any
    retry_on_worker_loss: bool
    openai: str = ""


@dataclass
class EndpointSpec:
    """One callable endpoint of a service and everything the cluster needs to know of it."""

    name: str
    method: str
    inputs: list[Field]
    output: Field
    is_async: bool
    batchable: bool = False
    max_batch_size: int = 1
    max_latency_ms: float = 0.0
    batch_dim: int = 0
    retry_on_worker_loss: bool = True
    streams: bool = False  # a generator (``is_async``: an async generator)
    openai: str = ""  # "chat" or "completion": served by the OpenAI-compatible API
    outputs: list[Field] = field(default_factory=list)  # declared named outputs (a dict answer)

    def describe(self, service: str, version: int = 1) -> EndpointDescription:
        """What READY tells the broker of this endpoint of ``service`` at ``version``."""
        return EndpointDescription(
            service, self.name, tuple(self.inputs), self.output, self.batchable,
            self.max_batch_size if self.batchable else 1, self.batch_dim,
            self.max_latency_ms if self.batchable else 0.0, self.retry_on_worker_loss,
            self.streams, outputs=tuple(self.outputs), openai=self.openai, version=version)


@dataclass
class ServiceSpec:
    """A user's service class, its version and its endpoints."""

    name: str
    cls: type
    endpoints: dict[str, EndpointSpec] = field(default_factory=dict)
    tasks: dict = field(default_factory=dict)  # name -> zeroserve.task.TaskSpec
    dependencies: dict[str, str] = field(default_factory=dict)  # attribute -> service name
    target: str | None = None  # how the operator named it (path/file.py:Class), if loaded
    version: int = 1  # workers of several versions of one service serve side by side

    def describe(self) -> dict[str, EndpointDescription]:
        """The endpoints that READY announces, by name."""
        return {name: ep.describe(self.name, self.version) for name, ep in self.endpoints.items()}


def api(fn: Callable | None = None, *, name: str | None = None, batchable: bool = False,
        max_batch_size: int = 64, max_latency_ms: float = 20.0, batch_dim: int = 0,
        inputs: dict | None = None, outputs: Any = None,
        retry_on_worker_loss: bool = True, openai: str = "") -> Any:
    """Mark a method of a service class as an endpoint, served at ``/{service}/{name}``.

    ``name`` defaults to the method name. ``batchable`` lets the broker merge
    concurrent requests along ``batch_dim`` into one call of at most
    ``max_batch_size`` rows, waiting at most ``max_latency_ms`` for a batch to
    fill. ``inputs`` maps argument names to a type or :class:`Tensor`
    (overriding the hints); ``outputs`` does the same for the return value, or, as a dict of
    names to types or :class:`Tensor`, declares named outputs: the endpoint then returns a dict
    of exactly those names, which the worker checks (Open Inference Protocol metadata lists
    them).
    ``retry_on_worker_loss`` re-sends a request to another worker when its
    worker dies mid-request (set False for endpoints with side effects).

    ``openai="chat"`` (the method takes ``messages``) or ``openai="completion"`` (it takes
    ``prompt``) also serves the endpoint as a model of the gateway's OpenAI-compatible API
    (``/v1/chat/completions``, ``/v1/completions``): it receives the messages (a list of
    ``{"role", "content"}`` with text content) or the prompt (str), and every request field
    that names one of its other inputs (``max_tokens``, ``temperature``, ``top_p``, ``stop``
    as a list, ``seed``...), and yields text (each chunk one token; or returns the whole
    text). See docs/openai.md.
    """
    if openai not in ("", *OPENAI_KINDS):
        raise ValueError(f"openai must be one of {list(OPENAI_KINDS)}, got {openai!r}")
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be at least 1")
    if max_latency_ms < 0:
        raise ValueError("max_latency_ms must not be negative")
    options = ApiOptions(name, batchable, max_batch_size, max_latency_ms, batch_dim, inputs,
                         outputs, retry_on_worker_loss, openai)

    def mark(func: Callable) -> Callable:
        setattr(func, _API_ATTR, options)
        return func

    return mark(fn) if fn is not None else mark


def _endpoint(func: Callable, options: ApiOptions) -> EndpointSpec:
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolved forward references: fall back to untyped
        hints = {}
    params = list(inspect.signature(func).parameters.values())[1:]  # drop self
    declared = options.inputs or {}
    inputs = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"endpoint {func.__name__}: *args/**kwargs are not supported")
        hint = declared.get(p.name, hints.get(p.name, Any))
        inputs.append(field_from_hint(p.name, hint, p.default is inspect.Parameter.empty))
    named = options.outputs if isinstance(options.outputs, dict) else None
    outputs = [field_from_hint(str(n), hint, True) for n, hint in (named or {}).items()]
    out_hint: Any
    if named is not None:
        out_hint = dict
    else:
        out_hint = options.outputs if options.outputs is not None else hints.get("return", Any)
    streams = inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
    if streams:
        if options.batchable:
            raise TypeError(f"endpoint {func.__name__} is a generator (it streams) and cannot "
                            "also be batchable")
        if named is not None:
            raise TypeError(f"endpoint {func.__name__} is a generator (it streams) and cannot "
                            "declare named outputs")
        out_hint = options.outputs if options.outputs is not None else Any
    wanted = {"chat": "messages", "completion": "prompt"}.get(options.openai)
    if wanted is not None and wanted not in {f.name for f in inputs}:
        raise TypeError(f"endpoint {func.__name__} is an OpenAI {options.openai} model and "
                        f"must take an input named {wanted!r}")
    return EndpointSpec(
        name=options.name or func.__name__, method=func.__name__, inputs=inputs,
        output=field_from_hint("output", out_hint, True),
        is_async=inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func),
        batchable=options.batchable, max_batch_size=options.max_batch_size,
        max_latency_ms=options.max_latency_ms, batch_dim=options.batch_dim,
        retry_on_worker_loss=options.retry_on_worker_loss, streams=streams, outputs=outputs,
        openai=options.openai)


def service(cls: type | None = None, *, name: str | None = None, version: int = 1) -> Any:
    """Declare a class as a zeroserve service; ``name`` defaults to the class name in lower case.

    ``version`` (an integer of at least 1) is the version of the service this class serves:
    workers of several versions of one service name serve side by side, each version with its
    own endpoints and schema; a call that names no version runs the latest one served, or as
    the operator's traffic split says (``zeroserve traffic``). A deployment file's ``version``
    replaces it.

    The class is instantiated once per worker with no arguments. Its first declared
    endpoint is its default: the Open Inference Protocol serves it as model ``name``
    (and every endpoint as ``name.endpoint``).
    """

    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be an integer of at least 1, got {version!r}")

    def mark(klass: type) -> type:
        spec = ServiceSpec(name or klass.__name__.lower(), klass, version=version)
        # declaration order (base classes first): the first endpoint is the service's default
        declared = dict.fromkeys(a for k in reversed(klass.__mro__) for a in vars(k))
        for attr in declared:
            func = getattr(klass, attr, None)
            options = getattr(func, _API_ATTR, None)
            if options is not None and func is not None:
                ep = _endpoint(func, options)
                if ep.name in spec.endpoints:
                    raise TypeError(f"service {spec.name}: endpoint {ep.name!r} declared twice")
                spec.endpoints[ep.name] = ep

        spec.tasks = task_specs(klass)
        spec.dependencies = dependencies_of(klass)
        for clash in set(spec.tasks) & set(spec.endpoints):
            raise TypeError(f"service {spec.name}: {clash!r} is both an endpoint and a task")
        if not spec.endpoints and not spec.tasks:
            raise TypeError(f"service {spec.name} has no @zeroserve.api endpoint or "
                            "@zeroserve.task")
        setattr(klass, _SERVICE_ATTR, spec)
        return klass

    return mark(cls) if cls is not None else mark


def service_spec(cls: type) -> ServiceSpec:
    """The :class:`ServiceSpec` of a class decorated with ``@service``."""
    spec = getattr(cls, _SERVICE_ATTR, None)
    if not isinstance(spec, ServiceSpec):
        raise TypeError(f"{cls.__name__} is not decorated with @zeroserve.service")
    return spec


def load_service(target: str) -> ServiceSpec:
    """Load ``path/file.py:Class`` or ``package.module:Class`` named by an operator; a file
    or module that defines exactly one service may be named alone (``path/file.py``,
    ``package.module:``). ValueError for a malformed target, or a bare one whose module
    defines no service or several (the message lists them).

    Only the command line calls this: nothing a request names is ever imported.
    """
    module_ref, sep, attr = target.rpartition(":")
    if not sep:
        module_ref, attr = target, ""
    if not module_ref:
        raise ValueError(f"service {target!r} must look like path/file.py[:Class] or "
                         "module:Class")
    if module_ref.endswith(".py") or "/" in module_ref:
        path = Path(module_ref).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        mod_name = f"zeroserve_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        sys.path.insert(0, str(path.parent))
        spec.loader.exec_module(module)
    elif not sep:
        raise ValueError(f"service {target!r} must look like path/file.py[:Class] or "
                         "module:Class")
    else:
        module = importlib.import_module(module_ref)
    if not attr:
        attr = _only_service(module, module_ref)
    cls = getattr(module, attr, None)
    if cls is None:
        raise AttributeError(f"{module_ref} has no attribute {attr!r}")
    loaded = service_spec(cls)
    loaded.target = target
    return loaded


def _only_service(module: Any, module_ref: str) -> str:
    """The attribute of the one service class that ``module`` defines (imported ones do not
    count); ValueError naming them when there are none or several."""
    found = [name for name, value in vars(module).items()
             if isinstance(value, type) and isinstance(getattr(value, _SERVICE_ATTR, None),
                                                       ServiceSpec)
             and value.__module__ == module.__name__]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f"{module_ref} defines no @zeroserve.service class")
    choices = ", ".join(f"{module_ref}:{name}" for name in found)
    raise ValueError(f"{module_ref} defines {len(found)} services; name one: {choices}")
