from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

User = settings.AUTH_USER_MODEL


class Team(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    slug = models.SlugField(_("slug"), max_length=100, unique=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="teams", blank=True, verbose_name=_("members")
    )
    # Told when an action of the team's post-mortems is overdue for too long.
    manager = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="managed_teams",
        verbose_name=_("manager"),
    )

    class Meta:
        ordering = ["name"]
        verbose_name = _("team")
        verbose_name_plural = _("teams")

    def __str__(self) -> str:
        return self.name


class Severity(models.TextChoices):
    SEV1 = "sev1", "SEV1"
    SEV2 = "sev2", "SEV2"
    SEV3 = "sev3", "SEV3"
    SEV4 = "sev4", "SEV4"


class PostMortemStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    IN_REVIEW = "in_review", _("In review")
    PUBLISHED = "published", _("Published")


class PostMortem(models.Model):
    """An incident and its post-mortem: one record, written by its authors.

    DESIGN.md draws Incident 1-1 PostMortem; they share a lifetime and a page,
    so they share a row.
    """

    title = models.CharField(_("title"), max_length=200)
    severity = models.CharField(
        _("severity"), max_length=4, choices=Severity.choices, default=Severity.SEV3
    )
    status = models.CharField(
        _("status"),
        max_length=12,
        choices=PostMortemStatus.choices,
        default=PostMortemStatus.DRAFT,
    )
    written_on = models.DateField(_("date"), null=True, blank=True)
    started_at = models.DateTimeField(_("incident start"), null=True, blank=True)
    ended_at = models.DateTimeField(_("incident end"), null=True, blank=True)
    detected_at = models.DateTimeField(_("detected at"), null=True, blank=True)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)
    authors = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        related_name="authored_postmortems",
        blank=True,
        verbose_name=_("authors"),
    )
    # Authors named in an imported wiki page who have no account here.
    external_authors = ArrayField(
        models.CharField(max_length=100), default=list, blank=True, verbose_name=_("other authors")
    )
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="postmortems",
        verbose_name=_("team"),
    )
    services = ArrayField(
        models.CharField(max_length=60), default=list, blank=True, verbose_name=_("services")
    )
    is_private = models.BooleanField(
        _("private"),
        default=False,
        help_text=_("Only its authors, its team, managers and administrators can see it."),
    )
    summary = models.TextField(_("summary"), blank=True)
    trigger = models.TextField(_("trigger"), blank=True)
    resolution = models.TextField(_("resolution"), blank=True)
    detection = models.TextField(_("detection"), blank=True)
    lessons_learned = models.TextField(_("lessons learned"), blank=True)
    created_by = models.ForeignKey(
        User,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    published_at = models.DateTimeField(_("published at"), null=True, blank=True)
    # Kept current by postmortems.services.postmortem_reindex after each write.
    search_vector = SearchVectorField(null=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("post-mortem")
        verbose_name_plural = _("post-mortems")
        indexes = [
            GinIndex(fields=["search_vector"], name="postmortem_search_idx"),
            models.Index(fields=["status", "severity"], name="postmortem_status_sev_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True)
                | Q(started_at__isnull=True)
                | Q(ended_at__gte=models.F("started_at")),
                name="postmortem_ends_after_start",
                violation_error_message=_("The incident cannot end before it starts."),
            ),
            models.CheckConstraint(
                condition=Q(status="published", published_at__isnull=False)
                | (~Q(status="published") & Q(published_at__isnull=True)),
                name="postmortem_published_at_iff_published",
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("postmortems:detail", args=[self.pk])

    def publish_checklist(self) -> list[tuple[str, bool]]:
        """What publishing needs, each with whether it is there.

        Reads through the related managers so a prefetch on the page is reused.
        """
        # One read of the actions: without a prefetch each .all() is a query.
        actions = list(self.actions.all())
        kinds = {a.kind for a in actions if a.status != ActionStatus.WONT_DO}
        items = [
            (str(_("A summary")), bool(self.summary.strip())),
            (str(_("At least one quantified impact")), bool(self.impacts.all())),
            (str(_("At least one root cause")), bool(self.root_causes.all())),
            (str(_("At least one action")), bool(actions)),
        ]
        if self.severity in (Severity.SEV1, Severity.SEV2):
            items += [
                (str(_("A detect action (SEV1/SEV2)")), ActionKind.DETECT in kinds),
                (str(_("A prevent action (SEV1/SEV2)")), ActionKind.PREVENT in kinds),
            ]
        return items

    def missing_for_publication(self) -> list[str]:
        return [label for label, ok in self.publish_checklist() if not ok]

    @property
    def duration(self) -> dt.timedelta | None:
        if self.started_at and self.ended_at:
            return self.ended_at - self.started_at
        return None


class ExtraSection(models.Model):
    """A section of an imported page that Fixproof has no field for: kept verbatim."""

    postmortem = models.ForeignKey(
        PostMortem,
        on_delete=models.CASCADE,
        related_name="extra_sections",
        verbose_name=_("post-mortem"),
    )
    heading = models.CharField(_("heading"), max_length=200)
    body = models.TextField(_("text"), blank=True)
    position = models.PositiveIntegerField(_("position"), default=0)

    class Meta:
        ordering = ["position", "id"]
        verbose_name = _("extra section")
        verbose_name_plural = _("extra sections")

    def __str__(self) -> str:
        return self.heading


class ImpactFigure(models.Model):
    """One quantified impact: "failed requests 270 of 1620", "p95 6 s"."""

    postmortem = models.ForeignKey(
        PostMortem, on_delete=models.CASCADE, related_name="impacts", verbose_name=_("post-mortem")
    )
    label = models.CharField(_("label"), max_length=300)
    value = models.DecimalField(_("value"), max_digits=20, decimal_places=4, null=True, blank=True)
    # "from 40 ms to 1.2 s": value 1.2, value_before 0.04, in the same unit.
    value_before = models.DecimalField(
        _("value before"), max_digits=20, decimal_places=4, null=True, blank=True
    )
    unit = models.CharField(_("unit"), max_length=60, blank=True)
    window = models.CharField(_("window"), max_length=120, blank=True)
    position = models.PositiveIntegerField(_("position"), default=0)

    class Meta:
        ordering = ["position", "id"]
        verbose_name = _("impact")
        verbose_name_plural = _("impacts")

    def __str__(self) -> str:
        return self.label


class RootCauseCategory(models.TextChoices):
    UNSPECIFIED = "", _("Unspecified")
    CAPACITY = "capacity", _("Capacity")
    DATABASE = "database", _("Database")
    CODE = "code", _("Code")
    CONFIGURATION = "configuration", _("Configuration")
    DEPENDENCY = "dependency", _("Dependency")
    INFRASTRUCTURE = "infrastructure", _("Infrastructure")
    PROCESS = "process", _("Process")


class RootCause(models.Model):
    postmortem = models.ForeignKey(
        PostMortem,
        on_delete=models.CASCADE,
        related_name="root_causes",
        verbose_name=_("post-mortem"),
    )
    category = models.CharField(
        _("category"), max_length=20, choices=RootCauseCategory.choices, blank=True
    )
    description = models.TextField(_("description"))
    position = models.PositiveIntegerField(_("position"), default=0)

    class Meta:
        ordering = ["position", "id"]
        verbose_name = _("root cause")
        verbose_name_plural = _("root causes")

    def __str__(self) -> str:
        return self.description[:80]


class TimelineEntry(models.Model):
    postmortem = models.ForeignKey(
        PostMortem, on_delete=models.CASCADE, related_name="timeline", verbose_name=_("post-mortem")
    )
    occurred_at = models.DateTimeField(_("time"))
    text = models.TextField(_("what happened"))

    class Meta:
        ordering = ["occurred_at", "id"]
        verbose_name = _("timeline entry")
        verbose_name_plural = _("timeline entries")

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M} {self.text[:60]}"


class ActionKind(models.TextChoices):
    INVESTIGATE = "investigate", _("investigate")
    MITIGATE = "mitigate", _("mitigate")
    REPAIR = "repair", _("repair")
    DETECT = "detect", _("detect")
    PREVENT = "prevent", _("prevent")
    PROCESS = "process", _("process")


class ActionStatus(models.TextChoices):
    TODO = "todo", _("to do")
    TO_DEBATE = "to_debate", _("to debate")
    IN_PROGRESS = "in_progress", _("in progress")
    DONE = "done", _("done")
    WONT_DO = "wont_do", _("won't do")


OPEN_ACTION_STATUSES = (ActionStatus.TODO, ActionStatus.TO_DEBATE, ActionStatus.IN_PROGRESS)


class Action(models.Model):
    postmortem = models.ForeignKey(
        PostMortem, on_delete=models.CASCADE, related_name="actions", verbose_name=_("post-mortem")
    )
    number = models.PositiveIntegerField(_("number"))
    kind = models.CharField(_("kind"), max_length=12, choices=ActionKind.choices)
    title = models.CharField(_("title"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    owner = models.ForeignKey(
        User,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_actions",
        verbose_name=_("owner"),
    )
    # An owner named in an imported page who has no account here.
    owner_name = models.CharField(_("owner (no account)"), max_length=100, blank=True)
    due_date = models.DateField(_("due date"), null=True, blank=True)
    status = models.CharField(
        _("status"), max_length=12, choices=ActionStatus.choices, default=ActionStatus.TODO
    )
    ticket_url = models.URLField(_("ticket URL"), blank=True)
    done_at = models.DateTimeField(_("done at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["number"]
        verbose_name = _("action")
        verbose_name_plural = _("actions")
        constraints = [
            models.UniqueConstraint(fields=["postmortem", "number"], name="action_number_unique"),
            models.CheckConstraint(
                condition=Q(status="done", done_at__isnull=False)
                | (~Q(status="done") & Q(done_at__isnull=True)),
                name="action_done_at_iff_done",
            ),
        ]

    def __str__(self) -> str:
        return f"Action {self.number} ({self.kind}): {self.title}"

    def get_absolute_url(self) -> str:
        """The action on its post-mortem's page."""
        return f"{self.postmortem.get_absolute_url()}#action-{self.number}"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_ACTION_STATUSES

    @property
    def is_overdue(self) -> bool:
        return bool(self.due_date and self.is_open and self.due_date < timezone.localdate())

    @property
    def owner_display(self) -> str:
        if self.owner is not None:
            return self.owner.get_full_name() or self.owner.get_username()
        return self.owner_name


class HistoryEntry(models.Model):
    """Who changed what on a post-mortem or one of its actions, and when."""

    postmortem = models.ForeignKey(
        PostMortem, on_delete=models.CASCADE, related_name="history", verbose_name=_("post-mortem")
    )
    action = models.ForeignKey(
        Action,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="history",
        verbose_name=_("action"),
    )
    actor = models.ForeignKey(
        User,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("by"),
    )
    at = models.DateTimeField(_("when"), default=timezone.now)
    # What was touched, as shown to a reader: "post-mortem", "Action 2", "impacts".
    subject = models.CharField(_("what"), max_length=200)
    verb = models.CharField(_("change"), max_length=40)
    # [{"field": ..., "old": ..., "new": ...}], values already rendered as text.
    changes = models.JSONField(_("changes"), default=list, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = _("history entry")
        verbose_name_plural = _("history entries")

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.subject} {self.verb}"

    # Rows store plain English keys; whole phrases are translated, so French
    # grammar ("du post-mortem") is the translator's, not string glue.
    PHRASES = {
        ("created", "post-mortem"): _("created the post-mortem"),
        ("imported", "post-mortem"): _("imported the post-mortem"),
        ("updated", "post-mortem"): _("updated the post-mortem"),
        ("status", "post-mortem"): _("changed the status of the post-mortem"),
        ("updated", "impacts"): _("updated the impacts"),
        ("updated", "root causes"): _("updated the root causes"),
        ("updated", "timeline"): _("updated the timeline"),
        ("updated", "other sections"): _("updated the other sections"),
        ("created", "action"): _("created action %(n)s"),
        ("updated", "action"): _("updated action %(n)s"),
        ("removed", "action"): _("removed action %(n)s"),
    }

    @property
    def description(self) -> str:
        number = self.subject.removeprefix("Action ")
        subject = "action" if number != self.subject else self.subject
        phrase = self.PHRASES.get((self.verb, subject))
        if phrase is None:
            return f"{self.verb} {self.subject}"
        return str(phrase) % {"n": number} if subject == "action" else str(phrase)

    def changes_display(self) -> list[tuple[str, str, str]]:
        """(field label, old, new) for each change, labels and statuses translated."""
        model = Action if self.subject.startswith("Action ") else PostMortem
        statuses = dict(ActionStatus.choices if model is Action else PostMortemStatus.choices)
        rows = []
        for change in self.changes:
            name = change.get("field", "")
            try:
                field = model._meta.get_field(name)
            except FieldDoesNotExist:
                field = None
            label = str(field.verbose_name) if isinstance(field, models.Field) else name
            old, new = change.get("old", ""), change.get("new", "")
            if name == "status":
                old, new = str(statuses.get(old, old)), str(statuses.get(new, new))
            rows.append((label, old, new))
        return rows
