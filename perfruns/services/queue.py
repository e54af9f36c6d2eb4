"""Celery tasks sent by name once the transaction that asked for them commits.

Services send tasks by name rather than importing perfruns.tasks: the tasks call the
services, and the services must not call back up into them. The names are the tasks'
`name=` (perfruns/tasks.py takes them from here).
"""

from __future__ import annotations

import functools
from typing import Any

from celery import current_app
from django.db import transaction

SNAPSHOT_CREATE = "perfruns.snapshot_create"
RESTORE_ENVIRONMENT = "perfruns.restore_environment"
PERFRUN_EXECUTE = "perfruns.perfrun_execute"
VERSION_COMPARISON_EXECUTE = "perfruns.version_comparison_execute"
SCENARIO_SCHEDULED = "perfruns.scenario_scheduled"
NOTIFY_EVENT = "perfruns.notify_event"
JANITOR_SWEEP = "perfruns.janitor_sweep"
REMINDERS_SEND = "perfruns.reminders_send"


def send(task_name: str, *args: Any) -> None:
    current_app.send_task(task_name, args=args)


def enqueue_on_commit(task_name: str, *args: Any) -> None:
    """Send the task after commit: a worker must find the rows it is given."""
    transaction.on_commit(functools.partial(send, task_name, *args))
