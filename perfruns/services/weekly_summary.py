"""The managers' weekly summary: per team and overall, what the week closed, proved,
regressed and opened, and what is overdue now. Read on /summary/ and e-mailed on Mondays.

Everything is read through the reader's visibility (postmortems.access): a private
post-mortem, its actions and its proofs never appear to someone who may not open it, on the
page or in their e-mail; a team's webhook only hears of public post-mortems.

Sending is idempotent per person and week, like the daily reminders: each e-mail claims a
unique key (NotificationSent, an INSERT) before it is sent, so a rerun or a second worker
sends nothing twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext, override

from perfruns.models import (
    RegressionIncident,
    Verification,
    VerificationCriterion,
    VerificationState,
)
from postmortems import access, selectors
from postmortems.models import (
    Action,
    ActionStatus,
    HistoryEntry,
    PostMortem,
    Team,
)

from .notifications import DatabaseDeduplicator, notification_enqueue

log = logging.getLogger(__name__)

# A claim outlives any rerun of the same week (the default TTL is a week).
_CLAIM_TTL_S = 400 * 86400
# Overdue actions listed per team in an e-mail (the count is always whole).
_OVERDUE_LISTED = 10


@dataclass(frozen=True)
class Period:
    """Seven days: [start, end) in the service's time zone."""

    start: dt.date
    label: str

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=7)

    @property
    def last_day(self) -> dt.date:
        return self.end - dt.timedelta(days=1)

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        zone = timezone.get_default_timezone()
        return (
            dt.datetime.combine(self.start, dt.time.min, tzinfo=zone),
            dt.datetime.combine(self.end, dt.time.min, tzinfo=zone),
        )


def period_iso_week(year: int, week: int) -> Period:
    start = dt.date.fromisocalendar(year, week, 1)
    return Period(start=start, label=f"{year}-W{week:02d}")


def period_previous_week(today: dt.date) -> Period:
    """The ISO week before today's: on a Monday, the week that has just ended."""
    year, week, _day = (today - dt.timedelta(days=7)).isocalendar()
    return period_iso_week(year, week)


def period_last_days(today: dt.date) -> Period:
    """The last seven days, today included."""
    start = today - dt.timedelta(days=6)
    return Period(start=start, label=start.isoformat())


_ISO_WEEK = re.compile(r"(\d{4})-?W(\d{2})", re.IGNORECASE)


def period_parse(text: str) -> Period:
    """An ISO week (2026-W12) or the first of seven days (2026-03-16); ValueError says
    what is expected."""
    text = text.strip()
    match = _ISO_WEEK.fullmatch(text)
    try:
        if match:
            return period_iso_week(int(match[1]), int(match[2]))
        start = dt.date.fromisoformat(text)
    except ValueError:
        start = None
    if start is None or len(text) != 10:
        raise ValueError(
            _(
                "'%(value)s' is not a week: give an ISO week (2026-W12) "
                "or a start date (2026-03-16)."
            )
            % {"value": text[:40]}
        )
    return Period(start=start, label=start.isoformat())


@dataclass
class TeamWeek:
    """One team's week (team None: post-mortems of no team; in WeeklySummary.total: all)."""

    team: Team | None
    closed: list[Action] = field(default_factory=list)
    verified: list[VerificationCriterion] = field(default_factory=list)
    regressed: list[VerificationCriterion] = field(default_factory=list)
    incidents: list[RegressionIncident] = field(default_factory=list)
    overdue: list[Action] = field(default_factory=list)
    new_postmortems: list[PostMortem] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "closed": len(self.closed),
            "verified": len(self.verified),
            "regressed": len(self.regressed),
            "incidents": len(self.incidents),
            "overdue": len(self.overdue),
            "new_postmortems": len(self.new_postmortems),
        }

    @property
    def is_empty(self) -> bool:
        return not any(self.counts.values())


@dataclass
class WeeklySummary:
    period: Period
    today: dt.date
    teams: list[TeamWeek]
    total: TeamWeek

    @property
    def is_empty(self) -> bool:
        return self.total.is_empty


def _closed(visible: QuerySet[PostMortem], start: dt.datetime, end: dt.datetime) -> list[Action]:
    # "Won't do" has no done_at: the history says when it was set.
    wont_do_set = HistoryEntry.objects.filter(
        action_id=OuterRef("pk"),
        at__gte=start,
        at__lt=end,
        changes__contains=[{"field": "status", "new": ActionStatus.WONT_DO.value}],
    )
    return list(
        Action.objects.filter(postmortem__in=visible)
        .filter(
            Q(status=ActionStatus.DONE, done_at__gte=start, done_at__lt=end)
            | Q(Exists(wont_do_set), status=ActionStatus.WONT_DO)
        )
        .select_related("postmortem", "owner")
        .order_by("postmortem_id", "number")
    )


def _proofs(
    visible: QuerySet[PostMortem], state: str, start: dt.datetime, end: dt.datetime
) -> list[VerificationCriterion]:
    # The run that set the state judged it this week.
    judged = Verification.objects.filter(
        criterion_id=OuterRef("pk"),
        run_id=OuterRef("state_run_id"),
        created_at__gte=start,
        created_at__lt=end,
    )
    return list(
        VerificationCriterion.objects.filter(state=state, action__postmortem__in=visible)
        .filter(Exists(judged))
        .select_related("action__postmortem", "action__owner", "scenario")
        .order_by("action__postmortem_id", "action__number")
    )


def weekly_summary(
    *, period: Period, today: dt.date, visible: QuerySet[PostMortem]
) -> WeeklySummary:
    """The week's figures over the post-mortems `visible` (access.visible_postmortems of the
    reader, or only the public ones for a webhook)."""
    start, end = period.bounds()
    teams: dict[int | None, TeamWeek] = {}

    def bucket(team_id: int | None) -> TeamWeek:
        return teams.setdefault(team_id, TeamWeek(team=None))

    for action in _closed(visible, start, end):
        bucket(action.postmortem.team_id).closed.append(action)
    for criterion in _proofs(visible, VerificationState.VERIFIED, start, end):
        bucket(criterion.action.postmortem.team_id).verified.append(criterion)
    for criterion in _proofs(visible, VerificationState.REGRESSED, start, end):
        bucket(criterion.action.postmortem.team_id).regressed.append(criterion)
    incidents = (
        RegressionIncident.objects.filter(
            postmortem__in=visible, created_at__gte=start, created_at__lt=end
        )
        # The team of the scenario's service; else the team the post-mortem was given.
        .annotate(team_pk=Coalesce(F("scenario__team_id"), F("postmortem__team_id")))
        .select_related("scenario", "postmortem")
        .order_by("created_at", "pk")
    )
    for incident in incidents:
        bucket(incident.team_pk).incidents.append(incident)
    overdue = (
        Action.objects.filter(postmortem__in=visible)
        .filter(selectors.action_states(today)["overdue"])
        .select_related("postmortem", "owner")
        .order_by("due_date", "postmortem_id", "number")
    )
    for action in overdue:
        bucket(action.postmortem.team_id).overdue.append(action)
    new = visible.filter(
        Q(created_at__gte=start, created_at__lt=end) | Q(started_at__gte=start, started_at__lt=end)
    ).order_by("created_at", "pk")
    for pm in new:
        bucket(pm.team_id).new_postmortems.append(pm)

    by_pk = Team.objects.in_bulk([pk for pk in teams if pk is not None])
    for pk, week in teams.items():
        week.team = by_pk.get(pk) if pk is not None else None
    ordered = sorted(teams.values(), key=lambda w: (w.team is None, w.team.name if w.team else ""))
    total = TeamWeek(team=None)
    for week in ordered:
        for name in ("closed", "verified", "regressed", "incidents", "overdue", "new_postmortems"):
            getattr(total, name).extend(getattr(week, name))
    return WeeklySummary(period=period, today=today, teams=ordered, total=total)


def weekly_summary_for(*, user: User, period: Period, today: dt.date) -> WeeklySummary:
    return weekly_summary(period=period, today=today, visible=access.visible_postmortems(user))


# What an e-mail or a webhook says -------------------------------------------------------


def _figures(week: TeamWeek) -> dict[str, str]:
    counts = week.counts
    return {
        _("actions closed"): str(counts["closed"]),
        _("actions verified"): str(counts["verified"]),
        _("proofs regressed"): str(counts["regressed"]),
        _("regressions detected"): str(counts["incidents"]),
        _("actions overdue now"): str(counts["overdue"]),
        _("new incidents"): str(counts["new_postmortems"]),
    }


def _url(path: str) -> str:
    return f"{settings.SITE_URL}{path}"


def _action_line(action: Action) -> str:
    url = _url(action.get_absolute_url())
    return f"  - {action.postmortem.title}: {action.title}\n    {url}"


def _section(title: str, items: Iterable[Any], line: Callable[[Any], str]) -> list[str]:
    items = list(items)
    if not items:
        return []
    return [f" {title}:"] + [line(item) for item in items]


def _body(summary: WeeklySummary) -> str:
    period = summary.period
    page = _url(reverse("perfruns:weekly_summary")) + f"?week={period.label}"
    lines = [
        _("Fixproof: the week from %(start)s to %(end)s.")
        % {"start": period.start.isoformat(), "end": period.last_day.isoformat()},
        "",
        _("All teams:"),
    ]
    lines += [f"  {label}: {value}" for label, value in _figures(summary.total).items()]
    for week in summary.teams:
        lines += ["", week.team.name if week.team else _("No team")]
        lines += [f"  {label}: {value}" for label, value in _figures(week).items()]
        lines += _section(_("New incidents"), week.new_postmortems, _postmortem_line)
        lines += _section(_("Regressions detected"), week.incidents, _incident_line)
        lines += _section(_("Proofs regressed"), week.regressed, _criterion_line)
        lines += _section(_("Actions verified"), week.verified, _criterion_line)
        lines += _section(_("Actions closed"), week.closed, _action_line)
        lines += _section(_("Overdue now"), week.overdue[:_OVERDUE_LISTED], _action_line)
        more = len(week.overdue) - _OVERDUE_LISTED
        if more > 0:
            lines.append("  " + ngettext("and %(n)s more", "and %(n)s more", more) % {"n": more})
    lines += ["", _("The summary on Fixproof: %(url)s") % {"url": page}, ""]
    return "\n".join(lines)


def _postmortem_line(pm: PostMortem) -> str:
    return f"  - {pm.title}\n    {_url(pm.get_absolute_url())}"


def _incident_line(incident: RegressionIncident) -> str:
    return (
        f"  - {incident.scenario.name}: {incident.postmortem.title}\n"
        f"    {_url(incident.postmortem.get_absolute_url())}"
    )


def _criterion_line(criterion: VerificationCriterion) -> str:
    return _action_line(criterion.action)


# Sending ------------------------------------------------------------------------------


@dataclass
class SummaryReport:
    """What a run sent (or, in a dry run, would send): one line per e-mail or webhook."""

    lines: list[str] = field(default_factory=list)
    sent: int = 0


def weekly_summary_recipients() -> QuerySet[User]:
    """The managers (the group) and the managers of a team, with an e-mail address."""
    return (
        User.objects.filter(is_active=True)
        .exclude(email="")
        .filter(Q(groups__name=access.MANAGER) | Q(pk__in=Team.objects.values("manager_id")))
        .distinct()
        .order_by("pk")
    )


def weekly_summary_send(*, period: Period, today: dt.date, dry_run: bool = False) -> SummaryReport:
    """E-mail the week's summary to each manager (what they may see), and each team's
    public figures to its webhooks; nothing is sent twice for one week."""
    report = SummaryReport()
    claims = DatabaseDeduplicator(ttl_s=_CLAIM_TTL_S)
    with override(settings.LANGUAGE_CODE):
        subject = _("Fixproof: the week from %(start)s to %(end)s") % {
            "start": period.start.isoformat(),
            "end": period.last_day.isoformat(),
        }
        for user in weekly_summary_recipients():
            summary = weekly_summary_for(user=user, period=period, today=today)
            if summary.is_empty:
                continue
            key = f"weekly-summary:user={user.pk}:week={period.label}"
            report.lines.append(f"{user.get_username()}: e-mail ({key})")
            if dry_run:
                continue
            if claims.mail_once(key, subject=subject, body=_body(summary), to=user.email):
                report.sent += 1
        _webhooks(period=period, today=today, dry_run=dry_run, report=report, claims=claims)
    for line in report.lines:
        log.info("weekly summary %s%s: %s", period.label, " (dry run)" if dry_run else "", line)
    return report


def _webhooks(
    *,
    period: Period,
    today: dt.date,
    dry_run: bool,
    report: SummaryReport,
    claims: DatabaseDeduplicator,
) -> None:
    """Each team's own figures, over public post-mortems only: a webhook's channel is not
    the place for a private one, not even as a number."""
    public = PostMortem.objects.filter(is_private=False)
    summary = weekly_summary(period=period, today=today, visible=public)
    path = reverse("perfruns:weekly_summary") + f"?week={period.label}"
    for week in summary.teams:
        if week.team is None or not week.team.webhooks.filter(enabled=True).exists():
            continue
        key = f"weekly-summary:team={week.team.pk}:week={period.label}"
        report.lines.append(f"team {week.team.slug}: webhook ({key})")
        if dry_run or not claims.first_time(key):
            continue
        queued = notification_enqueue(
            kind="weekly_summary",
            title=_("%(team)s: the week from %(start)s to %(end)s")
            % {
                "team": week.team.name,
                "start": period.start.isoformat(),
                "end": period.last_day.isoformat(),
            },
            path=path,
            figures=_figures(week),
            dedupe_key=key,
            team_ids=[week.team.pk],
        )
        if queued:
            report.sent += 1
