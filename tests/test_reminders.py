"""Daily reminders of actions due soon or overdue, over several days of a fixed calendar
(the service takes the day; nothing reads the machine's clock)."""

from __future__ import annotations

import datetime as dt
import io
import threading

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import connection

from perfruns import tasks
from perfruns.models import NotificationSent, Webhook
from perfruns.services import reminders
from postmortems.models import Action, Team
from tests.webhookreceiver import Receiver

MONDAY = dt.date(2026, 3, 16)


def day(n: int) -> dt.date:
    return MONDAY + dt.timedelta(days=n)


@pytest.fixture
def team(engineer, other_engineer, manager) -> Team:
    for user in (engineer, other_engineer, manager):
        user.email = f"{user.username}@example.org"
        user.save(update_fields=["email"])
    team = Team.objects.create(name="Payments", slug="payments", manager=manager)
    team.members.add(engineer)
    return team


@pytest.fixture
def owned(make_postmortem, engineer, team):
    """Two actions of one post-mortem owned by the engineer: due Wednesday and Friday."""
    pm = make_postmortem(actor=engineer, team=team)
    first, second = pm.actions.order_by("number")
    Action.objects.filter(pk=first.pk).update(owner=engineer, due_date=day(2))
    Action.objects.filter(pk=second.pk).update(owner=engineer, due_date=day(4))
    return pm


def sent_to(address: str) -> list[mail.EmailMessage]:
    return [m for m in mail.outbox if address in m.to]


def test_an_owner_gets_one_digest_a_day_for_actions_due_within_two_days(owned, engineer):
    assert reminders.reminders_send(today=day(-1)).sent == 0  # Sunday: nothing due yet
    assert reminders.reminders_send(today=day(0)).sent == 1  # Monday: Wednesday's is due soon
    [message] = sent_to(engineer.email)
    assert "Weekly load test" in message.body and "Index order_events" not in message.body
    assert "[due on 2026-03-18]" in message.body
    assert f"/postmortems/{owned.pk}/#action-1" in message.body

    # The same day again, from the beat job or by hand: nothing twice.
    assert reminders.reminders_send(today=day(0)).sent == 0
    assert len(sent_to(engineer.email)) == 1

    # The next days: one digest each, the second action joining when it is due soon.
    assert reminders.reminders_send(today=day(2)).sent == 1
    assert "Index order_events" in sent_to(engineer.email)[-1].body
    assert "[due today]" in sent_to(engineer.email)[-1].body
    assert reminders.reminders_send(today=day(5)).sent == 1
    assert "[overdue by 3 days]" in sent_to(engineer.email)[-1].body
    assert len(sent_to(engineer.email)) == 3


def test_a_done_action_is_not_reminded(owned, engineer):
    owned.actions.update(status="done", done_at=dt.datetime(2026, 3, 17, tzinfo=dt.UTC))
    assert reminders.reminders_send(today=day(3)).sent == 0
    assert mail.outbox == []


def test_the_teams_manager_is_told_once_an_action_is_overdue_for_a_week(
    owned, engineer, manager, settings
):
    settings.REMINDER_ESCALATE_AFTER_DAYS = 7
    reminders.reminders_send(today=day(8))  # Wednesday's action: 6 days late
    assert sent_to(manager.email) == []
    reminders.reminders_send(today=day(9))  # 7 days late
    [escalation] = sent_to(manager.email)
    assert "Weekly load test" in escalation.body and "Index order_events" not in escalation.body
    assert "overdue by 7 days" in escalation.body
    reminders.reminders_send(today=day(9))
    assert len(sent_to(manager.email)) == 1
    assert len(sent_to(engineer.email)) == 2  # the owner too, once a day


def test_a_private_post_mortem_is_only_in_the_digest_of_who_may_open_it(
    make_postmortem, engineer, other_engineer, manager, team
):
    pm = make_postmortem(actor=engineer, team=team, is_private=True)
    pm.actions.update(owner=other_engineer, due_date=day(1))
    # other_engineer owns the actions but is not in the team: the page is closed to them.
    assert reminders.reminders_send(today=day(0)).sent == 0
    team.members.add(other_engineer)
    assert reminders.reminders_send(today=day(0)).sent == 1


def test_two_workers_at_once_send_each_digest_once(committed_roles, owned, engineer):
    results: list[int] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(reminders.reminders_send(today=day(0)).sent)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [0, 1]
    assert len(sent_to(engineer.email)) == 1
    assert NotificationSent.objects.filter(key__startswith="reminder:owner=").count() == 1


def test_the_command_lists_the_digests_of_a_day_and_a_dry_run_sends_nothing(owned, engineer):
    out = io.StringIO()
    call_command("send_reminders", "--date", day(2).isoformat(), "--dry-run", stdout=out)
    assert mail.outbox == []
    assert out.getvalue().splitlines()[-1] == "would send 1 digest(s) for 2026-03-18"

    out = io.StringIO()
    call_command("send_reminders", "--date", day(2).isoformat(), stdout=out)
    assert out.getvalue().splitlines()[-1] == "sent 1 digest(s) for 2026-03-18"
    assert len(sent_to(engineer.email)) == 1


def test_the_owners_digest_goes_to_the_teams_chat_for_public_post_mortems_only(
    owned, engineer, team, make_postmortem, monkeypatch, django_capture_on_commit_callbacks
):
    receiver = Receiver()
    try:
        monkeypatch.setenv("PAYMENTS_HOOK", receiver.url)
        Webhook.objects.create(team=team, kind="json", url_env="PAYMENTS_HOOK")
        private = make_postmortem(actor=engineer, team=team, is_private=True, title="Secret")
        private.actions.update(owner=engineer, due_date=day(1))

        with django_capture_on_commit_callbacks() as callbacks:
            reminders.reminders_send(today=day(0))
        [callback] = callbacks
        _task, event, team_ids = callback.args
        tasks.notify_event(event, team_ids)

        [body] = receiver.bodies
        assert body["event"] == "reminder"
        assert body["title"] == "Emma Martin: 1 action(s) due soon or overdue"
        assert list(body["figures"]) == ["Pool exhausted · Weekly load test"]
        assert "Secret" not in str(body)
        # The e-mail, which only its owner reads, has both.
        assert "Secret" in sent_to(engineer.email)[0].body
    finally:
        receiver.close()
