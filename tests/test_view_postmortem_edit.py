from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse

from postmortems import services
from postmortems.models import Action, HistoryEntry, PostMortem

from .formdata import action_row, edit_data


def url(pm: PostMortem) -> str:
    return reverse("postmortems:edit", args=[pm.pk])


def snapshot(pm: PostMortem) -> dict:
    """Everything the edit page can change, to compare before and after."""
    pm = PostMortem.objects.get(pk=pm.pk)
    return {
        "fields": {name: getattr(pm, name) for name in services.POSTMORTEM_FIELDS},
        "authors": sorted(pm.authors.values_list("pk", flat=True)),
        "impacts": list(pm.impacts.values()),
        "root_causes": list(pm.root_causes.values()),
        "timeline": list(pm.timeline.values()),
        "actions": list(pm.actions.values()),
        "history": list(pm.history.values_list("pk", flat=True)),
    }


def test_it_shows_the_post_mortem_in_the_form(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer)
    client.force_login(engineer)

    response = client.get(url(pm))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'value="Pool exhausted"' in html
    assert 'name="impacts-INITIAL_FORMS" value="1"' in html
    assert 'name="causes-INITIAL_FORMS" value="1"' in html
    assert 'name="timeline-INITIAL_FORMS" value="1"' in html
    assert 'name="actions-INITIAL_FORMS" value="2"' in html
    # The existing rows plus one blank row each.
    assert 'name="actions-TOTAL_FORMS" value="3"' in html
    assert f'name="actions-0-id" value="{pm.actions.get(number=1).pk}"' in html


def test_it_keeps_a_constant_number_of_queries_however_many_actions(
    client, engineer, make_postmortem, django_assert_num_queries
):
    few = make_postmortem(actor=engineer)
    many = make_postmortem(actor=engineer)
    Action.objects.bulk_create(
        Action(postmortem=many, number=10 + n, kind="repair", title=f"action {n}", owner=engineer)
        for n in range(30)
    )
    client.force_login(engineer)

    # session, user, groups, the post-mortem, its 6 prefetches (authors,
    # impacts, root causes, timeline, other sections, actions with owners),
    # then the <select>s: authors, team, and one owner list for every action row.
    with django_assert_num_queries(13):
        assert client.get(url(few)).status_code == 200
    with django_assert_num_queries(13):
        response = client.get(url(many))

    assert 'name="actions-INITIAL_FORMS" value="32"' in response.content.decode()


def test_it_saves_changed_added_and_removed_rows_and_records_them(
    client, engineer, make_postmortem, django_assert_num_queries
):
    pm = make_postmortem(actor=engineer)
    impact = pm.impacts.get()
    kept, removed = pm.actions.all()
    client.force_login(engineer)
    data = edit_data(pm, title="Checkout pool exhausted")
    data["impacts-0-value"] = "1904"
    data.update(
        {
            "causes-TOTAL_FORMS": "2",
            "causes-1-category": "code",
            "causes-1-description": "Retries without backoff.",
            "actions-1-DELETE": "on",
            "actions-TOTAL_FORMS": "3",
            **{f"actions-2-{k}": v for k, v in action_row(kind="detect", title="Alert").items()},
        }
    )

    # session, user, groups, the post-mortem and its 6 prefetches (10);
    # validation: SAVEPOINT + the end-after-start check + RELEASE (3); the save:
    # SAVEPOINT, SELECT FOR UPDATE, the old authors, UPDATE post-mortem, authors
    # SELECT (5); impacts SELECT + UPDATE, root causes SELECT + INSERT, timeline
    # SELECT (5); actions: SELECT, INSERT the new one, DELETE the removed one:
    # its history SET NULL, its links to scenarios and to perf runs, its
    # verification criterion, then the action (7); bulk INSERT history (1);
    # reindex (4); refresh, RELEASE (2).
    with django_assert_num_queries(37):
        response = client.post(url(pm), data)

    assert response.status_code == 302
    assert response.url == reverse("postmortems:detail", args=[pm.pk])
    pm.refresh_from_db()
    impact.refresh_from_db()
    assert pm.title == "Checkout pool exhausted"
    assert impact.value == Decimal(1904)
    assert [c.description for c in pm.root_causes.all()] == [
        "A slow join on order_events.",
        "Retries without backoff.",
    ]
    assert [(a.number, a.title) for a in pm.actions.all()] == [
        (1, kept.title),
        (3, "Alert"),
    ]
    assert not Action.objects.filter(pk=removed.pk).exists()
    entries = HistoryEntry.objects.filter(postmortem=pm, actor=engineer).exclude(verb="created")
    assert {(h.subject, h.verb) for h in entries} == {
        ("post-mortem", "updated"),
        ("impacts", "updated"),
        ("root causes", "updated"),
        ("Action 2", "removed"),
    }
    assert entries.get(subject="post-mortem").changes == [
        {"field": "title", "old": "Pool exhausted", "new": "Checkout pool exhausted"}
    ]
    assert entries.get(subject="impacts").changes[0]["new"] == "0 added, 1 changed, 0 removed"
    assert entries.get(subject="root causes").changes[0]["new"] == "1 added, 0 changed, 0 removed"
    assert pm.history.filter(subject="Action 3", verb="created", actor=engineer).exists()


def test_it_writes_nothing_when_nothing_changed(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer, authors=[engineer])
    before = snapshot(pm)
    client.force_login(engineer)

    response = client.post(url(pm), edit_data(pm))

    assert response.status_code == 302
    after = snapshot(pm)
    assert after == before


def test_it_keeps_an_imported_owner_without_an_account(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer)
    Action.objects.filter(postmortem=pm, number=1).update(owner_name="Jean Dupont")
    before = snapshot(pm)
    client.force_login(engineer)

    # The form has no field for a name without an account: saving it unchanged
    # must not erase the name.
    response = client.post(url(pm), edit_data(pm))

    assert response.status_code == 302
    assert pm.actions.get(number=1).owner_name == "Jean Dupont"
    assert snapshot(pm) == before


def test_it_replaces_an_imported_owner_name_when_an_owner_is_chosen(
    client, engineer, other_engineer, make_postmortem
):
    pm = make_postmortem(actor=engineer)
    Action.objects.filter(postmortem=pm, number=1).update(owner_name="Karim H.")
    client.force_login(engineer)
    data = edit_data(pm)
    data["actions-0-owner"] = other_engineer.pk

    client.post(url(pm), data)

    action = pm.actions.get(number=1)
    assert (action.owner, action.owner_name) == (other_engineer, "")
    entry = pm.history.get(subject="Action 1", verb="updated")
    assert {c["field"] for c in entry.changes} == {"owner", "owner_name"}


def test_it_sets_and_clears_done_at_with_the_action_status(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer)
    client.force_login(engineer)
    data = edit_data(pm)
    data["actions-0-status"] = "done"

    client.post(url(pm), data)
    action = pm.actions.get(number=1)
    assert action.status == "done" and action.done_at is not None

    data = edit_data(pm)
    data["actions-0-status"] = "in_progress"
    client.post(url(pm), data)
    action.refresh_from_db()
    assert action.status == "in_progress" and action.done_at is None


def test_it_rejects_invalid_changes_and_writes_nothing(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer)
    before = snapshot(pm)
    client.force_login(engineer)
    data = edit_data(pm, title="A new title", summary="A new summary")
    data["impacts-0-label"] = "a new label"
    data["actions-1-DELETE"] = "on"
    data["timeline-0-occurred_at"] = "not a time"

    response = client.post(url(pm), data)

    assert response.status_code == 400
    html = response.content.decode()
    assert "Please correct the errors below. Nothing was saved." in html
    assert "Enter a valid date/time." in html
    # What was typed is kept in the form.
    assert 'value="A new title"' in html and "a new label" in html
    assert snapshot(pm) == before


def test_it_does_not_let_a_row_id_reach_another_post_mortem(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer)
    other = make_postmortem(actor=engineer, title="Other incident")
    theirs = other.impacts.get()
    before = snapshot(other)
    client.force_login(engineer)
    data = edit_data(pm)
    data["impacts-0-id"] = theirs.pk
    data["impacts-0-label"] = "hijacked"

    client.post(url(pm), data)

    assert snapshot(other) == before
    # The row is taken as a new one of this post-mortem.
    assert [i.label for i in pm.impacts.all()] == ["hijacked"]


def test_it_rejects_a_delete_request(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer)
    client.force_login(engineer)

    response = client.delete(url(pm))

    assert response.status_code == 405
    assert PostMortem.objects.filter(pk=pm.pk).exists()


@pytest.mark.parametrize("role", ["viewer", "manager", "nobody"])
def test_it_forbids_anyone_but_an_engineer(request, client, engineer, make_postmortem, role):
    pm = make_postmortem(actor=engineer)
    before = snapshot(pm)
    client.force_login(request.getfixturevalue(role))

    assert client.get(url(pm)).status_code == 403
    response = client.post(url(pm), edit_data(pm, title="Vandalised"))

    assert response.status_code == 403
    assert snapshot(pm) == before


def test_it_hides_a_private_post_mortem_from_another_engineer(
    client, engineer, other_engineer, make_postmortem
):
    pm = make_postmortem(actor=engineer, authors=[engineer], is_private=True)
    before = snapshot(pm)
    client.force_login(other_engineer)

    assert client.get(url(pm)).status_code == 404
    response = client.post(url(pm), edit_data(pm, title="Vandalised"))

    assert response.status_code == 404
    assert snapshot(pm) == before


def test_it_lets_a_team_member_edit_a_private_post_mortem(
    client, engineer, other_engineer, make_postmortem
):
    from postmortems.models import Team

    team = Team.objects.create(name="Payments", slug="payments")
    team.members.add(other_engineer)
    pm = make_postmortem(actor=engineer, team=team, is_private=True)
    client.force_login(other_engineer)

    response = client.post(url(pm), edit_data(pm, written_on=dt.date(2026, 3, 20)))

    assert response.status_code == 302
    pm.refresh_from_db()
    assert pm.written_on == dt.date(2026, 3, 20)
    assert pm.history.get(verb="updated").actor == other_engineer


def test_it_sends_an_anonymous_visitor_to_the_login_page(client, make_postmortem):
    pm = make_postmortem()
    before = snapshot(pm)

    response = client.post(url(pm), edit_data(pm, title="Vandalised"))

    assert response.status_code == 302
    assert response.url == f"/login/?next={url(pm)}"
    assert snapshot(pm) == before
