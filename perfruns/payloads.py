"""The shapes of the JSON a perf run keeps and of the events it sends, for the type checker.

A PerfRun's `summary`, `verdict`, `database` and `regression` fields, a scenario's `trend`
and a notification's event are plain JSON in the database and on the broker; these
TypedDicts say what their keys hold, for the code that writes and reads them.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class SamplerFigures(TypedDict):
    """The memory sampler's own cost: the interval it achieved, its share of a core."""

    achieved_interval_s: float | None
    cpu_fraction: float | None


class SlopeFigures(TypedDict):
    """A process's memory over the steady phase, fitted robustly (regression.memory): its
    growth per minute and per request served, each with its interval, and where the steady
    phase starts and ends (seconds since the load started)."""

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
    leak: bool


class BreakingPointFigures(TypedDict):
    first_failure_users: int | None
    knee_users: int | None
    max_sustained_rps: float | None
    # Why the first failure is barely one ("" when it is clear): it may not hold again.
    borderline: NotRequired[str]


class StepFigures(TypedDict):
    """One level of a step load: its users and what they got."""

    users: int
    requests: int
    failures: int
    failure_rate: float
    rps: float
    p95_ms: float | None
    # Failures in the level's first seconds, while its users spawned.
    burst_failures: int


class FailureCauseFigures(TypedDict):
    """One cause of failures: its occurrences over all endpoints, the endpoints it hit
    (most hit first), and one error text as Locust wrote it."""

    cause: str
    occurrences: int
    endpoints: list[str]
    example: str


class RunSummary(TypedDict, total=False):
    """PerfRun.summary: totals over the run (Locust's "Aggregated" row), memory peaks in
    bytes, memory slopes per label ("db_slope", "target_slope"), the breaking point."""

    sampler: SamplerFigures
    requests: int
    failures: int
    failure_rate: float
    rps: float
    avg_ms: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    db_ram_peak: int
    db_ram_peak_anon: int
    db_cgroup_peak: int
    target_rss_peak: int
    target_pss_peak: int
    target_rss_last: int
    target_pss_last: int
    target_processes_peak: int
    target_processes_last: int
    # Locust's failure groups summed by cause across endpoints (loadtest.failures).
    failure_causes: list[FailureCauseFigures]
    db_slope: SlopeFigures
    target_slope: SlopeFigures
    breaking_point: BreakingPointFigures
    steps: list[StepFigures]


class DatabaseFigures(TypedDict):
    """PerfRun.database: pg_stat_database before, after and their difference, peak
    connections by state, the top statements."""

    before: dict[str, Any]
    after: dict[str, Any]
    delta: dict[str, Any]
    connections: dict[str, Any]
    top_statements: list[dict[str, Any]]


class VerdictLine(TypedDict):
    """One line of PerfRun.verdict: a threshold (or a regression against the baseline)
    checked, with what was measured against its limit (false for probable_leak), the
    measured value's interval where it has one, and a note on what the value means."""

    check: str
    limit: float | bool | None
    value: float | None
    passed: bool
    low: NotRequired[float]
    high: NotRequired[float]
    note: NotRequired[str]
    # A regression against the baseline that does not fail the run: suspected only.
    suspected: NotRequired[bool]


class MetricVerdictJson(TypedDict):
    """One endpoint and metric of a comparison: the change, its interval and its verdict."""

    endpoint: str
    metric: str
    baseline: float | None
    candidate: float | None
    change: float | None
    change_rel: float | None
    low: float | None
    high: float | None
    p_value: float | None
    q_value: float | None
    verdict: str


class RegressionJson(TypedDict, total=False):
    """PerfRun.regression: the run compared with its baseline run."""

    baseline: int
    valid: bool
    reasons: list[str]
    verdicts: list[MetricVerdictJson]


class TrendChange(TypedDict):
    """A change point of a scenario's series: the run where the new level starts."""

    run: int
    before: float
    after: float
    runs_after: list[int]
    worse: bool


class TrendMetric(TypedDict):
    """Scenario.trend: one metric's series as [run id, value] points, and its changes."""

    key: str
    label: str
    points: list[list[float]]
    changes: list[TrendChange]


class NotificationEvent(TypedDict):
    """What a team's webhooks are told (perfruns.notify.Event), as it crosses the broker."""

    kind: str
    title: str
    url: str
    figures: dict[str, str]
    dedupe_key: str
