"""Is a load test's candidate run worse than its baseline, and when did a series change?

Pure library code over plain values, no models: per-endpoint and per-metric verdicts with
their uncertainty and the validity gates of a comparison (verdicts), and change points in a
scenario's series of runs (changepoint).
"""

from .changepoint import Segment, change_points, segment_summary
from .verdicts import (
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
    slope_and_se,
    slope_verdict,
)

__all__ = [
    "EndpointSeries",
    "Floors",
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
    "floor_for",
    "latency_verdict",
    "ram_verdict",
    "rps_verdict",
    "segment_summary",
    "slope_and_se",
    "slope_verdict",
]
