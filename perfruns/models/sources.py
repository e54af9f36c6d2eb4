"""Where data comes from and goes: dump sources, their anonymized snapshots, the review
environments they are restored into, and the restores."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from .jobs import Job, SourceConfigError


class DumpSource(models.Model):
    """A production database to snapshot, and how to mask it.

    The DSN is never stored: only the name of the environment variable or
    secret file that holds it.
    """

    name = models.SlugField(_("name"), max_length=100, unique=True)
    dsn_env = models.CharField(
        _("DSN environment variable"),
        max_length=100,
        blank=True,
        help_text=_("Name of the environment variable holding the source's DSN."),
    )
    dsn_file = models.CharField(
        _("DSN secret file"),
        max_length=500,
        blank=True,
        help_text=_("Path of a file holding the source's DSN (e.g. a mounted secret)."),
    )
    policy_yaml = models.TextField(_("masking policy"))
    policy_hash = models.CharField(max_length=64, verbose_name=_("policy hash"))
    retention = models.PositiveIntegerField(
        _("snapshots kept"),
        null=True,
        blank=True,
        help_text=_("How many snapshots to keep; empty for the service's default."),
    )
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    class Meta:
        ordering = ["name"]
        verbose_name = _("dump source")
        verbose_name_plural = _("dump sources")
        constraints = [
            models.CheckConstraint(
                condition=(Q(dsn_env="") & ~Q(dsn_file="")) | (~Q(dsn_env="") & Q(dsn_file="")),
                name="dumpsource_one_dsn_origin",
                violation_error_message=_("Give either a DSN variable or a DSN file, not both."),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("perfruns:source", args=[self.name])

    @property
    def dsn_origin(self) -> str:
        return f"${self.dsn_env}" if self.dsn_env else self.dsn_file

    def read_dsn(self) -> str:
        if self.dsn_env:
            value = os.environ.get(self.dsn_env, "").strip()
            if not value:
                raise SourceConfigError(
                    f"The environment variable {self.dsn_env} that should hold the DSN of "
                    f"source {self.name} is not set."
                )
            return value
        path = Path(self.dsn_file)
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SourceConfigError(
                f"Cannot read the DSN file {path} of source {self.name}: {exc.strerror}."
            ) from None
        if not value:
            raise SourceConfigError(f"The DSN file {path} of source {self.name} is empty.")
        return value

    @property
    def kept_snapshots(self) -> int:
        return self.retention or settings.SNAPSHOT_RETENTION


class SnapshotStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    READY = "ready", _("Ready")
    REJECTED = "rejected", _("Rejected (PII found)")
    FAILED = "failed", _("Failed")


class Snapshot(Job):
    """An anonymized dump of a source, produced and verified by Fixproof."""

    source = models.ForeignKey(
        DumpSource, on_delete=models.CASCADE, related_name="snapshots", verbose_name=_("source")
    )
    status = models.CharField(
        max_length=10,
        choices=SnapshotStatus.choices,
        default=SnapshotStatus.QUEUED,
        verbose_name=_("status"),
    )
    file_path = models.CharField(max_length=500, blank=True, verbose_name=_("file"))
    sha256 = models.CharField(max_length=64, blank=True, verbose_name=_("SHA-256"))
    size_bytes = models.BigIntegerField(null=True, blank=True, verbose_name=_("size (bytes)"))
    # {"public.users": 1200, ...} counted in the masked database.
    table_rows = models.JSONField(default=dict, blank=True, verbose_name=_("rows per table"))
    policy_hash = models.CharField(max_length=64, blank=True, verbose_name=_("policy hash"))
    # PII findings, policy problems and the post-masking checks.
    report = models.JSONField(default=dict, blank=True, verbose_name=_("report"))
    deleted_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text=_("When retention removed the dump file."),
        verbose_name=_("deleted at"),
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("snapshot")
        verbose_name_plural = _("snapshots")
        constraints = [
            # One snapshot of a source at a time, held by the database.
            models.UniqueConstraint(
                fields=["source"],
                condition=Q(status__in=["queued", "running"]),
                name="snapshot_one_active_per_source",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source.name} #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("perfruns:snapshot", args=[self.pk])

    @property
    def is_restorable(self) -> bool:
        return self.status == SnapshotStatus.READY and bool(self.sha256) and not self.deleted_at


class EnvironmentKind(models.TextChoices):
    MANAGED = "managed", _("Managed cluster")
    EXISTING = "existing", _("Existing server")


class ReviewEnvironment(models.Model):
    """Where snapshots are restored and, later, where perf runs drive the target."""

    name = models.SlugField(_("name"), max_length=100, unique=True)
    kind = models.CharField(
        _("kind"), max_length=10, choices=EnvironmentKind.choices, default=EnvironmentKind.MANAGED
    )
    dsn_env = models.CharField(
        _("admin DSN environment variable"),
        max_length=100,
        blank=True,
        help_text=_(
            "Existing server only: variable holding a DSN of a role that may create and "
            "drop databases."
        ),
    )
    source = models.ForeignKey(
        DumpSource,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="environments",
        help_text=_("A restore without a chosen snapshot takes this source's latest one."),
        verbose_name=_("source"),
    )
    database_name = models.CharField(
        _("database name"),
        max_length=50,
        default="review",
        help_text=_("The restored database the target uses (and the template runs clone)."),
    )
    shared_buffers = models.CharField(_("shared_buffers"), max_length=20, default="128MB")
    work_mem = models.CharField(_("work_mem"), max_length=20, default="4MB")
    max_connections = models.PositiveIntegerField(_("max_connections"), default=100)
    port = models.PositiveIntegerField(
        null=True, blank=True, editable=False, verbose_name=_("port")
    )
    current_snapshot = models.ForeignKey(
        Snapshot,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("current snapshot"),
    )
    # Server settings read back after the last restore (they change what RAM means).
    recorded_settings = models.JSONField(
        default=dict, blank=True, verbose_name=_("recorded settings")
    )
    last_restored_at = models.DateTimeField(
        null=True, blank=True, verbose_name=_("last restored at")
    )
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    class Meta:
        ordering = ["name"]
        verbose_name = _("review environment")
        verbose_name_plural = _("review environments")
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="managed") | ~Q(dsn_env=""),
                name="environment_existing_needs_dsn",
                violation_error_message=_("An existing server needs its DSN variable."),
            ),
            models.CheckConstraint(
                condition=Q(database_name__regex=r"^[a-z_][a-z0-9_]{0,49}$"),
                name="environment_database_name_plain",
                violation_error_message=_(
                    "The database name must be lower-case letters, digits and underscores."
                ),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("perfruns:environment", args=[self.name])

    @property
    def data_dir(self) -> Path:
        return Path(settings.FIXPROOF_DATA_DIR) / "clusters" / self.name

    def read_dsn(self) -> str:
        value = os.environ.get(self.dsn_env, "").strip() if self.dsn_env else ""
        if not value:
            raise SourceConfigError(
                f"The environment variable {self.dsn_env} that should hold the admin DSN of "
                f"environment {self.name} is not set."
            )
        return value


class RestoreStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")


class Restore(Job):
    environment = models.ForeignKey(
        ReviewEnvironment,
        on_delete=models.CASCADE,
        related_name="restores",
        verbose_name=_("environment"),
    )
    snapshot = models.ForeignKey(
        Snapshot, on_delete=models.PROTECT, related_name="restores", verbose_name=_("snapshot")
    )
    status = models.CharField(
        max_length=10,
        choices=RestoreStatus.choices,
        default=RestoreStatus.QUEUED,
        verbose_name=_("status"),
    )
    tables_done = models.PositiveIntegerField(default=0, verbose_name=_("tables done"))
    tables_total = models.PositiveIntegerField(default=0, verbose_name=_("tables in all"))

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("restore")
        verbose_name_plural = _("restores")
        constraints = [
            # One restore per environment at a time, held by the database.
            models.UniqueConstraint(
                fields=["environment"],
                condition=Q(status__in=["queued", "running"]),
                name="restore_one_active_per_environment",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.environment.name} ← snapshot #{self.snapshot_id}"

    @property
    def percent(self) -> int:
        if self.status == RestoreStatus.DONE:
            return 100
        if not self.tables_total:
            return 0
        return min(99, int(100 * self.tables_done / self.tables_total))
