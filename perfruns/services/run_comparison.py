"""Two runs of a scenario compared — a run against its baseline, against the reference run
of a proof, or any two on the compare page: the replicates the statistics need, read from
what each run kept, and the verdicts of perfruns.regression.

Replicates are the 10-second intervals of Locust's full history (its percentiles are
over a 10 s window: one row in ten does not overlap the next), the per-second samples of
the database's PSS, and the memory series the runner wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfruns.loadtest import SPAWN_BURST_S, iter_history, steps_from_history
from perfruns.models import LOAD_SHAPE_FIELDS, PerfRun, RunStatus
from perfruns.payloads import RegressionJson
from perfruns.regression import (
    MEMORY_PER_REQUEST,
    MEMORY_SLOPE,
    EndpointSeries,
    Floors,
    MetricVerdict,
    RunFacts,
    check_validity,
    compare_endpoints,
    ram_verdict,
    se_of_interval,
    slope_verdict,
)

INTERVAL_S = 10


class ComparisonError(Exception):
    """The runs cannot be compared; the message says why, for a person."""


@dataclass
class RunComparison:
    """A candidate run against a baseline run: whether they can be compared (and why not),
    and per endpoint and metric the statistical verdict."""

    baseline: PerfRun
    candidate: PerfRun
    valid: bool
    reasons: list[str]
    verdicts: list[MetricVerdict] = field(default_factory=list)

    @property
    def worse(self) -> list[MetricVerdict]:
        return [v for v in self.verdicts if v.verdict == "worse"] if self.valid else []

    def as_json(self) -> RegressionJson:
        return {
            "baseline": self.baseline.pk,
            "valid": self.valid,
            "reasons": self.reasons,
            "verdicts": [
                {
                    "endpoint": v.endpoint,
                    "metric": v.metric,
                    "baseline": v.baseline,
                    "candidate": v.candidate,
                    "change": v.change,
                    "change_rel": v.change_rel,
                    "low": v.low,
                    "high": v.high,
                    "p_value": v.p_value,
                    "q_value": v.q_value,
                    "verdict": v.verdict,
                }
                for v in self.verdicts
            ],
        }


def same_load(a: PerfRun, b: PerfRun) -> bool:
    return all(a.settings.get(k) == b.settings.get(k) for k in LOAD_SHAPE_FIELDS)


def baseline_for(run: PerfRun) -> PerfRun | None:
    """The scenario's pinned run, else the previous valid passing run of the same load."""
    pinned = run.scenario.baseline_run
    if pinned is not None and pinned.pk != run.pk:
        return pinned
    earlier = (
        PerfRun.objects.filter(
            scenario_id=run.scenario_id,
            status=RunStatus.PASSED,
            invalid_reason="",
            version_comparison__isnull=True,
        )
        .exclude(pk=run.pk)
        .filter(created_at__lt=run.created_at)
        .order_by("-created_at", "-id")
    )
    for candidate in earlier[:20]:
        if same_load(candidate, run):
            return candidate
    return None


def _history_file(run: PerfRun) -> Path:
    path = Path(run.artifacts_dir or "/nonexistent") / "locust_stats_history.csv"
    if not path.is_file():
        raise ComparisonError(
            f"Run #{run.pk} has no Locust history any more ({path.name} is not kept): "
            "it cannot be compared."
        )
    return path


def endpoint_series(run: PerfRun) -> dict[str, EndpointSeries]:
    """Per endpoint (and Aggregated): the p50/p95/p99 and RPS of each 10-s interval.

    The intervals are counted back from each endpoint's last row (the last full window of
    the load): in every 10-s bucket the latest row stands for it, so a second Locust
    skipped writing loses no interval, and a bucket whose row is less than half a window
    past the endpoint's first loaded row (the ramp) is left out. Two streaming passes:
    never more than a row per bucket in memory.
    """
    path = _history_file(run)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for row in iter_history(path):
        if row.users > 0:
            first.setdefault(row.name, row.timestamp)
            last[row.name] = row.timestamp
    chosen: dict[str, dict[int, Any]] = {}
    for row in iter_history(path):
        if row.users <= 0 or row.timestamp < first[row.name] + INTERVAL_S // 2:
            continue
        bucket = (last[row.name] - row.timestamp) // INTERVAL_S
        buckets = chosen.setdefault(row.name, {})
        if bucket not in buckets or row.timestamp > buckets[bucket].timestamp:
            buckets[bucket] = row
    totals = {(e.name): e for e in run.endpoints.all()}
    result = {}
    for name, buckets in chosen.items():
        rows = [buckets[b] for b in sorted(buckets, reverse=True)]  # oldest first
        values: dict[str, list[float]] = {"p50": [], "p95": [], "p99": [], "rps": []}
        for before, row in zip(rows, rows[1:], strict=False):
            values["rps"].append(
                (row.requests - before.requests) / (row.timestamp - before.timestamp)
            )
        for row in rows:
            for key, value in (("p50", row.p50_ms), ("p95", row.p95_ms), ("p99", row.p99_ms)):
                if value is not None and value > 0:
                    values[key].append(value)
        stat = totals.get(name)
        result[name] = EndpointSeries(
            p50=values["p50"],
            p95=values["p95"],
            p99=values["p99"],
            requests=stat.requests if stat else 0,
            failures=stat.failures if stat else 0,
            rps=values["rps"],
        )
    return result


def level_series(run: PerfRun) -> dict[str, EndpointSeries]:
    """A step load level by level ("10 users", "20 users"...): the p50/p95/p99 of each 10-s
    window of the level once its users have spawned, counted back from its last row, and
    the level's requests and failures. Pooled over every level, a comparison would mix 10
    users with 200; level by level it asks "did this level get worse?"."""
    path = _history_file(run)
    counts = {step.users: step for step in steps_from_history(iter_history(path))}
    rows: dict[int, list[Any]] = {}
    for row in iter_history(path):
        if row.name == "Aggregated" and not row.method and row.users > 0:
            rows.setdefault(row.users, []).append(row)
    result = {}
    for users, level in rows.items():
        settled = [r for r in level if r.timestamp >= level[0].timestamp + SPAWN_BURST_S]
        chosen: dict[int, Any] = {}
        for row in settled:
            bucket = (settled[-1].timestamp - row.timestamp) // INTERVAL_S
            if bucket not in chosen or row.timestamp > chosen[bucket].timestamp:
                chosen[bucket] = row
        windows = [chosen[b] for b in sorted(chosen, reverse=True)]
        step = counts.get(users)
        result[f"{users} users"] = EndpointSeries(
            p50=[r.p50_ms for r in windows if r.p50_ms],
            p95=[r.p95_ms for r in windows if r.p95_ms],
            p99=[r.p99_ms for r in windows if r.p99_ms],
            requests=step.requests if step else 0,
            failures=step.failures if step else 0,
        )
    return result


def _ram_samples(run: PerfRun) -> list[float]:
    values = run.samples.filter(db_pss__isnull=False).order_by("t").values_list("db_pss", flat=True)
    return [float(v) for v in values if v is not None]


def growth_verdict(
    label: str, baseline: dict[str, Any] | None, candidate: dict[str, Any] | None, floors: Floors
) -> MetricVerdict | None:
    """The memory growth of a process ("db" or "target") in two runs, from the robust fits
    their recording kept: per request served when both have it (a leak that follows the
    throughput is then compared at equal work), else per minute. None when a run has no fit
    with an interval (an older run's summary)."""
    if not baseline or not candidate or "low" not in baseline or "low" not in candidate:
        return None
    if baseline.get("per_request") is not None and candidate.get("per_request") is not None:
        keys, metric = ("per_request", "per_request_low", "per_request_high"), MEMORY_PER_REQUEST
    else:
        keys, metric = ("per_minute", "low", "high"), MEMORY_SLOPE
    value, low, high = keys
    return slope_verdict(
        baseline[value],
        se_of_interval(baseline[low], baseline[high]),
        candidate[value],
        se_of_interval(candidate[low], candidate[high]),
        floors=floors,
        endpoint=label,
        metric=metric,
    )


def _facts(run: PerfRun) -> RunFacts:
    return RunFacts(
        saturated=bool(run.invalid_reason),
        shape=str(run.settings.get("shape", "")),
        arrival_rps=run.settings.get("arrival_rps") or None,
        achieved_rps=run.summary.get("rps"),
        settings={k: str(v) for k, v in run.environment_settings.items()},
    )


def compare_runs(*, baseline: PerfRun, candidate: PerfRun) -> RunComparison:
    """The candidate against the baseline, with the floors of the candidate's scenario as
    its run copied them; raises ComparisonError when a run's files are no longer kept."""
    floors = Floors.from_settings(candidate.settings.get("floors"))
    validity = check_validity(baseline=_facts(baseline), candidate=_facts(candidate))
    reasons = list(validity.reasons)
    if not same_load(baseline, candidate):
        reasons.append("The two runs did not drive the same load (shape, users or duration).")
    comparison = RunComparison(
        baseline=baseline, candidate=candidate, valid=not reasons, reasons=reasons
    )
    stepped = baseline.settings.get("shape") == candidate.settings.get("shape") == "steps"
    series = level_series if stepped else endpoint_series
    verdicts = compare_endpoints(series(baseline), series(candidate), floors=floors)
    base_ram, cand_ram = _ram_samples(baseline), _ram_samples(candidate)
    if base_ram and cand_ram:
        verdicts.append(ram_verdict(base_ram, cand_ram, floors=floors))
    for label in ("db", "target"):
        verdict = growth_verdict(
            label,
            baseline.summary.get(f"{label}_slope"),
            candidate.summary.get(f"{label}_slope"),
            floors,
        )
        if verdict is not None:
            verdicts.append(verdict)
    comparison.verdicts = verdicts
    return comparison
