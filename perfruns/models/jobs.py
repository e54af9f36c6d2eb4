"""What the four pipeline jobs share, and the refusal of a secret that cannot be read."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

User = settings.AUTH_USER_MODEL


class SourceConfigError(Exception):
    """A dump source cannot be reached as configured; the message never holds the DSN."""


class Job(models.Model):
    """What the four pipeline jobs share (a snapshot, a restore, a perf run, a version
    comparison): queued by a request, claimed once by one conditional UPDATE
    (services.jobs), running through stages, finished with a status of their own.

    Each job declares its `status` field with its own choices; "queued" and "running" are
    the two every job has, and the database allows one active job of a kind per source or
    environment (each model's partial unique constraint).
    """

    QUEUED = "queued"
    RUNNING = "running"
    ACTIVE = (QUEUED, RUNNING)

    status: models.CharField[str, str]
    stage = models.CharField(max_length=40, blank=True, verbose_name=_("stage"))
    error = models.TextField(blank=True, verbose_name=_("error"))
    # Read by the job between its steps: a running job stops at its next check.
    cancel_requested = models.BooleanField(default=False, verbose_name=_("cancel requested"))
    # host:pid of the worker process that claimed it (the janitor judges dead ones).
    worker = models.CharField(max_length=200, blank=True, verbose_name=_("worker"))
    # Written every few seconds while it runs: a job whose heartbeat stopped lost its
    # process (killed, by the OOM killer say), whatever its host (services.jobs).
    heartbeat_at = models.DateTimeField(null=True, blank=True, verbose_name=_("last heartbeat"))
    created_by = models.ForeignKey(
        User,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    started_at = models.DateTimeField(null=True, blank=True, verbose_name=_("started at"))
    finished_at = models.DateTimeField(null=True, blank=True, verbose_name=_("finished at"))

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE
