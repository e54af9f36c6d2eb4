"""The snapshot and restore tasks through a real Celery worker process."""

from __future__ import annotations

import os

import pytest

from perfruns import tasks
from perfruns.models import RestoreStatus, Snapshot, SnapshotStatus
from perfruns.services import environments, restores, snapshots
from tests.celeryworker import send, start_worker, stop_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker(data_dir, dump_source):
    # After dump_source: the worker inherits the variable that holds the DSN.
    proc = start_worker(data_dir)
    yield proc
    stop_worker(proc)


def test_a_worker_takes_a_snapshot_then_restores_it(worker, dump_source):
    snapshot = snapshots.snapshot_request(source=dump_source, actor=None)
    send(tasks.snapshot_create, snapshot.pk)
    # The same message delivered twice: the second finds nothing queued.
    send(tasks.snapshot_create, snapshot.pk)

    snapshot = wait_for(
        lambda: Snapshot.objects.get(pk=snapshot.pk),
        lambda s: s.status not in ("queued", "running"),
    )
    assert snapshot.status == SnapshotStatus.READY, snapshot.error
    assert snapshot.worker.rpartition(":")[2] != str(os.getpid())  # not this process
    assert Snapshot.objects.filter(source=dump_source).count() == 1

    env, _ = environments.environment_save(name="review", source=dump_source)
    restore = restores.restore_request(environment=env, snapshot=None, actor=None)
    send(tasks.restore_environment, restore.pk)
    restore = wait_for(
        lambda: type(restore).objects.get(pk=restore.pk),
        lambda r: r.status not in ("queued", "running"),
    )
    assert restore.status == RestoreStatus.DONE, restore.error
    env.refresh_from_db()
    assert env.current_snapshot_id == snapshot.pk
