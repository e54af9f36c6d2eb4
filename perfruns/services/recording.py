"""What a run measured, into its rows: Locust's files streamed into EndpointStat, Sample
and FailureGroup rows (bounded memory: never a whole file at once), the memory series into
samples, peaks and slopes, and the run's folder into its downloadable artifacts."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from django.db import transaction

from perfruns.loadtest import (
    HistoryRow,
    breaking_point,
    group_failures,
    iter_history,
    load_generator_saturated,
    read_failures,
    read_final,
    steps_from_history,
)
from perfruns.loadtest.failures import CONNECTION_LIMIT_CAUSES
from perfruns.models import (
    Artifact,
    EndpointSample,
    EndpointStat,
    FailureGroup,
    PerfRun,
    Sample,
)
from perfruns.payloads import RunSummary, SlopeFigures
from perfruns.pipeline.dbstats import connection_limit
from perfruns.pipeline.execution import LoadFigures
from perfruns.regression import Floors, fit_memory, steady_start

BATCH = 1000
# Causes kept on the run's summary: past these, the rarest are left to the failure groups.
CAUSES_KEPT = 50
MIB = 1024 * 1024
_ARTIFACT_TYPES = {
    ".html": "text/html",
    ".csv": "text/csv",
    ".json": "application/json",
    ".log": "text/plain",
    ".py": "text/x-python",
}


def run_record(*, run: PerfRun, load: LoadFigures) -> None:
    """Stream what the load measured into the run's rows — its endpoints, failures and
    per-second samples — and its summary: totals, memory peaks and slopes, the breaking
    point, and whether the load generator was saturated (the figures are then invalid).
    Rows a retry of the run left are replaced."""
    plan, memory_file = load.plan, load.memory_file
    summary: RunSummary = {"sampler": load.sampler}
    with transaction.atomic():
        EndpointStat.objects.filter(run=run).delete()
        FailureGroup.objects.filter(run=run).delete()
        Sample.objects.filter(run=run).delete()
        EndpointSample.objects.filter(run=run).delete()
        if plan.json_file.exists():
            results = read_final(plan.json_file)
            EndpointStat.objects.bulk_create(
                EndpointStat(
                    run=run,
                    method=r.method,
                    name=r.name,
                    requests=r.requests,
                    failures=r.failures,
                    avg_ms=r.avg_ms,
                    min_ms=r.min_ms,
                    max_ms=r.max_ms,
                    percentiles=r.percentiles,
                    rps=r.rps,
                )
                for r in results
            )
            total = next((r for r in results if r.name == "Aggregated" and not r.method), None)
            if total is not None:
                summary["requests"] = total.requests
                summary["failures"] = total.failures
                summary["failure_rate"] = total.failure_rate
                summary["rps"] = total.rps
                summary["avg_ms"] = total.avg_ms
                summary["p50_ms"] = total.percentiles.get("50")
                summary["p95_ms"] = total.percentiles.get("95")
                summary["p99_ms"] = total.percentiles.get("99")
        causes = []
        if plan.failures_file.exists():
            groups = read_failures(plan.failures_file)
            FailureGroup.objects.bulk_create(
                FailureGroup(
                    run=run,
                    method=f.method,
                    name=f.name,
                    error=f.error[:2000],
                    occurrences=f.occurrences,
                )
                for f in groups
            )
            causes = group_failures(groups)
            summary["failure_causes"] = [
                {
                    "cause": c.cause,
                    "occurrences": c.occurrences,
                    "endpoints": c.endpoints,
                    "example": c.example,
                }
                for c in causes[:CAUSES_KEPT]
            ]
        steps = []
        served: list[tuple[float, float]] = []
        if plan.history_file.exists():
            _samples_insert(
                _load_samples(run, iter_history(plan.history_file), load.started),
            )
            served = _requests_served(iter_history(plan.history_file), load.started)
            _endpoint_samples_insert(
                _endpoint_samples(run, iter_history(plan.history_file), load.started)
            )
            if run.settings.get("shape") == "steps":
                steps = steps_from_history(
                    r for r in iter_history(plan.history_file) if r.name == "Aggregated"
                )
        peaks, series = _memory(memory_file)
        _samples_insert(_memory_samples(run, memory_file))
        summary.update(peaks)
        fits = memory_fits(run.settings, series, served)
        if "db" in fits:
            summary["db_slope"] = fits["db"]
        if "target" in fits:
            summary["target_slope"] = fits["target"]
        if steps:
            point = breaking_point(steps)
            summary["breaking_point"] = {
                "first_failure_users": point.first_failure_users,
                "knee_users": point.knee_users,
                "max_sustained_rps": point.max_sustained_rps,
                "borderline": point.borderline,
            }
            summary["steps"] = [
                {
                    "users": step.users,
                    "requests": step.requests,
                    "failures": step.failures,
                    "failure_rate": step.failure_rate,
                    "rps": step.rps,
                    "p95_ms": step.p95_ms,
                    "burst_failures": step.burst_failures,
                }
                for step in steps
            ]
        invalid = ""
        if plan.log_file.exists() and load_generator_saturated(plan.log_file):
            invalid = (
                "Locust's CPU was saturated during the load: the figures understate "
                "what the target can do and must not be compared."
            )
        database = load.database
        if database.get("connections"):
            too_many = any(cause.cause in CONNECTION_LIMIT_CAUSES for cause in causes)
            database["connections"].update(
                connection_limit(database["connections"], too_many_clients=too_many)
            )
        PerfRun.objects.filter(pk=run.pk).update(
            summary=summary, database=database, invalid_reason=invalid
        )
    run_artifacts_record(run=run)


def run_live_record(*, run_id: int, points: list[dict[str, Any]]) -> None:
    """Samples measured while the load runs, for the run page's live figures (run_record
    replaces them with the whole series once the load is over)."""
    fields = {f.name for f in Sample._meta.concrete_fields} - {"id", "run"}
    rows = [
        Sample(run_id=run_id, **{k: v for k, v in point.items() if k in fields}) for point in points
    ]
    if rows:
        Sample.objects.bulk_create(rows)


def run_live_figures(*, run: PerfRun) -> dict[str, Any] | None:
    """The latest figures of a run under way, from its latest samples: Locust's (users,
    req/s, failures/s, p95) and the memory sampler's (DB RAM, the target's memory)."""
    locust = (
        Sample.objects.filter(run=run, users__isnull=False)
        .order_by("-t", "-id")
        .values("t", "users", "rps", "failures_per_s", "p95_ms")
        .first()
    )
    memory = (
        Sample.objects.filter(run=run, db_pss__isnull=False)
        .order_by("-t", "-id")
        .values("t", "db_pss")
        .first()
    )
    if locust is None and memory is None:
        return None
    return {**(memory or {}), **(locust or {})}


def memory_fits(
    settings: dict[str, Any],
    series: dict[str, list[tuple[float, float]]],
    served: list[tuple[float, float]],
) -> dict[str, SlopeFigures]:
    """Per process ("db", "target"): the robust fit of its memory over the run's steady
    phase — after the ramp (every user started) and the scenario's warm-up — per minute and
    per request served, and whether it is a probable leak (regression.memory)."""
    floors = Floors.from_settings(settings.get("floors"))
    users, rate = settings.get("users") or 0, settings.get("spawn_rate") or 0
    ramp = users / rate if rate > 0 else 0.0
    fits: dict[str, SlopeFigures] = {}
    for label, points in series.items():
        if not points:
            continue
        start = steady_start(
            ramp_s=ramp, end_s=max(t for t, _ in points), warmup_s=settings.get("warmup_s")
        )
        fit = fit_memory(points, start_s=start, requests=served, leak_floor=floors.leak_per_min)
        if fit is not None:
            fits[label] = cast(SlopeFigures, fit.as_json())
    return fits


def _requests_served(rows: Iterable[HistoryRow], load_started: float) -> list[tuple[float, float]]:
    """(seconds since the load started, requests served so far) of the Aggregated rows."""
    return [
        (max(0.0, row.timestamp - load_started), float(row.requests))
        for row in rows
        if row.name == "Aggregated" and not row.method
    ]


def _load_samples(
    run: PerfRun, rows: Iterable[HistoryRow], load_started: float
) -> Iterator[Sample]:
    for row in rows:
        if row.name != "Aggregated":
            continue
        yield Sample(
            run=run,
            t=max(0.0, row.timestamp - load_started),
            users=row.users,
            rps=row.rps,
            failures_per_s=row.failures_per_s,
            p50_ms=row.p50_ms,
            p95_ms=row.p95_ms,
        )


def _memory_samples(run: PerfRun, memory_file: Path) -> Iterator[Sample]:
    with memory_file.open(newline="") as handle:
        for row in csv.DictReader(handle):
            t = float(row["t"])
            if row["label"] == "db":
                yield Sample(
                    run=run,
                    t=t,
                    db_pss=int(row["pss"]),
                    db_pss_anon=int(row["pss_anon"]),
                    db_pss_shared=int(row["pss_shared"]),
                    db_cgroup=int(row["cgroup"]) if row["cgroup"] else None,
                )
            elif row["label"] == "target":
                yield Sample(
                    run=run,
                    t=t,
                    target_rss=int(row["rss"]),
                    target_pss=int(row["pss"]),
                    target_processes=_processes(row),
                )


def _processes(row: dict[str, str]) -> int | None:
    """The process count of a memory.csv row (files from before it was written: None)."""
    value = row.get("processes")
    return int(value) if value else None


def _endpoint_samples(
    run: PerfRun, rows: Iterable[HistoryRow], load_started: float
) -> Iterator[EndpointSample]:
    for row in rows:
        if row.name == "Aggregated" and not row.method:
            continue
        yield EndpointSample(
            run=run,
            t=max(0.0, row.timestamp - load_started),
            method=row.method,
            name=row.name[:500],
            p95_ms=row.p95_ms,
            rps=row.rps,
        )


def _endpoint_samples_insert(rows: Iterable[EndpointSample]) -> None:
    batch: list[EndpointSample] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            EndpointSample.objects.bulk_create(batch)
            batch = []
    if batch:
        EndpointSample.objects.bulk_create(batch)


def _memory(memory_file: Path) -> tuple[RunSummary, dict[str, list[tuple[float, float]]]]:
    """Peaks, and the (t, bytes) series the slopes are fitted on (one point a second:
    an hour is 3,600 pairs per series)."""
    peaks: RunSummary = {}
    series: dict[str, list[tuple[float, float]]] = {"db": [], "target": []}
    with memory_file.open(newline="") as handle:
        for row in csv.DictReader(handle):
            t = float(row["t"])
            if row["label"] == "db":
                pss = int(row["pss"])
                if pss > peaks.get("db_ram_peak", -1):
                    peaks["db_ram_peak"] = pss
                    peaks["db_ram_peak_anon"] = int(row["pss_anon"])
                series["db"].append((t, pss))
                if row["cgroup"]:
                    cgroup = int(row["cgroup"])
                    peaks["db_cgroup_peak"] = max(peaks.get("db_cgroup_peak", 0), cgroup)
            elif row["label"] == "target":
                rss, pss, processes = int(row["rss"]), int(row["pss"]), _processes(row)
                peaks["target_rss_peak"] = max(peaks.get("target_rss_peak", 0), rss)
                peaks["target_pss_peak"] = max(peaks.get("target_pss_peak", 0), pss)
                # The last sample with a process left: the tree as the load ended.
                if processes != 0:
                    peaks["target_rss_last"] = rss
                    peaks["target_pss_last"] = pss
                if processes is not None:
                    peaks["target_processes_peak"] = max(
                        peaks.get("target_processes_peak", 0), processes
                    )
                    if processes:
                        peaks["target_processes_last"] = processes
                series["target"].append((t, rss))
    return peaks, {k: v for k, v in series.items() if v}


def run_artifacts_record(*, run: PerfRun) -> None:
    """The files of the run's folder that a person may download, listed as its artifacts."""
    workdir = Path(run.artifacts_dir) if run.artifacts_dir else None
    if workdir is None or not workdir.is_dir():
        return
    rows = []
    for path in sorted(workdir.iterdir()):
        content_type = _ARTIFACT_TYPES.get(path.suffix)
        if not path.is_file() or content_type is None:
            continue
        rows.append(
            Artifact(
                run=run,
                name=path.name,
                path=str(path),
                size_bytes=path.stat().st_size,
                content_type=content_type,
            )
        )
    with transaction.atomic():
        Artifact.objects.filter(run=run).delete()
        Artifact.objects.bulk_create(rows)


def _samples_insert(rows: Iterable[Sample]) -> None:
    """Insert in batches: an hour of samples never sits in memory at once."""
    batch: list[Sample] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            Sample.objects.bulk_create(batch)
            batch = []
    if batch:
        Sample.objects.bulk_create(batch)
