"""manage.py restore: a verified snapshot into a review environment, now."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from perfruns.models import (
    DumpSource,
    Restore,
    RestoreStatus,
    ReviewEnvironment,
    Snapshot,
    SnapshotStatus,
)
from perfruns.services import environments, snapshots, sources
from tests import sourcedb


def restore(*args: str) -> str:
    out = io.StringIO()
    call_command("restore", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def source(db) -> DumpSource:
    source, _ = sources.source_save(name="shop", dsn_env="SHOP_DSN", policy_yaml=sourcedb.POLICY)
    return source


@pytest.fixture
def environment(db) -> ReviewEnvironment:
    env, _ = environments.environment_save(name="review", shared_buffers="64MB", max_connections=30)
    return env


@pytest.mark.django_db(transaction=True)
def test_it_restores_the_latest_snapshot_and_says_where(data_dir, dump_source):
    taken = snapshots.snapshot_run(
        snapshot_id=snapshots.snapshot_request(source=dump_source, actor=None).pk
    )
    assert taken.status == SnapshotStatus.READY, taken.error
    env, _ = environments.environment_save(
        name="review", shared_buffers="64MB", max_connections=30, source=dump_source
    )

    out = restore("review")

    done = Restore.objects.get()
    assert done.status == RestoreStatus.DONE, done.error
    assert done.snapshot == taken
    # users, invitations, sessions, events.
    assert done.tables_total == 4
    assert out == f"Restored snapshot #{taken.pk} into review (database review, 4 tables).\n"
    env.refresh_from_db()
    assert env.current_snapshot == taken
    assert env.recorded_settings["shared_buffers"] == "64MB"
    assert env.last_restored_at is not None


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        (SnapshotStatus.REJECTED, "Rejected (PII found)"),
        (SnapshotStatus.FAILED, "Failed"),
        (SnapshotStatus.QUEUED, "Queued"),
    ],
)
def test_a_snapshot_that_is_not_ready_is_refused(data_dir, environment, source, status, shown):
    snapshot = Snapshot.objects.create(source=source, status=status)

    with pytest.raises(CommandError) as raised:
        restore("review", "--snapshot", str(snapshot.pk))

    assert str(raised.value) == (
        f"Snapshot #{snapshot.pk} cannot be restored: it is {shown}. Only snapshots "
        "produced and verified by Fixproof can be restored."
    )
    assert not Restore.objects.exists()
    environment.refresh_from_db()
    assert environment.current_snapshot is None


def test_a_snapshot_removed_by_retention_is_refused(data_dir, environment, source):
    snapshot = Snapshot.objects.create(
        source=source,
        status=SnapshotStatus.READY,
        file_path="/srv/snapshots/old.dump",
        sha256="ab" * 32,
        deleted_at=timezone.now(),
    )

    with pytest.raises(CommandError) as raised:
        restore("review", "--snapshot", str(snapshot.pk))

    assert str(raised.value) == (
        f"Snapshot #{snapshot.pk} cannot be restored: it is Ready and its file was removed "
        "by retention. Only snapshots produced and verified by Fixproof can be restored."
    )
    assert not Restore.objects.exists()


def test_a_missing_dump_file_fails_the_restore_and_says_so(data_dir, environment, source):
    path = data_dir / "snapshots" / "shop" / "gone.dump"
    snapshot = Snapshot.objects.create(
        source=source, status=SnapshotStatus.READY, file_path=str(path), sha256="ab" * 32
    )

    with pytest.raises(CommandError) as raised:
        restore("review", "--snapshot", str(snapshot.pk))

    assert str(raised.value) == (
        f"Restore into review failed: The dump file of snapshot #{snapshot.pk} is missing: {path}."
    )
    failed = Restore.objects.get()
    assert failed.status == RestoreStatus.FAILED
    assert failed.finished_at is not None
    environment.refresh_from_db()
    assert environment.current_snapshot is None


def test_there_must_be_a_ready_snapshot(data_dir, environment, source):
    Snapshot.objects.create(source=source, status=SnapshotStatus.REJECTED)

    with pytest.raises(CommandError) as raised:
        restore("review")

    assert str(raised.value) == (
        "There is no ready snapshot to restore into review: take one first."
    )
    assert not Restore.objects.exists()


def test_an_unknown_environment_is_named(db):
    with pytest.raises(CommandError) as raised:
        restore("nope")

    assert str(raised.value) == "No review environment named nope."
    assert not Restore.objects.exists()


def test_an_unknown_snapshot_is_named(data_dir, environment):
    with pytest.raises(CommandError) as raised:
        restore("review", "--snapshot", "999999")

    assert str(raised.value) == "No snapshot #999999."
    assert not Restore.objects.exists()
