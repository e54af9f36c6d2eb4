"""services.recording: what a load measured, into the run's rows — each endpoint's p95 a
second, the target's PSS and processes beside its RSS, failures by cause, the connection
limit — and the live samples of a run under way, replaced by the whole series at its end."""

from __future__ import annotations

import csv
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from perfruns.loadtest import LoadShape, LocustPlan, iter_history, locust_plan
from perfruns.models import EndpointSample, PerfRun, RunStatus, RunTrigger, Sample
from perfruns.pipeline.execution import LoadFigures
from perfruns.pipeline.load import MEMORY_COLUMNS, LoadOutcome
from perfruns.services.recording import run_live_figures, run_live_record, run_record
from tests.runfiles import HEADER
from tests.test_loadtest_support import LOCUST, console, run_plan, write_locustfile

STARTED = 1_700_000_000.0
MIB = 1 << 20
TOO_MANY = (
    'OperationalError(\'connection failed: connection to server at "127.0.0.1", port {port} '
    "failed: FATAL:  sorry, too many clients already')"
)


@pytest.fixture
def run(scenario) -> PerfRun:
    return PerfRun.objects.create(
        scenario=scenario,
        environment=scenario.environment,
        trigger=RunTrigger.MANUAL,
        status=RunStatus.RUNNING,
        settings={"shape": "constant", "users": 10, "spawn_rate": 10},
    )


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _load(folder: Path, connections: dict) -> LoadFigures:
    """The files of a 4-second load: /slow blocks the server, /light waits behind it."""
    plan = LocustPlan(
        master=[],
        workers=[],
        csv_prefix=folder / "locust",
        json_file=folder / "locust.json",
        html_file=folder / "locust.html",
        log_file=folder / "locust.log",
        history_file=folder / "locust_stats_history.csv",
        failures_file=folder / "locust_failures.csv",
        stats_file=folder / "locust_stats.csv",
        expected_duration_s=4,
    )
    history = []
    for second in range(4):
        light = 5.0 if second < 2 else 900.0  # behind /slow from the third second
        history += [
            [STARTED + second, 10, "GET", "/light", 30, 0, 4, light, light, 30 * second, 0],
            [STARTED + second, 10, "GET", "/slow", 1, 0, 950, 1000, 1000, second, 0],
            [STARTED + second, 10, "", "Aggregated", 31, 0, 5, light, 1000, 31 * second, 0],
        ]
    _write(plan.history_file, HEADER, history)
    _write(
        plan.failures_file,
        ["Method", "Name", "Error", "Occurrences"],
        [
            ["GET", "/light", TOO_MANY.format(port=5433), 8],
            ["GET", "/slow", TOO_MANY.format(port=6432), 2],
            ["GET", "/slow", "HTTPError('504 Server Error: Gateway Timeout for url: /slow')", 1],
        ],
    )
    memory = folder / "memory.csv"
    _write(
        memory,
        MEMORY_COLUMNS,
        [
            [0.5, "db", 300 * MIB, 40 * MIB, 260 * MIB, 900 * MIB, "", 12],
            [0.5, "target", 60 * MIB, 58 * MIB, 2 * MIB, 120 * MIB, "", 5],
            [1.5, "target", 64 * MIB, 60 * MIB, 4 * MIB, 131 * MIB, "", 5],
            [2.5, "target", 62 * MIB, 59 * MIB, 3 * MIB, 70 * MIB, "", 3],
        ],
    )
    return LoadFigures(
        plan=plan,
        started=STARTED,
        memory_file=memory,
        database={
            "before": {},
            "after": {},
            "delta": {},
            "connections": connections,
            "top_statements": [],
        },
        sampler={"achieved_interval_s": 1.0, "cpu_fraction": 0.001},
        outcome=LoadOutcome(returncode=0),
    )


def test_it_records_each_endpoints_p95_a_second_without_the_aggregate(run, tmp_path):
    run_record(run=run, load=_load(tmp_path, {}))

    rows = list(EndpointSample.objects.filter(run=run).values_list("t", "name", "p95_ms"))
    assert [row for row in rows if row[1] == "/light"] == [
        (0.0, "/light", 5.0),
        (1.0, "/light", 5.0),
        (2.0, "/light", 900.0),
        (3.0, "/light", 900.0),
    ]
    assert {name for _t, name, _p95 in rows} == {"/light", "/slow"}


def test_it_keeps_the_targets_pss_and_processes_beside_its_rss(run, tmp_path):
    run_record(run=run, load=_load(tmp_path, {}))

    run.refresh_from_db()
    s = run.summary
    assert (s["target_rss_peak"], s["target_pss_peak"]) == (131 * MIB, 64 * MIB)
    assert (s["target_rss_last"], s["target_pss_last"]) == (70 * MIB, 62 * MIB)
    assert (s["target_processes_peak"], s["target_processes_last"]) == (5, 3)
    sample = run.samples.get(t=1.5)
    assert (sample.target_rss, sample.target_pss, sample.target_processes) == (
        131 * MIB,
        64 * MIB,
        5,
    )


def test_it_sums_failures_by_cause_and_flags_the_connection_limit_they_show(run, tmp_path):
    # The poll saw 30 of the 47 slots: the failures still tell the limit was reached.
    connections = {"peak_server_clients": 30, "max_connections": 50}
    connections["superuser_reserved_connections"] = 3

    run_record(run=run, load=_load(tmp_path, connections))

    run.refresh_from_db()
    causes = run.summary["failure_causes"]
    assert [(c["cause"], c["occurrences"], c["endpoints"]) for c in causes] == [
        ("FATAL: sorry, too many clients already", 10, ["GET /light", "GET /slow"]),
        ("timeout", 1, ["GET /slow"]),
    ]
    assert run.failure_groups.count() == 3  # each endpoint's own list stays
    limit = run.database["connections"]
    assert limit["limit"] == 47 and limit["limit_hit"] and limit["limit_hit_by"] == ["failures"]


def test_the_live_samples_show_the_latest_figures_then_give_way_to_the_whole_series(run, tmp_path):
    run_live_record(
        run_id=run.pk,
        points=[
            {"t": 1.0, "users": 5, "rps": 20.0, "failures_per_s": 0.0, "p95_ms": 30.0},
            {"t": 1.1, "db_pss": 200 * MIB, "db_pss_anon": 30 * MIB, "db_pss_shared": 1},
            {"t": 2.0, "users": 10, "rps": 41.0, "failures_per_s": 1.5, "p95_ms": 410.0},
            {"t": 2.0, "target_rss": 90 * MIB, "target_pss": 50 * MIB, "target_processes": 5},
        ],
    )

    live = run_live_figures(run=run)

    assert live == {
        "t": 2.0,
        "users": 10,
        "rps": 41.0,
        "failures_per_s": 1.5,
        "p95_ms": 410.0,
        "db_pss": 200 * MIB,
    }
    run_record(run=run, load=_load(tmp_path, {}))
    assert not Sample.objects.filter(run=run, t=1.1).exists()
    assert Sample.objects.filter(run=run, users__isnull=False).count() == 4


def test_a_run_with_no_sample_yet_has_no_live_figures(run):
    assert run_live_figures(run=run) is None


BLOCKING_LOCUSTFILE = """\
from locust import HttpUser, constant, task


class Blocker(HttpUser):
    fixed_count = 1
    wait_time = constant(0)

    @task
    def block(self):
        self.client.get("/block")


class Light(HttpUser):
    wait_time = constant(0.1)

    @task
    def light(self):
        self.client.get("/light")
"""
BLOCK_S = 0.5


class _OneAtATime(BaseHTTPRequestHandler):
    """HTTP/1.0: one request a connection, so the queue is the server's accept queue."""

    def do_GET(self) -> None:
        if self.path == "/block":
            time.sleep(BLOCK_S)
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_light_route_behind_a_blocking_one_shows_it_in_its_own_p95(run, tmp_path):
    # A server that answers one request at a time, /block holding it half a second: a
    # /light request waits for the /block under way, however fast the machine. The run's
    # p95 per endpoint must show it (the aggregate would blur it with /block's own).
    server = HTTPServer(("127.0.0.1", 0), _OneAtATime)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        plan = locust_plan(
            locust=LOCUST,
            locustfile=write_locustfile(tmp_path, BLOCKING_LOCUSTFILE),
            host=f"http://127.0.0.1:{server.server_address[1]}",
            shape=LoadShape(kind="constant", users=3, spawn_rate=10, duration_s=5),
            workdir=tmp_path / "run",
            stop_timeout_s=1,
        )
        code = run_plan(plan)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert code == 0, console(plan)
    memory = tmp_path / "memory.csv"
    _write(memory, MEMORY_COLUMNS, [])
    load = LoadFigures(
        plan=plan,
        started=min(row.timestamp for row in iter_history(plan.history_file)),
        memory_file=memory,
        database={"before": {}, "after": {}, "delta": {}, "connections": {}, "top_statements": []},
        sampler={"achieved_interval_s": None, "cpu_fraction": None},
        outcome=LoadOutcome(returncode=code),
    )

    run_record(run=run, load=load)

    light = EndpointSample.objects.filter(run=run, name="/light", p95_ms__isnull=False)
    block = EndpointSample.objects.filter(run=run, name="/block", p95_ms__isnull=False)
    assert light.exists() and block.exists()
    assert max(light.values_list("p95_ms", flat=True)) >= 0.6 * BLOCK_S * 1000
