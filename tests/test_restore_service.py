"""restores.restore_run: a verified snapshot into a review environment, swapped in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from perfruns.models import Restore, RestoreStatus, ReviewEnvironment, SnapshotStatus
from perfruns.pipeline.databases import clone_database, list_databases
from perfruns.services import common, environments, janitor, restores, snapshots
from perfruns.services.environments import managed_cluster

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def snapshot(data_dir, dump_source):
    snap = snapshots.snapshot_run(
        snapshot_id=snapshots.snapshot_request(source=dump_source, actor=None).pk
    )
    assert snap.status == SnapshotStatus.READY, snap.error
    return snap


@pytest.fixture
def environment(db, dump_source) -> ReviewEnvironment:
    env, _ = environments.environment_save(
        name="review",
        shared_buffers="64MB",
        work_mem="8MB",
        max_connections=30,
        source=dump_source,
    )
    return env


def restore(env, snapshot=None) -> Restore:
    request = restores.restore_request(environment=env, snapshot=snapshot, actor=None)
    return restores.restore_run(restore_id=request.pk)


def query(env: ReviewEnvironment, text: str, dbname: str | None = None):
    cluster = managed_cluster(env)
    started = not cluster.is_running()
    if started:
        cluster.start()
    try:
        with psycopg.connect(cluster.conninfo(dbname or env.database_name)) as conn:
            return conn.execute(text).fetchall()
    finally:
        if started:
            cluster.stop()


def test_it_restores_the_latest_snapshot_and_records_the_settings(environment, snapshot):
    done = restore(environment)

    assert done.status == RestoreStatus.DONE, done.error
    assert done.tables_total == done.tables_done > 0
    environment.refresh_from_db()
    assert environment.current_snapshot == snapshot
    assert environment.recorded_settings["shared_buffers"] == "64MB"
    assert environment.recorded_settings["work_mem"] == "8MB"
    assert environment.recorded_settings["max_connections"] == "30"
    assert query(environment, "SELECT count(*) FROM users") == [(400,)]
    # Joinable after masking: every invitation still finds its user by e-mail.
    assert query(
        environment,
        "SELECT count(*) FROM invitations i JOIN users u ON u.email = i.invitee_email",
    ) == [(100,)]
    # Views deferred past the masking still work; pg_stat_statements is preloaded.
    assert query(environment, "SELECT count(*) FROM user_emails") == [(400,)]
    assert query(environment, "SHOW shared_preload_libraries") == [("pg_stat_statements",)]
    # The managed cluster is stopped between steps.
    assert not managed_cluster(environment).is_running()


def test_each_run_can_clone_the_restored_database(environment, snapshot):
    assert restore(environment).status == RestoreStatus.DONE
    cluster = managed_cluster(environment)
    cluster.start()
    try:
        clone_database(cluster.conninfo(), template=environment.database_name, name="run_1")
        with psycopg.connect(cluster.conninfo("run_1")) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (3000,)
    finally:
        cluster.stop()


def test_it_refuses_a_dump_whose_sha256_no_longer_matches(environment, snapshot):
    assert restore(environment).status == RestoreStatus.DONE
    with open(snapshot.file_path, "r+b") as fh:
        fh.seek(200)
        fh.write(b"tampered")

    failed = restore(environment, snapshot)

    assert failed.status == RestoreStatus.FAILED
    assert "no longer matches its recorded sha256" in failed.error
    # The previous database still serves.
    assert query(environment, "SELECT count(*) FROM users") == [(400,)]


def test_it_refuses_a_snapshot_that_is_not_ready(environment, snapshot):
    snapshot.status = SnapshotStatus.REJECTED
    snapshot.save()
    with pytest.raises(common.PipelineRefused, match="Only snapshots produced and verified"):
        restores.restore_request(environment=environment, snapshot=snapshot, actor=None)
    assert not Restore.objects.exists()


def test_it_refuses_a_restore_when_there_is_no_snapshot(environment):
    with pytest.raises(common.PipelineRefused, match="no ready snapshot to restore"):
        restores.restore_request(environment=environment, snapshot=None, actor=None)


def test_one_restore_per_environment_at_a_time(environment, snapshot):
    restores.restore_request(environment=environment, snapshot=snapshot, actor=None)
    with pytest.raises(common.PipelineRefused, match="already queued or running"):
        restores.restore_request(environment=environment, snapshot=snapshot, actor=None)


def test_a_worker_killed_mid_restore_leaves_the_old_database_serving(
    environment, snapshot, data_dir
):
    assert restore(environment).status == RestoreStatus.DONE
    request = restores.restore_request(environment=environment, snapshot=snapshot, actor=None)
    # A real process running the restore, killed with SIGKILL once it is restoring.
    from django.db import connection

    db = connection.settings_dict
    env = {
        **os.environ,
        "FIXPROOF_DATA_DIR": str(data_dir),
        # The test database, not the one .env names.
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import django; django.setup();"
                "from perfruns.services import restores;"
                f"restores.restore_run(restore_id={request.pk})"
            ),
        ],
        env={**env, "DJANGO_SETTINGS_MODULE": "fixproof.settings"},
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            request.refresh_from_db()
            if request.stage == "restoring" and request.tables_total:
                break
            time.sleep(0.05)
        assert request.stage == "restoring"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    cleaned = janitor.janitor_sweep()

    request.refresh_from_db()
    assert request.status == RestoreStatus.FAILED
    assert "worker was killed" in request.error
    assert any("stopped the cluster" in line for line in cleaned)
    assert not managed_cluster(environment).is_running()
    cluster = managed_cluster(environment)
    cluster.start()
    try:
        assert list_databases(cluster.conninfo(), "review__") == []
        with psycopg.connect(cluster.conninfo("review")) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (400,)
    finally:
        cluster.stop()


def test_it_restores_into_an_existing_server_by_its_admin_dsn(snapshot, monkeypatch):
    from perfruns.pipeline.databases import drop_database
    from tests import sourcedb

    monkeypatch.setenv("FIXPROOF_TEST_ADMIN_DSN", sourcedb.server_conninfo("postgres"))
    name = f"review_{snapshot.pk}_{os.getpid()}"
    env, _ = environments.environment_save(
        name="shared", kind="existing", dsn_env="FIXPROOF_TEST_ADMIN_DSN", database_name=name
    )
    try:
        done = restore(env, snapshot)

        assert done.status == RestoreStatus.DONE, done.error
        env.refresh_from_db()
        assert env.recorded_settings["server_version"].startswith("15")
        with psycopg.connect(sourcedb.server_conninfo(name)) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (400,)
        assert list_databases(sourcedb.server_conninfo("postgres"), f"{name}__") == []
    finally:
        drop_database(sourcedb.server_conninfo("postgres"), name)
