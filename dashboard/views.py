from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from postmortems import access, selectors
from postmortems.forms import ActionFilterForm
from postmortems.models import Severity, Team

from . import selectors as figures


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Managers (and viewers) land on the dashboard; engineers on their own actions."""
    user = access.require_role(request.user)
    if access.can_write(user) and not access.is_manager(user):
        return redirect("postmortems:my_actions")
    return dashboard(request)


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """Who owes what, what is proven, what is late; the outcomes and each team's perf
    health. Everything is computed from the records the reader may see."""
    user = access.require_role(request.user)
    form = ActionFilterForm(request.GET or None)
    filters: dict[str, Any] = dict(form.cleaned_data) if form.is_valid() else {}
    today = timezone.localdate()
    actions = selectors.actions_filtered(user, filters, today=today)
    # One grouped query by team and owner, summed here both ways (two GROUP BYs over the
    # same joined actions cost twice as much).
    pairs = selectors.action_counts_by(
        actions, "postmortem__team", "postmortem__team__name", "owner", "owner__username",
        "owner__first_name", "owner__last_name", today=today,
    )  # fmt: skip
    by_team = _summed(pairs, ("postmortem__team", "postmortem__team__name"))
    by_owner = _summed(pairs, ("owner", "owner__username", "owner__first_name", "owner__last_name"))
    # Outcomes are about incidents: the post-mortem filters (team, severity) apply to them.
    postmortems = access.visible_postmortems(user)
    teams = Team.objects.all()
    if filters.get("team"):
        postmortems = postmortems.filter(team=filters["team"])
        teams = teams.filter(pk=filters["team"].pk)
    if filters.get("severity"):
        postmortems = postmortems.filter(severity=filters["severity"])
    # The same figures for every manager (they see everything); per person otherwise.
    scope = "all" if access.is_manager(user) else f"user{user.pk}"
    team = filters["team"].pk if filters.get("team") else ""
    trends = figures.incident_figures(
        postmortems, teams=teams, today=today, key=f"{scope}:{team}:{filters.get('severity')}"
    )
    monthly = trends.monthly
    no_team, no_owner = _("No team"), _("No owner")
    team_rows = [
        _row(
            request, row, row["postmortem__team__name"] or no_team, "team", row["postmortem__team"]
        )
        for row in by_team
    ]
    owner_rows = [
        _row(request, row, _owner(row) or no_owner, "owner", row["owner"]) for row in by_owner
    ]
    return render(
        request,
        "dashboard/dashboard.html",
        {
            "form": form,
            "by_team": team_rows,
            "by_owner": owner_rows,
            "severities": Severity.choices,
            "month_labels": [
                date_format(dt.date.fromisoformat(m), "YEAR_MONTH_FORMAT")
                for m in monthly["months"]
            ],
            "states": selectors.STATE_KEYS,
            "outcomes": trends.outcomes,
            "monthly": monthly,
            "health": trends.health,
            "figures_at": trends.computed_at,
        },
    )


def _row(
    request: HttpRequest, counts: dict[str, Any], name: str, param: str, value: Any
) -> dict[str, Any]:
    """A row of a counts table: its name, its counts, and the query of the actions list
    its links open: the page's filters with the row's team or owner (none for "no team")."""
    query = None
    if value is not None:
        params = request.GET.copy()
        for key in ("state", "page", param):
            params.pop(key, None)
        params[param] = str(value)
        query = params.urlencode()
    return {**counts, "name": name, "query": query}


def _owner(row: dict[str, Any]) -> str:
    return selectors.person_name(
        row["owner__username"], row["owner__first_name"], row["owner__last_name"]
    )


def _summed(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The counts of `rows` added up per value of `keys`, most overdue then open first."""
    totals: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(row[k] for k in keys)
        total = totals.setdefault(key, {**dict(zip(keys, key, strict=True)), "total": 0})
        for name in ("total", *selectors.STATE_KEYS):
            total[name] = total.get(name, 0) + row[name]
    return sorted(totals.values(), key=lambda r: (-r["overdue"], -r["open"], str(r[keys[1]] or "")))
