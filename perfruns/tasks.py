"""Thin Celery tasks: ids in, a service call, nothing else.

acks_late is safe because each service claims its row with a conditional
UPDATE: a redelivered message finds nothing queued and returns. The services send these
tasks by name (perfruns.services.queue), so the names are theirs.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import connection
from django.utils import timezone

from perfruns.payloads import NotificationEvent
from perfruns.services import (
    janitor,
    jobs,
    notifications,
    queue,
    reminders,
    restores,
    runs,
    snapshots,
    version_comparisons,
    weekly_summary,
)

log = logging.getLogger(__name__)

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
def _sweep_on_start(sender: Any = None, **_kwargs: Any) -> None:
    # A worker killed mid-run left clusters and scratch databases: clean them
    # as soon as a worker is back.
    janitor_sweep.delay()
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    threading.Thread(
        target=_say_alive, args=(hostname,), name="fixproof-worker-seen", daemon=True
    ).start()


_stopping = threading.Event()


@worker_shutdown.connect
def _stop_saying_alive(**_kwargs: Any) -> None:
    _stopping.set()


def _say_alive(hostname: str) -> None:
    """The worker's main process says it is alive, so that pages can tell a queued run
    that no worker will take from one that waits its turn."""
    while True:
        try:
            jobs.worker_seen(hostname=hostname)
        except Exception:  # the database is away: say it again later
            log.warning("could not record that worker %s is alive", hostname, exc_info=True)
        finally:
            connection.close()
        if _stopping.wait(jobs.WORKER_BEAT_S):
            return


@shared_task(name=queue.REMINDERS_SEND, acks_late=True, soft_time_limit=300, time_limit=360)
def reminders_send() -> int:
    """The daily digests; a second delivery of this message sends nothing twice."""
    return reminders.reminders_send(today=timezone.localdate()).sent


@shared_task(
    name="perfruns.weekly_summary_send", acks_late=True, soft_time_limit=600, time_limit=660
)
def weekly_summary_send() -> int:
    """Monday's summary of the week just ended; a second delivery sends nothing twice."""
    today = timezone.localdate()
    return weekly_summary.weekly_summary_send(
        period=weekly_summary.period_previous_week(today), today=today
    ).sent
