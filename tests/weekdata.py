"""A planted week for the weekly summary's tests: ISO week 2026-W12 (Monday 16 to Sunday
22 March 2026), every timestamp written by hand."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import User

from perfruns.models import (
    PerfRun,
    RegressionIncident,
    RunStatus,
    RunTrigger,
    Scenario,
    Verification,
    VerificationCriterion,
)
from postmortems.models import Action, HistoryEntry, PostMortem, Team


def at(day: int, hour: int = 12) -> dt.datetime:
    """A moment of March 2026 (UTC, the service's time zone)."""
    return dt.datetime(2026, 3, day, hour, tzinfo=dt.UTC)


def plant_team(engineer: User, manager: User) -> Team:
    for user in (engineer, manager):
        user.email = f"{user.username}@example.org"
        user.save(update_fields=["email"])
    team = Team.objects.create(name="Payments", slug="payments")
    team.members.add(engineer)
    return team


def plant_week(make_postmortem, engineer: User, payments: Team, scenario: Scenario) -> PostMortem:
    """A public post-mortem of Payments written this week: its first action done on
    Tuesday, its second set to "won't do" on Wednesday and proven on Thursday; one
    regression detected on Friday; an old post-mortem with an action overdue since the
    10th and another done before the week."""
    pm = make_postmortem(actor=engineer, team=payments, title="Checkout 502s")
    PostMortem.objects.filter(pk=pm.pk).update(
        created_at=at(17), started_at=at(16), ended_at=at(16, 13)
    )
    first, second = pm.actions.order_by("number")
    Action.objects.filter(pk=first.pk).update(status="done", done_at=at(17))
    Action.objects.filter(pk=second.pk).update(status="wont_do")
    HistoryEntry.objects.create(
        postmortem=pm,
        action=second,
        subject="Action 2",
        verb="updated",
        at=at(18),
        changes=[{"field": "status", "old": "todo", "new": "wont_do"}],
    )
    run = PerfRun.objects.create(
        scenario=scenario,
        environment=scenario.environment,
        trigger=RunTrigger.SCHEDULE,
        status=RunStatus.PASSED,
    )
    criterion = VerificationCriterion.objects.create(
        action=first, scenario=scenario, metric="p95_ms", value=500, state="verified",
        state_run=run,
    )  # fmt: skip
    verification = Verification.objects.create(criterion=criterion, run=run, passed=True)
    Verification.objects.filter(pk=verification.pk).update(created_at=at(19))
    incident = RegressionIncident.objects.create(scenario=scenario, start_run=run, postmortem=pm)
    RegressionIncident.objects.filter(pk=incident.pk).update(created_at=at(20))

    old = make_postmortem(actor=engineer, team=payments, title="Old outage")
    PostMortem.objects.filter(pk=old.pk).update(
        created_at=at(2), started_at=at(1), ended_at=at(1, 13)
    )
    late, done_before = old.actions.order_by("number")
    Action.objects.filter(pk=late.pk).update(due_date=dt.date(2026, 3, 10))
    Action.objects.filter(pk=done_before.pk).update(status="done", done_at=at(13))
    return pm


def plant_secret(make_postmortem, engineer: User, payments: Team) -> PostMortem:
    """A private post-mortem of Payments, started this week, with an overdue action."""
    pm = make_postmortem(actor=engineer, team=payments, title="Secret breach", is_private=True)
    PostMortem.objects.filter(pk=pm.pk).update(
        created_at=at(21), started_at=at(21), ended_at=at(21, 13)
    )
    pm.actions.filter(number=1).update(due_date=dt.date(2026, 3, 20))
    return pm
