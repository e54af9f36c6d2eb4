"""What the commands that start work (perfrun, compare_versions) share: finding the
scenario by name, and waiting, bounded, for a Celery worker to finish what they queued."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.management.base import BaseCommand, CommandError, CommandParser

from perfruns.models import Scenario

QUEUED_PATIENCE = 120  # seconds before saying no worker took it
EXIT_PASSED, EXIT_FAILED, EXIT_ERROR, EXIT_NO_VERDICT = 0, 1, 2, 3

Row = TypeVar("Row", bound=Any)


def refused(message: str) -> CommandError:
    """A request the command cannot take: an error (2), never read as a failed run (1)."""
    return CommandError(message, returncode=EXIT_ERROR)


class StartCommand(BaseCommand):
    """A command that starts work on a scenario. Django gives every command a --version
    that prints Django's version and exits 0: a CI script that meant the application's
    version would read that as a pass, so here --version is refused, naming
    --app-version."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)
        parser.add_argument(
            "--version", dest="django_version", nargs="?", const="", help=argparse.SUPPRESS
        )
        return parser

    def refuse_django_version(self, options: dict[str, Any]) -> None:
        if options.get("django_version") is not None:
            raise refused(
                "--version is not the application's version here (Django would print its "
                "own and exit 0): give --app-version VERSION to run that version."
            )


def scenario_named(name: str) -> Scenario:
    try:
        return Scenario.objects.select_related("environment").get(name=name)
    except Scenario.DoesNotExist:
        raise refused(f"No scenario named {name}.") from None


def wait_until_ended(row: Row, *, noun: str, budget_s: float, cancel: Callable[[], Any]) -> Row:
    """Poll `row` (a run or a comparison) until it is no longer queued or running. Still
    queued after QUEUED_PATIENCE: no worker is there, so `cancel()` it and say so; still
    going after `budget_s`: give up."""
    started = time.monotonic()
    while True:
        row.refresh_from_db()
        if not row.is_active:
            return row
        if row.status == "queued" and time.monotonic() - started > QUEUED_PATIENCE:
            cancel()
            raise CommandError(
                f"No Celery worker took {noun} #{row.pk} within {QUEUED_PATIENCE} s (is one "
                "running? `make run` starts one); it was cancelled. --here runs it in this "
                "process.",
                returncode=EXIT_NO_VERDICT,
            )
        if time.monotonic() - started > budget_s:
            raise CommandError(
                f"{noun.capitalize()} #{row.pk} is still {row.stage or row.status}; gave up.",
                returncode=EXIT_NO_VERDICT,
            )
        time.sleep(1)
