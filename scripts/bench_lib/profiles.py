"""What the benchmark measures, as data: servers, runs, checks and the profiles grouping them.

A profile is a fixed load (connections, load threads) applied to a few runs,
each a server plus the route that is hit, with the protocol the requests
speak and the load tool that sends them, and checks that compare two runs
of the same profile, measured in the same invocation. Adding a profile is
adding an entry to :data:`PROFILES`; nothing else changes.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Protocol(enum.Enum):
    """What a run's requests are: the body, the headers and how the answer is read."""

    REST_JSON = "rest-json"    # POST /{service}/{endpoint}, {"x": [[...]]} -> [[...]]
    OIP_BINARY = "oip-binary"  # POST /v2/models/{m}/infer, JSON header + raw tensor bytes
    GRPC = "grpc"              # inference.GRPCInferenceService/ModelInfer, raw tensor contents


class LoadTool(enum.Enum):
    """The program that sends a run's load (closed loop, one request in flight per
    connection)."""

    WRK = "wrk"        # HTTP/1.1; C and LuaJIT
    H2LOAD = "h2load"  # HTTP/1.1 (--h1) and HTTP/2, so gRPC too; C (nghttp2)
    K6 = "k6"          # HTTP/1.1 and gRPC; Go, one JavaScript VM per VU

    def speaks(self, protocol: Protocol) -> bool:
        return protocol is not Protocol.GRPC or self is not LoadTool.WRK


@dataclass(frozen=True)
class EchoServer:
    """The bare tornado baseline, answering the reference ``model``'s output to every POST;
    with ``grpc``, also a bare grpc.aio server answering every ``ModelInfer`` with the
    model's output (the gRPC baseline)."""

    model: str
    grpc: bool = False
    sleep_s: float = 0.0  # each POST first sleeps this long in a one-thread executor

    @property
    def label(self) -> str:
        sleeps = f", {1000 * self.sleep_s:g} ms sleep in a thread" if self.sleep_s else ""
        return f"tornado{' + grpc' if self.grpc else ''} echo ({self.model}{sleeps})"


@dataclass(frozen=True)
class Cluster:
    """``zeroserve serve SERVICE --workers N [serve_args]`` with ``env`` added to its environment.

    ``service`` is a path relative to the repository root, e.g. ``examples/mlp.py:MLP``.
    """

    service: str
    workers: int = 1
    serve_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        name = self.service.rsplit(":", 1)[-1]
        extra = " " + " ".join(self.serve_args) if self.serve_args else ""
        plural = "s" if self.workers != 1 else ""
        return f"zeroserve {name} {self.workers} worker{plural}{extra}"


ServerSpec = EchoServer | Cluster


@dataclass(frozen=True)
class Run:
    """One measured window: ``POST`` load on ``route`` of ``server``, sent by ``tool``.

    ``label`` names the run within its profile; checks refer to runs by it.
    ``route`` is an HTTP path; for ``Protocol.GRPC`` it is the OIP model name.
    ``connections`` / ``threads``, when set, replace the profile's load for this
    run (a sweep is one profile whose runs differ in load). ``endpoint`` is the
    broker's name of the endpoint the run reaches (``mlp.predict``), for its
    statistics, when the route does not spell it (an OIP model name).
    """

    label: str
    server: ServerSpec
    route: str
    connections: int | None = None
    threads: int | None = None
    protocol: Protocol = Protocol.REST_JSON
    tool: LoadTool = LoadTool.WRK
    endpoint: str | None = None

    def __post_init__(self) -> None:
        if not self.tool.speaks(self.protocol):
            raise ValueError(f"run {self.label!r}: {self.tool.value} cannot send "
                             f"{self.protocol.value}")

    @property
    def target(self) -> str:
        """What the run loads, for a person: ``POST /mlp/predict``, ``gRPC ModelInfer mlp``."""
        if self.protocol is Protocol.GRPC:
            return f"gRPC ModelInfer {self.route}"
        return f"POST {self.route}" + (" (binary tensors)"
                                        if self.protocol is Protocol.OIP_BINARY else "")


class Measure(enum.Enum):
    """How a check compares its subject run with its baseline run."""

    THROUGHPUT_RATIO = "throughput_ratio"  # subject ok req/s / baseline ok req/s; higher is better
    ADDED_P50_MS = "added_p50_ms"          # subject p50 - baseline p50, in ms; lower is better
    ADDED_P99_MS = "added_p99_ms"          # subject p99 - baseline p99, in ms; lower is better
    P99_MS = "p99_ms"                      # subject p99 in ms, no baseline; lower is better

    @property
    def higher_is_better(self) -> bool:
        return self is Measure.THROUGHPUT_RATIO

    @property
    def needs_baseline(self) -> bool:
        return self is not Measure.P99_MS


@dataclass(frozen=True)
class Check:
    """Compare run ``subject`` with run ``baseline`` of the same profile.

    ``bound`` is the target: a minimum when the measure is better higher, a
    maximum otherwise; ``None`` reports the figure without a target.
    ``baseline`` is ``None`` for a measure of the subject alone (``P99_MS``);
    ``basis`` says where the bound comes from, for the report.
    """

    subject: str
    baseline: str | None
    measure: Measure
    bound: float | None = None
    basis: str = ""


@dataclass(frozen=True)
class Profile:
    """A load (``connections`` over ``threads`` load threads, closed loop) and what it
    compares.

    ``model`` names the reference model in ``examples/reference_models.py``
    whose single-row input is the request body and whose answer the echo
    baseline sends back.
    """

    name: str
    summary: str
    model: str
    connections: int
    threads: int
    runs: tuple[Run, ...]
    checks: tuple[Check, ...] = field(default=())

    def run(self, label: str) -> Run:
        for run in self.runs:
            if run.label == label:
                return run
        raise KeyError(f"profile {self.name} has no run {label!r}")

    def load(self, run: Run) -> tuple[int, int]:
        """(connections, load threads) of ``run``: its own, else the profile's."""
        return (run.connections or self.connections, run.threads or self.threads)


MLP = "examples/mlp.py:MLP"
GPU_SIM = "examples/gpu_sim.py:GpuSim"
_ECHO_MLP = Run("echo", EchoServer("mlp"), "/mlp/predict")
_ZEROSERVE_MLP = Run("zeroserve", Cluster(MLP, workers=1), "/mlp/predict")

_GPU_SIM_1 = Cluster(GPU_SIM, workers=1)

# gpu_sim's `predict` limits (examples/gpu_sim.py) and cost (shared/bench/models.py: it sleeps
# 5 ms + 0.1 ms per row): the latency target for batching is the longest a request may
# wait for its batch, plus the run of a full batch, plus 10 ms of serving slack.
BATCH_MAX_ROWS = 64
BATCH_MAX_LATENCY_MS = 20.0
GPU_SIM_FULL_BATCH_MS = 5.0 + 0.1 * BATCH_MAX_ROWS  # 11.4 ms
GPU_SIM_ONE_ROW_S = 0.0051  # what gpu_sim sleeps for one row (../shared/bench/sleep_echo.py)
BATCH_P99_SLACK_MS = 10.0
BATCH_P99_BOUND_MS = BATCH_MAX_LATENCY_MS + GPU_SIM_FULL_BATCH_MS + BATCH_P99_SLACK_MS
BATCH_SPEEDUP_TARGET = 10.0
SWEEP_CONNECTIONS = (1, 8, 64, 256)
SWEEP_CHECK_CONNECTIONS = 64


def sweep_label(batched: bool, conns: int) -> str:
    """The label of a `batching-sweep` run: ``batched c64``, ``unbatched c1``..."""
    return f"{'batched' if batched else 'unbatched'} c{conns}"


def _wrk_threads(conns: int) -> int:
    return 1 if conns == 1 else 2


BATCHING_C64 = Profile(
    name="batching-c64",
    summary="what adaptive batching buys on gpu_sim at 64 connections (1 worker): "
            "batchable endpoint vs the same model unbatched",
    model="gpu_sim", connections=64, threads=2,
    runs=(
        Run("unbatched", _GPU_SIM_1, "/gpu_sim/predict_unbatched"),
        Run("batched", _GPU_SIM_1, "/gpu_sim/predict"),
    ),
    checks=(
        Check("batched", "unbatched", Measure.THROUGHPUT_RATIO),
        Check("batched", "unbatched", Measure.ADDED_P99_MS),
    ),
)

_C = SWEEP_CHECK_CONNECTIONS
BATCHING_SWEEP = Profile(
    name="batching-sweep",
    summary="gpu_sim batched vs unbatched on one worker at "
            f"{', '.join(map(str, SWEEP_CONNECTIONS))} connections, one cluster; "
            "writes batching-sweep-<time>.png",
    model="gpu_sim", connections=_C, threads=_wrk_threads(_C),
    runs=tuple(
        Run(sweep_label(batched, conns), _GPU_SIM_1,
            "/gpu_sim/predict" if batched else "/gpu_sim/predict_unbatched",
            connections=conns, threads=_wrk_threads(conns))
        for conns in SWEEP_CONNECTIONS for batched in (False, True)),
    checks=(
        Check(sweep_label(True, _C), sweep_label(False, _C), Measure.THROUGHPUT_RATIO,
              bound=BATCH_SPEEDUP_TARGET),
        Check(sweep_label(True, _C), None, Measure.P99_MS, bound=BATCH_P99_BOUND_MS,
              basis=f"{BATCH_MAX_LATENCY_MS:g} ms max latency + {GPU_SIM_FULL_BATCH_MS:.1f} ms "
                    f"full batch (gpu_sim model: 5 ms + 0.1 ms x {BATCH_MAX_ROWS} rows) + "
                    f"{BATCH_P99_SLACK_MS:g} ms"),
    ),
)

# The Open Inference Protocol next to the REST route, each sent by every load tool that
# speaks it, so that routes are compared only within one tool: wrk (HTTP routes, as in the
# overhead profiles), h2load (every route, HTTP/2 for gRPC; a C program that costs the
# server's two cores little) and k6 (every route; its Go gRPC client costs far more CPU per
# call than its HTTP one, so its gRPC/REST ratio is reported, not checked).
OIP_TOOLS = (LoadTool.WRK, LoadTool.H2LOAD, LoadTool.K6)
OIP_CHECKED_TOOL = LoadTool.H2LOAD
GRPC_VS_REST_TARGET = 1.0
OIP_MODEL = "mlp"  # the mlp service's default endpoint, as an OIP model
OIP_ENDPOINT = "mlp.predict"
_ECHO_OIP = EchoServer("mlp", grpc=True)
_MLP_1 = Cluster(MLP, workers=1)


def oip_label(tool: LoadTool, what: str) -> str:
    """The label of an `oip-*` run: ``h2load grpc``, ``wrk rest``, ``k6 grpc echo``..."""
    return f"{tool.value} {what}"


def _oip_runs(tool: LoadTool, echo: bool) -> tuple[Run, ...]:
    grpc = tool.speaks(Protocol.GRPC)
    return tuple(r for r in (
        echo and Run(oip_label(tool, "echo"), _ECHO_OIP, "/mlp/predict", tool=tool),
        echo and grpc and Run(oip_label(tool, "grpc echo"), _ECHO_OIP, OIP_MODEL,
                              protocol=Protocol.GRPC, tool=tool),
        Run(oip_label(tool, "rest"), _MLP_1, "/mlp/predict", tool=tool),
        Run(oip_label(tool, "oip-bin"), _MLP_1, f"/v2/models/{OIP_MODEL}/infer",
            protocol=Protocol.OIP_BINARY, tool=tool, endpoint=OIP_ENDPOINT),
        grpc and Run(oip_label(tool, "grpc"), _MLP_1, OIP_MODEL, protocol=Protocol.GRPC,
                     tool=tool, endpoint=OIP_ENDPOINT),
    ) if r)


def _oip_checks(tool: LoadTool, latency: bool) -> tuple[Check, ...]:
    def label(what: str) -> str:
        return oip_label(tool, what)

    checks = [Check(label("oip-bin"), label("rest"), Measure.THROUGHPUT_RATIO)]
    if tool.speaks(Protocol.GRPC):
        checked = tool is OIP_CHECKED_TOOL
        checks.append(Check(
            label("grpc"), label("rest"), Measure.THROUGHPUT_RATIO,
            bound=GRPC_VS_REST_TARGET if checked else None,
            basis="" if checked else f"reported only: {tool.value}'s gRPC client costs more "
                                     "CPU per call than its HTTP one"))
    if latency:
        checks += [Check(label("rest"), label("echo"), Measure.ADDED_P50_MS),
                   Check(label("oip-bin"), label("echo"), Measure.ADDED_P50_MS)]
        if tool.speaks(Protocol.GRPC):
            checks.append(Check(label("grpc"), label("grpc echo"), Measure.ADDED_P50_MS))
    return tuple(checks)


def oip_profile(connections: int) -> Profile:
    """`oip-cN`: the overhead profile at ``connections`` over REST JSON, OIP HTTP with binary
    tensors and OIP gRPC, each tool on its own (mlp, 1 worker). At one connection the echo
    baselines are measured too, for the latency each route adds."""
    return Profile(
        name=f"oip-c{connections}",
        summary=f"REST JSON vs OIP HTTP binary vs OIP gRPC at {connections} connection(s), "
                "mlp, 1 worker; each load tool compares routes it sent itself",
        model="mlp", connections=connections, threads=_wrk_threads(connections),
        runs=tuple(r for tool in OIP_TOOLS for r in _oip_runs(tool, connections == 1)),
        checks=tuple(c for tool in OIP_TOOLS for c in _oip_checks(tool, connections == 1)),
    )


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile(
        name="overhead-c1",
        summary="latency one request at a time adds over a bare tornado echo (mlp, 1 worker)",
        model="mlp", connections=1, threads=1,
        runs=(_ECHO_MLP, _ZEROSERVE_MLP),
        checks=(Check("zeroserve", "echo", Measure.ADDED_P50_MS, bound=1.5),),
    ),
    Profile(
        name="overhead-c64",
        summary="throughput at 64 connections relative to a bare tornado echo (mlp, 1 worker)",
        model="mlp", connections=64, threads=2,
        runs=(_ECHO_MLP, _ZEROSERVE_MLP),
        checks=(Check("zeroserve", "echo", Measure.THROUGHPUT_RATIO, bound=0.4),),
    ),
    Profile(
        name="gpu-sim-c1",
        summary="latency one request at a time adds to gpu_sim over a bare tornado server "
                "that sleeps as long in a thread (1 worker)",
        model="gpu_sim", connections=1, threads=1,
        runs=(Run("sleep echo", EchoServer("gpu_sim", sleep_s=GPU_SIM_ONE_ROW_S), "/gpu_sim"),
              Run("batched", _GPU_SIM_1, "/gpu_sim/predict"),
              Run("unbatched", _GPU_SIM_1, "/gpu_sim/predict_unbatched")),
        checks=(Check("batched", "sleep echo", Measure.ADDED_P50_MS, bound=1.0),
                Check("unbatched", "sleep echo", Measure.ADDED_P50_MS)),
    ),
    oip_profile(1),
    oip_profile(64),
    BATCHING_C64,
    BATCHING_SWEEP,
    Profile(
        name="scale-workers",
        summary="gpu_sim unbatched at 64 connections with 1, 2 and 4 workers",
        model="gpu_sim", connections=64, threads=2,
        runs=tuple(
            Run(f"{n} worker{'s' if n > 1 else ''}", Cluster(GPU_SIM, workers=n),
                "/gpu_sim/predict_unbatched")
            for n in (1, 2, 4)),
        checks=(
            Check("2 workers", "1 worker", Measure.THROUGHPUT_RATIO),
            Check("4 workers", "1 worker", Measure.THROUGHPUT_RATIO),
        ),
    ),
)}

DEFAULT_PROFILES = ("overhead-c1", "overhead-c64")
