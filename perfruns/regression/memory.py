"""How fast a process's memory grows during a run's steady phase, and whether it leaks.

The steady phase starts after the ramp (every user started) and a warm-up (caches filling,
pools opening, the allocator settling): what memory does before then is not a leak. The
growth is fitted robustly — Theil–Sen, the median of the slopes of every pair of points —
so that one huge allocation or one spike among hundreds of samples does not decide it, as
it decides a least-squares line. Its interval is Sen's, widened by the residuals'
autocorrelation (memory samples a second apart are not independent).

Growth is measured two ways: per minute, and per request served (bytes a request leaves
behind), the second fitted against the run's cumulative request count. A leak that scales
with throughput has the same growth per request at any throughput: comparing runs per
request compares them at equal work.

A probable leak is growth per minute whose whole interval lies above a floor: certain
growth, fast enough to matter.

Pure library code over plain values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .verdicts import autocorrelation_inflation

MIB = 2**20
# The warm-up after the ramp when a scenario says nothing: at most this many seconds...
DEFAULT_WARMUP_S = 15.0
# ...and at most this share of what follows the ramp, so a short run keeps a steady phase.
DEFAULT_WARMUP_SHARE = 0.2
# A probable leak grows surely faster than this (bytes a minute), when the scenario says
# nothing.
DEFAULT_LEAK_PER_MINUTE = 1.0 * MIB
MIN_FIT_POINTS = 5
# Theil–Sen looks at every pair: a fit over at most this many points (medians of equal
# time buckets) costs ~45,000 pairs whatever the run's length.
MAX_FIT_POINTS = 300


@dataclass(frozen=True)
class MemoryFit:
    """The robust line through a process's memory over the steady phase.

    per_minute (bytes a minute) with its interval [low, high]; intercept so that the line is
    intercept + per_minute * t / 60 (t in seconds since the load started), for drawing;
    per_request (bytes a request) with its interval, None without request counts; leak when
    the whole per-minute interval is above leak_floor.
    """

    start_s: float
    end_s: float
    points: int
    per_minute: float
    low: float
    high: float
    intercept: float
    per_request: float | None
    per_request_low: float | None
    per_request_high: float | None
    leak_floor: float

    @property
    def leak(self) -> bool:
        return self.low > self.leak_floor

    def as_json(self) -> dict[str, float | int | bool | None]:
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "points": self.points,
            "per_minute": self.per_minute,
            "low": self.low,
            "high": self.high,
            "intercept": self.intercept,
            "per_request": self.per_request,
            "per_request_low": self.per_request_low,
            "per_request_high": self.per_request_high,
            "leak_floor": self.leak_floor,
            "leak": self.leak,
        }


def steady_start(*, ramp_s: float, end_s: float, warmup_s: float | None = None) -> float:
    """Where the steady phase starts: after the ramp and the warm-up. Without a warm-up of
    its own, the default one: DEFAULT_WARMUP_S, at most DEFAULT_WARMUP_SHARE of what follows
    the ramp."""
    if warmup_s is not None and warmup_s < 0:
        raise ValueError("a warm-up cannot be negative")
    ramp_s = max(0.0, ramp_s)
    if warmup_s is None:
        warmup_s = min(DEFAULT_WARMUP_S, DEFAULT_WARMUP_SHARE * max(0.0, end_s - ramp_s))
    return ramp_s + warmup_s


def _thinned(x: np.ndarray, y: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `limit` points: the medians of equal time buckets (robust, like the fit)."""
    if len(x) <= limit:
        return x, y
    edges = np.linspace(x[0], x[-1], limit + 1)
    bucket = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, limit - 1)
    xs, ys = [], []
    for b in range(limit):
        chosen = bucket == b
        if chosen.any():
            xs.append(float(np.median(x[chosen])))
            ys.append(float(np.median(y[chosen])))
    return np.asarray(xs), np.asarray(ys)


def _theil_sen(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, float, float, float]:
    """(slope, intercept, low, high): Sen's interval at 1 - alpha, widened by the square root
    of the residuals' autocorrelation inflation."""
    slope, intercept, low, high = stats.theilslopes(y, x, alpha=1 - alpha)
    slope, intercept = float(slope), float(intercept)
    residuals = y - (intercept + slope * x)
    widen = math.sqrt(autocorrelation_inflation(residuals))
    return (
        slope,
        intercept,
        slope - widen * (slope - float(low)),
        slope + widen * (float(high) - slope),
    )


def fit_memory(
    points: Sequence[tuple[float, float]],
    *,
    start_s: float,
    requests: Sequence[tuple[float, float]] = (),
    leak_floor: float = DEFAULT_LEAK_PER_MINUTE,
    alpha: float = 0.05,
) -> MemoryFit | None:
    """The robust fit of (seconds, bytes) memory samples from start_s on.

    `requests` are (seconds, requests served so far) points of the same run (Locust's
    cumulative count), from which each sample's count is interpolated: the growth per
    request is the slope of memory against it. None with fewer than MIN_FIT_POINTS samples
    in the steady phase or a single instant.
    """
    if not leak_floor > 0:
        raise ValueError("the leak floor must be above 0 bytes a minute")
    steady = sorted((t, b) for t, b in points if t >= start_s)
    if len(steady) < MIN_FIT_POINTS:
        return None
    t = np.asarray([p[0] for p in steady], dtype=float)
    b = np.asarray([p[1] for p in steady], dtype=float)
    if t[-1] == t[0]:
        return None
    x, y = _thinned(t, b, MAX_FIT_POINTS)
    slope, intercept, low, high = _theil_sen(x, y, alpha)
    per_request = per_request_low = per_request_high = None
    served = sorted(requests)
    if len(served) >= 2:
        counts = np.interp(t, [s for s, _ in served], [n for _, n in served])
        if counts[-1] > counts[0]:
            cx, cy = _thinned(counts, b, MAX_FIT_POINTS)
            if len(np.unique(cx)) >= 2:
                per_request, _, per_request_low, per_request_high = _theil_sen(cx, cy, alpha)
    return MemoryFit(
        start_s=float(t[0]),
        end_s=float(t[-1]),
        points=len(steady),
        per_minute=slope * 60,
        low=low * 60,
        high=high * 60,
        intercept=intercept,
        per_request=per_request,
        per_request_low=per_request_low,
        per_request_high=per_request_high,
        leak_floor=leak_floor,
    )
