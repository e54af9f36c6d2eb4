"""Thin Celery tasks: ids in, a service call, nothing else.

acks_late is safe because each service claims its row with a conditional
UPDATE: a redelivered message finds nothing queued and returns.
"""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from . import services, versions

# Soft limit first so the service's cleanup runs; the hard limit backs it up.
_LIMITS = {
    "soft_time_limit": settings.PIPELINE_TIMEOUT,
    "time_limit": settings.PIPELINE_TIMEOUT + 120,
}


@shared_task(name="perfruns.snapshot_create", acks_late=True, **_LIMITS)
def snapshot_create(snapshot_id: int) -> str:
    return services.snapshot_run(snapshot_id=snapshot_id).status


@shared_task(name="perfruns.restore_environment", acks_late=True, **_LIMITS)
def restore_environment(restore_id: int) -> str:
    return services.restore_run(restore_id=restore_id).status


@shared_task(name="perfruns.perfrun_execute", acks_late=True, **_LIMITS)
def perfrun_execute(run_id: int) -> str:
    return services.perfrun_run(run_id=run_id).status


@shared_task(
    name="perfruns.version_comparison_execute",
    acks_late=True,
    # Three runs back to back, and a wait for the environment before each.
    soft_time_limit=4 * settings.PIPELINE_TIMEOUT,
    time_limit=4 * settings.PIPELINE_TIMEOUT + 120,
)
def version_comparison_execute(comparison_id: int) -> str:
    return versions.version_comparison_run(comparison_id=comparison_id).status


@shared_task(name="perfruns.scenario_scheduled", acks_late=True, soft_time_limit=60, time_limit=90)
def scenario_scheduled(scenario_id: int) -> int | None:
    """The weekly run: queued like "Run now"; skipped (and logged) while one is under way."""
    run = services.perfrun_schedule_fire(scenario_id=scenario_id)
    return run.pk if run is not None else None


@shared_task(name="perfruns.notify_event", acks_late=True, soft_time_limit=600, time_limit=660)
def notify_event(event: dict, team_ids: list[int]) -> list[str]:
    return services.notification_send(event=event, team_ids=team_ids)


@shared_task(name="perfruns.janitor_sweep", acks_late=True, soft_time_limit=300, time_limit=360)
def janitor_sweep() -> list[str]:
    return services.janitor_sweep()


@worker_ready.connect
def _sweep_on_start(**_kwargs) -> None:
    # A worker killed mid-run left clusters and scratch databases: clean them
    # as soon as a worker is back.
    janitor_sweep.delay()
