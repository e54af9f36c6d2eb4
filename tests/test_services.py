from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.contrib.postgres.search import SearchQuery
from django.db import IntegrityError
from django.utils import timezone

from postmortems import access, services
from postmortems.models import (
    Action,
    HistoryEntry,
    ImpactFigure,
    PostMortem,
    RootCause,
    Team,
)

from .conftest import make_content

STALE = "Someone else changed this post-mortem's status; reload the page."


def rows(pm: PostMortem) -> dict:
    """A post-mortem's children as plain rows that a PostMortemContent accepts back."""
    return {
        "impacts": [
            {"id": i.pk, "label": i.label, "value": i.value, "unit": i.unit, "window": i.window}
            for i in pm.impacts.all()
        ],
        "root_causes": [
            {"id": c.pk, "category": c.category, "description": c.description}
            for c in pm.root_causes.all()
        ],
        "timeline": [
            {"id": t.pk, "occurred_at": t.occurred_at, "text": t.text} for t in pm.timeline.all()
        ],
        "actions": [
            {"id": a.pk, **{name: getattr(a, name) for name in services.ACTION_FIELDS}}
            for a in pm.actions.all()
        ],
    }


def content_of(pm: PostMortem, **fields) -> services.PostMortemContent:
    values = {name: getattr(pm, name) for name in services.POSTMORTEM_FIELDS}
    values.update(fields)
    return services.PostMortemContent(fields=values, authors=list(pm.authors.all()), **rows(pm))


def search(text: str) -> list[int]:
    query = (
        SearchQuery(text, config="english", search_type="websearch")
        | SearchQuery(text, config="french", search_type="websearch")
        | SearchQuery(text, config="simple", search_type="websearch")
    )
    return list(PostMortem.objects.filter(search_vector=query).values_list("pk", flat=True))


# ----------------------------------------------------------- postmortem_save


def test_save_creates_a_post_mortem_with_its_rows_and_a_history_entry(engineer):
    content = make_content(severity="sev2")
    content.authors = [engineer]

    pm = services.postmortem_save(actor=engineer, content=content)

    pm.refresh_from_db()
    assert (pm.title, pm.severity, pm.status, pm.created_by) == (
        "Pool exhausted",
        "sev2",
        "draft",
        engineer,
    )
    assert list(pm.authors.all()) == [engineer]
    assert [(i.label, i.value, i.position) for i in pm.impacts.all()] == [
        ("failed requests", Decimal(270), 0)
    ]
    assert [a.number for a in pm.actions.all()] == [1, 2]
    assert {(h.subject, h.verb, h.actor_id) for h in pm.history.all()} == {
        ("post-mortem", "created", engineer.pk),
        ("Action 1", "created", engineer.pk),
        ("Action 2", "created", engineer.pk),
    }
    assert pm.search_vector is not None


def test_save_records_changed_fields_with_old_and_new_values(engineer, other_engineer):
    pm = services.postmortem_save(actor=engineer, content=make_content())
    team = Team.objects.create(name="Payments", slug="payments")

    services.postmortem_save(
        actor=other_engineer,
        postmortem=pm,
        content=content_of(
            pm, title="Checkout pool exhausted", severity="sev1", team=team, is_private=True
        ),
    )

    pm.refresh_from_db()
    assert (pm.title, pm.severity, pm.team, pm.is_private) == (
        "Checkout pool exhausted",
        "sev1",
        team,
        True,
    )
    entry = pm.history.get(verb="updated")
    assert entry.actor == other_engineer
    assert entry.subject == "post-mortem"
    assert entry.changes == [
        {"field": "title", "old": "Pool exhausted", "new": "Checkout pool exhausted"},
        {"field": "severity", "old": "sev3", "new": "sev1"},
        {"field": "team", "old": "", "new": "Payments"},
        {"field": "is_private", "old": "no", "new": "yes"},
    ]


def test_save_records_a_change_of_authors(engineer, other_engineer):
    content = make_content()
    content.authors = [engineer]
    pm = services.postmortem_save(actor=engineer, content=content)
    content = content_of(pm)
    content.authors = [engineer, other_engineer]

    services.postmortem_save(actor=engineer, postmortem=pm, content=content)

    assert set(pm.authors.all()) == {engineer, other_engineer}
    assert pm.history.get(verb="updated").changes == [
        {"field": "authors", "old": "emma", "new": "emma, karim"}
    ]


def test_save_writes_no_history_when_nothing_changed(engineer):
    pm = services.postmortem_save(actor=engineer, content=make_content())
    history = list(pm.history.values_list("pk", flat=True))
    updated_at = pm.updated_at

    services.postmortem_save(actor=engineer, postmortem=pm, content=content_of(pm))

    pm.refresh_from_db()
    assert list(pm.history.values_list("pk", flat=True)) == history
    assert pm.updated_at == updated_at


def test_save_adds_changes_and_removes_child_rows(engineer):
    content = make_content()
    content.impacts.append({"label": "p95", "value": Decimal(6), "unit": "s", "window": ""})
    pm = services.postmortem_save(actor=engineer, content=content)
    first, second = pm.impacts.all()
    content = content_of(pm)
    # Drop the first impact, change the second, add a new one, add a cause.
    content.impacts = [
        {**content.impacts[1], "value": Decimal(7)},
        {"label": "orders lost", "value": Decimal(12), "unit": "", "window": ""},
    ]
    content.root_causes.append({"category": "code", "description": "Retries."})

    services.postmortem_save(actor=engineer, postmortem=pm, content=content)

    assert not ImpactFigure.objects.filter(pk=first.pk).exists()
    assert [(i.pk, i.label, i.value, i.position) for i in pm.impacts.all()] == [
        (second.pk, "p95", Decimal(7), 0),
        (pm.impacts.get(label="orders lost").pk, "orders lost", Decimal(12), 1),
    ]
    assert [c.description for c in pm.root_causes.all()] == [
        "A slow join on order_events.",
        "Retries.",
    ]
    entries = {h.subject: h.changes[0]["new"] for h in pm.history.filter(verb="updated")}
    assert entries == {
        "impacts": "1 added, 1 changed, 1 removed",
        "root causes": "1 added, 0 changed, 0 removed",
    }


def test_save_ignores_a_row_id_of_another_post_mortem(engineer):
    pm = services.postmortem_save(actor=engineer, content=make_content())
    other = services.postmortem_save(actor=engineer, content=make_content(title="Other"))
    theirs = other.root_causes.get()
    content = content_of(pm)
    content.root_causes = [{"id": theirs.pk, "category": "", "description": "Mine now"}]

    services.postmortem_save(actor=engineer, postmortem=pm, content=content)

    theirs.refresh_from_db()
    assert (theirs.postmortem, theirs.description) == (other, "A slow join on order_events.")
    assert [c.description for c in pm.root_causes.all()] == ["Mine now"]


def test_save_numbers_new_actions_after_every_existing_one(engineer):
    pm = services.postmortem_save(actor=engineer, content=make_content())
    content = content_of(pm)
    removed = content.actions.pop()  # Action 2
    content.actions.append(
        {"kind": "repair", "title": "Restart", "status": "todo", "owner": None, "due_date": None}
    )

    services.postmortem_save(actor=engineer, postmortem=pm, content=content)

    # Number 2 is not reused: it still names the removed action in the history.
    assert [(a.number, a.title) for a in pm.actions.all()] == [
        (1, "Weekly load test"),
        (3, "Restart"),
    ]
    gone = pm.history.get(subject="Action 2", verb="removed")
    assert gone.changes == [{"field": "title", "old": removed["title"], "new": ""}]
    assert not Action.objects.filter(pk=removed["id"]).exists()
    assert pm.history.filter(subject="Action 3", verb="created").exists()
    # The removed action's earlier entries stay, detached from it.
    created = pm.history.get(subject="Action 2", verb="created")
    assert created.action is None


def test_save_records_action_changes_and_keeps_done_at_with_the_status(engineer, other_engineer):
    pm = services.postmortem_save(actor=engineer, content=make_content())
    content = content_of(pm)
    content.actions[0].update(status="done", owner=other_engineer)

    services.postmortem_save(actor=engineer, postmortem=pm, content=content)

    action = pm.actions.get(number=1)
    assert action.status == "done" and action.done_at is not None
    entry = pm.history.get(subject="Action 1", verb="updated")
    assert entry.action == action
    assert entry.changes == [
        {"field": "owner", "old": "", "new": "karim"},
        {"field": "status", "old": "todo", "new": "done"},
    ]
    done_at = action.done_at

    content = content_of(pm)
    content.actions[0]["title"] = "Weekly load test, at peak"
    services.postmortem_save(actor=engineer, postmortem=pm, content=content)
    action.refresh_from_db()
    assert action.done_at == done_at

    content = content_of(pm)
    content.actions[0]["status"] = "todo"
    services.postmortem_save(actor=engineer, postmortem=pm, content=content)
    action.refresh_from_db()
    assert action.done_at is None


def test_save_keeps_an_owner_name_the_row_does_not_mention(engineer, other_engineer):
    content = make_content()
    content.actions[0]["owner_name"] = "Jean Dupont"
    pm = services.postmortem_save(actor=engineer, content=content)
    assert pm.actions.get(number=1).owner_name == "Jean Dupont"
    content = content_of(pm)  # rows without owner_name, as the edit form sends them

    services.postmortem_save(actor=engineer, postmortem=pm, content=content)

    assert pm.actions.get(number=1).owner_name == "Jean Dupont"
    assert not pm.history.filter(verb="updated").exists()

    content = content_of(pm)
    content.actions[0]["owner"] = other_engineer
    services.postmortem_save(actor=engineer, postmortem=pm, content=content)
    action = pm.actions.get(number=1)
    assert (action.owner, action.owner_name) == (other_engineer, "")


def test_save_writes_nothing_when_the_database_refuses_part_of_it(engineer):
    pm = services.postmortem_save(actor=engineer, content=make_content())
    before = (rows(pm), list(pm.history.values_list("pk", flat=True)))
    content = content_of(pm, title="Changed", ended_at=pm.started_at - dt.timedelta(hours=1))
    content.impacts = []
    content.actions = []

    with pytest.raises(IntegrityError, match="postmortem_ends_after_start"):
        services.postmortem_save(actor=engineer, postmortem=pm, content=content)

    pm.refresh_from_db()
    assert pm.title == "Pool exhausted"
    assert (rows(pm), list(pm.history.values_list("pk", flat=True))) == before


def test_save_uses_the_verb_it_is_given(engineer):
    pm = services.postmortem_save(actor=None, content=make_content(), verb="imported")

    entry = pm.history.get(subject="post-mortem")
    assert (entry.verb, entry.actor) == ("imported", None)


# ----------------------------------------------------- postmortem_transition


def test_transition_moves_through_the_workflow_and_records_it(engineer, manager):
    pm = services.postmortem_save(actor=engineer, content=make_content())

    pm = services.postmortem_transition(postmortem=pm, actor=engineer, to="in_review")
    assert (pm.status, pm.published_at) == ("in_review", None)
    pm = services.postmortem_transition(postmortem=pm, actor=manager, to="published")
    assert pm.status == "published" and pm.published_at is not None
    pm = services.postmortem_transition(postmortem=pm, actor=engineer, to="draft")
    assert (pm.status, pm.published_at) == ("draft", None)

    entries = pm.history.filter(verb="status").order_by("id")
    assert [(h.actor, h.changes[0]["old"], h.changes[0]["new"]) for h in entries] == [
        (engineer, "draft", "in_review"),
        (manager, "in_review", "published"),
        (engineer, "published", "draft"),
    ]


@pytest.mark.parametrize(
    ("start", "to", "message"),
    [
        ("draft", "published", "A post-mortem cannot go from Draft to Published."),
        ("draft", "draft", "A post-mortem cannot go from Draft to Draft."),
        ("published", "in_review", "A post-mortem cannot go from Published to In review."),
        ("draft", "archived", "A post-mortem cannot go from Draft to archived."),
    ],
)
def test_transition_refuses_what_the_workflow_does_not_allow(engineer, start, to, message):
    pm = services.postmortem_save(actor=engineer, content=make_content())
    PostMortem.objects.filter(pk=pm.pk).update(
        status=start, published_at=timezone.now() if start == "published" else None
    )
    pm.refresh_from_db()

    with pytest.raises(services.TransitionError) as error:
        services.postmortem_transition(postmortem=pm, actor=engineer, to=to)

    assert str(error.value) == message
    pm.refresh_from_db()
    assert pm.status == start
    assert not pm.history.filter(verb="status").exists()


def test_transition_refuses_to_publish_an_incomplete_post_mortem(engineer):
    pm = services.postmortem_save(actor=engineer, content=make_content(severity="sev1"))
    pm = services.postmortem_transition(postmortem=pm, actor=engineer, to="in_review")
    pm.actions.filter(kind="detect").update(status="wont_do")
    RootCause.objects.filter(postmortem=pm).delete()

    with pytest.raises(services.TransitionError) as error:
        services.postmortem_transition(postmortem=pm, actor=engineer, to="published")

    assert str(error.value) == (
        "This post-mortem cannot be published yet. Missing: At least one root cause; "
        "A detect action (SEV1/SEV2)."
    )
    pm.refresh_from_db()
    assert (pm.status, pm.published_at) == ("in_review", None)


@pytest.mark.parametrize(
    ("seen", "meanwhile", "to"),
    [
        # Someone published it; the stale "back to draft" must not unpublish it.
        ("in_review", "published", "draft"),
        # Someone sent it to review already; the second click is not a no-op success.
        ("draft", "in_review", "in_review"),
        # Someone took it back to draft; publishing from the stale page is refused.
        ("in_review", "draft", "published"),
    ],
)
def test_transition_refuses_a_move_that_lost_a_race(engineer, seen, meanwhile, to):
    pm = services.postmortem_save(actor=engineer, content=make_content())
    PostMortem.objects.filter(pk=pm.pk).update(status=seen)
    fetched = PostMortem.objects.get(pk=pm.pk)
    # Another request changes the status between this fetch and the call.
    PostMortem.objects.filter(pk=pm.pk).update(
        status=meanwhile, published_at=timezone.now() if meanwhile == "published" else None
    )

    with pytest.raises(services.TransitionError) as error:
        services.postmortem_transition(postmortem=fetched, actor=engineer, to=to)

    assert str(error.value) == STALE
    pm.refresh_from_db()
    assert pm.status == meanwhile
    assert not pm.history.filter(verb="status").exists()


# -------------------------------------------------------------- action_update


def test_action_update_changes_status_owner_and_due_date(engineer, manager):
    pm = services.postmortem_save(actor=engineer, content=make_content())
    action = pm.actions.get(number=1)
    Action.objects.filter(pk=action.pk).update(owner_name="Emma M.")

    updated = services.action_update(
        action=action, actor=manager, status="done", owner=engineer, due_date=dt.date(2026, 5, 1)
    )

    action.refresh_from_db()
    assert updated == action
    assert (action.status, action.owner, action.owner_name, action.due_date) == (
        "done",
        engineer,
        "",
        dt.date(2026, 5, 1),
    )
    assert action.done_at is not None
    entry = HistoryEntry.objects.get(action=action, verb="updated")
    assert (entry.actor, entry.subject) == (manager, "Action 1")
    assert entry.changes == [
        {"field": "status", "old": "todo", "new": "done"},
        {"field": "owner", "old": "", "new": "emma"},
        {"field": "owner_name", "old": "Emma M.", "new": ""},
        {"field": "due_date", "old": "", "new": "2026-05-01"},
    ]


def test_action_update_keeps_done_at_while_done_and_clears_it_otherwise(engineer, manager):
    pm = services.postmortem_save(actor=engineer, content=make_content())
    action = services.action_update(
        action=pm.actions.get(number=1), actor=manager, status="done", owner=None, due_date=None
    )
    done_at = action.done_at

    action = services.action_update(
        action=action, actor=manager, status="done", owner=engineer, due_date=None
    )
    assert action.done_at == done_at

    action = services.action_update(
        action=action, actor=manager, status="wont_do", owner=engineer, due_date=None
    )
    assert action.done_at is None


def test_action_update_writes_nothing_when_nothing_changed(engineer, manager):
    pm = services.postmortem_save(actor=engineer, content=make_content())
    action = pm.actions.get(number=1)
    updated_at = action.updated_at

    services.action_update(action=action, actor=manager, status="todo", owner=None, due_date=None)

    action.refresh_from_db()
    assert action.updated_at == updated_at
    assert not HistoryEntry.objects.filter(action=action, verb="updated").exists()


# ---------------------------------------------------------- reindex / search


def test_reindex_covers_title_summary_root_causes_and_actions(engineer):
    pm = services.postmortem_save(
        actor=engineer,
        content=make_content(title="Redis eviction storm", summary="Keys vanished."),
    )
    services.postmortem_save(
        actor=engineer, content=make_content(title="Disk full", summary="Logs grew.")
    )

    assert search("evictions") == [pm.pk]
    assert search("vanishing") == [pm.pk]
    # From the root cause and the actions make_content gives both.
    assert len(search("slow join")) == 2
    assert len(search("weekly load")) == 2


def test_reindex_stems_french_text(engineer):
    pm = services.postmortem_save(
        actor=engineer,
        content=make_content(title="Panne du paiement", summary="Les connexions sont épuisées."),
    )

    assert search("épuisement") == [pm.pk]
    assert search("connexion") == [pm.pk]


def test_reindex_replaces_the_old_text(engineer):
    pm = services.postmortem_save(actor=engineer, content=make_content(title="Redis eviction"))
    PostMortem.objects.filter(pk=pm.pk).update(title="Kafka lag")
    Action.objects.filter(postmortem=pm, number=1).update(title="Partition rebalance alert")
    assert search("kafka") == []

    services.postmortem_reindex(postmortem_id=pm.pk)

    assert search("kafka") == [pm.pk]
    assert search("partitioning") == [pm.pk]
    assert search("eviction") == []


# -------------------------------------------------------- Action.is_overdue


@pytest.mark.parametrize(
    ("days", "status", "overdue"),
    [
        (-1, "todo", True),
        (-30, "in_progress", True),
        (-1, "to_debate", True),
        (0, "todo", False),
        (1, "todo", False),
        (-1, "done", False),
        (-1, "wont_do", False),
        (None, "todo", False),
    ],
)
def test_an_action_is_overdue_only_when_open_and_past_its_due_date(days, status, overdue):
    due = None if days is None else timezone.localdate() + dt.timedelta(days=days)

    assert Action(due_date=due, status=status).is_overdue is overdue


# --------------------------------------------------- PostMortem.publish_checklist


def test_the_checklist_of_a_complete_sev3_has_four_items_all_met(engineer):
    pm = services.postmortem_save(actor=engineer, content=make_content())

    assert pm.publish_checklist() == [
        ("A summary", True),
        ("At least one quantified impact", True),
        ("At least one root cause", True),
        ("At least one action", True),
    ]
    assert pm.missing_for_publication() == []


@pytest.mark.parametrize("severity", ["sev1", "sev2"])
def test_the_checklist_of_a_sev1_or_sev2_asks_for_detect_and_prevent_actions(engineer, severity):
    content = make_content(severity=severity, summary=" \n ")
    content.impacts = []
    content.actions = [
        {**content.actions[0], "kind": "repair"},
        {**content.actions[1], "status": "wont_do"},
    ]
    pm = services.postmortem_save(actor=engineer, content=content)

    assert pm.publish_checklist() == [
        ("A summary", False),
        ("At least one quantified impact", False),
        ("At least one root cause", True),
        ("At least one action", True),
        ("A detect action (SEV1/SEV2)", False),
        ("A prevent action (SEV1/SEV2)", False),
    ]


def test_the_checklist_counts_a_done_action_but_not_a_wont_do_one(engineer):
    content = make_content(severity="sev1")
    content.actions[0]["status"] = "done"
    content.actions[1]["status"] = "wont_do"
    pm = services.postmortem_save(actor=engineer, content=content)

    assert pm.missing_for_publication() == ["A prevent action (SEV1/SEV2)"]


# -------------------------------------------------- access.visible_postmortems


def test_visible_post_mortems_follow_roles_authors_teams_and_privacy(
    engineer, other_engineer, manager, viewer, nobody, make_postmortem
):
    team = Team.objects.create(name="Payments", slug="payments")
    team.members.add(viewer)
    public = make_postmortem(actor=engineer, title="public")
    created = make_postmortem(actor=engineer, is_private=True, title="created")
    authored = make_postmortem(authors=[other_engineer], is_private=True, title="authored")
    teamed = make_postmortem(team=team, is_private=True, title="team")
    hidden = make_postmortem(is_private=True, title="nobody's")
    admin = User.objects.create_superuser("root", password="x" * 20)

    def visible(user) -> set[str]:
        return set(access.visible_postmortems(user).values_list("title", flat=True))

    everything = {pm.title for pm in (public, created, authored, teamed, hidden)}
    assert visible(manager) == everything
    assert visible(admin) == everything
    assert visible(engineer) == {"public", "created"}
    assert visible(other_engineer) == {"public", "authored"}
    assert visible(viewer) == {"public", "team"}
    assert visible(nobody) == set()
    # Several authors and team members never duplicate a row.
    authored.authors.add(engineer, viewer)
    team.members.add(other_engineer)
    assert access.visible_postmortems(viewer).count() == 3
    assert access.visible_postmortems(other_engineer).count() == 3
