"""One perf run, end to end (DESIGN.md pipeline steps 3-9), for services.perfrun_run.

    prepare    the locustfile (its sha256 recorded, Locust must be able to load it)
    restore    the latest snapshot, when the scenario asks for it
    clone      the environment's restored database, for this run only
    target     the start command with the clone's DATABASE_URL, then its health URL
    load       Locust as subprocesses, the database's and target's memory sampled,
               pg_stat_activity polled, pg_stat_database/statements before and after
    record     streamed from Locust's files into EndpointStat, Sample, FailureGroup
    judge      the scenario's thresholds
    clean up   always: target and Locust stopped, the clone dropped, the cluster stopped

The run row says the stage and progress as it goes; a failure says which step and why,
and keeps what was measured up to it.
"""

from __future__ import annotations

import csv
import logging
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .models import (
    Artifact,
    EndpointStat,
    FailureGroup,
    PerfRun,
    RestoreStatus,
    RunStatus,
    Sample,
)
from .pipeline.perfrun import (
    RunCancelled,
    RunStepError,
    Target,
    database_stats,
    measured_load,
    memory_roots,
    port_in_use,
    record_spawn,
    reset_statements,
    stats_delta,
    top_statements,
)

log = logging.getLogger(__name__)

BATCH = 1000
MIB = 1024 * 1024
# A memory slope is flagged as a probable leak from this many bytes per minute.
LEAK_PER_MINUTE = 5 * MIB
_ARTIFACT_TYPES = {
    ".html": "text/html",
    ".csv": "text/csv",
    ".json": "application/json",
    ".log": "text/plain",
    ".py": "text/x-python",
}


def locust_binary() -> str:
    beside = Path(sys.executable).parent / "locust"
    if beside.exists():
        return str(beside)
    found = shutil.which("locust")
    if found is None:
        raise RunStepError("preparing", "Locust is not installed (pip install locust)")
    return found


def _uri(conninfo: str) -> str:
    """The DATABASE_URL of a libpq conninfo (the target reads a URL)."""
    params = conninfo_to_dict(conninfo)
    user = quote(params.get("user", ""), safe="")
    password = params.get("password")
    auth = user + (f":{quote(password, safe='')}" if password else "")
    host = params.get("host", "127.0.0.1")
    if host.startswith("/"):
        netloc = f"{auth}@" if auth else ""
        return (
            f"postgresql://{netloc}/{quote(params.get('dbname', ''))}?host={quote(host, safe='')}"
            + (f"&port={params['port']}" if params.get("port") else "")
        )
    port = f":{params['port']}" if params.get("port") else ""
    netloc = f"{auth}@{host}{port}" if auth else f"{host}{port}"
    return f"postgresql://{netloc}/{quote(params.get('dbname', ''), safe='')}"


def _with_dbname(conninfo: str, dbname: str) -> str:
    params = conninfo_to_dict(conninfo)
    params["dbname"] = dbname
    return make_conninfo("", **params)


class RunExecution:
    def __init__(self, run: PerfRun) -> None:
        self.run = run
        self.scenario = run.scenario
        self.environment = run.environment
        self.workdir = Path(settings.FIXPROOF_DATA_DIR) / "runs" / f"run-{run.pk}"
        self.deadline = time.monotonic() + settings.PIPELINE_TIMEOUT
        self.stage = "starting"
        self._last_cancel_check = 0.0
        self._cancelled = False
        self.cancelled_during = ""
        self.pid_file = self.workdir / "pids"

    # -- the run row ------------------------------------------------------------------

    def _update(self, **fields: Any) -> None:
        PerfRun.objects.filter(pk=self.run.pk).update(**fields)

    def _set_stage(self, stage: str, progress: int) -> None:
        self.stage = stage
        self._update(stage=stage, progress=progress)

    def _is_cancelled(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= 1:
            self._last_cancel_check = now
            self._cancelled = PerfRun.objects.filter(pk=self.run.pk, cancel_requested=True).exists()
            if self._cancelled:
                self.cancelled_during = self.stage
        return self._cancelled

    def _finish(self, status: str, *, error: str = "", **fields: Any) -> None:
        self._update(status=status, error=error, finished_at=timezone.now(), stage="", **fields)

    # -- steps ------------------------------------------------------------------------

    def _locustfile(self) -> Path:
        from .loadtest import check_locustfile, file_sha256

        scenario = self.scenario
        if scenario.locustfile_text:
            path = self.workdir / "locustfile.py"
            path.write_text(scenario.locustfile_text)
        else:
            path = Path(scenario.locustfile_path)
            if not path.is_absolute():
                path = Path(settings.BASE_DIR) / path
            if not path.is_file():
                raise RunStepError("preparing", f"the locustfile {path} does not exist")
        self._update(locustfile_sha256=file_sha256(path))
        problem = check_locustfile(locust_binary(), path)
        if problem:
            raise RunStepError("preparing", f"the locustfile cannot be loaded: {problem}")
        return path

    def _restore(self) -> None:
        from . import services

        try:
            restore = services.restore_request(
                environment=self.environment, snapshot=None, actor=None
            )
        except services.PipelineRefused as exc:
            raise RunStepError("restoring", str(exc)) from None
        restore = services.restore_run(restore_id=restore.pk)
        if restore.status != RestoreStatus.DONE:
            raise RunStepError("restoring", restore.error or "the restore failed")
        self.environment.refresh_from_db()

    def execute(self) -> None:
        from .loadtest import locust_plan
        from .pipeline.environment import admin_connection_info, read_settings
        from .pipeline.restore import clone_database, database_exists, drop_database
        from .services import _describe, scenario_shape, versioned

        run, scenario, environment = self.run, self.scenario, self.environment
        # A folder of the same name may be left by an older database's run #N: its files
        # must not be taken for this run's.
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        shape = scenario_shape(scenario)
        self._update(
            artifacts_dir=str(self.workdir),
            snapshot=environment.current_snapshot,
            settings={
                "target_url": scenario.target_url,
                "shape": scenario.shape,
                "users": scenario.users,
                "spawn_rate": scenario.spawn_rate,
                "duration_s": scenario.duration_s,
                "step_start": scenario.step_start,
                "step_size": scenario.step_size,
                "step_duration_s": scenario.step_duration_s,
                "step_max": scenario.step_max,
                "arrival_rps": scenario.arrival_rps,
                "workers": scenario.workers,
                "thresholds": scenario.thresholds,
                "restore_first": scenario.restore_first,
                # Names only: the values may be secrets.
                "start_env": sorted(scenario.start_env),
            },
        )
        target: Target | None = None
        try:
            self._set_stage("preparing", 2)
            locustfile = self._locustfile()
            if scenario.restore_first:
                self._set_stage("restoring", 5)
                self._restore()
                self._update(snapshot=self.environment.current_snapshot)
            self._set_stage("starting the database", 10)
            with admin_connection_info(self.environment) as (admin, _port):
                clone = run.database_name
                try:
                    self._set_stage("cloning the database", 12)
                    if not database_exists(admin, self.environment.database_name):
                        raise RunStepError(
                            "cloning the database",
                            f"the review environment {self.environment.name} has no restored "
                            "database yet: restore a snapshot into it first",
                        )
                    drop_database(admin, clone)  # a retry of this run left one
                    clone_database(admin, template=self.environment.database_name, name=clone)
                    conninfo = _with_dbname(admin, clone)
                    self._update(environment_settings=read_settings(conninfo))
                    if self._is_cancelled():
                        raise RunCancelled()
                    if scenario.start_command:
                        self._set_stage("starting the target", 15)
                        if port_in_use(scenario.target_url):
                            # Its health URL would answer for the target: the run would
                            # measure another program.
                            raise RunStepError(
                                "starting the target",
                                f"something already listens at {scenario.target_url}; stop it "
                                "or give the scenario another port",
                            )
                        target = Target(
                            command=versioned(scenario.start_command, run.version),
                            env={
                                **{
                                    name: versioned(value, run.version)
                                    for name, value in scenario.start_env.items()
                                },
                                "DATABASE_URL": _uri(conninfo),
                            },
                            log_file=self.workdir / "target.log",
                            cwd=Path(settings.BASE_DIR),
                        )
                        pid = target.start()
                        record_spawn(self.pid_file, pid, target.argv0)
                    if scenario.health_url:
                        self._set_stage("waiting for the target", 18)
                        (target or _NoProcess()).wait_healthy(
                            scenario.health_url,
                            timeout=scenario.health_timeout_s,
                            cancelled=self._is_cancelled,
                        )
                    self._set_stage("load", 20)
                    plan = locust_plan(
                        locust=locust_binary(),
                        locustfile=locustfile,
                        host=scenario.target_url,
                        shape=shape,
                        workdir=self.workdir,
                        workers=scenario.workers,
                    )
                    self._load_and_record(plan, conninfo, target)
                finally:
                    if target is not None:
                        target.stop()
                    # Locust is stopped by run_load whatever happens: nothing left to reap.
                    self.pid_file.unlink(missing_ok=True)
                    try:
                        drop_database(admin, clone)
                    except Exception as exc:  # the janitor drops it later
                        log.warning("run %s: could not drop %s: %s", run.pk, clone, exc)
        except RunCancelled:
            self._record_artifacts()
            self._finish(
                RunStatus.CANCELLED,
                error=f"Cancelled during the {self.cancelled_during or self.stage} step.",
            )
        except RunStepError as exc:
            self._record_artifacts()
            self._finish(RunStatus.ERROR, error=str(exc))
            self._notify_error(str(exc))
        except Exception as exc:
            log.exception("run %s failed during %s", run.pk, self.stage)
            self._record_artifacts()
            self._finish(RunStatus.ERROR, error=f"{self.stage}: {_describe(exc)}")
            self._notify_error(f"{self.stage}: {_describe(exc)}")

    def _load_and_record(self, plan: Any, conninfo: str, target: Target | None) -> None:
        reset_statements(conninfo)
        before = database_stats(conninfo)
        memory_file = self.workdir / "memory.csv"
        load = measured_load(
            [plan.master, *plan.workers],
            conninfo=conninfo,
            roots=memory_roots(conninfo, target),
            memory_file=memory_file,
            cwd=self.workdir,
            log_file=self.workdir / "locust-console.log",
            deadline=self.deadline,
            expected_s=plan.expected_duration_s,
            target=target,
            cancelled=self._is_cancelled,
            progress=lambda f: self._update(progress=20 + int(70 * f)),
            on_spawn=lambda pid, argv0: record_spawn(self.pid_file, pid, argv0),
        )
        outcome = load.outcome
        sampler_figures = {
            "achieved_interval_s": load.sampler.achieved_interval,
            "cpu_fraction": load.sampler.cpu_fraction,
        }
        after = database_stats(conninfo)
        database = {
            "before": before,
            "after": after,
            "delta": stats_delta(before, after),
            "connections": load.connections,
            "top_statements": top_statements(conninfo),
        }
        self._set_stage("recording", 92)
        self._record(plan, load.started, memory_file, database, sampler_figures)
        if outcome.cancelled:
            raise RunCancelled()
        if outcome.timed_out:
            raise RunStepError(
                "load",
                f"the run's time budget ({settings.PIPELINE_TIMEOUT} s) was exceeded; "
                "the results up to then are kept",
            )
        if outcome.target_died is not None:
            how = (
                f"was killed (signal {-outcome.target_died})"
                if outcome.target_died < 0
                else f"exited with status {outcome.target_died}"
            )
            raise RunStepError("load", f"the target {how} during the load")
        if outcome.killed_by is not None:
            raise RunStepError("load", f"Locust was killed (signal {outcome.killed_by})")
        if outcome.returncode not in (0, 1):  # 1: some requests failed
            raise RunStepError("load", f"Locust exited with status {outcome.returncode}")
        if not plan.json_file.exists():
            raise RunStepError("load", "Locust wrote no results")
        self._set_stage("judging", 97)
        self._judge()

    # -- record -----------------------------------------------------------------------

    def _record(
        self,
        plan: Any,
        load_started: float,
        memory_file: Path,
        database: dict[str, Any],
        sampler: dict[str, Any],
    ) -> None:
        from .loadtest import (
            breaking_point,
            iter_history,
            load_generator_saturated,
            memory_slope,
            read_failures,
            read_final,
            steps_from_history,
        )

        run = self.run
        summary: dict[str, Any] = {"sampler": sampler}
        with transaction.atomic():
            EndpointStat.objects.filter(run=run).delete()
            FailureGroup.objects.filter(run=run).delete()
            Sample.objects.filter(run=run).delete()
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
                    summary.update(
                        requests=total.requests,
                        failures=total.failures,
                        failure_rate=total.failure_rate,
                        rps=total.rps,
                        avg_ms=total.avg_ms,
                        p50_ms=total.percentiles.get("50"),
                        p95_ms=total.percentiles.get("95"),
                        p99_ms=total.percentiles.get("99"),
                    )
            if plan.failures_file.exists():
                FailureGroup.objects.bulk_create(
                    FailureGroup(
                        run=run,
                        method=f.method,
                        name=f.name,
                        error=f.error[:2000],
                        occurrences=f.occurrences,
                    )
                    for f in read_failures(plan.failures_file)
                )
            steps = []
            if plan.history_file.exists():
                _bulk(Sample, self._load_samples(iter_history(plan.history_file), load_started))
                if self.scenario.shape == "steps":
                    steps = steps_from_history(
                        r for r in iter_history(plan.history_file) if r.name == "Aggregated"
                    )
            peaks, series = self._memory(memory_file)
            _bulk(Sample, self._memory_samples(memory_file))
            summary.update(peaks)
            ramp = self.scenario.users / max(self.scenario.spawn_rate, 0.001)
            for label, points in series.items():
                steady = [(t, v) for t, v in points if t >= ramp] or points
                slope = memory_slope(steady, min_per_minute=LEAK_PER_MINUTE)
                if slope is not None:
                    summary[f"{label}_slope"] = {
                        "per_minute": slope.per_minute,
                        "r2": slope.r2,
                        "leak": slope.leak,
                    }
            if steps:
                point = breaking_point(steps)
                summary["breaking_point"] = {
                    "first_failure_users": point.first_failure_users,
                    "knee_users": point.knee_users,
                    "max_sustained_rps": point.max_sustained_rps,
                }
            invalid = ""
            if plan.log_file.exists() and load_generator_saturated(plan.log_file):
                invalid = (
                    "Locust's CPU was saturated during the load: the figures understate "
                    "what the target can do and must not be compared."
                )
            self._update(summary=summary, database=database, invalid_reason=invalid)
        self._record_artifacts()

    def _load_samples(self, rows: Iterable[Any], load_started: float) -> Iterator[Sample]:
        for row in rows:
            if row.name != "Aggregated":
                continue
            yield Sample(
                run=self.run,
                t=max(0.0, row.timestamp - load_started),
                users=row.users,
                rps=row.rps,
                failures_per_s=row.failures_per_s,
                p50_ms=row.p50_ms,
                p95_ms=row.p95_ms,
            )

    def _memory_samples(self, memory_file: Path) -> Iterator[Sample]:
        with memory_file.open(newline="") as handle:
            for row in csv.DictReader(handle):
                t = float(row["t"])
                if row["label"] == "db":
                    yield Sample(
                        run=self.run,
                        t=t,
                        db_pss=int(row["pss"]),
                        db_pss_anon=int(row["pss_anon"]),
                        db_pss_shared=int(row["pss_shared"]),
                        db_cgroup=int(row["cgroup"]) if row["cgroup"] else None,
                    )
                elif row["label"] == "target":
                    yield Sample(run=self.run, t=t, target_rss=int(row["rss"]))

    def _memory(self, memory_file: Path) -> tuple[dict[str, Any], dict[str, list]]:
        """Peaks, and the (t, bytes) series the slopes are fitted on (one point a second:
        an hour is 3,600 pairs per series)."""
        peaks: dict[str, Any] = {}
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
                    rss = int(row["rss"])
                    peaks["target_rss_peak"] = max(peaks.get("target_rss_peak", 0), rss)
                    series["target"].append((t, rss))
        return peaks, {k: v for k, v in series.items() if v}

    def _record_artifacts(self) -> None:
        if not self.workdir.is_dir():
            return
        rows = []
        for path in sorted(self.workdir.iterdir()):
            content_type = _ARTIFACT_TYPES.get(path.suffix)
            if not path.is_file() or content_type is None:
                continue
            rows.append(
                Artifact(
                    run=self.run,
                    name=path.name,
                    path=str(path),
                    size_bytes=path.stat().st_size,
                    content_type=content_type,
                )
            )
        with transaction.atomic():
            Artifact.objects.filter(run=self.run).delete()
            Artifact.objects.bulk_create(rows)

    # -- notifications ----------------------------------------------------------------

    def _teams(self) -> list[int]:
        return list(self.run.postmortems.values_list("team_id", flat=True))

    def _notify_error(self, error: str) -> None:
        from .services import notification_enqueue

        notification_enqueue(
            kind="run_error",
            title=f"Run #{self.run.pk} of {self.scenario.name} broke",
            path=self.run.get_absolute_url(),
            figures={"error": error},
            dedupe_key=f"run_error:run={self.run.pk}",
            team_ids=self._teams(),
        )

    # -- judge ------------------------------------------------------------------------

    def _judge(self) -> None:
        from .comparison import ComparisonError, baseline_for, compare_runs

        run = PerfRun.objects.select_related("scenario__baseline_run").get(pk=self.run.pk)
        verdict = judge(run)
        regression: dict[str, Any] = {}
        # A version comparison's runs are judged against each other by the comparison,
        # and stay out of the weekly series, its baselines and the actions' proofs.
        in_series = run.version_comparison_id is None
        baseline = None if run.invalid_reason or not in_series else baseline_for(run)
        if baseline is not None:
            try:
                comparison = compare_runs(baseline=baseline, candidate=run)
            except ComparisonError as exc:
                regression = {"baseline": baseline.pk, "valid": False, "reasons": [str(exc)]}
            else:
                regression = comparison.as_json()
                # A regression fails the run like a threshold would. It is only suspected
                # (one run): the team hears of it when the series confirms it.
                for worse in comparison.worse:
                    verdict.append(
                        {
                            "check": f"{worse.endpoint} {worse.metric} vs run #{baseline.pk}",
                            "limit": worse.baseline,
                            "value": worse.candidate,
                            "passed": False,
                        }
                    )
        passed = all(line["passed"] for line in verdict)
        status = RunStatus.PASSED if passed else RunStatus.FAILED
        from .services import criteria_evaluate, regression_incidents_open

        # What follows from the outcome must not turn it into an error (the next run
        # evaluates again). The actions' verifications come before the run shows as
        # finished, so whoever sees it finished sees them too; the series needs it finished.
        run.status = status
        if not in_series:
            self._finish(status, verdict=verdict, regression=regression, progress=100)
            return
        try:
            for line in criteria_evaluate(run=run):
                log.info("run %s: %s", run.pk, line)
        except Exception:
            log.exception("run %s: evaluating the verification criteria failed", run.pk)
        self._finish(status, verdict=verdict, regression=regression, progress=100)
        try:
            for postmortem in regression_incidents_open(scenario=run.scenario):
                log.info("run %s: opened the draft post-mortem #%s", run.pk, postmortem.pk)
        except Exception:
            log.exception("run %s: looking for changes in the series failed", run.pk)


class _NoProcess(Target):
    """Health check of a target started by someone else."""

    def __init__(self) -> None:
        super().__init__(command="", env={}, log_file=Path("/dev/null"), cwd=Path("/"))


def _bulk(model: type, rows: Iterable[Any]) -> None:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            model.objects.bulk_create(batch)
            batch = []
    if batch:
        model.objects.bulk_create(batch)


def judge(run: PerfRun) -> list[dict[str, Any]]:
    """One line per threshold of the run's settings: what was measured against what."""
    thresholds = run.settings.get("thresholds") or {}
    summary = run.summary
    lines: list[dict[str, Any]] = []

    def check(label: str, value: float | None, limit: float, *, at_least: bool = False) -> None:
        if value is None:
            lines.append({"check": label, "limit": limit, "value": None, "passed": False})
            return
        passed = value >= limit if at_least else value <= limit
        lines.append({"check": label, "limit": limit, "value": value, "passed": passed})

    if "p95_ms" in thresholds:
        check("p95_ms", summary.get("p95_ms"), thresholds["p95_ms"])
    if "p99_ms" in thresholds:
        check("p99_ms", summary.get("p99_ms"), thresholds["p99_ms"])
    if "failure_rate" in thresholds:
        check("failure_rate", summary.get("failure_rate"), thresholds["failure_rate"])
    if "min_rps" in thresholds:
        check("min_rps", summary.get("rps"), thresholds["min_rps"], at_least=True)
    if "db_ram_peak_mb" in thresholds:
        peak = summary.get("db_ram_peak")
        check(
            "db_ram_peak_mb", peak / MIB if peak is not None else None, thresholds["db_ram_peak_mb"]
        )
    endpoints = {e.name: e for e in run.endpoints.all() if not e.is_aggregate}
    for name, limits in (thresholds.get("endpoints") or {}).items():
        stat = endpoints.get(name)
        for key, limit in limits.items():
            label = f"{name} {key}"
            if stat is None:
                check(label, None, limit)
            elif key == "failure_rate":
                check(label, stat.failure_rate, limit)
            else:
                check(label, stat.percentiles.get(key.removesuffix("_ms").removeprefix("p")), limit)
    return lines


def drop_run_databases(admin_conninfo: str, *, live: str, keep: Iterable[int]) -> list[str]:
    """The `<live>__run<N>` clones of runs no longer running (a killed worker's)."""
    import re

    from .pipeline.restore import drop_database, list_databases

    kept = {f"{live}__run{pk}" for pk in keep}
    dropped = []
    for name in list_databases(admin_conninfo, f"{live}__run"):
        if re.fullmatch(rf"{re.escape(live)}__run\d+", name) and name not in kept:
            drop_database(admin_conninfo, name)
            dropped.append(name)
    return dropped
