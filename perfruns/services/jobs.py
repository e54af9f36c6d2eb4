"""The life of the four jobs — a snapshot, a restore, a perf run, a version comparison —
told once: each is requested as a queued row, claimed by one conditional UPDATE, moves
through stages, may be asked to stop, and finishes with a status of its own.

Every transition is one UPDATE that checks the status it expects and says whether it
changed the row: a redelivered message, a second worker or a janitor that judged the
worker dead all find nothing to do.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, TypeVar

from django.utils import timezone

from perfruns.models import Job
from perfruns.system import pid_alive

from .common import worker_id

log = logging.getLogger(__name__)

J = TypeVar("J", bound=Job)
CANCELLED = "cancelled"


def _rows(model: type[Job], pk: int) -> Any:
    return model._default_manager.filter(pk=pk)


def job_claim(model: type[Job], *, pk: int, **fields: Any) -> bool:
    """queued -> running, once: a redelivered message claims nothing."""
    claimed = (
        _rows(model, pk)
        .filter(status=Job.QUEUED)
        .update(
            status=Job.RUNNING,
            started_at=timezone.now(),
            worker=worker_id(),
            stage="starting",
            **fields,
        )
    )
    return claimed == 1


def job_stage(model: type[Job], *, pk: int, stage: str, **fields: Any) -> None:
    """The step a running job is in (and its progress, for those that have one)."""
    _rows(model, pk).filter(status=Job.RUNNING).update(stage=stage, **fields)


def job_update(model: type[Job], *, pk: int, **fields: Any) -> None:
    """Figures a running job learns as it goes (what it used, what it measured)."""
    _rows(model, pk).filter(status=Job.RUNNING).update(**fields)


def job_cancel(model: type[Job], *, pk: int) -> bool:
    """Ask a job to stop: a queued one is cancelled now, a running one at its next check
    (it reads cancel_requested between its steps). False when it had already ended."""
    if (
        _rows(model, pk)
        .filter(status=Job.QUEUED)
        .update(status=CANCELLED, finished_at=timezone.now(), stage="")
    ):
        return True
    return bool(_rows(model, pk).filter(status=Job.RUNNING).update(cancel_requested=True))


def job_cancel_requested(model: type[Job], *, pk: int) -> bool:
    return bool(_rows(model, pk).filter(cancel_requested=True).exists())


def job_finish(model: type[Job], *, pk: int, status: str, error: str = "", **fields: Any) -> bool:
    """running -> its outcome, with what it found; False when it was no longer running
    (the janitor judged its worker dead meanwhile)."""
    return bool(
        _rows(model, pk)
        .filter(status=Job.RUNNING)
        .update(status=status, error=error, finished_at=timezone.now(), stage="", **fields)
    )


def is_dead_worker(worker: str) -> bool:
    """Whether the worker process that claimed a job is gone; another host's worker is
    that host's janitor's to judge."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not pid_alive(int(pid))


def jobs_of_dead_workers_fail(
    model: type[J], *, failed: str, cleaned: str, done: list[str]
) -> list[J]:
    """Mark the running jobs whose worker on this host died `failed`, saying in which step
    and what was cleaned after it; return the running jobs whose worker lives."""
    live = []
    for job in model._default_manager.filter(status=Job.RUNNING):
        if not is_dead_worker(job.worker):
            live.append(job)
            continue
        if job_finish(
            model,
            pk=job.pk,
            status=failed,
            error=f"The worker was killed during the '{job.stage}' step; {cleaned}.",
        ):
            done.append(f"{model._meta.model_name} #{job.pk} marked failed")
    return live
