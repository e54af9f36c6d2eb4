"""Who hears of what: teams' webhooks, the deliveries made, and the workers alive."""

from __future__ import annotations

import os

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from .jobs import SourceConfigError


class WebhookKind(models.TextChoices):
    MATTERMOST = "mattermost", "Mattermost"
    SLACK = "slack", "Slack"
    JSON = "json", _("JSON webhook")


class Webhook(models.Model):
    """Where a team hears about its regressions, verifications and run errors. The URL is
    a secret (it holds a token): given by an environment variable, or typed in the admin,
    never shown back."""

    team = models.ForeignKey(
        "postmortems.Team",
        on_delete=models.CASCADE,
        related_name="webhooks",
        verbose_name=_("team"),
    )
    kind = models.CharField(_("kind"), max_length=12, choices=WebhookKind.choices)
    url_env = models.CharField(
        _("URL environment variable"),
        max_length=100,
        blank=True,
        help_text=_("Name of the environment variable holding the webhook URL."),
    )
    url = models.CharField(_("URL"), max_length=500, blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)

    class Meta:
        verbose_name = _("webhook")
        verbose_name_plural = _("webhooks")
        constraints = [
            models.CheckConstraint(
                condition=(Q(url_env="") & ~Q(url="")) | (~Q(url_env="") & Q(url="")),
                name="webhook_one_url_origin",
                violation_error_message=_("Give either a URL variable or a URL, not both."),
            ),
        ]

    def __str__(self) -> str:
        origin = f"${self.url_env}" if self.url_env else "URL set in the admin"
        return f"{self.team} · {self.get_kind_display()} ({origin})"

    def read_url(self) -> str:
        if self.url:
            return self.url
        value = os.environ.get(self.url_env, "").strip()
        if not value:
            raise SourceConfigError(
                f"The environment variable {self.url_env} that should hold the {self.kind} "
                f"webhook URL of team {self.team} is not set."
            )
        return value


class WorkerSeen(models.Model):
    """A Celery worker's last sign of life, written every few seconds by the worker itself:
    the pages say so when none is alive, instead of showing "Queued" for ever."""

    hostname = models.CharField(max_length=200, unique=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.hostname} at {self.seen_at:%H:%M:%S}"


class NotificationSent(models.Model):
    """One delivery already made (or under way): the key of an event for one hook."""

    key = models.CharField(max_length=300, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key
