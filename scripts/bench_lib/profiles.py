"""What the benchmark measures, as data: servers, runs, checks and the profiles grouping them.

A profile is a fixed load (connections, wrk threads) applied to a few runs,
each a server plus the route that is hit, and checks that compare two runs
of the same profile, measured in the same invocation. Adding a profile is
adding an entry to :data:`PROFILES`; nothing else changes.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EchoServer:
    """The bare tornado baseline, answering the reference ``model``'s output to every POST."""

    model: str

    @property
    def label(self) -> str:
        return f"tornado echo ({self.model})"


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
    """One measured window: ``POST`` load on ``route`` of ``server``.

    ``label`` names the run within its profile; checks refer to runs by it.
    ``connections`` / ``threads``, when set, replace the profile's load for this
    run (a sweep is one profile whose runs differ in load).
    """

    label: str
    server: ServerSpec
    route: str
    connections: int | None = None
    threads: int | None = None


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
    """A load (``connections`` over ``threads`` wrk threads, closed loop) and what it compares.

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
        """(connections, wrk threads) of ``run``: its own, else the profile's."""
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
