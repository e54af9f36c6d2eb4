from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from .models import (
    DumpSource,
    PerfRun,
    Restore,
    ReviewEnvironment,
    Scenario,
    Snapshot,
    Verification,
    VerificationCriterion,
    Webhook,
)
from .services import common, scenarios


@admin.register(DumpSource)
class DumpSourceAdmin(admin.ModelAdmin):
    list_display = ("name", "dsn_env", "dsn_file", "policy_hash", "updated_at")
    readonly_fields = ("policy_hash", "created_at", "updated_at")


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ("id", "source", "status", "stage", "size_bytes", "created_at", "deleted_at")
    list_filter = ("status", "source")
    readonly_fields = [f.name for f in Snapshot._meta.fields]


@admin.register(ReviewEnvironment)
class ReviewEnvironmentAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "database_name", "current_snapshot", "last_restored_at")
    readonly_fields = ("port", "recorded_settings", "last_restored_at", "current_snapshot")


@admin.register(Restore)
class RestoreAdmin(admin.ModelAdmin):
    list_display = ("id", "environment", "snapshot", "status", "tables_done", "tables_total")
    list_filter = ("status", "environment")
    readonly_fields = [f.name for f in Restore._meta.fields]


class ScenarioAdminForm(forms.ModelForm):
    class Meta:
        model = Scenario
        exclude: tuple[str, ...] = ()

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if not self.errors:
            # The same checks as load_scenarios: loopback targets only, a valid shape...
            try:
                scenarios.scenario_check(self.instance.__class__(**_plain(cleaned)))
            except common.PipelineRefused as exc:
                raise forms.ValidationError(str(exc)) from None
        return cleaned


def _plain(cleaned: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cleaned.items() if k not in ("postmortems", "actions")}


@admin.register(Scenario)
class ScenarioAdmin(admin.ModelAdmin):
    form = ScenarioAdminForm
    list_display = ("name", "environment", "shape", "users", "duration_s", "updated_at")
    filter_horizontal = ("postmortems", "actions")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            scenarios.scenario_schedule_set(
                scenario=obj, enabled=True, **scenarios.SCENARIO_DEFAULT_SCHEDULE
            )


@admin.register(PerfRun)
class PerfRunAdmin(admin.ModelAdmin):
    list_display = ("id", "scenario", "environment", "status", "stage", "created_at")
    list_filter = ("status", "scenario")
    readonly_fields = [f.name for f in PerfRun._meta.fields]


@admin.register(VerificationCriterion)
class VerificationCriterionAdmin(admin.ModelAdmin):
    list_display = ("action", "scenario", "metric", "comparison", "value", "state", "state_run")
    list_filter = ("state", "scenario")
    readonly_fields = ("state", "state_run", "measured", "updated_at")
    raw_id_fields = ("action", "reference_run")


@admin.register(Verification)
class VerificationAdmin(admin.ModelAdmin):
    list_display = ("criterion", "run", "passed", "measured", "created_at")
    readonly_fields = [f.name for f in Verification._meta.fields]


class WebhookAdminForm(forms.ModelForm):
    # The URL holds a token: typed in, never shown back (leave empty to keep it).
    url = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False), max_length=500
    )

    class Meta:
        model = Webhook
        fields = ("team", "kind", "url_env", "url", "enabled")

    def clean_url(self):
        value = self.cleaned_data["url"]
        if not value and self.instance.pk and not self.cleaned_data.get("url_env"):
            return self.instance.url  # unchanged
        return value


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    form = WebhookAdminForm
    list_display = ("team", "kind", "url_env", "enabled")
    list_filter = ("kind", "enabled")
