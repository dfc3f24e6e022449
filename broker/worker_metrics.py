"""The metrics of the services' own code (``zeroserve.metrics``), as the workers' heartbeats
carry them, kept per worker and served on the broker's ``/metrics``.

The broker's loop calls :meth:`WorkerMetrics.accept` with a heartbeat's metrics map and
:meth:`WorkerMetrics.keep_only` with the workers it still knows (a worker's series go when it
leaves); the metrics server's thread calls :meth:`WorkerMetrics.families`, which reads only
the latest map of each worker (replaced whole, never changed in place). A map comes from the
network: every family is checked again (names, labels, shapes, at most ``max_families``
families of ``max_series`` series per worker); a bad one is dropped and logged once per
worker and name. The first definition of a name (kind, labels, buckets) holds while a worker
reports it; another worker's different definition of that name is dropped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from zeroserve.metrics import (
    KINDS,
    MAX_SERIES,
    MetricError,
    check_buckets,
    check_labels,
    check_name,
)

log = logging.getLogger("zeroserve.broker")

MAX_FAMILIES = 200  # families of one worker
_MAX_HELP = 1000  # characters of a family's help
_ADDED = ["service", "worker"]  # the labels the broker puts on every series


@dataclass(frozen=True)
class Family:
    """One checked family of one worker: its definition and ``(label values, value)`` series
    (a histogram's value is ``(counts per bucket then past them, sum)``)."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...]
    series: tuple[tuple[tuple[str, ...], Any], ...]

    @property
    def definition(self) -> tuple:
        return self.kind, self.labels, self.buckets


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value(kind: str, buckets: tuple[float, ...], value: Any) -> Any:
    if kind != "histogram":
        if not _number(value):
            raise MetricError(f"value {value!r} is not a number")
        return float(value)
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], list)
            and len(value[0]) == len(buckets) + 1 and _number(value[1])
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                    for c in value[0])):
        raise MetricError("a histogram value must be [counts per bucket and past them, sum]")
    return tuple(value[0]), float(value[1])


def parse_family(name: Any, body: Any, max_series: int) -> Family:
    """One family of a heartbeat's metrics map, checked; MetricError says what is wrong."""
    name = check_name(name)
    if not isinstance(body, dict) or body.get("type") not in KINDS:
        raise MetricError(f"a family must be a map with a type of {', '.join(KINDS)}")
    kind = body["type"]
    labels = check_labels(body.get("labels", []))
    buckets = check_buckets(body.get("buckets")) if kind == "histogram" else ()
    series = body.get("series", [])
    if not isinstance(series, list) or len(series) > max_series:
        raise MetricError(f"series must be a list of at most {max_series}")
    checked = []
    for entry in series:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list)
                and len(entry[0]) == len(labels) and all(isinstance(v, str) for v in entry[0])):
            raise MetricError("a series must be [label values, value]")
        checked.append((tuple(entry[0]), _value(kind, buckets, entry[1])))
    return Family(name, kind, str(body.get("help", ""))[:_MAX_HELP], labels, buckets,
                  tuple(checked))


def _cumulative(bounds: tuple[float, ...], counts: tuple[int, ...]) -> list[tuple[str, float]]:
    running, buckets = 0, []
    for bound, count in zip((*map(str, bounds), "+Inf"), counts):
        running += count
        buckets.append((bound, float(running)))
    return buckets


def _exposed(family: Family, service: str, worker: str) -> Metric:
    labels = [*family.labels, *_ADDED]
    if family.kind == "histogram":
        histogram = HistogramMetricFamily(family.name, family.help, labels=labels)
        for values, (counts, total) in family.series:
            histogram.add_metric([*values, service, worker], _cumulative(family.buckets, counts),
                                 total)
        return histogram
    kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
    metric = kind(family.name, family.help, labels=labels)
    for values, value in family.series:
        metric.add_metric([*values, service, worker], value)
    return metric


class WorkerMetrics:
    """The latest checked metrics of each worker (see the module's docstring)."""

    def __init__(self, max_families: int = MAX_FAMILIES, max_series: int = MAX_SERIES) -> None:
        self.max_families = max_families
        self.max_series = max_series
        self._workers: dict[str, tuple[str, tuple[Family, ...]]] = {}
        self._definitions: dict[str, tuple] = {}  # name -> the definition that holds
        self._logged: set[tuple[str, str]] = set()

    def accept(self, worker_id: str, service: str, metrics: dict) -> None:
        """Replace the metrics of ``worker_id`` (of ``service``) by a heartbeat's map."""
        families = []
        for name, body in list(metrics.items())[:self.max_families]:
            try:
                family = parse_family(name, body, self.max_series)
            except MetricError as exc:
                self._refuse(worker_id, str(name), str(exc))
                continue
            held = self._definitions.setdefault(family.name, family.definition)
            if held != family.definition:
                self._refuse(worker_id, family.name, f"another worker defines it as a {held[0]} "
                             f"with labels {list(held[1])}")
                continue
            families.append(family)
        if len(metrics) > self.max_families:
            self._refuse(worker_id, "*", f"{len(metrics)} families, at most "
                         f"{self.max_families} are kept")
        self._workers[worker_id] = (service, tuple(families))

    def _refuse(self, worker_id: str, name: str, why: str) -> None:
        if (worker_id, name) not in self._logged:
            self._logged.add((worker_id, name))
            log.warning("broker: dropped metric %s of worker %s: %s", name, worker_id, why)

    def keep_only(self, worker_ids: set[str]) -> None:
        """Forget every worker not in ``worker_ids`` (it left), and the definitions that no
        worker still reports."""
        gone = [w for w in self._workers if w not in worker_ids]
        for worker_id in gone:
            del self._workers[worker_id]
        if gone:
            held = {f.name for _, families in self._workers.values() for f in families}
            self._definitions = {n: d for n, d in self._definitions.items() if n in held}
            self._logged = {(w, n) for w, n in self._logged if w in worker_ids}

    def families(self) -> list[Metric]:
        """Every worker's families, merged by name, labelled by service and worker."""
        merged: dict[str, Metric] = {}
        for worker_id, (service, families) in sorted(list(self._workers.items())):
            for family in families:
                exposed = _exposed(family, service, worker_id)
                known = merged.get(family.name)
                if known is None:
                    merged[family.name] = exposed
                elif known.type == exposed.type:
                    known.samples.extend(exposed.samples)
        return [merged[name] for name in sorted(merged)]
