"""The pages people read most run the same number of queries whatever the data size: each
page is read with some records, then with three times as many, and must not run one query
more."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from perfruns.models import (
    PerfRun,
    RegressionIncident,
    RunStatus,
    RunTrigger,
    Scenario,
    VerificationCriterion,
)
from postmortems.models import Action, Team

pytestmark = pytest.mark.scenario(name="advisors", locustfile_path="x.py")

PAGES = [
    reverse("dashboard:dashboard"),
    reverse("postmortems:actions"),
    reverse("postmortems:actions") + "?format=csv",
    reverse("postmortems:my_actions"),
    reverse("postmortems:list"),
]


def _add(make_postmortem, engineer, scenario: Scenario, count: int, start: int) -> None:
    """`count` more incidents of two teams, each with its actions owned, due, proven by a
    run, and a regression."""
    now = timezone.now()
    for n in range(start, start + count):
        team, _ = Team.objects.get_or_create(name=f"Team {n % 2}", slug=f"team-{n % 2}")
        pm = make_postmortem(
            actor=engineer, title=f"Incident {n}", severity=("sev1", "sev2", "sev3")[n % 3],
            team=team, started_at=now - dt.timedelta(days=30 * (n % 12)),
            detected_at=now - dt.timedelta(days=30 * (n % 12)) + dt.timedelta(minutes=5),
            ended_at=None,
        )  # fmt: skip
        Action.objects.filter(postmortem=pm).update(
            owner=engineer, due_date=timezone.localdate() - dt.timedelta(days=n % 3)
        )
        run = PerfRun.objects.create(
            scenario=scenario, environment=scenario.environment, trigger=RunTrigger.SCHEDULE,
            status=RunStatus.FAILED, finished_at=now,
            verdict=[{"check": "p95_ms", "measured": 800.0, "limit": 500, "passed": False}],
        )  # fmt: skip
        for action in pm.actions.all():
            VerificationCriterion.objects.create(
                action=action, scenario=scenario, metric="p95_ms", value=500,
                state=("verified", "failed", "regressed")[n % 3], state_run=run,
            )  # fmt: skip
        RegressionIncident.objects.create(scenario=scenario, start_run=run, postmortem=pm)
        scenario.team = team
        scenario.save()


def _queries(client, page: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(page)
    assert response.status_code == 200, page
    return len(queries)


def test_the_main_pages_run_as_many_queries_for_three_times_the_data(
    client, manager, engineer, make_postmortem, scenario
):
    _add(make_postmortem, engineer, scenario, 2, 0)
    client.force_login(engineer)
    for page in PAGES:  # warm the caches a first request fills (content types, sessions)
        client.get(page)
    small = {page: _queries(client, page) for page in PAGES}

    _add(make_postmortem, engineer, scenario, 4, 2)
    large = {page: _queries(client, page) for page in PAGES}

    assert large == small
    client.force_login(manager)
    client.get(PAGES[0])
    assert _queries(client, PAGES[0]) == small[PAGES[0]]
