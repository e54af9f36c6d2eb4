from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from postmortems.models import (
    Action,
    HistoryEntry,
    ImpactFigure,
    PostMortem,
    RootCause,
    Team,
    TimelineEntry,
)

from .formdata import action_row, postmortem_data

URL = reverse("postmortems:create")


def complete_data(**fields):
    return postmortem_data(
        impacts=[
            {"label": "failed requests", "value": "270", "unit": "", "window": "12:02-12:40"},
            {"label": "p95 latency", "value": "6.5", "unit": "s", "window": ""},
            # The blank row the page always adds: ignored.
            {"label": "", "value": "", "unit": "", "window": ""},
        ],
        root_causes=[{"category": "database", "description": "A slow join on order_events."}],
        timeline=[{"occurred_at": "2026-03-13T12:02", "text": "p95 passes 2 s."}],
        actions=[
            action_row(kind="detect", title="Alert on pool usage"),
            action_row(status="done", due_date="2026-04-01"),
            action_row(kind="", title="", status="todo"),
        ],
        **fields,
    )


def nothing_written() -> bool:
    return not any(
        model.objects.exists()
        for model in (PostMortem, ImpactFigure, RootCause, TimelineEntry, Action, HistoryEntry)
    )


def test_it_shows_an_empty_form_with_one_blank_row_per_formset(
    client, engineer, django_assert_num_queries
):
    client.force_login(engineer)

    # session, user, groups, then the <select>s: authors, team, and the action
    # owners (one query shared by the blank row and the "add a row" template).
    with django_assert_num_queries(6):
        response = client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    for prefix in ("impacts", "causes", "timeline", "actions"):
        assert f'name="{prefix}-TOTAL_FORMS" value="1"' in html
        assert f'name="{prefix}-INITIAL_FORMS" value="0"' in html
    assert "Please correct the errors below" not in html


def test_it_creates_a_post_mortem_with_all_its_rows(
    client, engineer, other_engineer, django_assert_num_queries
):
    team = Team.objects.create(name="Payments", slug="payments")
    client.force_login(engineer)
    data = complete_data(authors=[engineer, other_engineer], team=team, is_private=True)

    # session, user, groups (3); validation: the authors, the team, the team's
    # existence for the model, SAVEPOINT + the end-after-start check + RELEASE (6);
    # the save: SAVEPOINT, INSERT post-mortem, authors SELECT + INSERT (4);
    # impacts, root causes, timeline: SELECT existing + INSERT each (6); actions:
    # SELECT existing + one INSERT per action (3); bulk INSERT history (1);
    # reindex: SELECT post-mortem, causes, actions + UPDATE vector (4); refresh,
    # RELEASE (2). No owner is chosen, so no owner lookup.
    with django_assert_num_queries(29):
        response = client.post(URL, data)

    pm = PostMortem.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("postmortems:detail", args=[pm.pk])
    pm.refresh_from_db()
    assert pm.title == "Checkout pool exhausted"
    assert pm.severity == "sev2"
    assert pm.status == "draft"
    assert pm.written_on == dt.date(2026, 3, 14)
    assert pm.started_at == timezone.make_aware(dt.datetime(2026, 3, 13, 12, 2))
    assert pm.ended_at == timezone.make_aware(dt.datetime(2026, 3, 13, 12, 40))
    assert pm.team == team
    assert pm.services == ["checkout", "orders"]
    assert pm.is_private is True
    assert pm.created_by == engineer
    assert set(pm.authors.all()) == {engineer, other_engineer}
    assert [(i.label, i.value, i.unit, i.position) for i in pm.impacts.all()] == [
        ("failed requests", Decimal(270), "", 0),
        ("p95 latency", Decimal("6.5"), "s", 1),
    ]
    assert [(c.category, c.description) for c in pm.root_causes.all()] == [
        ("database", "A slow join on order_events.")
    ]
    assert [t.text for t in pm.timeline.all()] == ["p95 passes 2 s."]
    actions = list(pm.actions.all())
    assert [(a.number, a.kind, a.title, a.status) for a in actions] == [
        (1, "detect", "Alert on pool usage", "todo"),
        (2, "prevent", "Index order_events", "done"),
    ]
    assert actions[0].done_at is None
    assert actions[1].done_at is not None
    assert actions[1].due_date == dt.date(2026, 4, 1)
    history = {(h.subject, h.verb, h.actor_id) for h in pm.history.all()}
    assert history == {
        ("post-mortem", "created", engineer.pk),
        ("Action 1", "created", engineer.pk),
        ("Action 2", "created", engineer.pk),
    }
    assert pm.search_vector is not None


def test_it_saves_a_minimal_post_mortem(client, engineer):
    client.force_login(engineer)

    response = client.post(URL, postmortem_data(title="Just a title", summary=""))

    assert response.status_code == 302
    pm = PostMortem.objects.get()
    assert pm.title == "Just a title"
    assert not pm.impacts.exists() and not pm.actions.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"title": ""}, "This field is required."),
        ({"severity": "sev9"}, "Select a valid choice. sev9 is not one of the available choices."),
        (
            {"started_at": "2026-03-13T12:40", "ended_at": "2026-03-13T12:02"},
            "The incident cannot end before it starts.",
        ),
        (
            {"detected_at": "2026-03-13T11:00"},
            "This cannot be before the incident starts.",
        ),
        ({"started_at": "yesterday-ish"}, "Enter a valid date/time."),
    ],
    ids=["no-title", "bad-severity", "end-before-start", "detected-before-start", "bad-time"],
)
def test_it_rejects_an_invalid_post_mortem_and_saves_nothing(client, engineer, change, message):
    client.force_login(engineer)

    response = client.post(URL, complete_data(**change))

    assert response.status_code == 400
    html = response.content.decode()
    assert "Please correct the errors below. Nothing was saved." in html
    assert message in html
    # What was typed is still there.
    assert "A slow join on order_events." in html
    assert "Alert on pool usage" in html
    assert nothing_written()


@pytest.mark.parametrize(
    ("prefix", "row", "message"),
    [
        ("impacts", {"label": "", "value": "270"}, "This field is required."),
        ("impacts", {"label": "failed", "value": "lots"}, "Enter a number."),
        ("causes", {"category": "weather", "description": "x"}, "Select a valid choice."),
        ("timeline", {"occurred_at": "", "text": "p95 passes 2 s."}, "This field is required."),
        ("actions", {"kind": "prevent", "title": ""}, "This field is required."),
        ("actions", {"kind": "pray", "title": "Hope"}, "Select a valid choice."),
        (
            "actions",
            {"kind": "prevent", "title": "x", "ticket_url": "not a url"},
            "Enter a valid URL.",
        ),
    ],
)
def test_it_rejects_an_invalid_row_and_saves_nothing(client, engineer, prefix, row, message):
    client.force_login(engineer)
    data = complete_data()
    for name, value in row.items():
        data[f"{prefix}-0-{name}"] = value

    response = client.post(URL, data)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert nothing_written()


def test_it_rejects_a_tampered_management_form(client, engineer):
    client.force_login(engineer)
    data = complete_data()
    del data["actions-TOTAL_FORMS"]

    response = client.post(URL, data)

    assert response.status_code == 400
    assert "ManagementForm data is missing or has been tampered with" in response.content.decode()
    assert nothing_written()


def test_it_rejects_a_put(client, engineer):
    client.force_login(engineer)

    response = client.put(URL)

    assert response.status_code == 405


@pytest.mark.parametrize("role", ["viewer", "manager", "nobody"])
def test_it_forbids_anyone_but_an_engineer(request, db, client, role):
    client.force_login(request.getfixturevalue(role))

    assert client.get(URL).status_code == 403
    response = client.post(URL, complete_data())

    assert response.status_code == 403
    assert nothing_written()


def test_it_sends_an_anonymous_visitor_to_the_login_page(client, db):
    response = client.post(URL, complete_data())

    assert response.status_code == 302
    assert response.url == f"/login/?next={URL}"
    assert nothing_written()
