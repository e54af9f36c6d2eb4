"""Reading what a real Locust run wrote: its JSON, history, failures and log."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from perfruns.loadtest import (
    LoadShape,
    iter_history,
    load_generator_saturated,
    locust_plan,
    read_failures,
    read_final,
)
from perfruns.loadtest import results as results_module
from perfruns.loadtest.results import PERCENTILES, percentile

from .test_loadtest_support import (
    FLAKY_EVERY,
    LOCUST,
    console,
    run_plan,
    target_server,
    write_locustfile,
)

USERS = 4


@pytest.fixture(scope="module")
def constant_run(tmp_path_factory):
    """One 4-second run of 4 users against /ok and /flaky, shared by this module's tests."""
    folder = tmp_path_factory.mktemp("constant")
    locustfile = write_locustfile(folder)
    with target_server() as url:
        plan = locust_plan(
            locust=LOCUST,
            locustfile=locustfile,
            host=url,
            shape=LoadShape(kind="constant", users=USERS, spawn_rate=USERS, duration_s=4),
            workdir=folder / "run",
            stop_timeout_s=2,
        )
        code = run_plan(plan)
    assert code == 0, console(plan)
    return plan


def by_name(results):
    return {result.name: result for result in results}


def test_the_final_results_hold_each_endpoint_then_their_aggregate(constant_run):
    results = read_final(constant_run.json_file)

    assert [(r.method, r.name) for r in results] == [
        ("GET", "/flaky"),
        ("GET", "/ok"),
        ("", "Aggregated"),
    ]
    *endpoints, total = results
    assert all(r.requests > 0 for r in endpoints)
    assert total.requests == sum(r.requests for r in endpoints)
    assert total.failures == sum(r.failures for r in endpoints)
    assert total.min_ms == min(r.min_ms for r in endpoints)
    assert total.max_ms == max(r.max_ms for r in endpoints)
    assert total.rps == pytest.approx(sum(r.rps for r in endpoints))
    weighted = sum(r.avg_ms * r.requests for r in endpoints) / total.requests
    assert total.avg_ms == pytest.approx(weighted)
    assert all(r.min_ms <= r.avg_ms <= r.max_ms for r in results)


def test_failures_are_counted_under_the_failing_endpoint_only(constant_run):
    results = by_name(read_final(constant_run.json_file))

    assert results["/ok"].failures == 0
    assert results["/ok"].failure_rate == 0
    flaky = results["/flaky"]
    # The server fails every third /flaky request; one may have been cut by the stop.
    assert abs(flaky.failures - flaky.requests // FLAKY_EVERY) <= 1
    assert 0 < flaky.failure_rate < 1
    assert results["Aggregated"].failures == flaky.failures


def test_percentiles_are_reported_for_each_level_and_never_decrease(constant_run):
    for result in read_final(constant_run.json_file):
        assert list(result.percentiles) == list(PERCENTILES)
        values = list(result.percentiles.values())
        assert values == sorted(values), result.name
        # The top percentile is the slowest request's bucket (two significant digits).
        assert result.percentiles["100"] == pytest.approx(result.max_ms, rel=0.05, abs=1)


LOCUST_PERCENTILES = """
import json, sys
from locust.stats import PERCENTILES_TO_REPORT, RequestStats, StatsEntry

stats = RequestStats()
with open(sys.argv[1]) as fh:
    entries = json.load(fh)
out = {}
for data in entries:
    data["response_times"] = {int(k): v for k, v in data["response_times"].items()}
    entry = StatsEntry.unserialize(data, stats)
    stats.total.extend(entry)
    out[entry.name] = [entry.get_response_time_percentile(p) for p in PERCENTILES_TO_REPORT]
out["Aggregated"] = [stats.total.get_response_time_percentile(p) for p in PERCENTILES_TO_REPORT]
print(json.dumps(out))
"""


def test_percentiles_match_the_ones_locust_computes_from_the_same_histograms(constant_run):
    # Locust itself, in a subprocess of its own (importing it here would patch this one).
    done = subprocess.run(
        [sys.executable, "-c", LOCUST_PERCENTILES, str(constant_run.json_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    theirs = json.loads(done.stdout)

    ours = {r.name: list(r.percentiles.values()) for r in read_final(constant_run.json_file)}

    assert ours == theirs


def test_a_percentile_follows_locusts_rule_on_a_known_histogram():
    # 100 requests: 50 at 10 ms, 45 at 20 ms, 5 at 100 ms. Locust's rule: the slowest
    # bucket with at most int(100 * p) requests faster than it.
    histogram = {10.0: 50, 20.0: 45, 100.0: 5}

    assert percentile(histogram, 100, 0.4) == 10
    assert percentile(histogram, 100, 0.5) == 20
    assert percentile(histogram, 100, 0.94) == 20
    assert percentile(histogram, 100, 0.95) == 100
    assert percentile(histogram, 100, 1.0) == 100
    assert percentile({}, 0, 0.5) == 0


def test_the_json_is_read_one_entry_at_a_time_across_small_chunks(tmp_path, monkeypatch):
    entries = [
        {
            "name": f"/page/{i}",
            "method": "GET",
            "start_time": 1000.0,
            "last_request_timestamp": 1010.0,
            "num_requests": 10,
            "num_none_requests": 0,
            "num_failures": i % 2,
            "total_response_time": 10.0 * (i + 1) * 10,
            "max_response_time": 10.0 * (i + 1),
            "min_response_time": 10.0 * (i + 1),
            "response_times": {str(10 * (i + 1)): 10},
            "num_reqs_per_sec": {"1000": 10},
            "num_fail_per_sec": {},
        }
        for i in range(20)
    ]
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(entries, indent=4))
    monkeypatch.setattr(results_module, "CHUNK", 7)

    results = read_final(path)

    assert len(results) == 21
    total = results[-1]
    assert (total.requests, total.failures) == (200, 10)
    assert total.rps == pytest.approx(20.0)
    # 10 requests in each bucket from 10 to 200 ms: 100 of them faster than 110 ms.
    assert total.percentiles["50"] == 110
    assert results[0].name == "/page/0" and results[0].avg_ms == pytest.approx(10.0)


def test_an_empty_run_has_only_an_empty_aggregate(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text("[]")

    [total] = read_final(path)

    assert (total.name, total.requests, total.rps, total.failure_rate) == ("Aggregated", 0, 0, 0)


def test_a_truncated_json_file_is_an_error(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text('[{"name": "/ok", "method": "GET", "num_requests": 3')

    with pytest.raises(ValueError):
        read_final(path)


def test_the_history_has_cumulative_rows_for_each_endpoint_and_the_aggregate(constant_run):
    rows = list(iter_history(constant_run.history_file))
    final = by_name(read_final(constant_run.json_file))

    assert {row.name for row in rows} == {"/ok", "/flaky", "Aggregated"}
    for name in ("/ok", "/flaky", "Aggregated"):
        series = [row for row in rows if row.name == name]
        counts = [row.requests for row in series]
        assert counts == sorted(counts), name
        assert [row.timestamp for row in series] == sorted(row.timestamp for row in series)
        # The CSV is a snapshot taken every second: it may miss the run's last moments.
        assert 0 < counts[-1] <= final[name].requests
        assert series[-1].failures <= final[name].failures
    aggregated = [row for row in rows if row.name == "Aggregated"]
    assert all(row.method == "" for row in aggregated)
    assert aggregated[-1].users == USERS
    # (Requests/s is Locust's rate over its last seconds: in a 4-second run every snapshot
    # may show 0 on a busy machine. Its reading is checked on a fixed history below.)
    assert any(row.p95_ms is not None for row in aggregated)


HISTORY_HEADER = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,"
    "99.9%,99.99%,100%,Total Request Count,Total Failure Count,Total Median Response Time,"
    "Total Average Response Time,Total Min Response Time,Total Max Response Time,"
    "Total Average Content Size"
)


def test_history_percentiles_not_yet_known_are_none(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text(
        HISTORY_HEADER
        + "\n1795416578,0,,Aggregated,0.000000,0.000000,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,"
        "N/A,N/A,0,0,0,0.0,0,0,0\n"
        "1795416581,5,GET,/flaky,14.000000,1.000000,5,6,6,7,8,10,11,11,16,16,16,129,39,5,"
        "5.74,1.73,21.8,2.0\n"
        "1795416582,5,GET,/fla"
    )

    first, second = iter_history(path)

    assert (first.users, first.name, first.method, first.p50_ms, first.p95_ms) == (
        0,
        "Aggregated",
        "",
        None,
        None,
    )
    assert (second.timestamp, second.users, second.method, second.name) == (
        1795416581,
        5,
        "GET",
        "/flaky",
    )
    assert (second.rps, second.failures_per_s, second.p50_ms, second.p95_ms) == (14, 1, 5, 10)
    assert (second.requests, second.failures) == (129, 39)


def test_the_500s_are_grouped_under_the_flaky_endpoint(constant_run):
    groups = read_failures(constant_run.failures_file)
    final = by_name(read_final(constant_run.json_file))

    assert [(g.method, g.name) for g in groups] == [("GET", "/flaky")]
    assert "500" in groups[0].error
    assert 0 < groups[0].occurrences <= final["/flaky"].failures


def test_failure_errors_with_commas_and_quotes_are_read_whole(tmp_path):
    path = tmp_path / "failures.csv"
    path.write_text(
        "Method,Name,Error,Occurrences,First Seen,Last Seen\n"
        'POST,/pay,"ConnectionError(""refused, try later"")",3,2026-11-23T06:49:38Z,'
        "2026-11-23T06:49:41Z\n"
        "GET,/ok,HTTPError('502'),7,2026-11-23T06:49:38Z,2026-11-23T06:49:41Z\n"
    )

    groups = read_failures(path)

    assert [(g.name, g.occurrences) for g in groups] == [("/ok", 7), ("/pay", 3)]
    assert groups[1].error == 'ConnectionError("refused, try later")'


def _locust_source(module: str) -> str:
    """A module of Locust read as text (finding the package does not import it)."""
    spec = importlib.util.find_spec("locust")
    assert spec is not None and spec.submodule_search_locations
    return (Path(spec.submodule_search_locations[0]) / module).read_text()


def test_the_cpu_warnings_looked_for_are_the_ones_locust_logs():
    source = _locust_source("runners.py")

    for needle in results_module.CPU_WARNINGS:
        assert needle in source


SATURATED_LOG = """\
[2026-11-23 06:50:42,556] vm/INFO/locust.main: Starting Locust 2.47.0
[2026-11-23 06:50:42,557] vm/INFO/locust.runners: All users spawned: {"U": 1} (1 total users)
[2026-11-23 06:51:04,989] vm/WARNING/root: CPU usage above 90%! This may constrain your \
throughput and may even give inconsistent response time measurements! See \
https://docs.locust.io/en/stable/running-distributed.html for how to distribute the load \
over multiple CPU cores or machines
[2026-11-23 06:51:07,591] vm/WARNING/locust.runners: CPU usage was too high at some point \
during the test! See https://docs.locust.io/en/stable/running-distributed.html for how to \
distribute the load over multiple CPU cores or machines
[2026-11-23 06:51:07,592] vm/INFO/locust.main: Shutting down (exit code 0)
"""


def test_a_log_with_locusts_cpu_warning_marks_the_load_generator_saturated(tmp_path, monkeypatch):
    log = tmp_path / "locust.log"
    log.write_text(SATURATED_LOG)
    # Small chunks: a warning cut in two by a chunk boundary is still found.
    monkeypatch.setattr(results_module, "CHUNK", 5)

    assert load_generator_saturated(log)


def test_a_master_log_about_saturated_workers_marks_the_load_generator_saturated(tmp_path):
    log = tmp_path / "locust.log"
    log.write_text(
        "[2026-11-23 06:51:07,591] vm/WARNING/locust.runners: "
        "CPU usage threshold was exceeded on workers during the test!\n"
    )

    assert load_generator_saturated(log)


def test_a_short_calm_run_did_not_saturate_the_load_generator(constant_run):
    assert "Starting Locust" in constant_run.log_file.read_text()
    assert not load_generator_saturated(constant_run.log_file)
