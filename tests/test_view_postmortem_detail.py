from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse

from postmortems import services
from postmortems.models import (
    Action,
    HistoryEntry,
    ImpactFigure,
    PostMortem,
    RootCause,
    Team,
    TimelineEntry,
)


def url(pm: PostMortem) -> str:
    return reverse("postmortems:detail", args=[pm.pk])


def test_it_shows_the_whole_post_mortem(client, engineer, manager, make_postmortem):
    pm = make_postmortem(actor=engineer, authors=[engineer], title="Pool exhausted")
    services.action_update(
        action=pm.actions.get(number=1),
        actor=manager,
        status="in_progress",
        owner=engineer,
        due_date=dt.date(2020, 1, 31),
    )
    client.force_login(engineer)

    response = client.get(url(pm))

    assert response.status_code == 200
    html = response.content.decode()
    for text in (
        "<h1>Pool exhausted</h1>",
        "The checkout API returned 502s.",
        "failed requests",
        "A slow join on order_events.",
        "p95 passes 2 s.",
        "Weekly load test",
        "Index order_events",
        "Emma Martin",
        "overdue",
        # The history names who did what.
        "Marc Lefebvre",
        "created",
    ):
        assert text in html, text
    # An engineer gets the edit link, the status buttons and the action forms.
    assert reverse("postmortems:edit", args=[pm.pk]) in html
    assert 'name="to" value="in_review"' in html
    assert reverse("postmortems:action", args=[pm.pk, pm.actions.get(number=1).pk]) in html
    # The shared owner list still marks each action's own owner.
    assert html.count(f"<option value={engineer.pk} selected>Emma Martin</option>") == 1
    assert html.count(f"<option value={engineer.pk} >Emma Martin</option>") == 1
    pm.refresh_from_db()
    assert pm.status == "draft"
    assert pm.history.filter(actor=manager, subject="Action 1").exists()


def test_it_shows_what_publishing_still_needs(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer, severity="sev1")
    pm.impacts.all().delete()
    pm.actions.filter(kind="detect").delete()
    client.force_login(engineer)

    html = client.get(url(pm)).content.decode()

    assert '<li class="missing">✗ At least one quantified impact</li>' in html
    assert '<li class="missing">✗ A detect action (SEV1/SEV2)</li>' in html
    assert '<li class="ok">✓ A prevent action (SEV1/SEV2)</li>' in html


def test_it_shows_a_viewer_no_write_controls(client, viewer, make_postmortem):
    pm = make_postmortem()
    client.force_login(viewer)

    html = client.get(url(pm)).content.decode()

    assert "Pool exhausted" in html
    assert reverse("postmortems:edit", args=[pm.pk]) not in html
    assert reverse("postmortems:transition", args=[pm.pk]) not in html
    assert 'class="manage"' not in html


def _many_rows(pm: PostMortem, engineer, other_engineer, n: int = 40) -> None:
    ImpactFigure.objects.bulk_create(
        ImpactFigure(postmortem=pm, label=f"impact {i}", value=Decimal(i), position=i)
        for i in range(n)
    )
    RootCause.objects.bulk_create(
        RootCause(postmortem=pm, description=f"cause {i}", position=i) for i in range(n)
    )
    TimelineEntry.objects.bulk_create(
        TimelineEntry(postmortem=pm, occurred_at=pm.started_at, text=f"step {i}") for i in range(n)
    )
    actions = Action.objects.bulk_create(
        Action(
            postmortem=pm,
            number=10 + i,
            kind="repair",
            title=f"action {i}",
            owner=engineer if i % 2 else other_engineer,
            due_date=dt.date(2020, 1, 1),
        )
        for i in range(n)
    )
    HistoryEntry.objects.bulk_create(
        HistoryEntry(
            postmortem=pm,
            action=actions[i % n],
            actor=engineer if i % 2 else other_engineer,
            subject="post-mortem",
            verb="updated",
            changes=[{"field": "title", "old": "a", "new": "b"}],
        )
        for i in range(150)
    )
    pm.authors.add(engineer, other_engineer)


@pytest.mark.parametrize(
    ("role", "queries"),
    [
        # session, user, groups, the post-mortem with its team and creator,
        # then prefetches: authors, impacts, root causes, timeline, other
        # sections, actions with their owners and their perf runs (with
        # scenarios), the post-mortem's perf runs; the owner <select> shared by
        # every action form; the history with its actors.
        ("engineer", 14),
        # The same without the action forms, hence without the owner <select>.
        ("viewer", 13),
    ],
)
def test_it_keeps_a_constant_number_of_queries_however_long_the_post_mortem(
    request,
    client,
    engineer,
    other_engineer,
    make_postmortem,
    django_assert_num_queries,
    role,
    queries,
):
    user = request.getfixturevalue(role)
    team = Team.objects.create(name="Payments", slug="payments")
    few = make_postmortem(actor=engineer, team=team)
    many = make_postmortem(actor=engineer, team=team)
    _many_rows(many, engineer, other_engineer)
    client.force_login(user)

    with django_assert_num_queries(queries):
        assert client.get(url(few)).status_code == 200
    with django_assert_num_queries(queries):
        response = client.get(url(many))

    assert response.status_code == 200
    html = response.content.decode()
    assert "action 39" in html and "cause 39" in html and "impact 39" in html


def test_it_keeps_a_constant_number_of_queries_over_200_post_mortems(
    client, manager, make_postmortem, django_assert_num_queries
):
    pm = make_postmortem()
    PostMortem.objects.bulk_create(PostMortem(title=f"Incident {n}") for n in range(199))
    client.force_login(manager)

    # session, user, groups, the post-mortem, 8 prefetches (two of them perf runs),
    # owner <select>, history: a manager sees everything, so no visibility subqueries.
    with django_assert_num_queries(14):
        response = client.get(url(pm))

    assert response.status_code == 200


def test_it_escapes_what_people_wrote(client, viewer, make_postmortem):
    pm = make_postmortem(title="<script>alert(1)</script>", summary="<img src=x onerror=alert(2)>")
    client.force_login(viewer)

    html = client.get(url(pm)).content.decode()

    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_it_rejects_a_post(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer)
    client.force_login(engineer)

    response = client.post(url(pm))

    assert response.status_code == 405
    pm.refresh_from_db()
    assert pm.status == "draft"


def test_it_forbids_a_user_without_a_role(client, nobody, make_postmortem):
    pm = make_postmortem()
    client.force_login(nobody)

    response = client.get(url(pm))

    assert response.status_code == 403


def test_it_sends_an_anonymous_visitor_to_the_login_page(client, make_postmortem):
    pm = make_postmortem()

    response = client.get(url(pm))

    assert response.status_code == 302
    assert response.url == f"/login/?next={url(pm)}"


def test_it_hides_a_private_post_mortem_from_outsiders(
    client, engineer, other_engineer, viewer, make_postmortem
):
    pm = make_postmortem(actor=engineer, authors=[engineer], is_private=True)

    for outsider in (other_engineer, viewer):
        client.force_login(outsider)
        response = client.get(url(pm))
        assert response.status_code == 404
        assert "Pool exhausted" not in response.content.decode()


def test_it_shows_a_private_post_mortem_to_its_people(
    client, engineer, other_engineer, viewer, manager, make_postmortem
):
    team = Team.objects.create(name="Payments", slug="payments")
    team.members.add(viewer)
    by_author = make_postmortem(authors=[other_engineer], is_private=True)
    by_creator = make_postmortem(actor=engineer, is_private=True)
    by_team = make_postmortem(team=team, is_private=True)

    for user, pm in (
        (other_engineer, by_author),
        (engineer, by_creator),
        (viewer, by_team),
        (manager, by_author),
    ):
        client.force_login(user)
        assert client.get(url(pm)).status_code == 200, (user, pm)


def test_it_answers_404_for_an_unknown_post_mortem(client, engineer):
    client.force_login(engineer)

    response = client.get(reverse("postmortems:detail", args=[999999]))

    assert response.status_code == 404


def test_it_tells_the_history_in_the_readers_language(client, engineer, make_postmortem):
    from postmortems import services

    pm = make_postmortem(actor=engineer)
    services.postmortem_transition(postmortem=pm, actor=engineer, to="in_review")
    client.force_login(engineer)

    english = client.get(pm.get_absolute_url()).content.decode()
    french = client.get(pm.get_absolute_url(), HTTP_ACCEPT_LANGUAGE="fr").content.decode()

    assert "changed the status of the post-mortem" in english
    assert "<del>Draft</del> → In review" in english
    assert "a changé le statut du post-mortem" in french
    assert "<del>Brouillon</del> → En relecture" in french
