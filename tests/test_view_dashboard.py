"""The managers' dashboard: who owes what, what is proven, what is late; the outcomes
computed from the records, and each team's perf health."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from perfruns.models import (
    ChangeState,
    PerfRun,
    RegressionIncident,
    RunStatus,
    RunTrigger,
    VerificationCriterion,
)
from postmortems.models import Action, ActionStatus, Team

HOME = reverse("dashboard:home")
DASHBOARD = reverse("dashboard:dashboard")

pytestmark = pytest.mark.scenario(name="advisors", locustfile_path="x.py")


def _done(action: Action, *, created: dt.datetime, days: float) -> None:
    Action.objects.filter(pk=action.pk).update(
        status=ActionStatus.DONE, created_at=created, done_at=created + dt.timedelta(days=days)
    )


def _verify(action: Action, scenario, *, at: dt.datetime, state: str = "verified") -> PerfRun:
    run = PerfRun.objects.create(
        scenario=scenario, environment=scenario.environment, trigger=RunTrigger.SCHEDULE,
        status=RunStatus.PASSED, finished_at=at,
    )  # fmt: skip
    VerificationCriterion.objects.create(
        action=action, scenario=scenario, metric="p95_ms", value=500, state=state, state_run=run
    )
    return run


@pytest.fixture
def records(make_postmortem, engineer, other_engineer, scenario):
    """Three incidents of the last weeks: a SEV1 of the Platform team with one corrective
    action verified and one not, a SEV2 with both verified, and a private SEV1 the viewer
    cannot see (its action overdue, owned by the other engineer)."""
    now = timezone.now()
    team = Team.objects.create(name="Platform", slug="platform")
    scenario.team = team
    scenario.save()
    start_a = now - dt.timedelta(days=40)
    a = make_postmortem(
        actor=engineer, title="Pool exhausted", severity="sev1", team=team,
        started_at=start_a, ended_at=start_a + dt.timedelta(hours=2),
        detected_at=start_a + dt.timedelta(minutes=10),
        resolved_at=start_a + dt.timedelta(minutes=60),
    )  # fmt: skip
    start_b = now - dt.timedelta(days=5)
    b = make_postmortem(
        actor=engineer, title="Indexer leak", severity="sev2",
        started_at=start_b, ended_at=start_b + dt.timedelta(hours=3),
        detected_at=start_b + dt.timedelta(minutes=30),
        resolved_at=start_b + dt.timedelta(minutes=120),
    )  # fmt: skip
    hidden = make_postmortem(
        title="Private incident", severity="sev1", is_private=True,
        started_at=start_b, ended_at=start_b + dt.timedelta(hours=1),
    )  # fmt: skip
    a_detect, a_prevent = a.actions.order_by("number")
    b_detect, b_prevent = b.actions.order_by("number")
    created = now - dt.timedelta(days=30)
    _done(a_prevent, created=created, days=4)
    _done(b_detect, created=created, days=2)
    _done(b_prevent, created=created, days=6)
    Action.objects.filter(pk=a_detect.pk).update(created_at=created)
    _verify(a_detect, scenario, at=created + dt.timedelta(days=10))
    _verify(b_detect, scenario, at=created + dt.timedelta(days=3))
    _verify(b_prevent, scenario, at=created + dt.timedelta(days=7))
    Action.objects.filter(pk__in=hidden.actions.values("pk")).update(
        owner=other_engineer, due_date=timezone.localdate() - dt.timedelta(days=3)
    )
    return {"team": team, "a": a, "b": b, "hidden": hidden, "scenario": scenario}


def _text_of(html: str, element_id: str) -> str:
    return html.split(f'id="{element_id}">')[1].split("</dd>")[0]


def test_a_viewer_sees_the_outcomes_computed_from_what_they_may_see(
    client, viewer, records, django_assert_num_queries
):
    client.force_login(viewer)

    # session, user, groups; the filter's teams and owners; the counts per team and owner;
    # close and verify medians, SEV1/2 share, detect/resolve medians; incidents per month,
    # times per month, regressions confirmed and fixed per month; team health and the
    # health's last runs
    with django_assert_num_queries(16):
        response = client.get(DASHBOARD)

    html = response.content.decode()
    assert response.status_code == 200
    assert "Private incident" not in html
    # Done after 4, 2 and 6 days: the median is 4. Verified 10, 3 and 7 days after: 7.
    assert _text_of(html, "median-close").strip() == "4 days"
    assert _text_of(html, "median-verify").strip() == "7 days"
    # Of the two SEV1/2 the viewer may see, one has every corrective action verified.
    assert _text_of(html, "severe-share").strip() == "50 %"
    # Detected after 10 and 30 minutes, resolved after 60 and 120.
    assert _text_of(html, "median-ttd").strip() == "20 min"
    assert _text_of(html, "median-ttr").strip() == "90 min"


def test_a_manager_counts_the_private_incident_too(client, manager, records):
    client.force_login(manager)

    html = client.get(DASHBOARD).content.decode()

    # The private SEV1 has no verified action: one of three.
    assert _text_of(html, "severe-share").strip() == "33 %"
    assert "Private incident" not in html  # counted, never named here


def test_counts_per_team_and_owner_link_to_the_actions_they_count(client, manager, records):
    client.force_login(manager)

    html = client.get(DASHBOARD).content.decode()

    team = records["team"]
    assert _counts(html, "Platform") == [1, 0, 0, 1, 1, 0, 0]
    assert f'href="/postmortems/actions/?team={team.pk}&amp;state=open"' in _row(html, "Platform")
    # The other engineer owns the private incident's two overdue actions.
    assert _counts(html, "Karim Haddad") == [2, 2, 0, 0, 0, 0, 0]
    assert "state=overdue" in _row(html, "Karim Haddad")


def _row(html: str, name: str) -> str:
    return html.split(f'<th scope="row">{name}</th>')[1].split("</tr>")[0]


def _counts(html: str, name: str) -> list[int]:
    """open, overdue, to debate, done not verified, verified, failed, regressed"""
    cells = _row(html, name).split('<td class="num')[1:]
    return [int(re.sub(r"<[^>]+>", "", cell.split(">", 1)[1].split("</td>")[0])) for cell in cells]


def test_each_team_shows_its_scenarios_last_verdict_and_open_regressions(client, manager, records):
    scenario = records["scenario"]
    failed = PerfRun.objects.create(
        scenario=scenario, environment=scenario.environment, trigger=RunTrigger.SCHEDULE,
        status=RunStatus.FAILED, finished_at=timezone.now(),
        verdict=[{"check": "p95_ms", "measured": 812.0, "limit": 500, "passed": False}],
    )  # fmt: skip
    RegressionIncident.objects.create(
        scenario=scenario, start_run=failed, postmortem=records["a"], state=ChangeState.CONFIRMED
    )
    client.force_login(manager)

    html = client.get(DASHBOARD).content.decode()

    health = html.split("perf health this week")[1]
    row = health.split('href="/perf/scenarios/advisors/"')[1].split("</tr>")[0]
    assert f'href="/perf/runs/{failed.pk}/"' in row
    assert "Failed" in row
    cells = [c.split("</td>")[0].rsplit(">", 1)[-1] for c in row.split('<td class="num')[1:]]
    # runs this week (the three verifying runs are a month old), failed, open regressions
    assert cells == ["1", "1", "1"]


def test_the_home_page_is_the_dashboard_for_managers_and_my_actions_for_engineers(
    client, manager, engineer, viewer, nobody, db
):
    client.force_login(manager)
    assert b"<h1>Dashboard</h1>" in client.get(HOME).content
    client.force_login(viewer)
    assert b"<h1>Dashboard</h1>" in client.get(HOME).content
    client.force_login(engineer)
    response = client.get(HOME)
    assert response.status_code == 302
    assert response["Location"] == reverse("postmortems:my_actions")
    client.force_login(nobody)
    assert client.get(HOME).status_code == 403
    assert client.get(DASHBOARD).status_code == 403
    client.logout()
    assert client.get(DASHBOARD)["Location"].startswith("/login/")


def test_the_dashboard_refuses_a_post_and_names_a_bad_filter(client, manager, db):
    client.force_login(manager)

    assert client.post(DASHBOARD).status_code == 405
    html = client.get(DASHBOARD, {"due_from": "2026-05-01", "due_until": "2026-04-01"})
    assert "The end of the due range is before its start." in html.content.decode()


def test_the_team_filter_narrows_the_outcomes_to_its_incidents(client, manager, records):
    client.force_login(manager)

    html = client.get(DASHBOARD, {"team": records["team"].pk}).content.decode()

    # Only the Platform SEV1, whose prevent action is not verified.
    assert _text_of(html, "severe-share").strip() == "0 %"
    assert _text_of(html, "median-ttd").strip() == "10 min"


def test_a_french_reader_gets_the_dashboard_in_french(client, manager, records):
    client.force_login(manager)
    client.cookies["django_language"] = "fr"

    html = client.get(DASHBOARD, headers={"accept-language": "fr"}).content.decode()

    assert "<h1>Tableau de bord</h1>" in html
    assert _text_of(html, "median-close").strip() == "4 jours"
    assert "Actions par équipe" in html


def test_the_figures_are_reused_for_a_minute_but_never_across_what_people_may_see(
    client, viewer, manager, records, django_assert_num_queries
):
    client.force_login(viewer)
    client.get(DASHBOARD)

    # session, user, groups, the filter's teams and owners, the counts per team and owner:
    # the outcomes, trends and health are the ones just computed
    with django_assert_num_queries(6):
        html = client.get(DASHBOARD).content.decode()
    assert _text_of(html, "severe-share").strip() == "50 %"
    # A manager sees the private incident too: not the viewer's figures.
    client.force_login(manager)
    assert _text_of(client.get(DASHBOARD).content.decode(), "severe-share").strip() == "33 %"
    # Another filter, other figures.
    html = client.get(DASHBOARD, {"team": records["team"].pk}).content.decode()
    assert _text_of(html, "severe-share").strip() == "0 %"


def test_a_median_under_a_day_is_said_in_minutes_or_hours(client, manager, records):
    created = timezone.now() - dt.timedelta(days=2)
    Action.objects.filter(postmortem__in=[records["a"], records["b"]]).update(
        status=ActionStatus.DONE, created_at=created, done_at=created + dt.timedelta(hours=5)
    )
    client.force_login(manager)

    html = client.get(DASHBOARD).content.decode()

    assert _text_of(html, "median-close").strip() == "5 h"
