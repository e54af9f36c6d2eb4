"""What the benchmarks that make whole perf runs share: a scratch application database,
the demo database seeded and dumped, a managed review cluster holding it, bounded
arguments. Imported by the scripts beside it (they put this folder first on sys.path)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo"
SEED_TIMEOUT_S = 600


def server(dbname: str) -> str:
    db = settings.DATABASES["default"]
    return psycopg.conninfo.make_conninfo(
        host=db["HOST"] or "127.0.0.1",
        port=str(db["PORT"] or 5432),
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        dbname=dbname,
    )


def recreate(name: str) -> None:
    with psycopg.connect(server("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop(name: str) -> None:
    with psycopg.connect(server("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def demo_dump(folder: Path, database: str) -> Path:
    """The demo database, seeded with seed.py's defaults and dumped."""
    from perfruns.pipeline.execution import database_url
    from perfruns.pipeline.pgtools import find_binary, run

    recreate(database)
    url = database_url(server(database))
    seeded = subprocess.run(
        [sys.executable, str(DEMO / "seed.py")],
        env={**os.environ, "DATABASE_URL": url},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SEED_TIMEOUT_S,
        check=False,
    )
    if seeded.returncode != 0:
        raise SystemExit(f"seed.py failed with status {seeded.returncode}: {seeded.stderr[-500:]}")
    dump = folder / "demo.dump"
    run([find_binary("pg_dump"), "-Fc", "-f", str(dump), url], timeout=SEED_TIMEOUT_S)
    return dump


def review_environment(dump: Path, data_dir: Path) -> Any:
    """The `review` environment: a managed cluster holding the restored demo database."""
    from perfruns.models import ReviewEnvironment
    from perfruns.pipeline.cluster import ManagedCluster
    from perfruns.pipeline.restore import restore_and_swap
    from perfruns.services.environments import cluster_os_user

    cluster = ManagedCluster(data_dir / "clusters" / "review", os_user=cluster_os_user())
    cluster.initialize(shared_buffers="128MB", work_mem="4MB", max_connections=100, durable=True)
    cluster.start()
    try:
        restore_and_swap(
            dump_path=dump,
            admin_conninfo=cluster.conninfo("postgres"),
            live="review",
            jobs=2,
            timeout=SEED_TIMEOUT_S,
        )
    finally:
        cluster.stop()
    return ReviewEnvironment.objects.create(
        name="review", shared_buffers="128MB", max_connections=100
    )


def perf_run(scenario: Any, version: str, *, fail_on_error: bool = True) -> Any:
    """One whole perf run of the scenario at `version` (runs.perfrun_run: clone, target,
    Locust, memory sampler, recording, judging against its baseline)."""
    from perfruns.models import RunStatus, RunTrigger
    from perfruns.services import runs

    run = runs.perfrun_request(
        scenario=scenario, trigger=RunTrigger.COMMAND, actor=None, version=version
    )
    run = runs.perfrun_run(run_id=run.pk)
    if fail_on_error and run.status not in (RunStatus.PASSED, RunStatus.FAILED):
        raise SystemExit(f"run #{run.pk} (version {version}) ended {run.status}: {run.error}")
    return run


@contextmanager
def scratch_review_environment(*, app_database: str, demo_database: str) -> Iterator[Any]:
    """A scratch application database (migrated; the service's own is not touched) and a
    scratch data folder, with the `review` environment holding the seeded demo: yields
    the environment, and throws everything away after."""
    from django.core.management import call_command
    from django.db import connections

    from perfruns.pipeline.cluster import stop_stale_clusters

    data_dir = Path(tempfile.mkdtemp(prefix=f"{app_database}-", dir="/tmp"))
    data_dir.chmod(0o755)  # the managed cluster's OS user goes through it
    settings.FIXPROOF_DATA_DIR = data_dir
    # Nothing has connected yet: every row of the bench goes to the scratch database.
    recreate(app_database)
    settings.DATABASES["default"]["NAME"] = app_database
    try:
        call_command("migrate", verbosity=0)
        yield review_environment(demo_dump(data_dir, demo_database), data_dir)
    finally:
        connections.close_all()
        drop(app_database)
        drop(demo_database)
        stop_stale_clusters(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
