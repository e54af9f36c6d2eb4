"""perfruns.services.jobs: the one claim, stage, cancel and finish of the four jobs —
snapshots, restores, perf runs and version comparisons — each a conditional UPDATE that
says whether it changed the row."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time

import pytest
from django.utils import timezone

from perfruns.models import (
    DumpSource,
    Job,
    PerfRun,
    Restore,
    RunTrigger,
    Snapshot,
    SnapshotStatus,
    VersionComparison,
    WorkerSeen,
)
from perfruns.services import jobs
from perfruns.services.common import worker_id


@pytest.fixture
def source(db) -> DumpSource:
    return DumpSource.objects.create(name="shop", dsn_env="SHOP_DSN", policy_yaml="tables: {}")


@pytest.fixture
def every_job(scenario, source) -> list[Job]:
    """One queued job of each kind."""
    snapshot = Snapshot.objects.create(source=source)
    ready = Snapshot.objects.create(source=source, status=SnapshotStatus.READY, sha256="0" * 64)
    return [
        snapshot,
        Restore.objects.create(environment=scenario.environment, snapshot=ready),
        PerfRun.objects.create(
            scenario=scenario, environment=scenario.environment, trigger=RunTrigger.MANUAL
        ),
        VersionComparison.objects.create(scenario=scenario, version_a="1", version_b="2"),
    ]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    return proc.pid


def test_every_job_is_claimed_once_by_this_worker(every_job):
    for job in every_job:
        model = type(job)

        first = jobs.job_claim(model, pk=job.pk)
        again = jobs.job_claim(model, pk=job.pk)

        job.refresh_from_db()
        assert (first, again) == (True, False), model.__name__
        assert (job.status, job.stage, job.worker) == ("running", "starting", worker_id())
        assert job.started_at is not None and job.is_active


def test_a_stage_is_written_only_while_the_job_runs(every_job):
    for job in every_job:
        model = type(job)
        jobs.job_stage(model, pk=job.pk, stage="restoring")
        job.refresh_from_db()
        assert job.stage == "", model.__name__  # still queued: nothing written

        jobs.job_claim(model, pk=job.pk)
        jobs.job_stage(model, pk=job.pk, stage="restoring")

        job.refresh_from_db()
        assert job.stage == "restoring", model.__name__


def test_a_finished_job_keeps_its_outcome_and_a_second_finish_changes_nothing(every_job):
    for job in every_job:
        model = type(job)
        jobs.job_claim(model, pk=job.pk)

        first = jobs.job_finish(model, pk=job.pk, status="failed", error="the disk is full")
        again = jobs.job_finish(model, pk=job.pk, status="cancelled", error="")

        job.refresh_from_db()
        assert (first, again) == (True, False), model.__name__
        assert (job.status, job.error, job.stage) == ("failed", "the disk is full", "")
        assert job.finished_at is not None and not job.is_active


def test_a_queued_job_is_cancelled_now_and_a_running_one_asked_to_stop(scenario):
    queued = PerfRun.objects.create(
        scenario=scenario, environment=scenario.environment, trigger=RunTrigger.MANUAL
    )
    comparison = VersionComparison.objects.create(scenario=scenario, version_a="1", version_b="2")
    jobs.job_claim(VersionComparison, pk=comparison.pk)

    assert jobs.job_cancel(PerfRun, pk=queued.pk) is True
    assert jobs.job_cancel(VersionComparison, pk=comparison.pk) is True

    queued.refresh_from_db()
    comparison.refresh_from_db()
    assert (queued.status, queued.finished_at is not None) == ("cancelled", True)
    assert (comparison.status, comparison.cancel_requested) == ("running", True)
    assert jobs.job_cancel_requested(VersionComparison, pk=comparison.pk)
    assert not jobs.job_cancel_requested(PerfRun, pk=queued.pk)
    # An ended job cannot be cancelled any more.
    assert jobs.job_cancel(PerfRun, pk=queued.pk) is False


def test_the_jobs_of_a_dead_worker_fail_naming_their_step(every_job):
    dead = f"{socket.gethostname()}:{dead_pid()}"
    for job in every_job:
        model = type(job)
        jobs.job_claim(model, pk=job.pk)
        model._default_manager.filter(pk=job.pk).update(worker=dead, stage="masking")
        done: list[str] = []

        live = jobs.jobs_of_dead_workers_fail(model, failed="failed", cleaned="cleaned", done=done)

        job.refresh_from_db()
        assert (job.status, live) == ("failed", []), model.__name__
        assert job.error == "The worker was killed during the 'masking' step; cleaned."
        assert done == [f"{model._meta.model_name} #{job.pk} marked failed"]


def test_the_job_of_a_live_worker_or_of_another_host_is_left_running(scenario):
    mine = VersionComparison.objects.create(scenario=scenario, version_a="1", version_b="2")
    theirs = VersionComparison.objects.create(scenario=scenario, version_a="1", version_b="3")
    for comparison in (mine, theirs):
        jobs.job_claim(VersionComparison, pk=comparison.pk)
    # Another host's worker: that host's janitor judges it.
    VersionComparison.objects.filter(pk=theirs.pk).update(worker="another-host:1")
    done: list[str] = []

    live = jobs.jobs_of_dead_workers_fail(
        VersionComparison, failed="error", cleaned="cleaned", done=done
    )

    assert sorted(c.pk for c in live) == [mine.pk, theirs.pk] and done == []
    assert set(VersionComparison.objects.values_list("status", flat=True)) == {"running"}
    assert not jobs.is_dead_worker(f"{socket.gethostname()}:{os.getpid()}")


def test_a_job_whose_heartbeat_went_silent_is_lost_whatever_its_host(scenario):
    comparison = VersionComparison.objects.create(scenario=scenario, version_a="1", version_b="2")
    jobs.job_claim(VersionComparison, pk=comparison.pk)
    silent = timezone.now() - dt.timedelta(seconds=jobs.STALE_AFTER_S + 5)
    VersionComparison.objects.filter(pk=comparison.pk).update(
        worker="another-host:1", heartbeat_at=silent
    )
    done: list[str] = []

    live = jobs.jobs_of_dead_workers_fail(
        VersionComparison, failed="error", cleaned="cleaned", done=done
    )

    comparison.refresh_from_db()
    assert live == [] and comparison.status == "error"


def test_cancel_ends_at_once_a_run_whose_worker_is_gone(scenario):
    run = PerfRun.objects.create(
        scenario=scenario, environment=scenario.environment, trigger=RunTrigger.MANUAL
    )
    jobs.job_claim(PerfRun, pk=run.pk)
    PerfRun.objects.filter(pk=run.pk).update(
        stage="load", worker=f"{socket.gethostname()}:{dead_pid()}"
    )

    assert jobs.job_cancel(PerfRun, pk=run.pk) is True

    run.refresh_from_db()
    assert run.status == "cancelled"
    assert run.error == "Cancelled during the 'load' step; its worker had stopped answering."


@pytest.mark.django_db(transaction=True)
def test_a_running_job_beats_while_its_block_runs_and_stops_after(scenario):
    run = PerfRun.objects.create(
        scenario=scenario, environment=scenario.environment, trigger=RunTrigger.MANUAL
    )
    jobs.job_claim(PerfRun, pk=run.pk)
    long_ago = timezone.now() - dt.timedelta(hours=1)
    PerfRun.objects.filter(pk=run.pk).update(heartbeat_at=long_ago)

    with jobs.job_heartbeat(PerfRun, pk=run.pk, every=0.05):
        time.sleep(0.5)
        run.refresh_from_db()
        during = run.heartbeat_at
    run.refresh_from_db()
    after = run.heartbeat_at
    time.sleep(0.3)
    run.refresh_from_db()

    assert during > long_ago + dt.timedelta(minutes=59)  # it beat
    assert not jobs.job_lost(run)
    assert run.heartbeat_at == after  # and stopped with its block


def test_the_pages_know_whether_a_worker_is_alive(db):
    assert not jobs.workers_alive()

    jobs.worker_seen(hostname="worker-1")

    assert jobs.workers_alive()
    WorkerSeen.objects.update(seen_at=timezone.now() - dt.timedelta(minutes=5))
    assert not jobs.workers_alive()
