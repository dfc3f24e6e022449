"""The deployment file: which services a cluster serves, with how many workers and what each
worker needs. Pure: text in, a :class:`Deployment` or a :class:`DeploymentError` out.

::

    services:
      mlp:                           # the service's name (its @zeroserve.service name)
        target: mlp.py:MLP           # or mlp.py (one service in the file); relative to this file
        workers: 2                   # worker processes [default: 1]
        slots: 4                     # worker.slots of these workers [default: the settings']
        threads: 1                   # worker.threads
        job_slots: 0                 # worker.job_slots
        version: 1                   # the service's version [default: as the class declares]
        batching:                    # per endpoint: becomes batching.overrides["mlp.predict"]
          predict: {max_batch_size: 32, max_latency_ms: 5}
        resources: {gpus: 1, cpus: 2}  # per worker; gpus may be a fraction below 1 (shared)
    settings:                        # cluster-wide, the sections of the settings file
      request: {default_timeout_s: 10}

The whole file is checked before anything starts; every problem found is reported
at once, each naming its key (``services.mlp.workers``) and its line in the file
(from PyYAML's node marks: :func:`yaml.compose` keeps them, ``safe_load`` does not).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode

from zeroserve.config import SECTIONS, ConfigError, load_settings

DEPLOYMENT_SUFFIXES = (".yaml", ".yml")
_SERVICE_KEYS = ("target", "workers", "slots", "threads", "job_slots", "version", "batching",
                 "resources")
_BATCHING_KEYS = ("max_batch_size", "max_latency_ms")
_RESOURCE_KEYS = ("gpus", "cpus")


class DeploymentError(ValueError):
    """A deployment file that cannot be served; ``problems`` lists each one found, as
    ``FILE:LINE: KEY: what is wrong``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = sorted(problems, key=_line_of)
        super().__init__(f"{source}: {len(problems)} problem(s) in the deployment file:\n"
                         + "\n".join("  " + p for p in self.problems))


def _line_of(problem: str) -> int:
    number = problem.split(": ", 1)[0].rpartition(":")[2]
    return int(number) if number.isdigit() else 0


@dataclass(frozen=True)
class Resources:
    """What each worker of a service needs: ``gpus`` devices (a fraction below 1: a share of
    one device, packed with other fractional workers) and ``cpus`` (recorded, not enforced
    on one host)."""

    gpus: float = 0.0
    cpus: float = 0.0


@dataclass(frozen=True)
class ServiceDeployment:
    """One service of a deployment. ``name`` is the service's name ("" when it came from a
    command line and is known only once the target is loaded); ``slots``, ``threads`` and
    ``job_slots`` are None where the settings' values apply. ``batching`` maps an endpoint to
    its ``max_batch_size`` / ``max_latency_ms``."""

    name: str
    target: str
    workers: int = 1
    slots: int | None = None
    threads: int | None = None
    job_slots: int | None = None
    version: int = 1
    batching: dict[str, dict[str, float]] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    line: int = 0

    def worker_flags(self) -> list[str]:
        """The ``zeroserve worker`` flags of this service's own settings."""
        flags = []
        for flag, value in (("--slots", self.slots), ("--threads", self.threads),
                            ("--job-slots", self.job_slots)):
            if value is not None:
                flags += [flag, str(value)]
        return flags

    def version_flags(self) -> list[str]:
        """The ``zeroserve worker`` flag of a version other than 1, which replaces the one its
        class declares (``@zeroserve.service(version=...)``); none for 1, the default."""
        return ["--service-version", str(self.version)] if self.version != 1 else []


@dataclass(frozen=True)
class Deployment:
    """Services and the cluster-wide ``settings`` ({section: {key: value}}, as the settings
    file holds them, checked by :func:`zeroserve.config.load_settings`)."""

    services: tuple[ServiceDeployment, ...]
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""

    def batching_overrides(self) -> dict[str, dict[str, float]]:
        """``batching.overrides`` for every service's endpoints (``service.endpoint``)."""
        return {f"{s.name}.{endpoint}": dict(limits)
                for s in self.services for endpoint, limits in s.batching.items()}

    def overrides(self, batching_base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The settings of this deployment as dotted overrides (``request.default_timeout_s``),
        with the services' batching merged into ``batching.overrides`` over
        ``batching_base`` (the overrides that the settings file gives)."""
        flat = {f"{section}.{key}": value for section, values in self.settings.items()
                for key, value in values.items()}
        batching = {**(batching_base or {}), **flat.get("batching.overrides", {}),
                    **self.batching_overrides()}
        if batching:
            flat["batching.overrides"] = batching
        return flat


def is_deployment_file(target: str) -> bool:
    """Whether a serve target names a deployment file (``.yaml`` / ``.yml``)."""
    return target.lower().endswith(DEPLOYMENT_SUFFIXES)


def load_deployment(path: str | Path) -> Deployment:
    """Read and check the deployment file ``path``: DeploymentError listing every problem,
    OSError when it cannot be read. Relative file targets are resolved against the file's
    folder."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return parse_deployment(text, str(path), base=path.resolve().parent)


def parse_deployment(text: str, source: str = "<deployment>",
                     base: Path | None = None) -> Deployment:
    """Check the deployment ``text`` (from ``source``, for messages) whole; DeploymentError
    lists every problem. ``base``: the folder that relative ``.py`` targets are in."""
    check = _Checker(source)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise DeploymentError(source, [f"{source}:{line}: not YAML: "
                                       f"{getattr(exc, 'problem', None) or exc}"]) from None
    if root is None:
        raise DeploymentError(source, [f"{source}:1: empty: a deployment needs `services`"])
    top = check.mapping(root, "", ("services", "settings"))
    services: list[ServiceDeployment] = []
    if "services" not in top:
        check.problem(root, "services", "missing: a deployment needs at least one service")
    else:
        _, node = top["services"]
        entries = check.mapping(node, "services", None)
        if isinstance(node, MappingNode) and not node.value:
            check.problem(node, "services", "empty: a deployment needs at least one service")
        for name, (name_node, spec) in entries.items():
            service = _service(check, name, name_node, spec, base)
            if service is not None:
                services.append(service)
    settings = _settings(check, top["settings"][1]) if "settings" in top else {}
    if check.problems:
        raise DeploymentError(source, check.problems)
    return Deployment(tuple(services), settings, source)


class _Checker:
    """Collects problems, each with its key and line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, node: Node, key: str, what: str) -> None:
        self.problems.append(f"{self.source}:{node.start_mark.line + 1}: {key}: {what}")

    def mapping(self, node: Node, key: str, allowed: tuple[str, ...] | None
                ) -> dict[str, tuple[Node, Node]]:
        """The entries of a mapping node by key (each key's node and value node); problems
        for a node that is not a mapping, a key that is not a string, not ``allowed`` (None:
        any) or given twice."""
        label = key or "the top level"
        if not isinstance(node, MappingNode):
            self.problem(node, label, f"must be a mapping, not {_kind(node)}")
            return {}
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value in node.value:
            name = key_node.value if isinstance(key_node, ScalarNode) else None
            path = f"{key}.{name}" if key else str(name)
            if not isinstance(name, str) or not name:
                self.problem(key_node, label, f"keys must be names, not {_kind(key_node)}")
            elif allowed is not None and name not in allowed:
                self.problem(key_node, path, f"unknown key (known: {', '.join(allowed)})")
            elif name in entries:
                first = entries[name][0].start_mark.line + 1
                self.problem(key_node, path, f"given twice (first on line {first})")
            else:
                entries[name] = (key_node, value)
        return entries

    def scalar(self, node: Node, key: str) -> Any:
        """The value of a scalar node as YAML's safe loader reads it, or None with a problem
        for a node that is not a scalar."""
        if not isinstance(node, ScalarNode):
            self.problem(node, key, f"must be a single value, not {_kind(node)}")
            return None
        return self.value(node, key)

    def value(self, node: Node, key: str) -> Any:
        """A node's value as YAML's safe loader reads it; None with a problem for one it
        refuses (a ``!!python/...`` tag, say)."""
        try:
            return SafeConstructor().construct_document(node)
        except yaml.YAMLError as exc:
            self.problem(node, key, f"not a plain value ({getattr(exc, 'problem', exc)})")
            return None

    def number(self, node: Node, key: str, kind: type, ok: Callable[[float], bool],
               rule: str) -> Any:
        """An int (``kind`` int) or a number (``kind`` float) that satisfies ``ok``; None with a
        problem otherwise."""
        if not isinstance(node, ScalarNode):
            self.problem(node, key, f"must be a single value, not {_kind(node)}")
            return None
        before = len(self.problems)
        value = self.scalar(node, key)
        if len(self.problems) > before:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (kind is int and not isinstance(value, int)):
            self.problem(node, key, f"must be {'an integer' if kind is int else 'a number'}"
                                    f", not {value!r}")
            return None
        if not math.isfinite(value) or not ok(value):
            self.problem(node, key, f"must be {rule}, not {value!r}")
            return None
        return kind(value)


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, ScalarNode):
        return repr(node.value)
    return "a list"


def _service(check: _Checker, name: str, name_node: Node, node: Node,
             base: Path | None) -> ServiceDeployment | None:
    key = f"services.{name}"
    entries = check.mapping(node, key, _SERVICE_KEYS)
    if not isinstance(node, MappingNode):
        return None
    values: dict[str, Any] = {}
    if "target" not in entries:
        check.problem(name_node, f"{key}.target", "missing: the service's file.py[:Class] or "
                                                  "module:Class")
    else:
        target = check.scalar(entries["target"][1], f"{key}.target")
        if not isinstance(target, str) or not target.strip():
            if target is not None:
                check.problem(entries["target"][1], f"{key}.target",
                              f"must be file.py[:Class] or module:Class, not {target!r}")
        else:
            values["target"] = _resolve(target.strip(), base)
    whole = {"workers": (lambda v: v >= 0, "0 or more"), "slots": (lambda v: v >= 1, "1 or more"),
             "threads": (lambda v: v >= 1, "1 or more"),
             "job_slots": (lambda v: v >= 0, "0 or more"),
             "version": (lambda v: v >= 1, "1 or more")}
    for field_name, (ok, rule) in whole.items():
        if field_name in entries:
            value = check.number(entries[field_name][1], f"{key}.{field_name}", int, ok, rule)
            if value is not None:
                values[field_name] = value
    if "batching" in entries:
        values["batching"] = _batching(check, entries["batching"][1], f"{key}.batching")
    if "resources" in entries:
        values["resources"] = _resources(check, entries["resources"][1], f"{key}.resources")
    if "target" not in values:
        return None
    return ServiceDeployment(name=name, line=name_node.start_mark.line + 1, **values)


def _resolve(target: str, base: Path | None) -> str:
    """A ``.py`` target relative to the deployment file's folder, made absolute."""
    module, sep, cls = target.rpartition(":")
    path = module if sep else target
    if base is None or not path.endswith(".py") or Path(path).is_absolute():
        return target
    resolved = str(base / path)
    return f"{resolved}:{cls}" if sep else resolved


def _batching(check: _Checker, node: Node, key: str) -> dict[str, dict[str, float]]:
    limits: dict[str, dict[str, float]] = {}
    for endpoint, (_, spec) in check.mapping(node, key, None).items():
        where = f"{key}.{endpoint}"
        entries = check.mapping(spec, where, _BATCHING_KEYS)
        if isinstance(spec, MappingNode) and not spec.value:
            check.problem(spec, where, f"empty: give {' and/or '.join(_BATCHING_KEYS)}")
        chosen: dict[str, float] = {}
        if "max_batch_size" in entries:
            size = check.number(entries["max_batch_size"][1], f"{where}.max_batch_size", int,
                                lambda v: v >= 1, "1 or more")
            if size is not None:
                chosen["max_batch_size"] = size
        if "max_latency_ms" in entries:
            wait = check.number(entries["max_latency_ms"][1], f"{where}.max_latency_ms", float,
                                lambda v: v >= 0, "0 or more")
            if wait is not None:
                chosen["max_latency_ms"] = wait
        limits[endpoint] = chosen
    return limits


def _resources(check: _Checker, node: Node, key: str) -> Resources:
    entries = check.mapping(node, key, _RESOURCE_KEYS)
    chosen: dict[str, float] = {}
    if "gpus" in entries:
        gpus = check.number(entries["gpus"][1], f"{key}.gpus", float,
                            lambda v: v >= 0 and (v < 1 or v == int(v)),
                            "0, a whole number, or a fraction below 1 (a share of one device)")
        if gpus is not None:
            chosen["gpus"] = gpus
    if "cpus" in entries:
        cpus = check.number(entries["cpus"][1], f"{key}.cpus", float, lambda v: v > 0,
                            "more than 0")
        if cpus is not None:
            chosen["cpus"] = cpus
    return Resources(**chosen)


def _settings(check: _Checker, node: Node) -> dict[str, dict[str, Any]]:
    """The ``settings`` sections, each setting checked as the settings file's would be."""
    known = {name: [f.name for f in dataclasses.fields(make())]
             for name, make in SECTIONS.items()}
    chosen: dict[str, dict[str, Any]] = {}
    for section, (_, values) in check.mapping(node, "settings", tuple(known)).items():
        for name, (_, value_node) in check.mapping(values, f"settings.{section}",
                                                   tuple(known[section])).items():
            path = f"settings.{section}.{name}"
            before = len(check.problems)
            value = check.value(value_node, path)
            if len(check.problems) > before:
                continue
            if value is None:
                check.problem(value_node, path, "empty: give a value")
                continue
            try:
                load_settings(None, {f"{section}.{name}": value}, environ={})
            except ConfigError as exc:
                check.problem(value_node, path, str(exc).replace("command line: ", ""))
                continue
            chosen.setdefault(section, {})[name] = value
    return chosen
