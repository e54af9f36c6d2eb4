"""perfruns.labels: every machine key a run keeps has a label, and every figure is written
in a unit people read, in their language."""

from __future__ import annotations

import pytest
from django.utils import translation

from perfruns import labels
from perfruns.regression.verdicts import FLOOR_SETTINGS, METRICS, MetricVerdict
from perfruns.thresholds import FIGURES

NB = "\u00a0"


@pytest.fixture
def french():
    translation.activate("fr")
    yield
    translation.activate("en")


def test_every_threshold_floor_and_metric_key_has_a_label():
    assert set(labels.THRESHOLD_LABELS) == set(FIGURES)
    assert set(labels.FLOOR_LABELS) == set(FLOOR_SETTINGS)
    assert set(labels.METRIC_LABELS) == set(METRICS)
    for table in (labels.THRESHOLD_LABELS, labels.FLOOR_LABELS, labels.METRIC_LABELS):
        assert all(unit in labels.UNITS for _label, unit in table.values())


def test_it_writes_bytes_in_binary_units_never_in_scientific_notation():
    assert labels.size(51_275_366) == f"48.9{NB}MiB"
    assert labels.size(512) == f"512{NB}bytes"
    assert labels.size(3 * 1024 + 200) == f"3.2{NB}KiB"
    assert labels.size(1.5 * 2**30) == f"1.5{NB}GiB"
    assert labels.size(-2 * 2**20, signed=True) == f"\u22122{NB}MiB"
    assert labels.size(None) == ""


def test_it_writes_durations_rates_and_throughputs_in_their_units():
    assert labels.duration_ms(412.0) == f"412{NB}ms"
    assert labels.duration_ms(2400.0) == f"2,400{NB}ms"
    assert labels.duration_ms(12_500.0) == f"12.5{NB}s"
    assert labels.percent(0.01) == f"1{NB}%"
    assert labels.percent(0.0123) == f"1.23{NB}%"
    assert labels.rps(40.0) == f"40{NB}req/s"
    assert labels.figure(0.005, "points", signed=True) == f"+0.5{NB}points"
    assert labels.p_value(0.00001) == "< 0.001" and labels.p_value(0.0312) == "0.031"


def test_french_numbers_have_a_decimal_comma_and_narrow_spaces_between_thousands(french):
    assert labels.number(1500) == "1\u202f500"
    assert labels.number(48.94) == "48,9"
    assert labels.size(51_275_366).startswith(f"48,9{NB}")


def test_thresholds_read_as_lines_each_endpoint_named():
    lines = labels.threshold_lines(
        {
            "p95_ms": 500,
            "failure_rate": 0.01,
            "db_ram_peak_mb": 1500,
            "min_rps": 20,
            "probable_leak": False,
            "first_failure_users": 50,
            "endpoints": {"/report": {"p95_ms": 300}, "Aggregated": {"p99_ms": 900}},
        }
    )

    assert lines == [
        f"p95 ≤ 500{NB}ms",
        f"failure rate ≤ 1{NB}%",
        f"DB RAM peak ≤ 1,500{NB}MiB",
        f"throughput ≥ 20{NB}req/s",
        "no probable memory leak",
        f"first failing step ≥ 50{NB}users",
        f"/report: p95 ≤ 300{NB}ms",
        f"All endpoints: p99 ≤ 900{NB}ms",
    ]
    assert labels.threshold_lines(None) == []


def test_floors_read_as_lines_with_the_defaults_when_asked():
    assert labels.floor_lines({"db_ram_abs_mb": 32, "rps_rel": 0.1}) == [
        f"DB RAM peak, absolute: +32{NB}MiB",
        f"throughput, relative: \u221210{NB}%",
    ]
    every = labels.floor_lines({"db_ram_abs_mb": 32}, effective=True)
    assert len(every) == len(FLOOR_SETTINGS)
    assert f"DB RAM peak, absolute: +32{NB}MiB" in every
    assert f"latency, absolute: +20{NB}ms" in every  # a default


def test_a_verdict_line_of_a_threshold_reads_with_its_units():
    row = labels.verdict_row(
        {"check": "/report failure_rate", "limit": 0.01, "value": 0.02, "low": 0.015,
         "high": 0.025, "passed": False}
    )  # fmt: skip

    assert row == {
        "check": "/report: failure rate",
        "measured": f"2{NB}%",
        "interval": f"1.5{NB}% – 2.5{NB}%",
        "limit": f"≤ 1{NB}%",
        "note": "",
    }


def test_a_verdict_line_of_a_regression_names_its_baseline_and_translates_its_note():
    row = labels.verdict_row(
        {"check": "Aggregated db_ram_peak vs run #12", "limit": 51_275_366.0,
         "value": 62_000_000.0, "passed": True, "suspected": True,
         "note": "suspected: memory fails a run only when its scenario asks"}
    )  # fmt: skip

    assert row["check"] == "All endpoints: DB RAM peak against run #12"
    assert row["measured"] == f"59.1{NB}MiB"
    assert row["limit"] == f"48.9{NB}MiB on run #12"
    assert row["note"] == "suspected: memory fails a run only when its scenario asks"


def test_an_unknown_check_is_shown_as_written_with_its_numbers_readable():
    row = labels.verdict_row({"check": "something new", "limit": 3, "value": 51_275_366.0})

    assert row["check"] == "something new" and row["measured"] == "51,275,366"


def test_a_failed_run_says_which_checks_failed_and_why_it_is_invalid():
    class Run:
        status = "failed"
        invalid_reason = "Locust's CPU was saturated."
        error = ""
        verdict = [
            {"check": "p95_ms", "limit": 300, "value": 412.0, "passed": False},
            {"check": "failure_rate", "limit": 0.01, "value": 0.0, "passed": True},
        ]

    assert labels.run_problems(Run()) == [
        f"p95 412{NB}ms (≤ 300{NB}ms)",
        "Locust's CPU was saturated.",
    ]
    assert labels.run_problems(Run(), most=1) == [f"p95 412{NB}ms (≤ 300{NB}ms)", "and 1 more"]


def verdict(metric: str, **values) -> MetricVerdict:
    fields = dict(
        endpoint="/report", metric=metric, baseline=100.0, candidate=110.0, change=10.0,
        change_rel=0.1, low=None, high=None, p_value=None, q_value=None, verdict="inconclusive",
    )  # fmt: skip
    fields.update(values)
    return MetricVerdict(**fields)


def test_each_inconclusive_row_says_why_from_what_it_carries():
    assert labels.inconclusive_reason(verdict("p95")).startswith("too short a run")
    assert labels.inconclusive_reason(verdict("p95", baseline=None)) == (
        "not measured in one of the runs"
    )
    assert labels.inconclusive_reason(verdict("failure_rate", candidate=None)) == (
        "no requests in one of the runs"
    )
    assert labels.inconclusive_reason(verdict("failure_rate", low=-0.07, high=0.07)) == (
        "too few requests to tell a change of the failure rate"
    )
    assert labels.inconclusive_reason(verdict("p95", low=-30.0, high=50.0)).startswith(
        "the runs vary too much"
    )
    assert labels.inconclusive_reason(verdict("memory_slope")).startswith("no interval")


def test_a_comparison_is_all_inconclusive_only_when_no_row_was_decided():
    rows = [verdict("p95"), verdict("p99"), verdict("failure_rate", low=-0.1, high=0.1)]
    outcome = labels.comparison_outcome(rows)

    assert outcome["all_inconclusive"] and outcome["changed"] == []
    assert [n for _reason, n in outcome["reasons"]] == [2, 1]
    rows.append(verdict("p50", verdict="same"))
    assert not labels.comparison_outcome(rows)["all_inconclusive"]
    assert not labels.comparison_outcome([])["all_inconclusive"]


def test_step_levels_the_database_and_the_target_are_named_for_people():
    assert labels.endpoint_label("Aggregated") == "All endpoints"
    assert labels.endpoint_label("40 users") == "40 users"
    assert labels.endpoint_label("db") == "the database"
    assert labels.endpoint_label("/users/[id]") == "/users/[id]"


def test_the_proof_an_action_asks_for_reads_with_its_units():
    class Criterion:
        metric, comparison, value, endpoint = "p95_ms", "lt", 500.0, "/users/[id]"
        users, red_then_green, reference_run_id, scenario = 200, True, None, "checkout"

    assert labels.criterion_text(Criterion()) == (
        f"/users/[id]: p95 < 500{NB}ms, at 200{NB}users, red then green (checkout)"
    )
    Criterion.metric, Criterion.comparison, Criterion.value = "db_ram_peak_mb", "le", 1536
    Criterion.endpoint, Criterion.users, Criterion.red_then_green = "", None, False
    assert labels.criterion_text(Criterion()) == (
        f"All endpoints: DB RAM peak ≤ 1,536{NB}MiB (checkout)"
    )
    Criterion.metric, Criterion.comparison, Criterion.value = "p95_ms", "better_by", 20
    Criterion.reference_run_id = 12
    assert labels.criterion_text(Criterion()) == (
        f"All endpoints: p95 better than run #12 by at least 20{NB}% (checkout)"
    )
    assert labels.criterion_figure(0.004, "failure_rate") == f"0.4{NB}%"


def test_the_trend_charts_are_titled_in_the_readers_words():
    trend = [
        {"key": "db_ram_peak", "label": "DB RAM", "points": [], "changes": []},
        {"key": "something new", "label": "kept as stored", "points": [], "changes": []},
    ]

    assert [m["label"] for m in labels.trend_for_page(trend)] == ["DB RAM peak", "kept as stored"]
    assert trend[0]["label"] == "DB RAM"  # the stored trend is not changed
