from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from perfruns.models import ReviewEnvironment
from perfruns.services import common, scenarios
from postmortems.models import Team

_KEYS = {
    "name",
    "description",
    "environment",
    "locustfile",
    "target_url",
    "restore_first",
    "start_command",
    "start_env",
    "health_url",
    "health_timeout",
    "users",
    "spawn_rate",
    "duration",
    "shape",
    "steps",
    "arrival_rps",
    "workers",
    "thresholds",
    "floors",
    "warmup",
    "fail_on_memory_regression",
    "tags",
    "schedule",
    "default_version",
    "team",
}


class ScenarioFileError(Exception):
    pass


def _locustfile_path(value: str, *, folder: Path) -> str:
    path = Path(value)
    if not path.is_absolute():
        path = (folder / path).resolve()
    if not path.is_file():
        raise ScenarioFileError(f"the locustfile {path} does not exist")
    base = Path(settings.BASE_DIR).resolve()
    # Relative to the checkout when inside it: the same file on every worker's checkout.
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def _defined_in(path: Path) -> str:
    path = path.resolve()
    base = Path(settings.BASE_DIR).resolve()
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def scenario_values(entry: dict[str, Any], *, folder: Path) -> dict[str, Any]:
    unknown = set(entry) - _KEYS
    if unknown:
        raise ScenarioFileError(f"unknown key {sorted(unknown)[0]!r}")
    env_name = entry.get("environment")
    environment = ReviewEnvironment.objects.filter(name=env_name).first()
    if environment is None:
        raise ScenarioFileError(f"no review environment named {env_name!r}")
    if "locustfile" not in entry or "target_url" not in entry:
        raise ScenarioFileError("a scenario needs a locustfile and a target_url")
    values: dict[str, Any] = {
        "environment": environment,
        "locustfile_path": _locustfile_path(str(entry["locustfile"]), folder=folder),
        "locustfile_text": "",
        "target_url": str(entry["target_url"]),
    }
    simple = {
        "description": "description",
        "restore_first": "restore_first",
        "start_command": "start_command",
        "start_env": "start_env",
        "health_url": "health_url",
        "health_timeout": "health_timeout_s",
        "users": "users",
        "spawn_rate": "spawn_rate",
        "duration": "duration_s",
        "shape": "shape",
        "arrival_rps": "arrival_rps",
        "workers": "workers",
        "thresholds": "thresholds",
        "floors": "floors",
        "warmup": "warmup_s",
        "fail_on_memory_regression": "fail_on_memory_regression",
        "default_version": "default_version",
    }
    for key, field in simple.items():
        if key in entry:
            values[field] = entry[key]
    steps = entry.get("steps") or {}
    if not isinstance(steps, dict) or set(steps) - {"start", "size", "duration", "max"}:
        raise ScenarioFileError("steps has start, size, duration and max")
    for key in ("start", "size", "duration", "max"):
        if key in steps:
            values[f"step_{key}" if key != "duration" else "step_duration_s"] = steps[key]
    if "tags" in entry:
        tags = entry["tags"]
        values["tags"] = ", ".join(tags) if isinstance(tags, list) else str(tags)
    if "team" in entry:
        slug = entry["team"]
        team = Team.objects.filter(slug=str(slug)).first() if slug else None
        if slug and team is None:
            raise ScenarioFileError(f"no team with the slug {slug!r}")
        values["team"] = team
    for field in ("users", "health_timeout_s", "duration_s", "workers", "warmup_s"):
        if field in values and (
            isinstance(values[field], bool) or not isinstance(values[field], int)
        ):
            raise ScenarioFileError(f"{field.removesuffix('_s')} must be a whole number")
    return values


class Command(BaseCommand):
    help = "Create or update scenarios (by name) from a YAML file kept next to the locustfiles."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="YAML with a `scenarios:` list")

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        try:
            document = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise CommandError(f"{path} is not valid YAML{where}.") from None
        entries = document.get("scenarios") if isinstance(document, dict) else None
        if not isinstance(entries, list) or not entries:
            raise CommandError(f"{path} has no `scenarios:` list.")
        folder = path.resolve().parent
        report = []
        # All or nothing: one bad scenario leaves every scenario as it was.
        with transaction.atomic():
            for number, entry in enumerate(entries, start=1):
                label = entry.get("name", f"#{number}") if isinstance(entry, dict) else f"#{number}"
                try:
                    if not isinstance(entry, dict) or not entry.get("name"):
                        raise ScenarioFileError("every scenario needs a name")
                    values = scenario_values(entry, folder=folder)
                    # The file stays the source of truth: the scenario's page says so.
                    values["defined_in"] = _defined_in(path)
                    scenario, created = scenarios.scenario_save(name=entry["name"], values=values)
                    schedule = entry.get("schedule")
                    if schedule is not None:
                        if not isinstance(schedule, dict) or set(schedule) - {
                            "day_of_week",
                            "hour",
                            "minute",
                            "enabled",
                        }:
                            raise ScenarioFileError(
                                "schedule has day_of_week, hour, minute and enabled"
                            )
                        scenarios.scenario_schedule_set(
                            scenario=scenario,
                            day_of_week=str(schedule.get("day_of_week", 1)),
                            hour=int(schedule.get("hour", 3)),
                            minute=int(schedule.get("minute", 0)),
                            enabled=bool(schedule.get("enabled", True)),
                        )
                except (ScenarioFileError, common.PipelineRefused, ValueError, TypeError) as exc:
                    raise CommandError(f"{path}: scenario {label}: {exc}") from None
                report.append(f"{'created' if created else 'updated'} {scenario.name}")
        for line in report:
            self.stdout.write(line)
