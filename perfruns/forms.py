from __future__ import annotations

from typing import Any

import yaml
from django import forms
from django.utils.translation import gettext_lazy as _

from postmortems.models import Team

from .masking.policy import PolicyError, parse_policy
from .models import (
    LOAD_SHAPE_FIELDS,
    CriterionComparison,
    CriterionMetric,
    DumpSource,
    EnvironmentKind,
    PerfRun,
    ReviewEnvironment,
    Scenario,
    ShapeKind,
    Snapshot,
    SnapshotStatus,
)
from .services import scenarios
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


class MappingField(forms.CharField):
    """A mapping written as YAML (JSON is YAML too): thresholds, floors, environment."""

    widget = forms.Textarea(attrs={"rows": 6, "class": "code", "spellcheck": "false"})

    def __init__(self, *, example: str, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(strip=False, **kwargs)
        self.example = example

    def to_python(self, value: Any) -> dict[str, Any]:  # type: ignore[override]
        text = super().to_python(value) or ""
        if not text.strip():
            return {}
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise forms.ValidationError(
                _(
                    "Not valid YAML (line %(line)s): write one “key: value” a line, "
                    "as in %(example)s."
                )
                % {"line": mark.line + 1 if mark is not None else 1, "example": self.example}
            ) from None
        if parsed is None:
            return {}
        if not isinstance(parsed, dict):
            raise forms.ValidationError(
                _("Write “key: value” pairs, as in %(example)s.") % {"example": self.example}
            )
        return parsed

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return yaml.safe_dump(value, sort_keys=False, allow_unicode=True) if value else ""
        return value


# The scenario fields the page edits (the others, such as the schedule, have their own form
# or stay as they are).
SCENARIO_FORM_FIELDS = (
    "description",
    "team",
    "environment",
    "target_url",
    "health_url",
    "health_timeout_s",
    "locustfile_path",
    "locustfile_text",
    "restore_first",
    "start_command",
    "start_env",
    "default_version",
    *LOAD_SHAPE_FIELDS,
    "workers",
    "warmup_s",
    "thresholds",
    "floors",
    "fail_on_memory_regression",
    "tags",
)


class ScenarioForm(forms.Form):
    """A scenario on its page. Every problem is reported at once: each field's own, then
    what the pipeline would refuse (services.scenarios.scenario_problems)."""

    name = forms.SlugField(max_length=100, label=_("Name"))
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), label=_("Description")
    )
    team = forms.ModelChoiceField(
        queryset=Team.objects.all(),
        required=False,
        label=_("Team"),
        help_text=_("The team whose service it loads."),
    )
    environment = forms.ModelChoiceField(
        queryset=ReviewEnvironment.objects.all(), label=_("Review environment")
    )
    target_url = forms.CharField(
        max_length=300,
        label=_("Target base URL"),
        help_text=_("On this machine: 127.0.0.1, ::1 or localhost."),
    )
    health_url = forms.CharField(max_length=300, required=False, label=_("Health URL"))
    health_timeout_s = forms.IntegerField(min_value=1, initial=60, label=_("Health timeout (s)"))
    locustfile_path = forms.CharField(
        max_length=500,
        required=False,
        label=_("Locustfile path"),
        help_text=_("In the repository checkout on the worker; or paste the locustfile below."),
    )
    locustfile_text = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 8, "class": "code", "spellcheck": "false"}),
        label=_("Locustfile"),
    )
    restore_first = forms.BooleanField(
        required=False, label=_("Restore the latest snapshot before each run")
    )
    start_command = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "class": "code", "spellcheck": "false"}),
        label=_("Target start command"),
        help_text=_("Run with DATABASE_URL set to the run's database; stopped after the run."),
    )
    start_env = MappingField(label=_("Target environment"), example="DEBUG: '0'")
    default_version = forms.CharField(
        max_length=100,
        required=False,
        label=_("Version of the weekly runs"),
        help_text=_("What {version} stands for in the start command, outside comparisons."),
    )
    shape = forms.ChoiceField(choices=ShapeKind.choices, label=_("Load shape"))
    users = forms.IntegerField(min_value=0, initial=10, label=_("Users"))
    spawn_rate = forms.FloatField(initial=10, label=_("Spawn rate (users/s)"))
    duration_s = forms.IntegerField(min_value=0, initial=60, label=_("Duration (s)"))
    step_start = forms.IntegerField(min_value=0, initial=0, label=_("First step users"))
    step_size = forms.IntegerField(min_value=0, initial=0, label=_("Step size"))
    step_duration_s = forms.IntegerField(min_value=0, initial=0, label=_("Step duration (s)"))
    step_max = forms.IntegerField(min_value=0, initial=0, label=_("Last step users"))
    arrival_rps = forms.FloatField(initial=0, label=_("Arrival rate (requests/s)"))
    workers = forms.IntegerField(
        min_value=0, initial=0, label=_("Locust workers"), help_text=_("0: one Locust process.")
    )
    warmup_s = forms.IntegerField(
        min_value=0,
        required=False,
        label=_("Warm-up (s)"),
        help_text=_("Empty: 15 s, at most a fifth of the run after the ramp."),
    )
    thresholds = MappingField(
        label=_("Thresholds"),
        example="p95_ms: 500",
        help_text=_(
            "One limit a line: p95_ms: 500, failure_rate: 0.01, min_rps: 20, "
            "db_ram_peak_mb: 1500; per endpoint under endpoints:."
        ),
    )
    floors = MappingField(
        label=_("Floors of a change"),
        example="latency_rel: 0.2",
        help_text=_("The smallest changes that matter, e.g. db_ram_abs_mb: 32; empty: defaults."),
    )
    fail_on_memory_regression = forms.BooleanField(
        required=False, label=_("Fail a run whose memory is worse than its baseline")
    )
    tags = forms.CharField(max_length=200, required=False, label=_("Tags"))

    @staticmethod
    def initial_for(scenario: Scenario) -> dict[str, Any]:
        initial = {name: getattr(scenario, name) for name in SCENARIO_FORM_FIELDS}
        initial["name"] = scenario.name
        return initial

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if name == "new":
            raise forms.ValidationError(_("“new” is the address of the new scenario page."))
        return name

    def values(self) -> dict[str, Any]:
        """What scenario_save takes, from the cleaned data."""
        return {name: self.cleaned_data[name] for name in SCENARIO_FORM_FIELDS}

    def clean(self) -> dict[str, Any]:
        super().clean()
        # The pipeline's checks on what the fields gave (a field in error keeps the model's
        # default): the problems of the whole scenario, with the fields' own, in one answer.
        values = {
            name: self.cleaned_data[name]
            for name in SCENARIO_FORM_FIELDS
            if name in self.cleaned_data
        }
        draft = Scenario(name=self.cleaned_data.get("name") or "draft", **values)
        for problem in scenarios.scenario_problems(draft):
            self.add_error(None, _sentence(problem))
        return self.cleaned_data


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
