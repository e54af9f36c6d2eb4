"""Writes of the snapshot and restore half of the pipeline.

Requests create a row in one transaction (the database refuses a second
active one); runs claim that row with one conditional UPDATE, so a
redelivered task does nothing; every run records its outcome, and cleans up
after itself whatever happens.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import socket
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from .masking.policy import PolicyError, parse_policy, policy_hash
from .models import (
    ACTIVE_RUN_STATUSES,
    VERSION_PLACEHOLDER,
    ChangeState,
    DumpSource,
    EnvironmentKind,
    NotificationSent,
    PerfRun,
    RegressionIncident,
    Restore,
    RestoreStatus,
    ReviewEnvironment,
    RunStatus,
    RunTrigger,
    Scenario,
    Snapshot,
    SnapshotStatus,
    SourceConfigError,
    Verification,
    VerificationCriterion,
    VersionComparison,
    Webhook,
)

log = logging.getLogger(__name__)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PipelineRefused(Exception):
    """A request that cannot be taken: the message says why, for a person."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------- sources


DSN_GIVEN = "Give the NAME of the variable holding the DSN, not the DSN."
_NAME = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")


def looks_like_dsn(value: str) -> bool:
    """A URI or a key=value conninfo, where a variable name was expected."""
    return "://" in value or "=" in value or "@" in value


def check_env_name(value: str) -> None:
    """Refuse a value that is not a variable name, without ever echoing a DSN:
    a pasted DSN holds a password, and this message reaches pages and logs."""
    if looks_like_dsn(value):
        raise PipelineRefused(DSN_GIVEN)
    if not _ENV_NAME.match(value):
        raise PipelineRefused(
            f"'{value}' is not an environment variable name (letters, digits, underscores)."
        )


def _check_name(name: str) -> None:
    # Pages link to sources and environments by name (a <slug:name> URL):
    # one saved with a space would break every page that lists it.
    if not _NAME.match(name):
        raise PipelineRefused(
            f"'{name}' is not a valid name: use letters, digits, hyphens and underscores "
            "(at most 100)."
        )


def _check_source_fields(
    *, name: str, dsn_env: str, dsn_file: str, policy_yaml: str, retention: int | None
) -> None:
    _check_name(name)
    if bool(dsn_env) == bool(dsn_file):
        raise PipelineRefused("Give either --dsn-env or --dsn-file (one of them, not both).")
    if dsn_env:
        check_env_name(dsn_env)
    if retention is not None and retention < 1:
        # 0 would silently mean the default; a negative one fails the column's CHECK.
        raise PipelineRefused("The number of snapshots kept must be at least 1.")
    # Raises PolicyError with the YAML line: the policy must parse to be saved.
    parse_policy(policy_yaml)


@transaction.atomic
def source_save(
    *,
    name: str,
    policy_yaml: str,
    dsn_env: str = "",
    dsn_file: str = "",
    retention: int | None = None,
) -> tuple[DumpSource, bool]:
    """Create or update a dump source by name; returns (source, created)."""
    _check_source_fields(
        name=name,
        dsn_env=dsn_env,
        dsn_file=dsn_file,
        policy_yaml=policy_yaml,
        retention=retention,
    )
    values = {
        "dsn_env": dsn_env,
        "dsn_file": dsn_file,
        "policy_yaml": policy_yaml,
        "policy_hash": policy_hash(policy_yaml),
        "retention": retention,
    }
    return DumpSource.objects.update_or_create(name=name, defaults=values)


# ---------------------------------------------------------------- snapshots


def snapshot_request(*, source: DumpSource, actor: AbstractBaseUser | None) -> Snapshot:
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


def snapshot_claim(*, snapshot_id: int) -> bool:
    """queued -> running, once: a redelivered message claims nothing."""
    claimed = Snapshot.objects.filter(pk=snapshot_id, status=SnapshotStatus.QUEUED).update(
        status=SnapshotStatus.RUNNING,
        started_at=timezone.now(),
        worker=worker_id(),
        stage="starting",
    )
    return claimed == 1


def _snapshot_stage(snapshot_id: int, stage: str) -> None:
    Snapshot.objects.filter(pk=snapshot_id, status=SnapshotStatus.RUNNING).update(stage=stage)


def masking_key() -> bytes:
    if settings.MASKING_KEY:
        return settings.MASKING_KEY.encode()
    import hashlib
    import hmac

    # Derived, so the SECRET_KEY itself never reaches a database.
    return hmac.new(settings.SECRET_KEY.encode(), b"fixproof-masking-key", hashlib.sha256).digest()


def snapshot_run(*, snapshot_id: int) -> Snapshot:
    """Produce the snapshot: dump, mask, verify, write. Idempotent per row."""
    from .pipeline.snapshot import PiiRejected, PolicyInvalid, produce_snapshot

    janitor_sweep()
    if not snapshot_claim(snapshot_id=snapshot_id):
        return Snapshot.objects.get(pk=snapshot_id)
    snapshot = Snapshot.objects.select_related("source").get(pk=snapshot_id)
    source = snapshot.source
    final: dict[str, Any]
    try:
        result = produce_snapshot(
            source_dsn=source.read_dsn(),
            source_name=source.name,
            policy_text=source.policy_yaml,
            key=masking_key(),
            out_dir=Path(settings.FIXPROOF_DATA_DIR) / "snapshots" / source.name,
            work_dir=Path(settings.FIXPROOF_DATA_DIR) / "scratch" / f"snapshot-{snapshot.pk}",
            jobs=settings.PIPELINE_JOBS,
            timeout=settings.PIPELINE_TIMEOUT,
            stage=lambda name: _snapshot_stage(snapshot.pk, name),
        )
    except PiiRejected as exc:
        final = {"status": SnapshotStatus.REJECTED, "report": exc.report, "error": str(exc)}
    except PolicyInvalid as exc:
        final = {"status": SnapshotStatus.FAILED, "report": exc.report, "error": str(exc)}
    except (SourceConfigError, PolicyError) as exc:
        final = {"status": SnapshotStatus.FAILED, "error": str(exc)}
    except Exception as exc:  # the pipeline broke: say which step and why
        log.exception("snapshot %s failed", snapshot.pk)
        final = {"status": SnapshotStatus.FAILED, "error": _describe(exc)}
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
    Snapshot.objects.filter(pk=snapshot.pk, status=SnapshotStatus.RUNNING).update(
        finished_at=timezone.now(), stage="", **final
    )
    if final["status"] == SnapshotStatus.READY:
        snapshot_apply_retention(source=source)
    snapshot.refresh_from_db()
    return snapshot


def _describe(exc: BaseException) -> str:
    from .pipeline.pgtools import redact

    return redact(f"{exc.__class__.__name__}: {exc}" if not str(exc) else str(exc))


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


# ---------------------------------------------------------------- environments


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
    _check_name(name)
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


def restore_request(
    *,
    environment: ReviewEnvironment,
    snapshot: Snapshot | None,
    actor: AbstractBaseUser | None,
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


def restore_claim(*, restore_id: int) -> bool:
    claimed = Restore.objects.filter(pk=restore_id, status=RestoreStatus.QUEUED).update(
        status=RestoreStatus.RUNNING,
        started_at=timezone.now(),
        worker=worker_id(),
        stage="starting",
    )
    return claimed == 1


def restore_run(*, restore_id: int) -> Restore:
    from .pipeline.environment import restore_into_environment

    janitor_sweep()
    if not restore_claim(restore_id=restore_id):
        return Restore.objects.get(pk=restore_id)
    restore = Restore.objects.select_related("environment", "snapshot").get(pk=restore_id)

    def progress(done: int, total: int) -> None:
        Restore.objects.filter(pk=restore_id).update(tables_done=done, tables_total=total)

    def stage(name: str) -> None:
        Restore.objects.filter(pk=restore_id).update(stage=name)

    try:
        recorded = restore_into_environment(
            environment=restore.environment,
            snapshot=restore.snapshot,
            progress=progress,
            stage=stage,
        )
    except Exception as exc:
        log.warning("restore %s failed: %s", restore_id, _describe(exc))
        Restore.objects.filter(pk=restore_id).update(
            status=RestoreStatus.FAILED, error=_describe(exc), finished_at=timezone.now()
        )
    else:
        with transaction.atomic():
            Restore.objects.filter(pk=restore_id).update(
                status=RestoreStatus.DONE, finished_at=timezone.now(), stage=""
            )
            ReviewEnvironment.objects.filter(pk=restore.environment_id).update(
                current_snapshot=restore.snapshot,
                recorded_settings=recorded.settings,
                port=recorded.port,
                last_restored_at=timezone.now(),
            )
    restore.refresh_from_db()
    return restore


# ---------------------------------------------------------------- janitor


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_dead_worker(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        # Another host's worker: that host's janitor judges it.
        return False
    return not _pid_alive(int(pid))


def _fail_dead_rows(model: type, *, failed: str, cleaned: str, done: list[str]) -> list[Any]:
    """Mark the running rows of a dead worker of this host failed; return the live ones."""
    live = []
    for row in model.objects.filter(status="running"):
        if not _is_dead_worker(row.worker):
            live.append(row)
            continue
        model.objects.filter(pk=row.pk, status="running").update(
            status=failed,
            finished_at=timezone.now(),
            error=f"The worker was killed during the '{row.stage}' step; {cleaned}.",
        )
        done.append(f"{model._meta.model_name} #{row.pk} marked failed")
    return live


def janitor_sweep() -> list[str]:
    """Clean what a killed worker left: mark its rows failed, stop its clusters,
    remove its scratch folders and raw dumps, drop half-restored databases.

    Runs when a worker starts and before each snapshot or restore.
    """
    import shutil

    from .pipeline.cluster import stop_stale_clusters

    done: list[str] = []
    live_snapshot_ids = {
        snap.pk
        for snap in _fail_dead_rows(
            Snapshot,
            failed=SnapshotStatus.FAILED,
            cleaned="its scratch cluster and raw dump were removed",
            done=done,
        )
    }
    live_restores = {
        restore.environment_id
        for restore in _fail_dead_rows(
            Restore,
            failed=RestoreStatus.FAILED,
            cleaned="the half-restored database was dropped and the previous one kept",
            done=done,
        )
    }

    scratch_root = Path(settings.FIXPROOF_DATA_DIR) / "scratch"
    if scratch_root.is_dir():
        for folder in scratch_root.iterdir():
            match = re.fullmatch(r"snapshot-(\d+)", folder.name)
            if match and int(match.group(1)) in live_snapshot_ids:
                continue
            for stopped in stop_stale_clusters(folder):
                done.append(f"stopped cluster {stopped}")
            shutil.rmtree(folder, ignore_errors=True)
            done.append(f"removed {folder}")

    from .pipeline.perfrun import stop_recorded

    _fail_dead_rows(
        VersionComparison,
        failed="error",
        cleaned="its current run is cleaned up with it",
        done=done,
    )
    live_runs = set()
    for run in _fail_dead_rows(
        PerfRun,
        failed=RunStatus.ERROR,
        cleaned="its target and Locust were stopped and its database clone dropped",
        done=done,
    ):
        live_runs.add(run.environment_id)
    runs_dir = runs_root()
    if runs_dir.is_dir():
        ended = PerfRun.objects.exclude(status=RunStatus.RUNNING).values_list("pk", flat=True)
        for pk in ended.filter(pk__in=_run_ids(runs_dir)):
            pid_file = runs_dir / f"run-{pk}" / "pids"
            for pid in stop_recorded(pid_file):
                done.append(f"stopped process group {pid} of run #{pk}")
            pid_file.unlink(missing_ok=True)

    from .pipeline.environment import drop_leftover_databases

    for env in ReviewEnvironment.objects.exclude(pk__in=live_restores | live_runs):
        try:
            done += drop_leftover_databases(environment=env)
        except Exception as exc:  # an unreachable environment must not stop the sweep
            log.warning("janitor: environment %s: %s", env.name, _describe(exc))
    for line in done:
        log.info("janitor: %s", line)
    return done


# ---------------------------------------------------------------- scenarios

SCENARIO_DEFAULT_SCHEDULE = {"day_of_week": "1", "hour": 3, "minute": 0}  # Monday 03:00
_THRESHOLD_KEYS = {"p95_ms", "p99_ms", "failure_rate", "db_ram_peak_mb", "min_rps", "endpoints"}
_ENDPOINT_THRESHOLD_KEYS = {"p95_ms", "p99_ms", "failure_rate"}
_SCENARIO_FIELDS = (
    "description",
    "locustfile_path",
    "locustfile_text",
    "target_url",
    "environment",
    "restore_first",
    "start_command",
    "start_env",
    "health_url",
    "health_timeout_s",
    "users",
    "spawn_rate",
    "duration_s",
    "shape",
    "step_start",
    "step_size",
    "step_duration_s",
    "step_max",
    "arrival_rps",
    "workers",
    "thresholds",
    "tags",
    "default_version",
)
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:@/-]{0,99}")


def check_version(value: str, *, label: str = "version") -> None:
    """A version goes into the target's command line and environment: a plain token only
    (no space, quote or shell character), so it can never split or extend the command."""
    if not _VERSION.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise PipelineRefused(
            f"The {label} '{shown}' is not a version: use letters, digits and . _ + : @ / - "
            "(at most 100, starting with a letter or a digit)."
        )


def versioned(text: str, version: str) -> str:
    """`text` with {version} replaced (check_version keeps it one shell-free token)."""
    return text.replace(VERSION_PLACEHOLDER, version)


def scenario_shape(scenario: Scenario):
    from .loadtest import LoadShape

    return LoadShape(
        kind=scenario.shape,
        users=scenario.users,
        spawn_rate=scenario.spawn_rate,
        duration_s=scenario.duration_s,
        step_start=scenario.step_start,
        step_size=scenario.step_size,
        step_duration_s=scenario.step_duration_s,
        step_max=scenario.step_max,
        arrival_rps=scenario.arrival_rps,
    )


def _check_thresholds(thresholds: Any) -> None:
    if not isinstance(thresholds, dict):
        raise PipelineRefused("Thresholds must be a mapping such as {p95_ms: 500}.")
    unknown = set(thresholds) - _THRESHOLD_KEYS
    if unknown:
        raise PipelineRefused(
            f"Unknown threshold {sorted(unknown)[0]!r}: use {', '.join(sorted(_THRESHOLD_KEYS))}."
        )
    for key, value in thresholds.items():
        if key == "endpoints":
            if not isinstance(value, dict):
                raise PipelineRefused("endpoints thresholds map an endpoint name to thresholds.")
            for endpoint, limits in value.items():
                if not isinstance(limits, dict) or set(limits) - _ENDPOINT_THRESHOLD_KEYS:
                    raise PipelineRefused(
                        f"The thresholds of endpoint {endpoint!r} may only be "
                        f"{', '.join(sorted(_ENDPOINT_THRESHOLD_KEYS))}."
                    )
                for name, limit in limits.items():
                    _check_number(f"{endpoint} {name}", limit)
        else:
            _check_number(key, value)


def _check_number(label: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise PipelineRefused(f"The threshold {label} must be a number of at least 0.")


def scenario_check(scenario: Scenario) -> None:
    """Refuse a scenario the pipeline could not run, with the reason."""
    from .pipeline.perfrun import is_loopback_url

    _check_name(scenario.name)
    if bool(scenario.locustfile_path) == bool(scenario.locustfile_text):
        raise PipelineRefused("Give either a locustfile path or an uploaded locustfile.")
    for label, url in (("target URL", scenario.target_url), ("health URL", scenario.health_url)):
        if url and not is_loopback_url(url):
            raise PipelineRefused(
                f"The {label} {url} is not on this machine: only loopback addresses "
                "(127.0.0.1, ::1, localhost) are load-test targets."
            )
    if not isinstance(scenario.start_env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in scenario.start_env.items()
    ):
        raise PipelineRefused("The target environment maps variable names to text values.")
    problems = scenario_shape(scenario).validate()
    if problems:
        raise PipelineRefused(" ".join(problems))
    if scenario.workers > 16:
        raise PipelineRefused("At most 16 Locust workers.")
    _check_thresholds(scenario.thresholds)
    if scenario.default_version:
        check_version(scenario.default_version, label="version of the weekly runs")
    elif scenario.takes_version:
        raise PipelineRefused(
            "The target start command takes a {version}: give the version of the weekly "
            "runs (default_version) as well."
        )


@transaction.atomic
def scenario_save(
    *,
    name: str,
    values: dict[str, Any],
    postmortem_ids: list[int] | None = None,
    action_ids: list[int] | None = None,
) -> tuple[Scenario, bool]:
    """Create or update a scenario by name, with its default weekly schedule; returns
    (scenario, created). Nothing is saved when a value is refused."""
    unknown = set(values) - set(_SCENARIO_FIELDS)
    if unknown:
        raise PipelineRefused(f"Unknown scenario field {sorted(unknown)[0]!r}.")
    scenario = Scenario.objects.filter(name=name).first() or Scenario(name=name)
    created = scenario.pk is None
    for key, value in values.items():
        setattr(scenario, key, value)
    scenario_check(scenario)
    scenario.save()
    if postmortem_ids is not None:
        scenario.postmortems.set(postmortem_ids)
    if action_ids is not None:
        scenario.actions.set(action_ids)
    if created:
        scenario_schedule_set(scenario=scenario, enabled=True, **SCENARIO_DEFAULT_SCHEDULE)
    return scenario, created


def scenario_schedule(scenario: Scenario):
    from django_celery_beat.models import PeriodicTask

    return (
        PeriodicTask.objects.select_related("crontab").filter(name=scenario.schedule_name).first()
    )


_DAYS = {"0", "1", "2", "3", "4", "5", "6", "*"}


@transaction.atomic
def scenario_schedule_set(
    *, scenario: Scenario, day_of_week: str, hour: int, minute: int, enabled: bool
) -> Any:
    """The scenario's weekly run (django-celery-beat), in the service's time zone."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    if str(day_of_week) not in _DAYS:
        raise PipelineRefused("The day of the week is 0 (Sunday) to 6, or * for every day.")
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise PipelineRefused("The hour is 0 to 23 and the minute 0 to 59.")
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute=str(minute),
        hour=str(hour),
        day_of_week=str(day_of_week),
        day_of_month="*",
        month_of_year="*",
        timezone=settings.TIME_ZONE,
    )
    task, _ = PeriodicTask.objects.update_or_create(
        name=scenario.schedule_name,
        defaults={
            "task": "perfruns.scenario_scheduled",
            "crontab": crontab,
            "interval": None,
            "args": f"[{scenario.pk}]",
            "enabled": enabled,
        },
    )
    return task


# ---------------------------------------------------------------- perf runs


def perfrun_request(
    *,
    scenario: Scenario,
    trigger: str,
    actor: AbstractBaseUser | None,
    version_comparison: VersionComparison | None = None,
    role: str = "",
) -> PerfRun:
    """Queue a run of the scenario; refused while its environment has one under way.

    A run of a version comparison starts the target at that comparison's version for its
    role; any other run at the scenario's default version."""
    if version_comparison is not None:
        version = version_comparison.version_of(role)
    else:
        version = scenario.default_version if scenario.takes_version else ""
    try:
        with transaction.atomic():
            run = PerfRun.objects.create(
                scenario=scenario,
                environment=scenario.environment,
                trigger=trigger,
                created_by=actor,
                version=version,
                version_comparison=version_comparison,
                role=role,
            )
            if version_comparison is None:
                # Evidence of the incidents and actions the scenario is about; a version
                # under comparison is evidence of nothing yet.
                run.postmortems.set(scenario.postmortems.all())
                run.actions.set(scenario.actions.all())
    except IntegrityError:
        active = PerfRun.objects.filter(
            environment=scenario.environment, status__in=ACTIVE_RUN_STATUSES
        ).first()
        raise PipelineRefused(
            f"A run on the review environment {scenario.environment.name} is already "
            f"queued or running" + (f" (run #{active.pk})." if active else ".")
        ) from None
    return run


def perfrun_enqueue(run: PerfRun) -> None:
    from . import tasks

    transaction.on_commit(lambda: tasks.perfrun_execute.delay(run.pk))


def perfrun_claim(*, run_id: int) -> bool:
    claimed = PerfRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING,
        started_at=timezone.now(),
        worker=worker_id(),
        stage="starting",
        progress=0,
    )
    return claimed == 1


def perfrun_cancel(*, run: PerfRun) -> bool:
    """Ask a run to stop: a queued one is cancelled now, a running one at its next check."""
    if PerfRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.CANCELLED, finished_at=timezone.now(), stage=""
    ):
        return True
    return bool(
        PerfRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(cancel_requested=True)
    )


def runs_root() -> Path:
    return Path(settings.FIXPROOF_DATA_DIR) / "runs"


def perfrun_run(*, run_id: int) -> PerfRun:
    """Execute a claimed run end to end; always records an outcome and cleans up."""
    from .runner import RunExecution

    janitor_sweep()
    if not perfrun_claim(run_id=run_id):
        return PerfRun.objects.get(pk=run_id)
    run = PerfRun.objects.select_related("scenario", "environment").get(pk=run_id)
    RunExecution(run).execute()
    run.refresh_from_db()
    return run


def perfrun_schedule_fire(*, scenario_id: int) -> PerfRun | None:
    scenario = Scenario.objects.filter(pk=scenario_id).select_related("environment").first()
    if scenario is None:
        log.warning("scheduled run: scenario #%s no longer exists", scenario_id)
        return None
    try:
        with transaction.atomic():
            run = perfrun_request(scenario=scenario, trigger=RunTrigger.SCHEDULE, actor=None)
            perfrun_enqueue(run)
    except PipelineRefused as exc:
        log.warning("scheduled run of %s skipped: %s", scenario.name, exc)
        return None
    return run


def _run_ids(runs_dir: Path) -> list[int]:
    return [
        int(match.group(1))
        for folder in runs_dir.iterdir()
        if (match := re.fullmatch(r"run-(\d+)", folder.name)) and (folder / "pids").exists()
    ]


# ---------------------------------------------------------------- verified actions

_COMPARE = {
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


def _criterion_measure(criterion: VerificationCriterion, run: PerfRun) -> float | None:
    metric = criterion.metric
    if metric == "db_ram_peak_mb":
        peak = run.summary.get("db_ram_peak")
        return peak / 2**20 if peak is not None else None
    name = criterion.endpoint or "Aggregated"
    stat = next((e for e in run.endpoints.all() if e.name == name), None)
    if stat is None:
        return None
    if metric == "failure_rate":
        return stat.failure_rate
    if metric == "rps":
        return stat.rps
    return stat.percentiles.get(metric.removesuffix("_ms").removeprefix("p"))


def _criterion_check(
    criterion: VerificationCriterion, run: PerfRun
) -> tuple[bool, float | None, str]:
    if criterion.metric == "not_worse":
        from .comparison import ComparisonError, compare_runs

        try:
            comparison = compare_runs(baseline=criterion.reference_run, candidate=run)
        except ComparisonError as exc:
            return False, None, str(exc)[:300]
        if not comparison.valid:
            return False, None, " ".join(comparison.reasons)[:300]
        worse = [
            v
            for v in comparison.worse
            if not criterion.endpoint or v.endpoint == criterion.endpoint
        ]
        note = ", ".join(f"{v.endpoint} {v.metric}" for v in worse)
        return not worse, None, (f"worse: {note}" if note else "")[:300]
    measured = _criterion_measure(criterion, run)
    if measured is None:
        return False, None, "not measured by this run"
    return _COMPARE[criterion.comparison](measured, criterion.value), measured, ""


@transaction.atomic
def criterion_save(
    *,
    action: Any,
    actor: AbstractBaseUser | None,
    scenario: Scenario,
    metric: str,
    comparison: str = "lt",
    value: float | None = None,
    endpoint: str = "",
    users: int | None = None,
    reference_run: PerfRun | None = None,
) -> VerificationCriterion:
    """Set the proof an action asks for. A changed proof starts unverified again (the runs
    that judged the old one prove nothing about the new one); the change is in the
    post-mortem's history. Nothing is written when a value is refused."""

    from .models import CriterionComparison, CriterionMetric

    if metric not in CriterionMetric.values:
        raise PipelineRefused(f"Unknown metric {metric!r}.")
    if comparison not in CriterionComparison.values:
        raise PipelineRefused(f"Unknown comparison {comparison!r}.")
    if users is not None and users < 1:
        raise PipelineRefused("The number of users must be at least 1.")
    if metric == CriterionMetric.NOT_WORSE:
        value = None
        if reference_run is None:
            raise PipelineRefused("“Not worse than a reference run” needs that run's number.")
        if reference_run.scenario_id != scenario.pk:
            raise PipelineRefused(
                f"Run #{reference_run.pk} is a run of {reference_run.scenario.name}, not of "
                f"{scenario.name}."
            )
        if reference_run.status not in (RunStatus.PASSED, RunStatus.FAILED) or (
            reference_run.invalid_reason
        ):
            raise PipelineRefused(
                f"Run #{reference_run.pk} has no valid figures ({reference_run.status}): it "
                "cannot be the reference."
            )
    else:
        reference_run = None
        if value is None:
            raise PipelineRefused("Give the value the run's figure must be compared with.")
        if value < 0:
            raise PipelineRefused("The value must be at least 0.")
        if metric == CriterionMetric.FAILURE_RATE and value > 1:
            raise PipelineRefused("A failure rate is between 0 and 1 (0.01 is 1 %).")
    criterion = VerificationCriterion.objects.filter(action=action).first()
    old = criterion.description if criterion else ""
    criterion = criterion or VerificationCriterion(action=action)
    criterion.scenario = scenario
    criterion.endpoint = endpoint.strip()
    criterion.metric = metric
    criterion.comparison = comparison
    criterion.value = value
    criterion.users = users
    criterion.reference_run = reference_run
    if criterion.description == old:
        return criterion
    criterion.state = "unverified"
    criterion.state_run = None
    criterion.measured = None
    criterion.save()
    criterion.verifications.all().delete()
    _proof_history(action, actor, old=old, new=criterion.description)
    return criterion


@transaction.atomic
def criterion_remove(*, action: Any, actor: AbstractBaseUser | None) -> bool:
    criterion = VerificationCriterion.objects.filter(action=action).first()
    if criterion is None:
        return False
    _proof_history(action, actor, old=criterion.description, new="")
    criterion.delete()
    return True


def _proof_history(action: Any, actor: AbstractBaseUser | None, *, old: str, new: str) -> None:
    """The post-mortem's history line of a changed proof, told like an action's update."""
    from postmortems.models import HistoryEntry

    HistoryEntry.objects.create(
        postmortem_id=action.postmortem_id,
        action=action,
        actor=actor,
        subject=f"Action {action.number}",
        verb="updated",
        changes=[{"field": "proof asked", "old": old, "new": new}],
    )


def criteria_evaluate(*, run: PerfRun) -> list[str]:
    """Evaluate the verification criteria of the run's scenario; move each action's state.

    A passing run verifies a done action; a failing one marks it failed, or regressed if it
    was verified (the action is reopened). Invalid runs and runs at another number of
    users than a criterion asks prove nothing. Returns one line per criterion evaluated.
    """
    from postmortems.models import ActionStatus

    if run.invalid_reason or run.status not in (RunStatus.PASSED, RunStatus.FAILED):
        return []
    if run.version_comparison_id is not None:
        return []  # a version under comparison, not the scenario's own state
    lines = []
    criteria = VerificationCriterion.objects.filter(scenario_id=run.scenario_id).select_related(
        "action", "reference_run", "scenario"
    )
    for criterion in criteria:
        if criterion.users and run.settings.get("users") != criterion.users:
            continue
        passed, measured, note = _criterion_check(criterion, run)
        with transaction.atomic():
            _verification, created = Verification.objects.get_or_create(
                criterion=criterion,
                run=run,
                defaults={"passed": passed, "measured": measured, "note": note},
            )
            if not created:
                continue  # this run was evaluated already (a redelivered task)
            action = criterion.action
            if passed:
                state = "verified" if action.status == ActionStatus.DONE else criterion.state
            elif criterion.state in ("verified", "regressed"):
                state = "regressed"
                # A fix that stopped working is open work again.
                type(action).objects.filter(pk=action.pk, status=ActionStatus.DONE).update(
                    status=ActionStatus.IN_PROGRESS, done_at=None
                )
            else:
                state = "failed"
            VerificationCriterion.objects.filter(pk=criterion.pk).update(
                state=state, state_run=run, measured=measured, updated_at=timezone.now()
            )
            if state in ("failed", "regressed") and criterion.state != state:
                _notify_verification(criterion, run, state=state, measured=measured, note=note)
        lines.append(f"action {action.pk}: {state} by run #{run.pk}")
    return lines


# ---------------------------------------------------------------- notifications

NOTIFICATION_TTL_S = 7 * 86400


class DatabaseDeduplicator:
    """notify's Deduplicator over NotificationSent: one delivery per key across workers
    (the unique key is claimed by an INSERT), again after the TTL."""

    def __init__(self, ttl_s: float = NOTIFICATION_TTL_S) -> None:
        self.ttl_s = ttl_s

    def first_time(self, key: str) -> bool:
        cutoff = timezone.now() - dt.timedelta(seconds=self.ttl_s)
        NotificationSent.objects.filter(key=key, created_at__lt=cutoff).delete()
        try:
            with transaction.atomic():
                NotificationSent.objects.create(key=key)
        except IntegrityError:
            return False
        return True

    def forget(self, key: str) -> None:
        NotificationSent.objects.filter(key=key).delete()


def notification_enqueue(
    *,
    kind: str,
    title: str,
    path: str,
    figures: dict[str, str],
    dedupe_key: str,
    team_ids: list[int],
) -> bool:
    """Queue a notification for the teams' enabled webhooks (after commit); False when no
    team has one."""
    team_ids = sorted({pk for pk in team_ids if pk is not None})
    if not Webhook.objects.filter(team_id__in=team_ids, enabled=True).exists():
        return False
    from . import tasks

    event = {
        "kind": kind,
        "title": title,
        "url": f"{settings.SITE_URL}{path}",
        "figures": figures,
        "dedupe_key": dedupe_key,
    }
    transaction.on_commit(functools.partial(tasks.notify_event.delay, event, team_ids))
    return True


def notification_send(*, event: dict[str, Any], team_ids: list[int]) -> list[str]:
    """Deliver one event to the teams' enabled webhooks (retried with backoff, once per
    hook); one line per hook, never holding a URL."""
    from .notify import Event, notify

    lines: list[str] = []
    hooks = []
    for hook in Webhook.objects.filter(team_id__in=team_ids, enabled=True).select_related("team"):
        try:
            hooks.append((hook.kind, hook.read_url()))
        except SourceConfigError as exc:
            lines.append(str(exc))
    lines += notify(hooks, Event(**event), dedupe=DatabaseDeduplicator())
    for line in lines:
        log.info("notification %s: %s", event["dedupe_key"], line)
    return lines


def _notify_verification(
    criterion: VerificationCriterion, run: PerfRun, *, state: str, measured, note: str
) -> None:
    action = criterion.action
    postmortem = action.postmortem
    figures = {
        "criterion": criterion.description,
        "measured": f"{measured:.4g}" if measured is not None else (note or "not measured"),
        "run": f"#{run.pk}",
    }
    if action.owner_display:
        figures["owner"] = action.owner_display
    what = "regressed (reopened)" if state == "regressed" else "failed its verification"
    notification_enqueue(
        kind=f"verification_{state}",
        title=f"Action {action.number} of “{postmortem.title}” {what}",
        path=f"{postmortem.get_absolute_url()}#action-{action.number}",
        figures=figures,
        dedupe_key=f"verification_{state}:action={action.pk}:run={run.pk}",
        team_ids=[postmortem.team_id],
    )


# ---------------------------------------------------------------- the weekly series

TREND_METRICS = (
    ("p95_ms", "p95 (ms)"),
    ("failure_rate", "failure rate"),
    ("db_ram_peak", "DB RAM"),
)
TREND_MIN_RUNS = 6
TREND_MAX_RUNS = 200


def scenario_trend_compute(scenario: Scenario) -> list[dict[str, Any]]:
    """Per metric, the scenario's valid finished runs (oldest first, the last 200, version
    comparisons left out) as [run, value] points, and the runs where E-divisive change
    points say a new level started, with the means before and after."""
    from .regression import change_points, segment_summary

    runs = list(
        scenario.runs.filter(
            status__in=[RunStatus.PASSED, RunStatus.FAILED],
            invalid_reason="",
            version_comparison__isnull=True,
        )
        .order_by("-created_at", "-id")
        .values("pk", "summary")[:TREND_MAX_RUNS]
    )[::-1]
    trend = []
    for key, label in TREND_METRICS:
        points = [[r["pk"], r["summary"][key]] for r in runs if r["summary"].get(key) is not None]
        changes = []
        if len(points) >= TREND_MIN_RUNS:
            values = [value for _, value in points]
            found = change_points(values)
            # Before and after: the means of the two regimes the change point separates.
            regimes = segment_summary(values, found)
            for n, i in enumerate(found):
                before, after = regimes[n].mean, regimes[n + 1].mean
                changes.append(
                    {
                        "run": points[i][0],
                        "before": before,
                        "after": after,
                        "runs_after": [pk for pk, _ in points[i : regimes[n + 1].end]],
                        "worse": _is_worse(key, before, after),
                    }
                )
        trend.append({"key": key, "label": label, "points": points, "changes": changes})
    return trend


def scenario_trend_refresh(*, scenario: Scenario) -> list[dict[str, Any]]:
    """Compute the series' change points and keep them on the scenario for its page."""
    trend = scenario_trend_compute(scenario)
    Scenario.objects.filter(pk=scenario.pk).update(trend=trend)
    scenario.trend = trend
    return trend


def _is_worse(key: str, before: float, after: float) -> bool:
    # The floors of the per-run comparison (perfruns.regression.Floors).
    if key == "p95_ms":
        return after - before > max(0.10 * before, 20.0)
    if key == "failure_rate":
        return after - before > 0.005
    return after - before > 0.05 * before  # DB RAM


def _trend_figure(key: str, value: float) -> str:
    if key == "p95_ms":
        return f"{value:.0f} ms"
    if key == "failure_rate":
        return f"{100 * value:.2f} %"
    return f"{value / 2**20:.0f} MiB"


def regression_incidents_open(*, scenario: Scenario) -> list[Any]:
    """Refresh the series' change points; for each one that made things worse, once per
    scenario and change point, a draft post-mortem with its figures as impacts and its
    runs attached, and the scenario's teams told (the regression is confirmed)."""
    trend = scenario_trend_refresh(scenario=scenario)
    by_run: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for metric in trend:
        for change in metric["changes"]:
            if change["worse"]:
                by_run.setdefault(change["run"], []).append((metric["key"], change))
    opened = []
    for start_run, changes in sorted(by_run.items()):
        with transaction.atomic():
            postmortem = _regression_incident_open(scenario, start_run, changes)
        if postmortem is not None:
            opened.append(postmortem)
    _regression_incidents_fixed(scenario, trend)
    return opened


def _regression_incidents_fixed(scenario: Scenario, trend: list[dict[str, Any]]) -> None:
    """Mark fixed each confirmed change whose every worse metric has since come back, by a
    later change point, to a level no worse than before it (within the floors)."""
    for incident in scenario.incidents.filter(state=ChangeState.CONFIRMED):
        back_at = []
        for metric in trend:
            points = [pk for pk, _ in metric["points"]]
            changes = metric["changes"]
            started = next(
                (i for i, c in enumerate(changes) if c["run"] == incident.start_run_id), None
            )
            if started is None or not changes[started]["worse"]:
                continue
            before = changes[started]["before"]
            returned = next(
                (
                    c
                    for c in changes[started + 1 :]
                    if not _is_worse(metric["key"], before, c["after"])
                ),
                None,
            )
            if returned is None:
                back_at = []
                break
            back_at.append((points.index(returned["run"]), returned["run"]))
        if back_at:
            RegressionIncident.objects.filter(pk=incident.pk, state=ChangeState.CONFIRMED).update(
                state=ChangeState.FIXED, fixed_by_run_id=max(back_at)[1]
            )


def _regression_incident_open(
    scenario: Scenario, start_run: int, changes: list[tuple[str, dict[str, Any]]]
) -> Any:
    from postmortems.models import Team
    from postmortems.services import PostMortemContent, postmortem_save

    if RegressionIncident.objects.filter(scenario=scenario, start_run_id=start_run).exists():
        return None
    impacts = []
    for key, change in changes:
        unit, scale = {"p95_ms": ("ms", 1), "failure_rate": ("%", 100)}.get(key, ("MiB", 1 / 2**20))
        name = dict(TREND_METRICS)[key]
        for when in ("before", "after"):
            value = Decimal(str(round(change[when] * scale, 2)))
            impacts.append({"label": f"{name} {when}", "value": value, "unit": unit, "window": ""})
    run = PerfRun.objects.get(pk=start_run)
    worse = sorted(
        {v["endpoint"] for v in run.regression.get("verdicts", []) if v["verdict"] == "worse"}
    )
    if worse:
        impacts.append(
            {"label": "endpoints concerned: " + ", ".join(worse)[:280],
             "value": None, "unit": "", "window": ""}
        )  # fmt: skip
    team_ids = list(scenario.postmortems.exclude(team=None).values_list("team", flat=True))
    names = ", ".join(dict(TREND_METRICS)[key] for key, _ in changes)
    postmortem = postmortem_save(
        actor=None,
        content=PostMortemContent(
            fields={
                "title": f"Regression of {scenario.name} from run #{start_run}"[:200],
                "summary": (
                    f"The runs of scenario {scenario.name} moved to a worse level from run "
                    f"#{start_run} ({names}), found by change-point detection over its "
                    "series. Opened by Fixproof as a draft: write what happened."
                ),
                "team": Team.objects.filter(pk=team_ids[0]).first() if team_ids else None,
            },
            authors=[],
            impacts=impacts,
            root_causes=[],
            timeline=[],
            actions=[],
        ),
    )
    RegressionIncident.objects.create(
        scenario=scenario, start_run_id=start_run, postmortem=postmortem
    )
    runs_after = {pk for _, change in changes for pk in change["runs_after"]}
    for attached in PerfRun.objects.filter(pk__in=runs_after):
        attached.postmortems.add(postmortem)
    figures = {
        dict(TREND_METRICS)[key]: (
            f"{_trend_figure(key, change['before'])} → {_trend_figure(key, change['after'])}"
        )
        for key, change in changes
    }
    if worse:
        figures["endpoints"] = ", ".join(worse)[:300]
    figures["runs"] = f"#{start_run} and {len(runs_after) - 1} after it"
    notification_enqueue(
        kind="regression",
        title=f"{scenario.name} got worse from run #{start_run}",
        path=postmortem.get_absolute_url(),
        figures=figures,
        dedupe_key=f"regression:scenario={scenario.pk}:run={start_run}",
        team_ids=team_ids,
    )
    return postmortem


def regression_incident_resolve(*, incident: RegressionIncident, state: str) -> bool:
    """Accept a change as the new normal (runs are then compared with the latest valid
    passing run of the new level) or say it was fixed; False when it was no longer
    confirmed."""
    if state not in (ChangeState.ACCEPTED, ChangeState.FIXED):
        raise PipelineRefused(f"A change can be accepted or fixed, not {state!r}.")
    with transaction.atomic():
        changed = RegressionIncident.objects.filter(
            pk=incident.pk, state=ChangeState.CONFIRMED
        ).update(state=state)
        if changed and state == ChangeState.ACCEPTED:
            latest = (
                PerfRun.objects.filter(
                    scenario_id=incident.scenario_id,
                    status=RunStatus.PASSED,
                    invalid_reason="",
                    created_at__gte=incident.start_run.created_at,
                )
                .order_by("-created_at", "-id")
                .first()
            )
            Scenario.objects.filter(pk=incident.scenario_id).update(
                baseline_run=latest or incident.start_run
            )
    return bool(changed)
