"""The weekly series of a scenario: change points in its runs' figures (E-divisive,
computed after each run and kept on the scenario), the draft post-mortem a worse level
opens once confirmed, and its end — accepted as the new normal, or fixed."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.db.models import Subquery
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from perfruns.models import ChangeState, PerfRun, RegressionIncident, RunStatus, Scenario
from perfruns.payloads import TrendChange, TrendMetric
from perfruns.regression import Floors, change_points, floor_for, segment_summary
from postmortems.models import PostMortem, Team
from postmortems.services import PostMortemContent, postmortem_save

from .common import PipelineRefused
from .notifications import notification_enqueue

TREND_METRICS = (
    ("p95_ms", "p95 (ms)"),
    ("failure_rate", "failure rate"),
    ("db_ram_peak", "DB RAM"),
)
TREND_MIN_RUNS = 6
TREND_MAX_RUNS = 200


def scenario_trend_compute(scenario: Scenario) -> list[TrendMetric]:
    """Per metric, the scenario's valid finished runs (oldest first, the last 200, version
    comparisons left out) as [run, value] points, and the runs where E-divisive change
    points say a new level started, with the means before and after."""
    runs = list(
        scenario.runs.filter(
            status__in=[RunStatus.PASSED, RunStatus.FAILED],
            invalid_reason="",
            version_comparison__isnull=True,
        )
        .order_by("-created_at", "-id")
        .values("pk", "summary")[:TREND_MAX_RUNS]
    )[::-1]
    trend: list[TrendMetric] = []
    floors = _floors(scenario)
    for key, label in TREND_METRICS:
        points = [[r["pk"], r["summary"][key]] for r in runs if r["summary"].get(key) is not None]
        changes: list[TrendChange] = []
        if len(points) >= TREND_MIN_RUNS:
            values = [value for _, value in points]
            found = change_points(values)
            # Before and after: the means of the two regimes the change point separates.
            regimes = segment_summary(values, found)
            for n, i in enumerate(found):
                before, after = regimes[n].mean, regimes[n + 1].mean
                changes.append(
                    {
                        "run": points[i][0],
                        "before": before,
                        "after": after,
                        "runs_after": [pk for pk, _ in points[i : regimes[n + 1].end]],
                        "worse": _is_worse(key, before, after, floors),
                    }
                )
        trend.append({"key": key, "label": label, "points": points, "changes": changes})
    return trend


def scenario_trend_refresh(*, scenario: Scenario) -> list[TrendMetric]:
    """Compute the series' change points and keep them on the scenario for its page."""
    trend = scenario_trend_compute(scenario)
    Scenario.objects.filter(pk=scenario.pk).update(trend=trend)
    scenario.trend = trend
    return trend


def _floors(scenario: Scenario) -> Floors:
    try:
        return Floors.from_settings(scenario.floors)
    except ValueError:  # saved before floors were checked: the defaults
        return Floors()


# A series' metric as the per-run comparison's metric, whose floor it takes.
_FLOOR_METRIC = {"p95_ms": "p95", "failure_rate": "failure_rate", "db_ram_peak": "db_ram_peak"}


def _is_worse(key: str, before: float, after: float, floors: Floors) -> bool:
    """Worse past the floor the per-run comparison uses (the scenario's floors)."""
    floor = floor_for(_FLOOR_METRIC[key], before, floors)
    return floor is not None and after - before > floor


def _trend_figure(key: str, value: float) -> str:
    if key == "p95_ms":
        return f"{value:.0f} ms"
    if key == "failure_rate":
        return f"{100 * value:.2f} %"
    return f"{value / 2**20:.0f} MiB"


def regression_incidents_open(*, scenario: Scenario) -> list[PostMortem]:
    """Refresh the series' change points; for each one that made things worse, once per
    scenario and change point, a draft post-mortem with its figures as impacts and its
    runs attached, and the scenario's teams told (the regression is confirmed)."""
    trend = scenario_trend_refresh(scenario=scenario)
    by_run: dict[int, list[tuple[str, TrendChange]]] = {}
    for metric in trend:
        for change in metric["changes"]:
            if change["worse"]:
                by_run.setdefault(change["run"], []).append((metric["key"], change))
    opened = []
    for start_run, changes in sorted(by_run.items()):
        with transaction.atomic():
            postmortem = _regression_incident_open(scenario, start_run, changes)
        if postmortem is not None:
            opened.append(postmortem)
    _regression_incidents_fixed(scenario, trend)
    return opened


def _regression_incidents_fixed(scenario: Scenario, trend: list[TrendMetric]) -> None:
    """Mark fixed each confirmed change whose every worse metric has since come back, by a
    later change point, to a level no worse than before it (within the floors)."""
    floors = _floors(scenario)
    for incident in scenario.incidents.filter(state=ChangeState.CONFIRMED):
        back_at: list[tuple[int, int]] = []
        for metric in trend:
            points = [pk for pk, _ in metric["points"]]
            changes = metric["changes"]
            started = next(
                (i for i, c in enumerate(changes) if c["run"] == incident.start_run_id), None
            )
            if started is None or not changes[started]["worse"]:
                continue
            before = changes[started]["before"]
            returned = next(
                (
                    c
                    for c in changes[started + 1 :]
                    if not _is_worse(metric["key"], before, c["after"], floors)
                ),
                None,
            )
            if returned is None:
                back_at = []
                break
            back_at.append((points.index(returned["run"]), returned["run"]))
        if back_at:
            RegressionIncident.objects.filter(pk=incident.pk, state=ChangeState.CONFIRMED).update(
                state=ChangeState.FIXED,
                fixed_by_run_id=max(back_at)[1],
                # Fixed when the run back at the old level ran, not when this was noticed.
                resolved_at=Coalesce(
                    Subquery(PerfRun.objects.filter(pk=max(back_at)[1]).values("finished_at")[:1]),
                    Now(),
                ),
            )


def _regression_incident_open(
    scenario: Scenario, start_run: int, changes: list[tuple[str, TrendChange]]
) -> PostMortem | None:
    if RegressionIncident.objects.filter(scenario=scenario, start_run_id=start_run).exists():
        return None
    impacts = []
    for key, change in changes:
        unit, scale = {"p95_ms": ("ms", 1), "failure_rate": ("%", 100)}.get(key, ("MiB", 1 / 2**20))
        name = dict(TREND_METRICS)[key]
        for when in ("before", "after"):
            value = Decimal(str(round(change[when] * scale, 2)))
            impacts.append({"label": f"{name} {when}", "value": value, "unit": unit, "window": ""})
    run = PerfRun.objects.get(pk=start_run)
    worse = sorted(
        {v["endpoint"] for v in run.regression.get("verdicts", []) if v["verdict"] == "worse"}
    )
    if worse:
        impacts.append(
            {"label": "endpoints concerned: " + ", ".join(worse)[:280],
             "value": None, "unit": "", "window": ""}
        )  # fmt: skip
    team_ids = list(scenario.postmortems.exclude(team=None).values_list("team", flat=True))
    names = ", ".join(dict(TREND_METRICS)[key] for key, _ in changes)
    postmortem = postmortem_save(
        actor=None,
        content=PostMortemContent(
            fields={
                "title": f"Regression of {scenario.name} from run #{start_run}"[:200],
                "summary": (
                    f"The runs of scenario {scenario.name} moved to a worse level from run "
                    f"#{start_run} ({names}), found by change-point detection over its "
                    "series. Opened by Fixproof as a draft: write what happened."
                ),
                "team": Team.objects.filter(pk=team_ids[0]).first() if team_ids else None,
            },
            authors=[],
            impacts=impacts,
            root_causes=[],
            timeline=[],
            actions=[],
        ),
    )
    RegressionIncident.objects.create(
        scenario=scenario, start_run_id=start_run, postmortem=postmortem
    )
    runs_after = {pk for _, change in changes for pk in change["runs_after"]}
    for attached in PerfRun.objects.filter(pk__in=runs_after):
        attached.postmortems.add(postmortem)
    figures = {
        dict(TREND_METRICS)[key]: (
            f"{_trend_figure(key, change['before'])} → {_trend_figure(key, change['after'])}"
        )
        for key, change in changes
    }
    if worse:
        figures["endpoints"] = ", ".join(worse)[:300]
    figures["runs"] = f"#{start_run} and {len(runs_after) - 1} after it"
    notification_enqueue(
        kind="regression",
        title=f"{scenario.name} got worse from run #{start_run}",
        path=postmortem.get_absolute_url(),
        figures=figures,
        dedupe_key=f"regression:scenario={scenario.pk}:run={start_run}",
        team_ids=team_ids,
    )
    return postmortem


def regression_incident_resolve(*, incident: RegressionIncident, state: str) -> bool:
    """Accept a change as the new normal (runs are then compared with the latest valid
    passing run of the new level) or say it was fixed; False when it was no longer
    confirmed."""
    if state not in (ChangeState.ACCEPTED, ChangeState.FIXED):
        raise PipelineRefused(f"A change can be accepted or fixed, not {state!r}.")
    with transaction.atomic():
        changed = RegressionIncident.objects.filter(
            pk=incident.pk, state=ChangeState.CONFIRMED
        ).update(state=state, resolved_at=timezone.now())
        if changed and state == ChangeState.ACCEPTED:
            latest = (
                PerfRun.objects.filter(
                    scenario_id=incident.scenario_id,
                    status=RunStatus.PASSED,
                    invalid_reason="",
                    created_at__gte=incident.start_run.created_at,
                )
                .order_by("-created_at", "-id")
                .first()
            )
            Scenario.objects.filter(pk=incident.scenario_id).update(
                baseline_run=latest or incident.start_run
            )
    return bool(changed)
