"""The managers' weekly summary over a fixed calendar (the service takes the week and the
day; every timestamp is planted): what it counts, who sees what, nothing sent twice."""

from __future__ import annotations

import datetime as dt
import io
import threading

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from perfruns.models import (
    NotificationSent,
    VerificationCriterion,
    Webhook,
)
from perfruns.services import weekly_summary
from perfruns.services.weekly_summary import period_parse
from postmortems.models import Action, PostMortem, Team
from tests import weekdata

# ISO week 2026-W12: Monday 16 to Sunday 22 March; the e-mail goes out on Monday 23.
WEEK = weekly_summary.period_iso_week(2026, 12)
MONDAY_AFTER = dt.date(2026, 3, 23)


def summary_for(user: User) -> weekly_summary.WeeklySummary:
    return weekly_summary.weekly_summary_for(user=user, period=WEEK, today=MONDAY_AFTER)


def sent_to(address: str) -> list[mail.EmailMessage]:
    return [m for m in mail.outbox if address in m.to]


@pytest.fixture
def payments(engineer, manager) -> Team:
    return weekdata.plant_team(engineer, manager)


@pytest.fixture
def search_manager(db) -> User:
    """The manager of another team, who is no member of Payments nor in the manager group."""
    user = User.objects.create_user(username="tina", email="tina@example.org", first_name="Tina")
    user.groups.add(Group.objects.get(name="viewer"))
    Team.objects.create(name="Search", slug="search", manager=user)
    return user


@pytest.fixture
def week(make_postmortem, engineer, payments, scenario) -> PostMortem:
    return weekdata.plant_week(make_postmortem, engineer, payments, scenario)


@pytest.fixture
def secret(make_postmortem, engineer, payments) -> PostMortem:
    return weekdata.plant_secret(make_postmortem, engineer, payments)


def test_it_counts_the_weeks_closed_verified_regressed_overdue_and_new(week, manager):
    summary = summary_for(manager)

    [payments] = summary.teams
    assert payments.team is not None and payments.team.slug == "payments"
    assert payments.counts == {
        "closed": 2,  # done on Tuesday, won't do on Wednesday (not the one done on the 13th)
        "verified": 1,
        "regressed": 0,
        "incidents": 1,
        "overdue": 1,  # the old post-mortem's, due on the 10th
        "new_postmortems": 1,  # "Checkout 502s", not the old one
    }
    assert [a.title for a in payments.closed] == ["Weekly load test", "Index order_events"]
    assert summary.total.counts == payments.counts


def test_a_week_with_nothing_of_its_own_still_lists_what_is_overdue_now(week, manager):
    summary = weekly_summary.weekly_summary_for(
        user=manager, period=weekly_summary.period_iso_week(2026, 5), today=MONDAY_AFTER
    )

    assert summary.total.counts["overdue"] == 1
    assert summary.total.counts["closed"] == summary.total.counts["new_postmortems"] == 0


def test_a_proof_that_regressed_this_week_is_counted_as_regressed(week, manager):
    VerificationCriterion.objects.update(state="regressed")

    counts = summary_for(manager).total.counts

    assert counts["verified"] == 0 and counts["regressed"] == 1


def test_a_private_post_mortem_is_only_in_the_summary_of_who_may_open_it(
    week, secret, manager, viewer, engineer
):
    # The manager group sees everything; the team's engineer is a member; a viewer is not.
    assert summary_for(manager).total.counts["new_postmortems"] == 2
    assert summary_for(engineer).total.counts["new_postmortems"] == 2
    seen = summary_for(viewer).total
    assert seen.counts["new_postmortems"] == 1
    assert seen.counts["overdue"] == 1
    assert "Secret breach" not in str([pm.title for pm in seen.new_postmortems])


def test_each_manager_gets_one_e_mail_a_week_of_what_they_may_see(
    week, secret, manager, search_manager
):
    report = weekly_summary.weekly_summary_send(period=WEEK, today=MONDAY_AFTER)

    assert report.sent == 2
    [to_marc] = sent_to(manager.email)
    assert "2026-03-16" in to_marc.subject and "2026-03-22" in to_marc.subject
    assert "Checkout 502s" in to_marc.body and "Secret breach" in to_marc.body
    assert "/summary/?week=2026-W12" in to_marc.body
    # Tina manages another team: the private post-mortem is not hers to read, not even
    # as a figure.
    [to_tina] = sent_to(search_manager.email)
    assert "Checkout 502s" in to_tina.body
    assert "Secret breach" not in to_tina.body
    assert "new incidents: 1" in to_tina.body and "new incidents: 2" in to_marc.body

    # Again (a rerun, the beat job and the command): nothing twice, even after a week.
    assert weekly_summary.weekly_summary_send(period=WEEK, today=MONDAY_AFTER).sent == 0
    later = MONDAY_AFTER + dt.timedelta(days=9)
    assert weekly_summary.weekly_summary_send(period=WEEK, today=later).sent == 0
    assert len(mail.outbox) == 2


def test_nobody_but_the_managers_gets_it_and_an_empty_week_sends_nothing(
    week, manager, engineer, viewer
):
    weekly_summary.weekly_summary_send(period=WEEK, today=MONDAY_AFTER)
    assert [m.to for m in mail.outbox] == [[manager.email]]

    mail.outbox.clear()
    Action.objects.update(due_date=None)
    quiet = weekly_summary.period_iso_week(2026, 5)
    assert weekly_summary.weekly_summary_send(period=quiet, today=MONDAY_AFTER).sent == 0
    assert mail.outbox == []


def test_a_failed_e_mail_is_tried_again_on_the_next_run(week, manager, settings):
    settings.EMAIL_BACKEND = "tests.test_weekly_summary.BrokenBackend"
    with pytest.raises(ConnectionError):
        weekly_summary.weekly_summary_send(period=WEEK, today=MONDAY_AFTER)
    assert not NotificationSent.objects.filter(key__startswith="weekly-summary:").exists()

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert weekly_summary.weekly_summary_send(period=WEEK, today=MONDAY_AFTER).sent == 1


class BrokenBackend:
    def __init__(self, *args, **kwargs) -> None:
        pass

    def send_messages(self, messages) -> int:
        raise ConnectionError("the SMTP server is away")


def test_the_teams_webhook_hears_only_of_public_post_mortems(
    week, secret, payments, manager, monkeypatch, django_capture_on_commit_callbacks
):
    Webhook.objects.create(team=payments, kind="json", url_env="PAYMENTS_HOOK")

    with django_capture_on_commit_callbacks() as callbacks:
        weekly_summary.weekly_summary_send(period=WEEK, today=MONDAY_AFTER)
        weekly_summary.weekly_summary_send(period=WEEK, today=MONDAY_AFTER)

    [callback] = callbacks  # once, though sent twice
    _task, event, team_ids = callback.args
    assert team_ids == [payments.pk]
    assert event["figures"]["new incidents"] == "1"
    assert event["figures"]["actions overdue now"] == "1"
    assert "Secret" not in str(event)
    assert event["url"].endswith("/summary/?week=2026-W12")


def test_two_workers_at_once_send_each_summary_once(committed_roles, week, manager):
    results: list[int] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(weekly_summary.weekly_summary_send(period=WEEK, today=MONDAY_AFTER).sent)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [0, 1]
    assert len(sent_to(manager.email)) == 1


def test_the_command_takes_a_week_and_a_dry_run_sends_nothing(week, manager):
    out = io.StringIO()
    call_command("send_weekly_summary", "--week", "2026-W12", "--dry-run", stdout=out)
    assert mail.outbox == []
    assert out.getvalue().splitlines()[-1] == "would send 1 summary(ies) for 2026-W12"

    out = io.StringIO()
    call_command("send_weekly_summary", "--week", "2026-W12", stdout=out)
    assert out.getvalue().splitlines()[-1] == "sent 1 summary(ies) for 2026-W12"
    assert len(sent_to(manager.email)) == 1

    with pytest.raises(CommandError, match="is not a week"):
        call_command("send_weekly_summary", "--week", "last week", stdout=io.StringIO())


def test_a_week_is_an_iso_week_or_its_first_day():
    assert period_parse("2026-W12").start == dt.date(2026, 3, 16)
    assert period_parse("2026w12").label == "2026-W12"
    assert period_parse("2026-03-18").start == dt.date(2026, 3, 18)
    assert period_parse("2026-03-18").last_day == dt.date(2026, 3, 24)
    assert weekly_summary.period_previous_week(MONDAY_AFTER) == WEEK
    for bad in ("2026-W54", "2026-13-01", "soon", "2026-3-1"):
        with pytest.raises(ValueError, match="is not a week"):
            period_parse(bad)


def test_an_e_mail_lists_ten_overdue_actions_and_counts_the_others(
    week, manager, make_postmortem, engineer, payments
):
    for n in range(6):
        pm = make_postmortem(actor=engineer, team=payments, title=f"Late {n}")
        pm.actions.update(due_date=dt.date(2026, 3, 1))

    weekly_summary.weekly_summary_send(period=WEEK, today=MONDAY_AFTER)

    [message] = sent_to(manager.email)
    assert "actions overdue now: 13" in message.body
    assert "and 3 more" in message.body
