"""Every figure a run measures, as a threshold of its scenario and a proof of an action.

A figure is read from a run's summary (totals, memory peaks, the robust memory fits, the
breaking point) or from one endpoint's final statistics, with its interval where it has
one: memory growth (the fit's), failure rates (Wilson's). Percentiles and rates over all
of a run's requests are taken as measured: thousands of requests make their sampling error
small next to the floors that matter.

Scenario YAML threshold keys (the limit of each; `endpoints:` maps an endpoint's name to
the keys marked per endpoint):

    p50_ms p95_ms p99_ms        at most, ms (per endpoint too)
    failure_rate                at most, 0 to 1 (per endpoint too)
    min_rps                     at least, requests/s (per endpoint too)
    db_ram_peak_mb              at most, MiB: the database's PSS peak
    db_ram_slope_mb_per_min     at most, MiB a minute: its growth over the steady phase
    target_memory_peak_mb       at most, MiB: the target's RSS peak
    target_memory_slope_mb_per_min   at most, MiB a minute
    probable_leak               false: a probable leak of the database or the target fails
    first_failure_users         at least, users: a step load's first failing step
    min_knee_users              at least, users: its knee (throughput per user halved or
                                p95 doubled)
    max_sustained_rps           at least, requests/s: the best rate before it failed

Plain library code over plain values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from perfruns.payloads import VerdictLine

MIB = 2**20
# Wilson's interval of a failure rate at this confidence.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    at_least: bool = False  # the limit is a minimum
    per_endpoint: bool = False
    whole: bool = False  # a count of users
    flag: bool = False  # a yes/no figure whose only limit is false


FIGURES: dict[str, Figure] = {
    f.key: f
    for f in (
        Figure("p50_ms", "p50", "ms", per_endpoint=True),
        Figure("p95_ms", "p95", "ms", per_endpoint=True),
        Figure("p99_ms", "p99", "ms", per_endpoint=True),
        Figure("failure_rate", "failure rate", "", per_endpoint=True),
        Figure("min_rps", "requests/s", "/s", at_least=True, per_endpoint=True),
        Figure("db_ram_peak_mb", "DB RAM peak", "MiB"),
        Figure("db_ram_slope_mb_per_min", "DB RAM growth", "MiB/min"),
        Figure("target_memory_peak_mb", "target memory peak", "MiB"),
        Figure("target_memory_slope_mb_per_min", "target memory growth", "MiB/min"),
        Figure("probable_leak", "probable leak", "", flag=True),
        Figure("first_failure_users", "users at the first failing step", "", True, whole=True),
        Figure("min_knee_users", "users at the knee", "", at_least=True, whole=True),
        Figure("max_sustained_rps", "max sustained requests/s", "/s", at_least=True),
    )
}
THRESHOLD_KEYS = frozenset(FIGURES) | {"endpoints"}
ENDPOINT_KEYS = frozenset(key for key, f in FIGURES.items() if f.per_endpoint)


@dataclass(frozen=True)
class EndpointFigures:
    """One endpoint's final statistics (or the run's "Aggregated" row)."""

    requests: int
    failures: int
    rps: float
    percentiles: Mapping[str, float | None]


@dataclass(frozen=True)
class Measured:
    """A figure as a run measured it: the value, its interval where it has one, and why it
    is missing or what it means (a step load that never failed)."""

    value: float | None
    low: float | None = None
    high: float | None = None
    note: str = ""


def wilson(failures: int, requests: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval of a rate."""
    centre = (failures + z * z / 2) / (requests + z * z)
    half = z * math.sqrt(failures * (requests - failures) / requests + z * z / 4)
    half /= requests + z * z
    return max(0.0, centre - half), min(1.0, centre + half)


def _percentile_key(key: str) -> str:
    return key.removesuffix("_ms").removeprefix("p")


def measure(
    key: str, *, summary: Mapping[str, Any], endpoint: EndpointFigures | None = None
) -> Measured:
    """The run's figure for a threshold key; `endpoint` for the per-endpoint ones (the
    run's Aggregated row when no endpoint is named)."""
    figure = FIGURES.get(key)
    if figure is None:
        raise ValueError(f"unknown figure {key!r}")
    if figure.per_endpoint and endpoint is None:
        return _run_wide(key, summary)
    if figure.per_endpoint:
        assert endpoint is not None
        if key == "failure_rate":
            if not endpoint.requests:
                return Measured(None, note="no requests")
            low, high = wilson(endpoint.failures, endpoint.requests)
            return Measured(endpoint.failures / endpoint.requests, low, high)
        if key == "min_rps":
            return Measured(endpoint.rps)
        return Measured(endpoint.percentiles.get(_percentile_key(key)))
    if key in ("db_ram_peak_mb", "target_memory_peak_mb"):
        peak = summary.get("db_ram_peak" if key.startswith("db") else "target_rss_peak")
        if peak is None:
            return Measured(None, note="not measured (the process was not sampled)")
        return Measured(peak / MIB)
    if key in ("db_ram_slope_mb_per_min", "target_memory_slope_mb_per_min"):
        fit = summary.get("db_slope" if key.startswith("db") else "target_slope")
        if not fit:
            return Measured(None, note="no steady phase long enough to fit the memory's growth")
        low, high = fit.get("low"), fit.get("high")
        return Measured(
            fit["per_minute"] / MIB,
            low / MIB if low is not None else None,
            high / MIB if high is not None else None,
        )
    if key == "probable_leak":
        leaking = [
            label
            for label, name in (("db_slope", "the database"), ("target_slope", "the target"))
            if (summary.get(label) or {}).get("leak")
        ]
        fitted = [label for label in ("db_slope", "target_slope") if summary.get(label)]
        if not fitted:
            return Measured(None, note="no steady phase long enough to fit the memory's growth")
        names = {"db_slope": "the database", "target_slope": "the target"}
        if leaking:
            return Measured(1.0, note="probable leak: " + " and ".join(names[x] for x in leaking))
        return Measured(0.0, note="no probable leak")
    point = summary.get("breaking_point")
    if not point:
        return Measured(None, note="not a step load: no breaking point")
    if key == "first_failure_users":
        value = point.get("first_failure_users")
        return Measured(value, note="" if value is not None else "no step failed")
    if key == "min_knee_users":
        value = point.get("knee_users")
        return Measured(value, note="" if value is not None else "no knee")
    return Measured(point.get("max_sustained_rps"))


def measure_endpoint(
    key: str, *, summary: Mapping[str, Any], endpoints: Mapping[str, EndpointFigures], name: str
) -> Measured:
    """A figure of the endpoint called `name` ("" for the whole run)."""
    if not name or not FIGURES[key].per_endpoint:
        return measure(key, summary=summary)
    endpoint = endpoints.get(name)
    if endpoint is None:
        return Measured(None, note="the endpoint did not answer in this run")
    return measure(key, summary=summary, endpoint=endpoint)


def _run_wide(key: str, summary: Mapping[str, Any]) -> Measured:
    """A per-endpoint figure of the whole run from its summary (Locust's Aggregated row, as
    the recording kept it), when the run's endpoints are not at hand."""
    if key == "failure_rate":
        requests, failures = summary.get("requests"), summary.get("failures")
        if requests:
            low, high = wilson(failures or 0, requests)
            return Measured((failures or 0) / requests, low, high)
        rate = summary.get("failure_rate")
        return Measured(rate) if rate is not None else Measured(None, note="no requests")
    value = summary.get("rps" if key == "min_rps" else key)
    return Measured(value) if value is not None else Measured(None, note="not measured")


def meets(key: str, measured: Measured, limit: float) -> bool:
    """Whether the figure meets its limit: at most, or at least for a minimum. A step load
    that never failed (or never bent) meets any minimum of users."""
    figure = FIGURES[key]
    if figure.flag:
        return measured.value == 0.0
    if measured.value is None:
        return figure.whole and measured.note in ("no step failed", "no knee")
    return measured.value >= limit if figure.at_least else measured.value <= limit


def check_thresholds(thresholds: Any) -> list[str]:
    """Every problem of a scenario's thresholds, each a sentence (none when they are fine)."""
    if not isinstance(thresholds, dict):
        return ["Thresholds must be a mapping such as {p95_ms: 500}."]
    problems = []
    for key in sorted(set(thresholds) - THRESHOLD_KEYS):
        problems.append(f"Unknown threshold {key!r}: use {', '.join(sorted(THRESHOLD_KEYS))}.")
    for key, value in thresholds.items():
        if key == "endpoints":
            if not isinstance(value, dict):
                problems.append("endpoints thresholds map an endpoint name to thresholds.")
                continue
            for name, limits in value.items():
                if not isinstance(limits, dict) or set(limits) - ENDPOINT_KEYS:
                    problems.append(
                        f"The thresholds of endpoint {name!r} may only be "
                        f"{', '.join(sorted(ENDPOINT_KEYS))}."
                    )
                    continue
                for limit_key, limit in limits.items():
                    problems += _limit_problems(limit_key, limit, label=f"{name} {limit_key}")
        elif key in FIGURES:
            problems += _limit_problems(key, value, label=key)
    return problems


def _limit_problems(key: str, value: Any, *, label: str) -> list[str]:
    figure = FIGURES[key]
    if figure.flag:
        return [] if value is False else [f"The threshold {label} can only be false."]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return [f"The threshold {label} must be a number of at least 0."]
    if figure.whole and (not float(value).is_integer() or value < 1):
        return [f"The threshold {label} must be a whole number of users, at least 1."]
    if key == "failure_rate" and value > 1:
        return [f"The threshold {label} is a rate between 0 and 1 (0.01 is 1 %)."]
    return []


def _line(key: str, label: str, measured: Measured, limit: float) -> VerdictLine:
    line: VerdictLine = {
        "check": label,
        "limit": limit,
        "value": measured.value,
        "passed": meets(key, measured, limit),
    }
    if measured.low is not None and measured.high is not None:
        line["low"], line["high"] = measured.low, measured.high
    if measured.note:
        line["note"] = measured.note
    return line


def judge(
    thresholds: Mapping[str, Any],
    *,
    summary: Mapping[str, Any],
    endpoints: Mapping[str, EndpointFigures],
) -> list[VerdictLine]:
    """One line per threshold: what was measured against what, and whether it passed. A
    threshold on something the run did not measure fails rather than passes."""
    lines = []
    # The run-wide figures are the summary's (Locust's Aggregated row, as recorded).
    total = None
    for key, limit in thresholds.items():
        if key in FIGURES:
            measured = measure(key, summary=summary, endpoint=total)
            lines.append(_line(key, key, measured, False if FIGURES[key].flag else limit))
    for name, limits in (thresholds.get("endpoints") or {}).items():
        for key, limit in limits.items():
            measured = measure_endpoint(key, summary=summary, endpoints=endpoints, name=name)
            lines.append(_line(key, f"{name} {key}", measured, limit))
    return lines
