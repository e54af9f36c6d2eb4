"""Daily reminders: each owner of actions due soon or overdue gets one digest a day, by
e-mail and on their teams' chat webhooks; an action overdue for long also goes to its
team's manager.

Idempotent per person and day: each digest claims a unique key (NotificationSent, an
INSERT) before it is sent, so a rerun or a second worker at the same time sends nothing
twice. A private post-mortem's actions are only in the digest of someone who may open it,
and never on a webhook.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import User
from django.utils.translation import gettext as _
from django.utils.translation import ngettext, override

from postmortems import access
from postmortems.models import OPEN_ACTION_STATUSES, Action

from .notifications import DatabaseDeduplicator, notification_enqueue

log = logging.getLogger(__name__)


@dataclass
class ReminderReport:
    """What a run sent (or, in a dry run, would send): one line per digest."""

    lines: list[str] = field(default_factory=list)
    sent: int = 0


def _line(action: Action, today: dt.date) -> str:
    assert action.due_date is not None
    late = (today - action.due_date).days
    if late > 0:
        when = ngettext("overdue by %(n)s day", "overdue by %(n)s days", late) % {"n": late}
    elif late == 0:
        when = _("due today")
    else:
        when = _("due on %(day)s") % {"day": action.due_date.isoformat()}
    url = f"{settings.SITE_URL}{action.get_absolute_url()}"
    return f"- [{when}] {action.postmortem.title}: {action.title}\n  {url}"


def _visible(user: User, actions: list[Action]) -> list[Action]:
    allowed = set(
        access.visible_postmortems(user)
        .filter(pk__in={a.postmortem_id for a in actions})
        .values_list("pk", flat=True)
    )
    return [a for a in actions if a.postmortem_id in allowed]


def _digest(
    *,
    user: User,
    actions: list[Action],
    key: str,
    subject: str,
    intro: str,
    today: dt.date,
    dry_run: bool,
    report: ReminderReport,
) -> bool:
    actions = _visible(user, actions)
    if not actions or not user.email:
        return False
    who = user.get_full_name() or user.get_username()
    report.lines.append(f"{who}: {len(actions)} action(s) ({key})")
    if dry_run:
        return False
    body = intro + "\n\n" + "\n".join(_line(a, today) for a in actions) + "\n"
    if not DatabaseDeduplicator().mail_once(key, subject=subject, body=body, to=user.email):
        return False
    report.sent += 1
    return True


def _open_due(today: dt.date) -> list[Action]:
    soon = today + dt.timedelta(days=settings.REMINDER_DUE_SOON_DAYS)
    return list(
        Action.objects.filter(
            status__in=OPEN_ACTION_STATUSES,
            due_date__isnull=False,
            due_date__lte=soon,
            owner__isnull=False,
            owner__is_active=True,
        )
        .select_related("owner", "postmortem__team__manager")
        .order_by("due_date", "postmortem_id", "number")
    )


def reminders_send(*, today: dt.date, dry_run: bool = False) -> ReminderReport:
    """Send today's digests (owners, then managers); `dry_run` only lists them."""
    report = ReminderReport()
    actions = _open_due(today)
    by_owner: dict[User, list[Action]] = defaultdict(list)
    by_manager: dict[User, list[Action]] = defaultdict(list)
    escalate = today - dt.timedelta(days=settings.REMINDER_ESCALATE_AFTER_DAYS)
    for action in actions:
        assert action.owner is not None and action.due_date is not None
        by_owner[action.owner].append(action)
        team = action.postmortem.team
        if action.due_date <= escalate and team is not None and team.manager is not None:
            by_manager[team.manager].append(action)
    with override(settings.LANGUAGE_CODE):
        for owner, owned in by_owner.items():
            sent = _digest(
                user=owner,
                actions=owned,
                key=f"reminder:owner={owner.pk}:day={today.isoformat()}",
                subject=_("Fixproof: your actions due soon or overdue"),
                intro=_("These actions you own are due soon or overdue:"),
                today=today,
                dry_run=dry_run,
                report=report,
            )
            if sent:
                _chat(owner, owned, today)
        for manager, late in by_manager.items():
            _digest(
                user=manager,
                actions=late,
                key=f"escalation:manager={manager.pk}:day={today.isoformat()}",
                subject=_("Fixproof: actions of your teams overdue"),
                intro=_(
                    "These actions of your teams' post-mortems are overdue by %(days)s days "
                    "or more:"
                )
                % {"days": settings.REMINDER_ESCALATE_AFTER_DAYS},
                today=today,
                dry_run=dry_run,
                report=report,
            )
    for line in report.lines:
        log.info("reminders %s%s: %s", today.isoformat(), " (dry run)" if dry_run else "", line)
    return report


def _chat(owner: User, actions: list[Action], today: dt.date) -> None:
    """The owner's digest on the webhooks of the teams concerned: public post-mortems only."""
    by_team: dict[int, list[Action]] = defaultdict(list)
    for action in actions:
        if action.postmortem.team_id is not None and not action.postmortem.is_private:
            by_team[action.postmortem.team_id].append(action)
    who = owner.get_full_name() or owner.get_username()
    for team_id, team_actions in by_team.items():
        first = team_actions[0]
        notification_enqueue(
            kind="reminder",
            title=_("%(who)s: %(n)s action(s) due soon or overdue")
            % {"who": who, "n": len(team_actions)},
            path=first.postmortem.get_absolute_url(),
            figures={
                f"{a.postmortem.title} · {a.title}": (a.due_date or today).isoformat()
                for a in team_actions
            },
            dedupe_key=f"reminder:team={team_id}:owner={owner.pk}:day={today.isoformat()}",
            team_ids=[team_id],
        )
