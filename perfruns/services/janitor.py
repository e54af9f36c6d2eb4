"""What a killed worker left behind, cleaned: its jobs marked failed with the step they
died in (a worker of this host that no longer exists, or a heartbeat silent for two
minutes), the teams of a lost run told, its scratch clusters stopped, its scratch folders
and raw dumps removed, the process groups of its runs killed, half-restored databases and
run clones dropped.

Runs every minute (Celery beat), when a worker starts, and before each snapshot, restore or
perf run.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from perfruns.models import (
    ComparisonStatus,
    PerfRun,
    Restore,
    RestoreStatus,
    ReviewEnvironment,
    RunStatus,
    Snapshot,
    SnapshotStatus,
    VersionComparison,
)
from perfruns.pipeline.cluster import stop_stale_clusters
from perfruns.system import stop_recorded

from .common import data_dir, describe, runs_root
from .environments import drop_leftover_databases
from .jobs import jobs_of_dead_workers_fail
from .notifications import notification_enqueue

log = logging.getLogger(__name__)


def janitor_sweep() -> list[str]:
    """Clean what killed workers of this host left; one line per thing done."""
    done: list[str] = []
    live_snapshot_ids = {
        snap.pk
        for snap in jobs_of_dead_workers_fail(
            Snapshot,
            failed=SnapshotStatus.FAILED,
            cleaned="its scratch cluster and raw dump were removed",
            done=done,
        )
    }
    live_restores = {
        restore.environment_id
        for restore in jobs_of_dead_workers_fail(
            Restore,
            failed=RestoreStatus.FAILED,
            cleaned="the half-restored database was dropped and the previous one kept",
            done=done,
        )
    }
    done += _scratch_folders_remove(keep=live_snapshot_ids)
    jobs_of_dead_workers_fail(
        VersionComparison,
        failed=ComparisonStatus.ERROR,
        cleaned="its current run is cleaned up with it",
        done=done,
    )
    lost_runs: list[PerfRun] = []
    live_runs = {
        run.environment_id
        for run in jobs_of_dead_workers_fail(
            PerfRun,
            failed=RunStatus.ERROR,
            cleaned="its target and Locust were stopped and its database clone dropped",
            done=done,
            ended=lost_runs,
        )
    }
    for run in lost_runs:
        _lost_run_notify(run)
    done += _run_processes_stop()
    for env in ReviewEnvironment.objects.exclude(pk__in=live_restores | live_runs):
        try:
            done += drop_leftover_databases(environment=env)
        except Exception as exc:  # an unreachable environment must not stop the sweep
            log.warning("janitor: environment %s: %s", env.name, describe(exc))
    for line in done:
        log.info("janitor: %s", line)
    return done


def _lost_run_notify(run: PerfRun) -> None:
    """The teams of the incidents a run is about hear that it died, as of a run that broke."""
    run.refresh_from_db()
    notification_enqueue(
        kind="run_error",
        title=f"Run #{run.pk} of {run.scenario.name} broke",
        path=run.get_absolute_url(),
        figures={"error": run.error},
        dedupe_key=f"run_error:run={run.pk}",
        team_ids=[pk for pk in run.postmortems.values_list("team_id", flat=True) if pk],
    )


def _scratch_folders_remove(*, keep: set[int]) -> list[str]:
    """The scratch folders of snapshots no longer running, their clusters stopped first."""
    done: list[str] = []
    scratch_root = data_dir() / "scratch"
    if not scratch_root.is_dir():
        return done
    for folder in scratch_root.iterdir():
        match = re.fullmatch(r"snapshot-(\d+)", folder.name)
        if match and int(match.group(1)) in keep:
            continue
        for stopped in stop_stale_clusters(folder):
            done.append(f"stopped cluster {stopped}")
        shutil.rmtree(folder, ignore_errors=True)
        done.append(f"removed {folder}")
    return done


def _run_processes_stop() -> list[str]:
    """The process groups (target, Locust) recorded by runs that no longer run."""
    done: list[str] = []
    runs_dir = runs_root()
    if not runs_dir.is_dir():
        return done
    ended = PerfRun.objects.exclude(status=RunStatus.RUNNING).values_list("pk", flat=True)
    for pk in ended.filter(pk__in=_recorded_run_ids(runs_dir)):
        pid_file = runs_dir / f"run-{pk}" / "pids"
        for pid in stop_recorded(pid_file):
            done.append(f"stopped process group {pid} of run #{pk}")
        pid_file.unlink(missing_ok=True)
    return done


def _recorded_run_ids(runs_dir: Path) -> list[int]:
    return [
        int(match.group(1))
        for folder in runs_dir.iterdir()
        if (match := re.fullmatch(r"run-(\d+)", folder.name)) and (folder / "pids").exists()
    ]
