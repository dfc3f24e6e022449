"""Turn measured runs into check verdicts, a markdown table and a JSON document."""
from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from bench_lib.broker_stats import BatchFigures
from bench_lib.load import LoadResult
from bench_lib.profiles import Check, Measure, Profile, Run


@dataclass
class RunOutcome:
    """One run of one profile: its load tool's result, or why there is none (``error``: it
    failed; ``skipped``: its load tool is not installed)."""

    profile: Profile
    run: Run
    result: LoadResult | None = None
    error: str | None = None
    answer_matches: bool | None = None  # the smoke request's answer vs the reference model
    ready_s: float | None = None
    batching: BatchFigures | None = None  # what the broker saw in the measured window
    server_cpu_s: float | None = None  # CPU the server's processes used in the window
    # the same per daemon (broker, gateway, worker, other), seconds
    server_cpu_by_daemon: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None

    def server_ms_per_request(self) -> float | None:
        """Server CPU per answered request in the window, in ms (all its processes)."""
        if self.server_cpu_s is None or self.result is None or not self.result.requests:
            return None
        return 1000.0 * self.server_cpu_s / self.result.requests

    def daemon_us_per_request(self) -> str:
        """``gateway 380 us, broker 149 us, ...``: each daemon's CPU per answered request."""
        if self.result is None or not self.result.requests:
            return ""
        return ", ".join(f"{name} {1e6 * used / self.result.requests:.0f} us"
                         for name, used in sorted(self.server_cpu_by_daemon.items()))


class Verdict(enum.Enum):
    """A check's outcome. FAILED_ERRORS: the subject had non-2xx answers or socket errors
    (whether or not the check has a target)."""

    PASS = "PASS"
    FAIL = "FAIL"
    FAILED_ERRORS = "FAIL (errors)"
    REPORTED = "-"        # no target: the figure is only reported
    NOT_MEASURED = "n/a"  # a run of the check failed


@dataclass
class CheckOutcome:
    """A check and the figure it gave (``None`` when a run is missing)."""

    check: Check
    value: float | None
    verdict: Verdict


def evaluate(check: Check, subject: LoadResult | None,
             baseline: LoadResult | None) -> CheckOutcome:
    """Compare ``subject`` with ``baseline`` as ``check`` says; a bound decides the verdict.
    ``baseline`` is not used by a measure of the subject alone (``Measure.P99_MS``)."""
    if subject is None:
        return CheckOutcome(check, None, Verdict.NOT_MEASURED)
    if check.measure is Measure.P99_MS:
        value = subject.p99_ms
    elif baseline is None:
        return CheckOutcome(check, None, Verdict.NOT_MEASURED)
    elif check.measure is Measure.THROUGHPUT_RATIO:
        value = subject.ok_rps / baseline.ok_rps if baseline.ok_rps else 0.0
    elif check.measure is Measure.ADDED_P50_MS:
        value = subject.p50_ms - baseline.p50_ms
    else:
        value = subject.p99_ms - baseline.p99_ms
    if subject.responses_other or subject.errors:
        verdict = Verdict.FAILED_ERRORS  # a figure from a run that failed requests is no figure
    elif check.bound is None:
        verdict = Verdict.REPORTED
    elif check.measure.higher_is_better:
        verdict = Verdict.PASS if value >= check.bound else Verdict.FAIL
    else:
        verdict = Verdict.PASS if value <= check.bound else Verdict.FAIL
    return CheckOutcome(check, value, verdict)


def evaluate_profile(profile: Profile, outcomes: list[RunOutcome]) -> list[CheckOutcome]:
    """Every check of ``profile`` over its runs' outcomes."""
    by_label = {o.run.label: o.result for o in outcomes if o.profile is profile}
    return [evaluate(c, by_label.get(c.subject),
                     None if c.baseline is None else by_label.get(c.baseline))
            for c in profile.checks]


def format_figure(outcome: CheckOutcome) -> str:
    check, value = outcome.check, outcome.value
    if value is None:
        return f"n/a vs {check.baseline}" if check.baseline else "n/a"
    if check.measure is Measure.P99_MS:
        return f"p99 {value:.2f} ms"
    if check.measure is Measure.THROUGHPUT_RATIO:
        return f"{value:.2f}x ok req/s of {check.baseline}"
    which = "p50" if check.measure is Measure.ADDED_P50_MS else "p99"
    return f"{value:+.2f} ms {which} over {check.baseline}"


def format_target(check: Check) -> str:
    if check.bound is None:
        return ""
    if check.measure is Measure.THROUGHPUT_RATIO:
        return f">= {check.bound:.2f}x"
    return f"<= {check.bound:.2f} ms"


HEADER = ("profile", "run", "server", "conns", "req/s", "ok req/s", "non-2xx", "sock err",
          "p50 ms", "p99 ms", "batch", "tool cpu", "srv cpu/req", "vs baseline", "target",
          "verdict")
_NUMERIC = {"conns", "req/s", "ok req/s", "non-2xx", "sock err", "p50 ms", "p99 ms", "batch",
            "tool cpu", "srv cpu/req"}


def table_rows(outcomes: list[RunOutcome], checks: dict[str, list[CheckOutcome]],
               cpus: int | None = None) -> list[tuple[str, ...]]:
    """One row per run, in measuring order of profiles; checks sit on their subject's row.
    ``tool cpu`` is the load tool's share of all ``cpus`` (this host's) while it ran;
    ``srv cpu/req`` the server's CPU per answered request, in ms."""
    cpus = cpus or os.cpu_count() or 1
    rows = []
    for o in outcomes:
        mine = [c for c in checks.get(o.profile.name, []) if c.check.subject == o.run.label]
        baseline_of = {c.check.baseline for c in checks.get(o.profile.name, [])
                       if c.check.baseline is not None}
        if mine:
            figure = "; ".join(format_figure(c) for c in mine)
            target = "; ".join(t for t in (format_target(c.check) for c in mine) if t)
            verdict = "; ".join(dict.fromkeys(
                c.verdict.value for c in mine if c.verdict is not Verdict.REPORTED)) or "-"
        else:
            figure = "baseline" if o.run.label in baseline_of else ""
            target = verdict = ""
        r = o.result
        if r is None:
            cells: tuple[str, ...] = ("skipped" if o.skipped else "failed", *[""] * 8)
        else:
            batch = f"{o.batching.mean_batch_size:.1f}" if o.batching else ""
            share, per_request = r.tool_cpu_share(cpus), o.server_ms_per_request()
            cells = (f"{r.rps:,.0f}", f"{r.ok_rps:,.0f}", f"{r.responses_other:,}",
                     f"{r.errors:,}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", batch,
                     "" if share is None else f"{share:.0%}",
                     "" if per_request is None else f"{per_request:.2f} ms")
        rows.append((o.profile.name, o.run.label, o.run.server.label,
                     str(o.profile.load(o.run)[0]), *cells, figure, target, verdict))
    return rows


def markdown_table(rows: list[tuple[str, ...]]) -> str:
    """An aligned markdown table of ``rows`` under :data:`HEADER`."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(HEADER)]

    def line(cells: tuple[str, ...]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if HEADER[i] in _NUMERIC else cell.ljust(widths[i]))
        return "| " + " | ".join(out) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if HEADER[i] in _NUMERIC else "-" * (w + 2)
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(HEADER), rule, *(line(r) for r in rows)])


def failures(outcomes: list[RunOutcome]) -> list[str]:
    """A line per failed run, for under the table."""
    return [f"{o.profile.name} / {o.run.label}: {o.error.splitlines()[0]}"
            for o in outcomes if o.error]


def skipped(outcomes: list[RunOutcome]) -> list[str]:
    """A line per reason runs were skipped (a load tool missing), naming the runs."""
    runs: dict[str, list[str]] = {}
    for o in outcomes:
        if o.skipped:
            runs.setdefault(o.skipped, []).append(f"{o.profile.name} / {o.run.label}")
    return [f"{', '.join(labels)}: {reason}" for reason, labels in runs.items()]


def to_document(meta: dict, outcomes: list[RunOutcome],
                checks: dict[str, list[CheckOutcome]], profiles: list[Profile],
                extra: dict | None = None) -> dict:
    """The JSON document of one invocation; ``extra`` adds top-level sections."""
    doc_profiles = []
    for profile in profiles:
        runs = []
        for o in (o for o in outcomes if o.profile is profile):
            connections, threads = profile.load(o.run)
            share = o.result.tool_cpu_share(os.cpu_count() or 1) if o.result else None
            per_request = o.server_ms_per_request()
            runs.append({
                "label": o.run.label, "server": o.run.server.label, "route": o.run.route,
                "protocol": o.run.protocol.value, "tool": o.run.tool.value,
                "connections": connections, "threads": threads,
                "ready_s": None if o.ready_s is None else round(o.ready_s, 2),
                "answer_matches_reference": o.answer_matches, "error": o.error,
                "skipped": o.skipped,
                "result": o.result.to_json() if o.result else None,
                "tool_cpu_share": None if share is None else round(share, 4),
                "server_cpu_s": None if o.server_cpu_s is None else round(o.server_cpu_s, 3),
                "server_cpu_ms_per_request":
                    None if per_request is None else round(per_request, 4),
                "server_cpu_s_by_daemon": {name: round(used, 3) for name, used
                                           in o.server_cpu_by_daemon.items()},
                "broker": None if o.batching is None else o.batching.to_json(),
            })
        doc_profiles.append({
            "name": profile.name, "summary": profile.summary, "model": profile.model,
            "connections": profile.connections, "threads": profile.threads, "runs": runs,
            "checks": [{
                "subject": c.check.subject, "baseline": c.check.baseline,
                "measure": c.check.measure.value, "bound": c.check.bound,
                "bound_basis": c.check.basis or None,
                "value": None if c.value is None else round(c.value, 4),
                "verdict": c.verdict.value,
            } for c in checks.get(profile.name, [])],
        })
    return {"meta": meta, "profiles": doc_profiles, **(extra or {})}


def write_outputs(out_dir: Path, stamp: str, document: dict, markdown: str) -> list[Path]:
    """Write ``bench-<stamp>.json/.md`` and ``latest.json/.md`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2) + "\n"
    paths = []
    for name in (f"bench-{stamp}", "latest"):
        (out_dir / f"{name}.json").write_text(text)
        (out_dir / f"{name}.md").write_text(markdown + "\n")
        paths += [out_dir / f"{name}.json", out_dir / f"{name}.md"]
    return paths
