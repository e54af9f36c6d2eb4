"""What a step load's numbers mean: its steps and its breaking point (memory growth is
judged by perfruns.regression.memory).

Pure functions over plain values, so they can be checked on constructed series.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .results import AGGREGATED, HistoryRow

# A step fails when more than this share of its requests failed.
FAILURE_RATE = 0.01
# A first failure is borderline when its step failed under this many times the line...
BORDERLINE_FACTOR = 2.0
# ...or when most of its failures came in the first seconds of the step, as users spawned.
SPAWN_BURST_S = 5
# The knee: throughput per user down to this share of the first step's, or p95 up this much.
KNEE_THROUGHPUT_SHARE = 0.5
KNEE_P95_FACTOR = 2.0


@dataclass
class StepStats:
    users: int
    requests: int
    failures: int
    rps: float
    p95_ms: float | None
    seconds: float = 0.0
    # Failures in the step's first SPAWN_BURST_S seconds, while its new users spawned.
    burst_failures: int = 0

    @property
    def failure_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass
class BreakingPoint:
    first_failure_users: int | None
    knee_users: int | None
    max_sustained_rps: float | None
    # Why the first failure is barely one (it may not hold on a second run); "" when clear.
    borderline: str = ""


def steps_from_history(rows: Iterable[HistoryRow]) -> list[StepStats]:
    """The Aggregated history rows grouped by user count, in order of first appearance.

    The history's counts are cumulative: the requests and seconds between two rows belong to
    the user count of the later row. A step's rate is its requests over its seconds, and its
    p95 the last one seen during it (Locust's sliding window of about 10 s). Rows with 0
    users (before the start, after the stop) make no step.
    """
    order: list[int] = []
    requests: dict[int, int] = {}
    failures: dict[int, int] = {}
    seconds: dict[int, float] = {}
    p95: dict[int, float | None] = {}
    started: dict[int, int] = {}
    burst: dict[int, int] = {}
    previous: HistoryRow | None = None
    for row in rows:
        if row.name != AGGREGATED or row.method:
            continue
        if previous is None:
            previous = row
            continue
        new_requests = row.requests - previous.requests
        new_failures = row.failures - previous.failures
        if new_requests < 0:  # the stats were reset: the counts start again
            new_requests, new_failures = row.requests, row.failures
        elapsed = max(row.timestamp - previous.timestamp, 0)
        previous_timestamp = previous.timestamp
        previous = row
        if row.users <= 0:
            continue
        if row.users not in requests:
            order.append(row.users)
            requests[row.users] = failures[row.users] = burst[row.users] = 0
            seconds[row.users] = 0.0
            p95[row.users] = None
            started[row.users] = previous_timestamp
        requests[row.users] += new_requests
        failures[row.users] += max(new_failures, 0)
        if row.timestamp - started[row.users] <= SPAWN_BURST_S:
            burst[row.users] += max(new_failures, 0)
        seconds[row.users] += elapsed
        if row.p95_ms is not None:
            p95[row.users] = row.p95_ms
    return [
        StepStats(
            users=users,
            requests=requests[users],
            failures=failures[users],
            rps=requests[users] / seconds[users] if seconds[users] else 0.0,
            p95_ms=p95[users],
            seconds=seconds[users],
            burst_failures=burst[users],
        )
        for users in order
    ]


def _failed(step: StepStats) -> bool:
    if step.failures <= 0:
        return False
    return step.requests <= 0 or step.failures / step.requests > FAILURE_RATE


def breaking_point(steps: list[StepStats]) -> BreakingPoint:
    """Where a step load broke.

    first_failure_users  the users of the first step with more than 1 % failed requests
    knee_users           the users of the first step after the first one whose throughput
                         per user fell to half the first step's, or whose p95 doubled
    max_sustained_rps    the highest rate among the steps before the first failing one
    """
    first_failure = next((i for i, step in enumerate(steps) if _failed(step)), None)
    sustained = steps if first_failure is None else steps[:first_failure]

    knee = None
    if steps:
        base = steps[0]
        base_per_user = base.rps / base.users if base.users > 0 else 0.0
        for step in steps[1:]:
            per_user = step.rps / step.users if step.users > 0 else 0.0
            slower = base_per_user > 0 and per_user <= KNEE_THROUGHPUT_SHARE * base_per_user
            later = (
                base.p95_ms is not None
                and base.p95_ms > 0
                and step.p95_ms is not None
                and step.p95_ms >= KNEE_P95_FACTOR * base.p95_ms
            )
            if slower or later:
                knee = step.users
                break

    return BreakingPoint(
        first_failure_users=steps[first_failure].users if first_failure is not None else None,
        knee_users=knee,
        max_sustained_rps=max(step.rps for step in sustained) if sustained else None,
        borderline=_borderline(steps[first_failure]) if first_failure is not None else "",
    )


def _borderline(step: StepStats) -> str:
    """Why a step's failures barely make it the breaking point, or "" when they do not."""
    reasons = []
    if step.failure_rate < BORDERLINE_FACTOR * FAILURE_RATE:
        reasons.append(
            f"{100 * step.failure_rate:.2f} % of its requests failed, barely past the "
            f"{100 * FAILURE_RATE:g} % line"
        )
    if step.failures and step.burst_failures * 2 >= step.failures:
        reasons.append(
            f"{step.burst_failures} of its {step.failures} failures came in its first "
            f"{SPAWN_BURST_S} s, as its users spawned"
        )
    return "; ".join(reasons)
