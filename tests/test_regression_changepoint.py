"""Change points at known positions in constructed series of runs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from perfruns.regression import Segment, change_points, segment_summary
from perfruns.regression.changepoint import _best_split


def steps(seed: int, *levels: tuple[int, float], sd: float = 3.0) -> list[float]:
    """Runs at each (count, level) in turn, with normal noise of sd."""
    rng = np.random.default_rng(seed)
    return list(np.concatenate([rng.normal(level, sd, count) for count, level in levels]))


def brute_force_q(values: list[float], tau: int, kappa: int) -> float:
    """Matteson and James's scaled energy statistic, straight from its definition."""
    x, y = values[:tau], values[tau:kappa]
    m, n = len(x), len(y)
    across = sum(abs(a - b) for a in x for b in y)
    within_x = sum(abs(a - b) for a, b in itertools.combinations(x, 2))
    within_y = sum(abs(a - b) for a, b in itertools.combinations(y, 2))
    energy = 2 * across / (m * n) - within_x / (m * (m - 1) / 2) - within_y / (n * (n - 1) / 2)
    return m * n / (m + n) * energy


def test_the_statistic_matches_its_definition_over_every_split_and_end():
    values = steps(0, (7, 100), (6, 120), (5, 100), sd=10)
    distances = np.abs(np.subtract.outer(values, values))
    pairs = [(t, k) for t in range(3, len(values) - 2) for k in range(t + 3, len(values) + 1)]
    best_tau, best_kappa = max(pairs, key=lambda pair: brute_force_q(values, *pair))

    tau, q = _best_split(distances, 3)

    assert tau == best_tau
    assert q == pytest.approx(brute_force_q(values, best_tau, best_kappa))
    # Two runs at 0 then two at 1: across distances sum to 4, so Ê = 2 and Q̂ = 1 x Ê.
    assert _best_split(np.abs(np.subtract.outer([0, 0, 1, 1], [0, 0, 1, 1])), 2) == (2, 2.0)


def test_one_step_from_100_to_130_is_found_where_it_happened():
    # The data's seed and the permutations' are kept apart: 0-4 and 1000-1004.
    series = [steps(seed, (20, 100), (20, 130)) for seed in range(5)]
    found = [change_points(values, seed=1000 + seed) for seed, values in enumerate(series)]

    for points in found:
        assert sum(abs(point - 20) <= 1 for point in points) == 1
    # A segment without a change still splits at alpha = 5 %: rarely, not in most series.
    assert sum(len(points) > 1 for points in found) <= 1
    assert found[0] == [20]


def test_two_steps_give_two_change_points():
    points = change_points(steps(1, (20, 100), (20, 130), (20, 110)))

    assert len(points) == 2
    assert abs(points[0] - 20) <= 1 and abs(points[1] - 40) <= 1


def test_a_flat_noisy_series_rarely_has_a_change_point():
    # Each series is tested at alpha = 5 %: about 3 of 60 show a false change; 9 or more
    # would happen by chance less than once in a hundred.
    found = [change_points(steps(seed, (40, 100)), seed=1000 + seed) for seed in range(60)]

    assert sum(len(points) > 0 for points in found) <= 8
    assert sum(points == [] for points in found[:10]) >= 9


def test_a_change_of_spread_alone_is_a_change_point_too():
    points = change_points(steps(2, (30, 100), (30, 100), sd=1.0)[:30] + steps(3, (30, 100), sd=15))

    assert len(points) == 1
    assert abs(points[0] - 30) <= 3


def test_no_regime_is_shorter_than_min_size():
    # A two-run spike at the start: a regime of its own only when min_size allows two runs.
    values = steps(4, (2, 160), (30, 100))

    assert change_points(values, min_size=2) == [2]
    for min_size in (3, 5):
        bounds = [0, *change_points(values, min_size=min_size), len(values)]
        assert all(b - a >= min_size for a, b in zip(bounds[:-1], bounds[1:], strict=True))


def test_a_short_regime_in_the_middle_is_found_only_as_a_whole():
    values = steps(5, (20, 100), (3, 150), (20, 100))

    assert change_points(values, min_size=3) == [20, 23]
    bounds = [0, *change_points(values, min_size=5), len(values)]
    assert all(b - a >= 5 for a, b in zip(bounds[:-1], bounds[1:], strict=True))


def test_too_few_permutations_can_never_reach_significance():
    # With 9 shuffles the smallest p-value is (1 + 0) / (1 + 9) = 0.1, above alpha = 0.05.
    values = steps(6, (20, 100), (20, 1000))

    assert change_points(values, permutations=9) == []
    assert change_points(values, permutations=9, alpha=0.11) == [20]


def test_the_same_series_and_seed_give_the_same_points():
    values = steps(7, (15, 100), (15, 104), (15, 100), sd=3)

    assert change_points(values, seed=3) == change_points(values, seed=3)


def test_a_series_too_short_to_split_has_no_change_point():
    assert change_points([1.0, 100.0, 1.0, 100.0, 1.0], min_size=3) == []
    assert change_points([]) == []


def test_what_is_no_series_or_no_min_size_is_refused():
    with pytest.raises(ValueError):
        change_points([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError):
        change_points([1.0] * 10, min_size=1)


def test_the_segments_between_change_points_carry_their_means():
    segments = segment_summary([1, 1, 1, 5, 5, 5, 5], [3])

    assert segments == [Segment(start=0, end=3, mean=1.0), Segment(start=3, end=7, mean=5.0)]
    assert [s.size for s in segments] == [3, 4]
    assert segment_summary([2.0, 4.0], []) == [Segment(start=0, end=2, mean=3.0)]
    with pytest.raises(ValueError):
        segment_summary([1, 2, 3], [3])
