"""What the commands that start work (perfrun, compare_versions) share: finding the
scenario by name, and waiting, bounded, for a Celery worker to finish what they queued."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.management.base import CommandError

from perfruns.models import Scenario

QUEUED_PATIENCE = 120  # seconds before saying no worker took it

Row = TypeVar("Row", bound=Any)


def scenario_named(name: str) -> Scenario:
    try:
        return Scenario.objects.select_related("environment").get(name=name)
    except Scenario.DoesNotExist:
        raise CommandError(f"No scenario named {name}.") from None


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
                "process."
            )
        if time.monotonic() - started > budget_s:
            raise CommandError(
                f"{noun.capitalize()} #{row.pk} is still {row.stage or row.status}; gave up."
            )
        time.sleep(1)
