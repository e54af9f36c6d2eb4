"""The pages people read most run the same number of queries whatever the data size: each
page is read with some records, then with three times as many, and must not run one query
more."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache
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
    cache.clear()  # the dashboard's figures are computed, not reused from the last read
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


def _grow_run(run: PerfRun, start: int, count: int) -> None:
    """`count` more endpoints, failure groups, samples and attached post-mortems."""
    from perfruns.models import EndpointStat, FailureGroup, Sample

    for n in range(start, start + count):
        EndpointStat.objects.create(
            run=run, method="GET", name=f"/route/{n}", requests=100, failures=1, avg_ms=5,
            min_ms=1, max_ms=50, percentiles={"50": 4.0, "95": 20.0}, rps=3.0,
        )  # fmt: skip
        FailureGroup.objects.create(
            run=run, method="GET", name=f"/route/{n}", occurrences=2,
            error=f"HTTPError('500 Server Error: too many clients for url: /route/{n}')",
        )  # fmt: skip
        Sample.objects.create(run=run, t=float(n), users=10, rps=3.0, p95_ms=20.0)


def test_a_post_mortem_and_a_run_read_with_as_many_queries_for_three_times_their_parts(
    client, engineer, make_postmortem, scenario
):
    from postmortems import services
    from tests.conftest import make_content

    def grown(count: int):
        content = make_content(f"Incident with {count} actions")
        content.actions = [
            {"kind": "repair", "title": f"Fix {n}", "description": "", "owner": engineer,
             "due_date": None, "status": "todo", "ticket_url": ""}
            for n in range(count)
        ]  # fmt: skip
        content.timeline = content.timeline * count
        pm = services.postmortem_save(actor=engineer, content=content)
        for action in pm.actions.all():
            VerificationCriterion.objects.create(
                action=action, scenario=scenario, metric="p95_ms", value=500
            )
        return pm

    small_pm, large_pm = grown(2), grown(6)
    run = PerfRun.objects.create(
        scenario=scenario, environment=scenario.environment, trigger=RunTrigger.SCHEDULE,
        status=RunStatus.PASSED, finished_at=timezone.now(),
    )  # fmt: skip
    run.postmortems.add(small_pm)
    _grow_run(run, 0, 2)
    client.force_login(engineer)
    pages = [
        reverse("postmortems:detail", args=[small_pm.pk]),
        reverse("perfruns:run", args=[run.pk]),
    ]
    for page in pages:
        client.get(page)
    small = [_queries(client, page) for page in pages]

    _grow_run(run, 2, 4)
    run.postmortems.add(large_pm)
    large_pages = [reverse("postmortems:detail", args=[large_pm.pk]), pages[1]]
    large = [_queries(client, page) for page in large_pages]

    assert large == small
