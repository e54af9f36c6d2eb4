"""The actions overview: every visible action with its status and its proof, counted by
state, for the managers who review them."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.urls import reverse
from django.utils import timezone

from perfruns.models import (
    PerfRun,
    RunStatus,
    RunTrigger,
    VerificationCriterion,
)
from postmortems.models import Action, ActionStatus, Team

ACTIONS = reverse("postmortems:actions")


pytestmark = pytest.mark.scenario(name="advisors", locustfile_path="x.py")


def set_status(action: Action, status: str, **fields) -> None:
    done_at = timezone.now() if status == ActionStatus.DONE else None
    Action.objects.filter(pk=action.pk).update(status=status, done_at=done_at, **fields)


def prove(action: Action, scenario, state: str) -> PerfRun:
    run = PerfRun.objects.create(
        scenario=scenario, environment=scenario.environment, trigger=RunTrigger.SCHEDULE,
        status=RunStatus.PASSED,
    )  # fmt: skip
    VerificationCriterion.objects.create(
        action=action, scenario=scenario, metric="p95_ms", value=500, state=state, state_run=run
    )
    return run


@pytest.fixture
def actions(make_postmortem, engineer, scenario):
    """Five actions: verified, done without proof, regressed, overdue, and a private one's."""
    team = Team.objects.create(name="Platform", slug="platform")
    pool = make_postmortem(actor=engineer, title="Pool exhausted", team=team)
    leak = make_postmortem(actor=engineer, title="Indexer leak")
    hidden = make_postmortem(title="Private incident", is_private=True)
    verified, unproven = pool.actions.order_by("number")
    regressed, overdue = leak.actions.order_by("number")
    set_status(verified, ActionStatus.DONE)
    set_status(unproven, ActionStatus.DONE)
    set_status(regressed, ActionStatus.IN_PROGRESS)
    set_status(overdue, ActionStatus.TODO, due_date=timezone.localdate() - dt.timedelta(days=3))
    run = prove(verified, scenario, "verified")
    prove(regressed, scenario, "regressed")
    return {
        "verified": verified, "unproven": unproven, "regressed": regressed, "overdue": overdue,
        "hidden": hidden.actions.first(), "run": run, "team": team,
    }  # fmt: skip


def link(action: Action) -> str:
    return f'href="/postmortems/{action.postmortem_id}/#action-{action.number}"'


def row_of(html: str, action: Action) -> str:
    return html.split(link(action))[1].split("</tr>")[0]


def test_a_viewer_sees_every_visible_action_with_its_proof_and_the_counts(
    client, viewer, actions, django_assert_num_queries
):
    client.force_login(viewer)

    # session, user, groups, the counts, the page's count, the teams and the owners of the
    # filter, the page's actions in order, then those with their post-mortems, teams,
    # owners and proofs
    with django_assert_num_queries(9):
        response = client.get(ACTIONS)

    html = response.content.decode()
    assert response.status_code == 200
    assert "Private incident" not in html
    assert "verification-verified" in row_of(html, actions["verified"])
    assert f'href="/perf/runs/{actions["run"].pk}/"' in row_of(html, actions["verified"])
    assert "no proof asked" in row_of(html, actions["unproven"])
    assert "verification-regressed" in row_of(html, actions["regressed"])
    assert "overdue" in row_of(html, actions["overdue"])
    # Open work first, the overdue one before the undated one; done work after.
    order = [html.index(link(actions[n])) for n in ("overdue", "regressed", "verified")]
    assert order == sorted(order)
    counts = html.split('<ul class="counts">')[1].split("</ul>")[0]
    expected = {"open": 2, "overdue": 1, "done, not verified": 1, "verified": 1,
                "failed verification": 0, "regressed": 1}  # fmt: skip
    for label, number in expected.items():
        assert f"<strong>{number}</strong> {label}<" in counts


@pytest.mark.parametrize(
    ("state", "shown"),
    [("verified", ["verified"]), ("done_unverified", ["unproven"]),
     ("regressed", ["regressed"]), ("overdue", ["overdue"]),
     ("open", ["regressed", "overdue"])],
)  # fmt: skip
def test_the_state_filter_keeps_only_those_actions(client, manager, actions, state, shown):
    client.force_login(manager)

    html = client.get(ACTIONS, {"state": state}).content.decode()

    for name in ("verified", "unproven", "regressed", "overdue"):
        assert (link(actions[name]) in html) == (name in shown), name


def test_the_team_filter_counts_only_its_actions(client, manager, actions):
    client.force_login(manager)

    html = client.get(ACTIONS, {"team": actions["team"].pk}).content.decode()

    assert "Pool exhausted" in html and "Indexer leak" not in html
    assert "<strong>0</strong> regressed<" in html


def test_a_bad_filter_is_named_and_a_person_without_a_role_is_refused(client, viewer, nobody, db):
    client.force_login(viewer)
    html = client.get(ACTIONS, {"state": "lost"}).content.decode()
    assert "Select a valid choice. lost is not one of the available choices." in html
    assert client.post(ACTIONS).status_code == 405
    client.force_login(nobody)
    assert client.get(ACTIONS).status_code == 403


def test_every_filter_applies_at_once(client, manager, actions, engineer):
    Action.objects.filter(pk=actions["overdue"].pk).update(owner=engineer)
    client.force_login(manager)
    due = Action.objects.get(pk=actions["overdue"].pk).due_date

    html = client.get(
        ACTIONS,
        {"owner": engineer.pk, "kind": actions["overdue"].kind, "severity": "sev3",
         "status": "todo", "due_from": due.isoformat(), "due_until": due.isoformat()},
    ).content.decode()  # fmt: skip

    assert link(actions["overdue"]) in html
    # Its owner is the one selected in its row's change form.
    assert f"<option value={engineer.pk} selected>Emma Martin</option>" in html
    for name in ("verified", "unproven", "regressed"):
        assert link(actions[name]) not in html, name
    html = client.get(ACTIONS, {"owner": engineer.pk, "status": "done"}).content.decode()
    assert "No action matches." in html


def test_a_due_range_that_ends_before_it_starts_is_named(client, manager, db):
    client.force_login(manager)

    html = client.get(ACTIONS, {"due_from": "2026-05-01", "due_until": "2026-04-01"})

    assert "Due until: The end of the due range is before its start." in html.content.decode()


def test_the_filtered_list_downloads_as_csv_with_every_row(client, viewer, actions):
    Action.objects.filter(pk=actions["overdue"].pk).update(title="=HYPERLINK(evil)")
    client.force_login(viewer)

    response = client.get(ACTIONS, {"state": "open", "format": "csv"})

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0][:6] == ["Post-mortem", "Severity", "Team", "Action", "Kind", "Title"]
    titles = sorted(row[5] for row in rows[1:])
    # The open ones only; a formula is written as text, never run by a spreadsheet.
    assert titles == sorted(["'=HYPERLINK(evil)", actions["regressed"].title])
    assert "Private incident" not in response.content.decode()


def test_a_manager_changes_owner_and_due_date_from_the_list_and_it_is_in_the_history(
    client, manager, engineer, actions
):
    action = actions["overdue"]
    client.force_login(manager)
    back = f"{ACTIONS}?state=overdue"
    html = client.get(back).content.decode()
    assert f'form="manage-{action.pk}"' in html

    response = client.post(
        reverse("postmortems:action", args=[action.postmortem_id, action.pk]),
        {f"a{action.pk}-status": "in_progress", f"a{action.pk}-owner": engineer.pk,
         f"a{action.pk}-due_date": "2027-01-15", f"a{action.pk}-seen_status": "todo",
         "next": back},
    )  # fmt: skip

    assert response.status_code == 302 and response["Location"] == back
    action.refresh_from_db()
    assert (action.status, action.owner, action.due_date) == (
        "in_progress", engineer, dt.date(2027, 1, 15)
    )  # fmt: skip
    entry = action.history.order_by("-at", "-id").first()
    assert {c["field"] for c in entry.changes} == {"status", "owner", "due_date"}
    assert entry.actor == manager


def test_a_next_address_off_the_site_is_ignored(client, manager, actions):
    action = actions["overdue"]
    client.force_login(manager)

    response = client.post(
        reverse("postmortems:action", args=[action.postmortem_id, action.pk]),
        {f"a{action.pk}-status": "todo", f"a{action.pk}-seen_status": "todo",
         "next": "https://evil.example/"},
    )  # fmt: skip

    assert response["Location"].startswith(f"/postmortems/{action.postmortem_id}/")


def test_a_viewer_gets_no_change_forms(client, viewer, actions):
    client.force_login(viewer)

    html = client.get(ACTIONS).content.decode()

    assert 'form="manage-' not in html and "<select" in html  # the filters only


def test_my_actions_are_the_ones_i_own(client, engineer, actions, django_assert_num_queries):
    Action.objects.filter(pk=actions["regressed"].pk).update(owner=engineer)
    client.force_login(engineer)

    # session, user, groups, the counts, the page's count, the filter's teams, the page's
    # actions in order, then with their relations, the owners of the change forms (the
    # owner filter is not shown)
    with django_assert_num_queries(9):
        html = client.get(reverse("postmortems:my_actions")).content.decode()

    assert "<h1>My actions</h1>" in html
    assert link(actions["regressed"]) in html
    assert link(actions["overdue"]) not in html
    assert "<strong>1</strong> open<" in html
