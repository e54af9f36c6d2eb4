"""perfruns.thresholds: every figure a run measures, checked against its limit, with known
answers; and every bad threshold named at once."""

from __future__ import annotations

import pytest

from perfruns.thresholds import (
    FIGURES,
    EndpointFigures,
    check_thresholds,
    judge,
    measure,
)

MIB = 2**20
TOTAL = EndpointFigures(
    requests=2000, failures=10, rps=40.0, percentiles={"50": 20.0, "95": 180.0, "99": 400.0}
)
USERS = EndpointFigures(requests=1200, failures=0, rps=24.0, percentiles={"95": 120.0})


def fit(per_minute_mb: float, low_mb: float, high_mb: float, *, leak: bool) -> dict:
    return {
        "per_minute": per_minute_mb * MIB,
        "low": low_mb * MIB,
        "high": high_mb * MIB,
        "per_request": None,
        "leak": leak,
    }


SUMMARY = {
    # The run-wide figures: Locust's Aggregated row, as the recording keeps it.
    "requests": 2000,
    "failures": 10,
    "rps": 40.0,
    "p50_ms": 20.0,
    "p95_ms": 180.0,
    "p99_ms": 400.0,
    "db_ram_peak": 300 * MIB,
    "target_rss_peak": 120 * MIB,
    "db_slope": fit(0.1, -0.2, 0.4, leak=False),
    "target_slope": fit(20.0, 18.0, 22.0, leak=True),
    "breaking_point": {"first_failure_users": 40, "knee_users": None, "max_sustained_rps": 85.0},
}


def lines(thresholds, summary=SUMMARY):
    endpoints = {"/users/[id]": USERS}
    return {line["check"]: line for line in judge(thresholds, summary=summary, endpoints=endpoints)}


def test_every_figure_is_checked_against_its_limit_in_its_direction():
    checked = lines(
        {
            "p50_ms": 25,
            "p95_ms": 150,
            "p99_ms": 500,
            "failure_rate": 0.01,
            "min_rps": 50,
            "db_ram_peak_mb": 512,
            "db_ram_slope_mb_per_min": 1,
            "target_memory_peak_mb": 100,
            "target_memory_slope_mb_per_min": 2,
            "first_failure_users": 50,
            "min_knee_users": 60,
            "max_sustained_rps": 80,
        }
    )

    passed = {check: line["passed"] for check, line in checked.items()}
    assert passed == {
        "p50_ms": True,  # 20 <= 25
        "p95_ms": False,  # 180 > 150
        "p99_ms": True,
        "failure_rate": True,  # 0.5 %
        "min_rps": False,  # 40 < 50
        "db_ram_peak_mb": True,  # 300 MiB
        "db_ram_slope_mb_per_min": True,  # 0.1 MiB/min
        "target_memory_peak_mb": False,  # 120 MiB
        "target_memory_slope_mb_per_min": False,  # 20 MiB/min
        "first_failure_users": False,  # failed at 40 users
        "min_knee_users": True,  # no knee at all
        "max_sustained_rps": True,  # 85/s
    }
    assert checked["target_memory_slope_mb_per_min"]["value"] == pytest.approx(20.0)
    assert (
        checked["target_memory_slope_mb_per_min"]["low"],
        checked["target_memory_slope_mb_per_min"]["high"],
    ) == (pytest.approx(18.0), pytest.approx(22.0))
    assert checked["min_knee_users"]["note"] == "no knee"


def test_a_failure_rate_carries_its_wilson_interval():
    measured = measure("failure_rate", summary={}, endpoint=TOTAL)

    assert measure("failure_rate", summary=SUMMARY) == measured
    assert measured.value == 0.005
    assert measured.low < 0.005 < measured.high
    assert measured.high == pytest.approx(0.0092, abs=0.0005)


def test_a_probable_leak_fails_the_run_and_says_which_process():
    leaking = lines({"probable_leak": False})["probable_leak"]
    healthy = lines(
        {"probable_leak": False}, summary={**SUMMARY, "target_slope": fit(0, -1, 1, leak=False)}
    )["probable_leak"]

    assert (leaking["passed"], leaking["note"]) == (False, "probable leak: the target")
    assert (healthy["passed"], healthy["note"]) == (True, "no probable leak")


def test_per_endpoint_thresholds_read_that_endpoint():
    checked = lines(
        {"endpoints": {"/users/[id]": {"p95_ms": 100, "min_rps": 20}, "/x": {"p95_ms": 1}}}
    )

    assert checked["/users/[id] p95_ms"]["passed"] is False  # 120 ms
    assert checked["/users/[id] min_rps"]["passed"] is True
    assert checked["/x p95_ms"]["passed"] is False and checked["/x p95_ms"]["value"] is None


def test_a_figure_the_run_did_not_measure_fails_rather_than_passes():
    checked = lines(
        {"target_memory_slope_mb_per_min": 2, "first_failure_users": 10, "probable_leak": False},
        summary={},
    )

    assert not any(line["passed"] for line in checked.values())
    assert checked["first_failure_users"]["note"] == "not a step load: no breaking point"


def test_a_step_load_that_never_failed_meets_any_minimum_of_users():
    summary = {"breaking_point": {"first_failure_users": None, "knee_users": 80}}

    checked = lines({"first_failure_users": 100, "min_knee_users": 100}, summary=summary)

    assert checked["first_failure_users"]["passed"] is True
    assert checked["min_knee_users"]["passed"] is False  # it bent at 80


def test_every_bad_threshold_is_named_at_once():
    problems = check_thresholds(
        {
            "target_memory_slope": 2,
            "p95_ms": -1,
            "probable_leak": True,
            "first_failure_users": 2.5,
            "failure_rate": 5,
            "endpoints": {"/a": {"db_ram_peak_mb": 1}},
        }
    )

    text = " ".join(problems)
    assert len(problems) == 6
    assert "Unknown threshold 'target_memory_slope'" in text
    assert "p95_ms must be a number of at least 0" in text
    assert "probable_leak can only be false" in text
    assert "first_failure_users must be a whole number of users" in text
    assert "failure_rate is a rate between 0 and 1" in text
    assert "The thresholds of endpoint '/a' may only be" in text


def test_the_issue_keys_are_all_thresholds():
    assert set(FIGURES) == {
        "p50_ms", "p95_ms", "p99_ms", "failure_rate", "min_rps", "db_ram_peak_mb",
        "db_ram_slope_mb_per_min", "target_memory_peak_mb", "target_memory_slope_mb_per_min",
        "probable_leak", "first_failure_users", "min_knee_users", "max_sustained_rps",
    }  # fmt: skip
    assert check_thresholds({key: 1 for key in FIGURES if key != "probable_leak"}) == []
