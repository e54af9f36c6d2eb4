"""Review environments: where snapshots are restored and perf runs drive their target.

A managed environment is a PostgreSQL cluster Fixproof creates in its data folder (as an
unprivileged OS user when the service runs as root) and starts only for the step that
needs it; an existing server is reached by the admin DSN its environment names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import transaction

from perfruns.models import DumpSource, EnvironmentKind, ReviewEnvironment
from perfruns.pipeline.cluster import ManagedCluster
from perfruns.pipeline.databases import drop_scratch_databases
from perfruns.pipeline.execution import drop_run_clones

from .common import PipelineRefused, check_env_name, check_name


@transaction.atomic
def environment_save(
    *,
    name: str,
    kind: str = EnvironmentKind.MANAGED,
    dsn_env: str = "",
    database_name: str = "review",
    shared_buffers: str = "128MB",
    work_mem: str = "4MB",
    max_connections: int = 100,
    source: DumpSource | None = None,
) -> tuple[ReviewEnvironment, bool]:
    check_name(name)
    if kind == EnvironmentKind.EXISTING and not dsn_env:
        raise PipelineRefused("An existing server needs --dsn-env, the variable holding its DSN.")
    if dsn_env:
        check_env_name(dsn_env)
    for label, value in (("shared_buffers", shared_buffers), ("work_mem", work_mem)):
        if not re.fullmatch(r"\d+(kB|MB|GB)", value):
            raise PipelineRefused(f"{label} must look like 128MB, 4MB or 1GB (got '{value}').")
    if not 5 <= max_connections <= 10000:
        raise PipelineRefused("max_connections must be between 5 and 10000.")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,49}", database_name):
        raise PipelineRefused(
            "The database name must be lower-case letters, digits and underscores "
            "(at most 50 characters)."
        )
    return ReviewEnvironment.objects.update_or_create(
        name=name,
        defaults={
            "kind": kind,
            "dsn_env": dsn_env,
            "database_name": database_name,
            "shared_buffers": shared_buffers,
            "work_mem": work_mem,
            "max_connections": max_connections,
            "source": source,
        },
    )


def cluster_os_user() -> str | None:
    # PostgreSQL refuses to run as root: as root, clusters run as an
    # unprivileged user; otherwise as whoever Fixproof runs as.
    return settings.MANAGED_CLUSTER_OS_USER if os.geteuid() == 0 else None


def managed_cluster(environment: ReviewEnvironment) -> ManagedCluster:
    return ManagedCluster(environment.data_dir, os_user=cluster_os_user())


@contextmanager
def admin_connection(environment: ReviewEnvironment) -> Iterator[tuple[str, int | None]]:
    """(admin conninfo, port) of the environment's server, started for the block
    when it is a managed cluster that was not running."""
    if environment.kind != EnvironmentKind.MANAGED:
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


def drop_leftover_databases(*, environment: ReviewEnvironment) -> list[str]:
    """Drop the half-restored databases and run clones a killed worker left; stop a
    managed cluster it left running. Only for an environment with no live restore or run."""
    done: list[str] = []
    if environment.kind == EnvironmentKind.MANAGED:
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
    return [
        *drop_scratch_databases(admin_conninfo, live=live),
        *drop_run_clones(admin_conninfo, live=live, keep=()),
    ]
