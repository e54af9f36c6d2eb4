"""Thin Celery tasks: ids in, a service call, nothing else.

acks_late is safe because each service claims its row with a conditional
UPDATE: a redelivered message finds nothing queued and returns. The services send these
tasks by name (perfruns.services.queue), so the names are theirs.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from perfruns.payloads import NotificationEvent
from perfruns.services import (
    janitor,
    notifications,
    queue,
    restores,
    runs,
    snapshots,
    version_comparisons,
)

# Soft limit first so the service's cleanup runs; the hard limit backs it up.
SOFT_LIMIT: int = settings.PIPELINE_TIMEOUT
HARD_LIMIT: int = settings.PIPELINE_TIMEOUT + 120


@shared_task(
    name=queue.SNAPSHOT_CREATE, acks_late=True, soft_time_limit=SOFT_LIMIT, time_limit=HARD_LIMIT
)
def snapshot_create(snapshot_id: int) -> str:
    return snapshots.snapshot_run(snapshot_id=snapshot_id).status


@shared_task(
    name=queue.RESTORE_ENVIRONMENT,
    acks_late=True,
    soft_time_limit=SOFT_LIMIT,
    time_limit=HARD_LIMIT,
)
def restore_environment(restore_id: int) -> str:
    return restores.restore_run(restore_id=restore_id).status


@shared_task(
    name=queue.PERFRUN_EXECUTE, acks_late=True, soft_time_limit=SOFT_LIMIT, time_limit=HARD_LIMIT
)
def perfrun_execute(run_id: int) -> str:
    return runs.perfrun_run(run_id=run_id).status


@shared_task(
    name=queue.VERSION_COMPARISON_EXECUTE,
    acks_late=True,
    # Three runs back to back, and a wait for the environment before each.
    soft_time_limit=4 * settings.PIPELINE_TIMEOUT,
    time_limit=4 * settings.PIPELINE_TIMEOUT + 120,
)
def version_comparison_execute(comparison_id: int) -> str:
    return version_comparisons.version_comparison_run(comparison_id=comparison_id).status


@shared_task(name=queue.SCENARIO_SCHEDULED, acks_late=True, soft_time_limit=60, time_limit=90)
def scenario_scheduled(scenario_id: int) -> int | None:
    """The weekly run: queued like "Run now"; skipped (and logged) while one is under way."""
    run = runs.perfrun_schedule_fire(scenario_id=scenario_id)
    return run.pk if run is not None else None


@shared_task(name=queue.NOTIFY_EVENT, acks_late=True, soft_time_limit=600, time_limit=660)
def notify_event(event: NotificationEvent, team_ids: list[int]) -> list[str]:
    return notifications.notification_send(event=event, team_ids=team_ids)


@shared_task(name=queue.JANITOR_SWEEP, acks_late=True, soft_time_limit=300, time_limit=360)
def janitor_sweep() -> list[str]:
    return janitor.janitor_sweep()


@worker_ready.connect
def _sweep_on_start(**_kwargs: Any) -> None:
    # A worker killed mid-run left clusters and scratch databases: clean them
    # as soon as a worker is back.
    janitor_sweep.delay()
