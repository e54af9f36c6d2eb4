"""What the managers' dashboard reads: outcome figures computed from the records (never
typed), monthly trends and each team's perf health. Every figure is over the post-mortems
the reader may see, so a private incident counts only for who can open it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.db.models import (
    Aggregate,
    Count,
    DateTimeField,
    F,
    FloatField,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce, TruncMonth
from django.utils import timezone

from perfruns.models import (
    ChangeState,
    PerfRun,
    RegressionIncident,
    Scenario,
    VerificationCriterion,
    VerificationState,
)
from postmortems.models import Action, ActionKind, ActionStatus, PostMortem, Severity, Team

MONTHS = 12
DAY_S = 86400.0
# The actions that fix something a run can prove; "investigate" and "process" ones are
# done when done.
CORRECTIVE_KINDS = (ActionKind.MITIGATE, ActionKind.REPAIR, ActionKind.PREVENT, ActionKind.DETECT)


class Median(Aggregate):
    """PostgreSQL's percentile_cont(0.5): the median, interpolated."""

    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def _seconds(later: Any, earlier: str) -> Func:
    """Seconds from `earlier` to `later` (field names, or an expression for `later`)."""
    later = F(later) if isinstance(later, str) else later
    return Func(
        later - F(earlier),
        template="EXTRACT(EPOCH FROM %(expressions)s)",
        output_field=FloatField(),
    )


def _to_resolve_seconds() -> Func:
    """Start to resolution; an incident with no resolution time but an end resolved then."""
    return _seconds(Coalesce("resolved_at", "ended_at"), "started_at")


RESOLVED = Q(resolved_at__isnull=False) | Q(ended_at__isnull=False)


def _days(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / DAY_S


def months_back(today: dt.date, count: int = MONTHS) -> list[dt.date]:
    """The first days of the last `count` months, oldest first, this month last."""
    year, month = today.year, today.month
    firsts = []
    for _ in range(count):
        firsts.append(dt.date(year, month, 1))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return firsts[::-1]


def _month_key(value: dt.datetime | dt.date | None) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        value = timezone.localtime(value).date()
    return value.replace(day=1)


@dataclass(frozen=True)
class Outcomes:
    median_close_days: float | None
    closed: int
    median_verify_days: float | None
    verified: int
    severe: int  # SEV1/SEV2 post-mortems
    severe_all_verified: int  # … whose corrective actions are all verified
    severe_without_corrective: int  # … that have no corrective action at all
    median_ttd_minutes: float | None
    median_ttr_minutes: float | None
    with_ttd: int
    with_ttr: int

    @property
    def severe_share(self) -> float | None:
        return self.severe_all_verified / self.severe if self.severe else None


def outcomes(postmortems: QuerySet[PostMortem]) -> Outcomes:
    """Four queries, whatever the number of records."""
    closed = Action.objects.filter(postmortem__in=postmortems, done_at__isnull=False).aggregate(
        n=Count("pk"), median=Median(_seconds("done_at", "created_at"))
    )
    verified = VerificationCriterion.objects.filter(
        action__postmortem__in=postmortems,
        state=VerificationState.VERIFIED,
        state_run__finished_at__isnull=False,
    ).aggregate(
        n=Count("pk"), median=Median(_seconds("state_run__finished_at", "action__created_at"))
    )
    corrective = Q(actions__kind__in=CORRECTIVE_KINDS) & ~Q(actions__status=ActionStatus.WONT_DO)
    severe = (
        postmortems.filter(severity__in=(Severity.SEV1, Severity.SEV2))
        .annotate(
            corrective=Count("actions", filter=corrective),
            unverified=Count(
                "actions",
                filter=corrective & ~Q(actions__criterion__state=VerificationState.VERIFIED),
            ),
        )
        .aggregate(
            n=Count("pk"),
            all_verified=Count("pk", filter=Q(corrective__gt=0, unverified=0)),
            without=Count("pk", filter=Q(corrective=0)),
        )
    )
    times = postmortems.filter(started_at__isnull=False).aggregate(
        ttd=Median(_seconds("detected_at", "started_at"), filter=Q(detected_at__isnull=False)),
        ttr=Median(_to_resolve_seconds(), filter=RESOLVED),
        with_ttd=Count("pk", filter=Q(detected_at__isnull=False)),
        with_ttr=Count("pk", filter=RESOLVED),
    )
    return Outcomes(
        median_close_days=_days(closed["median"]),
        closed=closed["n"],
        median_verify_days=_days(verified["median"]),
        verified=verified["n"],
        severe=severe["n"],
        severe_all_verified=severe["all_verified"],
        severe_without_corrective=severe["without"],
        median_ttd_minutes=None if times["ttd"] is None else times["ttd"] / 60,
        median_ttr_minutes=None if times["ttr"] is None else times["ttr"] / 60,
        with_ttd=times["with_ttd"],
        with_ttr=times["with_ttr"],
    )


def monthly(postmortems: QuerySet[PostMortem], *, today: dt.date) -> dict[str, Any]:
    """Incidents per month by severity, median time to detect and to resolve per month,
    regressions confirmed and fixed per month: the last twelve months, four queries."""
    months = months_back(today)
    since = timezone.make_aware(dt.datetime.combine(months[0], dt.time.min))
    happened = Coalesce("started_at", "created_at", output_field=DateTimeField())
    recent = (
        postmortems.annotate(at=happened).filter(at__gte=since).annotate(month=TruncMonth("at"))
    )
    index = {month: i for i, month in enumerate(months)}
    by_severity = {sev: [0] * len(months) for sev, _label in Severity.choices}
    for row in recent.values("month", "severity").annotate(n=Count("pk")).order_by():
        if (i := index.get(_month_key(row["month"]))) is not None:  # type: ignore[arg-type]
            by_severity[row["severity"]][i] += row["n"]
    ttd: list[float | None] = [None] * len(months)
    ttr: list[float | None] = [None] * len(months)
    for row in (
        recent.filter(started_at__isnull=False)
        .values("month")
        .annotate(
            ttd=Median(_seconds("detected_at", "started_at"), filter=Q(detected_at__isnull=False)),
            ttr=Median(_to_resolve_seconds(), filter=RESOLVED),
        )
        .order_by()
    ):
        if (i := index.get(_month_key(row["month"]))) is not None:  # type: ignore[arg-type]
            ttd[i] = None if row["ttd"] is None else row["ttd"] / 60
            ttr[i] = None if row["ttr"] is None else row["ttr"] / 60
    regressions = RegressionIncident.objects.filter(postmortem__in=postmortems)
    confirmed = [0] * len(months)
    for row in (
        regressions.filter(created_at__gte=since)
        .annotate(month=TruncMonth("created_at"))
        .values("month")
        .annotate(n=Count("pk"))
        .order_by()
    ):
        if (i := index.get(_month_key(row["month"]))) is not None:  # type: ignore[arg-type]
            confirmed[i] += row["n"]
    fixed = [0] * len(months)
    for row in (
        regressions.filter(state=ChangeState.FIXED, resolved_at__gte=since)
        .annotate(month=TruncMonth("resolved_at"))
        .values("month")
        .annotate(n=Count("pk"))
        .order_by()
    ):
        if (i := index.get(_month_key(row["month"]))) is not None:  # type: ignore[arg-type]
            fixed[i] += row["n"]
    return {
        "months": [m.isoformat() for m in months],
        "incidents": by_severity,
        "ttd_minutes": ttd,
        "ttr_minutes": ttr,
        "regressions_confirmed": confirmed,
        "regressions_fixed": fixed,
    }


@dataclass(frozen=True)
class ScenarioHealth:
    scenario: Scenario
    last_run: PerfRun | None
    runs_this_week: int
    failed_this_week: int
    open_regressions: int


def team_health(
    *, teams: QuerySet[Team], today: dt.date
) -> list[tuple[Team, list[ScenarioHealth]]]:
    """Each team's scenarios with their last weekly-series run, the week's runs and the
    regressions still open: two queries."""
    week_ago = timezone.make_aware(dt.datetime.combine(today - dt.timedelta(days=7), dt.time.min))
    series = PerfRun.objects.filter(scenario=OuterRef("pk"), version_comparison__isnull=True)
    finished = series.filter(finished_at__isnull=False).order_by("-finished_at", "-id")
    scenarios = (
        Scenario.objects.filter(team__in=teams)
        .select_related("team")
        .annotate(
            last_run_id=Subquery(finished.values("pk")[:1]),
            week_runs=Subquery(
                series.filter(finished_at__gte=week_ago)
                .order_by()
                .values("scenario")
                .annotate(n=Count("pk"))
                .values("n")[:1]
            ),
            week_failed=Subquery(
                series.filter(finished_at__gte=week_ago, status__in=("failed", "error"))
                .order_by()
                .values("scenario")
                .annotate(n=Count("pk"))
                .values("n")[:1]
            ),
            open_regressions=Count("incidents", filter=Q(incidents__state=ChangeState.CONFIRMED)),
        )
        .order_by("team__name", "name")
    )
    scenarios_list = list(scenarios)
    last_ids = [s.last_run_id for s in scenarios_list if s.last_run_id]
    runs = PerfRun.objects.in_bulk(last_ids) if last_ids else {}
    grouped: dict[int, list[ScenarioHealth]] = {}
    team_of: dict[int, Team] = {}
    for s in scenarios_list:
        assert s.team is not None
        team_of[s.team.pk] = s.team
        grouped.setdefault(s.team.pk, []).append(
            ScenarioHealth(
                scenario=s,
                last_run=runs.get(s.last_run_id),
                runs_this_week=s.week_runs or 0,
                failed_this_week=s.week_failed or 0,
                open_regressions=s.open_regressions,
            )
        )
    return [(team_of[pk], grouped[pk]) for pk in grouped]


# How long the incident figures of the dashboard are reused: they move with incidents and
# runs, not with each click; the action counts are always read fresh.
FIGURES_TTL_S = 60


@dataclass(frozen=True)
class IncidentFigures:
    outcomes: Outcomes
    monthly: dict[str, Any]
    health: list[tuple[Team, list[ScenarioHealth]]]
    computed_at: dt.datetime


def incident_figures(
    postmortems: QuerySet[PostMortem], *, teams: QuerySet[Team], today: dt.date, key: str
) -> IncidentFigures:
    """The outcomes, the monthly trends and the teams' health, computed at most once a
    minute for the same `key` (who may see what, and the filters applied) in each web
    process: ten queries the pages of a busy dashboard would otherwise repeat."""
    cache_key = f"fixproof:dashboard:{today.isoformat()}:{key}"
    found = cache.get(cache_key)
    if isinstance(found, IncidentFigures):
        return found
    computed = IncidentFigures(
        outcomes=outcomes(postmortems),
        monthly=monthly(postmortems, today=today),
        health=team_health(teams=teams, today=today),
        computed_at=timezone.now(),
    )
    cache.set(cache_key, computed, FIGURES_TTL_S)
    return computed
