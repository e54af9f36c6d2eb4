from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from .masking.policy import PolicyError, parse_policy
from .models import (
    CriterionComparison,
    CriterionMetric,
    DumpSource,
    EnvironmentKind,
    PerfRun,
    Scenario,
    Snapshot,
    SnapshotStatus,
)
from .services.common import looks_like_dsn


class VariableNameInput(forms.TextInput):
    """Never renders a DSN back into the page: one pasted by mistake holds a password."""

    def format_value(self, value: Any) -> str | None:
        if value and looks_like_dsn(str(value)):
            return None
        return super().format_value(value)


class SourceForm(forms.Form):
    name = forms.SlugField(max_length=100, label=_("Name"))
    dsn_env = forms.CharField(
        max_length=100,
        required=False,
        widget=VariableNameInput,
        label=_("DSN environment variable"),
    )
    dsn_file = forms.CharField(max_length=500, required=False, label=_("DSN secret file"))
    retention = forms.IntegerField(min_value=1, required=False, label=_("Snapshots kept"))
    policy_yaml = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 24, "class": "code", "spellcheck": "false"}),
        label=_("Masking policy (YAML)"),
    )

    def clean_policy_yaml(self) -> str:
        text = self.cleaned_data["policy_yaml"]
        try:
            parse_policy(text)
        except PolicyError as exc:
            raise forms.ValidationError(str(exc)) from None
        return text

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if bool(data.get("dsn_env")) == bool(data.get("dsn_file")):
            raise forms.ValidationError(
                _("Give either the DSN environment variable or the DSN file, not both.")
            )
        return data


class EnvironmentForm(forms.Form):
    name = forms.SlugField(max_length=100, label=_("Name"))
    kind = forms.ChoiceField(choices=EnvironmentKind.choices, label=_("Kind"))
    dsn_env = forms.CharField(
        max_length=100,
        required=False,
        widget=VariableNameInput,
        label=_("Admin DSN environment variable"),
    )
    database_name = forms.CharField(max_length=50, initial="review", label=_("Database name"))
    source = forms.ModelChoiceField(
        queryset=DumpSource.objects.all(), required=False, label=_("Dump source")
    )
    shared_buffers = forms.CharField(max_length=20, initial="128MB", label="shared_buffers")
    work_mem = forms.CharField(max_length=20, initial="4MB", label="work_mem")
    max_connections = forms.IntegerField(
        min_value=5, max_value=10000, initial=100, label="max_connections"
    )


class RestoreForm(forms.Form):
    snapshot = forms.ModelChoiceField(
        # A snapshot's label names its source: joined, not one query per <option>.
        queryset=Snapshot.objects.filter(
            status=SnapshotStatus.READY, deleted_at__isnull=True
        ).select_related("source"),
        required=False,
        empty_label=_("Latest ready snapshot"),
        label=_("Snapshot"),
    )


class ScheduleForm(forms.Form):
    DAYS = [
        ("1", _("Monday")),
        ("2", _("Tuesday")),
        ("3", _("Wednesday")),
        ("4", _("Thursday")),
        ("5", _("Friday")),
        ("6", _("Saturday")),
        ("0", _("Sunday")),
        ("*", _("Every day")),
    ]
    day_of_week = forms.ChoiceField(label=_("Day"), choices=DAYS)
    hour = forms.IntegerField(label=_("Hour"), min_value=0, max_value=23)
    minute = forms.IntegerField(label=_("Minute"), min_value=0, max_value=59)
    enabled = forms.BooleanField(label=_("Enabled"), required=False)


class VersionComparisonForm(forms.Form):
    version_a = forms.CharField(max_length=100, label=_("Version A (reference)"))
    version_b = forms.CharField(max_length=100, label=_("Version B (under test)"))


class CriterionForm(forms.Form):
    """The proof an action asks for: what a run of a scenario must show."""

    scenario = forms.ModelChoiceField(queryset=Scenario.objects.all(), label=_("Scenario"))
    endpoint = forms.CharField(
        max_length=500,
        required=False,
        label=_("Endpoint"),
        help_text=_("As Locust names it (/users/[id]); empty: all endpoints together."),
    )
    metric = forms.ChoiceField(choices=CriterionMetric.choices, label=_("Metric"))
    comparison = forms.ChoiceField(choices=CriterionComparison.choices, label=_("Comparison"))
    value = forms.FloatField(required=False, label=_("Value"))
    users = forms.IntegerField(
        min_value=1,
        required=False,
        label=_("At users"),
        help_text=_("Only runs at this many users count; empty: any run of the scenario."),
    )
    reference_run = forms.IntegerField(
        min_value=1,
        required=False,
        label=_("Reference run"),
        help_text=_(
            "For “not worse than” and “better than … by at least (%)”: the number of the run "
            "to compare with."
        ),
    )
    red_then_green = forms.BooleanField(
        required=False,
        label=_("Red then green"),
        help_text=_(
            "Verified only by a version comparison: version A (before the fix) must fail "
            "the proof — the incident reproduced — and version B (the fix) pass it."
        ),
    )

    def clean_reference_run(self) -> Any:
        number = self.cleaned_data["reference_run"]
        if number is None:
            return None
        run = PerfRun.objects.select_related("scenario").filter(pk=number).first()
        if run is None:
            raise forms.ValidationError(_("There is no run #%(n)s.") % {"n": number})
        return run
