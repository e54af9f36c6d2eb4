"""Scenarios — a load test of a target against a review environment: what, how hard, how
judged — and their weekly schedules (django-celery-beat, edited on the scenario's page)."""

from __future__ import annotations

import re
from typing import Any, TypedDict

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from perfruns.loadtest import LoadShape
from perfruns.models import LOAD_SHAPE_FIELDS, VERSION_PLACEHOLDER, Scenario
from perfruns.pipeline.target import is_loopback_url
from perfruns.regression import Floors
from perfruns.thresholds import check_thresholds

from .common import PipelineRefused, check_name
from .queue import SCENARIO_SCHEDULED


class WeeklySchedule(TypedDict):
    day_of_week: str  # 0 (Sunday) to 6, or * for every day
    hour: int
    minute: int


SCENARIO_DEFAULT_SCHEDULE: WeeklySchedule = {"day_of_week": "1", "hour": 3, "minute": 0}  # Mon 3:00
_SCENARIO_FIELDS = (
    "description",
    "locustfile_path",
    "locustfile_text",
    "target_url",
    "environment",
    "restore_first",
    "start_command",
    "start_env",
    "health_url",
    "health_timeout_s",
    "users",
    "spawn_rate",
    "duration_s",
    "shape",
    "step_start",
    "step_size",
    "step_duration_s",
    "step_max",
    "arrival_rps",
    "workers",
    "thresholds",
    "floors",
    "warmup_s",
    "fail_on_memory_regression",
    "tags",
    "default_version",
    "team",
    "defined_in",
)
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:@/-]{0,99}")


def check_version(value: str, *, label: str = "version") -> None:
    """A version goes into the target's command line and environment: a plain token only
    (no space, quote or shell character), so it can never split or extend the command."""
    if not _VERSION.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise PipelineRefused(
            f"The {label} '{shown}' is not a version: use letters, digits and . _ + : @ / - "
            "(at most 100, starting with a letter or a digit)."
        )


def versioned(text: str, version: str) -> str:
    """`text` with {version} replaced (check_version keeps it one shell-free token)."""
    return text.replace(VERSION_PLACEHOLDER, version)


def scenario_shape(scenario: Scenario) -> LoadShape:
    values = {name: getattr(scenario, name) for name in LOAD_SHAPE_FIELDS}
    return LoadShape(kind=values.pop("shape"), **values)


def scenario_problems(scenario: Scenario) -> list[str]:
    """Every reason the pipeline could not run the scenario, one sentence each (empty: it
    can run), so that a form says them all at once."""
    problems: list[str] = []
    try:
        check_name(scenario.name)
    except PipelineRefused as exc:
        problems.append(str(exc))
    if bool(scenario.locustfile_path) == bool(scenario.locustfile_text):
        problems.append("Give either a locustfile path or an uploaded locustfile.")
    for label, url in (("target URL", scenario.target_url), ("health URL", scenario.health_url)):
        if url and not is_loopback_url(url):
            problems.append(
                f"The {label} {url} is not on this machine: only loopback addresses "
                "(127.0.0.1, ::1, localhost) are load-test targets."
            )
    if not isinstance(scenario.start_env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in scenario.start_env.items()
    ):
        problems.append("The target environment maps variable names to text values.")
    problems += scenario_shape(scenario).validate()
    if scenario.workers > 16:
        problems.append("At most 16 Locust workers.")
    problems += check_thresholds(scenario.thresholds)
    try:
        Floors.from_settings(scenario.floors)
    except ValueError as exc:
        problems.append(str(exc))
    if scenario.default_version:
        try:
            check_version(scenario.default_version, label="version of the weekly runs")
        except PipelineRefused as exc:
            problems.append(str(exc))
    elif scenario.takes_version:
        problems.append(
            "The target start command takes a {version}: give the version of the weekly "
            "runs (default_version) as well."
        )
    return problems


def scenario_check(scenario: Scenario) -> None:
    """Refuse a scenario the pipeline could not run, with every reason."""
    problems = scenario_problems(scenario)
    if problems:
        raise PipelineRefused(" ".join(problems))


@transaction.atomic
def scenario_save(
    *,
    name: str,
    values: dict[str, Any],
    postmortem_ids: list[int] | None = None,
    action_ids: list[int] | None = None,
) -> tuple[Scenario, bool]:
    """Create or update a scenario by name, with its default weekly schedule; returns
    (scenario, created). Nothing is saved when a value is refused."""
    unknown = set(values) - set(_SCENARIO_FIELDS)
    if unknown:
        raise PipelineRefused(f"Unknown scenario field {sorted(unknown)[0]!r}.")
    scenario = Scenario.objects.filter(name=name).first() or Scenario(name=name)
    created = scenario.pk is None
    for key, value in values.items():
        setattr(scenario, key, value)
    scenario_check(scenario)
    scenario.save()
    if postmortem_ids is not None:
        scenario.postmortems.set(postmortem_ids)
    if action_ids is not None:
        scenario.actions.set(action_ids)
    if created:
        scenario_schedule_set(scenario=scenario, enabled=True, **SCENARIO_DEFAULT_SCHEDULE)
    return scenario, created


def scenario_schedule(scenario: Scenario) -> PeriodicTask | None:
    return (
        PeriodicTask.objects.select_related("crontab").filter(name=scenario.schedule_name).first()
    )


_DAYS = {"0", "1", "2", "3", "4", "5", "6", "*"}


@transaction.atomic
def scenario_schedule_set(
    *, scenario: Scenario, day_of_week: str, hour: int, minute: int, enabled: bool
) -> PeriodicTask:
    """The scenario's weekly run (django-celery-beat), in the service's time zone."""
    if str(day_of_week) not in _DAYS:
        raise PipelineRefused("The day of the week is 0 (Sunday) to 6, or * for every day.")
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise PipelineRefused("The hour is 0 to 23 and the minute 0 to 59.")
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute=str(minute),
        hour=str(hour),
        day_of_week=str(day_of_week),
        day_of_month="*",
        month_of_year="*",
        timezone=settings.TIME_ZONE,
    )
    task, _ = PeriodicTask.objects.update_or_create(
        name=scenario.schedule_name,
        defaults={
            "task": SCENARIO_SCHEDULED,
            "crontab": crontab,
            "interval": None,
            "args": f"[{scenario.pk}]",
            "enabled": enabled,
        },
    )
    return task
