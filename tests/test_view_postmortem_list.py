from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from postmortems import services
from postmortems.models import Action, PostMortem, Team

URL = reverse("postmortems:list")


def listed(response) -> list[int]:
    """The post-mortem ids the page links to, in the order shown."""
    assert response.status_code == 200
    return [int(pk) for pk in re.findall(r'href="/postmortems/(\d+)/"', response.content.decode())]


def at(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(12, 0)))


@pytest.fixture
def team(db) -> Team:
    return Team.objects.create(name="Payments", slug="payments")


def test_it_lists_visible_post_mortems_newest_first_with_their_open_actions(
    client, engineer, make_postmortem
):
    older = make_postmortem(actor=engineer, title="Pool exhausted")
    newer = make_postmortem(actor=engineer, title="Disk full", severity="sev1")
    # One open action is overdue, one is done: only open ones are counted.
    Action.objects.filter(postmortem=newer, number=1).update(due_date=dt.date(2020, 1, 1))
    services.action_update(
        action=newer.actions.get(number=2),
        actor=engineer,
        status="done",
        owner=None,
        due_date=None,
    )
    client.force_login(engineer)

    response = client.get(URL)

    assert listed(response) == [newer.pk, older.pk]
    html = response.content.decode()
    assert "Disk full" in html and "Pool exhausted" in html
    assert "1 overdue" in html
    assert "SEV1" in html
    newer.refresh_from_db()
    assert newer.actions.filter(status="done").count() == 1
    assert newer.actions.get(number=1).is_overdue


def test_it_shows_an_empty_list_message(client, viewer):
    client.force_login(viewer)

    response = client.get(URL)

    assert listed(response) == []
    assert "No post-mortem matches." in response.content.decode()


def test_it_keeps_a_constant_number_of_queries_with_200_post_mortems(
    client, engineer, team, make_postmortem, django_assert_num_queries
):
    make_postmortem(actor=engineer, team=team)
    client.force_login(engineer)
    # session, user, the user's groups, COUNT for the paginator, the team
    # filter's <select>, one page of post-mortems with their team and action counts.
    with django_assert_num_queries(6):
        assert len(listed(client.get(URL))) == 1

    pms = PostMortem.objects.bulk_create(
        PostMortem(title=f"Incident {n}", team=team, summary="s") for n in range(199)
    )
    Action.objects.bulk_create(
        Action(postmortem=pm, number=1, kind="prevent", title="t", due_date=dt.date(2020, 1, 1))
        for pm in pms
    )
    with django_assert_num_queries(6):
        response = client.get(URL)
    assert len(listed(response)) == 50
    assert "Page 1 of 4" in response.content.decode()


def test_it_pages_through_the_list(client, engineer, make_postmortem):
    make_postmortem(actor=engineer, title="The first one")
    PostMortem.objects.bulk_create(PostMortem(title=f"Incident {n}") for n in range(55))
    client.force_login(engineer)

    first = listed(client.get(URL))
    second = listed(client.get(URL, {"page": 2}))

    assert len(first) == 50 and len(second) == 6
    assert not set(first) & set(second)
    assert PostMortem.objects.get(title="The first one").pk == second[-1]


def test_it_rejects_a_post(client, engineer):
    client.force_login(engineer)

    response = client.post(URL)

    assert response.status_code == 405


def test_it_forbids_a_user_without_a_role(client, nobody, make_postmortem):
    make_postmortem()
    client.force_login(nobody)

    response = client.get(URL)

    assert response.status_code == 403


def test_it_sends_an_anonymous_visitor_to_the_login_page(client):
    response = client.get(URL)

    assert response.status_code == 302
    assert response.url == f"/login/?next={URL}"


def test_it_hides_private_post_mortems_from_outsiders(
    client, engineer, other_engineer, viewer, manager, make_postmortem
):
    public = make_postmortem(actor=engineer, title="Public one")
    private = make_postmortem(actor=engineer, authors=[engineer], is_private=True)

    for outsider in (other_engineer, viewer):
        client.force_login(outsider)
        assert listed(client.get(URL)) == [public.pk]
    for insider in (engineer, manager):
        client.force_login(insider)
        assert listed(client.get(URL)) == [private.pk, public.pk]


# ------------------------------------------------------------------ search


@pytest.mark.parametrize(
    ("fields", "query"),
    [
        ({"title": "Connection pool exhausted"}, "exhaust"),
        ({"title": "Checkout outage", "summary": "The pool was exhausted by retries."}, "retry"),
        ({"title": "Checkout outage", "summary": "Les connexions sont épuisées."}, "épuisement"),
        ({"title": "Checkout outage", "summary": "La base de données a saturé."}, "saturation"),
    ],
    ids=["english-stem-in-title", "english-stem-in-summary", "french-stem", "french-verb"],
)
def test_it_finds_post_mortems_by_stemmed_words(client, viewer, make_postmortem, fields, query):
    match = make_postmortem(**fields)
    make_postmortem(title="Unrelated disk full", summary="The disk filled up.")
    client.force_login(viewer)

    assert listed(client.get(URL, {"q": query})) == [match.pk]


def test_it_finds_text_in_root_causes_and_actions(client, viewer, make_postmortem):
    make_postmortem(title="Disk full", summary="The disk filled up.")
    by_cause = make_postmortem(title="Outage A")
    by_cause.root_causes.update(description="A missing index on order_events.")
    services.postmortem_reindex(postmortem_id=by_cause.pk)
    by_action = make_postmortem(title="Outage B")
    by_action.actions.filter(number=1).update(title="Add a circuit breaker to payments")
    services.postmortem_reindex(postmortem_id=by_action.pk)
    client.force_login(viewer)

    # make_content gives every post-mortem "Index order_events" as an action,
    # so the cause is looked up by a word only the cause holds.
    assert listed(client.get(URL, {"q": "missing"})) == [by_cause.pk]
    assert listed(client.get(URL, {"q": "circuit breakers"})) == [by_action.pk]


def test_it_ranks_title_matches_above_summary_matches(client, viewer, make_postmortem):
    in_title = make_postmortem(title="Redis eviction storm", summary="Keys vanished.")
    in_summary = make_postmortem(title="Checkout outage", summary="A redis eviction storm.")
    client.force_login(viewer)

    # Created last, the summary match would come first without ranking.
    assert listed(client.get(URL, {"q": "eviction"})) == [in_title.pk, in_summary.pk]


def test_it_does_not_search_other_peoples_private_post_mortems(
    client, engineer, viewer, make_postmortem
):
    make_postmortem(actor=engineer, title="Secret pool exhausted", is_private=True)
    client.force_login(viewer)

    response = client.get(URL, {"q": "exhausted"})

    assert listed(response) == []


@pytest.mark.parametrize("query", ["!!! & | (", "an", "'", "-", "<>"])
def test_it_survives_a_query_of_punctuation_or_stop_words(client, viewer, make_postmortem, query):
    make_postmortem()
    client.force_login(viewer)

    assert listed(client.get(URL, {"q": query})) == []


# ----------------------------------------------------------------- filters


def test_it_filters_by_status_severity_and_team(client, engineer, team, make_postmortem):
    draft = make_postmortem(actor=engineer, severity="sev1", team=team)
    in_review = make_postmortem(actor=engineer, severity="sev1", team=team)
    services.postmortem_transition(postmortem=in_review, actor=engineer, to="in_review")
    sev3 = make_postmortem(actor=engineer, severity="sev3", team=team)
    no_team = make_postmortem(actor=engineer, severity="sev1")
    client.force_login(engineer)

    assert listed(client.get(URL, {"status": "in_review"})) == [in_review.pk]
    assert listed(client.get(URL, {"severity": "sev3"})) == [sev3.pk]
    assert listed(client.get(URL, {"team": team.pk, "severity": "sev1"})) == [
        in_review.pk,
        draft.pk,
    ]
    assert no_team.pk in listed(client.get(URL, {"severity": "sev1"}))


def test_it_filters_by_incident_date_or_the_written_date_when_the_start_is_unknown(
    client, engineer, make_postmortem
):
    march = make_postmortem(started_at=at(dt.date(2026, 3, 13)), ended_at=None)
    april = make_postmortem(started_at=at(dt.date(2026, 4, 2)), ended_at=None)
    undated = make_postmortem(started_at=None, ended_at=None, written_on=dt.date(2026, 3, 20))
    client.force_login(engineer)

    assert listed(client.get(URL, {"since": "2026-03-01", "until": "2026-03-31"})) == [
        undated.pk,
        march.pk,
    ]
    # Both ends are inclusive: the whole "until" day counts.
    assert listed(client.get(URL, {"since": "2026-04-02", "until": "2026-04-02"})) == [april.pk]
    assert listed(client.get(URL, {"until": "2026-03-13"})) == [march.pk]


def test_it_explains_a_date_range_that_ends_before_it_starts(client, engineer, make_postmortem):
    make_postmortem()
    client.force_login(engineer)

    response = client.get(URL, {"since": "2026-04-01", "until": "2026-03-01"})

    assert response.status_code == 200
    assert "The end of the date range is before its start." in response.content.decode()


@pytest.mark.parametrize("role", ["viewer", "manager"])
def test_people_who_may_not_write_see_no_link_to_writing(client, db, request, role):
    client.force_login(request.getfixturevalue(role))

    page = client.get(reverse("postmortems:list")).content.decode()

    assert reverse("postmortems:create") not in page
    assert reverse("postmortems:import") not in page


def test_an_engineer_sees_the_links_to_write_and_import(client, engineer):
    client.force_login(engineer)

    page = client.get(reverse("postmortems:list")).content.decode()

    assert reverse("postmortems:create") in page and reverse("postmortems:import") in page


def test_the_searched_list_downloads_as_csv_with_every_row_and_nothing_private(
    client, viewer, make_postmortem, engineer, db
):
    make_postmortem(actor=engineer, title="Pool exhausted", severity="sev1")
    make_postmortem(actor=engineer, title="=cmd|' /C calc'!A0", severity="sev1")
    make_postmortem(actor=engineer, title="Indexer leak", severity="sev3")
    make_postmortem(title="Private incident", severity="sev1", is_private=True)
    client.force_login(viewer)

    response = client.get(reverse("postmortems:list"), {"severity": "sev1", "format": "csv"})

    assert response["Content-Disposition"] == 'attachment; filename="postmortems.csv"'
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["Title", "Severity", "Status"]
    assert sorted(row[0] for row in rows[1:]) == ["'=cmd|' /C calc'!A0", "Pool exhausted"]
    assert {row[9] for row in rows[1:]} == {"2"}  # open actions
