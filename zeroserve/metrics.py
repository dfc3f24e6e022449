"""Metrics from a service's own code: counters, gauges and histograms that reach the broker.

Create them where the service is written — at module level, in ``__init__`` or in an
endpoint — and update them from the endpoints::

    from zeroserve.metrics import Counter, Histogram

    TOKENS = Counter("tokens", "Tokens generated", ["model"])
    CONFIDENCE = Histogram("confidence", "Top-class probability", buckets=(0.5, 0.9, 0.99))

    TOKENS.labels(model="small").inc(12)
    CONFIDENCE.observe(0.93)

The worker sends the values of every metric of its process on its heartbeats, only when
something changed since the last one it sent (``docs/protocol.md``, HEARTBEAT); the broker
serves them on its Prometheus ``/metrics`` with two labels of its own, ``service`` and
``worker``, and drops a worker's series when the worker leaves (``docs/observability.md``).

Names follow Prometheus's rules (``[a-zA-Z_:][a-zA-Z0-9_:]*``, labels ``[a-zA-Z_][a-zA-Z0-9_]*``)
and may not start with ``zeroserve_`` (the cluster's own families) nor use the labels the
broker adds. A metric holds at most :data:`MAX_SERIES` label sets: updates of further ones are
dropped, with one warning per metric. An update is a dict operation under the metric's lock
(about a microsecond); this module imports nothing outside the standard library.
"""
from __future__ import annotations

import bisect
import logging
import math
import re
import threading
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("zeroserve.metrics")

NAME_PATTERN = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_PATTERN = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED_PREFIX = "zeroserve_"  # the broker's, gateway's and jobs' own families
RESERVED_LABELS = frozenset({"service", "worker", "le", "quantile"})  # added by the broker
KINDS = ("counter", "gauge", "histogram")
MAX_SERIES = 1000  # label sets of one metric
MAX_NAME = 200  # characters of a name, a label name or a label value
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class MetricError(ValueError):
    """A metric's name, labels or buckets break the rules, or clash with another metric."""


def check_name(name: Any) -> str:
    """``name`` if Prometheus accepts it as a family name and it is not zeroserve's; else
    MetricError. A counter's ``_total`` suffix is for the exposition to add: drop it."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or len(name) > MAX_NAME:
        raise MetricError(f"metric name {name!r} must match {NAME_PATTERN.pattern} "
                          f"(at most {MAX_NAME} characters)")
    if name.startswith(RESERVED_PREFIX) or name.startswith("__"):
        raise MetricError(f"metric name {name!r} may not start with '{RESERVED_PREFIX}' or "
                          "'__' (zeroserve's own metrics and Prometheus's use them)")
    return name


def check_labels(names: Any) -> tuple[str, ...]:
    """``names`` as a tuple if each is a valid, distinct label name that the broker does not
    add itself; else MetricError."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise MetricError(f"label names must be a list of strings, got {names!r}")
    for label in names:
        if not isinstance(label, str) or not LABEL_PATTERN.match(label) \
                or label.startswith("__") or len(label) > MAX_NAME:
            raise MetricError(f"label name {label!r} must match {LABEL_PATTERN.pattern} and "
                              "not start with '__'")
        if label in RESERVED_LABELS:
            raise MetricError(f"label name {label!r} is reserved: the broker labels every "
                              f"series with {', '.join(sorted(RESERVED_LABELS))}")
    if len(set(names)) != len(names):
        raise MetricError(f"label names {list(names)} repeat a name")
    return tuple(names)


def check_buckets(buckets: Any) -> tuple[float, ...]:
    """Finite, strictly increasing upper bounds (+Inf is implied); else MetricError."""
    try:
        bounds = tuple(float(b) for b in buckets)
    except (TypeError, ValueError):
        raise MetricError(f"buckets must be numbers, got {buckets!r}") from None
    if not bounds or not all(math.isfinite(b) for b in bounds) \
            or any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise MetricError(f"buckets must be finite and strictly increasing, got {buckets!r}")
    return bounds


def exposed_name(kind: str, name: str) -> str:
    """The family name as Prometheus shows it: a counter's without ``_total``."""
    return name.removesuffix("_total") if kind == "counter" else name


_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
             "histogram": ("_bucket", "_sum", "_count", "_created")}


def sample_names(kind: str, name: str) -> set[str]:
    """The names of the samples a family shows in Prometheus's text format."""
    return {name + suffix for suffix in _SUFFIXES[kind]}


class Registry:
    """The metrics of one process. ``changed`` is set by every update and cleared by
    :meth:`snapshot_if_changed`, so that a heartbeat carries values only when they moved."""

    def __init__(self, max_series: int = MAX_SERIES) -> None:
        self.max_series = max_series
        self.changed = False
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def register(self, metric: _Metric) -> _Metric:
        """Add ``metric``; one of the same name, kind, labels and buckets is returned instead
        (a module imported twice shares its values). Another definition: MetricError."""
        with self._lock:
            known = self._metrics.get(metric.name)
            if known is None:
                taken = sample_names(metric.kind, metric.name)
                for other in self._metrics.values():
                    if taken & sample_names(other.kind, other.name):
                        raise MetricError(f"metric {metric.name!r} would show samples of the "
                                          f"same name as {other.kind} {other.name!r}")
                self._metrics[metric.name] = metric
                self.changed = True
                return metric
            if known.definition() != metric.definition():
                raise MetricError(f"metric {metric.name!r} is already defined as a "
                                  f"{known.kind} with labels {list(known.labelnames)}")
            return known

    def snapshot(self) -> dict[str, dict]:
        """Every metric as the HEARTBEAT metrics map carries it (``docs/protocol.md``)."""
        with self._lock:
            metrics = list(self._metrics.values())
        return {m.name: m.to_map() for m in metrics}

    def snapshot_if_changed(self, force: bool = False) -> dict[str, dict] | None:
        """The snapshot if a value changed since the last call (or ``force``), else None
        (always None while the process has no metric)."""
        if not (self.changed or force) or not self._metrics:
            return None
        self.changed = False  # before reading: an update meanwhile is sent next time
        return self.snapshot()


REGISTRY = Registry()


class _Metric:
    kind = ""

    def __init__(self, name: str, documentation: str = "", labelnames: Sequence[str] = (),
                 registry: Registry | None = None) -> None:
        self.name = exposed_name(self.kind, check_name(name))
        self.documentation = str(documentation)
        self.labelnames = check_labels(labelnames)
        self._registry = registry or REGISTRY
        self._values: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()
        self._capped = False
        self._shared = self._registry.register(self)

    def definition(self) -> tuple:
        return self.kind, self.labelnames

    def labels(self, *values: Any, **named: Any) -> _Series:
        """The series of one label set: by position or by name, each given once."""
        target = self._shared
        if named:
            if values or set(named) != set(target.labelnames):
                raise MetricError(f"metric {target.name!r} takes labels "
                                  f"{list(target.labelnames)}, got {sorted(named)}")
            values = tuple(named[n] for n in target.labelnames)
        if len(values) != len(target.labelnames):
            raise MetricError(f"metric {target.name!r} takes {len(target.labelnames)} label "
                              f"values, got {len(values)}")
        return _Series(target, tuple(str(v)[:MAX_NAME] for v in values))

    def _unlabelled(self) -> tuple[str, ...]:
        if self._shared.labelnames:
            raise MetricError(f"metric {self.name!r} has labels: use .labels(...) first")
        return ()

    def _update(self, key: tuple[str, ...], apply: Any, *args: Any) -> None:
        metric = self._shared
        with metric._lock:
            value = metric._values.get(key)
            if value is None:
                if len(metric._values) >= metric._registry.max_series:
                    metric._cap(key)
                    return
                value = metric._fresh()
            metric._values[key] = apply(value, *args)
        metric._registry.changed = True

    def _cap(self, key: tuple[str, ...]) -> None:
        if not self._capped:
            self._capped = True
            log.warning("metrics: %s has %d label sets, the most one metric may hold: updates "
                        "of new ones (such as %s) are dropped", self.name,
                        self._registry.max_series, dict(zip(self.labelnames, key)))

    def _fresh(self) -> Any:
        return 0.0

    def _inc(self, key: tuple[str, ...], amount: float) -> None:
        raise NotImplementedError

    def _set_or_dec(self, key: tuple[str, ...], what: str, value: float) -> None:
        raise NotImplementedError

    def _observe(self, key: tuple[str, ...], value: float) -> None:
        raise NotImplementedError

    def _series(self) -> list:
        with self._lock:
            return [[list(k), v] for k, v in self._values.items()]

    def to_map(self) -> dict:
        return {"type": self.kind, "help": self.documentation, "labels": list(self.labelnames),
                "series": self._series()}


class _Series:
    """One label set of a metric (``metric.labels(...)``)."""

    __slots__ = ("_metric", "_key")

    def __init__(self, metric: _Metric, key: tuple[str, ...]) -> None:
        self._metric = metric
        self._key = key

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (a counter's must be at least 0)."""
        self._metric._inc(self._key, amount)

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount`` (gauges only)."""
        self._metric._set_or_dec(self._key, "dec", amount)

    def set(self, value: float) -> None:
        """Set the value (gauges only)."""
        self._metric._set_or_dec(self._key, "set", value)

    def observe(self, value: float) -> None:
        """Count ``value`` in its bucket (histograms only)."""
        self._metric._observe(self._key, value)

    def __repr__(self) -> str:
        labels = dict(zip(self._metric.labelnames, self._key))
        return f"<{self._metric.kind} {self._metric.name}{labels}>"


def _add(value: float, amount: float) -> float:
    return value + amount


def _replace(_: float, value: float) -> float:
    return value


class Counter(_Metric):
    """A value that only goes up (tokens generated, cache hits); shown as ``NAME_total``."""

    kind = "counter"

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (at least 0) to the metric without labels."""
        self._inc(self._unlabelled(), amount)

    def _inc(self, key: tuple[str, ...], amount: float) -> None:
        amount = float(amount)
        if not amount >= 0:
            raise MetricError(f"counter {self.name!r} only goes up: inc({amount!r})")
        self._update(key, _add, amount)

    def _set_or_dec(self, key: tuple[str, ...], what: str, value: float) -> None:
        raise MetricError(f"counter {self.name!r} cannot {what}: use a Gauge")

    def _observe(self, key: tuple[str, ...], value: float) -> None:
        raise MetricError(f"counter {self.name!r} cannot observe: use a Histogram")


class Gauge(_Metric):
    """A value that goes up and down (items in a cache, a model's temperature)."""

    kind = "gauge"

    def set(self, value: float) -> None:
        """Set the metric without labels to ``value``."""
        self._update(self._unlabelled(), _replace, float(value))

    def inc(self, amount: float = 1.0) -> None:
        self._inc(self._unlabelled(), amount)

    def dec(self, amount: float = 1.0) -> None:
        self._inc(self._unlabelled(), -float(amount))

    def _inc(self, key: tuple[str, ...], amount: float) -> None:
        self._update(key, _add, float(amount))

    def _set_or_dec(self, key: tuple[str, ...], what: str, value: float) -> None:
        if what == "set":
            self._update(key, _replace, float(value))
        else:
            self._update(key, _add, -float(value))

    def _observe(self, key: tuple[str, ...], value: float) -> None:
        raise MetricError(f"gauge {self.name!r} cannot observe: use a Histogram")


class Histogram(_Metric):
    """Observations counted in buckets (``buckets``: upper bounds, +Inf implied), with their
    sum: latencies, sizes, confidences."""

    kind = "histogram"

    def __init__(self, name: str, documentation: str = "", labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = DEFAULT_BUCKETS,
                 registry: Registry | None = None) -> None:
        self.buckets = check_buckets(buckets)
        super().__init__(name, documentation, labelnames, registry)

    def definition(self) -> tuple:
        return self.kind, self.labelnames, self.buckets

    def observe(self, value: float) -> None:
        """Count ``value`` for the metric without labels."""
        self._observe(self._unlabelled(), value)

    def _observe(self, key: tuple[str, ...], value: float) -> None:
        value = float(value)
        if math.isnan(value):
            raise MetricError(f"histogram {self.name!r} cannot observe NaN")
        self._update(key, self._count, bisect.bisect_left(self.buckets, value), value)

    @staticmethod
    def _count(state: list, index: int, value: float) -> list:
        state[0][index] += 1
        state[1] += value
        return state

    def _fresh(self) -> list:
        return [[0] * (len(self.buckets) + 1), 0.0]

    def _series(self) -> list:
        with self._lock:
            return [[list(k), [list(counts), total]] for k, (counts, total) in self._values.items()]

    def to_map(self) -> dict:
        return {**super().to_map(), "buckets": list(self.buckets)}

    def _inc(self, key: tuple[str, ...], amount: float) -> None:
        raise MetricError(f"histogram {self.name!r} cannot inc: use observe")

    def _set_or_dec(self, key: tuple[str, ...], what: str, value: float) -> None:
        raise MetricError(f"histogram {self.name!r} cannot {what}: use observe")
