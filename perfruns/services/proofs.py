"""Actions proven by runs: the verification criterion an action asks for ("GET /users/[id]
p95 < 500 ms at 200 users", "not worse than run #N"), and each valid run's evaluation of
it, which moves the action's proof to verified, failed or regressed (reopening the action).
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from perfruns.models import (
    CriterionComparison,
    CriterionMetric,
    PerfRun,
    RunStatus,
    Scenario,
    Verification,
    VerificationCriterion,
    VerificationState,
)
from postmortems.models import Action, ActionStatus, HistoryEntry

from .common import PipelineRefused
from .notifications import notification_enqueue
from .run_comparison import ComparisonError, compare_runs

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


def _criterion_measure(criterion: VerificationCriterion, run: PerfRun) -> float | None:
    metric = criterion.metric
    if metric == "db_ram_peak_mb":
        peak = run.summary.get("db_ram_peak")
        return peak / 2**20 if peak is not None else None
    name = criterion.endpoint or "Aggregated"
    stat = next((e for e in run.endpoints.all() if e.name == name), None)
    if stat is None:
        return None
    if metric == "failure_rate":
        return stat.failure_rate
    if metric == "rps":
        return stat.rps
    return stat.percentiles.get(metric.removesuffix("_ms").removeprefix("p"))


def _criterion_check(
    criterion: VerificationCriterion, run: PerfRun
) -> tuple[bool, float | None, str]:
    if criterion.metric == CriterionMetric.NOT_WORSE:
        if criterion.reference_run is None:  # its reference run was deleted
            return False, None, "its reference run no longer exists"
        try:
            comparison = compare_runs(baseline=criterion.reference_run, candidate=run)
        except ComparisonError as exc:
            return False, None, str(exc)[:300]
        if not comparison.valid:
            return False, None, " ".join(comparison.reasons)[:300]
        worse = [
            v
            for v in comparison.worse
            if not criterion.endpoint or v.endpoint == criterion.endpoint
        ]
        note = ", ".join(f"{v.endpoint} {v.metric}" for v in worse)
        return not worse, None, (f"worse: {note}" if note else "")[:300]
    measured = _criterion_measure(criterion, run)
    if measured is None or criterion.value is None:
        return False, None, "not measured by this run"
    return _COMPARE[criterion.comparison](measured, criterion.value), measured, ""


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
) -> VerificationCriterion:
    """Set the proof an action asks for. A changed proof starts unverified again (the runs
    that judged the old one prove nothing about the new one); the change is in the
    post-mortem's history. Nothing is written when a value is refused."""
    if metric not in CriterionMetric.values:
        raise PipelineRefused(f"Unknown metric {metric!r}.")
    if comparison not in CriterionComparison.values:
        raise PipelineRefused(f"Unknown comparison {comparison!r}.")
    if users is not None and users < 1:
        raise PipelineRefused("The number of users must be at least 1.")
    if metric == CriterionMetric.NOT_WORSE:
        value = None
        if reference_run is None:
            raise PipelineRefused("“Not worse than a reference run” needs that run's number.")
        if reference_run.scenario_id != scenario.pk:
            raise PipelineRefused(
                f"Run #{reference_run.pk} is a run of {reference_run.scenario.name}, not of "
                f"{scenario.name}."
            )
        if reference_run.status not in (RunStatus.PASSED, RunStatus.FAILED) or (
            reference_run.invalid_reason
        ):
            raise PipelineRefused(
                f"Run #{reference_run.pk} has no valid figures ({reference_run.status}): it "
                "cannot be the reference."
            )
    else:
        reference_run = None
        if value is None:
            raise PipelineRefused("Give the value the run's figure must be compared with.")
        if value < 0:
            raise PipelineRefused("The value must be at least 0.")
        if metric == CriterionMetric.FAILURE_RATE and value > 1:
            raise PipelineRefused("A failure rate is between 0 and 1 (0.01 is 1 %).")
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
    if criterion.description == old:
        return criterion
    criterion.state = VerificationState.UNVERIFIED
    criterion.state_run = None
    criterion.measured = None
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

    A passing run verifies a done action; a failing one marks it failed, or regressed if it
    was verified (the action is reopened). Invalid runs and runs at another number of
    users than a criterion asks prove nothing. Returns one line per criterion evaluated.
    """
    if run.invalid_reason or run.status not in (RunStatus.PASSED, RunStatus.FAILED):
        return []
    if run.version_comparison_id is not None:
        return []  # a version under comparison, not the scenario's own state
    lines = []
    criteria = VerificationCriterion.objects.filter(scenario_id=run.scenario_id).select_related(
        "action", "reference_run", "scenario"
    )
    for criterion in criteria:
        if criterion.users and run.settings.get("users") != criterion.users:
            continue
        passed, measured, note = _criterion_check(criterion, run)
        with transaction.atomic():
            _verification, created = Verification.objects.get_or_create(
                criterion=criterion,
                run=run,
                defaults={"passed": passed, "measured": measured, "note": note},
            )
            if not created:
                continue  # this run was evaluated already (a redelivered task)
            action = criterion.action
            if passed:
                state = (
                    VerificationState.VERIFIED
                    if action.status == ActionStatus.DONE
                    else criterion.state
                )
            elif criterion.state in (VerificationState.VERIFIED, VerificationState.REGRESSED):
                state = VerificationState.REGRESSED
                # A fix that stopped working is open work again.
                Action.objects.filter(pk=action.pk, status=ActionStatus.DONE).update(
                    status=ActionStatus.IN_PROGRESS, done_at=None
                )
            else:
                state = VerificationState.FAILED
            VerificationCriterion.objects.filter(pk=criterion.pk).update(
                state=state, state_run=run, measured=measured, updated_at=timezone.now()
            )
            if (
                state in (VerificationState.FAILED, VerificationState.REGRESSED)
                and criterion.state != state
            ):
                _notify_verification(criterion, run, state=state, measured=measured, note=note)
        lines.append(f"action {action.pk}: {state} by run #{run.pk}")
    return lines


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
