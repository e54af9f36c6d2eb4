"""Is a load test's candidate run worse than its baseline, and when did a series change?

Pure library code over plain values, no models: per-endpoint and per-metric verdicts with
their uncertainty and the validity gates of a comparison (verdicts), the robust growth of a
process's memory and its leaks (memory), and change points in a scenario's series of runs
(changepoint).
"""

from .changepoint import Segment, change_points, segment_summary
from .memory import MemoryFit, fit_memory, steady_start
from .verdicts import (
    FLOOR_SETTINGS,
    MEMORY_METRICS,
    MEMORY_PER_REQUEST,
    MEMORY_SLOPE,
    EndpointSeries,
    Floors,
    MetricVerdict,
    RunFacts,
    Validity,
    benjamini_hochberg,
    check_validity,
    compare_endpoints,
    decide,
    failure_verdict,
    floor_for,
    latency_verdict,
    ram_verdict,
    rps_verdict,
    se_of_interval,
    slope_verdict,
)

__all__ = [
    "FLOOR_SETTINGS",
    "MEMORY_METRICS",
    "MEMORY_PER_REQUEST",
    "MEMORY_SLOPE",
    "EndpointSeries",
    "Floors",
    "MemoryFit",
    "MetricVerdict",
    "RunFacts",
    "Segment",
    "Validity",
    "benjamini_hochberg",
    "change_points",
    "check_validity",
    "compare_endpoints",
    "decide",
    "failure_verdict",
    "fit_memory",
    "floor_for",
    "latency_verdict",
    "ram_verdict",
    "rps_verdict",
    "segment_summary",
    "se_of_interval",
    "slope_verdict",
    "steady_start",
]
