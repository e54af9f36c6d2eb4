"""Actions proven by runs: what a run must show for an action to count as done, and each
run's judgement of it."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from .runs import PerfRun, Scenario


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
        "postmortems.Action",
        on_delete=models.CASCADE,
        related_name="criterion",
        verbose_name=_("action"),
    )
    scenario = models.ForeignKey(
        Scenario, on_delete=models.CASCADE, related_name="criteria", verbose_name=_("scenario")
    )
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
        max_length=10,
        choices=VerificationState.choices,
        default=VerificationState.UNVERIFIED,
        verbose_name=_("state"),
    )
    # The run that set the state, and what it measured.
    state_run = models.ForeignKey(
        "PerfRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("run that decided it"),
    )
    measured = models.FloatField(null=True, blank=True, verbose_name=_("measured"))
    # The interval of what state_run measured, and why it passed or failed.
    measured_low = models.FloatField(null=True, blank=True, verbose_name=_("measured, low end"))
    measured_high = models.FloatField(null=True, blank=True, verbose_name=_("measured, high end"))
    note = models.CharField(max_length=300, blank=True, verbose_name=_("note"))
    # For red then green: the run of the version before the fix that reproduced it.
    red_run = models.ForeignKey(
        "PerfRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("red run"),
    )
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

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
        VerificationCriterion,
        on_delete=models.CASCADE,
        related_name="verifications",
        verbose_name=_("proof asked"),
    )
    run = models.ForeignKey(
        PerfRun, on_delete=models.CASCADE, related_name="verifications", verbose_name=_("run")
    )
    passed = models.BooleanField(verbose_name=_("passed"))
    outcome = models.CharField(
        max_length=12,
        choices=VerificationOutcome.choices,
        default=VerificationOutcome.PASSED,
        verbose_name=_("outcome"),
    )
    measured = models.FloatField(null=True, blank=True, verbose_name=_("measured"))
    measured_low = models.FloatField(null=True, blank=True, verbose_name=_("measured, low end"))
    measured_high = models.FloatField(null=True, blank=True, verbose_name=_("measured, high end"))
    note = models.CharField(max_length=300, blank=True, verbose_name=_("note"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("verification")
        verbose_name_plural = _("verifications")
        constraints = [
            models.UniqueConstraint(fields=["criterion", "run"], name="verification_once_per_run")
        ]

    def __str__(self) -> str:
        return f"{self.criterion_id} by run #{self.run_id}: {self.outcome}"
