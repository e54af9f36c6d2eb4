"""Team webhooks: an event is queued after commit for the teams concerned, then delivered
once per hook (a unique row claims each delivery across workers), retried with backoff,
never writing a URL in a line or a log."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from perfruns.models import NotificationSent, SourceConfigError, Webhook
from perfruns.notify import Event, notify
from perfruns.payloads import NotificationEvent

from .queue import NOTIFY_EVENT, enqueue_on_commit

log = logging.getLogger(__name__)

NOTIFICATION_TTL_S = 7 * 86400


class DatabaseDeduplicator:
    """notify's Deduplicator over NotificationSent: one delivery per key across workers
    (the unique key is claimed by an INSERT), again after the TTL."""

    def __init__(self, ttl_s: float = NOTIFICATION_TTL_S) -> None:
        self.ttl_s = ttl_s

    def first_time(self, key: str) -> bool:
        cutoff = timezone.now() - dt.timedelta(seconds=self.ttl_s)
        NotificationSent.objects.filter(key=key, created_at__lt=cutoff).delete()
        try:
            with transaction.atomic():
                NotificationSent.objects.create(key=key)
        except IntegrityError:
            return False
        return True

    def forget(self, key: str) -> None:
        NotificationSent.objects.filter(key=key).delete()

    def mail_once(self, key: str, *, subject: str, body: str, to: str) -> bool:
        """E-mail `to` unless `key` was claimed already (False then); an e-mail that fails
        gives its claim back, so that the next run tries again."""
        if not self.first_time(key):
            return False
        try:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [to])
        except Exception:
            self.forget(key)
            raise
        return True


def notification_enqueue(
    *,
    kind: str,
    title: str,
    path: str,
    figures: dict[str, str],
    dedupe_key: str,
    team_ids: list[int],
) -> bool:
    """Queue a notification for the teams' enabled webhooks (after commit); False when no
    team has one."""
    team_ids = sorted({pk for pk in team_ids if pk is not None})
    if not Webhook.objects.filter(team_id__in=team_ids, enabled=True).exists():
        return False
    event: NotificationEvent = {
        "kind": kind,
        "title": title,
        "url": f"{settings.SITE_URL}{path}",
        "figures": figures,
        "dedupe_key": dedupe_key,
    }
    enqueue_on_commit(NOTIFY_EVENT, event, team_ids)
    return True


def notification_send(*, event: NotificationEvent, team_ids: list[int]) -> list[str]:
    """Deliver one event to the teams' enabled webhooks (retried with backoff, once per
    hook); one line per hook, never holding a URL."""
    lines: list[str] = []
    hooks = []
    for hook in Webhook.objects.filter(team_id__in=team_ids, enabled=True).select_related("team"):
        try:
            hooks.append((hook.kind, hook.read_url()))
        except SourceConfigError as exc:
            lines.append(str(exc))
    lines += notify(hooks, Event(**event), dedupe=DatabaseDeduplicator())
    for line in lines:
        log.info("notification %s: %s", event["dedupe_key"], line)
    return lines
