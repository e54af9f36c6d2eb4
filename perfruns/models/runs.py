"""Scenarios and their perf runs, with everything a run measured; the changes the weekly
series confirms; A/B/A version comparisons."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from perfruns.thresholds import EndpointFigures

from .jobs import Job
from .sources import ReviewEnvironment, Snapshot


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
        ReviewEnvironment,
        on_delete=models.PROTECT,
        related_name="scenarios",
        verbose_name=_("environment"),
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
    # The team whose service it loads: its health on the managers' dashboard.
    team = models.ForeignKey(
        "postmortems.Team",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="scenarios",
        verbose_name=_("team"),
    )
    tags = models.CharField(_("tags"), max_length=200, blank=True)
    # The YAML file load_scenarios read it from: that file stays the source of truth, so
    # the scenario's page refuses edits the next load would overwrite.
    defined_in = models.CharField(
        _("defined in"),
        max_length=500,
        blank=True,
        help_text=_(
            "The YAML file the scenario is loaded from (load_scenarios); empty when it is "
            "edited on its page."
        ),
    )
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
        "postmortems.PostMortem",
        blank=True,
        related_name="scenarios",
        verbose_name=_("post-mortems"),
    )
    actions = models.ManyToManyField(
        "postmortems.Action", blank=True, related_name="scenarios", verbose_name=_("actions")
    )
    # The change points of the series, computed after each run (E-divisive costs seconds
    # over hundreds of runs: no page view computes it): services.scenario_trend_refresh.
    trend = models.JSONField(default=list, blank=True, editable=False, verbose_name=_("trend"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

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

    scenario = models.ForeignKey(
        Scenario, on_delete=models.CASCADE, related_name="runs", verbose_name=_("scenario")
    )
    environment = models.ForeignKey(
        ReviewEnvironment,
        on_delete=models.PROTECT,
        related_name="runs",
        verbose_name=_("environment"),
    )
    status = models.CharField(
        max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED, verbose_name=_("status")
    )
    progress = models.PositiveSmallIntegerField(default=0, verbose_name=_("progress (%)"))
    trigger = models.CharField(max_length=10, choices=RunTrigger.choices, verbose_name=_("trigger"))
    # The load generator was saturated (or another reason): figures not to be compared.
    invalid_reason = models.CharField(max_length=300, blank=True, verbose_name=_("invalid because"))
    # Why it passed or failed: one sentence per threshold checked.
    verdict = models.JSONField(default=list, blank=True, verbose_name=_("verdict"))
    # What the run used, copied at its start: later edits of the scenario do not change it.
    locustfile_sha256 = models.CharField(
        max_length=64, blank=True, verbose_name=_("locustfile SHA-256")
    )
    settings = models.JSONField(default=dict, blank=True, verbose_name=_("settings"))
    environment_settings = models.JSONField(
        default=dict, blank=True, verbose_name=_("environment settings")
    )
    snapshot = models.ForeignKey(
        Snapshot,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        verbose_name=_("snapshot"),
    )
    # Totals, peaks, the sampler's achieved interval, breaking point, memory slopes.
    summary = models.JSONField(default=dict, blank=True, verbose_name=_("summary"))
    # pg_stat_database before/after, peak connections by state, top statements.
    database = models.JSONField(default=dict, blank=True, verbose_name=_("database figures"))
    # The comparison with its baseline run: validity and per-endpoint verdicts.
    regression = models.JSONField(
        default=dict, blank=True, verbose_name=_("comparison with the baseline")
    )
    artifacts_dir = models.CharField(max_length=500, blank=True, verbose_name=_("files folder"))
    # What {version} stood for in the start command; the A/B/A comparison it belongs to
    # and its place there. Such runs stay out of the weekly series and its baselines.
    version = models.CharField(max_length=100, blank=True, verbose_name=_("version"))
    version_comparison = models.ForeignKey(
        "VersionComparison",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="runs",
        verbose_name=_("version comparison"),
    )
    role = models.CharField(max_length=2, blank=True, verbose_name=_("role"))
    postmortems = models.ManyToManyField(
        "postmortems.PostMortem",
        blank=True,
        related_name="perf_runs",
        verbose_name=_("post-mortems"),
    )
    actions = models.ManyToManyField(
        "postmortems.Action", blank=True, related_name="perf_runs", verbose_name=_("actions")
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("perf run")
        verbose_name_plural = _("perf runs")
        # A scenario's last runs and its runs of the week (the dashboard's team health).
        indexes = [
            models.Index(fields=["scenario", "finished_at"], name="perfrun_scenario_done_idx")
        ]
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
    # RSS counts a page shared by a pre-forked server's workers once per worker; PSS
    # splits it between them (a 4-worker server: RSS 131 MiB, PSS 64 MiB).
    target_pss = models.BigIntegerField(null=True)
    target_processes = models.IntegerField(null=True)

    class Meta:
        ordering = ["t", "id"]
        indexes = [models.Index(fields=["run", "t"])]

    def __str__(self) -> str:
        return f"run #{self.run_id} at {self.t:.0f} s"


class EndpointSample(models.Model):
    """One endpoint at one second of the run (Locust's full history): its p95 over Locust's
    sliding window and its requests per second, to see one route slow another down."""

    run = models.ForeignKey(PerfRun, on_delete=models.CASCADE, related_name="endpoint_samples")
    t = models.FloatField()
    method = models.CharField(max_length=20, blank=True)
    name = models.CharField(max_length=500)
    p95_ms = models.FloatField(null=True)
    rps = models.FloatField(null=True)

    class Meta:
        ordering = ["t", "id"]
        indexes = [models.Index(fields=["run", "t"])]

    def __str__(self) -> str:
        return f"{self.method} {self.name} at {self.t:.0f} s".strip()


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
    # When it was said fixed or accepted (by a run back at the old level, or by hand):
    # the managers' dashboard counts regressions fixed per month.
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["scenario", "start_run"], name="regression_incident_once_per_change"
            )
        ]

    def __str__(self) -> str:
        return f"{self.scenario} from run #{self.start_run_id}"


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
        Scenario,
        on_delete=models.CASCADE,
        related_name="version_comparisons",
        verbose_name=_("scenario"),
    )
    version_a = models.CharField(_("version A"), max_length=100)
    version_b = models.CharField(_("version B"), max_length=100)
    status = models.CharField(
        max_length=10,
        choices=ComparisonStatus.choices,
        default=ComparisonStatus.QUEUED,
        verbose_name=_("status"),
    )
    verdict = models.CharField(
        max_length=12, choices=ComparisonVerdict.choices, blank=True, verbose_name=_("verdict")
    )
    # {"rows": [...], "drift": [...], "reasons": [...], "pairs": {...}}
    result = models.JSONField(default=dict, blank=True, verbose_name=_("result"))

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
