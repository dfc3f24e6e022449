"""The metrics of the services' own code (``zeroserve.metrics``), as the workers' heartbeats
carry them, kept per worker and served on the broker's ``/metrics``.

The broker's loop calls :meth:`WorkerMetrics.accept` with the frames after a HEARTBEAT's
command, which it only stores (the loop decodes nothing: a heartbeat costs it a dict
assignment), and :meth:`WorkerMetrics.keep_only` with the workers it still knows (a worker's
series go when it leaves). The metrics server's thread calls :meth:`WorkerMetrics.families` at
each scrape, which decodes each worker's latest frames once (until the next ones replace them)
and checks every family again, since they come from the network (names, labels, shapes, at most
``max_families`` families of ``max_series`` series per worker): a bad map or family is dropped
and logged once per worker and name. Of two different definitions of a name (kind, labels,
buckets), the one of the worker whose id sorts first holds; the other's family is dropped.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
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
from zeroserve.wire.backend import parse_heartbeat
from zeroserve.wire.envelope import ProtocolError

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
    """The latest metrics of each worker (see the module's docstring)."""

    def __init__(self, max_families: int = MAX_FAMILIES, max_series: int = MAX_SERIES) -> None:
        self.max_families = max_families
        self.max_series = max_series
        self._frames: dict[str, tuple[str, Sequence]] = {}  # the loop's: worker -> its last
        self._lock = threading.Lock()  # the rest is the scrapes' (one at a time)
        self._decoded: dict[str, tuple[Sequence, tuple[Family, ...]]] = {}
        self._logged: set[tuple[str, str]] = set()

    def accept(self, worker_id: str, service: str, frames: Sequence) -> None:
        """Keep the frames after a HEARTBEAT's command from ``worker_id`` (of ``service``):
        they replace all that worker's metrics."""
        self._frames[worker_id] = (service, frames)

    def keep_only(self, worker_ids: set[str]) -> None:
        """Forget every worker not in ``worker_ids`` (it left)."""
        for worker_id in [w for w in self._frames if w not in worker_ids]:
            del self._frames[worker_id]

    def _decode(self, worker_id: str, frames: Sequence) -> tuple[Family, ...]:
        try:
            metrics = parse_heartbeat(frames) or {}
        except ProtocolError as exc:
            self._refuse(worker_id, "*", str(exc))
            return ()
        if len(metrics) > self.max_families:
            self._refuse(worker_id, "*", f"{len(metrics)} families, at most "
                         f"{self.max_families} are kept")
        families = []
        for name, body in list(metrics.items())[:self.max_families]:
            try:
                families.append(parse_family(name, body, self.max_series))
            except MetricError as exc:
                self._refuse(worker_id, str(name), str(exc))
        return tuple(families)

    def _refuse(self, worker_id: str, name: str, why: str) -> None:
        if (worker_id, name) not in self._logged:
            self._logged.add((worker_id, name))
            log.warning("broker: dropped metric %s of worker %s: %s", name, worker_id, why)

    def families(self) -> list[Metric]:
        """Every worker's families, merged by name, labelled by service and worker."""
        with self._lock:
            workers = sorted(list(self._frames.items()))
            alive = {worker_id for worker_id, _ in workers}
            self._decoded = {w: d for w, d in self._decoded.items() if w in alive}
            self._logged = {(w, n) for w, n in self._logged if w in alive}
            definitions: dict[str, tuple] = {}
            merged: dict[str, Metric] = {}
            for worker_id, (service, frames) in workers:
                decoded = self._decoded.get(worker_id)
                if decoded is None or decoded[0] is not frames:
                    decoded = (frames, self._decode(worker_id, frames))
                    self._decoded[worker_id] = decoded
                for family in decoded[1]:
                    held = definitions.setdefault(family.name, family.definition)
                    if held != family.definition:
                        self._refuse(worker_id, family.name, f"another worker defines it as a "
                                     f"{held[0]} with labels {list(held[1])}")
                        continue
                    exposed = _exposed(family, service, worker_id)
                    known = merged.get(family.name)
                    if known is None:
                        merged[family.name] = exposed
                    else:
                        known.samples.extend(exposed.samples)
            return [merged[name] for name in sorted(merged)]
