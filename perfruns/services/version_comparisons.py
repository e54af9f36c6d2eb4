"""A/B/A version comparisons: is version B of the target worse than version A?

A comparison is requested in one transaction, claimed by one conditional UPDATE, then
makes its three runs back to back on the scenario's review environment — A, B, A again —
each an ordinary perf run whose target starts with {version} replaced.

Judging: B is worse (or better) on an endpoint and metric only when it is so against
BOTH A runs; the two A runs against each other measure the drift of the environment
between them. A difference of B that the A runs also show between themselves is drift,
not a verdict.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from perfruns.models import (
    ABA_ROLES,
    ComparisonStatus,
    ComparisonVerdict,
    Job,
    PerfRun,
    ReviewEnvironment,
    RunStatus,
    RunTrigger,
    Scenario,
    VersionComparison,
)

from .common import PipelineRefused, describe
from .jobs import (
    job_cancel,
    job_cancel_requested,
    job_claim,
    job_finish,
    job_heartbeat,
    job_stage,
)
from .proofs import criteria_evaluate_versions
from .queue import VERSION_COMPARISON_EXECUTE, enqueue_on_commit
from .run_comparison import ComparisonError, compare_runs
from .runs import perfrun_cancel, perfrun_request, perfrun_run
from .scenarios import check_version

log = logging.getLogger(__name__)

ROLE_LABELS = {"a1": "A", "b": "B", "a2": "A again"}
# How long a comparison waits for a run someone else started on its environment.
BUSY_POLL_S = 5


def version_comparison_request(
    *, scenario: Scenario, version_a: str, version_b: str, actor: User | None
) -> VersionComparison:
    """Queue an A/B/A comparison; refused for a scenario whose target takes no version,
    a version that is not a plain token, or an environment already busy with one."""
    if not scenario.takes_version:
        raise PipelineRefused(
            f"The target start command of {scenario.name} does not take a version: put "
            "{version} where the version goes (in the command or its environment)."
        )
    check_version(version_a, label="version A")
    check_version(version_b, label="version B")
    with transaction.atomic():
        # Row lock on the environment: two requests at once cannot both see it free.
        ReviewEnvironment.objects.select_for_update().get(pk=scenario.environment_id)
        busy = VersionComparison.objects.filter(
            scenario__environment_id=scenario.environment_id,
            status__in=[ComparisonStatus.QUEUED, ComparisonStatus.RUNNING],
        ).first()
        if busy is not None:
            raise PipelineRefused(
                f"A version comparison on the review environment {scenario.environment.name} "
                f"is already queued or running (#{busy.pk})."
            )
        return VersionComparison.objects.create(
            scenario=scenario, version_a=version_a, version_b=version_b, created_by=actor
        )


def version_comparison_enqueue(comparison: VersionComparison) -> None:
    enqueue_on_commit(VERSION_COMPARISON_EXECUTE, comparison.pk)


def version_comparison_claim(*, comparison_id: int) -> bool:
    """queued -> running, once: a redelivered message claims nothing."""
    return job_claim(VersionComparison, pk=comparison_id)


def version_comparison_cancel(*, comparison: VersionComparison) -> bool:
    """Stop a comparison: a queued one now, a running one with its current run."""
    if not job_cancel(VersionComparison, pk=comparison.pk):
        return False
    for run in comparison.runs.filter(status__in=Job.ACTIVE):
        perfrun_cancel(run=run)
    return True


def _finish(comparison_id: int, status: str, **fields: Any) -> None:
    job_finish(VersionComparison, pk=comparison_id, status=status, **fields)


def _cancel_requested(comparison_id: int) -> bool:
    return job_cancel_requested(VersionComparison, pk=comparison_id)


def _run_for(comparison: VersionComparison, role: str, deadline: float) -> PerfRun | None:
    """The comparison's run for `role`: one made already, or a new one once the
    environment is free; None when cancelled while waiting."""
    existing = comparison.runs.filter(role=role).first()
    if existing is not None:
        return existing
    while True:
        try:
            return perfrun_request(
                scenario=comparison.scenario,
                trigger=RunTrigger.COMPARISON,
                actor=comparison.created_by,
                version_comparison=comparison,
                role=role,
            )
        except PipelineRefused:
            # Another run holds the environment (the weekly one, say): wait for it.
            if time.monotonic() > deadline:
                raise
        if _cancel_requested(comparison.pk):
            return None
        time.sleep(BUSY_POLL_S)


def version_comparison_run(*, comparison_id: int) -> VersionComparison:
    """Make the three runs, then judge; always records an outcome."""
    if not version_comparison_claim(comparison_id=comparison_id):
        return VersionComparison.objects.get(pk=comparison_id)
    comparison = VersionComparison.objects.select_related(
        "scenario__environment", "created_by"
    ).get(pk=comparison_id)
    with job_heartbeat(VersionComparison, pk=comparison_id):
        _make_and_judge(comparison)
    return _fresh(comparison_id)


def _make_and_judge(comparison: VersionComparison) -> None:
    """The three runs, then the verdict; the comparison ends with an outcome whatever
    happens."""
    comparison_id = comparison.pk
    runs: dict[str, PerfRun] = {}
    try:
        for role, _label in ABA_ROLES:
            label = ROLE_LABELS[role]
            if _cancel_requested(comparison_id):
                _finish(comparison_id, ComparisonStatus.CANCELLED, error="Cancelled.")
                return
            job_stage(
                VersionComparison,
                pk=comparison_id,
                stage=f"run {label} ({comparison.version_of(role)})",
            )
            run = _run_for(comparison, role, time.monotonic() + settings.PIPELINE_TIMEOUT)
            if run is None:
                _finish(comparison_id, ComparisonStatus.CANCELLED, error="Cancelled.")
                return
            if run.status == RunStatus.QUEUED:
                run = perfrun_run(run_id=run.pk)
            elif run.status == RunStatus.RUNNING:
                # Not this worker's to finish, nor to wait for without bound.
                _finish(
                    comparison_id,
                    ComparisonStatus.ERROR,
                    error=f"Run {label} #{run.pk} is being run by another worker.",
                )
                return
            if run.status == RunStatus.CANCELLED:
                _finish(comparison_id, ComparisonStatus.CANCELLED, error=run.error)
                return
            if run.status not in (RunStatus.PASSED, RunStatus.FAILED):
                _finish(
                    comparison_id,
                    ComparisonStatus.ERROR,
                    error=f"Run {label} (#{run.pk}, version {run.version}) broke: {run.error}",
                )
                return
            runs[role] = run
        job_stage(VersionComparison, pk=comparison_id, stage="judging")
        verdict, result = version_comparison_judge(a1=runs["a1"], b=runs["b"], a2=runs["a2"])
        if verdict != ComparisonVerdict.INVALID:
            _red_then_green(runs)
    except Exception as exc:
        log.exception("version comparison %s failed", comparison_id)
        _finish(comparison_id, ComparisonStatus.ERROR, error=describe(exc))
    else:
        _finish(comparison_id, ComparisonStatus.DONE, verdict=verdict, result=result)


def _red_then_green(runs: dict[str, PerfRun]) -> None:
    """The proofs that ask for red then green, judged by the three runs; what follows from
    the comparison never turns it into an error."""
    fresh = {role: PerfRun.objects.get(pk=run.pk) for role, run in runs.items()}
    try:
        for line in criteria_evaluate_versions(a1=fresh["a1"], b=fresh["b"], a2=fresh["a2"]):
            log.info("version comparison: %s", line)
    except Exception:
        log.exception("evaluating the red-then-green proofs failed")


def _fresh(comparison_id: int) -> VersionComparison:
    return VersionComparison.objects.get(pk=comparison_id)


# ---------------------------------------------------------------- the verdict


def version_comparison_judge(*, a1: PerfRun, b: PerfRun, a2: PerfRun) -> tuple[str, dict[str, Any]]:
    """The overall verdict and the rows behind it.

    Each endpoint and metric: B against A, B against A again, and A again against A (the
    drift). Its verdict is the two B verdicts when they agree, else "inconclusive"; a
    "worse" or "better" that the drift shows too is "drift". Overall: "worse" when any row
    is; else "drift" when the two A runs differ anywhere (B's differences cannot be told
    from the environment's); else "better" when any row is; "same" when every row is;
    "inconclusive" otherwise. An invalid pair of runs makes it all "invalid".
    """
    try:
        first = compare_runs(baseline=a1, candidate=b)
        second = compare_runs(baseline=a2, candidate=b)
        drift = compare_runs(baseline=a1, candidate=a2)
    except ComparisonError as exc:
        return ComparisonVerdict.INVALID, {"reasons": [str(exc)], "rows": [], "drift": []}
    reasons: list[str] = []
    for comparison in (first, second, drift):
        reasons += [r for r in comparison.reasons if r not in reasons]
    keyed = [
        {(v.endpoint, v.metric): v for v in comparison.verdicts}
        for comparison in (first, second, drift)
    ]
    rows = []
    for key in sorted(set(keyed[0]) | set(keyed[1])):
        v1, v2, d = (k.get(key) for k in keyed)
        either = v1 or v2
        assert either is not None  # the key came from one of them
        verdict = v1.verdict if v1 and v2 and v1.verdict == v2.verdict else "inconclusive"
        drifted = d is not None and d.verdict in ("worse", "better")
        if drifted and verdict in ("worse", "better"):
            verdict = "drift"
        rows.append(
            {
                "endpoint": key[0],
                "metric": key[1],
                "a1": v1.baseline if v1 else None,
                "b": either.candidate,
                "a2": v2.baseline if v2 else None,
                "change_rel_a1": v1.change_rel if v1 else None,
                "change_rel_a2": v2.change_rel if v2 else None,
                "verdict_a1": v1.verdict if v1 else "inconclusive",
                "verdict_a2": v2.verdict if v2 else "inconclusive",
                "drift": d.verdict if d else "inconclusive",
                "drift_rel": d.change_rel if d else None,
                "verdict": verdict,
            }
        )
    drifted_rows = [
        {"endpoint": r["endpoint"], "metric": r["metric"], "change_rel": r["drift_rel"],
         "verdict": r["drift"]}
        for r in rows
        if r["drift"] in ("worse", "better")
    ]  # fmt: skip
    points = {
        role: run.summary["breaking_point"]
        for role, run in (("a1", a1), ("b", b), ("a2", a2))
        if run.summary.get("breaking_point")
    }
    result = {
        "runs": {"a1": a1.pk, "b": b.pk, "a2": a2.pk},
        # A step load's breaking point in each run: the two of A show its spread.
        "breaking_points": points,
        "reasons": reasons,
        "rows": rows,
        "drift": drifted_rows,
    }
    if reasons:
        return ComparisonVerdict.INVALID, result
    verdicts = {r["verdict"] for r in rows}
    if "worse" in verdicts:
        return ComparisonVerdict.WORSE, result
    if "drift" in verdicts or drifted_rows:
        return ComparisonVerdict.DRIFT, result
    if "better" in verdicts:
        return ComparisonVerdict.BETTER, result
    if verdicts == {"same"}:
        return ComparisonVerdict.SAME, result
    return ComparisonVerdict.INCONCLUSIVE, result
