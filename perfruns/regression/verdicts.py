"""Is the candidate run worse than the baseline? Verdicts per endpoint and per metric.

Every verdict is one of "better", "same", "worse" or "inconclusive", with the change
(candidate - baseline), a confidence interval of that change and, where a test applies, its
p-value and its Benjamini-Hochberg q-value. The replicates are the per-interval values of
Locust's full history (one value per 10-s interval), not one number per run, so that a
run's own noise decides how much of a change is believable.

The rule, the same for every metric (see ``decide``):

- "worse" when the interval lies entirely on the bad side of 0, the point change is past the
  floor (Floors) on the bad side, and the test's p-value (its q-value once Benjamini-Hochberg
  has adjusted it across the comparison) is below alpha;
- "better", the mirror image on the good side;
- "same" when the whole interval lies within plus or minus the floor: whatever changed is too
  small to matter (an equivalence test);
- "inconclusive" otherwise, and whenever there is too little data (fewer than 5 replicates a
  side, no requests, no standard error).

Higher is worse for latencies, failure rate, DB RAM and memory slope; for RPS a drop is worse.

A comparison means something only when check_validity passes: a saturated load generator, a
fixed-arrival run that did not deliver its rate, or a review environment configured
differently from the baseline's make it invalid, and its verdicts should not be shown as
regressions.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

LATENCY_METRICS = ("p50", "p95", "p99")
FAILURE_RATE = "failure_rate"
RPS = "rps"
DB_RAM_PEAK = "db_ram_peak"
MEMORY_SLOPE = "memory_slope"  # bytes a minute
MEMORY_PER_REQUEST = "memory_per_request"  # bytes a request served
METRICS = (*LATENCY_METRICS, FAILURE_RATE, RPS, DB_RAM_PEAK, MEMORY_SLOPE, MEMORY_PER_REQUEST)
# Metrics of memory: a single run worse on one is a suspected regression, which fails the
# run only when its scenario asks for it (memory moves with the load and the allocator).
MEMORY_METRICS = frozenset({DB_RAM_PEAK, MEMORY_SLOPE, MEMORY_PER_REQUEST})
# For these, a higher candidate value is the bad direction; for RPS a lower one is.
HIGHER_IS_WORSE = frozenset(METRICS) - {RPS}

VERDICTS = ("better", "same", "worse", "inconclusive")
MIN_REPLICATES = 5
# A slope difference counts when it passes this many standard errors (and the floor).
SLOPE_SE_MULTIPLE = 2.0
MIB = 2**20
# The name under which run-level metrics (DB RAM, memory slope) are reported.
RUN_LEVEL = "Aggregated"
ARRIVAL_SHAPE = "arrival"
MIN_ARRIVAL_SHARE = 0.9


@dataclass(frozen=True)
class Floors:
    """The smallest changes that matter; a smaller one is "same" at most.

    Every floor but the failure rate's has a relative part (a share of the baseline) and an
    absolute part, and a change matters only past BOTH: latencies +10 % and +20 ms; DB RAM
    peak +5 % and +16 MiB; requests/s -10 % and -1/s; memory growth +25 % and +2 MiB a
    minute, or +25 % and +256 bytes a request. failure_points is in rate units (0.005 is
    half a percentage point). leak_per_min is the floor of a probable leak (its growth's
    whole interval above it), not of a change.
    """

    p_rel: float = 0.10
    p_abs_ms: float = 20.0
    failure_points: float = 0.005
    ram_rel: float = 0.05
    ram_abs: float = 16 * MIB
    rps_rel: float = 0.10
    rps_abs: float = 1.0
    slope_rel: float = 0.25
    slope_abs_per_min: float = 2 * MIB
    per_request_rel: float = 0.25
    per_request_abs: float = 256.0
    leak_per_min: float = 1 * MIB

    @classmethod
    def from_settings(cls, values: Mapping[str, Any] | None) -> Floors:
        """The floors a scenario sets, in the units people write (FLOOR_SETTINGS); the
        others keep their defaults. ValueError names every unknown key and bad value."""
        values = values or {}
        if not isinstance(values, Mapping):
            raise ValueError("Floors must be a mapping such as {db_ram_abs_mb: 32}.")
        problems = []
        given: dict[str, float] = {}
        for key, value in values.items():
            if key not in FLOOR_SETTINGS:
                problems.append(f"Unknown floor {key!r}: use {', '.join(sorted(FLOOR_SETTINGS))}.")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                problems.append(f"The floor {key} must be a number of at least 0.")
                continue
            name, scale = FLOOR_SETTINGS[key]
            given[name] = float(value) * scale
        if "leak_per_min" in given and given["leak_per_min"] <= 0:
            problems.append("The floor leak_mb_per_min must be above 0.")
        if problems:
            raise ValueError(" ".join(problems))
        return cls(**given)


# Scenario setting -> (Floors field, scale to its units).
FLOOR_SETTINGS: dict[str, tuple[str, float]] = {
    "latency_rel": ("p_rel", 1.0),
    "latency_abs_ms": ("p_abs_ms", 1.0),
    "failure_rate_points": ("failure_points", 1.0),
    "db_ram_rel": ("ram_rel", 1.0),
    "db_ram_abs_mb": ("ram_abs", MIB),
    "rps_rel": ("rps_rel", 1.0),
    "rps_abs": ("rps_abs", 1.0),
    "memory_slope_rel": ("slope_rel", 1.0),
    "memory_slope_abs_mb_per_min": ("slope_abs_per_min", MIB),
    "memory_per_request_rel": ("per_request_rel", 1.0),
    "memory_per_request_abs_bytes": ("per_request_abs", 1.0),
    "leak_mb_per_min": ("leak_per_min", MIB),
}


@dataclass
class MetricVerdict:
    endpoint: str
    metric: str  # one of METRICS
    baseline: float | None
    candidate: float | None
    change: float | None  # candidate - baseline
    change_rel: float | None
    low: float | None
    high: float | None  # confidence interval of the change
    p_value: float | None
    q_value: float | None  # after Benjamini-Hochberg
    verdict: str  # "better"|"same"|"worse"|"inconclusive"


@dataclass
class EndpointSeries:
    """One endpoint of one run: its per-interval percentiles (ms) and its final counts.

    rps, optional, holds the per-interval request rates; left empty, no RPS verdict is made.
    """

    p50: list[float]
    p95: list[float]
    p99: list[float]
    requests: int
    failures: int
    rps: list[float] = field(default_factory=list)


@dataclass
class RunFacts:
    """What check_validity needs to know about a run."""

    saturated: bool
    shape: str  # "constant" | "steps" | "arrival"
    arrival_rps: float | None
    achieved_rps: float | None
    settings: dict[str, str] = field(default_factory=dict)


@dataclass
class Validity:
    valid: bool
    reasons: list[str]


# ---------------------------------------------------------------------------- the rule


def floor_for(metric: str, baseline: float | None, floors: Floors) -> float | None:
    """The smallest change of this metric that matters, in the metric's own units."""
    if metric in LATENCY_METRICS:
        if baseline is None:
            return None
        return max(floors.p_rel * abs(baseline), floors.p_abs_ms)
    if metric == FAILURE_RATE:
        return floors.failure_points
    relative, absolute = {
        RPS: (floors.rps_rel, floors.rps_abs),
        DB_RAM_PEAK: (floors.ram_rel, floors.ram_abs),
        MEMORY_SLOPE: (floors.slope_rel, floors.slope_abs_per_min),
        MEMORY_PER_REQUEST: (floors.per_request_rel, floors.per_request_abs),
    }.get(metric, (None, None))
    if relative is None or absolute is None:
        raise ValueError(f"unknown metric {metric!r}")
    if baseline is None:
        return None
    return max(relative * abs(baseline), absolute)


def decide(verdict: MetricVerdict, *, floors: Floors = Floors(), alpha: float = 0.05) -> str:
    """The verdict that a MetricVerdict's numbers call for (the rule of the module docstring).

    The q-value is used when there is one, else the p-value. A missing interval or change is
    "inconclusive". A certain change too small to matter (interval clear of 0 but within the
    floor) is "same"; a certain change whose point estimate passes the floor is "worse" (or
    "better") even when the interval's near end is still under the floor.
    """
    floor = floor_for(verdict.metric, verdict.baseline, floors)
    change, low, high = verdict.change, verdict.low, verdict.high
    if floor is None or change is None or low is None or high is None:
        return "inconclusive"
    p = verdict.q_value if verdict.q_value is not None else verdict.p_value
    significant = p is not None and p < alpha
    if significant and low > 0 and change > floor:
        return "worse" if verdict.metric in HIGHER_IS_WORSE else "better"
    if significant and high < 0 and change < -floor:
        return "better" if verdict.metric in HIGHER_IS_WORSE else "worse"
    if -floor <= low and high <= floor:
        return "same"
    return "inconclusive"


# ------------------------------------------------------------------ replicate metrics


def _clean(values: Sequence[float | None]) -> np.ndarray:
    """The finite values, as floats: Locust leaves a percentile empty in an idle interval."""
    array = np.asarray([v for v in values if v is not None], dtype=float)
    return array[np.isfinite(array)]


def _decided(*, floors: Floors, alpha: float, **measured: Any) -> MetricVerdict:
    """A single test's verdict, with its decision taken (q_value only comes from
    compare_endpoints' adjustment)."""
    verdict = MetricVerdict(**measured, q_value=None, verdict="inconclusive")
    verdict.verdict = decide(verdict, floors=floors, alpha=alpha)
    return verdict


# A series needs this many replicates before its autocorrelation is estimated at all.
MIN_FOR_AUTOCORRELATION = 20


def lag1_autocorrelation(values: np.ndarray) -> float | None:
    """The lag-1 autocorrelation of a series; None for a short or constant one."""
    if len(values) < MIN_FOR_AUTOCORRELATION:
        return None
    centred = values - values.mean()
    denominator = float(np.sum(centred**2))
    if denominator == 0:
        return None
    return float(np.sum(centred[:-1] * centred[1:])) / denominator


def autocorrelation_inflation(*series: np.ndarray) -> float:
    """How much the series' autocorrelation inflates the variance of a statistic that
    assumes independent values: the AR(1) factor (1 + ρ) / (1 - ρ) of their lag-1
    autocorrelation ρ (the mean over the series long enough to estimate it, corrected for
    its small-sample bias of about -(1 + 4ρ)/n, at most 0.95); 1 when no series is long
    enough or ρ is within noise of 0 (at most 2/sqrt(n), Bartlett).

    Neighbouring 10-s intervals share the target's state (a cache warming, a vacuum, a
    neighbour on the machine): treated as independent they make the intervals too narrow
    and the p-values too small, most of all for a long run or per-second memory samples.
    """
    rhos = [rho for values in series if (rho := lag1_autocorrelation(values)) is not None]
    if not rhos:
        return 1.0
    n = min(len(values) for values in series)
    rho = float(np.mean(rhos))
    rho = min(rho + (1 + 4 * rho) / n, 0.95)
    if rho <= 2 / math.sqrt(n):
        return 1.0
    return (1 + rho) / (1 - rho)


def block_length(*series: np.ndarray) -> int:
    """How many consecutive replicates a bootstrap keeps together: the variance inflation
    (autocorrelation_inflation) rounded up, at most what leaves each series
    MIN_REPLICATES blocks; 1 for independent replicates."""
    wanted = math.ceil(autocorrelation_inflation(*series))
    most = min(len(values) for values in series) // MIN_REPLICATES
    return max(1, min(wanted, most))


def _mann_whitney(candidate: np.ndarray, baseline: np.ndarray, inflation: float) -> float:
    """Mann-Whitney U's two-sided p-value; with autocorrelated replicates, its normal
    approximation with the z-score shrunk by sqrt(inflation)."""
    if inflation <= 1:
        return float(stats.mannwhitneyu(candidate, baseline, alternative="two-sided").pvalue)
    p_value = float(
        stats.mannwhitneyu(candidate, baseline, alternative="two-sided", method="asymptotic").pvalue
    )
    z = float(stats.norm.isf(p_value / 2))
    return float(2 * stats.norm.sf(z / math.sqrt(inflation)))


def _block_resample(
    values: np.ndarray, length: int, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """n_boot moving-block bootstrap resamples of `values` (blocks of `length` consecutive
    values drawn with replacement, joined, cut to the series' length); length 1 is the
    ordinary bootstrap."""
    n = len(values)
    blocks = -(-n // length)
    starts = rng.integers(0, n - length + 1, (n_boot, blocks))
    index = (starts[:, :, None] + np.arange(length)).reshape(n_boot, -1)[:, :n]
    return values[index]


def _replicates_verdict(
    endpoint: str,
    metric: str,
    baseline: Sequence[float | None],
    candidate: Sequence[float | None],
    *,
    floors: Floors,
    rng_seed: int,
    n_boot: int,
    alpha: float,
    quantile: float = 0.5,
    bootstrap_test: bool = False,
) -> MetricVerdict:
    if n_boot < 100:
        raise ValueError("n_boot must be at least 100")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    base, cand = _clean(baseline), _clean(candidate)
    base_stat = float(np.quantile(base, quantile)) if len(base) else None
    cand_stat = float(np.quantile(cand, quantile)) if len(cand) else None
    change = change_rel = low = high = p_value = None
    if base_stat is not None and cand_stat is not None:
        change = cand_stat - base_stat
        change_rel = change / base_stat if base_stat != 0 else None
    if len(base) >= MIN_REPLICATES and len(cand) >= MIN_REPLICATES:
        rng = np.random.default_rng(rng_seed)
        inflation = autocorrelation_inflation(base, cand)
        length = block_length(base, cand)
        base_boot = np.quantile(_block_resample(base, length, n_boot, rng), quantile, 1)
        cand_boot = np.quantile(_block_resample(cand, length, n_boot, rng), quantile, 1)
        low, high = (
            float(v) for v in np.quantile(cand_boot - base_boot, [alpha / 2, 1 - alpha / 2])
        )
        if bootstrap_test:
            # How often the resampled change falls on either side of 0, both tails.
            differences = cand_boot - base_boot
            tail = min(int(np.sum(differences <= 0)), int(np.sum(differences >= 0)))
            p_value = min(1.0, (1 + 2 * tail) / (n_boot + 1))
        else:
            p_value = _mann_whitney(cand, base, inflation)
        if math.isnan(p_value):
            p_value = 1.0
    return _decided(
        endpoint=endpoint,
        metric=metric,
        baseline=base_stat,
        candidate=cand_stat,
        change=change,
        change_rel=change_rel,
        low=low,
        high=high,
        p_value=p_value,
        floors=floors,
        alpha=alpha,
    )


def latency_verdict(
    endpoint: str,
    metric: str,
    baseline: Sequence[float | None],
    candidate: Sequence[float | None],
    *,
    floors: Floors = Floors(),
    rng_seed: int = 0,
    n_boot: int = 2000,
    alpha: float = 0.05,
) -> MetricVerdict:
    """A latency percentile (p50, p95 or p99, in ms) of one endpoint, baseline vs candidate.

    baseline and candidate are replicates: the percentile of each 10-s interval of the run's
    full history, one value an interval; None and NaN (idle intervals) are dropped.
    baseline/candidate in the verdict are the medians of the replicates and change their
    difference. The interval is a percentile bootstrap of the difference of medians
    (each side resampled on its own, n_boot times, seeded by rng_seed), at 1 - alpha; the
    p-value is Mann-Whitney U's, two-sided. When the replicates are autocorrelated (20 or
    more a side, lag-1 autocorrelation past noise), the bootstrap draws blocks of
    consecutive replicates (block_length) and the test's z-score is shrunk by the variance
    inflation (autocorrelation_inflation): a run's neighbouring intervals are not
    independent evidence.

    Rule: "worse" when the interval lies entirely above 0, the change exceeds the floor both
    relatively and absolutely (+10 % of the baseline AND +20 ms by default), and the p-value
    (the q-value, once compare_endpoints has adjusted it) is below alpha; "better" the mirror
    image; "same" when the interval lies within plus or minus that floor; "inconclusive"
    otherwise, and with fewer than 5 replicates on either side.
    """
    if metric not in LATENCY_METRICS:
        raise ValueError(f"latency metric must be one of {LATENCY_METRICS}, not {metric!r}")
    return _replicates_verdict(
        endpoint,
        metric,
        baseline,
        candidate,
        floors=floors,
        rng_seed=rng_seed,
        n_boot=n_boot,
        alpha=alpha,
    )


def rps_verdict(
    endpoint: str,
    baseline: Sequence[float | None],
    candidate: Sequence[float | None],
    *,
    floors: Floors = Floors(),
    rng_seed: int = 0,
    n_boot: int = 2000,
    alpha: float = 0.05,
) -> MetricVerdict:
    """Requests per second from per-interval rates, as latency_verdict but a drop is worse.

    The floor is rps_rel of the baseline's median rate (10 %) and at least rps_abs (1/s). On
    a fixed-arrival run the rate is the generator's, not the target's: check_validity is what
    judges it there.
    """
    return _replicates_verdict(
        endpoint,
        RPS,
        baseline,
        candidate,
        floors=floors,
        rng_seed=rng_seed,
        n_boot=n_boot,
        alpha=alpha,
    )


def ram_verdict(
    baseline: Sequence[float | None],
    candidate: Sequence[float | None],
    *,
    floors: Floors = Floors(),
    rng_seed: int = 0,
    n_boot: int = 2000,
    alpha: float = 0.05,
    quantile: float = 0.9,
    endpoint: str = RUN_LEVEL,
) -> MetricVerdict:
    """The database's RAM peak from its per-interval PSS samples (bytes); bigger is worse.

    The "peak" compared is the quantile (0.9 by default) of each run's samples: the level held
    during the top tenth of the run, robust to one odd sample where the maximum is not, and
    one a bootstrap can put an interval around (it cannot for a maximum, which no resample
    exceeds). quantile=1.0 compares the maxima anyway. The interval is a bootstrap of the
    difference of those quantiles (in blocks: per-second samples are strongly
    autocorrelated), and the p-value the bootstrap's own, two-sided: the same statistic,
    so a warm-up ramp at the start of the runs weighs nothing, as it does not on the
    peak. The floor is +5 % of the baseline and at least +16 MiB (Floors).
    """
    if not 0 < quantile <= 1:
        raise ValueError("quantile must be in (0, 1]")
    return _replicates_verdict(
        endpoint,
        DB_RAM_PEAK,
        baseline,
        candidate,
        floors=floors,
        rng_seed=rng_seed,
        n_boot=n_boot,
        alpha=alpha,
        quantile=quantile,
        bootstrap_test=True,
    )


# ----------------------------------------------------------------------------- failures


def _wilson(successes: int, total: int, z: float) -> tuple[float, float]:
    """Wilson's score interval of a proportion."""
    denominator = total + z * z
    centre = (successes + z * z / 2) / denominator
    half = z * math.sqrt(successes * (total - successes) / total + z * z / 4) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def failure_verdict(
    endpoint: str,
    base_failures: int,
    base_requests: int,
    cand_failures: int,
    cand_requests: int,
    *,
    floors: Floors = Floors(),
    alpha: float = 0.05,
) -> MetricVerdict:
    """The failure rate of one endpoint, from each run's final failure and request counts.

    The p-value is Fisher's exact test (two-sided) on the 2x2 table; the interval of the
    difference of rates is Newcombe's hybrid score interval (his method 10), built from each
    side's Wilson interval at 1 - alpha: it stays within [-1, 1] and behaves at 0 failures,
    where the textbook Wald interval collapses to a point. The floor is +0.5 point (0.005).
    Without requests on either side: "inconclusive".

    At 1000 requests a side a 0.5-point equivalence cannot be shown (the interval of 5/1000
    vs 6/1000 runs from about -0.8 to +1 point), so small counts are "inconclusive", not
    "same"; with enough requests the same rates are "same".
    """
    for failures, requests in ((base_failures, base_requests), (cand_failures, cand_requests)):
        if requests < 0 or failures < 0 or failures > requests:
            raise ValueError(f"{failures} failures out of {requests} requests is impossible")
    base_rate = base_failures / base_requests if base_requests else None
    cand_rate = cand_failures / cand_requests if cand_requests else None
    change = change_rel = low = high = p_value = None
    if base_rate is not None and cand_rate is not None:
        change = cand_rate - base_rate
        change_rel = change / base_rate if base_rate else None
        z = float(stats.norm.ppf(1 - alpha / 2))
        base_low, base_high = _wilson(base_failures, base_requests, z)
        cand_low, cand_high = _wilson(cand_failures, cand_requests, z)
        low = change - math.hypot(cand_rate - cand_low, base_high - base_rate)
        high = change + math.hypot(cand_high - cand_rate, base_rate - base_low)
        table = [
            [cand_failures, cand_requests - cand_failures],
            [base_failures, base_requests - base_failures],
        ]
        p_value = float(stats.fisher_exact(table, alternative="two-sided").pvalue)
    return _decided(
        endpoint=endpoint,
        metric=FAILURE_RATE,
        baseline=base_rate,
        candidate=cand_rate,
        change=change,
        change_rel=change_rel,
        low=low,
        high=high,
        p_value=p_value,
        floors=floors,
        alpha=alpha,
    )


# ------------------------------------------------------------------------- memory slope


def se_of_interval(low: float | None, high: float | None, *, alpha: float = 0.05) -> float | None:
    """The standard error a normal interval at 1 - alpha of this width stands for."""
    if low is None or high is None:
        return None
    if high < low:
        raise ValueError("an interval's high end cannot be below its low end")
    return (high - low) / (2 * float(stats.norm.ppf(1 - alpha / 2)))


def slope_verdict(
    baseline_slope: float | None,
    baseline_se: float | None,
    candidate_slope: float | None,
    candidate_se: float | None,
    *,
    floors: Floors = Floors(),
    alpha: float = 0.05,
    endpoint: str = RUN_LEVEL,
    metric: str = MEMORY_SLOPE,
) -> MetricVerdict:
    """Memory growth of the two runs — bytes a minute (MEMORY_SLOPE) or bytes a request
    served (MEMORY_PER_REQUEST) — each with its standard error (se_of_interval of a robust
    fit's interval, regression.memory).

    The change's standard error is the two combined (sqrt(se_b² + se_c²)); the interval is
    the change plus or minus 2 of them and the p-value the normal two-sided one. "worse" when
    the candidate's growth exceeds the baseline's by more than the floor (+25 % and +2 MiB a
    minute, or +25 % and +256 bytes a request) and by more than 2 standard errors; "better"
    the mirror image; "same" when the interval lies within plus or minus the floor;
    otherwise, or without a growth or standard error, "inconclusive".
    """
    if metric not in (MEMORY_SLOPE, MEMORY_PER_REQUEST):
        raise ValueError(f"{metric!r} is not a memory growth")
    change = low = high = p_value = change_rel = None
    if baseline_slope is not None and candidate_slope is not None:
        change = candidate_slope - baseline_slope
        change_rel = change / abs(baseline_slope) if baseline_slope else None
        if baseline_se is not None and candidate_se is not None:
            if baseline_se < 0 or candidate_se < 0:
                raise ValueError("a standard error cannot be negative")
            se = math.hypot(baseline_se, candidate_se)
            low, high = change - SLOPE_SE_MULTIPLE * se, change + SLOPE_SE_MULTIPLE * se
            if se > 0:
                p_value = float(2 * stats.norm.sf(abs(change) / se))
            else:
                p_value = 0.0 if change else 1.0
    return _decided(
        endpoint=endpoint,
        metric=metric,
        baseline=baseline_slope,
        candidate=candidate_slope,
        change=change,
        change_rel=change_rel,
        low=low,
        high=high,
        p_value=p_value,
        floors=floors,
        alpha=alpha,
    )


# --------------------------------------------------------------- many endpoints at once


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg q-values, in the order given; None passes through, uncounted.

    The i-th smallest of m p-values gets min over j >= i of m * p_(j) / j, capped at 1, so
    the q-values keep the p-values' order. A test is significant at false discovery rate
    alpha when its q-value is below alpha.
    """
    indexed = [(p, i) for i, p in enumerate(p_values) if p is not None]
    for p, _ in indexed:
        if not 0 <= p <= 1:
            raise ValueError(f"a p-value must be between 0 and 1, not {p!r}")
    q_values: list[float | None] = [None] * len(p_values)
    m = len(indexed)
    running = 1.0
    for rank, (p, i) in reversed(list(enumerate(sorted(indexed), start=1))):
        running = min(running, p * m / rank)
        q_values[i] = running
    return q_values


def _seed(rng_seed: int, endpoint: str, metric: str) -> int:
    """A seed of its own for each endpoint and metric, whatever else the comparison holds."""
    key = zlib.crc32(f"{endpoint}\0{metric}".encode())
    return int(np.random.SeedSequence([rng_seed, key]).generate_state(1)[0])


def compare_endpoints(
    baseline: Mapping[str, EndpointSeries],
    candidate: Mapping[str, EndpointSeries],
    *,
    floors: Floors = Floors(),
    alpha: float = 0.05,
    rng_seed: int = 0,
    n_boot: int = 2000,
) -> list[MetricVerdict]:
    """Every endpoint's p50, p95, p99, failure rate (and RPS when given) verdicts.

    Endpoints are taken from both runs, sorted by name; one missing from a run is compared
    against nothing, which is "inconclusive". The p-values of all these tests together (all
    endpoints, all metrics) are adjusted by Benjamini-Hochberg, and each verdict decided on
    its q-value: with 50 unchanged endpoints, about alpha of such comparisons show a false
    "worse" at all, instead of most of them. The bootstrap of each endpoint and metric has a
    seed of its own drawn from rng_seed and their names, so adding an endpoint changes no
    other's interval.
    """
    empty = EndpointSeries(p50=[], p95=[], p99=[], requests=0, failures=0)
    verdicts: list[MetricVerdict] = []
    for endpoint in sorted(set(baseline) | set(candidate)):
        base = baseline.get(endpoint, empty)
        cand = candidate.get(endpoint, empty)
        for metric in LATENCY_METRICS:
            verdicts.append(
                latency_verdict(
                    endpoint,
                    metric,
                    getattr(base, metric),
                    getattr(cand, metric),
                    floors=floors,
                    rng_seed=_seed(rng_seed, endpoint, metric),
                    n_boot=n_boot,
                    alpha=alpha,
                )
            )
        verdicts.append(
            failure_verdict(
                endpoint,
                base.failures,
                base.requests,
                cand.failures,
                cand.requests,
                floors=floors,
                alpha=alpha,
            )
        )
        if base.rps or cand.rps:
            verdicts.append(
                rps_verdict(
                    endpoint,
                    base.rps,
                    cand.rps,
                    floors=floors,
                    rng_seed=_seed(rng_seed, endpoint, RPS),
                    n_boot=n_boot,
                    alpha=alpha,
                )
            )
    q_values = benjamini_hochberg([v.p_value for v in verdicts])
    for verdict, q_value in zip(verdicts, q_values, strict=True):
        verdict.q_value = q_value
        verdict.verdict = decide(verdict, floors=floors, alpha=alpha)
    return verdicts


# ----------------------------------------------------------------------------- validity


def _rate(value: float) -> str:
    return f"{value:g} requests/s"


def check_validity(
    *, baseline: RunFacts, candidate: RunFacts, min_arrival_share: float = MIN_ARRIVAL_SHARE
) -> Validity:
    """Whether the two runs can be compared at all; each reason why not, a sentence.

    Invalid when a side's load generator was saturated (its figures measure Locust, not the
    target), when a fixed-arrival run achieved under 90 % of its target rate (or did not
    record what it achieved), when the two runs' load shapes or arrival targets differ, or
    when an environment setting (shared_buffers, work_mem, max_connections, server_version,
    any key of either side's settings) differs or is recorded on one side only. Settings are
    compared as the strings given. An invalid comparison is no regression: show its reasons.
    """
    reasons: list[str] = []
    sides = (("baseline", baseline), ("candidate", candidate))
    for side, facts in sides:
        if facts.saturated:
            reasons.append(
                f"The {side}'s load generator was saturated, so its figures measure Locust, "
                "not the target."
            )
    for side, facts in sides:
        fixed = facts.shape == ARRIVAL_SHAPE or bool(facts.arrival_rps)
        if not fixed:
            continue
        if not facts.arrival_rps or facts.arrival_rps <= 0:
            reasons.append(f"The {side} is a fixed-arrival run without a target rate.")
        elif facts.achieved_rps is None:
            reasons.append(
                f"The {side} is a fixed-arrival run at {_rate(facts.arrival_rps)} whose "
                "achieved rate was not recorded."
            )
        elif facts.achieved_rps < min_arrival_share * facts.arrival_rps:
            share = facts.achieved_rps / facts.arrival_rps
            reasons.append(
                f"The {side} achieved {_rate(facts.achieved_rps)}, {share:.0%} of its fixed "
                f"arrival target of {_rate(facts.arrival_rps)} (at least "
                f"{min_arrival_share:.0%} is needed)."
            )
    if baseline.shape != candidate.shape:
        reasons.append(
            f"The load shape differs: {baseline.shape} on the baseline, {candidate.shape} on "
            "the candidate."
        )
    elif (baseline.arrival_rps or None) != (candidate.arrival_rps or None):
        reasons.append(
            f"The arrival target differs: {_rate(baseline.arrival_rps or 0)} on the baseline, "
            f"{_rate(candidate.arrival_rps or 0)} on the candidate."
        )
    for key in sorted(set(baseline.settings) | set(candidate.settings)):
        base_value = baseline.settings.get(key)
        cand_value = candidate.settings.get(key)
        if base_value != cand_value:
            reasons.append(
                f"The environment setting {key} differs: "
                f"{base_value if base_value is not None else 'not recorded'} on the baseline, "
                f"{cand_value if cand_value is not None else 'not recorded'} on the candidate."
            )
    return Validity(valid=not reasons, reasons=reasons)
