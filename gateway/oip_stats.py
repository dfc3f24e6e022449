"""Triton's statistics extension from the broker's figures (pure).

The broker measures every endpoint (:class:`broker.stats.InferenceStats`, in seconds) and
answers them to the ``stats`` control call; every gateway maps that one answer, so that
gateways of one cluster agree. Meanings are Triton's:

- ``inference_count``: rows of the requests answered OK (a request of a batching model with
  8 rows counts 8); ``execution_count``: the batches that answered one of them at least;
- ``last_inference``: milliseconds since the epoch of the last OK answer (0: none yet);
- ``inference_stats``: ``success`` (OK requests, their time from arrival at the broker to
  answer), ``fail`` (every other answer), ``queue`` (the OK requests' wait in the broker's
  queue) and ``compute_input`` / ``compute_infer`` / ``compute_output`` (the worker's time on
  the OK requests' batches: decoding and merging the inputs, the user function, checking,
  splitting and encoding the answers; each request is charged its batch's, as in Triton);
  ``cache_hit`` and ``cache_miss`` are 0 (no response cache);
- ``batch_stats``: per batch size in rows, how many batches of that size answered OK and
  their compute times.

Every duration is ``{"count": n, "ns": nanoseconds}`` (gRPC: :func:`statistics_message`); a
model is one of :func:`gateway.oip_models.model_names`, whose endpoint's figures it reports (a
service's name and its default endpoint's name report the same figures).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.oip_models import ModelRef
from zeroserve.grpc_gen import grpc_service_pb2 as pb
from zeroserve.wire.frontend import endpoint_stats_key

_COMPUTE = ("compute_input", "compute_infer", "compute_output")
_NONE = [0, 0.0]


def _duration(pair: Any) -> dict[str, int]:
    count, seconds = pair if isinstance(pair, (list, tuple)) and len(pair) == 2 else _NONE
    return {"count": int(count), "ns": int(round(float(seconds) * 1e9))}


def _compute(times: Any) -> dict[str, dict[str, int]]:
    return {name: _duration(pair) for name, pair in zip(_COMPUTE, times)}


def model_stats(ref: ModelRef, endpoint: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``model_stats`` entry of model ``ref`` from its endpoint's figures in the broker's
    stats answer (None: the broker has none yet, all zero)."""
    figures = (endpoint or {}).get("inference") or {}
    compute = figures.get("compute") or [_NONE] * 3
    return {
        "name": ref.name, "version": str(ref.version),
        "last_inference": int(float(figures.get("last_wall_s", 0.0)) * 1000),
        "inference_count": int(figures.get("rows", 0)),
        "execution_count": int(figures.get("executions", 0)),
        "inference_stats": {
            "success": _duration(figures.get("success")), "fail": _duration(figures.get("fail")),
            "queue": _duration(figures.get("queue")),
            **_compute(compute),
            "cache_hit": _duration(None), "cache_miss": _duration(None)},
        "batch_stats": [{"batch_size": int(rows), **_compute(times)}
                        for rows, times in sorted((figures.get("by_size") or {}).items())],
    }


def statistics(models: Iterable[ModelRef], broker_stats: Mapping[str, Any]) -> dict[str, Any]:
    """The statistics answer (``GET /v2/models[/{m}]/stats``) of ``models`` from the broker's
    ``stats`` control answer."""
    endpoints = broker_stats.get("endpoints") or {}
    return {"model_stats": [model_stats(ref, endpoints.get(
        endpoint_stats_key(ref.service, ref.endpoint, ref.version))) for ref in models]}


def statistics_message(doc: Mapping[str, Any]) -> pb.ModelStatisticsResponse:
    """The gRPC ModelStatisticsResponse of a :func:`statistics` answer."""
    answer = pb.ModelStatisticsResponse()
    for entry in doc["model_stats"]:
        stats = answer.model_stats.add(
            name=entry["name"], version=entry["version"],
            last_inference=entry["last_inference"], inference_count=entry["inference_count"],
            execution_count=entry["execution_count"])
        for name, duration in entry["inference_stats"].items():
            getattr(stats.inference_stats, name).MergeFrom(pb.StatisticDuration(**duration))
        for size in entry["batch_stats"]:
            batch = stats.batch_stats.add(batch_size=size["batch_size"])
            for name in _COMPUTE:
                getattr(batch, name).MergeFrom(pb.StatisticDuration(**size[name]))
    return answer
