"""Restores of a verified snapshot into a review environment: requested, then run by a
worker — the dump checked against its recorded sha256, restored into a new database in
sections, swapped in by rename — so that a failed restore leaves the previous database."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from perfruns.models import Restore, RestoreStatus, ReviewEnvironment, Snapshot, SnapshotStatus
from perfruns.pipeline.dbstats import read_settings
from perfruns.pipeline.restore import restore_and_swap, verify_archive
from perfruns.system import file_sha256

from .common import PipelineRefused, describe
from .environments import admin_connection
from .janitor import janitor_sweep
from .jobs import job_claim, job_finish, job_heartbeat, job_stage, job_update
from .queue import RESTORE_ENVIRONMENT, enqueue_on_commit

log = logging.getLogger(__name__)


class RestoreRefused(Exception):
    """The snapshot cannot be restored; the message says why."""


@dataclass
class Restored:
    settings: dict[str, Any]
    port: int | None


def restore_request(
    *,
    environment: ReviewEnvironment,
    snapshot: Snapshot | None,
    actor: User | None,
) -> Restore:
    """Queue a restore; refused for a snapshot Fixproof did not produce and verify."""
    if snapshot is None:
        candidates = Snapshot.objects.filter(status=SnapshotStatus.READY, deleted_at__isnull=True)
        if environment.source_id:
            candidates = candidates.filter(source_id=environment.source_id)
        snapshot = candidates.order_by("-finished_at", "-id").first()
        if snapshot is None:
            raise PipelineRefused(
                f"There is no ready snapshot to restore into {environment.name}: take one first."
            )
    if not snapshot.is_restorable:
        raise PipelineRefused(
            f"Snapshot #{snapshot.pk} cannot be restored: it is {snapshot.get_status_display()}"
            + (" and its file was removed by retention" if snapshot.deleted_at else "")
            + ". Only snapshots produced and verified by Fixproof can be restored."
        )
    try:
        with transaction.atomic():
            return Restore.objects.create(
                environment=environment, snapshot=snapshot, created_by=actor
            )
    except IntegrityError:
        raise PipelineRefused(
            f"A restore into {environment.name} is already queued or running."
        ) from None


def restore_enqueue(restore: Restore) -> None:
    enqueue_on_commit(RESTORE_ENVIRONMENT, restore.pk)


def restore_claim(*, restore_id: int) -> bool:
    return job_claim(Restore, pk=restore_id)


def restore_run(*, restore_id: int) -> Restore:
    janitor_sweep()
    if not restore_claim(restore_id=restore_id):
        return Restore.objects.get(pk=restore_id)
    restore = Restore.objects.select_related("environment", "snapshot").get(pk=restore_id)

    def progress(done: int, total: int) -> None:
        job_update(Restore, pk=restore_id, tables_done=done, tables_total=total)

    try:
        with job_heartbeat(Restore, pk=restore_id):
            recorded = restore_into_environment(
                environment=restore.environment,
                snapshot=restore.snapshot,
                progress=progress,
                stage=lambda name: job_stage(Restore, pk=restore_id, stage=name),
            )
    except Exception as exc:
        log.warning("restore %s failed: %s", restore_id, describe(exc))
        job_finish(Restore, pk=restore_id, status=RestoreStatus.FAILED, error=describe(exc))
    else:
        with transaction.atomic():
            job_finish(Restore, pk=restore_id, status=RestoreStatus.DONE)
            ReviewEnvironment.objects.filter(pk=restore.environment_id).update(
                current_snapshot=restore.snapshot,
                recorded_settings=recorded.settings,
                port=recorded.port,
                last_restored_at=timezone.now(),
            )
    restore.refresh_from_db()
    return restore


def check_snapshot_file(snapshot: Snapshot) -> Path:
    """The dump file, after checking it is the one Fixproof produced and verified."""
    if not snapshot.is_restorable:
        raise RestoreRefused(
            f"Snapshot #{snapshot.pk} is not a verified snapshot ({snapshot.status}); "
            "only snapshots produced and verified by Fixproof can be restored."
        )
    path = Path(snapshot.file_path)
    if not path.is_file():
        raise RestoreRefused(f"The dump file of snapshot #{snapshot.pk} is missing: {path}.")
    actual = file_sha256(path)
    if actual != snapshot.sha256:
        raise RestoreRefused(
            f"The dump file of snapshot #{snapshot.pk} no longer matches its recorded sha256 "
            f"(recorded {snapshot.sha256[:16]}…, found {actual[:16]}…): it was changed or "
            "damaged after Fixproof wrote it, so it is not restored."
        )
    return path


def restore_into_environment(
    *,
    environment: ReviewEnvironment,
    snapshot: Snapshot,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] = lambda _name: None,
) -> Restored:
    stage("verifying the dump")
    path = check_snapshot_file(snapshot)
    verify_archive(path)
    stage("starting the server")
    with admin_connection(environment) as (conninfo, port):
        stage("restoring")
        restore_and_swap(
            dump_path=path,
            admin_conninfo=conninfo,
            live=environment.database_name,
            jobs=settings.PIPELINE_JOBS,
            progress=progress,
            timeout=settings.PIPELINE_TIMEOUT,
        )
        stage("recording settings")
        recorded = read_settings(conninfo)
    return Restored(settings=recorded, port=port)
