"""Restore a verified snapshot into a review environment, and clean after one.

A managed environment's cluster is started for the restore and stopped after
it (a run starts it again); an existing server is reached by the admin DSN
its environment names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from django.conf import settings

from .cluster import ManagedCluster
from .restore import drop_scratch_databases, restore_and_swap, verify_archive
from .snapshot import file_sha256

if TYPE_CHECKING:
    from collections.abc import Iterator

    from perfruns.models import ReviewEnvironment, Snapshot


class RestoreRefused(Exception):
    """The snapshot cannot be restored; the message says why."""


@dataclass
class Restored:
    settings: dict[str, Any]
    port: int | None


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


def cluster_os_user() -> str | None:
    # PostgreSQL refuses to run as root: as root, clusters run as an
    # unprivileged user; otherwise as whoever Fixproof runs as.
    return settings.MANAGED_CLUSTER_OS_USER if os.geteuid() == 0 else None


def managed_cluster(environment: ReviewEnvironment) -> ManagedCluster:
    return ManagedCluster(environment.data_dir, os_user=cluster_os_user())


@contextmanager
def admin_connection_info(environment: ReviewEnvironment) -> Iterator[tuple[str, int | None]]:
    """(admin conninfo, port) of the environment's server, started for the block
    when it is a managed cluster that was not running."""
    if environment.kind != "managed":
        yield environment.read_dsn(), None
        return
    cluster = managed_cluster(environment)
    cluster.initialize(
        shared_buffers=environment.shared_buffers,
        work_mem=environment.work_mem,
        max_connections=environment.max_connections,
        # The review database is what gets measured: it keeps normal durability.
        durable=True,
    )
    was_running = cluster.is_running()
    port = cluster.port if was_running else cluster.start()
    try:
        yield cluster.conninfo("postgres"), port
    finally:
        if not was_running:
            cluster.stop(mode="fast")


def read_settings(conninfo: str) -> dict[str, Any]:
    names = ("server_version", "shared_buffers", "work_mem", "max_connections", "fsync")
    with psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as conn:
        return {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}


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
    with admin_connection_info(environment) as (conninfo, port):
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


def drop_leftover_databases(*, environment: ReviewEnvironment) -> list[str]:
    """Drop half-restored databases a killed worker left; stop its cluster."""
    done: list[str] = []
    if environment.kind == "managed":
        cluster = managed_cluster(environment)
        if not cluster.is_running():
            return done
        for name in _leftovers(cluster.conninfo("postgres"), environment.database_name):
            done.append(f"dropped {environment.name}/{name}")
        # Nothing runs on a managed cluster between pipeline steps: a running
        # one was left by a killed worker.
        cluster.stop(mode="fast")
        done.append(f"stopped the cluster of {environment.name}")
        return done
    for name in _leftovers(environment.read_dsn(), environment.database_name):
        done.append(f"dropped {environment.name}/{name}")
    return done


def _leftovers(admin_conninfo: str, live: str) -> list[str]:
    """Half-restored databases and the clones of runs that no longer run (the janitor
    only calls this for environments without a live restore or run)."""
    from perfruns.runner import drop_run_databases

    return [
        *drop_scratch_databases(admin_conninfo, live=live),
        *drop_run_databases(admin_conninfo, live=live, keep=()),
    ]
