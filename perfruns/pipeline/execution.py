"""One perf run's processes, end to end (DESIGN.md steps 4-6 and 9), measured and returned.

    clone      the review environment's restored database, for this run only
    target     the start command with the clone's DATABASE_URL, then its health URL
    load       Locust as subprocesses; the database's and target's memory sampled,
               pg_stat_activity polled, pg_stat_database/statements before and after
    clean up   always: target and Locust stopped, the clone dropped

Plain library code: it takes values (a RunSpec, the environment's admin conninfo) and
callbacks, writes nothing but the run's folder, and returns what it measured — even when a
step failed or the run was cancelled, so that whatever was measured up to then is kept.
Recording, judging and proofs are the services' (perfruns.services.runs).
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from perfruns.loadtest import LoadShape, LocustPlan, check_locustfile, locust_plan
from perfruns.payloads import DatabaseFigures, SamplerFigures
from perfruns.system import file_sha256, record_spawn

from .databases import clone_database, database_exists, drop_database, list_databases
from .dbstats import database_stats, read_settings, reset_statements, stats_delta, top_statements
from .load import LiveTail, LoadOutcome, measured_load, memory_roots
from .target import RunCancelled, RunStepError, Target, port_in_use

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """Everything a run's processes need, copied from its scenario at its start."""

    workdir: Path
    locustfile: Path
    target_url: str
    shape: LoadShape
    workers: int
    # The environment's restored database (the template) and the run's own clone of it.
    template_database: str
    clone_database: str
    environment_name: str
    # The start command and its environment, {version} already replaced; "" for none.
    start_command: str = ""
    start_env: dict[str, str] = field(default_factory=dict)
    health_url: str = ""
    health_timeout_s: float = 60
    cwd: Path = Path("/")
    deadline: float = float("inf")  # time.monotonic() by which the load must be over
    timeout_s: float = 3600  # the budget the deadline stands for, said in messages


@dataclass
class RunHooks:
    """How the run tells its progress and hears of a cancel: the service's callbacks."""

    stage: Callable[[str, int], None] = lambda _name, _percent: None
    progress: Callable[[int], None] = lambda _percent: None
    cancelled: Callable[[], bool] = lambda: False
    # About once a second during the load: the samples measured since the last call
    # (fields of a Sample), for the run page's live figures.
    live: Callable[[list[dict[str, Any]]], None] = lambda _points: None


@dataclass
class LoadFigures:
    """What the load measured: Locust's files (the plan names them), the memory series,
    the database's statistics and the sampler's own cost."""

    plan: LocustPlan
    started: float  # time.time() when the load started: t = 0 of memory.csv
    memory_file: Path
    database: DatabaseFigures
    sampler: SamplerFigures
    outcome: LoadOutcome


@dataclass
class RunMeasurement:
    """What one run measured and how its processes ended. `error` names the step that
    failed and why; `cancelled_during` the step a cancel stopped. A run that failed before
    the load has no `load`."""

    stage: str = "starting"
    environment_settings: dict[str, Any] | None = None
    load: LoadFigures | None = None
    error: RunStepError | None = None
    cancelled_during: str = ""

    @property
    def cancelled(self) -> bool:
        return bool(self.cancelled_during)


PROGRESS = {
    "cloning the database": 12,
    "starting the target": 15,
    "waiting for the target": 18,
    "load": 20,
}
# The share of the progress bar the load itself fills (20 % to 90 %).
LOAD_PROGRESS = (20, 70)


def locust_binary() -> str:
    beside = Path(sys.executable).parent / "locust"
    if beside.exists():
        return str(beside)
    found = shutil.which("locust")
    if found is None:
        raise RunStepError("preparing", "Locust is not installed (pip install locust)")
    return found


def prepare_locustfile(*, text: str, path: str, workdir: Path, base_dir: Path) -> tuple[Path, str]:
    """The locustfile of a run (the uploaded text written into its folder, or a path in a
    checkout) and its sha256, once Locust has shown it can load it."""
    if text:
        locustfile = workdir / "locustfile.py"
        locustfile.write_text(text)
    else:
        locustfile = Path(path)
        if not locustfile.is_absolute():
            locustfile = base_dir / locustfile
        if not locustfile.is_file():
            raise RunStepError("preparing", f"the locustfile {locustfile} does not exist")
    digest = file_sha256(locustfile)
    problem = check_locustfile(locust_binary(), locustfile)
    if problem:
        raise RunStepError("preparing", f"the locustfile cannot be loaded: {problem}")
    return locustfile, digest


def database_url(conninfo: str) -> str:
    """The DATABASE_URL of a libpq conninfo (the target reads a URL)."""
    params = conninfo_to_dict(conninfo)
    user = quote(str(params.get("user", "")), safe="")
    password = params.get("password")
    auth = user + (f":{quote(str(password), safe='')}" if password else "")
    host = str(params.get("host", "127.0.0.1"))
    dbname = quote(str(params.get("dbname", "")), safe="")
    if host.startswith("/"):
        netloc = f"{auth}@" if auth else ""
        return f"postgresql://{netloc}/{dbname}?host={quote(host, safe='')}" + (
            f"&port={params['port']}" if params.get("port") else ""
        )
    port = f":{params['port']}" if params.get("port") else ""
    netloc = f"{auth}@{host}{port}" if auth else f"{host}{port}"
    return f"postgresql://{netloc}/{dbname}"


def with_dbname(conninfo: str, dbname: str) -> str:
    params = conninfo_to_dict(conninfo)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def clone_name(live: str, run_id: int) -> str:
    """The database a run drives: a clone of the environment's restored one."""
    return f"{live}__run{run_id}"


def drop_run_clones(admin_conninfo: str, *, live: str, keep: Iterable[int]) -> list[str]:
    """The `<live>__run<N>` clones of runs no longer running (a killed worker's)."""
    kept = {clone_name(live, pk) for pk in keep}
    dropped = []
    for name in list_databases(admin_conninfo, f"{live}__run"):
        if re.fullmatch(rf"{re.escape(live)}__run\d+", name) and name not in kept:
            drop_database(admin_conninfo, name)
            dropped.append(name)
    return dropped


class _Execution:
    def __init__(self, spec: RunSpec, hooks: RunHooks) -> None:
        self.spec = spec
        self.hooks = hooks
        self.pid_file = spec.workdir / "pids"
        self.measurement = RunMeasurement()

    def stage(self, name: str) -> None:
        self.measurement.stage = name
        self.hooks.stage(name, PROGRESS.get(name, 0))

    def cancelled(self) -> bool:
        if self.hooks.cancelled():
            self.measurement.cancelled_during = self.measurement.cancelled_during or (
                self.measurement.stage
            )
            return True
        return False

    def run(self, admin_conninfo: str) -> RunMeasurement:
        spec = self.spec
        target: Target | None = None
        try:
            self.stage("cloning the database")
            if not database_exists(admin_conninfo, spec.template_database):
                raise RunStepError(
                    "cloning the database",
                    f"the review environment {spec.environment_name} has no restored "
                    "database yet: restore a snapshot into it first",
                )
            drop_database(admin_conninfo, spec.clone_database)  # a retry of this run left one
            try:
                clone_database(
                    admin_conninfo, template=spec.template_database, name=spec.clone_database
                )
                conninfo = with_dbname(admin_conninfo, spec.clone_database)
                self.measurement.environment_settings = read_settings(conninfo)
                if self.cancelled():
                    raise RunCancelled()
                target = self._start_target(conninfo)
                self.stage("load")
                self._load(conninfo, target)
            finally:
                if target is not None:
                    target.stop()
                # Locust is stopped by run_load whatever happens: nothing left to reap.
                self.pid_file.unlink(missing_ok=True)
                try:
                    drop_database(admin_conninfo, spec.clone_database)
                except Exception as exc:  # the janitor drops it later
                    log.warning("could not drop %s: %s", spec.clone_database, exc)
        except RunCancelled:
            self.measurement.cancelled_during = (
                self.measurement.cancelled_during or self.measurement.stage
            )
        except RunStepError as exc:
            self.measurement.error = exc
        return self.measurement

    def _start_target(self, conninfo: str) -> Target | None:
        spec = self.spec
        target = None
        if spec.start_command:
            self.stage("starting the target")
            if port_in_use(spec.target_url):
                # Its health URL would answer for the target: the run would measure another
                # program.
                raise RunStepError(
                    "starting the target",
                    f"something already listens at {spec.target_url}; stop it or give the "
                    "scenario another port",
                )
            target = Target(
                command=spec.start_command,
                env={**spec.start_env, "DATABASE_URL": database_url(conninfo)},
                log_file=spec.workdir / "target.log",
                cwd=spec.cwd,
            )
            pid = target.start()
            record_spawn(self.pid_file, pid, target.argv0)
        if spec.health_url:
            self.stage("waiting for the target")
            (target or _NoProcess()).wait_healthy(
                spec.health_url, timeout=spec.health_timeout_s, cancelled=self.cancelled
            )
        return target

    def _load(self, conninfo: str, target: Target | None) -> None:
        spec = self.spec
        plan = locust_plan(
            locust=locust_binary(),
            locustfile=spec.locustfile,
            host=spec.target_url,
            shape=spec.shape,
            workdir=spec.workdir,
            workers=spec.workers,
        )
        reset_statements(conninfo)
        before = database_stats(conninfo)
        memory_file = spec.workdir / "memory.csv"
        low, span = LOAD_PROGRESS
        tail = LiveTail(plan.history_file, memory_file, started=time.time())

        def progress(fraction: float) -> None:
            self.hooks.progress(low + int(span * fraction))
            self.hooks.live(tail.read())

        load = measured_load(
            [plan.master, *plan.workers],
            conninfo=conninfo,
            roots=memory_roots(conninfo, target),
            memory_file=memory_file,
            cwd=spec.workdir,
            log_file=spec.workdir / "locust-console.log",
            deadline=spec.deadline,
            expected_s=plan.expected_duration_s,
            target=target,
            cancelled=self.cancelled,
            progress=progress,
            on_spawn=lambda pid, argv0: record_spawn(self.pid_file, pid, argv0),
        )
        after = database_stats(conninfo)
        self.measurement.load = LoadFigures(
            plan=plan,
            started=load.started,
            memory_file=memory_file,
            database={
                "before": before,
                "after": after,
                "delta": stats_delta(before, after),
                "connections": load.connections,
                "top_statements": top_statements(conninfo),
            },
            sampler={
                "achieved_interval_s": load.sampler.achieved_interval,
                "cpu_fraction": load.sampler.cpu_fraction,
            },
            outcome=load.outcome,
        )
        self._judge_outcome(load.outcome, plan)

    def _judge_outcome(self, outcome: LoadOutcome, plan: LocustPlan) -> None:
        """How the load ended, as the run's error: its results are kept all the same."""
        if outcome.cancelled:
            raise RunCancelled()
        if outcome.timed_out:
            raise RunStepError(
                "load",
                f"the run's time budget ({self.spec.timeout_s:g} s) was exceeded; "
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


class _NoProcess(Target):
    """Health check of a target started by someone else."""

    def __init__(self) -> None:
        super().__init__(command="", env={}, log_file=Path("/dev/null"), cwd=Path("/"))


def execute_run(spec: RunSpec, *, admin_conninfo: str, hooks: RunHooks) -> RunMeasurement:
    """Clone, start the target, drive the load, measure; always clean up. Returns what was
    measured, with the step that failed (`error`) or was cancelled, if any."""
    return _Execution(spec, hooks).run(admin_conninfo)
