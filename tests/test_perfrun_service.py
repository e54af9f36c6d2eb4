"""runs.perfrun_request/claim/cancel, the verdict, and the janitor's part for runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from perfruns.models import (
    EndpointStat,
    PerfRun,
    RunStatus,
    RunTrigger,
)
from perfruns.services import common, janitor, runs
from perfruns.services.judging import thresholds_judge
from perfruns.system import record_spawn


def test_a_second_run_on_the_same_environment_is_refused_while_one_is_queued(scenario):
    first = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=None)

    with pytest.raises(
        common.PipelineRefused, match=rf"already queued or running \(run #{first.pk}\)"
    ):
        runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=None)
    assert PerfRun.objects.count() == 1


def test_a_run_is_claimed_once_and_a_redelivered_message_does_nothing(scenario):
    run = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=None)

    assert runs.perfrun_claim(run_id=run.pk) is True
    assert runs.perfrun_claim(run_id=run.pk) is False
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.worker.endswith(f":{os.getpid()}")


def test_a_run_copies_the_incidents_and_actions_its_scenario_is_linked_to(
    scenario, make_postmortem, engineer
):
    pm = make_postmortem(actor=engineer)
    scenario.postmortems.add(pm)

    run = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=engineer)

    assert list(run.postmortems.all()) == [pm]
    assert run.created_by == engineer


def test_cancelling_a_queued_run_ends_it_and_a_running_one_is_asked_to_stop(scenario):
    run = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=None)
    assert runs.perfrun_cancel(run=run)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.finished_at is not None

    second = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=None)
    runs.perfrun_claim(run_id=second.pk)
    assert runs.perfrun_cancel(run=second)
    second.refresh_from_db()
    assert second.status == RunStatus.RUNNING and second.cancel_requested


def test_a_scheduled_run_is_skipped_while_another_one_is_under_way(scenario):
    runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=None)

    assert runs.perfrun_schedule_fire(scenario_id=scenario.pk) is None
    assert PerfRun.objects.count() == 1


def _judged(scenario, thresholds, summary, endpoints=()):
    run = PerfRun.objects.create(
        scenario=scenario,
        environment=scenario.environment,
        trigger=RunTrigger.MANUAL,
        status=RunStatus.RUNNING,
        settings={"thresholds": thresholds},
        summary=summary,
    )
    for name, requests, failures, p95 in endpoints:
        EndpointStat.objects.create(
            run=run, method="GET", name=name, requests=requests, failures=failures,
            avg_ms=1, min_ms=1, max_ms=1, percentiles={"95": p95, "99": p95}, rps=1,
        )  # fmt: skip
    return thresholds_judge(run)


def test_the_verdict_checks_each_threshold_against_what_was_measured(scenario):
    verdict = _judged(
        scenario,
        {
            "p95_ms": 200,
            "failure_rate": 0.01,
            "min_rps": 50,
            "db_ram_peak_mb": 100,
            "endpoints": {"/users/[id]": {"p95_ms": 100}, "/gone": {"failure_rate": 0.1}},
        },
        {"p95_ms": 150.0, "failure_rate": 0.02, "rps": 80.0, "db_ram_peak": 150 * 2**20},
        endpoints=[("/users/[id]", 100, 0, 120.0)],
    )

    assert [(line["check"], line["passed"]) for line in verdict] == [
        ("p95_ms", True),
        ("failure_rate", False),
        ("min_rps", True),
        ("db_ram_peak_mb", False),
        ("/users/[id] p95_ms", False),
        ("/gone failure_rate", False),  # no request reached it: not a pass
    ]
    assert verdict[3]["value"] == 150.0


def test_a_threshold_on_something_not_measured_fails_rather_than_passes(scenario):
    verdict = _judged(scenario, {"db_ram_peak_mb": 100}, {"p95_ms": 10.0})

    assert verdict == [
        {
            "check": "db_ram_peak_mb",
            "limit": 100,
            "value": None,
            "passed": False,
            "note": "not measured (the process was not sampled)",
        }
    ]


def test_the_janitor_fails_a_dead_workers_run_and_stops_the_processes_it_left(scenario, data_dir):
    run = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=None)
    runs.perfrun_claim(run_id=run.pk)
    # A worker of this host that no longer exists, and the target it had started.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    PerfRun.objects.filter(pk=run.pk).update(
        worker=f"{socket.gethostname()}:{dead.pid}", stage="load"
    )
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    folder = common.runs_root() / f"run-{run.pk}"
    folder.mkdir(parents=True)
    record_spawn(folder / "pids", orphan.pid, sys.executable)
    try:
        done = janitor.janitor_sweep()

        run.refresh_from_db()
        assert run.status == RunStatus.ERROR
        assert run.error == (
            "The worker was killed during the 'load' step; its target and Locust were "
            "stopped and its database clone dropped."
        )
        deadline = time.monotonic() + 10
        while orphan.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert orphan.returncode == -9
        assert f"stopped process group {orphan.pid} of run #{run.pk}" in done
        assert not (folder / "pids").exists()
    finally:
        if orphan.poll() is None:
            orphan.kill()
