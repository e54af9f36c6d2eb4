"""Where a scenario's series of runs changed regime: E-divisive change points.

The E-divisive method of Matteson and James ("A nonparametric approach for multiple change
point analysis of multivariate data", JASA 2014), on one series (one value a run: its p95,
its failure rate, its DB RAM peak), written from the paper:

- the divergence between the runs of a segment before a split τ (X, m of them) and those
  from τ up to a later κ (Y, n of them) is the energy statistic
  Ê = 2/(mn) Σ|X_i - Y_j| - 1/C(m,2) Σ_{i<k}|X_i - X_k| - 1/C(n,2) Σ_{j<k}|Y_j - Y_k|,
  scaled to Q̂ = mn/(m+n) Ê; it grows with any change of
  distribution, a shift of level above all;
- bisection: the best τ (over every κ) of each current segment is found, the best of them
  is tested, and when significant it is kept and its two halves searched in turn, until a
  test fails; searching κ finds a short regime inside a long segment (a regression fixed
  three runs later), which a split with Y running to the segment's end dilutes;
- the test is a permutation test: the values are shuffled within each current segment (with
  a seeded generator), the best Q̂ of the shuffled series found again, and the split kept when
  at most alpha of the shuffles, counting the observed series, did as well.

Some implementations simplify the method (κ fixed at the segment's end, or a t-test for
the permutations, as in the Hunter line behind apache-otava); this keeps the paper's search
over κ and its permutation test. Distances are |x - y| (the paper's exponent α = 1). Any
segment, and so any regime, holds at least min_size runs.
Computing is O(n²) memory and O(permutations × n²) time per change point found: fine for a
few hundred weekly runs (300 runs: about a second a change point).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Relative tolerance when a shuffle's statistic ties the observed one (summing order differs).
TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Segment:
    """One regime: runs start to end (exclusive) and their mean."""

    start: int
    end: int
    mean: float

    @property
    def size(self) -> int:
        return self.end - self.start


def _best_split(distances: np.ndarray, min_size: int) -> tuple[int, float] | None:
    """The split τ (first index of the second part) maximising Q̂ over τ and κ, with that Q̂.

    X is the segment's values before τ, Y those from τ up to κ (exclusive), both at least
    min_size long. All Q̂ at once from the 2-D running sums of the segment's distance matrix:
    the sum over a block of rows and columns is four lookups.
    """
    length = distances.shape[0]
    if length < 2 * min_size:
        return None
    prefix = np.zeros((length + 1, length + 1))
    prefix[1:, 1:] = distances.cumsum(axis=0).cumsum(axis=1)
    taus = np.arange(min_size, length - min_size + 1)[:, None]
    kappas = np.arange(2 * min_size, length + 1)[None, :]
    m = taus.astype(float)
    n = (kappas - taus).astype(float)
    possible = n >= min_size
    n = np.where(possible, n, 2.0)  # placeholders, masked below: no division by 0 or 1
    diagonal = prefix.diagonal()
    before = diagonal[taus]  # the block [0, τ) x [0, τ): each pair twice
    corner = prefix[taus, kappas]  # the block [0, τ) x [0, κ)
    across = corner - before  # the block [0, τ) x [τ, κ)
    after = diagonal[kappas] - 2 * corner + before  # the block [τ, κ) x [τ, κ)
    energy = 2 * across / (m * n) - before / (m * (m - 1)) - after / (n * (n - 1))
    q = np.where(possible, m * n / (m + n) * energy, -np.inf)
    row, _ = np.unravel_index(int(np.argmax(q)), q.shape)
    return int(taus[row, 0]), float(q.max())


def _segments(bounds: list[int]) -> list[tuple[int, int]]:
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def change_points(
    values: Sequence[float],
    *,
    min_size: int = 3,
    alpha: float = 0.05,
    permutations: int = 199,
    seed: int = 0,
) -> list[int]:
    """The indices where a new regime starts, sorted; [] when the series never changed.

    values is one scenario's series, oldest run first, all finite. Each regime found holds at
    least min_size values (at least 2: the statistic needs a pair on each side). A split is
    kept when its permutation p-value, (1 + shuffles at least as extreme) / (1 +
    permutations), is at most alpha; with 199 permutations the smallest p-value is 0.005.
    The shuffles come from numpy.random.default_rng(seed): the same input, the same answer.
    """
    if min_size < 2:
        raise ValueError("min_size must be at least 2")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    if permutations < 1:
        raise ValueError("permutations must be at least 1")
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValueError("values must be a flat series of finite numbers")
    distances = np.abs(x[:, None] - x[None, :])
    rng = np.random.default_rng(seed)
    bounds = [0, len(x)]
    best_of: dict[tuple[int, int], tuple[int, float] | None] = {}
    while True:
        segments = _segments(bounds)
        for start, end in segments:
            if (start, end) not in best_of:
                best_of[(start, end)] = _best_split(distances[start:end, start:end], min_size)
        candidates = [(best[1], s, best[0]) for s in segments if (best := best_of[s]) is not None]
        if not candidates:
            break
        observed, (start, _), tau = max(candidates)
        splittable = [s for s in segments if best_of[s]]
        as_extreme = 0
        for _ in range(permutations):
            shuffled_best = -np.inf
            for seg_start, seg_end in splittable:
                order = seg_start + rng.permutation(seg_end - seg_start)
                found = _best_split(distances[np.ix_(order, order)], min_size)
                if found is not None:
                    shuffled_best = max(shuffled_best, found[1])
            if shuffled_best >= observed - TIE_TOLERANCE * abs(observed):
                as_extreme += 1
        if (1 + as_extreme) / (1 + permutations) > alpha:
            break
        bounds = sorted([*bounds, start + tau])
    return bounds[1:-1]


def segment_summary(values: Sequence[float], points: Sequence[int]) -> list[Segment]:
    """The regimes between change points (as change_points returns them), with their means."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0 and not points:
        return []
    bounds = [0, *sorted(points), len(x)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if not a < b:
            raise ValueError(f"change points {list(points)} do not split {len(x)} values")
    return [Segment(start=a, end=b, mean=float(x[a:b].mean())) for a, b in _segments(bounds)]
