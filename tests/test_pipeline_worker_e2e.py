"""The snapshot and restore tasks through a real Celery worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from fixproof.celery import app
from perfruns import services, tasks
from perfruns.models import RestoreStatus, Snapshot, SnapshotStatus

pytestmark = pytest.mark.django_db(transaction=True)

# A Redis database of its own, so a developer's running worker never takes these.
BROKER = "redis://127.0.0.1:6379/14"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def worker(data_dir, dump_source):
    # After dump_source: the worker inherits the variable that holds the DSN.
    import redis

    redis.Redis.from_url(BROKER).flushdb()
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "fixproof.settings",
        "CELERY_BROKER_URL": BROKER,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "FIXPROOF_DATA_DIR": str(data_dir),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "fixproof",
            "worker",
            "--concurrency",
            "1",
            "--loglevel",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    redis.Redis.from_url(BROKER).flushdb()


def send(task, *args) -> None:
    with app.connection_for_write(BROKER) as conn:
        task.apply_async(args, connection=conn)


def wait_for(fetch, done, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = fetch()
        if done(row):
            return row
        time.sleep(0.5)
    raise AssertionError(f"still not done after {timeout} s: {fetch()}")


def test_a_worker_takes_a_snapshot_then_restores_it(worker, dump_source):
    snapshot = services.snapshot_request(source=dump_source, actor=None)
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

    env, _ = services.environment_save(name="review", source=dump_source)
    restore = services.restore_request(environment=env, snapshot=None, actor=None)
    send(tasks.restore_environment, restore.pk)
    restore = wait_for(
        lambda: type(restore).objects.get(pk=restore.pk),
        lambda r: r.status not in ("queued", "running"),
    )
    assert restore.status == RestoreStatus.DONE, restore.error
    env.refresh_from_db()
    assert env.current_snapshot_id == snapshot.pk
