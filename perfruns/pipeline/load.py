"""The load of a perf run (DESIGN.md steps 5-6): Locust as subprocesses, while the memory of
the database's and the target's process trees is sampled and pg_stat_activity polled.

Plain library code: no Django, no models. Every process started here leads a process group
of its own (perfruns.system), so stopping it stops its workers too.
"""

from __future__ import annotations

import csv
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfruns.loadtest import MemorySampler
from perfruns.loadtest.results import CsvTail
from perfruns.system import spawn, stop_group

from .dbstats import ConnectionWatcher, postmaster_pid
from .target import RunStepError, Target


@dataclass
class LoadOutcome:
    returncode: int | None
    cancelled: bool = False
    timed_out: bool = False
    target_died: int | None = None  # the target's exit status, when it died mid-run
    killed_by: int | None = None  # the signal that ended Locust, when one did


def run_load(
    argvs: list[list[str]],
    *,
    cwd: Path,
    log_file: Path,
    deadline: float,
    expected_s: float,
    target: Target | None,
    cancelled: Callable[[], bool],
    progress: Callable[[float], None],
    on_spawn: Callable[[int, str], None] = lambda _pid, _argv0: None,
) -> LoadOutcome:
    """Run the Locust master (argvs[0]) and its workers until the master exits.

    Stops everything (partial results are written by Locust on SIGTERM) when the run is
    cancelled, the deadline passes or the target dies. `progress(fraction)` about once a
    second.
    """
    procs: list[subprocess.Popen[bytes]] = []
    outcome = LoadOutcome(returncode=None)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    with log_file.open("ab") as log:
        try:
            for argv in argvs:
                procs.append(spawn(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT))
                on_spawn(procs[-1].pid, argv[0])
            master = procs[0]
            last_progress = 0.0
            while master.poll() is None:
                now = time.monotonic()
                if cancelled():
                    outcome.cancelled = True
                    break
                if now >= deadline:
                    outcome.timed_out = True
                    break
                if target is not None and (status := target.exited()) is not None:
                    outcome.target_died = status
                    break
                if now - last_progress >= 1:
                    progress(min(1.0, (now - started) / max(expected_s, 1)))
                    last_progress = now
                time.sleep(0.2)
        except OSError as exc:
            raise RunStepError("load", f"Locust could not be started: {exc.strerror}") from exc
        finally:
            for proc in procs:
                # SIGTERM first: Locust stops the users and writes its reports.
                stop_group(proc, grace=15)
    outcome.returncode = procs[0].returncode if procs else None
    if outcome.returncode is not None and outcome.returncode < 0:
        outcome.killed_by = -outcome.returncode
    return outcome


@dataclass
class MeasuredLoad:
    outcome: LoadOutcome
    sampler: Any  # the loadtest.MemorySampler, stopped: its cost and rounds
    connections: dict[str, Any]  # ConnectionWatcher.stop()
    started: float  # time.time() when the load started: t = 0 of memory.csv


MEMORY_COLUMNS = ["t", "label", "pss", "pss_anon", "pss_shared", "rss", "cgroup", "processes"]


def measured_load(
    argvs: list[list[str]],
    *,
    conninfo: str,
    roots: dict[str, int],
    memory_file: Path,
    cwd: Path,
    log_file: Path,
    deadline: float,
    expected_s: float,
    target: Target | None,
    cancelled: Callable[[], bool],
    progress: Callable[[float], None],
    on_spawn: Callable[[int, str], None] = lambda _pid, _argv0: None,
) -> MeasuredLoad:
    """The load as a run drives it: Locust (run_load) while the memory of the `roots`
    process trees streams to `memory_file` (t seconds since the load started) and
    pg_stat_activity is polled for peak connections."""
    started = time.time()
    with memory_file.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MEMORY_COLUMNS)

        def on_sample(sample: Any) -> None:
            m = sample.memory
            writer.writerow(
                [
                    f"{time.time() - started:.3f}",
                    sample.label,
                    m.pss,
                    m.pss_anon,
                    m.pss_shared,
                    m.rss,
                    "" if m.cgroup is None else m.cgroup,
                    m.processes,
                ]
            )
            # The run page's live figures read the file while the load runs.
            handle.flush()

        sampler = MemorySampler(roots, interval=1.0, on_sample=on_sample)
        watcher = ConnectionWatcher(conninfo)
        sampler.start()
        watcher.start()
        try:
            outcome = run_load(
                argvs,
                cwd=cwd,
                log_file=log_file,
                deadline=deadline,
                expected_s=expected_s,
                target=target,
                cancelled=cancelled,
                progress=progress,
                on_spawn=on_spawn,
            )
        finally:
            sampler.stop()
            connections = watcher.stop()
    return MeasuredLoad(outcome=outcome, sampler=sampler, connections=connections, started=started)


def memory_roots(conninfo: str, target: Target | None) -> dict[str, int]:
    """The process trees a run samples: the database's postmaster when it runs on this
    machine, and the target when Fixproof started it."""
    roots: dict[str, int] = {}
    db_pid = postmaster_pid(conninfo)
    if db_pid is not None:
        roots["db"] = db_pid
    if target is not None and target.proc is not None:
        roots["target"] = target.proc.pid
    return roots


def _cell(row: dict[str, str], key: str) -> float | None:
    value = (row.get(key) or "").strip()
    if not value or value == "N/A":
        return None
    try:
        return float(value)
    except ValueError:
        return None


class LiveTail:
    """What the load measured since the last read(), as the fields of the run's samples
    (t in seconds since the load started): Locust's "Aggregated" history rows and the
    memory sampler's rows. The recording replaces them with the full series at the end."""

    def __init__(self, history_file: Path, memory_file: Path, started: float) -> None:
        self.history = CsvTail(history_file)
        self.memory = CsvTail(memory_file)
        self.started = started

    def read(self) -> list[dict[str, Any]]:
        points: list[dict[str, Any]] = []
        for row in self.history.read():
            if row.get("Name") != "Aggregated" or row.get("Type"):
                continue
            stamp = _cell(row, "Timestamp")
            if stamp is None:
                continue
            users = _cell(row, "User Count")
            points.append(
                {
                    "t": max(0.0, stamp - self.started),
                    "users": None if users is None else int(users),
                    "rps": _cell(row, "Requests/s"),
                    "failures_per_s": _cell(row, "Failures/s"),
                    "p50_ms": _cell(row, "50%"),
                    "p95_ms": _cell(row, "95%"),
                }
            )
        for row in self.memory.read():
            t, pss = _cell(row, "t"), _cell(row, "pss")
            if t is None or pss is None:
                continue
            if row.get("label") == "db":
                cgroup = _cell(row, "cgroup")
                points.append(
                    {
                        "t": t,
                        "db_pss": int(pss),
                        "db_pss_anon": int(_cell(row, "pss_anon") or 0),
                        "db_pss_shared": int(_cell(row, "pss_shared") or 0),
                        "db_cgroup": None if cgroup is None else int(cgroup),
                    }
                )
            elif row.get("label") == "target":
                processes = _cell(row, "processes")
                points.append(
                    {
                        "t": t,
                        "target_rss": int(_cell(row, "rss") or 0),
                        "target_pss": int(pss),
                        "target_processes": None if processes is None else int(processes),
                    }
                )
        return points
