"""runs.perfrun_run in-process: the demo target on a managed review environment,
driven by real Locust, and every fault the run page must name (with its cleanup)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone
from psycopg import sql

from perfruns import tasks
from perfruns.models import (
    PerfRun,
    ReviewEnvironment,
    RunStatus,
    RunTrigger,
    Sample,
    Scenario,
    VerificationCriterion,
    VersionComparison,
    Webhook,
)
from perfruns.pipeline.cluster import ManagedCluster, free_port, stop_stale_clusters
from perfruns.pipeline.databases import list_databases
from perfruns.pipeline.pgtools import find_binary, run
from perfruns.pipeline.restore import restore_and_swap
from perfruns.services import common, runs, scenarios
from perfruns.services.environments import cluster_os_user
from postmortems.models import ActionStatus, Team
from tests.celeryworker import send, start_worker, stop_worker, wait_for
from tests.webhookreceiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo"
SERVER = "host=127.0.0.1 port=5432 user=postgres"


@pytest.fixture(scope="module")
def demo_dump() -> Iterator[Path]:
    """The demo target's database, seeded small and dumped."""
    name = f"fixproof_perftest_{uuid.uuid4().hex[:10]}"
    folder = Path(tempfile.mkdtemp(prefix="fixproof-perftest-"))
    folder.chmod(0o755)
    with psycopg.connect(f"{SERVER} dbname=postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = f"postgresql://postgres@127.0.0.1:5432/{name}"
        subprocess.run(
            # The seed's defaults (100,000 events): enough for the slow join to show.
            [sys.executable, str(DEMO / "seed.py")],
            env={**os.environ, "DATABASE_URL": url},
            check=True,
            capture_output=True,
            timeout=300,
        )
        dump = folder / "demo.dump"
        run([find_binary("pg_dump"), "-Fc", "-f", str(dump), url], timeout=300)
        yield dump
    finally:
        with psycopg.connect(f"{SERVER} dbname=postgres", autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def restored_dir(demo_dump) -> Iterator[Path]:
    """A data folder whose `review` environment cluster holds the restored demo database."""
    folder = Path(tempfile.mkdtemp(prefix="fixproof-data-", dir="/tmp"))
    folder.chmod(0o755)
    cluster = ManagedCluster(folder / "clusters" / "review", os_user=cluster_os_user())
    cluster.initialize(shared_buffers="128MB", work_mem="4MB", max_connections=50, durable=True)
    cluster.start()
    try:
        restore_and_swap(
            dump_path=demo_dump,
            admin_conninfo=cluster.conninfo("postgres"),
            live="review",
            jobs=2,
            timeout=300,
        )
    finally:
        cluster.stop()
    yield folder
    stop_stale_clusters(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def environment(restored_dir, settings) -> ReviewEnvironment:
    settings.FIXPROOF_DATA_DIR = restored_dir
    return ReviewEnvironment.objects.create(name="review", shared_buffers="128MB")


def make_scenario(environment, **overrides) -> Scenario:
    port = free_port()
    values = {
        "environment": environment,
        "locustfile_path": "examples/demo/locustfile.py",
        "target_url": f"http://127.0.0.1:{port}",
        "start_command": (
            f"{sys.executable} -m gunicorn --chdir examples/demo --bind 127.0.0.1:{port}"
            " --workers 1 --threads 4 app:application"
        ),
        "start_env": {"DEMO_PATHOLOGIES": "n_plus_one,leak,slow_join"},
        "health_url": f"http://127.0.0.1:{port}/health",
        "health_timeout_s": 30,
        "users": 5,
        "spawn_rate": 5,
        "duration_s": 6,
        "thresholds": {"p95_ms": 5000, "failure_rate": 0.01},
    }
    values.update(overrides)
    scenario, _ = scenarios.scenario_save(name="demo", values=values)
    return scenario


def execute(scenario: Scenario, *, during=None) -> PerfRun:
    run = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.COMMAND, actor=None)
    watcher = None
    if during is not None:

        def watch() -> None:
            try:
                during(run.pk)
            finally:
                connection.close()  # this thread's own database session

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
    result = runs.perfrun_run(run_id=run.pk)
    if watcher is not None:
        watcher.join(timeout=60)
    return result


def clones_left(environment: ReviewEnvironment) -> list[str]:
    cluster = ManagedCluster(environment.data_dir, os_user=cluster_os_user())
    assert not cluster.is_running(), "the run left its cluster running"
    cluster.start()
    try:
        return list_databases(cluster.conninfo("postgres"), "review__run")
    finally:
        cluster.stop()


def wait_for_stage(run_id: int, stage: str, *, progress: int = 0, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = PerfRun.objects.filter(pk=run_id).values("stage", "progress", "status").first()
        if row["stage"] == stage and row["progress"] >= progress:
            return True
        if row["status"] not in ("queued", "running"):
            return False
        time.sleep(0.1)
    return False


def no_process_listens(url: str) -> bool:
    from perfruns.pipeline.target import port_in_use

    return not port_in_use(url)


def test_a_run_drives_the_demo_target_and_keeps_real_figures(environment):
    scenario = make_scenario(environment)
    seen_live: list[bool] = []

    def watch_live(run_id: int) -> None:
        """Whether the run page could show live figures while the load ran."""
        if not wait_for_stage(run_id, "load"):
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = PerfRun.objects.filter(pk=run_id).values("stage", "status").first()
            live = Sample.objects.filter(run_id=run_id, users__isnull=False).exists()
            if live or row["stage"] != "load" or row["status"] != "running":
                seen_live.append(live and row["stage"] == "load")
                return
            time.sleep(0.2)

    run = execute(scenario, during=watch_live)

    assert run.status == RunStatus.PASSED, run.error
    s = run.summary
    assert s["requests"] > 0 and s["rps"] > 0 and s["p95_ms"] > 0
    assert s["db_ram_peak"] > 0 and s["db_ram_peak_anon"] > 0 and s["target_rss_peak"] > 0
    assert s["sampler"]["achieved_interval_s"] is not None
    names = {e.name for e in run.endpoints.all()}
    assert names == {"/users/[id]", "/users/[id]/events", "/report", "Aggregated"}
    assert all(e.requests > 0 for e in run.endpoints.all())
    # The N+1 shows in the statements: one query per event, many calls.
    top = run.database["top_statements"]
    assert top and max(q["calls"] for q in top) > s["requests"] / 3
    assert run.database["connections"]["peak_total"] >= 1
    connections = run.database["connections"]
    assert connections["peak_clients"] >= 1
    assert connections["max_connections"] == int(run.environment_settings["max_connections"])
    assert connections["limit_hit"] is False and connections["peak_background"]
    # Fixproof's own sampling is not among the target's statements.
    assert not [q for q in top if "pg_stat_" in q["query"] or "fixproof" in q["query"]]
    # Gunicorn's master and its worker: the PSS beside the RSS, one endpoint's p95 a second.
    assert s["target_processes_peak"] >= 2 and 0 < s["target_pss_peak"] <= s["target_rss_peak"]
    assert {"/users/[id]", "/report"} <= set(run.endpoint_samples.values_list("name", flat=True))
    assert seen_live == [True]
    assert run.database["delta"]["xact_commit"] > 0
    assert run.samples.filter(users__gt=0).exists()
    assert run.samples.filter(db_pss__gt=0).exists()
    assert run.samples.filter(target_rss__gt=0).exists()
    assert {"locust.html", "locust_stats_history.csv", "locust.log", "target.log"} <= {
        a.name for a in run.artifacts.all()
    }
    assert len(run.locustfile_sha256) == 64
    assert [line["passed"] for line in run.verdict] == [True, True]
    assert run.environment_settings["shared_buffers"] == "128MB"
    # Cleaned: the target stopped, the clone dropped, the cluster stopped.
    assert no_process_listens(scenario.target_url)
    assert clones_left(environment) == []


def test_a_locustfile_with_a_syntax_error_is_named_before_anything_starts(environment):
    scenario = make_scenario(
        environment,
        locustfile_path="",
        locustfile_text="from locust import HttpUser\n\nclass Shopper(HttpUser)\n    pass\n",
    )

    run = execute(scenario)

    assert run.status == RunStatus.ERROR
    assert run.error.startswith("preparing: the locustfile cannot be loaded: ")
    assert "line 3" in run.error
    assert no_process_listens(scenario.target_url)


def test_a_target_that_never_gets_healthy_is_stopped_and_named(environment):
    scenario = make_scenario(
        environment,
        start_command=f"{sys.executable} -c 'import time; time.sleep(120)'",
        health_timeout_s=2,
    )

    run = execute(scenario)

    assert run.status == RunStatus.ERROR
    assert run.error.startswith("waiting for the target: ")
    assert f"{scenario.health_url} was not healthy within 2 s" in run.error
    assert clones_left(environment) == []


def test_a_target_that_dies_during_the_load_is_named_and_the_figures_so_far_kept(environment):
    scenario = make_scenario(environment, duration_s=30)
    scenario.start_command = "timeout -s KILL 6 " + scenario.start_command
    scenario.save()

    run = execute(scenario)

    assert run.status == RunStatus.ERROR
    assert run.error == "load: the target was killed (signal 9) during the load"
    assert run.summary["requests"] > 0
    assert clones_left(environment) == []


def test_a_killed_locust_is_named_and_the_target_stopped(environment):
    scenario = make_scenario(environment, duration_s=60)

    def kill_locust(run_id: int) -> None:
        assert wait_for_stage(run_id, "load", progress=22)
        pid_file = common.runs_root() / f"run-{run_id}" / "pids"
        for line in pid_file.read_text().splitlines():
            pid, argv0 = line.split(" ", 1)
            if argv0.endswith("locust"):
                os.kill(int(pid), signal.SIGKILL)

    run = execute(scenario, during=kill_locust)

    assert run.status == RunStatus.ERROR
    assert run.error == "load: Locust was killed (signal 9)"
    assert no_process_listens(scenario.target_url)


def test_a_run_past_its_time_budget_stops_and_keeps_what_it_measured(environment, settings):
    settings.PIPELINE_TIMEOUT = 15
    scenario = make_scenario(environment, duration_s=120)

    run = execute(scenario)

    assert run.status == RunStatus.ERROR
    assert run.error == (
        "load: the run's time budget (15 s) was exceeded; the results up to then are kept"
    )
    assert run.summary["requests"] > 0 and run.endpoints.exists()
    assert no_process_listens(scenario.target_url)


def test_a_cancelled_run_stops_everything_and_keeps_what_it_measured(environment):
    scenario = make_scenario(environment, duration_s=60)

    def cancel(run_id: int) -> None:
        assert wait_for_stage(run_id, "load", progress=24)
        runs.perfrun_cancel(run=PerfRun.objects.get(pk=run_id))

    run = execute(scenario, during=cancel)

    assert run.status == RunStatus.CANCELLED
    assert run.error == "Cancelled during the load step."
    assert run.summary["requests"] > 0
    assert no_process_listens(scenario.target_url)
    assert clones_left(environment) == []


def test_a_restore_that_cannot_be_done_stops_the_run_before_the_load(environment):
    scenario = make_scenario(environment, restore_first=True)

    run = execute(scenario)

    assert run.status == RunStatus.ERROR
    assert run.error == (
        "restoring: There is no ready snapshot to restore into review: take one first."
    )
    assert not run.endpoints.exists()


def test_a_target_port_already_taken_is_refused_rather_than_measuring_another_program(
    environment,
):
    scenario = make_scenario(environment)
    port = int(scenario.target_url.rsplit(":", 1)[1])
    import socket

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        run = execute(scenario)
    finally:
        squatter.close()

    assert run.status == RunStatus.ERROR
    assert run.error == (
        f"starting the target: something already listens at {scenario.target_url}; "
        "stop it or give the scenario another port"
    )


def test_an_environment_never_restored_says_so(environment, settings, tmp_path):
    empty = Path(tempfile.mkdtemp(prefix="fixproof-data-", dir="/tmp"))
    empty.chmod(0o755)
    settings.FIXPROOF_DATA_DIR = empty
    try:
        run = execute(make_scenario(environment))
    finally:
        stop_stale_clusters(empty)
        shutil.rmtree(empty, ignore_errors=True)

    assert run.status == RunStatus.ERROR
    assert run.error == (
        "cloning the database: the review environment review has no restored database yet: "
        "restore a snapshot into it first"
    )


def test_a_worker_runs_a_queued_run_once_and_attaches_it_to_the_incident(
    environment, restored_dir, make_postmortem
):
    # (No role fixture: a transactional test's flush empties the role groups.)
    engineer = User.objects.create_user("emma")
    incident = make_postmortem(actor=engineer, title="Pool exhausted")
    scenario = make_scenario(environment, duration_s=15)
    scenario.postmortems.add(incident)
    scenario.actions.add(incident.actions.first())
    run = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=engineer)
    worker = start_worker(restored_dir)
    try:
        send(tasks.perfrun_execute, run.pk)
        # The same message delivered twice: the second finds nothing queued.
        send(tasks.perfrun_execute, run.pk)
        run = wait_for(
            lambda: PerfRun.objects.get(pk=run.pk),
            lambda r: r.status not in ("queued", "running"),
            timeout=240,
        )
    finally:
        stop_worker(worker)

    assert run.status == RunStatus.PASSED, run.error
    assert run.worker.rpartition(":")[2] != str(os.getpid())  # not this process
    assert PerfRun.objects.count() == 1
    assert run.summary["requests"] > 0 and run.summary["db_ram_peak"] > 0
    assert {e.name for e in run.endpoints.all()} == {
        "/users/[id]", "/users/[id]/events", "/report", "Aggregated"
    }  # fmt: skip
    assert run.database["top_statements"]
    # The demo's response cache never evicts: its memory climbs steadily, surely past the
    # leak floor, by the 64 KiB it keeps for each profile asked (6 requests in 10).
    fit = run.summary["target_slope"]
    assert fit["leak"] is True and fit["low"] > fit["leak_floor"]
    assert 10_000 < fit["per_request"] < 64 * 1024
    assert list(incident.perf_runs.all()) == [run]
    assert list(incident.actions.first().perf_runs.all()) == [run]


def test_a_distributed_run_drives_the_target_from_a_master_and_its_workers(environment):
    scenario = make_scenario(environment, workers=2)

    run = execute(scenario)

    assert run.status == RunStatus.PASSED, run.error
    assert run.summary["requests"] > 0
    assert {e.name for e in run.endpoints.all()} >= {"/users/[id]", "/report"}
    logs = {a.name for a in run.artifacts.all()}
    assert any(name.startswith("locust-worker") for name in logs), logs


def test_a_step_load_finds_where_the_target_stops_keeping_up(environment):
    scenario = make_scenario(
        environment, shape="steps", step_start=2, step_size=4, step_duration_s=4, step_max=10
    )

    run = execute(scenario)

    assert run.status == RunStatus.PASSED, run.error
    point = run.summary["breaking_point"]
    assert point["max_sustained_rps"] > 0
    users = sorted({u for u in run.samples.values_list("users", flat=True) if u})
    assert users[-1] == 10 and 2 in users


def test_an_action_is_verified_by_a_run_then_regressed_when_the_pathology_returns(
    environment, restored_dir, make_postmortem, monkeypatch
):
    """Issue 5's promise end to end, through a real worker: the fixed report verifies its
    action; the pathology switched back on regresses it, reopens it and tells the team."""
    receiver = Receiver()
    monkeypatch.setenv("FIXPROOF_TEST_HOOK", receiver.url)  # the worker inherits it
    team = Team.objects.create(name="Platform", slug="platform")
    Webhook.objects.create(team=team, kind="json", url_env="FIXPROOF_TEST_HOOK")
    incident = make_postmortem(actor=User.objects.create_user("emma"), team=team)
    action = incident.actions.first()
    action.status, action.done_at = ActionStatus.DONE, timezone.now()
    action.save()
    scenario = make_scenario(environment, duration_s=8, start_env={"DEMO_PATHOLOGIES": ""})
    # The healthy report takes a few ms at its median. The pathology that returns is planted
    # so that no machine can miss it: the slow join, behind a simulated upstream wait of
    # 300 ms that answers in 150 ms at the soonest (a sleep never ends early). The limit sits
    # between the two, far from both.
    criterion = VerificationCriterion.objects.create(
        action=action, scenario=scenario, endpoint="/report", metric="p50_ms", comparison="lt",
        value=100, users=5,
    )  # fmt: skip
    worker = start_worker(restored_dir)

    def run_through_worker() -> PerfRun:
        run = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.SCHEDULE, actor=None)
        send(tasks.perfrun_execute, run.pk)
        return wait_for(
            lambda: PerfRun.objects.get(pk=run.pk),
            lambda r: r.status not in ("queued", "running"),
            timeout=240,
        )

    try:
        healthy = run_through_worker()
        criterion.refresh_from_db()
        assert (criterion.state, criterion.state_run) == ("verified", healthy), healthy.error

        scenario.start_env = {"DEMO_PATHOLOGIES": "slow_join", "DEMO_UPSTREAM_MS": "300"}
        scenario.save()
        slow = run_through_worker()
        criterion.refresh_from_db()
        assert (criterion.state, criterion.state_run) == ("regressed", slow), slow.error
        assert criterion.measured >= 150
        action.refresh_from_db()
        assert action.status == ActionStatus.IN_PROGRESS
        bodies = wait_for(lambda: receiver.bodies, lambda b: len(b) >= 1, timeout=60)
    finally:
        stop_worker(worker)
        receiver.close()

    assert len(bodies) == 1
    assert bodies[0]["event"] == "verification_regressed"
    assert bodies[0]["figures"]["run"] == f"#{slow.pk}"


def test_compare_versions_runs_a_b_a_each_with_its_version_and_finds_b_slower(environment):
    """The CI question "is this build slower?": the demo's upstream wait is the version,
    0 ms for A and 300 ms for B; B must come out worse, with exit status 1."""
    from django.core.management import call_command

    make_scenario(
        environment, start_env={"DEMO_UPSTREAM_MS": "{version}"}, default_version="0",
        duration_s=52, thresholds={},
    )  # fmt: skip

    with pytest.raises(SystemExit) as exited:
        call_command("compare_versions", "demo", "0", "300", "--here")

    comparison = VersionComparison.objects.get()
    runs = {run.role: run for run in comparison.runs.order_by("created_at")}
    assert [run.role for run in comparison.runs.order_by("created_at")] == ["a1", "b", "a2"]
    assert {role: run.version for role, run in runs.items()} == {"a1": "0", "b": "300", "a2": "0"}
    assert all(run.status == RunStatus.PASSED for run in runs.values()), comparison.error
    # A sleep never ends early: B's median is at least half its 300 ms wait.
    assert runs["b"].summary["p50_ms"] >= 150
    assert (
        max(runs["a1"].summary["p50_ms"], runs["a2"].summary["p50_ms"])
        < runs["b"].summary["p50_ms"]
    )
    assert (comparison.status, comparison.verdict) == ("done", "worse"), comparison.result
    assert exited.value.code == 1
    aggregated = next(
        row for row in comparison.result["rows"]
        if (row["endpoint"], row["metric"]) == ("Aggregated", "p50")
    )  # fmt: skip
    assert aggregated["verdict"] == "worse"
    assert clones_left(environment) == []


def test_a_red_then_green_proof_is_verified_by_the_leaky_version_then_the_fixed_one(
    environment, make_postmortem
):
    """Issue 11's promise: "target memory growth < 2 MiB/min, red then green" on a target
    whose version is its leak: the leaky version (10 MiB a minute, planted) reproduces
    the incident, the fixed one (none) passes, and only both together verify the action."""
    from django.core.management import call_command

    scenario = make_scenario(
        environment, start_env={"DEMO_PATHOLOGIES": "", "DEMO_LEAK_MB_PER_MIN": "{version}"},
        default_version="0", duration_s=30, thresholds={},
    )  # fmt: skip
    incident = make_postmortem(actor=User.objects.create_user("emma"))
    action = incident.actions.first()
    action.status, action.done_at = ActionStatus.DONE, timezone.now()
    action.save()
    criterion = VerificationCriterion.objects.create(
        action=action, scenario=scenario, metric="target_memory_slope_mb_per_min",
        comparison="lt", value=2, red_then_green=True,
    )  # fmt: skip

    with pytest.raises(SystemExit):
        call_command("compare_versions", "demo", "10", "0", "--here")

    comparison = VersionComparison.objects.get()
    runs_by_role = {run.role: run for run in comparison.runs.all()}
    assert comparison.status == "done", comparison.error
    criterion.refresh_from_db()
    assert criterion.state == "verified", criterion.note
    assert (criterion.red_run, criterion.state_run) == (runs_by_role["a1"], runs_by_role["b"])
    leaky = runs_by_role["a1"].summary["target_slope"]
    fixed = runs_by_role["b"].summary["target_slope"]
    assert leaky["leak"] and leaky["low"] > 2 * 2**20  # red: reproduced, surely
    assert fixed["high"] < 2 * 2**20 and not fixed["leak"]  # green: surely under the limit
    assert clones_left(environment) == []


def test_a_run_whose_pool_process_is_killed_ends_in_error_with_nothing_left_running(
    environment, restored_dir
):
    """What the OOM killer does: only the pool process that runs the perf run dies; the
    worker's main process lives on. The janitor (every minute under beat; sent here) ends
    the run, naming its step, and stops what it had started."""
    scenario = make_scenario(environment, duration_s=120)
    run = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=None)
    worker = start_worker(restored_dir)
    try:
        send(tasks.perfrun_execute, run.pk)
        assert wait_for_stage(run.pk, "load", progress=21, timeout=120)
        run.refresh_from_db()
        pool_pid = int(run.worker.rpartition(":")[2])
        started = [
            int(line.split()[0])
            for line in (Path(run.artifacts_dir) / "pids").read_text().splitlines()
        ]
        os.kill(pool_pid, signal.SIGKILL)
        send(tasks.janitor_sweep)
        run = wait_for(
            lambda: PerfRun.objects.get(pk=run.pk), lambda r: r.status != "running", timeout=120
        )
    finally:
        stop_worker(worker)

    assert run.status == RunStatus.ERROR
    assert run.error.startswith("The worker was killed during the 'load' step")
    for pid in started:  # the target and Locust, each a process group of its own
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    assert no_process_listens(scenario.target_url)
    assert clones_left(environment) == []
