from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from postmortems.models import Action, HistoryEntry, PostMortem


def url(action: Action) -> str:
    return reverse("postmortems:action", args=[action.postmortem_id, action.pk])


def form(action: Action, *, status: str, owner=None, due_date: str = "") -> dict[str, object]:
    prefix = f"a{action.pk}"
    return {
        f"{prefix}-status": status,
        f"{prefix}-owner": owner.pk if owner else "",
        f"{prefix}-due_date": due_date,
    }


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def state(action: Action) -> tuple:
    action = Action.objects.get(pk=action.pk)
    return (action.status, action.owner_id, action.owner_name, action.due_date, action.done_at)


@pytest.fixture
def action(make_postmortem, engineer) -> Action:
    return make_postmortem(actor=engineer).actions.get(number=2)


def test_a_manager_marks_an_action_done_with_an_owner_and_a_due_date(
    client, manager, engineer, action, django_assert_num_queries
):
    client.force_login(manager)

    # session, user, groups, the visible post-mortem, the action (5); the form
    # looks up the owner, then the model checks it exists (2); the service:
    # SAVEPOINT, SELECT FOR UPDATE, conditional UPDATE, INSERT history,
    # refresh, RELEASE (6). The action had no owner, so the diff reads none.
    with django_assert_num_queries(13):
        response = client.post(
            url(action), form(action, status="done", owner=engineer, due_date="2026-04-30")
        )

    assert response.status_code == 302
    assert response.url == reverse("postmortems:detail", args=[action.postmortem_id]) + "#action-2"
    assert messages_of(response) == [("success", "Action 2 updated.")]
    action.refresh_from_db()
    assert action.status == "done"
    assert action.owner == engineer
    assert action.due_date == dt.date(2026, 4, 30)
    assert action.done_at is not None
    entry = HistoryEntry.objects.get(action=action, verb="updated")
    assert entry.actor == manager
    assert entry.subject == "Action 2"
    assert entry.changes == [
        {"field": "status", "old": "todo", "new": "done"},
        {"field": "owner", "old": "", "new": "emma"},
        {"field": "due_date", "old": "", "new": "2026-04-30"},
    ]


def test_it_keeps_done_at_while_done_and_clears_it_when_reopened(client, manager, action):
    client.force_login(manager)
    client.post(url(action), form(action, status="done"))
    action.refresh_from_db()
    done_at = action.done_at
    assert done_at is not None

    client.post(url(action), form(action, status="done", due_date="2026-05-01"))
    action.refresh_from_db()
    assert action.done_at == done_at
    assert action.due_date == dt.date(2026, 5, 1)

    client.post(url(action), form(action, status="in_progress", due_date="2026-05-01"))
    action.refresh_from_db()
    assert action.status == "in_progress"
    assert action.done_at is None


def test_it_replaces_an_imported_owner_name_by_an_account(client, manager, engineer, action):
    Action.objects.filter(pk=action.pk).update(owner_name="Emma M.")
    client.force_login(manager)

    client.post(url(action), form(action, status="todo", owner=engineer))

    action.refresh_from_db()
    assert (action.owner, action.owner_name) == (engineer, "")


def test_it_writes_no_history_when_nothing_changed(client, manager, action):
    client.force_login(manager)
    before = state(action)

    response = client.post(url(action), form(action, status="todo"))

    assert response.status_code == 302
    assert state(action) == before
    assert not HistoryEntry.objects.filter(action=action, verb="updated").exists()


def test_an_engineer_may_change_an_action_too(client, other_engineer, action):
    client.force_login(other_engineer)

    client.post(url(action), form(action, status="to_debate"))

    action.refresh_from_db()
    assert action.status == "to_debate"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"status": "finished"},
            "Action 2 was not changed: Status: Select a valid choice. finished is not one of "
            "the available choices.",
        ),
        (
            {"status": "done", "due_date": "next week"},
            "Action 2 was not changed: Due date: Enter a valid date.",
        ),
    ],
)
def test_it_explains_an_invalid_change_and_changes_nothing(
    client, manager, action, values, message
):
    client.force_login(manager)
    before = state(action)

    response = client.post(url(action), form(action, **values))

    assert response.status_code == 302
    assert messages_of(response) == [("error", message)]
    assert state(action) == before
    assert not HistoryEntry.objects.filter(action=action, verb="updated").exists()


def test_it_rejects_an_unknown_owner(client, manager, action):
    client.force_login(manager)
    before = state(action)
    data = form(action, status="todo")
    data[f"a{action.pk}-owner"] = "999999"

    response = client.post(url(action), data)

    assert messages_of(response)[0][1].startswith("Action 2 was not changed: Owner: ")
    assert state(action) == before


def test_it_rejects_a_get(client, manager, action):
    client.force_login(manager)

    response = client.get(url(action))

    assert response.status_code == 405


@pytest.mark.parametrize("role", ["viewer", "nobody"])
def test_it_forbids_readers_and_users_without_a_role(request, client, action, role):
    client.force_login(request.getfixturevalue(role))
    before = state(action)

    response = client.post(url(action), form(action, status="done"))

    assert response.status_code == 403
    assert state(action) == before


def test_it_hides_a_private_post_mortem_from_another_engineer(
    client, engineer, other_engineer, make_postmortem
):
    pm = make_postmortem(actor=engineer, authors=[engineer], is_private=True)
    action = pm.actions.get(number=1)
    before = state(action)
    client.force_login(other_engineer)

    response = client.post(url(action), form(action, status="done"))

    assert response.status_code == 404
    assert state(action) == before


def test_it_lets_a_manager_change_a_private_post_mortems_action(
    client, engineer, manager, make_postmortem
):
    pm = make_postmortem(actor=engineer, authors=[engineer], is_private=True)
    action = pm.actions.get(number=1)
    client.force_login(manager)

    client.post(url(action), form(action, status="wont_do"))

    action.refresh_from_db()
    assert action.status == "wont_do"


def test_it_refuses_an_action_of_another_post_mortem(client, manager, action, make_postmortem):
    other = make_postmortem(title="Other")
    before = state(action)
    client.force_login(manager)

    response = client.post(
        reverse("postmortems:action", args=[other.pk, action.pk]), form(action, status="done")
    )

    assert response.status_code == 404
    assert state(action) == before


def test_it_sends_an_anonymous_visitor_to_the_login_page(client, action):
    before = state(action)

    response = client.post(url(action), form(action, status="done"))

    assert response.status_code == 302
    assert response.url == f"/login/?next={url(action)}"
    assert state(action) == before
    assert PostMortem.objects.count() == 1


def test_it_refuses_a_change_made_on_a_stale_page(client, manager, action):
    # The manager's page showed "to do"; meanwhile someone marked it done.
    Action.objects.filter(pk=action.pk).update(status="done", done_at=action.created_at)
    client.force_login(manager)
    data = form(action, status="wont_do")
    data[f"a{action.pk}-seen_status"] = "todo"

    response = client.post(url(action), data)

    assert response.status_code == 302
    assert messages_of(response) == [
        ("error", "Someone else changed this action; reload the page.")
    ]
    assert Action.objects.get(pk=action.pk).status == "done"


def test_the_detail_page_carries_the_status_it_showed(client, manager, action):
    client.force_login(manager)
    page = client.get(reverse("postmortems:detail", args=[action.postmortem_id]))
    assert (
        f'<input type="hidden" name="a{action.pk}-seen_status" value="todo"'
        in page.content.decode()
    )
