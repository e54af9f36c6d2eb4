"""A measured run judged: its thresholds (the scenario's SLOs on every figure it measures,
overall and per endpoint: perfruns.thresholds) and, for a run of the weekly series, its
comparison with its baseline run. A regression of latencies, failures or throughput fails
the run like a threshold would; one of memory (DB RAM, memory growth) is suspected only —
memory moves with the load and the allocator — unless the scenario asks for it to fail.
Reads only: perfruns.services.runs writes the outcome.
"""

from __future__ import annotations

from perfruns.models import PerfRun, RunStatus
from perfruns.payloads import RegressionJson, VerdictLine
from perfruns.regression import MEMORY_METRICS
from perfruns.thresholds import judge

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
            fail_on_memory = bool(run.settings.get("fail_on_memory_regression"))
            # Each worse figure is only suspected (one run): the team hears of it when the
            # series confirms it.
            for worse in comparison.worse:
                suspected = worse.metric in MEMORY_METRICS and not fail_on_memory
                line: VerdictLine = {
                    "check": f"{worse.endpoint} {worse.metric} vs run #{baseline.pk}",
                    "limit": worse.baseline,
                    "value": worse.candidate,
                    "passed": suspected,
                }
                if suspected:
                    line["suspected"] = True
                    line["note"] = "suspected: memory fails a run only when its scenario asks"
                verdict.append(line)
    passed = all(line["passed"] for line in verdict)
    return (RunStatus.PASSED if passed else RunStatus.FAILED), verdict, regression


def thresholds_judge(run: PerfRun) -> list[VerdictLine]:
    """One line per threshold of the run's settings: what was measured against what."""
    endpoints = {
        ("Aggregated" if stat.is_aggregate else stat.name): stat.figures
        for stat in run.endpoints.all()
    }
    return judge(run.settings.get("thresholds") or {}, summary=run.summary, endpoints=endpoints)
