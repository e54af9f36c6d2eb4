"""The perf half of the demo: the demo target's database as a dump source, a managed
review environment with a snapshot restored into it, the `demo` scenario with its weekly
schedule, attached to the demo incident, and one run queued for the worker.

Safe to run again: what exists is kept (the snapshot and restore are only made once) and
one more run is queued unless one is under way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from psycopg import sql

from perfruns.models import (
    ReviewEnvironment,
    RunTrigger,
    Scenario,
    SnapshotStatus,
)
from perfruns.services import common, environments, restores, runs, snapshots, sources
from postmortems.models import PostMortem

DEMO = Path(settings.BASE_DIR) / "examples" / "demo"
TARGET_DB = "fixproof_demo_shop"
POOL_TITLE = "Connection pool exhausted on the 13M-row events table"


def _server_conninfo(dbname: str) -> str:
    db = settings.DATABASES["default"]
    params = {"host": db["HOST"] or "127.0.0.1", "port": str(db["PORT"] or 5432)}
    params.update(user=db["USER"], dbname=dbname)
    if db.get("PASSWORD"):
        params["password"] = db["PASSWORD"]
    return psycopg.conninfo.make_conninfo("", **params)


def _url(dbname: str) -> str:
    db = settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgresql://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{dbname}"


class Command(BaseCommand):
    help = "Load the perf-run demo (dump source, environment, scenario, one run)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--no-run", action="store_true", help="set everything up but queue no run"
        )

    def handle(self, *args, **options) -> None:
        self._seed_target()
        source = self._source()
        env, _ = environments.environment_save(
            name="demo",
            shared_buffers="128MB",
            work_mem="4MB",
            max_connections=50,
            source=source,
        )
        if env.current_snapshot is None:
            self._snapshot_and_restore(source, env)
        call_command("load_scenarios", str(DEMO / "scenarios.yml"), stdout=self.stdout)
        scenario = Scenario.objects.get(name="demo")
        incident = PostMortem.objects.filter(title=POOL_TITLE).first()
        if incident is not None:
            scenario.postmortems.add(incident)
            scenario.actions.add(*incident.actions.all())
            # The demo team's health on the dashboard (the YAML names no team: it loads
            # without the post-mortem demo too).
            if scenario.team_id is None and incident.team_id is not None:
                Scenario.objects.filter(pk=scenario.pk).update(team_id=incident.team_id)
        if options["no_run"]:
            return
        try:
            with transaction.atomic():
                run = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=None)
                runs.perfrun_enqueue(run)
        except common.PipelineRefused as exc:
            self.stdout.write(f"No demo run queued: {exc}")
            return
        self.stdout.write(
            f"Demo run queued: {settings.SITE_URL}{run.get_absolute_url()} (the worker "
            "starts it; `python manage.py perfrun demo --wait` runs it again)"
        )

    def _seed_target(self) -> None:
        with psycopg.connect(_server_conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [TARGET_DB]
            ).fetchone()
            if exists:
                return
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TARGET_DB)))
        result = subprocess.run(
            [sys.executable, str(DEMO / "seed.py")],
            env={**os.environ, "DATABASE_URL": _url(TARGET_DB)},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            with psycopg.connect(_server_conninfo("postgres"), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TARGET_DB))
                )
            raise CommandError(f"Seeding the demo target failed: {result.stderr.strip()[-500:]}")
        self.stdout.write(f"Seeded the demo target's database {TARGET_DB}")

    def _source(self):
        # The DSN goes in an owner-only secret file, never in the database.
        secrets = Path(settings.FIXPROOF_DATA_DIR) / "secrets"
        secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        dsn_file = secrets / "demo-shop.dsn"
        dsn_file.touch(mode=0o600)
        dsn_file.write_text(_url(TARGET_DB) + "\n")
        source, _ = sources.source_save(
            name="demo-shop",
            dsn_file=str(dsn_file),
            policy_yaml=(DEMO / "policy.yml").read_text(),
        )
        return source

    def _snapshot_and_restore(self, source, env: ReviewEnvironment) -> None:
        self.stdout.write("Taking the demo snapshot and restoring it (a few seconds)...")
        snapshot = snapshots.snapshot_run(
            snapshot_id=snapshots.snapshot_request(source=source, actor=None).pk
        )
        if snapshot.status != SnapshotStatus.READY:
            raise CommandError(f"The demo snapshot failed: {snapshot.error}")
        restore = restores.restore_run(
            restore_id=restores.restore_request(environment=env, snapshot=snapshot, actor=None).pk
        )
        if restore.error:
            raise CommandError(f"The demo restore failed: {restore.error}")
