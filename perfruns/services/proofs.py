"""Actions proven by runs: the verification criterion an action asks for ("GET /users/[id]
p95 < 500 ms at 200 users", "not worse than run #N"), and each valid run's evaluation of
it, which moves the action's proof to verified, failed or regressed (reopening the action).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from perfruns.models import (
    CriterionComparison,
    CriterionMetric,
    PerfRun,
    RunStatus,
    Scenario,
    Verification,
    VerificationCriterion,
    VerificationOutcome,
    VerificationState,
)
from perfruns.thresholds import FIGURES, Measured, measure, measure_endpoint
from postmortems.models import Action, ActionStatus, HistoryEntry

from .common import PipelineRefused
from .notifications import notification_enqueue
from .run_comparison import ComparisonError, compare_runs

# A criterion's metric as a figure of perfruns.thresholds.
FIGURE_OF: dict[str, str] = {
    CriterionMetric.RPS: "min_rps",
    CriterionMetric.KNEE: "min_knee_users",
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    CriterionComparison.LT: lambda a, b: a < b,
    CriterionComparison.LE: lambda a, b: a <= b,
    CriterionComparison.GT: lambda a, b: a > b,
    CriterionComparison.GE: lambda a, b: a >= b,
}
# Figures where more is better: "better than" means higher, and a step load that never
# failed (or never bent) has more users than any limit.
_HIGHER_IS_BETTER = {"min_rps", "first_failure_users", "min_knee_users", "max_sustained_rps"}


@dataclass
class Evaluation:
    """One run's judgement of a criterion: passed, failed or inconclusive (the value meets
    the limit but its interval does not, the run failed its own checks, or the comparison
    could not be made), with what was measured and why."""

    outcome: str
    measured: float | None = None
    low: float | None = None
    high: float | None = None
    note: str = ""


def _figure_key(criterion: VerificationCriterion) -> str:
    return FIGURE_OF.get(criterion.metric, criterion.metric)


def criterion_measure(criterion: VerificationCriterion, run: PerfRun) -> Measured:
    """The run's figure the criterion is about, at its endpoint (the whole run without)."""
    key = _figure_key(criterion)
    endpoints = {
        ("Aggregated" if stat.is_aggregate else stat.name): stat.figures
        for stat in run.endpoints.all()
    }
    if FIGURES[key].per_endpoint and not criterion.endpoint and "Aggregated" in endpoints:
        return measure(key, summary=run.summary, endpoint=endpoints["Aggregated"])
    return measure_endpoint(key, summary=run.summary, endpoints=endpoints, name=criterion.endpoint)


def _against_limit(criterion: VerificationCriterion, measured: Measured) -> Evaluation:
    """Passed when the value and its whole interval meet the limit; failed when the value
    does not; inconclusive when only the value does."""
    key = _figure_key(criterion)
    found = Evaluation("failed", measured.value, measured.low, measured.high, measured.note)
    if criterion.metric == CriterionMetric.PROBABLE_LEAK:
        if measured.value is None:
            found.note = measured.note or "not measured by this run"
            return found
        found.outcome = "passed" if measured.value == 0.0 else "failed"
        return found
    limit, compare = criterion.value, _COMPARE[criterion.comparison]
    assert limit is not None
    value = measured.value
    if (
        value is None
        and key in _HIGHER_IS_BETTER
        and measured.note in ("no step failed", "no knee")
    ):
        value = math.inf  # never failed (or bent) up to the last step
    if value is None:
        found.note = measured.note or "not measured by this run"
        return found
    if not compare(value, limit):
        return found
    # The end of the interval on the failing side must meet the limit too.
    far = measured.high if criterion.comparison in ("lt", "le") else measured.low
    if far is not None and not compare(far, limit):
        found.outcome = "inconclusive"
        found.note = "the value meets the limit, but its interval does not"
        return found
    found.outcome = "passed"
    return found


def _better_by(criterion: VerificationCriterion, run: PerfRun) -> Evaluation:
    """The run's figure better than the reference run's by at least value %."""
    reference = criterion.reference_run
    if reference is None:  # its reference run was deleted
        return Evaluation("inconclusive", note="its reference run no longer exists")
    key = _figure_key(criterion)
    measured, before = criterion_measure(criterion, run), criterion_measure(criterion, reference)
    if measured.value is None or before.value is None or before.value == 0:
        return Evaluation(
            "inconclusive", measured.value, note="not measured by this run or the reference"
        )
    higher = key in _HIGHER_IS_BETTER
    reference_value = before.value

    def gain(value: float) -> float:
        change = (value - reference_value) / abs(reference_value)
        return change if higher else -change

    note = f"{100 * gain(measured.value):+.1f} % against run #{reference.pk} ({before.value:.4g})"
    needed = (criterion.value or 0) / 100
    found = Evaluation("failed", measured.value, measured.low, measured.high, note)
    if gain(measured.value) < needed:
        return found
    # The whole interval must be that much better.
    far = measured.low if higher else measured.high
    if far is not None and gain(far) < needed:
        found.outcome = "inconclusive"
        found.note = note + "; its interval reaches back past the gain asked"
        return found
    found.outcome = "passed"
    return found


def _not_worse(criterion: VerificationCriterion, run: PerfRun) -> Evaluation:
    if criterion.reference_run is None:  # its reference run was deleted
        return Evaluation("inconclusive", note="its reference run no longer exists")
    try:
        comparison = compare_runs(baseline=criterion.reference_run, candidate=run)
    except ComparisonError as exc:
        return Evaluation("inconclusive", note=str(exc))
    if not comparison.valid:
        return Evaluation("inconclusive", note=" ".join(comparison.reasons))
    worse = [
        v for v in comparison.worse if not criterion.endpoint or v.endpoint == criterion.endpoint
    ]
    note = ", ".join(f"{v.endpoint} {v.metric}" for v in worse)
    return Evaluation("failed" if worse else "passed", note=f"worse: {note}" if note else "")


def criterion_evaluate(criterion: VerificationCriterion, run: PerfRun) -> Evaluation:
    """The run's judgement of the criterion. A run that failed its own checks cannot pass a
    proof: its evidence would contradict it."""
    if criterion.metric == CriterionMetric.NOT_WORSE:
        found = _not_worse(criterion, run)
    elif criterion.comparison == CriterionComparison.BETTER_BY:
        found = _better_by(criterion, run)
    else:
        found = _against_limit(criterion, criterion_measure(criterion, run))
    if found.outcome == "passed" and run.status == RunStatus.FAILED:
        failed = [line["check"] for line in run.verdict or [] if not line.get("passed")]
        found.outcome = "inconclusive"
        found.note = "the run failed its own checks: " + ", ".join(failed)
    found.note = found.note[:300]
    return found


@transaction.atomic
def criterion_save(
    *,
    action: Action,
    actor: User | None,
    scenario: Scenario,
    metric: str,
    comparison: str = "lt",
    value: float | None = None,
    endpoint: str = "",
    users: int | None = None,
    reference_run: PerfRun | None = None,
    red_then_green: bool = False,
) -> VerificationCriterion:
    """Set the proof an action asks for. A changed proof starts unverified again (the runs
    that judged the old one prove nothing about the new one); the change is in the
    post-mortem's history. Nothing is written when a value is refused; every problem is
    named at once."""
    problems = []
    if metric not in CriterionMetric.values:
        problems.append(f"Unknown metric {metric!r}.")
    if comparison not in CriterionComparison.values:
        problems.append(f"Unknown comparison {comparison!r}.")
    if users is not None and users < 1:
        problems.append("The number of users must be at least 1.")
    needs_reference = metric == CriterionMetric.NOT_WORSE or (
        comparison == CriterionComparison.BETTER_BY
    )
    if metric in (CriterionMetric.NOT_WORSE, CriterionMetric.PROBABLE_LEAK):
        value = None
        if comparison == CriterionComparison.BETTER_BY:
            problems.append("“Better than” compares a figure: choose the figure.")
    elif value is None:
        problems.append("Give the value the run's figure must be compared with.")
    elif value < 0:
        problems.append("The value must be at least 0.")
    elif metric == CriterionMetric.FAILURE_RATE and value > 1 and comparison != "better_by":
        problems.append("A failure rate is between 0 and 1 (0.01 is 1 %).")
    if not needs_reference:
        reference_run = None
    elif reference_run is None:
        problems.append(
            "“Not worse than a reference run” needs that run's number."
            if metric == CriterionMetric.NOT_WORSE
            else "“Better than the reference run” needs that run's number."
        )
    else:
        if reference_run.scenario_id != scenario.pk:
            problems.append(
                f"Run #{reference_run.pk} is a run of {reference_run.scenario.name}, not of "
                f"{scenario.name}."
            )
        if reference_run.status not in (RunStatus.PASSED, RunStatus.FAILED) or (
            reference_run.invalid_reason
        ):
            problems.append(
                f"Run #{reference_run.pk} has no valid figures ({reference_run.status}): it "
                "cannot be the reference."
            )
    if red_then_green and needs_reference:
        problems.append(
            "Red then green compares the versions before and after the fix: it needs a limit, "
            "not a reference run."
        )
    if red_then_green and not scenario.takes_version:
        problems.append(
            f"Red then green needs versions: the start command of {scenario.name} takes no "
            "{version}."
        )
    if problems:
        raise PipelineRefused(" ".join(problems))
    criterion = VerificationCriterion.objects.filter(action=action).first()
    old = criterion.description if criterion else ""
    criterion = criterion or VerificationCriterion(action=action)
    criterion.scenario = scenario
    criterion.endpoint = endpoint.strip()
    criterion.metric = metric
    criterion.comparison = comparison
    criterion.value = value
    criterion.users = users
    criterion.reference_run = reference_run
    criterion.red_then_green = red_then_green
    if criterion.description == old:
        return criterion
    criterion.state = VerificationState.UNVERIFIED
    criterion.state_run = criterion.red_run = None
    criterion.measured = criterion.measured_low = criterion.measured_high = None
    criterion.note = ""
    criterion.save()
    criterion.verifications.all().delete()
    _proof_history(action, actor, old=old, new=criterion.description)
    return criterion


@transaction.atomic
def criterion_remove(*, action: Action, actor: User | None) -> bool:
    criterion = VerificationCriterion.objects.filter(action=action).first()
    if criterion is None:
        return False
    _proof_history(action, actor, old=criterion.description, new="")
    criterion.delete()
    return True


def _proof_history(action: Action, actor: User | None, *, old: str, new: str) -> None:
    """The post-mortem's history line of a changed proof, told like an action's update."""
    HistoryEntry.objects.create(
        postmortem_id=action.postmortem_id,
        action=action,
        actor=actor,
        subject=f"Action {action.number}",
        verb="updated",
        changes=[{"field": "proof asked", "old": old, "new": new}],
    )


def criteria_evaluate(*, run: PerfRun) -> list[str]:
    """Evaluate the verification criteria of the run's scenario; move each action's state.

    A run that passes a criterion verifies its done action (one asking for red then green
    is verified only by a version comparison: criteria_evaluate_versions); one that fails
    it marks it failed, or regressed if it was verified (the action is reopened); an
    inconclusive one leaves it as it was. Invalid runs, version comparisons' runs and runs
    at another number of users than a criterion asks prove nothing. Returns one line per
    criterion evaluated.
    """
    if run.invalid_reason or run.status not in (RunStatus.PASSED, RunStatus.FAILED):
        return []
    if run.version_comparison_id is not None:
        return []  # a version under comparison, not the scenario's own state
    lines = []
    for criterion in _criteria_of(run):
        found = criterion_evaluate(criterion, run)
        with transaction.atomic():
            if not _verification_record(criterion, run, found):
                continue  # this run was evaluated already (a redelivered task)
            state = _state_after(criterion, found)
            if found.outcome != VerificationOutcome.INCONCLUSIVE:
                _state_set(criterion, run, found, state=state)
        why = f" (inconclusive: {found.note})" if found.outcome == "inconclusive" else ""
        lines.append(f"action {criterion.action_id}: {state} by run #{run.pk}{why}")
    return lines


def criteria_evaluate_versions(*, a1: PerfRun, b: PerfRun, a2: PerfRun) -> list[str]:
    """The red-then-green criteria of an A/B/A comparison's scenario, judged by its runs:
    verified when both runs of version A (before the fix) fail the criterion — the
    incident reproduced — and the run of version B (the fix) passes it. Every run's
    judgement is kept as evidence. Returns one line per criterion evaluated."""
    runs = [run for run in (a1, b, a2) if not run.invalid_reason]
    if len(runs) < 3:
        return []
    lines = []
    for criterion in _criteria_of(b).filter(red_then_green=True):
        reds = [criterion_evaluate(criterion, run) for run in (a1, a2)]
        green = criterion_evaluate(criterion, b)
        with transaction.atomic():
            if not _verification_record(criterion, b, green):
                continue
            for run, red in zip((a1, a2), reds, strict=True):
                _verification_record(criterion, run, red)
            reproduced = all(r.outcome == VerificationOutcome.FAILED for r in reds)
            if not reproduced:
                note = (
                    f"not reproduced on version {a1.version} (run #{a1.pk}: {reds[0].outcome}, "
                    f"#{a2.pk}: {reds[1].outcome}): red then green needs the version before "
                    "the fix to fail"
                )
                VerificationCriterion.objects.filter(pk=criterion.pk).update(
                    note=note[:300], updated_at=timezone.now()
                )
                lines.append(f"action {criterion.action_id}: not reproduced")
                continue
            green.note = (
                f"red on version {a1.version} (run #{a1.pk}: {_shown(reds[0])}), green on "
                f"version {b.version} (run #{b.pk}: {_shown(green)})"
                + (f"; {green.note}" if green.note else "")
            )[:300]
            state = _state_after(criterion, green, red_seen=True)
            if green.outcome != VerificationOutcome.INCONCLUSIVE:
                _state_set(criterion, b, green, state=state, red_run=a1)
        lines.append(f"action {criterion.action_id}: {state} by comparison runs #{a1.pk}/#{b.pk}")
    return lines


def _shown(found: Evaluation) -> str:
    return f"{found.measured:.4g}" if found.measured is not None else found.outcome


def _criteria_of(run: PerfRun) -> Any:
    criteria = VerificationCriterion.objects.filter(scenario_id=run.scenario_id).select_related(
        "action__postmortem", "reference_run", "scenario"
    )
    users = run.settings.get("users")
    return criteria.filter(Q(users__isnull=True) | Q(users=users))


def _verification_record(criterion: VerificationCriterion, run: PerfRun, found: Evaluation) -> bool:
    """The run's judgement kept as evidence, once: False when it was already kept."""
    _verification, created = Verification.objects.get_or_create(
        criterion=criterion,
        run=run,
        defaults={
            "passed": found.outcome == VerificationOutcome.PASSED,
            "outcome": found.outcome,
            "measured": found.measured,
            "measured_low": found.low,
            "measured_high": found.high,
            "note": found.note,
        },
    )
    return created


def _state_after(
    criterion: VerificationCriterion, found: Evaluation, *, red_seen: bool = False
) -> str:
    if found.outcome == VerificationOutcome.INCONCLUSIVE:
        return criterion.state
    if found.outcome == VerificationOutcome.PASSED:
        done = criterion.action.status == ActionStatus.DONE
        if (
            criterion.red_then_green
            and not red_seen
            and criterion.state
            not in (
                VerificationState.VERIFIED,
                VerificationState.REGRESSED,
            )
        ):
            return criterion.state  # only a version comparison can show red then green
        return VerificationState.VERIFIED if done else criterion.state
    if criterion.state in (VerificationState.VERIFIED, VerificationState.REGRESSED):
        return VerificationState.REGRESSED
    return VerificationState.FAILED


def _state_set(
    criterion: VerificationCriterion,
    run: PerfRun,
    found: Evaluation,
    *,
    state: str,
    red_run: PerfRun | None = None,
) -> None:
    """The criterion's state and evidence after a run; a fix that stopped working is open
    work again; the team hears of a proof newly failed or regressed."""
    if state == VerificationState.REGRESSED:
        Action.objects.filter(pk=criterion.action_id, status=ActionStatus.DONE).update(
            status=ActionStatus.IN_PROGRESS, done_at=None
        )
    values: dict[str, Any] = {
        "state": state,
        "state_run": run,
        "measured": found.measured,
        "measured_low": found.low,
        "measured_high": found.high,
        "note": found.note,
        "updated_at": timezone.now(),
    }
    if red_run is not None:
        values["red_run"] = red_run
    VerificationCriterion.objects.filter(pk=criterion.pk).update(**values)
    if (
        state in (VerificationState.FAILED, VerificationState.REGRESSED)
        and criterion.state != state
    ):
        _notify_verification(criterion, run, state=state, measured=found.measured, note=found.note)


def _notify_verification(
    criterion: VerificationCriterion, run: PerfRun, *, state: str, measured: float | None, note: str
) -> None:
    action = criterion.action
    postmortem = action.postmortem
    figures = {
        "criterion": criterion.description,
        "measured": f"{measured:.4g}" if measured is not None else (note or "not measured"),
        "run": f"#{run.pk}",
    }
    if action.owner_display:
        figures["owner"] = action.owner_display
    what = (
        "regressed (reopened)"
        if state == VerificationState.REGRESSED
        else "failed its verification"
    )
    notification_enqueue(
        kind=f"verification_{state}",
        title=f"Action {action.number} of “{postmortem.title}” {what}",
        path=f"{postmortem.get_absolute_url()}#action-{action.number}",
        figures=figures,
        dedupe_key=f"verification_{state}:action={action.pk}:run={run.pk}",
        team_ids=[postmortem.team_id] if postmortem.team_id is not None else [],
    )
