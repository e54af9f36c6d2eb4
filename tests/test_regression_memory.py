"""Known answers for the robust memory fit: constructed memory series whose growth, per
minute and per request, is known."""

from __future__ import annotations

import random

import pytest

from perfruns.regression.memory import (
    DEFAULT_LEAK_PER_MINUTE,
    fit_memory,
    steady_start,
)

MB = 2**20


def line(per_minute, *, start=200 * MB, seconds=300, every=1, noise=(), t0=0):
    """(seconds, bytes) samples of a straight line, plus a repeating noise pattern."""
    points = []
    for i, t in enumerate(range(t0, seconds + 1, every)):
        wiggle = noise[i % len(noise)] if noise else 0
        points.append((float(t), start + per_minute * t / 60 + wiggle))
    return points


def test_flat_memory_has_no_slope_and_no_leak():
    fit = fit_memory(line(0), start_s=0)

    assert fit is not None
    assert fit.per_minute == pytest.approx(0, abs=1)
    assert fit.low <= 0 <= fit.high
    assert not fit.leak


def test_a_steady_leak_is_found_with_its_rate_and_an_interval_around_it():
    fit = fit_memory(line(4 * MB, noise=(0, 64 * 1024, -64 * 1024)), start_s=0)

    assert fit.per_minute == pytest.approx(4 * MB, rel=0.01)
    assert fit.low < 4 * MB < fit.high
    assert fit.high - fit.low < 0.5 * MB
    assert fit.leak


def test_noisy_memory_with_a_small_drift_is_no_leak():
    # 2 MB a minute of drift under swings of +-100 MB: nothing certain.
    rng = random.Random(3)
    points = [(t, b + rng.uniform(-100, 100) * MB) for t, b in line(2 * MB, seconds=120)]

    fit = fit_memory(points, start_s=0)

    assert fit.low < DEFAULT_LEAK_PER_MINUTE
    assert not fit.leak


def test_steady_growth_below_the_floor_is_no_leak():
    fit = fit_memory(line(MB // 2), start_s=0)

    assert fit.per_minute == pytest.approx(MB / 2, rel=1e-6)
    assert not fit.leak
    assert fit_memory(line(MB // 2), start_s=0, leak_floor=MB // 4).leak


def test_a_single_jump_is_not_a_steady_leak():
    # Flat, one step up by 50 MB (a cache filling), flat again.
    points = [(float(t), 100 * MB if t < 200 else 150 * MB) for t in range(0, 301, 10)]

    fit = fit_memory(points, start_s=0)

    assert fit.per_minute == pytest.approx(0, abs=1)
    assert not fit.leak


def test_one_huge_allocation_in_the_first_seconds_does_not_hide_a_steady_leak():
    # The classic "gets slower and slower" app: one 37 MB listing in the first 3 s lifts
    # the process to ~290 MiB, then its unbounded history grows 20 MiB a minute.
    points = [(float(t), 60 * MB) for t in range(0, 3)]
    points += [(t, b) for t, b in line(20 * MB, start=290 * MB, seconds=160, t0=3)]

    steady = fit_memory(points, start_s=steady_start(ramp_s=1, end_s=160))
    everything = fit_memory(points, start_s=0)

    assert steady.per_minute == pytest.approx(20 * MB, rel=0.01) and steady.leak
    # Even fitted from the first second, the median of the pairs' slopes is not moved.
    assert everything.per_minute == pytest.approx(20 * MB, rel=0.05) and everything.leak


def test_a_spike_in_the_middle_does_not_move_the_fit():
    points = line(3 * MB, seconds=200)
    points[100] = (points[100][0], points[100][1] + 500 * MB)

    fit = fit_memory(points, start_s=0)

    assert fit.per_minute == pytest.approx(3 * MB, rel=0.01)


def test_a_leak_proportional_to_throughput_has_the_same_growth_per_request():
    def run(rate):
        # 100 KB kept per request, `rate` requests a second.
        memory = [(float(t), 100 * MB + 100_000 * rate * t) for t in range(121)]
        served = [(float(t), rate * t) for t in range(121)]
        return fit_memory(memory, start_s=10, requests=served)

    slow, fast = run(10), run(20)

    assert fast.per_minute == pytest.approx(2 * slow.per_minute, rel=1e-6)
    assert slow.per_request == pytest.approx(100_000, rel=1e-6)
    assert fast.per_request == pytest.approx(100_000, rel=1e-6)


def test_without_request_counts_there_is_no_growth_per_request():
    fit = fit_memory(line(MB), start_s=0)

    assert (fit.per_request, fit.per_request_low, fit.per_request_high) == (None, None, None)


def test_a_long_run_is_fitted_over_bucket_medians_with_the_same_answer():
    fit = fit_memory(line(2 * MB, seconds=3600, noise=(0, 32 * 1024)), start_s=0)

    assert fit.points == 3601
    assert fit.per_minute == pytest.approx(2 * MB, rel=0.01)
    assert fit.intercept == pytest.approx(200 * MB, rel=0.001)


def test_the_steady_phase_starts_after_the_ramp_and_the_warm_up():
    assert steady_start(ramp_s=2, end_s=300) == 17  # 15 s of default warm-up
    assert steady_start(ramp_s=1, end_s=11) == pytest.approx(3)  # a fifth of a short run
    assert steady_start(ramp_s=2, end_s=300, warmup_s=60) == 62
    with pytest.raises(ValueError):
        steady_start(ramp_s=2, end_s=300, warmup_s=-1)


def test_samples_before_the_steady_phase_are_left_out():
    points = [(float(t), 100 * MB + (t * MB if t < 30 else 30 * MB)) for t in range(120)]

    fit = fit_memory(points, start_s=30)

    assert fit.start_s == 30 and fit.per_minute == pytest.approx(0, abs=1)


def test_too_few_points_or_one_instant_have_no_fit():
    assert fit_memory(line(MB, seconds=30, every=10), start_s=0) is None  # 4 points
    assert fit_memory([(5.0, float(b)) for b in range(10)], start_s=0) is None
    with pytest.raises(ValueError):
        fit_memory(line(MB), start_s=0, leak_floor=0)
