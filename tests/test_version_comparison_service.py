"""perfruns.services.version_comparisons: A/B/A comparisons requested, judged from their
three runs, stopped, and kept out of the weekly series; the verdicts checked on runs with
known answers."""

from __future__ import annotations

import socket

import pytest

from perfruns.models import (
    ComparisonStatus,
    PerfRun,
    RunStatus,
    VersionComparison,
)
from perfruns.services import common, janitor, proofs, runs, scenarios, trends, version_comparisons
from perfruns.services.run_comparison import baseline_for
from tests.runfiles import SETTINGS, make_run

VERSIONED = {
    "start_command": ".venv/bin/gunicorn --bind 127.0.0.1:18765 app:application",
    "start_env": {"APP_VERSION": "{version}"},
    "default_version": "1.0",
}


pytestmark = pytest.mark.scenario(**VERSIONED)


def comparison_of(scenario, **fields) -> VersionComparison:
    return VersionComparison.objects.create(
        scenario=scenario, version_a="1.0", version_b="2.0", **fields
    )


def three_runs(scenario, folder, comparison, *, a1: float, b: float, a2: float, **b_fields):
    """Finished runs A, B, A again of the comparison, /report's p95 at the levels given."""
    runs = {}
    for seed, (role, level) in enumerate((("a1", a1), ("b", b), ("a2", a2))):
        runs[role] = make_run(
            scenario,
            folder / role,
            p95={"/users": 100.0, "/report": level},
            seed=seed,
            version_comparison=comparison,
            role=role,
            version=comparison.version_of(role),
            **(b_fields if role == "b" else {}),
        )
    return runs


def row(comparison_or_result, endpoint: str, metric: str) -> dict:
    result = getattr(comparison_or_result, "result", comparison_or_result)
    return next(r for r in result["rows"] if (r["endpoint"], r["metric"]) == (endpoint, metric))


# ------------------------------------------------------------------------ the verdict


def test_b_slower_than_both_runs_of_a_is_worse_and_the_rest_the_same(scenario, tmp_path):
    runs = three_runs(scenario, tmp_path, comparison_of(scenario), a1=400, b=600, a2=400)

    verdict, result = version_comparisons.version_comparison_judge(**runs)

    assert verdict == "worse"
    report = row(result, "/report", "p95")
    assert (report["verdict"], report["verdict_a1"], report["verdict_a2"]) == (
        "worse", "worse", "worse",
    )  # fmt: skip
    assert report["change_rel_a1"] == pytest.approx(0.5, abs=0.05)
    assert row(result, "/users", "p95")["verdict"] == "same"
    assert result["drift"] == [] and result["reasons"] == []
    assert result["runs"] == {role: run.pk for role, run in runs.items()}


def test_b_like_both_runs_of_a_is_the_same(scenario, tmp_path):
    runs = three_runs(scenario, tmp_path, comparison_of(scenario), a1=400, b=400, a2=400)

    verdict, result = version_comparisons.version_comparison_judge(**runs)

    latency = [r for r in result["rows"] if r["metric"] in ("p50", "p95", "p99")]
    assert {r["verdict"] for r in latency} == {"same"}
    assert verdict in ("same", "inconclusive")  # the failure rates of 6000 requests may not
    assert result["drift"] == []


def test_a_difference_the_two_runs_of_a_also_show_is_drift_not_a_regression(scenario, tmp_path):
    # A got as slow as B between its two runs: B's difference is the environment's.
    runs = three_runs(scenario, tmp_path, comparison_of(scenario), a1=400, b=600, a2=600)

    verdict, result = version_comparisons.version_comparison_judge(**runs)

    assert verdict == "drift"
    assert {"endpoint": "/report", "metric": "p95", "verdict": "worse"}.items() <= (
        next(d for d in result["drift"] if d["metric"] == "p95").items()
    )
    assert row(result, "/report", "p95")["verdict"] == "inconclusive"  # worse than A only


def test_b_worse_than_both_but_a_drifted_the_same_way_is_drift(scenario, tmp_path):
    runs = three_runs(scenario, tmp_path, comparison_of(scenario), a1=400, b=700, a2=520)

    verdict, result = version_comparisons.version_comparison_judge(**runs)

    assert row(result, "/report", "p95")["verdict"] == "drift"
    assert verdict == "drift"


def test_runs_on_differently_configured_environments_make_it_invalid(scenario, tmp_path):
    runs = three_runs(
        scenario, tmp_path, comparison_of(scenario), a1=400, b=600, a2=400,
        environment_settings={**SETTINGS, "work_mem": "64MB"},
    )  # fmt: skip

    verdict, result = version_comparisons.version_comparison_judge(**runs)

    assert verdict == "invalid"
    assert any("work_mem differs" in reason for reason in result["reasons"])


# ------------------------------------------------------------------------ the runs


def test_a_comparison_whose_runs_are_made_judges_them_once_and_makes_no_more(scenario, tmp_path):
    comparison = comparison_of(scenario)
    three_runs(scenario, tmp_path, comparison, a1=400, b=600, a2=400)

    done = version_comparisons.version_comparison_run(comparison_id=comparison.pk)
    again = version_comparisons.version_comparison_run(comparison_id=comparison.pk)

    assert (done.status, done.verdict) == ("done", "worse")
    assert done.finished_at is not None and done.stage == ""
    assert row(done, "/report", "p95")["verdict"] == "worse"
    assert again.status == "done"  # claimed once: a redelivered message does nothing
    assert comparison.runs.count() == 3


def test_a_run_that_broke_stops_the_comparison_and_is_named(scenario, tmp_path):
    comparison = comparison_of(scenario)
    make_run(scenario, tmp_path / "a1", p95={"/u": 1.0}, seed=1, version_comparison=comparison,
             role="a1", version="1.0")  # fmt: skip
    broken = make_run(
        scenario, tmp_path / "b", p95={"/u": 1.0}, seed=2, version_comparison=comparison,
        role="b", version="2.0", status=RunStatus.ERROR,
        error="waiting for the target: the target exited with status 3 before it was healthy",
    )  # fmt: skip

    result = version_comparisons.version_comparison_run(comparison_id=comparison.pk)

    assert result.status == ComparisonStatus.ERROR and result.verdict == ""
    assert result.error == (
        f"Run B (#{broken.pk}, version 2.0) broke: waiting for the target: the target exited "
        "with status 3 before it was healthy"
    )
    assert not comparison.runs.filter(role="a2").exists()  # nothing more was started


def test_a_queued_comparison_is_cancelled_at_once_and_an_ended_one_not(scenario):
    queued = comparison_of(scenario)

    assert version_comparisons.version_comparison_cancel(comparison=queued)
    queued.refresh_from_db()
    assert queued.status == "cancelled" and queued.finished_at is not None
    assert not version_comparisons.version_comparison_cancel(comparison=queued)


def test_a_running_comparison_asked_to_stop_stops_its_current_run(scenario, tmp_path):
    comparison = comparison_of(scenario, status=ComparisonStatus.RUNNING)
    current = PerfRun.objects.create(
        scenario=scenario, environment=scenario.environment, trigger="comparison",
        status=RunStatus.RUNNING, version_comparison=comparison, role="a1",
    )  # fmt: skip

    assert version_comparisons.version_comparison_cancel(comparison=comparison)

    comparison.refresh_from_db()
    current.refresh_from_db()
    assert comparison.cancel_requested and current.cancel_requested


# ------------------------------------------------------------------------ requests


def test_a_comparison_is_queued_with_both_versions(scenario, engineer):
    comparison = version_comparisons.version_comparison_request(
        scenario=scenario, version_a="1.0", version_b="2.0-rc1", actor=engineer
    )

    comparison.refresh_from_db()
    assert (comparison.version_a, comparison.version_b) == ("1.0", "2.0-rc1")
    assert comparison.status == "queued" and comparison.created_by == engineer


def test_a_scenario_whose_target_takes_no_version_cannot_compare_versions(scenario):
    scenario.start_env = {}
    scenario.start_command = ".venv/bin/gunicorn app:application"
    scenario.save()

    with pytest.raises(common.PipelineRefused, match=r"does not take a version: put \{version\}"):
        version_comparisons.version_comparison_request(
            scenario=scenario, version_a="1.0", version_b="2.0", actor=None
        )
    assert not VersionComparison.objects.exists()


@pytest.mark.parametrize("version", ["2.0 --bind 0.0.0.0:80", "$(reboot)", "", "-rf", "é"])
def test_a_version_that_is_not_a_plain_token_is_refused_and_nothing_written(scenario, version):
    with pytest.raises(common.PipelineRefused, match="The version B '.*' is not a version"):
        version_comparisons.version_comparison_request(
            scenario=scenario, version_a="1.0", version_b=version, actor=None
        )
    assert not VersionComparison.objects.exists()


def test_a_second_comparison_on_a_busy_environment_is_refused(scenario):
    first = comparison_of(scenario)

    with pytest.raises(common.PipelineRefused, match=rf"already queued or running \(#{first.pk}\)"):
        version_comparisons.version_comparison_request(
            scenario=scenario, version_a="1.0", version_b="3.0", actor=None
        )
    assert VersionComparison.objects.count() == 1


def test_a_target_that_takes_a_version_needs_one_for_the_weekly_runs(scenario):
    values = {**VERSIONED, "environment": scenario.environment, "default_version": ""}

    with pytest.raises(common.PipelineRefused, match="give the version of the weekly runs"):
        scenarios.scenario_save(name="checkout", values=values)

    scenario.refresh_from_db()
    assert scenario.default_version == "1.0"  # nothing was saved
    weekly = runs.perfrun_request(scenario=scenario, trigger="schedule", actor=None)
    assert weekly.version == "1.0"


def test_the_start_command_gets_the_version_as_one_token():
    assert scenarios.versioned("app --tag {version}", "2.0-rc1") == "app --tag 2.0-rc1"


# ------------------------------------------------------------------------ the series


def test_the_runs_of_a_comparison_stay_out_of_the_series_its_baselines_and_proofs(
    scenario, tmp_path
):
    weekly = make_run(scenario, tmp_path / "weekly", p95={"/report": 400.0}, seed=9)
    three_runs(scenario, tmp_path, comparison_of(scenario), a1=400, b=900, a2=400)
    later = make_run(scenario, tmp_path / "later", p95={"/report": 400.0}, seed=10)
    for run in PerfRun.objects.all():
        run.summary = {**run.summary, "p95_ms": 900.0 if run.role == "b" else 400.0}
        run.save()

    assert baseline_for(later) == weekly
    trend = trends.scenario_trend_compute(scenario)
    p95 = next(m for m in trend if m["key"] == "p95_ms")
    assert [pk for pk, _ in p95["points"]] == [weekly.pk, later.pk]
    b = PerfRun.objects.get(role="b")
    assert proofs.criteria_evaluate(run=b) == []
    assert not b.postmortems.exists()


def test_the_janitor_marks_a_comparison_of_a_dead_worker_as_an_error(scenario, data_dir):
    dead = comparison_of(
        scenario, status=ComparisonStatus.RUNNING, stage="run B (2.0)",
        worker=f"{socket.gethostname()}:999999999",
    )  # fmt: skip

    done = janitor.janitor_sweep()

    dead.refresh_from_db()
    assert dead.status == "error" and dead.finished_at is not None
    assert "killed during the 'run B (2.0)' step" in dead.error
    assert f"versioncomparison #{dead.pk} marked failed" in done
