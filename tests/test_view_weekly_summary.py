"""The weekly summary page: seven days per team and overall, as the reader may see them."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse

from postmortems.models import PostMortem, Team
from tests import weekdata

URL = reverse("perfruns:weekly_summary")


@pytest.fixture
def payments(engineer, manager) -> Team:
    return weekdata.plant_team(engineer, manager)


@pytest.fixture
def week(make_postmortem, engineer, payments, scenario) -> PostMortem:
    return weekdata.plant_week(make_postmortem, engineer, payments, scenario)


@pytest.fixture
def secret(make_postmortem, engineer, payments) -> PostMortem:
    return weekdata.plant_secret(make_postmortem, engineer, payments)


@pytest.fixture(autouse=True)
def frozen_today(monkeypatch):
    """The page's "today" is Monday 23 March 2026 (overdue is counted as of then)."""
    from django.utils import timezone

    monkeypatch.setattr(timezone, "localdate", lambda *args, **kwargs: dt.date(2026, 3, 23))


def test_a_manager_reads_the_iso_week_per_team_and_overall(client, manager, week):
    client.force_login(manager)

    response = client.get(URL, {"week": "2026-W12"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "Payments" in page and "All teams" in page
    assert "Checkout 502s" in page and "Weekly load test" in page
    assert "Old outage" in page  # its action is overdue now
    # Links to the seven days before and after.
    assert "?week=2026-03-09" in page and "?week=2026-03-23" in page


def test_by_default_it_shows_the_last_seven_days(client, manager, week):
    client.force_login(manager)

    page = client.get(URL).content.decode()

    assert 'value="2026-03-17"' in page  # 17 to 23 March
    assert "Checkout 502s" in page
    # No link to the seven days after, which would be in the future.
    assert "?week=2026-03-10" in page and "?week=2026-03-24" not in page


def test_a_private_post_mortem_is_not_shown_to_who_may_not_open_it(
    client, viewer, manager, week, secret
):
    client.force_login(viewer)
    assert "Secret breach" not in client.get(URL, {"week": "2026-W12"}).content.decode()

    client.force_login(manager)
    assert "Secret breach" in client.get(URL, {"week": "2026-W12"}).content.decode()


def test_a_bad_week_says_what_is_expected(client, manager, week):
    client.force_login(manager)

    response = client.get(URL, {"week": "next tuesday"})

    assert response.status_code == 400
    assert "is not a week: give an ISO week (2026-W12)" in response.content.decode()


def test_it_refuses_a_wrong_method_and_someone_without_a_role(client, manager, nobody):
    client.force_login(manager)
    assert client.post(URL).status_code == 405

    client.force_login(nobody)
    assert client.get(URL).status_code == 403


def test_the_page_costs_a_fixed_number_of_queries(
    client, manager, week, secret, django_assert_num_queries
):
    client.force_login(manager)
    # Session, user, groups; closed actions, verified and regressed proofs, regressions,
    # overdue actions, new post-mortems, their teams.
    with django_assert_num_queries(10):
        response = client.get(URL, {"week": "2026-W12"})
    assert response.status_code == 200
