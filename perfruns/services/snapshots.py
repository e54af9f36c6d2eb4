"""Anonymized snapshots of a dump source: requested, then produced by a worker — dumped,
masked per policy in a scratch cluster, verified to hold no unmasked PII, written with its
sha256 — and kept per the source's retention."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from perfruns.masking.policy import PolicyError
from perfruns.models import (
    DumpSource,
    ReviewEnvironment,
    Snapshot,
    SnapshotStatus,
    SourceConfigError,
)
from perfruns.pipeline.snapshot import PiiRejected, PolicyInvalid, produce_snapshot

from .common import PipelineRefused, data_dir, describe
from .environments import cluster_os_user
from .janitor import janitor_sweep
from .jobs import job_claim, job_finish, job_heartbeat, job_stage
from .queue import SNAPSHOT_CREATE, enqueue_on_commit

log = logging.getLogger(__name__)


def snapshot_request(*, source: DumpSource, actor: User | None) -> Snapshot:
    """Queue a snapshot of ``source``; refused while another one is under way."""
    try:
        with transaction.atomic():
            snapshot = Snapshot.objects.create(
                source=source, created_by=actor, policy_hash=source.policy_hash
            )
    except IntegrityError:
        raise PipelineRefused(
            f"A snapshot of {source.name} is already queued or running."
        ) from None
    return snapshot


def snapshot_enqueue(snapshot: Snapshot) -> None:
    enqueue_on_commit(SNAPSHOT_CREATE, snapshot.pk)


def snapshot_claim(*, snapshot_id: int) -> bool:
    """queued -> running, once: a redelivered message claims nothing."""
    return job_claim(Snapshot, pk=snapshot_id)


def masking_key() -> bytes:
    if settings.MASKING_KEY:
        return settings.MASKING_KEY.encode()
    # Derived, so the SECRET_KEY itself never reaches a database.
    return hmac.new(settings.SECRET_KEY.encode(), b"fixproof-masking-key", hashlib.sha256).digest()


def snapshot_run(*, snapshot_id: int) -> Snapshot:
    """Produce the snapshot: dump, mask, verify, write. Idempotent per row."""
    janitor_sweep()
    if not snapshot_claim(snapshot_id=snapshot_id):
        return Snapshot.objects.get(pk=snapshot_id)
    snapshot = Snapshot.objects.select_related("source").get(pk=snapshot_id)
    with job_heartbeat(Snapshot, pk=snapshot_id):
        final = _produce(snapshot)
    job_finish(Snapshot, pk=snapshot_id, **final)
    if final["status"] == SnapshotStatus.READY:
        snapshot_apply_retention(source=snapshot.source)
    snapshot.refresh_from_db()
    return snapshot


def _produce(snapshot: Snapshot) -> dict[str, Any]:
    """Dump, mask, verify, write; what the snapshot's row says after, whatever happened."""
    source = snapshot.source
    final: dict[str, Any]
    try:
        result = produce_snapshot(
            source_dsn=source.read_dsn(),
            source_name=source.name,
            policy_text=source.policy_yaml,
            key=masking_key(),
            out_dir=data_dir() / "snapshots" / source.name,
            work_dir=data_dir() / "scratch" / f"snapshot-{snapshot.pk}",
            jobs=settings.PIPELINE_JOBS,
            timeout=settings.PIPELINE_TIMEOUT,
            stage=lambda name: job_stage(Snapshot, pk=snapshot.pk, stage=name),
            os_user=cluster_os_user(),
        )
    except PiiRejected as exc:
        final = {"status": SnapshotStatus.REJECTED, "report": exc.report, "error": str(exc)}
    except PolicyInvalid as exc:
        final = {"status": SnapshotStatus.FAILED, "report": exc.report, "error": str(exc)}
    except (SourceConfigError, PolicyError) as exc:
        final = {"status": SnapshotStatus.FAILED, "error": str(exc)}
    except Exception as exc:  # the pipeline broke: say which step and why
        log.exception("snapshot %s failed", snapshot.pk)
        final = {"status": SnapshotStatus.FAILED, "error": describe(exc)}
    else:
        final = {
            "status": SnapshotStatus.READY,
            "file_path": str(result.path),
            "sha256": result.sha256,
            "size_bytes": result.size,
            "table_rows": result.table_rows,
            "policy_hash": result.policy_hash,
            "report": result.report,
            "error": "",
        }
    return final


def snapshot_apply_retention(*, source: DumpSource) -> list[int]:
    """Keep the source's last N ready snapshots; delete older dump files."""
    ready = list(
        Snapshot.objects.filter(
            source=source, status=SnapshotStatus.READY, deleted_at__isnull=True
        ).order_by("-finished_at", "-id")
    )
    in_use = set(
        ReviewEnvironment.objects.filter(current_snapshot__source=source).values_list(
            "current_snapshot_id", flat=True
        )
    )
    removed = []
    for old in ready[source.kept_snapshots :]:
        if old.pk in in_use:
            continue
        Path(old.file_path).unlink(missing_ok=True)
        Snapshot.objects.filter(pk=old.pk).update(deleted_at=timezone.now())
        removed.append(old.pk)
    return removed
