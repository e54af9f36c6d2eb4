"""The life of the four jobs — a snapshot, a restore, a perf run, a version comparison —
told once: each is requested as a queued row, claimed by one conditional UPDATE, moves
through stages, may be asked to stop, and finishes with a status of its own.

Every transition is one UPDATE that checks the status it expects and says whether it
changed the row: a redelivered message, a second worker or a janitor that judged the
worker dead all find nothing to do.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.db import connection
from django.utils import timezone

from perfruns.models import Job, WorkerSeen
from perfruns.system import pid_alive

from .common import worker_id

log = logging.getLogger(__name__)

J = TypeVar("J", bound=Job)
CANCELLED = "cancelled"
# A running job writes its heartbeat this often; one silent for STALE_AFTER_S lost its
# process, on whatever host, and the janitor ends it.
HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0


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
            heartbeat_at=timezone.now(),
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
    (it reads cancel_requested between its steps) — or now, when its process is gone and
    nothing would ever check. False when it had already ended."""
    if (
        _rows(model, pk)
        .filter(status=Job.QUEUED)
        .update(status=CANCELLED, finished_at=timezone.now(), stage="")
    ):
        return True
    if not _rows(model, pk).filter(status=Job.RUNNING).update(cancel_requested=True):
        return False
    job = model._default_manager.filter(pk=pk).first()
    if job is not None and job_lost(job):
        job_finish(
            model,
            pk=pk,
            status=CANCELLED,
            error=f"Cancelled during the '{job.stage}' step; its worker had stopped answering.",
        )
    return True


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


@contextmanager
def job_heartbeat(model: type[Job], *, pk: int, every: float = HEARTBEAT_S) -> Iterator[None]:
    """While the block runs, a thread of this process writes the job's heartbeat every
    `every` seconds: when the process dies (the OOM killer takes the pool process, say),
    the heartbeat stops with it and the janitor ends the job."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(every):
                try:
                    _rows(model, pk).filter(status=Job.RUNNING).update(heartbeat_at=timezone.now())
                except Exception:  # the database is away for a moment: beat again later
                    log.warning("heartbeat of %s #%s missed", model._meta.model_name, pk)
                    connection.close()
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name="fixproof-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every + 5)


def job_lost(job: Job) -> bool:
    """Whether a running job's process is gone: a worker of this host that no longer
    exists, or a heartbeat silent for STALE_AFTER_S (any host)."""
    if is_dead_worker(job.worker):
        return True
    if job.heartbeat_at is None:
        return False  # from before heartbeats: the pid decides
    return timezone.now() - job.heartbeat_at > dt.timedelta(seconds=STALE_AFTER_S)


def is_dead_worker(worker: str) -> bool:
    """Whether the worker process that claimed a job is gone; another host's worker is
    that host's janitor's to judge."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not pid_alive(int(pid))


def jobs_of_dead_workers_fail(
    model: type[J], *, failed: str, cleaned: str, done: list[str], ended: list[J] | None = None
) -> list[J]:
    """Mark the running jobs whose process is gone (job_lost) `failed`, saying in which step
    and what was cleaned after it; return the running jobs whose process lives."""
    live = []
    for job in model._default_manager.filter(status=Job.RUNNING):
        if not job_lost(job):
            live.append(job)
            continue
        if job_finish(
            model,
            pk=job.pk,
            status=failed,
            error=f"The worker was killed during the '{job.stage}' step; {cleaned}.",
        ):
            done.append(f"{model._meta.model_name} #{job.pk} marked failed")
            if ended is not None:
                ended.append(job)
    return live


# A worker writes that it is alive this often; none seen for WORKER_SILENT_S: none runs.
WORKER_BEAT_S = 10.0
WORKER_SILENT_S = 60.0


def worker_seen(*, hostname: str) -> None:
    """A Celery worker is alive (written by the worker itself, every WORKER_BEAT_S)."""
    WorkerSeen.objects.update_or_create(hostname=hostname, defaults={"seen_at": timezone.now()})


def workers_alive() -> bool:
    """Whether any Celery worker said it was alive lately: queued work will be taken."""
    since = timezone.now() - dt.timedelta(seconds=WORKER_SILENT_S)
    return WorkerSeen.objects.filter(seen_at__gte=since).exists()
