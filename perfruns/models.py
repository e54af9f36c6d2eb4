from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from .thresholds import EndpointFigures

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
    stage = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    # Read by the job between its steps: a running job stops at its next check.
    cancel_requested = models.BooleanField(default=False)
    # host:pid of the worker process that claimed it (the janitor judges dead ones).
    worker = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


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
    policy_hash = models.CharField(max_length=64)
    retention = models.PositiveIntegerField(
        _("snapshots kept"),
        null=True,
        blank=True,
        help_text=_("How many snapshots to keep; empty for the service's default."),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

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

    source = models.ForeignKey(DumpSource, on_delete=models.CASCADE, related_name="snapshots")
    status = models.CharField(
        max_length=10, choices=SnapshotStatus.choices, default=SnapshotStatus.QUEUED
    )
    file_path = models.CharField(max_length=500, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    # {"public.users": 1200, ...} counted in the masked database.
    table_rows = models.JSONField(default=dict, blank=True)
    policy_hash = models.CharField(max_length=64, blank=True)
    # PII findings, policy problems and the post-masking checks.
    report = models.JSONField(default=dict, blank=True)
    deleted_at = models.DateTimeField(
        null=True, blank=True, help_text=_("When retention removed the dump file.")
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
    port = models.PositiveIntegerField(null=True, blank=True, editable=False)
    current_snapshot = models.ForeignKey(
        Snapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Server settings read back after the last restore (they change what RAM means).
    recorded_settings = models.JSONField(default=dict, blank=True)
    last_restored_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

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
        ReviewEnvironment, on_delete=models.CASCADE, related_name="restores"
    )
    snapshot = models.ForeignKey(Snapshot, on_delete=models.PROTECT, related_name="restores")
    status = models.CharField(
        max_length=10, choices=RestoreStatus.choices, default=RestoreStatus.QUEUED
    )
    tables_done = models.PositiveIntegerField(default=0)
    tables_total = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
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


# ---------------------------------------------------------------- scenarios and runs


class ShapeKind(models.TextChoices):
    CONSTANT = "constant", _("Constant users")
    STEPS = "steps", _("Steps (find the breaking point)")
    ARRIVAL = "arrival", _("Fixed arrival rate")


# The fields of a scenario that make its load: two runs drove the same load when their
# settings (copied from these at each run's start) agree on all of them.
LOAD_SHAPE_FIELDS = (
    "shape",
    "users",
    "spawn_rate",
    "duration_s",
    "step_start",
    "step_size",
    "step_duration_s",
    "step_max",
    "arrival_rps",
)


class Scenario(models.Model):
    """A load test of a target against a review environment: what, how hard, how judged."""

    name = models.SlugField(_("name"), max_length=100, unique=True)
    description = models.TextField(_("description"), blank=True)
    locustfile_path = models.CharField(
        _("locustfile path"),
        max_length=500,
        blank=True,
        help_text=_("Path of the locustfile in a repository checkout on the worker."),
    )
    locustfile_text = models.TextField(
        _("uploaded locustfile"),
        blank=True,
        help_text=_("The locustfile itself, uploaded by an administrator."),
    )
    target_url = models.CharField(_("target base URL"), max_length=300)
    environment = models.ForeignKey(
        ReviewEnvironment, on_delete=models.PROTECT, related_name="scenarios"
    )
    restore_first = models.BooleanField(
        _("restore the latest snapshot first"),
        default=False,
        help_text=_("Otherwise each run clones the database restored last."),
    )
    start_command = models.TextField(
        _("target start command"),
        blank=True,
        help_text=_("Run with DATABASE_URL set to the run's database; stopped after the run."),
    )
    start_env = models.JSONField(
        _("target environment"),
        default=dict,
        blank=True,
        help_text=_("Extra environment variables of the start command."),
    )
    health_url = models.CharField(_("health URL"), max_length=300, blank=True)
    health_timeout_s = models.PositiveIntegerField(_("health timeout (s)"), default=60)
    users = models.PositiveIntegerField(_("users"), default=10)
    spawn_rate = models.FloatField(_("spawn rate (users/s)"), default=10)
    duration_s = models.PositiveIntegerField(_("duration (s)"), default=60)
    shape = models.CharField(
        _("load shape"), max_length=10, choices=ShapeKind.choices, default=ShapeKind.CONSTANT
    )
    step_start = models.PositiveIntegerField(_("first step users"), default=0)
    step_size = models.PositiveIntegerField(_("step size"), default=0)
    step_duration_s = models.PositiveIntegerField(_("step duration (s)"), default=0)
    step_max = models.PositiveIntegerField(_("last step users"), default=0)
    arrival_rps = models.FloatField(_("arrival rate (requests/s)"), default=0)
    workers = models.PositiveIntegerField(
        _("Locust workers"), default=0, help_text=_("0: one Locust process.")
    )
    # {"p95_ms": 500, "failure_rate": 0.01, "db_ram_peak_mb": 1500, "min_rps": 20,
    #  "probable_leak": false, "endpoints": {"/users/[id]": {"p95_ms": 300}}}
    # (services.scenarios.THRESHOLD_KEYS lists them all)
    thresholds = models.JSONField(_("thresholds"), default=dict, blank=True)
    # The smallest changes that matter, for the comparison with the baseline (the keys of
    # regression.FLOOR_SETTINGS: {"db_ram_abs_mb": 32, "latency_rel": 0.2}); the others keep
    # their defaults.
    floors = models.JSONField(_("floors"), default=dict, blank=True)
    warmup_s = models.PositiveIntegerField(
        _("warm-up (s)"),
        null=True,
        blank=True,
        help_text=_(
            "Seconds after the ramp before memory is judged (caches filling, pools "
            "opening). Empty: 15 s, at most a fifth of the run after the ramp."
        ),
    )
    fail_on_memory_regression = models.BooleanField(
        _("fail a run whose memory is worse than its baseline"),
        default=False,
        help_text=_(
            "Otherwise one run worse on DB RAM or memory growth is a suspected regression: "
            "shown, not failed, until the weekly series confirms it."
        ),
    )
    tags = models.CharField(_("tags"), max_length=200, blank=True)
    default_version = models.CharField(
        _("version of the weekly runs"),
        max_length=100,
        blank=True,
        help_text=_(
            "When the start command or its environment holds {version}: what it stands for "
            "in runs that are not a version comparison."
        ),
    )
    baseline_run = models.ForeignKey(
        "PerfRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("pinned baseline"),
        help_text=_("Runs are compared with it instead of the previous passing run."),
    )
    postmortems = models.ManyToManyField(
        "postmortems.PostMortem", blank=True, related_name="scenarios"
    )
    actions = models.ManyToManyField("postmortems.Action", blank=True, related_name="scenarios")
    # The change points of the series, computed after each run (E-divisive costs seconds
    # over hundreds of runs: no page view computes it): services.scenario_trend_refresh.
    trend = models.JSONField(default=list, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("scenario")
        verbose_name_plural = _("scenarios")
        constraints = [
            models.CheckConstraint(
                condition=(Q(locustfile_path="") & ~Q(locustfile_text=""))
                | (~Q(locustfile_path="") & Q(locustfile_text="")),
                name="scenario_one_locustfile",
                violation_error_message=_("Give either a locustfile path or a locustfile."),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("perfruns:scenario", args=[self.name])

    @property
    def schedule_name(self) -> str:
        return f"fixproof scenario {self.name}"

    @property
    def takes_version(self) -> bool:
        return VERSION_PLACEHOLDER in self.start_command or any(
            VERSION_PLACEHOLDER in str(value) for value in (self.start_env or {}).values()
        )


VERSION_PLACEHOLDER = "{version}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    PASSED = "passed", _("Passed")
    FAILED = "failed", _("Failed")
    ERROR = "error", _("Error")
    CANCELLED = "cancelled", _("Cancelled")


class RunTrigger(models.TextChoices):
    MANUAL = "manual", _("Run now")
    SCHEDULE = "schedule", _("Schedule")
    COMMAND = "command", _("Command line")
    COMPARISON = "comparison", _("Version comparison")


class PerfRun(Job):
    """One load test of a scenario, with everything measured and how it was judged."""

    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="runs")
    environment = models.ForeignKey(
        ReviewEnvironment, on_delete=models.PROTECT, related_name="runs"
    )
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    trigger = models.CharField(max_length=10, choices=RunTrigger.choices)
    # The load generator was saturated (or another reason): figures not to be compared.
    invalid_reason = models.CharField(max_length=300, blank=True)
    # Why it passed or failed: one sentence per threshold checked.
    verdict = models.JSONField(default=list, blank=True)
    # What the run used, copied at its start: later edits of the scenario do not change it.
    locustfile_sha256 = models.CharField(max_length=64, blank=True)
    settings = models.JSONField(default=dict, blank=True)
    environment_settings = models.JSONField(default=dict, blank=True)
    snapshot = models.ForeignKey(
        Snapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    # Totals, peaks, the sampler's achieved interval, breaking point, memory slopes.
    summary = models.JSONField(default=dict, blank=True)
    # pg_stat_database before/after, peak connections by state, top statements.
    database = models.JSONField(default=dict, blank=True)
    # The comparison with its baseline run: validity and per-endpoint verdicts.
    regression = models.JSONField(default=dict, blank=True)
    artifacts_dir = models.CharField(max_length=500, blank=True)
    # What {version} stood for in the start command; the A/B/A comparison it belongs to
    # and its place there. Such runs stay out of the weekly series and its baselines.
    version = models.CharField(max_length=100, blank=True)
    version_comparison = models.ForeignKey(
        "VersionComparison", null=True, blank=True, on_delete=models.CASCADE, related_name="runs"
    )
    role = models.CharField(max_length=2, blank=True)
    postmortems = models.ManyToManyField(
        "postmortems.PostMortem", blank=True, related_name="perf_runs"
    )
    actions = models.ManyToManyField("postmortems.Action", blank=True, related_name="perf_runs")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("perf run")
        verbose_name_plural = _("perf runs")
        constraints = [
            # One run per review environment at a time, held by the database.
            models.UniqueConstraint(
                fields=["environment"],
                condition=Q(status__in=["queued", "running"]),
                name="perfrun_one_active_per_environment",
            ),
            # A redelivered comparison finds its run instead of starting another.
            models.UniqueConstraint(
                fields=["version_comparison", "role"],
                condition=Q(version_comparison__isnull=False),
                name="perfrun_one_per_comparison_role",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scenario.name} #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("perfruns:run", args=[self.pk])

    @property
    def database_name(self) -> str:
        return f"{self.environment.database_name}__run{self.pk}"


class EndpointStat(models.Model):
    run = models.ForeignKey(PerfRun, on_delete=models.CASCADE, related_name="endpoints")
    method = models.CharField(max_length=20, blank=True)
    name = models.CharField(max_length=500)
    requests = models.BigIntegerField()
    failures = models.BigIntegerField()
    avg_ms = models.FloatField()
    min_ms = models.FloatField()
    max_ms = models.FloatField()
    # {"50": 12.0, "95": 80.0, "99.9": 300.0, ...}
    percentiles = models.JSONField(default=dict)
    rps = models.FloatField()

    class Meta:
        ordering = ["name", "method"]
        constraints = [
            models.UniqueConstraint(fields=["run", "method", "name"], name="endpoint_once_per_run")
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.name}".strip()

    @property
    def failure_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def is_aggregate(self) -> bool:
        return self.name == "Aggregated" and not self.method

    def percentile(self, key: str) -> float | None:
        return self.percentiles.get(key)

    @property
    def figures(self) -> EndpointFigures:
        """What perfruns.thresholds reads of an endpoint."""
        return EndpointFigures(
            requests=self.requests,
            failures=self.failures,
            rps=self.rps,
            percentiles=self.percentiles,
        )


class Sample(models.Model):
    """One point of the run's time axis (seconds since the load started)."""

    run = models.ForeignKey(PerfRun, on_delete=models.CASCADE, related_name="samples")
    t = models.FloatField()
    users = models.IntegerField(null=True)
    rps = models.FloatField(null=True)
    failures_per_s = models.FloatField(null=True)
    p50_ms = models.FloatField(null=True)
    p95_ms = models.FloatField(null=True)
    db_pss = models.BigIntegerField(null=True)
    db_pss_anon = models.BigIntegerField(null=True)
    db_pss_shared = models.BigIntegerField(null=True)
    # The database's container (memory cgroup), when it runs in one of its own.
    db_cgroup = models.BigIntegerField(null=True)
    target_rss = models.BigIntegerField(null=True)

    class Meta:
        ordering = ["t", "id"]
        indexes = [models.Index(fields=["run", "t"])]

    def __str__(self) -> str:
        return f"run #{self.run_id} at {self.t:.0f} s"


class FailureGroup(models.Model):
    run = models.ForeignKey(PerfRun, on_delete=models.CASCADE, related_name="failure_groups")
    method = models.CharField(max_length=20, blank=True)
    name = models.CharField(max_length=500)
    error = models.TextField()
    occurrences = models.BigIntegerField()

    class Meta:
        ordering = ["-occurrences", "name"]

    def __str__(self) -> str:
        return f"{self.name}: {self.error[:60]}"


class Artifact(models.Model):
    run = models.ForeignKey(PerfRun, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=500)
    size_bytes = models.BigIntegerField()
    content_type = models.CharField(max_length=100)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["run", "name"], name="artifact_name_once_per_run")
        ]

    def __str__(self) -> str:
        return self.name


# ---------------------------------------------------------------- actions proven by runs


class CriterionMetric(models.TextChoices):
    """Every figure a run measures (perfruns.thresholds), and "not worse than run #N"."""

    P50 = "p50_ms", _("p50 (ms)")
    P95 = "p95_ms", _("p95 (ms)")
    P99 = "p99_ms", _("p99 (ms)")
    FAILURE_RATE = "failure_rate", _("failure rate (0 to 1)")
    RPS = "rps", _("requests/s")
    DB_RAM = "db_ram_peak_mb", _("DB RAM peak (MiB)")
    DB_RAM_SLOPE = "db_ram_slope_mb_per_min", _("DB RAM growth (MiB/min)")
    TARGET_MEMORY = "target_memory_peak_mb", _("target memory peak (MiB)")
    TARGET_MEMORY_SLOPE = "target_memory_slope_mb_per_min", _("target memory growth (MiB/min)")
    PROBABLE_LEAK = "probable_leak", _("no probable leak")
    FIRST_FAILURE = "first_failure_users", _("users at the first failing step")
    KNEE = "knee_users", _("users at the knee")
    MAX_SUSTAINED_RPS = "max_sustained_rps", _("max sustained requests/s")
    NOT_WORSE = "not_worse", _("not worse than a reference run")


class CriterionComparison(models.TextChoices):
    LT = "lt", "<"
    LE = "le", "≤"
    GT = "gt", ">"
    GE = "ge", "≥"
    BETTER_BY = "better_by", _("better than the reference run by at least (%)")


class VerificationOutcome(models.TextChoices):
    PASSED = "passed", _("passed")
    FAILED = "failed", _("failed")
    # The measured value meets the limit but its interval does not, or the run failed its
    # own checks: no evidence either way.
    INCONCLUSIVE = "inconclusive", _("inconclusive")


class VerificationState(models.TextChoices):
    UNVERIFIED = "unverified", _("not verified yet")
    VERIFIED = "verified", _("verified")
    FAILED = "failed", _("failed verification")
    REGRESSED = "regressed", _("regressed")


class VerificationCriterion(models.Model):
    """What a run must show for an action to count as done: "GET /users/[id] p95 < 500 ms
    at 200 users", "failure rate < 1 %", "not worse than run #N"."""

    action = models.OneToOneField(
        "postmortems.Action", on_delete=models.CASCADE, related_name="criterion"
    )
    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="criteria")
    endpoint = models.CharField(
        _("endpoint"), max_length=500, blank=True, help_text=_("Empty: all endpoints together.")
    )
    metric = models.CharField(_("metric"), max_length=40, choices=CriterionMetric.choices)
    comparison = models.CharField(
        _("comparison"),
        max_length=10,
        choices=CriterionComparison.choices,
        default=CriterionComparison.LT,
    )
    value = models.FloatField(_("value"), null=True, blank=True)
    users = models.PositiveIntegerField(
        _("at users"), null=True, blank=True, help_text=_("Only runs at this many users count.")
    )
    reference_run = models.ForeignKey(
        "PerfRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    red_then_green = models.BooleanField(
        _("red then green"),
        default=False,
        help_text=_(
            "Verified only by a version comparison whose version A (before the fix) fails "
            "it and whose version B (the fix) passes it."
        ),
    )
    state = models.CharField(
        max_length=10, choices=VerificationState.choices, default=VerificationState.UNVERIFIED
    )
    # The run that set the state, and what it measured.
    state_run = models.ForeignKey(
        "PerfRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    measured = models.FloatField(null=True, blank=True)
    # The interval of what state_run measured, and why it passed or failed.
    measured_low = models.FloatField(null=True, blank=True)
    measured_high = models.FloatField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)
    # For red then green: the run of the version before the fix that reproduced it.
    red_run = models.ForeignKey(
        "PerfRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("verification criterion")
        verbose_name_plural = _("verification criteria")
        constraints = [
            models.CheckConstraint(
                condition=(Q(metric="not_worse") & Q(reference_run__isnull=False))
                | (Q(metric="probable_leak") & ~Q(comparison="better_by"))
                | (
                    ~Q(metric__in=["not_worse", "probable_leak"])
                    & Q(value__isnull=False)
                    & (~Q(comparison="better_by") | Q(reference_run__isnull=False))
                ),
                name="criterion_has_a_value_or_a_reference",
                violation_error_message=_(
                    "Give a value, and a reference run for 'not worse than' or 'better than'."
                ),
            ),
        ]

    def __str__(self) -> str:
        return self.description

    @property
    def description(self) -> str:
        where = self.endpoint or "all endpoints"
        at = f" at {self.users} users" if self.users else ""
        red = ", red then green" if self.red_then_green else ""
        if self.metric == CriterionMetric.NOT_WORSE:
            what = f"not worse than run #{self.reference_run_id}"
        elif self.metric == CriterionMetric.PROBABLE_LEAK:
            what = "no probable leak"
        elif self.comparison == CriterionComparison.BETTER_BY:
            what = f"{self.metric} better than run #{self.reference_run_id} by {self.value:g} %"
        else:
            what = f"{self.metric} {self.get_comparison_display()} {self.value:g}"
        return f"{where} {what}{at}{red} ({self.scenario})"


class Verification(models.Model):
    """One run's evaluation of a criterion: the evidence behind the action's state."""

    criterion = models.ForeignKey(
        VerificationCriterion, on_delete=models.CASCADE, related_name="verifications"
    )
    run = models.ForeignKey(PerfRun, on_delete=models.CASCADE, related_name="verifications")
    passed = models.BooleanField()
    outcome = models.CharField(
        max_length=12, choices=VerificationOutcome.choices, default=VerificationOutcome.PASSED
    )
    measured = models.FloatField(null=True, blank=True)
    measured_low = models.FloatField(null=True, blank=True)
    measured_high = models.FloatField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["criterion", "run"], name="verification_once_per_run")
        ]

    def __str__(self) -> str:
        return f"{self.criterion_id} by run #{self.run_id}: {self.outcome}"


# ---------------------------------------------------------------- notifications


class WebhookKind(models.TextChoices):
    MATTERMOST = "mattermost", "Mattermost"
    SLACK = "slack", "Slack"
    JSON = "json", _("JSON webhook")


class Webhook(models.Model):
    """Where a team hears about its regressions, verifications and run errors. The URL is
    a secret (it holds a token): given by an environment variable, or typed in the admin,
    never shown back."""

    team = models.ForeignKey("postmortems.Team", on_delete=models.CASCADE, related_name="webhooks")
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


class NotificationSent(models.Model):
    """One delivery already made (or under way): the key of an event for one hook."""

    key = models.CharField(max_length=300, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key


class ChangeState(models.TextChoices):
    CONFIRMED = "confirmed", _("confirmed")
    ACCEPTED = "accepted", _("accepted as the new normal")
    FIXED = "fixed", _("fixed")


class RegressionIncident(models.Model):
    """The draft post-mortem opened for a change point of a scenario's series: one per
    scenario and run where the new level starts. (A worse run without a change point yet
    is only suspected: its comparison says so on the run page.)"""

    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="incidents")
    state = models.CharField(
        max_length=10, choices=ChangeState.choices, default=ChangeState.CONFIRMED
    )
    start_run = models.ForeignKey(PerfRun, on_delete=models.CASCADE, related_name="+")
    # The first run of the series back at the level it had before, when change-point
    # detection saw it return (a fix marked by hand has none).
    fixed_by_run = models.ForeignKey(
        PerfRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    postmortem = models.ForeignKey(
        "postmortems.PostMortem", on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["scenario", "start_run"], name="regression_incident_once_per_change"
            )
        ]

    def __str__(self) -> str:
        return f"{self.scenario} from run #{self.start_run_id}"


# ---------------------------------------------------------------- A/B/A comparisons


class ComparisonStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    DONE = "done", _("Done")
    ERROR = "error", _("Error")
    CANCELLED = "cancelled", _("Cancelled")


class ComparisonVerdict(models.TextChoices):
    WORSE = "worse", _("B is worse")
    SAME = "same", _("B is the same")
    BETTER = "better", _("B is better")
    INCONCLUSIVE = "inconclusive", _("inconclusive")
    DRIFT = "drift", _("A drifted: no verdict")
    INVALID = "invalid", _("not comparable")


# The three runs in the order they are made: A, then B, then A again.
ABA_ROLES = (("a1", _("A")), ("b", _("B")), ("a2", _("A again")))


class VersionComparison(Job):
    """Version A against version B of the target, as A, B, A back to back on one review
    environment: B is judged against both A runs, and the two A runs against each other
    tell whether the environment drifted meanwhile."""

    scenario = models.ForeignKey(
        Scenario, on_delete=models.CASCADE, related_name="version_comparisons"
    )
    version_a = models.CharField(_("version A"), max_length=100)
    version_b = models.CharField(_("version B"), max_length=100)
    status = models.CharField(
        max_length=10, choices=ComparisonStatus.choices, default=ComparisonStatus.QUEUED
    )
    verdict = models.CharField(max_length=12, choices=ComparisonVerdict.choices, blank=True)
    # {"rows": [...], "drift": [...], "reasons": [...], "pairs": {...}}
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("version comparison")
        verbose_name_plural = _("version comparisons")
        constraints = [
            models.CheckConstraint(
                condition=~Q(version_a="") & ~Q(version_b=""),
                name="version_comparison_has_both_versions",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scenario.name}: {self.version_a} / {self.version_b} / {self.version_a}"

    def get_absolute_url(self) -> str:
        return reverse("perfruns:version_comparison", args=[self.pk])

    def version_of(self, role: str) -> str:
        return self.version_b if role == "b" else self.version_a
