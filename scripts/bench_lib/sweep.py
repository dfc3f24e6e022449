"""The `batching-sweep` profile's own report: a table by connection count, the issue's checks
with PASS/FAIL, and a PNG of requests/s and p99 against connections, batching on and off.

The figures come from the outcomes of the sweep's runs (``batched c64``, ``unbatched c1``...);
the checks are the profile's, evaluated by :mod:`bench_lib.report` like any other, so the main
table and ``--check`` agree with what is printed here.
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bench_lib.load import LoadResult
from bench_lib.profiles import (
    BATCH_MAX_LATENCY_MS,
    BATCH_MAX_ROWS,
    BATCH_P99_SLACK_MS,
    BATCHING_SWEEP,
    GPU_SIM_FULL_BATCH_MS,
    SWEEP_CHECK_CONNECTIONS,
    SWEEP_CONNECTIONS,
    Measure,
    sweep_label,
)
from bench_lib.report import CheckOutcome, RunOutcome, Verdict

MATPLOTLIB_HINT = ("matplotlib is missing, so no batching-sweep plot was written; install it "
                   "into the Python that runs scripts/bench:  {python} -m pip install matplotlib")


@dataclass(frozen=True)
class Point:
    """One run of the sweep: ``connections``, batching on or off, and what was measured."""

    connections: int
    batched: bool
    outcome: RunOutcome

    @property
    def result(self) -> LoadResult | None:
        return self.outcome.result


def points(outcomes: list[RunOutcome]) -> list[Point]:
    """The sweep's runs that were attempted, by connections, unbatched first."""
    by_label = {o.run.label: o for o in outcomes if o.profile.name == BATCHING_SWEEP.name}
    found = []
    for conns in SWEEP_CONNECTIONS:
        for batched in (False, True):
            outcome = by_label.get(sweep_label(batched, conns))
            if outcome is not None:
                found.append(Point(conns, batched, outcome))
    return found


def _table(pts: list[Point]) -> str:
    header = ("conns", "batching", "req/s", "ok req/s", "non-2xx", "sock err", "p50 ms",
              "p99 ms", "mean batch", "model calls")
    rows = []
    for p in pts:
        r, b = p.outcome.result, p.outcome.batching
        if r is None:
            cells = ("failed", "", "", "", "", "", "", "")
        else:
            cells = (f"{r.rps:,.0f}", f"{r.ok_rps:,.0f}", f"{r.responses_other:,}",
                     f"{r.errors:,}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
                     f"{b.mean_batch_size:.1f}" if b else "", f"{b.batches:,}" if b else "")
        rows.append((str(p.connections), "on" if p.batched else "off", *cells))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    left = {"batching"}

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) if header[i] in left else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 2) if header[i] in left else "-" * (w + 1) + ":"
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _verdict_word(outcome: CheckOutcome) -> str:
    return outcome.verdict.value if outcome.verdict is not Verdict.REPORTED else "-"


def summary(outcomes: list[RunOutcome], checks: list[CheckOutcome]) -> tuple[str, dict]:
    """The sweep's markdown section (table, checks, batch sizes, notes) and its JSON."""
    pts = points(outcomes)
    c = SWEEP_CHECK_CONNECTIONS
    measured = {(p.connections, p.batched): p.result for p in pts if p.result is not None}
    lines = [f"### {BATCHING_SWEEP.name}: gpu_sim, 1 worker, `/gpu_sim/predict` (batching on: "
             f"max batch {BATCH_MAX_ROWS}, max latency {BATCH_MAX_LATENCY_MS:g} ms) vs "
             "`/gpu_sim/predict_unbatched` (off), one cluster", "", _table(pts), ""]
    doc_checks = []
    for outcome in checks:
        check, value = outcome.check, outcome.value
        word = _verdict_word(outcome)
        if check.measure is Measure.THROUGHPUT_RATIO:
            subject, base = measured.get((c, True)), measured.get((c, False))
            figure = ("n/a" if value is None or subject is None or base is None else
                      f"{subject.ok_rps:,.0f} / {base.ok_rps:,.0f} = {value:.1f}x")
            text = (f"at {c} connections, batched ok req/s >= {check.bound:g} x unbatched: "
                    f"{figure}")
        elif check.measure is Measure.P99_MS:
            figure = "n/a" if value is None else f"{value:.2f} ms"
            text = (f"at {c} connections, batched p99 <= {check.bound:.1f} ms "
                    f"({check.basis}): {figure}")
        else:
            text = f"{check.subject} vs {check.baseline}, {check.measure.value}: {value}"
        lines.append(f"- **{word}** {text}")
        doc_checks.append({"check": text, "value": value, "bound": check.bound,
                           "verdict": outcome.verdict.value})

    b64 = next((p.outcome.batching for p in pts if (p.connections, p.batched) == (c, True)),
               None)
    fitted = None if b64 is None else b64.fitted_exec_ms(BATCH_MAX_ROWS)
    m = None if b64 is None else b64.latency_model
    if fitted is None or m is None:
        lines.append(f"- full-batch execution time used: {GPU_SIM_FULL_BATCH_MS:.1f} ms from the "
                     "gpu_sim model (the broker gave no fitted latency model)")
    else:
        lines.append(
            f"- full-batch execution time used: {GPU_SIM_FULL_BATCH_MS:.1f} ms from the gpu_sim "
            f"model (5 ms + 0.1 ms x {BATCH_MAX_ROWS}); the broker's fitted a*{BATCH_MAX_ROWS}+b "
            f"after the batched c{c} window is {fitted:.1f} ms (a = {1000 * m['a_s_per_row']:.3f} "
            f"ms/row, b = {1000 * m['b_s']:.2f} ms, {m['samples']:,} batches), which would give "
            f"a bound of {BATCH_MAX_LATENCY_MS + fitted + BATCH_P99_SLACK_MS:.1f} ms")
    sizes = []
    for p in pts:
        b = p.outcome.batching
        if p.batched and b is not None:
            top = max(b.batch_sizes) if b.batch_sizes else 0
            sizes.append(f"c{p.connections} {b.mean_batch_size:.1f} (largest {top})")
    if sizes:
        lines.append("- mean batch size, batching on: " + ", ".join(sizes))
    else:
        lines.append("- mean batch size: unavailable (no broker statistics)")

    notes = []
    for p in pts:
        r, name = p.outcome.result, p.outcome.run.label
        if r is None:
            why = (p.outcome.error or "no result").splitlines() or ["no result"]
            notes.append(f"{name}: not measured ({why[0]})")
            continue
        if r.responses_other:
            bad = {k: v for k, v in r.statuses.items() if not k.startswith("2")}
            notes.append(f"{name}: {r.responses_other:,} non-2xx answers {bad}")
        if r.errors:
            kinds = {k: v for k, v in r.socket_errors.items() if v}
            notes.append(f"{name}: {r.errors:,} socket errors {kinds}")
        b = p.outcome.batching
        # the broker's window also holds what was in flight when wrk's windows began and ended
        # (up to a connection count each), so only a larger gap says requests went missing
        slack = 2 * p.connections + 0.05 * r.requests
        if b is not None and abs(b.requests - r.requests) > slack:
            notes.append(f"{name}: the broker completed {b.requests:,} requests in the window, "
                         f"wrk counted {r.requests:,} responses")
        if b is not None and b.statuses and set(b.statuses) - {"200"}:
            notes.append(f"{name}: the broker answered statuses {b.statuses} in the window")
        if b is not None and b.rejected:
            notes.append(f"{name}: the broker turned {b.rejected:,} requests away (queue full)")
    if notes:
        lines += ["", "errors and oddities:", *(f"- {n}" for n in notes)]

    doc = {
        "points": [_point_json(p) for p in pts],
        "checks": doc_checks,
        "full_batch_exec_ms_used": GPU_SIM_FULL_BATCH_MS,
        "full_batch_exec_ms_source": "gpu_sim model: 5 ms + 0.1 ms per row",
        "full_batch_exec_ms_fitted_by_broker": None if fitted is None else round(fitted, 3),
        "notes": notes,
    }
    return "\n".join(lines), doc


def _point_json(p: Point) -> dict:
    r, b = p.result, p.outcome.batching
    return {"connections": p.connections, "batching": p.batched, "label": p.outcome.run.label,
            "rps": None if r is None else round(r.rps, 1),
            "ok_rps": None if r is None else round(r.ok_rps, 1),
            "p50_ms": None if r is None else r.p50_ms,
            "p99_ms": None if r is None else r.p99_ms,
            "mean_batch_size": None if b is None else round(b.mean_batch_size, 3)}


def plot(outcomes: list[RunOutcome], out_dir: Path, stamp: str,
         title: str = "") -> list[Path] | None:
    """Write ``batching-sweep-<stamp>.png`` and ``batching-sweep-latest.png`` under ``out_dir``;
    return their paths, or None when matplotlib is missing or nothing was measured (said on
    stderr)."""
    pts = [(p, p.result) for p in points(outcomes) if p.result is not None]
    if not pts:
        print("scripts/bench: no batching-sweep run was measured; no plot written",
              file=sys.stderr)
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("scripts/bench: " + MATPLOTLIB_HINT.format(python=sys.executable), file=sys.stderr)
        return None

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {True: dict(marker="o", linestyle="-", color="tab:blue", label="batching on"),
              False: dict(marker="s", linestyle="--", color="tab:orange", label="batching off")}
    conns = sorted({p.connections for p, _ in pts})
    for batched in (True, False):
        mine = [(p, r) for p, r in pts if p.batched is batched]
        xs = [p.connections for p, _ in mine]
        left.plot(xs, [r.ok_rps for _, r in mine], **styles[batched])
        right.plot(xs, [r.p99_ms for _, r in mine], **styles[batched])
        if any(r.responses_other for _, r in mine):  # errors: show all answers too
            left.plot(xs, [r.rps for _, r in mine], linestyle=":",
                      color=styles[batched]["color"],
                      label=f"{styles[batched]['label']}, all answers incl. non-2xx")
        offset = (0, 7) if batched else (0, -13)  # on above, off below: equal values stay legible
        for p, r in mine:
            left.annotate(f"{r.ok_rps:,.0f}", (p.connections, r.ok_rps), fontsize=8,
                          textcoords="offset points", xytext=offset, ha="center",
                          color=styles[batched]["color"])
            right.annotate(f"{r.p99_ms:,.1f}", (p.connections, r.p99_ms), fontsize=8,
                           textcoords="offset points", xytext=offset, ha="center",
                           color=styles[batched]["color"])
            if r.responses_other or r.errors:
                for ax, y in ((left, r.ok_rps), (right, r.p99_ms)):
                    ax.plot([p.connections], [y], marker="x", color="red", markersize=11,
                            linestyle="none")
    right.axhline(BATCHING_SWEEP.checks[1].bound, color="green", linestyle=":", linewidth=1,
                  label=f"p99 target at {SWEEP_CHECK_CONNECTIONS} conns "
                        f"({BATCHING_SWEEP.checks[1].bound:.1f} ms)")
    for ax, heading, unit in ((left, "throughput", "ok requests/s (2xx)"),
                              (right, "p99 latency", "p99 latency (ms, log scale)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(conns, [str(c) for c in conns])
        ax.minorticks_off()
        ax.set_xlabel("connections (closed loop, wrk)")
        ax.set_ylabel(unit)
        ax.set_title(f"gpu_sim, 1 worker: {heading}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    top = left.get_ylim()[1] * 1.1
    left.set_ylim(bottom=-0.07 * top, top=top)  # room for the labels under the "off" line
    right.set_yscale("log")
    low, high = right.get_ylim()
    right.set_ylim(low / 1.5, high * 1.5)
    if any(r.responses_other or r.errors for _, r in pts):
        fig.text(0.5, 0.005, "red x: the run had non-2xx answers or socket errors",
                 ha="center", fontsize=8, color="red")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"batching-sweep-{stamp}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    latest = out_dir / "batching-sweep-latest.png"
    shutil.copyfile(path, latest)
    return [path, latest]
