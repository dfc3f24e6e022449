"""Run the selected profiles: start each server once, measure its runs, always stop it.

Runs that share a server (the same echo, the same cluster) are measured one
after another while it is up, so at most one server runs at any time and the
two cores are shared only between it and the load tool.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench_lib import broker_stats
from bench_lib.load import LoadFailed, LoadRunner, LoadTarget
from bench_lib.oip_wire import grpc_frame
from bench_lib.payloads import Payload, answer_matches, build_payload, load_reference_models
from bench_lib.profiles import EchoServer, LoadTool, Profile, Protocol, Run, ServerSpec
from bench_lib.report import RunOutcome
from bench_lib.servers import Progress, ServerFailed, ServerProcess, start_server

GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"

_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, so starting or stopping a server is not cut."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


@dataclass(frozen=True)
class Settings:
    """How long to load and where things are; seconds throughout."""

    repo: Path
    work_dir: Path
    duration_s: float
    warmup_s: float
    ready_timeout_s: float
    zeroserve_cmd: tuple[str, ...]


def plan(profiles: list[Profile],
         only_baseline: bool) -> list[tuple[ServerSpec, list[tuple[Profile, Run]]]]:
    """Group the runs of ``profiles`` by server, in order of first appearance."""
    groups: dict[ServerSpec, list[tuple[Profile, Run]]] = {}
    for profile in profiles:
        for run in profile.runs:
            if only_baseline and not isinstance(run.server, EchoServer):
                continue
            groups.setdefault(run.server, []).append((profile, run))
    return list(groups.items())


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class PayloadFiles:
    """A payload and the files holding it: the request body, the answer body and, for gRPC,
    the request as protobuf JSON (k6's form)."""

    payload: Payload
    request: Path
    answer: Path
    request_json: Path | None = None


class Bench:
    """Measures runs with their load tools against servers it starts and stops itself.

    ``runners`` has a runner per installed load tool; the runs of a tool in ``missing``
    (the reason, e.g. how to install it) are skipped, and their servers not started for
    them."""

    def __init__(self, settings: Settings, runners: dict[LoadTool, LoadRunner],
                 missing: dict[LoadTool, str] | None = None) -> None:
        self.settings = settings
        self.runners = runners
        self.missing = missing or {}
        self._models = load_reference_models(settings.repo / "examples" / "reference_models.py")
        self._payloads: dict[tuple[str, Protocol, str], PayloadFiles] = {}
        self._stats_warned = False

    def payload(self, model: str, protocol: Protocol = Protocol.REST_JSON,
                oip_model: str | None = None) -> PayloadFiles:
        """The payload of ``model`` in ``protocol`` (OIP model ``oip_model``, default
        ``model``) and the files holding it."""
        key = (model, protocol, oip_model or model)
        if key not in self._payloads:
            payload = build_payload(self._models, model, protocol, oip_model)
            folder = self.settings.work_dir / "payloads"
            folder.mkdir(parents=True, exist_ok=True)
            stem = model if protocol is Protocol.REST_JSON else \
                f"{model}.{protocol.value}.{oip_model or model}"
            ext = {Protocol.REST_JSON: "json", Protocol.OIP_BINARY: "bin",
                   Protocol.GRPC: "pb"}[protocol]
            request_file = folder / f"{stem}.request.{ext}"
            answer_file = folder / f"{stem}.answer.{ext}"
            request_file.write_bytes(payload.request)
            answer_file.write_bytes(payload.answer)
            json_file = None
            if payload.grpc_json is not None:
                json_file = folder / f"{stem}.request.json"
                json_file.write_text(json.dumps(payload.grpc_json))
            self._payloads[key] = PayloadFiles(payload, request_file, answer_file, json_file)
        return self._payloads[key]

    def execute(self, profiles: list[Profile], only_baseline: bool,
                outcomes: list[RunOutcome]) -> None:
        """Measure every run, appending to ``outcomes`` as it goes (so that an
        interrupted invocation still has what was measured)."""
        for index, (spec, runs) in enumerate(plan(profiles, only_baseline)):
            measurable = []
            for profile, run in runs:
                if run.tool in self.missing:
                    outcomes.append(RunOutcome(profile, run, skipped=self.missing[run.tool]))
                else:
                    measurable.append((profile, run))
            if measurable:
                self._measure_server(index, spec, measurable, outcomes)

    def _measure_server(self, index: int, spec: ServerSpec, runs: list[tuple[Profile, Run]],
                        outcomes: list[RunOutcome]) -> None:
        model = spec.model if isinstance(spec, EchoServer) else runs[0][0].model
        answer_file = self.payload(model).answer
        grpc_answer_file = None
        if isinstance(spec, EchoServer) and spec.grpc:
            grpc_model = next((r.route for _, r in runs if r.protocol is Protocol.GRPC), model)
            grpc_answer_file = self.payload(model, Protocol.GRPC, grpc_model).answer
        server: ServerProcess | None = None
        try:
            with signals_deferred():
                server = start_server(spec, repo=self.settings.repo,
                                      work_dir=self.settings.work_dir,
                                      answer_file=answer_file,
                                      zeroserve_cmd=list(self.settings.zeroserve_cmd),
                                      index=index, grpc_answer_file=grpc_answer_file)
            progress = Progress(f"starting {spec.label} on 127.0.0.1:{server.http_port}")
            try:
                ready_s = server.wait_ready(self.settings.ready_timeout_s, progress)
            except ServerFailed:
                progress.end("failed")
                raise
            progress.end(f"ready in {ready_s:.1f}s")
            for profile, run in runs:
                outcomes.append(self._measure_run(server, profile, run, ready_s))
        except ServerFailed as exc:
            _say(f"  error: {exc}")
            for profile, run in runs:
                if not any(o.profile is profile and o.run is run for o in outcomes):
                    outcomes.append(RunOutcome(profile, run, error=str(exc)))
        finally:
            if server is not None:
                with signals_deferred():
                    report = server.stop()
                warn = "warning: " if report.killed or report.left else ""
                _say(f"  {warn}stopped {spec.label} ({report.describe()})")

    def _target(self, server: ServerProcess, run: Run, files: PayloadFiles) -> LoadTarget:
        payload = files.payload
        if run.protocol is Protocol.GRPC:
            return LoadTarget(run.protocol, f"http://127.0.0.1:{server.grpc_port}{GRPC_METHOD}",
                              files.request, payload.headers, files.request_json,
                              answer_bytes=len(grpc_frame(payload.answer)))
        return LoadTarget(run.protocol, f"http://127.0.0.1:{server.http_port}{run.route}",
                          files.request, payload.headers)

    def _measure_run(self, server: ServerProcess, profile: Profile, run: Run,
                     ready_s: float) -> RunOutcome:
        files = self.payload(profile.model, run.protocol,
                             run.route if run.protocol is Protocol.GRPC else None)
        payload = files.payload
        outcome = RunOutcome(profile, run, ready_s=ready_s)
        name = f"{profile.name} / {run.label}"
        tool = self.runners[run.tool]
        try:
            if run.protocol is Protocol.GRPC:
                answer = server.smoke_grpc(GRPC_METHOD, payload.request)
            else:
                answer = server.smoke(run.route, payload.request, headers=payload.headers)
            outcome.answer_matches = answer_matches(payload, answer)
            if not outcome.answer_matches:
                _say(f"  warning: {name}: {run.target} answered {answer[:120]!r}, "
                     "not the reference model's output")
            target = self._target(server, run, files)
            connections, threads = profile.load(run)
            if self.settings.warmup_s > 0:
                _say(f"  {name}: warm-up {self.settings.warmup_s:g}s")
                tool.run(target, threads, connections, self.settings.warmup_s)
            _say(f"  {name}: measuring {self.settings.duration_s:g}s at "
                 f"{connections} connection(s), {run.tool.value}"
                 + (f" with {threads} thread(s)" if run.tool is not LoadTool.K6 else ""))
            before = self._broker_snapshot(server)
            started = time.monotonic()
            cpu_before = server.cpu_seconds_by_daemon()
            result = tool.run(target, threads, connections, self.settings.duration_s)
            cpu_after = server.cpu_seconds_by_daemon()
            outcome.result = result
            if cpu_before is not None and cpu_after is not None:
                outcome.server_cpu_by_daemon = {
                    name: used - cpu_before.get(name, 0.0) for name, used in cpu_after.items()}
                outcome.server_cpu_s = sum(outcome.server_cpu_by_daemon.values())
            after = self._broker_snapshot(server)
            if before is not None and after is not None:
                try:
                    outcome.batching = broker_stats.window(
                        before, after, run.endpoint or broker_stats.endpoint_key(run.route))
                except broker_stats.StatsUnavailable as exc:
                    self._warn_stats(exc)
            per_request = outcome.server_ms_per_request()
            _say(f"  {name}: {result.rps:,.0f} req/s ({result.ok_rps:,.0f} ok), "
                 f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                 f"{result.responses_other} non-2xx"
                 + (f" {result.statuses}" if result.responses_other else "")
                 + f", {result.errors} socket errors"
                 + (f" {result.socket_errors}" if result.errors else "")
                 + (f", {outcome.batching.batches:,} model calls of "
                    f"{outcome.batching.mean_batch_size:.1f} rows" if outcome.batching else "")
                 + (f", {run.tool.value} {result.tool_cpu_s:.1f} CPU-s"
                    if result.tool_cpu_s is not None else "")
                 + (f", server {per_request:.2f} CPU-ms/request"
                    if per_request is not None else "")
                 + (f" ({outcome.daemon_us_per_request()})"
                    if per_request is not None and len(outcome.server_cpu_by_daemon) > 1
                    else "")
                 + f" [{time.monotonic() - started:.1f}s]")
            if not server.alive():
                raise ServerFailed(f"{server.spec.label} died during the run; see "
                                   f"{server.log_path}")
        except (ServerFailed, LoadFailed) as exc:
            outcome.error = str(exc)
            _say(f"  error: {name}: {exc}")
        return outcome

    def _broker_snapshot(self, server: ServerProcess) -> dict | None:
        """The broker's STATS, or None (echo server, or statistics unavailable)."""
        if server.control_address is None:
            return None
        try:
            return broker_stats.snapshot(sys.executable, server.control_address,
                                         self.settings.repo)
        except broker_stats.StatsUnavailable as exc:
            self._warn_stats(exc)
            return None

    def _warn_stats(self, exc: Exception) -> None:
        if not self._stats_warned:
            self._stats_warned = True
            _say(f"  warning: no broker statistics (batch sizes left blank): {exc}")
