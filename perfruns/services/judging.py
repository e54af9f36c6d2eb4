"""A measured run judged: its thresholds (the scenario's SLOs, overall and per endpoint)
and, for a run of the weekly series, its comparison with its baseline run — a regression
fails the run like a threshold would. Reads only: perfruns.services.runs writes the outcome.
"""

from __future__ import annotations

from perfruns.models import PerfRun, RunStatus
from perfruns.payloads import RegressionJson, VerdictLine

from .recording import MIB
from .run_comparison import ComparisonError, baseline_for, compare_runs


def run_judge(run: PerfRun) -> tuple[str, list[VerdictLine], RegressionJson]:
    """(passed or failed, one line per check, the baseline comparison). A version
    comparison's runs are judged against each other by the comparison, and an invalid run
    against nothing: both get their thresholds only."""
    verdict = thresholds_judge(run)
    regression: RegressionJson = {}
    in_series = run.version_comparison_id is None
    baseline = None if run.invalid_reason or not in_series else baseline_for(run)
    if baseline is not None:
        try:
            comparison = compare_runs(baseline=baseline, candidate=run)
        except ComparisonError as exc:
            regression = {"baseline": baseline.pk, "valid": False, "reasons": [str(exc)]}
        else:
            regression = comparison.as_json()
            # A regression fails the run like a threshold would. It is only suspected (one
            # run): the team hears of it when the series confirms it.
            for worse in comparison.worse:
                verdict.append(
                    {
                        "check": f"{worse.endpoint} {worse.metric} vs run #{baseline.pk}",
                        "limit": worse.baseline,
                        "value": worse.candidate,
                        "passed": False,
                    }
                )
    passed = all(line["passed"] for line in verdict)
    return (RunStatus.PASSED if passed else RunStatus.FAILED), verdict, regression


def thresholds_judge(run: PerfRun) -> list[VerdictLine]:
    """One line per threshold of the run's settings: what was measured against what."""
    thresholds = run.settings.get("thresholds") or {}
    summary = run.summary
    lines: list[VerdictLine] = []

    def check(label: str, value: float | None, limit: float, *, at_least: bool = False) -> None:
        if value is None:
            lines.append({"check": label, "limit": limit, "value": None, "passed": False})
            return
        passed = value >= limit if at_least else value <= limit
        lines.append({"check": label, "limit": limit, "value": value, "passed": passed})

    if "p95_ms" in thresholds:
        check("p95_ms", summary.get("p95_ms"), thresholds["p95_ms"])
    if "p99_ms" in thresholds:
        check("p99_ms", summary.get("p99_ms"), thresholds["p99_ms"])
    if "failure_rate" in thresholds:
        check("failure_rate", summary.get("failure_rate"), thresholds["failure_rate"])
    if "min_rps" in thresholds:
        check("min_rps", summary.get("rps"), thresholds["min_rps"], at_least=True)
    if "db_ram_peak_mb" in thresholds:
        peak = summary.get("db_ram_peak")
        check(
            "db_ram_peak_mb", peak / MIB if peak is not None else None, thresholds["db_ram_peak_mb"]
        )
    endpoints = {e.name: e for e in run.endpoints.all() if not e.is_aggregate}
    for name, limits in (thresholds.get("endpoints") or {}).items():
        stat = endpoints.get(name)
        for key, limit in limits.items():
            label = f"{name} {key}"
            if stat is None:
                check(label, None, limit)
            elif key == "failure_rate":
                check(label, stat.failure_rate, limit)
            else:
                check(label, stat.percentiles.get(key.removesuffix("_ms").removeprefix("p")), limit)
    return lines
