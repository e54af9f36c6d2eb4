"""A perf run end to end (DESIGN.md's pipeline), in one direction:

    request    a queued row (one active run per review environment, held by the database)
    claim      queued -> running by one conditional UPDATE: a redelivered message does nothing
    prepare    the locustfile (its sha256 recorded; Locust must be able to load it)
    restore    the latest snapshot, when the scenario asks for it
    measure    perfruns.pipeline.execution: clone, target, load — returns what it measured
    record     services.recording: Locust's files and the memory series into the run's rows
    judge      services.judging: thresholds and the baseline; then the actions' proofs
               (services.proofs), the run finished, the weekly series (services.trends)

The run row says the stage and progress as it goes. A failure says which step and why,
keeps what was measured up to it, and tells the teams of the incidents the run is about.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from perfruns.models import (
    LOAD_SHAPE_FIELDS,
    Job,
    PerfRun,
    RestoreStatus,
    RunStatus,
    RunTrigger,
    Scenario,
    VersionComparison,
)
from perfruns.pipeline.execution import (
    RunHooks,
    RunMeasurement,
    RunSpec,
    execute_run,
    prepare_locustfile,
)
from perfruns.pipeline.target import RunStepError

from .common import PipelineRefused, describe, runs_root
from .environments import admin_connection
from .janitor import janitor_sweep
from .jobs import (
    job_cancel,
    job_cancel_requested,
    job_claim,
    job_finish,
    job_heartbeat,
    job_stage,
    job_update,
)
from .judging import run_judge
from .notifications import notification_enqueue
from .proofs import criteria_evaluate
from .queue import PERFRUN_EXECUTE, enqueue_on_commit
from .recording import run_artifacts_record, run_live_record, run_record
from .restores import restore_request, restore_run
from .scenarios import check_version, scenario_shape, versioned
from .trends import regression_incidents_open

log = logging.getLogger(__name__)


def perfrun_request(
    *,
    scenario: Scenario,
    trigger: str,
    actor: User | None,
    version_comparison: VersionComparison | None = None,
    role: str = "",
    version: str | None = None,
) -> PerfRun:
    """Queue a run of the scenario; refused while its environment has one under way.

    A run of a version comparison starts the target at that comparison's version for its
    role; any other run at the `version` asked for, else the scenario's default one."""
    if version_comparison is not None:
        version = version_comparison.version_of(role)
    elif version:
        if not scenario.takes_version:
            raise PipelineRefused(
                f"The target start command of {scenario.name} does not take a version: put "
                "{version} where the version goes (in the command or its environment)."
            )
        check_version(version)
    else:
        version = scenario.default_version if scenario.takes_version else ""
    try:
        with transaction.atomic():
            run = PerfRun.objects.create(
                scenario=scenario,
                environment=scenario.environment,
                trigger=trigger,
                created_by=actor,
                version=version,
                version_comparison=version_comparison,
                role=role,
            )
            if version_comparison is None:
                # Evidence of the incidents and actions the scenario is about; a version
                # under comparison is evidence of nothing yet.
                run.postmortems.set(scenario.postmortems.all())
                run.actions.set(scenario.actions.all())
    except IntegrityError:
        active = PerfRun.objects.filter(
            environment=scenario.environment, status__in=Job.ACTIVE
        ).first()
        raise PipelineRefused(
            f"A run on the review environment {scenario.environment.name} is already "
            f"queued or running" + (f" (run #{active.pk})." if active else ".")
        ) from None
    return run


def perfrun_enqueue(run: PerfRun) -> None:
    enqueue_on_commit(PERFRUN_EXECUTE, run.pk)


def perfrun_claim(*, run_id: int) -> bool:
    """queued -> running, once: a redelivered message claims nothing."""
    return job_claim(PerfRun, pk=run_id, progress=0)


def perfrun_cancel(*, run: PerfRun) -> bool:
    """Ask a run to stop: a queued one is cancelled now, a running one at its next check
    (or now, when its worker is gone and nothing would check)."""
    return job_cancel(PerfRun, pk=run.pk)


def perfrun_schedule_fire(*, scenario_id: int) -> PerfRun | None:
    """The weekly run: queued like "Run now"; skipped (and logged) while one is under way."""
    scenario = Scenario.objects.filter(pk=scenario_id).select_related("environment").first()
    if scenario is None:
        log.warning("scheduled run: scenario #%s no longer exists", scenario_id)
        return None
    try:
        with transaction.atomic():
            run = perfrun_request(scenario=scenario, trigger=RunTrigger.SCHEDULE, actor=None)
            perfrun_enqueue(run)
    except PipelineRefused as exc:
        log.warning("scheduled run of %s skipped: %s", scenario.name, exc)
        return None
    return run


def perfrun_run(*, run_id: int) -> PerfRun:
    """Execute a claimed run end to end; always records an outcome and cleans up."""
    janitor_sweep()
    if not perfrun_claim(run_id=run_id):
        return PerfRun.objects.get(pk=run_id)
    run = PerfRun.objects.select_related("scenario", "environment").get(pk=run_id)
    with job_heartbeat(PerfRun, pk=run.pk):
        _execute(run)
    run.refresh_from_db()
    return run


def _execute(run: PerfRun) -> None:
    """Measure, record, judge; always end the run with an outcome."""
    progress = _Progress(run.pk)
    try:
        measurement = _measure(run, progress)
        if measurement.environment_settings is not None:
            # What the server ran with: the baseline comparison checks it is the same.
            job_update(PerfRun, pk=run.pk, environment_settings=measurement.environment_settings)
        run.refresh_from_db()  # what the run used, as _measure wrote it
        if measurement.load is not None:
            progress.stage("recording", 92)
            run_record(run=run, load=measurement.load)
        else:
            run_artifacts_record(run=run)
        if measurement.cancelled:
            job_finish(
                PerfRun,
                pk=run.pk,
                status=RunStatus.CANCELLED,
                error=f"Cancelled during the {measurement.cancelled_during} step.",
            )
        elif measurement.error is not None:
            _broke(run, str(measurement.error))
        else:
            progress.stage("judging", 97)
            perfrun_judge(run_id=run.pk)
    except Exception as exc:  # the pipeline broke: say which step and why
        log.exception("run %s failed during %s", run.pk, progress.name)
        run_artifacts_record(run=run)
        _broke(run, f"{progress.name}: {describe(exc)}")


def perfrun_judge(*, run_id: int) -> PerfRun:
    """Judge a measured, running run and finish it: thresholds and baseline (a worse run
    fails), then the actions' proofs and the weekly series. What follows from the outcome
    never turns it into an error (the next run evaluates again)."""
    run = PerfRun.objects.select_related("scenario__baseline_run").get(pk=run_id)
    status, verdict, regression = run_judge(run)
    # A version comparison's runs stay out of the weekly series and the actions' proofs.
    in_series = run.version_comparison_id is None
    run.status = status
    if in_series:
        # Before the run shows as finished, so whoever sees it finished sees them too.
        try:
            for line in criteria_evaluate(run=run):
                log.info("run %s: %s", run.pk, line)
        except Exception:
            log.exception("run %s: evaluating the verification criteria failed", run.pk)
    job_finish(
        PerfRun, pk=run.pk, status=status, verdict=verdict, regression=regression, progress=100
    )
    if in_series:
        # After: the series takes finished runs only.
        try:
            for postmortem in regression_incidents_open(scenario=run.scenario):
                log.info("run %s: opened the draft post-mortem #%s", run.pk, postmortem.pk)
        except Exception:
            log.exception("run %s: looking for changes in the series failed", run.pk)
    run.refresh_from_db()
    return run


class _Progress:
    """The run row's stage and progress, and whether someone asked it to stop (read at
    most once a second, and remembered once seen)."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.name = "starting"
        self._checked = 0.0
        self._cancelled = False

    def stage(self, name: str, percent: int) -> None:
        self.name = name
        job_stage(PerfRun, pk=self.run_id, stage=name, progress=percent)

    def percent(self, percent: int) -> None:
        job_update(PerfRun, pk=self.run_id, progress=percent)

    def live(self, points: list[dict[str, Any]]) -> None:
        try:
            run_live_record(run_id=self.run_id, points=points)
        except Exception:  # the live figures are a view: the run goes on without them
            log.warning("run %s: the live figures could not be written", self.run_id)

    def cancelled(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._checked >= 1:
            self._checked = now
            self._cancelled = job_cancel_requested(PerfRun, pk=self.run_id)
        return self._cancelled


def _run_settings(scenario: Scenario) -> dict[str, Any]:
    """What the run used, copied at its start: later edits of the scenario change nothing."""
    return {
        "target_url": scenario.target_url,
        **{name: getattr(scenario, name) for name in LOAD_SHAPE_FIELDS},
        "workers": scenario.workers,
        "thresholds": scenario.thresholds,
        "floors": scenario.floors,
        "warmup_s": scenario.warmup_s,
        "fail_on_memory_regression": scenario.fail_on_memory_regression,
        "restore_first": scenario.restore_first,
        # Names only: the values may be secrets.
        "start_env": sorted(scenario.start_env),
    }


def _measure(run: PerfRun, progress: _Progress) -> RunMeasurement:
    """Prepare, restore when asked, then the run's processes (pipeline.execution)."""
    scenario, environment = run.scenario, run.environment
    workdir = runs_root() / f"run-{run.pk}"
    # A folder of the same name may be left by an older database's run #N: its files must
    # not be taken for this run's.
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    job_update(
        PerfRun,
        pk=run.pk,
        artifacts_dir=str(workdir),
        snapshot=environment.current_snapshot,
        settings=_run_settings(scenario),
    )
    run.artifacts_dir = str(workdir)  # for the artifacts of a run that breaks here
    try:
        progress.stage("preparing", 2)
        locustfile, digest = prepare_locustfile(
            text=scenario.locustfile_text,
            path=scenario.locustfile_path,
            workdir=workdir,
            base_dir=Path(settings.BASE_DIR),
        )
        job_update(PerfRun, pk=run.pk, locustfile_sha256=digest)
        if scenario.restore_first:
            progress.stage("restoring", 5)
            _restore(run)
        progress.stage("starting the database", 10)
    except RunStepError as exc:
        return RunMeasurement(stage=progress.name, error=exc)
    spec = RunSpec(
        workdir=workdir,
        locustfile=locustfile,
        target_url=scenario.target_url,
        shape=scenario_shape(scenario),
        workers=scenario.workers,
        template_database=environment.database_name,
        clone_database=run.database_name,
        environment_name=environment.name,
        start_command=versioned(scenario.start_command, run.version),
        start_env={
            name: versioned(value, run.version) for name, value in scenario.start_env.items()
        },
        health_url=scenario.health_url,
        health_timeout_s=scenario.health_timeout_s,
        cwd=Path(settings.BASE_DIR),
        deadline=time.monotonic() + settings.PIPELINE_TIMEOUT,
        timeout_s=settings.PIPELINE_TIMEOUT,
    )
    hooks = RunHooks(
        stage=progress.stage,
        progress=progress.percent,
        cancelled=progress.cancelled,
        live=progress.live,
    )
    with admin_connection(environment) as (admin, _port):
        return execute_run(spec, admin_conninfo=admin, hooks=hooks)


def _restore(run: PerfRun) -> None:
    """The environment's latest snapshot, restored before the run clones it."""
    environment = run.environment
    try:
        restore = restore_request(environment=environment, snapshot=None, actor=None)
    except PipelineRefused as exc:
        raise RunStepError("restoring", str(exc)) from None
    restore = restore_run(restore_id=restore.pk)
    if restore.status != RestoreStatus.DONE:
        raise RunStepError("restoring", restore.error or "the restore failed")
    environment.refresh_from_db()
    job_update(PerfRun, pk=run.pk, snapshot=environment.current_snapshot)


def _broke(run: PerfRun, error: str) -> None:
    """The run ends in error, and the teams of the incidents it is about hear of it."""
    job_finish(PerfRun, pk=run.pk, status=RunStatus.ERROR, error=error)
    notification_enqueue(
        kind="run_error",
        title=f"Run #{run.pk} of {run.scenario.name} broke",
        path=run.get_absolute_url(),
        figures={"error": error},
        dedupe_key=f"run_error:run={run.pk}",
        team_ids=list(run.postmortems.values_list("team_id", flat=True)),
    )
