"""A run against its baseline: replicates read from the run's kept files, the verdicts,
the baseline chosen, and a regression failing the run."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from perfruns.models import (
    RunStatus,
)
from perfruns.services import runs
from perfruns.services.run_comparison import (
    ComparisonError,
    baseline_for,
    compare_runs,
    endpoint_series,
)
from tests.runfiles import LOAD, SETTINGS, make_run, make_step_run


def test_a_slower_endpoint_is_worse_and_an_unchanged_one_is_not(scenario, tmp_path):
    before = make_run(scenario, tmp_path / "a", p95={"/users": 100.0, "/report": 400.0}, seed=1)
    after = make_run(scenario, tmp_path / "b", p95={"/users": 100.0, "/report": 600.0}, seed=2)

    comparison = compare_runs(baseline=before, candidate=after)

    assert comparison.valid and comparison.reasons == []
    worse = {(v.endpoint, v.metric) for v in comparison.worse}
    assert ("/report", "p95") in worse
    assert not any(endpoint == "/users" for endpoint, _ in worse)
    report_p95 = next(
        v for v in comparison.verdicts if (v.endpoint, v.metric) == ("/report", "p95")
    )
    assert report_p95.change == pytest.approx(200, rel=0.1) and report_p95.low > 0


def test_the_replicates_are_the_ten_second_intervals_of_the_history(scenario, tmp_path):
    run = make_run(scenario, tmp_path / "a", p95={"/users": 100.0}, seed=1)

    series = endpoint_series(run)["/users"]

    assert len(series.p95) == 30 and len(series.rps) == 29
    assert series.rps[0] == pytest.approx(20.0)  # 200 requests every 10 s
    assert series.requests == 6000


def test_a_second_locust_skipped_writing_costs_no_interval(scenario, tmp_path):
    run = make_run(scenario, tmp_path / "a", p95={"/users": 100.0}, seed=1)
    history = Path(run.artifacts_dir) / "locust_stats_history.csv"
    lines = history.read_text().splitlines()
    # Seconds 150, 289 and 290 missing: the first 10 s past the start, and the last of a
    # window counted back from the end.
    gone = ("1700000150,", "1700000289,", "1700000290,")
    kept = [line for line in lines if not line.startswith(gone)]
    history.write_text("\n".join(kept) + "\n")

    series = endpoint_series(run)["/users"]

    assert len(series.p95) == 30  # the row a second earlier stands for the window
    assert series.rps[0] == pytest.approx(20.0)


def test_the_windows_are_counted_back_from_the_end_and_the_ramp_left_out(scenario, tmp_path):
    run = make_run(scenario, tmp_path / "a", p95={"/users": 100.0}, seed=1)
    history = Path(run.artifacts_dir) / "locust_stats_history.csv"
    lines = history.read_text().splitlines()
    # The load ends at second 63: windows end at 63, 53, ..., 13; the one ending at 3 is
    # under half a window past the first row, the ramp.
    history.write_text("\n".join(lines[: 1 + 64]) + "\n")

    series = endpoint_series(run)["/users"]

    assert len(series.p95) == 6 and len(series.rps) == 5  # 63, 53, 43, 33, 23, 13


def test_runs_on_differently_configured_environments_are_not_comparable(scenario, tmp_path):
    before = make_run(scenario, tmp_path / "a", p95={"/users": 100.0}, seed=1)
    after = make_run(
        scenario,
        tmp_path / "b",
        p95={"/users": 300.0},
        seed=2,
        environment_settings={**SETTINGS, "shared_buffers": "1GB"},
    )

    comparison = compare_runs(baseline=before, candidate=after)

    assert not comparison.valid and comparison.worse == []
    assert any("shared_buffers" in reason for reason in comparison.reasons)


def test_a_run_whose_files_are_gone_cannot_be_compared(scenario, tmp_path):
    before = make_run(scenario, tmp_path / "a", p95={"/users": 100.0}, seed=1)
    after = make_run(scenario, tmp_path / "b", p95={"/users": 100.0}, seed=2)
    (tmp_path / "a" / "locust_stats_history.csv").unlink()

    with pytest.raises(ComparisonError, match=rf"Run #{before.pk} has no Locust history"):
        compare_runs(baseline=before, candidate=after)


def test_the_baseline_is_the_previous_valid_passing_run_of_the_same_load(scenario, tmp_path):
    good = make_run(scenario, tmp_path / "a", p95={"/u": 1.0}, seed=1)
    make_run(scenario, tmp_path / "b", p95={"/u": 1.0}, seed=2, status=RunStatus.FAILED)
    make_run(scenario, tmp_path / "c", p95={"/u": 1.0}, seed=3, invalid_reason="saturated")
    make_run(scenario, tmp_path / "d", p95={"/u": 1.0}, seed=4, settings={**LOAD, "users": 99})
    current = make_run(scenario, tmp_path / "e", p95={"/u": 1.0}, seed=5)

    assert baseline_for(current) == good

    pinned = make_run(scenario, tmp_path / "f", p95={"/u": 1.0}, seed=6)
    scenario.baseline_run = pinned
    scenario.save()
    current.refresh_from_db()
    assert baseline_for(current) == pinned


def test_a_regression_against_the_baseline_fails_the_run_with_the_figures(scenario, tmp_path):
    make_run(scenario, tmp_path / "a", p95={"/report": 400.0}, seed=1)
    run = make_run(
        scenario, tmp_path / "b", p95={"/report": 700.0}, seed=2, status=RunStatus.RUNNING
    )

    runs.perfrun_judge(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    line = next(line for line in run.verdict if line["check"].startswith("/report p95 vs run #"))
    assert not line["passed"] and line["value"] > line["limit"]
    assert run.regression["valid"] is True


def test_the_compare_page_shows_each_endpoint_with_its_verdict(client, viewer, scenario, tmp_path):
    before = make_run(scenario, tmp_path / "a", p95={"/report": 400.0}, seed=1)
    after = make_run(scenario, tmp_path / "b", p95={"/report": 700.0}, seed=2)
    client.force_login(viewer)

    response = client.get(reverse("perfruns:run_compare", args=[before.pk, after.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert "/report" in html and "verdict-worse" in html
    assert client.get(reverse("perfruns:run_compare", args=[before.pk, 999999])).status_code == 404


def test_any_two_runs_picked_by_number_open_side_by_side(client, viewer, nobody, scenario):
    client.force_login(viewer)
    pick = reverse("perfruns:run_compare_pick")

    response = client.get(pick, {"base": "12", "pk": "15"})
    bad = client.get(pick, {"base": "twelve", "pk": "15"}, follow=True)

    assert response.status_code == 302
    assert response["Location"] == reverse("perfruns:run_compare", args=[12, 15])
    assert "Give the numbers of the two runs to compare." in bad.content.decode()
    assert client.post(pick, {"base": "1", "pk": "2"}).status_code == 405
    client.force_login(nobody)
    assert client.get(pick, {"base": "12", "pk": "15"}).status_code == 403


def test_a_run_worse_than_its_baseline_says_the_regression_is_only_suspected(
    client, viewer, scenario, tmp_path
):
    before = make_run(scenario, tmp_path / "a", p95={"/report": 400.0}, seed=1)
    after = make_run(
        scenario, tmp_path / "b", p95={"/report": 700.0}, seed=2, status=RunStatus.RUNNING
    )
    runs.perfrun_judge(run_id=after.pk)
    client.force_login(viewer)

    html = client.get(after.get_absolute_url()).content.decode()

    assert "suspected regression" in html
    assert reverse("perfruns:run_compare", args=[before.pk, after.pk]) in html


def test_a_run_worse_only_on_database_memory_is_suspected_and_passes(scenario, tmp_path):
    make_run(scenario, tmp_path / "a", p95={"/report": 400.0}, seed=1)
    run = make_run(
        scenario, tmp_path / "b", p95={"/report": 400.0}, seed=2, db_pss=400e6,
        status=RunStatus.RUNNING,
    )  # fmt: skip

    runs.perfrun_judge(run_id=run.pk)

    run.refresh_from_db()
    line = next(line for line in run.verdict if "db_ram_peak" in line["check"])
    assert run.status == RunStatus.PASSED
    assert line["suspected"] is True and line["passed"] is True
    assert line["value"] > line["limit"]


def test_a_scenario_that_asks_fails_a_run_worse_on_database_memory(scenario, tmp_path):
    make_run(scenario, tmp_path / "a", p95={"/report": 400.0}, seed=1)
    run = make_run(
        scenario, tmp_path / "b", p95={"/report": 400.0}, seed=2, db_pss=400e6,
        status=RunStatus.RUNNING, settings={**LOAD, "fail_on_memory_regression": True},
    )  # fmt: skip

    runs.perfrun_judge(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert not next(line for line in run.verdict if "db_ram_peak" in line["check"])["passed"]


def test_the_baseline_of_an_unchanged_scenario_moves_forward_with_its_passing_runs(
    scenario, tmp_path
):
    first = make_run(scenario, tmp_path / "a", p95={"/report": 400.0}, seed=1)
    second = make_run(
        scenario, tmp_path / "b", p95={"/report": 400.0}, seed=2, db_pss=400e6,
        status=RunStatus.RUNNING,
    )  # fmt: skip
    runs.perfrun_judge(run_id=second.pk)
    third = make_run(scenario, tmp_path / "c", p95={"/report": 400.0}, seed=3, db_pss=400e6)

    assert baseline_for(second) == first
    assert baseline_for(third) == second  # it passed: it is the new baseline


def test_step_loads_are_compared_level_by_level_not_pooled(scenario, tmp_path):
    before = make_step_run(scenario, tmp_path / "a", levels={10: 100.0, 20: 150.0, 40: 300.0},
                           seed=1)  # fmt: skip
    after = make_step_run(scenario, tmp_path / "b", levels={10: 100.0, 20: 150.0, 40: 600.0},
                          seed=2)  # fmt: skip

    comparison = compare_runs(baseline=before, candidate=after)

    p95 = {v.endpoint: v.verdict for v in comparison.verdicts if v.metric == "p95"}
    assert set(p95) == {"10 users", "20 users", "40 users"}  # no pooled "Aggregated"
    assert p95["40 users"] == "worse"
    assert p95["10 users"] != "worse" and p95["20 users"] != "worse"


def fit(per_minute_mb: float, per_request: float | None) -> dict:
    mib = 2**20
    return {
        "per_minute": per_minute_mb * mib, "low": (per_minute_mb - 1) * mib,
        "high": (per_minute_mb + 1) * mib, "per_request": per_request,
        "per_request_low": per_request and per_request * 0.98,
        "per_request_high": per_request and per_request * 1.02, "leak": True,
    }  # fmt: skip


def test_a_leak_that_follows_the_throughput_is_not_worse_at_a_higher_throughput(scenario, tmp_path):
    # The same 40 KB left by each request, at 60 and then 90 requests a second.
    before = make_run(scenario, tmp_path / "a", p95={"/u": 100.0}, seed=1,
                      summary={"rps": 60.0, "target_slope": fit(137, 40_000)})  # fmt: skip
    after = make_run(scenario, tmp_path / "b", p95={"/u": 100.0}, seed=2,
                     summary={"rps": 90.0, "target_slope": fit(206, 40_000)})  # fmt: skip
    worse_per_request = make_run(
        scenario, tmp_path / "c", p95={"/u": 100.0}, seed=3,
        summary={"rps": 60.0, "target_slope": fit(274, 80_000)},
    )  # fmt: skip

    same = compare_runs(baseline=before, candidate=after)
    doubled = compare_runs(baseline=before, candidate=worse_per_request)

    growth = next(v for v in same.verdicts if v.endpoint == "target")
    assert (growth.metric, growth.verdict) == ("memory_per_request", "same")
    assert next(v for v in doubled.verdicts if v.endpoint == "target").verdict == "worse"


def test_runs_without_growth_per_request_are_compared_per_minute(scenario, tmp_path):
    before = make_run(scenario, tmp_path / "a", p95={"/u": 100.0}, seed=1,
                      summary={"target_slope": fit(1, None)})  # fmt: skip
    after = make_run(scenario, tmp_path / "b", p95={"/u": 100.0}, seed=2,
                     summary={"target_slope": fit(20, None)})  # fmt: skip

    growth = next(
        v for v in compare_runs(baseline=before, candidate=after).verdicts
        if v.endpoint == "target"
    )  # fmt: skip

    assert (growth.metric, growth.verdict) == ("memory_slope", "worse")


def test_the_compare_page_calls_the_difference_a_noun_in_french(client, viewer, scenario, tmp_path):
    before = make_run(scenario, tmp_path / "a", p95={"/report": 400.0}, seed=1)
    after = make_run(scenario, tmp_path / "b", p95={"/report": 700.0}, seed=2)
    client.force_login(viewer)

    html = client.get(
        reverse("perfruns:run_compare", args=[before.pk, after.pk]), HTTP_ACCEPT_LANGUAGE="fr"
    ).content.decode()

    assert '<th class="num">Écart</th>' in html
    assert "Changer</th>" not in html
