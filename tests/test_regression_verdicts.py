"""Known answers for the regression verdicts: constructed replicates whose verdict is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from perfruns.regression import (
    EndpointSeries,
    Floors,
    benjamini_hochberg,
    compare_endpoints,
    decide,
    failure_verdict,
    fit_memory,
    floor_for,
    latency_verdict,
    ram_verdict,
    rps_verdict,
    se_of_interval,
    slope_verdict,
)
from perfruns.regression.verdicts import autocorrelation_inflation, block_length

MIB = 2**20


def normal(seed: int, mean: float, sd: float, n: int) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, sd, n))


# ------------------------------------------------------------------------------ latency


def test_a_p95_a_third_and_50_ms_higher_with_little_noise_is_worse():
    baseline = normal(1, 150, 5, 30)
    candidate = normal(2, 200, 5, 30)

    verdict = latency_verdict("GET /orders", "p95", baseline, candidate)

    assert verdict.verdict == "worse"
    assert verdict.change == pytest.approx(50, abs=5)
    assert verdict.change_rel == pytest.approx(1 / 3, abs=0.04)
    assert 0 < verdict.low < 50 < verdict.high
    assert verdict.p_value < 1e-6
    assert verdict.q_value is None


def test_the_same_shift_downwards_is_better():
    verdict = latency_verdict("GET /orders", "p99", normal(2, 200, 5, 30), normal(1, 150, 5, 30))

    assert verdict.verdict == "better"
    assert verdict.high < 0


def test_identical_distributions_with_many_replicates_are_the_same():
    verdict = latency_verdict(
        "GET /orders", "p95", normal(3, 200, 20, 300), normal(4, 200, 20, 300)
    )

    assert verdict.verdict == "same"
    # The interval lies within the floor, max(10 % of 200 ms, 20 ms) = 20 ms either way.
    assert -20 < verdict.low < verdict.high < 20


def test_a_large_shift_with_too_few_replicates_is_inconclusive():
    verdict = latency_verdict("GET /orders", "p95", [100, 101, 99, 100], [300, 301, 299, 300])

    assert verdict.verdict == "inconclusive"
    assert verdict.change == pytest.approx(200)
    assert verdict.low is None and verdict.high is None and verdict.p_value is None


def test_five_replicates_a_side_are_enough_for_a_large_clean_shift():
    verdict = latency_verdict(
        "GET /orders", "p95", [100, 101, 99, 100, 102], [300, 301, 299, 300, 302]
    )

    assert verdict.verdict == "worse"


def test_a_shift_drowned_in_noise_is_inconclusive():
    # +30 ms on the median, past the 20 ms floor, but within intervals that spread over 190 ms.
    baseline = [120.0, 310.0, 180.0, 260.0, 150.0, 290.0, 200.0, 230.0]
    candidate = [v + 30 for v in reversed(baseline)]

    verdict = latency_verdict("GET /orders", "p95", baseline, candidate)

    assert verdict.change == pytest.approx(30)
    assert verdict.p_value > 0.3
    assert verdict.low < 0 < verdict.high
    assert verdict.verdict == "inconclusive"


def test_a_certain_change_under_the_relative_floor_is_the_same_not_worse():
    # +50 ms is past the 20 ms floor, but +5 % of 1 s is under the 10 % one.
    verdict = latency_verdict("GET /report", "p95", normal(7, 1000, 2, 30), normal(8, 1050, 2, 30))

    assert verdict.p_value < 1e-6
    assert verdict.low > 0
    assert verdict.verdict == "same"


def test_a_certain_change_under_the_absolute_floor_is_the_same_not_worse():
    # +20 % is past the 10 % floor, but +10 ms is under the 20 ms one.
    verdict = latency_verdict("GET /ping", "p50", normal(9, 50, 0.5, 30), normal(10, 60, 0.5, 30))

    assert verdict.p_value < 1e-6
    assert verdict.verdict == "same"


def test_smaller_floors_turn_the_same_certain_change_into_worse():
    floors = Floors(p_rel=0.02, p_abs_ms=5)
    verdict = latency_verdict(
        "GET /ping", "p50", normal(9, 50, 0.5, 30), normal(10, 60, 0.5, 30), floors=floors
    )

    assert verdict.verdict == "worse"


def test_idle_intervals_without_a_percentile_are_not_replicates():
    candidate = [300.0, 301.0, None, 299.0, math.nan, 300.0]
    four = latency_verdict("GET /orders", "p95", [100, 101, 99, 100, 102], candidate)
    five = latency_verdict("GET /orders", "p95", [100, 101, 99, 100, 102], [*candidate, 302.0])

    assert four.verdict == "inconclusive"
    assert four.candidate == pytest.approx(300)
    assert five.verdict == "worse"


def test_the_bootstrap_interval_depends_only_on_its_seed():
    baseline, candidate = normal(11, 200, 30, 20), normal(12, 210, 30, 20)

    first = latency_verdict("GET /", "p95", baseline, candidate, rng_seed=7)
    again = latency_verdict("GET /", "p95", baseline, candidate, rng_seed=7)
    other = latency_verdict("GET /", "p95", baseline, candidate, rng_seed=8)

    assert (first.low, first.high) == (again.low, again.high)
    assert (first.low, first.high) != (other.low, other.high)


def test_a_metric_that_is_no_latency_percentile_is_refused():
    with pytest.raises(ValueError, match="latency metric"):
        latency_verdict("GET /", "p90", [1.0] * 5, [1.0] * 5)


# ----------------------------------------------------------------------------- failures


def test_no_failures_against_30_in_a_thousand_is_worse():
    verdict = failure_verdict("POST /pay", 0, 1000, 30, 1000)

    assert verdict.verdict == "worse"
    assert verdict.change == pytest.approx(0.03)
    # Fisher's exact two-sided p-value of [[30, 970], [0, 1000]]: about 1.49e-9.
    assert verdict.p_value == pytest.approx(1.4937e-9, rel=1e-3)
    assert verdict.low > 0.005


def test_30_failures_in_a_thousand_down_to_none_is_better():
    assert failure_verdict("POST /pay", 30, 1000, 0, 1000).verdict == "better"


def test_five_against_six_failures_in_a_thousand_cannot_be_called_the_same():
    # Nothing suggests a change (p = 1), but a thousand requests a side cannot show that
    # the rates are within half a point of each other: the interval reaches past +-0.5 point.
    verdict = failure_verdict("POST /pay", 5, 1000, 6, 1000)

    assert verdict.p_value == pytest.approx(1.0)
    assert verdict.low < -0.005 and verdict.high > 0.005
    assert verdict.verdict == "inconclusive"


def test_the_same_rates_over_a_hundred_times_the_requests_are_the_same():
    verdict = failure_verdict("POST /pay", 50, 100_000, 60, 100_000)

    assert -0.005 < verdict.low < verdict.high < 0.005
    assert verdict.verdict == "same"


def test_the_interval_of_a_difference_of_rates_is_newcombes_hybrid_score_interval():
    # Newcombe (Statistics in Medicine, 1998), method 10: 56/70 - 48/80 gives 0.0524 to
    # 0.3339, and 0/10 - 0/20 gives -0.1611 to 0.2775 (here candidate - baseline).
    paper_a = failure_verdict("a", 48, 80, 56, 70)
    paper_e = failure_verdict("e", 0, 20, 0, 10)

    assert (paper_a.low, paper_a.high) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    assert (paper_e.low, paper_e.high) == pytest.approx((-0.1611, 0.2775), abs=5e-5)


def test_an_endpoint_without_requests_has_an_inconclusive_failure_rate():
    verdict = failure_verdict("POST /pay", 0, 0, 3, 100)

    assert verdict.verdict == "inconclusive"
    assert verdict.baseline is None and verdict.candidate == pytest.approx(0.03)


def test_more_failures_than_requests_is_refused():
    with pytest.raises(ValueError, match="impossible"):
        failure_verdict("POST /pay", 11, 10, 0, 10)


# --------------------------------------------------------------------- rps, ram, slope


def test_a_drop_in_requests_per_second_is_worse_and_a_rise_better():
    slow, fast = normal(13, 80, 2, 30), normal(14, 100, 2, 30)

    assert rps_verdict("GET /", fast, slow).verdict == "worse"
    assert rps_verdict("GET /", slow, fast).verdict == "better"
    assert rps_verdict("GET /", fast, normal(15, 101, 2, 30)).verdict == "same"


def ram_series(seed: int, plateau: float, n: int = 60) -> list[float]:
    """A database's PSS: a warm-up ramp over the first 10 intervals, then a noisy plateau."""
    ramp = np.minimum(np.arange(n) / 10, 1.0)
    noise = np.random.default_rng(seed).normal(0, 0.002 * plateau, n)
    return list(plateau * (0.5 + 0.5 * ramp) + noise)


def test_a_database_ram_peak_ten_percent_higher_is_worse():
    gib = 2**30
    verdict = ram_verdict(ram_series(16, 1.0 * gib), ram_series(17, 1.1 * gib))

    assert verdict.metric == "db_ram_peak"
    assert verdict.change_rel == pytest.approx(0.10, abs=0.01)
    assert verdict.verdict == "worse"


def test_a_database_ram_peak_two_percent_higher_is_the_same():
    gib = 2**30
    verdict = ram_verdict(ram_series(16, 1.0 * gib), ram_series(17, 1.02 * gib))

    assert verdict.verdict == "same"


def test_one_odd_ram_sample_does_not_make_a_higher_peak():
    gib = 2**30
    baseline = ram_series(18, gib)
    candidate = ram_series(18, gib)
    candidate[40] = 1.5 * gib

    assert ram_verdict(baseline, candidate).verdict == "same"
    assert ram_verdict(baseline, candidate, quantile=1.0).change == pytest.approx(
        1.5 * gib - max(baseline)
    )


def test_a_slope_past_the_floor_by_more_than_two_standard_errors_is_worse():
    verdict = slope_verdict(0.0, 1 * MIB, 10 * MIB, 1 * MIB)

    assert verdict.verdict == "worse"
    assert verdict.low == pytest.approx(10 * MIB - 2 * math.sqrt(2) * MIB)


def test_a_slope_past_the_floor_but_within_two_standard_errors_is_inconclusive():
    # The change, 10 MiB a minute, is under 2 x sqrt(4² + 4²) = 11.3 MiB.
    assert slope_verdict(0.0, 4 * MIB, 10 * MIB, 4 * MIB).verdict == "inconclusive"


def test_a_slope_far_beyond_its_errors_but_under_the_floor_is_the_same():
    # +1.5 MiB a minute, certain, under the floor of max(25 %, 2 MiB a minute).
    assert slope_verdict(1 * MIB, 0.1 * MIB, 2.5 * MIB, 0.1 * MIB).verdict == "same"


def test_a_fast_growth_a_quarter_faster_is_the_same_and_a_third_faster_is_worse():
    # A leak of 180 MiB a minute that runs 4 % faster with 4 % more throughput is no
    # regression; one a third faster is, however large the absolute floor.
    assert slope_verdict(180 * MIB, 1 * MIB, 187 * MIB, 1 * MIB).verdict == "same"
    assert slope_verdict(180 * MIB, 1 * MIB, 240 * MIB, 1 * MIB).verdict == "worse"


def test_growth_per_request_is_judged_against_its_own_floor():
    same = slope_verdict(4000, 50, 4100, 50, metric="memory_per_request")
    worse = slope_verdict(4000, 50, 6000, 50, metric="memory_per_request")
    tiny = slope_verdict(100, 5, 300, 5, metric="memory_per_request")  # +200 B < 256 B

    assert (same.metric, same.verdict) == ("memory_per_request", "same")
    assert worse.verdict == "worse"
    assert tiny.verdict == "same"
    with pytest.raises(ValueError):
        slope_verdict(1, 1, 1, 1, metric="p95")


def test_an_interval_stands_for_its_standard_error():
    assert se_of_interval(-1.96, 1.96) == pytest.approx(1.0, rel=1e-3)
    assert se_of_interval(None, 1.0) is None
    with pytest.raises(ValueError):
        se_of_interval(2.0, 1.0)


def test_a_slope_without_a_standard_error_is_inconclusive():
    verdict = slope_verdict(0.0, None, 50 * MIB, 1 * MIB)

    assert verdict.verdict == "inconclusive"
    assert verdict.change == 50 * MIB


# --------------------------------------------------------------------- many endpoints


# ------------------------------------------------------------------ autocorrelation


def ar1(seed: int, level: float, rho: float, n: int, sd: float = 10.0) -> np.ndarray:
    """An AR(1) series around `level`, its lag-1 autocorrelation rho, its spread sd."""
    rng = np.random.default_rng(seed)
    values = np.empty(n)
    values[0] = rng.normal(0, sd)
    for t in range(1, n):
        values[t] = rho * values[t - 1] + rng.normal(0, sd * math.sqrt(1 - rho**2))
    return level + values


def test_independent_replicates_are_judged_one_by_one():
    series = [np.asarray(normal(seed, 200, 10, 60)) for seed in range(20)]

    lengths = [block_length(a, b) for a, b in zip(series[::2], series[1::2], strict=True)]

    assert lengths.count(1) >= 9  # a chance sample ρ past 2/sqrt(n) is rare


def test_strongly_autocorrelated_replicates_are_taken_in_blocks():
    a, b = ar1(1, 200, 0.8, 60), ar1(2, 200, 0.8, 60)

    assert 5 <= autocorrelation_inflation(a, b) <= 15  # (1 + 0.8) / (1 - 0.8) = 9, about
    assert 5 <= block_length(a, b) <= 12  # at most 60 / 5: five blocks a side
    assert block_length(a[:10], b[:10]) == 1  # too short to tell


def test_autocorrelated_runs_of_one_level_are_rarely_called_different():
    """A/A pairs whose intervals drift slowly: judged as independent, half of them would
    differ; with the autocorrelation accounted for, about the 5 % the test allows."""
    no_floor = Floors(p_rel=0, p_abs_ms=0)
    pairs = [(ar1(2 * i, 200, 0.8, 60), ar1(2 * i + 1, 200, 0.8, 60)) for i in range(200)]

    verdicts = [
        latency_verdict("GET /", "p95", list(a), list(b), floors=no_floor, n_boot=500).verdict
        for a, b in pairs
    ]
    naive = [stats.mannwhitneyu(a, b, alternative="two-sided").pvalue < 0.05 for a, b in pairs]

    assert sum(naive) / len(pairs) > 0.3
    assert sum(v in ("worse", "better") for v in verdicts) / len(pairs) <= 0.09


def test_a_robust_fit_of_autocorrelated_memory_has_a_wider_interval():
    t = np.arange(120.0)
    wobble = ar1(5, 0, 0.9, 120, sd=2 * MIB)
    shuffled = np.random.default_rng(5).permutation(wobble)  # the same values, order lost

    fit = fit_memory(list(zip(t, 0.1 * MIB * t + wobble, strict=True)), start_s=0)
    shuffled_fit = fit_memory(list(zip(t, 0.1 * MIB * t + shuffled, strict=True)), start_s=0)

    assert fit.high - fit.low > 2 * (shuffled_fit.high - shuffled_fit.low)


def test_a_database_a_little_bigger_than_a_small_baseline_is_not_worse():
    # +2.3 MB on a 26 MB database is +9 %, past the relative floor but not the absolute
    # one of 16 MiB: the fix that bounded a cache must not fail on it.
    mib = 2**20
    base = [26 * mib + 1000 * (i % 7) for i in range(120)]
    cand = [28.3 * mib + 1000 * (i % 5) for i in range(120)]

    verdict = ram_verdict(base, cand)

    assert verdict.change == pytest.approx(2.3 * mib, rel=0.01)
    assert verdict.verdict == "same"


def test_every_floor_has_a_relative_and_an_absolute_part():
    floors = Floors()

    assert floor_for("db_ram_peak", 100 * MIB, floors) == 16 * MIB
    assert floor_for("db_ram_peak", 1000 * MIB, floors) == 50 * MIB
    assert floor_for("rps", 5.0, floors) == 1.0
    assert floor_for("rps", 100.0, floors) == 10.0
    assert floor_for("memory_slope", 1 * MIB, floors) == 2 * MIB
    assert floor_for("memory_slope", 100 * MIB, floors) == 25 * MIB
    assert floor_for("memory_per_request", 100.0, floors) == 256.0
    assert floor_for("failure_rate", 0.5, floors) == 0.005


def test_a_scenario_sets_its_floors_in_the_units_people_write():
    floors = Floors.from_settings({"db_ram_abs_mb": 64, "latency_rel": 0.2, "leak_mb_per_min": 3})

    assert (floors.ram_abs, floors.p_rel, floors.leak_per_min) == (64 * MIB, 0.2, 3 * MIB)
    assert floors.p_abs_ms == Floors().p_abs_ms  # the others keep their defaults
    assert Floors.from_settings(None) == Floors()


def test_bad_floors_are_all_named_at_once():
    with pytest.raises(ValueError) as refused:
        Floors.from_settings({"db_ram": 1, "latency_rel": -1, "rps_abs": "ten"})

    message = str(refused.value)
    assert "Unknown floor 'db_ram'" in message
    assert "latency_rel must be a number of at least 0" in message
    assert "rps_abs must be a number of at least 0" in message


def test_benjamini_hochberg_matches_a_hand_computed_example():
    # Five p-values (None is no test): sorted 0.005, 0.01, 0.03, 0.04, 0.5 give 5p/rank
    # 0.025, 0.025, 0.05, 0.05, 0.5, already monotone.
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.005, None, 0.5])

    assert q == pytest.approx([0.025, 0.05, 0.05, 0.025, None, 0.5])


def test_benjamini_hochberg_q_values_never_fall_below_a_smaller_p_values():
    # 2 x 0.02 / 1 = 0.04 exceeds 2 x 0.021 / 2 = 0.021: the smaller p-value takes 0.021.
    assert benjamini_hochberg([0.021, 0.02]) == pytest.approx([0.021, 0.021])
    assert benjamini_hochberg([0.9, 0.8]) == pytest.approx([0.9, 0.9])
    assert benjamini_hochberg([]) == []


def test_benjamini_hochberg_refuses_what_is_no_p_value():
    with pytest.raises(ValueError):
        benjamini_hochberg([0.2, 1.5])
    with pytest.raises(ValueError):
        benjamini_hochberg([math.nan])


def noisy_endpoints(seed: int, count: int = 50, n: int = 30) -> tuple[dict, dict]:
    """Two runs of the same scenario, nothing changed: per-interval percentiles vary by ±35 %."""
    rng = np.random.default_rng(seed)

    def run(median: float) -> EndpointSeries:
        p50 = median * np.exp(rng.normal(0, 0.35, n))
        return EndpointSeries(
            p50=list(p50),
            p95=list(2 * p50 * np.exp(rng.normal(0, 0.35, n))),
            p99=list(3 * p50 * np.exp(rng.normal(0, 0.35, n))),
            requests=3000,
            failures=int(rng.binomial(3000, 0.01)),
        )

    medians = rng.uniform(30, 400, count)
    baseline = {f"GET /e{i}": run(m) for i, m in enumerate(medians)}
    candidate = {f"GET /e{i}": run(m) for i, m in enumerate(medians)}
    return baseline, candidate


def test_fifty_unchanged_endpoints_rarely_cry_wolf_after_benjamini_hochberg():
    false_alarms = unadjusted_false_alarms = 0
    for seed in range(20):
        verdicts = compare_endpoints(*noisy_endpoints(seed), rng_seed=seed, n_boot=500)
        assert len(verdicts) == 50 * 4
        false_alarms += any(v.verdict == "worse" for v in verdicts)
        for verdict in verdicts:
            verdict.q_value = None
        unadjusted_false_alarms += any(decide(v) == "worse" for v in verdicts)

    assert false_alarms <= 1
    # The noise is such that, tested one by one, nearly every comparison would cry wolf.
    assert unadjusted_false_alarms >= 15


def test_one_slower_endpoint_among_fifty_is_still_found_after_benjamini_hochberg():
    baseline, candidate = noisy_endpoints(21)
    # Twice as slow: the baseline's own intervals doubled, each nudged by a few percent.
    nudges = np.exp(normal(22, 0, 0.05, 30))
    candidate["GET /e7"].p95 = list(2 * np.asarray(baseline["GET /e7"].p95) * nudges)

    verdicts = compare_endpoints(baseline, candidate, n_boot=500)

    worse = [(v.endpoint, v.metric) for v in verdicts if v.verdict == "worse"]
    assert worse == [("GET /e7", "p95")]
    slower = next(v for v in verdicts if (v.endpoint, v.metric) == ("GET /e7", "p95"))
    assert slower.q_value >= slower.p_value


def test_an_endpoint_in_one_run_only_is_inconclusive():
    series = EndpointSeries(p50=[10.0] * 6, p95=[20.0] * 6, p99=[30.0] * 6, requests=60, failures=0)

    verdicts = compare_endpoints({"GET /old": series}, {"GET /new": series}, n_boot=200)

    assert {(v.endpoint, v.verdict) for v in verdicts} == {
        ("GET /new", "inconclusive"),
        ("GET /old", "inconclusive"),
    }


def test_requests_per_second_are_judged_only_when_their_intervals_are_given():
    def series(rps: list[float]) -> EndpointSeries:
        return EndpointSeries(
            p50=[10.0] * 6, p95=[20.0] * 6, p99=[30.0] * 6, requests=6000, failures=0, rps=rps
        )

    without = compare_endpoints({"GET /": series([])}, {"GET /": series([])}, n_boot=200)
    with_rps = compare_endpoints(
        {"GET /": series(normal(23, 100, 1, 10))},
        {"GET /": series(normal(24, 70, 1, 10))},
        n_boot=200,
    )

    assert [v.metric for v in without] == ["p50", "p95", "p99", "failure_rate"]
    assert [(v.metric, v.verdict) for v in with_rps][-1] == ("rps", "worse")
    assert [v.verdict for v in without] == ["same"] * 4


def test_an_endpoints_interval_does_not_depend_on_the_other_endpoints():
    baseline, candidate = noisy_endpoints(25, count=3)
    alone = compare_endpoints(
        {"GET /e1": baseline["GET /e1"]}, {"GET /e1": candidate["GET /e1"]}, n_boot=300
    )
    together = compare_endpoints(baseline, candidate, n_boot=300)

    intervals = {(v.metric, v.low, v.high) for v in together if v.endpoint == "GET /e1"}
    assert {(v.metric, v.low, v.high) for v in alone} == intervals
