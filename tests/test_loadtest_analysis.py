"""Steps and breaking points on constructed series with known answers (memory growth:
test_regression_memory)."""

from __future__ import annotations

from perfruns.loadtest import (
    BreakingPoint,
    HistoryRow,
    StepStats,
    breaking_point,
    steps_from_history,
)

MB = 1024 * 1024


def row(t, users, requests, failures=0, p95=None, name="Aggregated", method=""):
    return HistoryRow(
        timestamp=t,
        users=users,
        name=name,
        method=method,
        rps=0.0,
        failures_per_s=0.0,
        p50_ms=None if p95 is None else p95 / 2,
        p95_ms=p95,
        requests=requests,
        failures=failures,
    )


def test_steps_group_the_aggregated_rows_by_user_count_in_order():
    rows = [
        row(100, 0, 0),
        row(101, 10, 80, name="/ok", method="GET"),
        row(101, 10, 100, p95=20),
        row(102, 10, 200, p95=22),
        row(103, 20, 400, failures=2, p95=30),
        row(103, 20, 390, name="/ok", method="GET"),
        row(104, 20, 600, failures=4, p95=35),
        row(105, 0, 610, failures=4),  # the stop: no step
    ]

    steps = steps_from_history(rows)

    assert steps == [
        StepStats(users=10, requests=200, failures=0, rps=100.0, p95_ms=22, seconds=2.0),
        StepStats(
            users=20, requests=400, failures=4, rps=200.0, p95_ms=35, seconds=2.0,
            burst_failures=4,  # both its seconds are in the first 5, as its users spawned
        ),
    ]  # fmt: skip


def test_a_user_count_seen_again_adds_to_its_step():
    rows = [row(0, 0, 0), row(1, 5, 10), row(2, 6, 30), row(3, 5, 40)]

    steps = steps_from_history(rows)

    assert [(s.users, s.requests, s.rps) for s in steps] == [(5, 20, 10.0), (6, 20, 20.0)]


def test_counts_starting_again_after_a_stats_reset_are_not_negative():
    rows = [row(0, 0, 0), row(1, 5, 500), row(2, 5, 30)]

    [step] = steps_from_history(rows)

    assert step.requests == 530


def test_no_rows_make_no_steps():
    assert steps_from_history([]) == []
    assert steps_from_history([row(0, 0, 0)]) == []


def step(users, rps, p95=50.0, requests=1000, failures=0):
    return StepStats(users=users, requests=requests, failures=failures, rps=rps, p95_ms=p95)


def test_a_load_that_scales_has_no_failure_and_no_knee():
    steps = [step(10, 100), step(20, 195, 52), step(30, 290, 60)]

    assert breaking_point(steps) == BreakingPoint(
        first_failure_users=None, knee_users=None, max_sustained_rps=290
    )


def test_a_step_load_reports_the_users_at_the_first_failing_step():
    steps = [
        step(10, 100),
        step(20, 200, failures=5),  # 0.5 %: noise, not failing
        step(30, 280, failures=10),  # exactly 1 %: not more than 1 %
        step(40, 250, failures=100),  # 10 %
        step(50, 400, failures=500),
    ]

    point = breaking_point(steps)

    assert point.first_failure_users == 40
    assert point.max_sustained_rps == 280


def test_the_knee_is_where_throughput_per_user_halves():
    # 10 requests a second per user, then 9.5, then 5.
    steps = [step(10, 100), step(20, 190), step(40, 200), step(80, 210)]

    assert breaking_point(steps).knee_users == 40


def test_the_knee_is_where_p95_doubles():
    steps = [step(10, 100, p95=40), step(20, 200, p95=79), step(30, 300, p95=80)]

    assert breaking_point(steps).knee_users == 30


def test_a_first_step_without_a_p95_only_looks_at_throughput_for_the_knee():
    steps = [step(10, 100, p95=None), step(20, 200, p95=500)]

    assert breaking_point(steps).knee_users is None


def test_a_load_failing_from_its_first_step_sustained_no_rate():
    steps = [step(10, 100, failures=50), step(20, 150)]

    assert breaking_point(steps) == BreakingPoint(
        first_failure_users=10, knee_users=None, max_sustained_rps=None
    )


def test_no_steps_have_no_breaking_point():
    assert breaking_point([]) == BreakingPoint(None, None, None)


def level(users, requests, failures, *, burst=0, seconds=30):
    return StepStats(
        users=users, requests=requests, failures=failures, rps=requests / seconds,
        p95_ms=50.0, seconds=seconds, burst_failures=burst,
    )  # fmt: skip


def test_a_first_failure_barely_past_the_line_is_flagged_borderline():
    point = breaking_point([level(10, 1000, 0), level(20, 2000, 21, burst=2)])

    assert point.first_failure_users == 20
    assert point.borderline == "1.05 % of its requests failed, barely past the 1 % line"


def test_a_first_failure_made_in_the_spawn_burst_is_flagged_borderline():
    point = breaking_point([level(10, 1000, 0), level(40, 2000, 80, burst=60)])

    assert point.first_failure_users == 40
    assert point.borderline == "60 of its 80 failures came in its first 5 s, as its users spawned"


def test_a_clear_breaking_point_is_not_borderline():
    point = breaking_point([level(10, 1000, 0), level(70, 2000, 300, burst=20)])

    assert (point.first_failure_users, point.borderline) == (70, "")


def test_failures_in_a_steps_first_seconds_are_counted_as_its_spawn_burst():
    rows = [row(0, 0, 0), row(1, 10, 100)]
    rows += [row(1 + t, 20, 100 + 50 * t, failures=min(t, 5) * 2) for t in range(1, 12)]

    steps = steps_from_history(rows)

    assert (steps[1].failures, steps[1].burst_failures) == (10, 10)
