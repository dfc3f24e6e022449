"""Async jobs in a service: ``@zeroserve.task`` on a method, and the :class:`JobContext` it gets.

A task is an endpoint that runs as a durable job (``POST /v1/jobs``) instead of
a real-time call. Its inputs come from the type hints exactly as for
``@zeroserve.api``; one parameter, annotated :class:`JobContext` (or named
``ctx``), receives the job's context instead of an input::

    @zeroserve.task(timeout_s=600, max_attempts=3)
    def score_file(self, rows: np.ndarray, ctx: zeroserve.JobContext) -> dict:
        ctx.progress(0.5)
        if ctx.cancelled:
            return {}
"""
from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeroserve.schema import Field, field_from_hint
from zeroserve.wire.descriptions import TASK_MAX_ATTEMPTS, TASK_TIMEOUT_S, TaskDescription

_TASK_ATTR = "__zeroserve_task__"


class JobContext:
    """What a running task sees of its job: its id, attempt, progress and cancellation.

    The worker's job lane creates one per execution; ``report`` and
    ``is_cancelled`` are its hooks (tests pass their own).
    """

    def __init__(self, job_id: str, attempt: int, report: Callable[[float], None],
                 is_cancelled: Callable[[], bool]) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self._report = report
        self._is_cancelled = is_cancelled

    def progress(self, fraction: float) -> None:
        """Report progress in [0, 1]; it shows in the job's status and proves the job alive."""
        self._report(min(max(float(fraction), 0.0), 1.0))

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled: return soon; whatever is returned is discarded."""
        return self._is_cancelled()


@dataclass(frozen=True)
class TaskOptions:
    """What ``@task`` was given."""

    name: str | None
    timeout_s: float
    max_attempts: int
    inputs: dict | None
    outputs: Any


@dataclass
class TaskSpec:
    """One task of a service: its schema, limits, and which parameter takes the context."""

    name: str
    method: str
    inputs: list[Field]
    output: Field
    is_async: bool
    timeout_s: float
    max_attempts: int
    context_arg: str | None

    def describe(self) -> dict:
        """The map of its :class:`~zeroserve.wire.descriptions.TaskDescription`, as the job
        lane announces it in READY."""
        return TaskDescription(self.name, tuple(self.inputs), self.output, self.timeout_s,
                               self.max_attempts).to_map()


def task(fn: Callable | None = None, *, name: str | None = None,
         timeout_s: float = TASK_TIMEOUT_S, max_attempts: int = TASK_MAX_ATTEMPTS,
         inputs: dict | None = None, outputs: Any = None) -> Any:
    """Mark a method of a service class as a task, run as a durable job.

    ``timeout_s`` bounds one execution (the job lane stops it and counts a
    failed attempt); ``max_attempts`` is how many executions a job gets before
    it ends ``failed`` (failures, timeouts and lost workers all count).
    ``inputs`` / ``outputs`` override the type hints as for ``@zeroserve.api``.
    """
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    options = TaskOptions(name, float(timeout_s), int(max_attempts), inputs, outputs)

    def mark(func: Callable) -> Callable:
        setattr(func, _TASK_ATTR, options)
        return func

    return mark(fn) if fn is not None else mark


def _is_context(param: inspect.Parameter, hint: Any) -> bool:
    if hint is JobContext or param.name == "ctx":
        return True
    return isinstance(hint, str) and hint.rsplit(".", 1)[-1] == "JobContext"


def _task(func: Callable, options: TaskOptions) -> TaskSpec:

    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolved forward references: fall back to untyped
        hints = {}
    declared = options.inputs or {}
    inputs, context_arg = [], None
    for p in list(inspect.signature(func).parameters.values())[1:]:  # drop self
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"task {func.__name__}: *args/**kwargs are not supported")
        hint = hints.get(p.name, p.annotation)
        if _is_context(p, hint):
            context_arg = p.name
            continue
        inputs.append(field_from_hint(p.name, declared.get(p.name, hints.get(p.name, Any)),
                                       p.default is inspect.Parameter.empty))
    out_hint = options.outputs if options.outputs is not None else hints.get("return", Any)
    return TaskSpec(options.name or func.__name__, func.__name__, inputs,
                    field_from_hint("output", out_hint, True),
                    inspect.iscoroutinefunction(func), options.timeout_s, options.max_attempts,
                    context_arg)


def task_specs(klass: type) -> dict[str, TaskSpec]:
    """The tasks of a service class, in declaration order (base classes first)."""
    tasks: dict[str, TaskSpec] = {}
    for attr in dict.fromkeys(a for k in reversed(klass.__mro__) for a in vars(k)):
        func = getattr(klass, attr, None)
        options = getattr(func, _TASK_ATTR, None)
        if isinstance(options, TaskOptions) and func is not None:
            spec = _task(func, options)
            if spec.name in tasks:
                raise TypeError(f"task {spec.name!r} declared twice")
            tasks[spec.name] = spec
    return tasks
