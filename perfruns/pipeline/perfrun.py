"""The processes of a perf run (DESIGN.md steps 4-6): the target, Locust, the database.

Nothing here writes Fixproof's own tables: services.perfrun_run drives these pieces,
records what they measured and judges it. Every process started here runs in its own
session (process group) so that stopping it stops its children too.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

CONNECT_TIMEOUT = 10


class RunStepError(RuntimeError):
    """A step of the run failed; the message names the step and says why, for a person."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


def is_loopback_url(url: str) -> bool:
    """Only this machine's addresses may be load-test targets."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tail(path: Path, lines: int = 5) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4096))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)


def stop_group(proc: subprocess.Popen[bytes], *, grace: float = 10) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # children it left behind
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


# ---------------------------------------------------------------- the target


def port_in_use(url: str) -> bool:
    """Whether something already accepts connections where the target should listen."""
    import socket

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Target:
    """The application under test, started by its command with the run's DATABASE_URL."""

    command: str
    env: dict[str, str]
    log_file: Path
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def argv0(self) -> str:
        return str(self.proc.args[0]) if self.proc is not None else ""

    def start(self) -> int:
        try:
            argv = shlex.split(self.command)
        except ValueError as exc:
            raise RunStepError(
                "starting the target", f"the start command is not valid: {exc}"
            ) from None
        if not argv:
            raise RunStepError("starting the target", "the start command is empty")
        with self.log_file.open("ab") as log:
            try:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=self.cwd,
                    env={**os.environ, **self.env},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise RunStepError(
                    "starting the target", f"{argv[0]} could not be started: {exc.strerror}"
                ) from exc
        return self.proc.pid

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_healthy(self, url: str, *, timeout: float, cancelled: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            status = self.exited()
            if status is not None:
                raise RunStepError(
                    "waiting for the target",
                    f"the target exited with status {status} before it was healthy"
                    + (f" (its log ends: {tail})" if (tail := _tail(self.log_file)) else ""),
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                    if 200 <= response.status < 300:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            if cancelled():
                raise RunCancelled()
            if time.monotonic() >= deadline:
                raise RunStepError(
                    "waiting for the target",
                    f"{url} was not healthy within {timeout:g} s (last: {last})",
                )
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)


class RunCancelled(Exception):
    """Someone asked the run to stop."""


# ---------------------------------------------------------------- Locust


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
                procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=cwd,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
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


MEMORY_COLUMNS = ["t", "label", "pss", "pss_anon", "pss_shared", "rss", "cgroup"]


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
    import csv

    from perfruns.loadtest import MemorySampler

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
                ]
            )

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


# ---------------------------------------------------------------- the database


_DATABASE_STATS = """
SELECT xact_commit, xact_rollback, blks_read, blks_hit, temp_files, temp_bytes, deadlocks,
       tup_returned, tup_fetched, tup_inserted, tup_updated, tup_deleted
FROM pg_stat_database WHERE datname = current_database()
"""

_TOP_STATEMENTS = """
SELECT left(query, 500), calls, total_exec_time, mean_exec_time, rows,
       shared_blks_hit, shared_blks_read, temp_blks_written
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC
LIMIT %s
"""


def database_stats(conninfo: str) -> dict[str, Any]:
    with psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        cur = conn.execute(_DATABASE_STATS)
        row = cur.fetchone()
        names = [d.name for d in cur.description or []]
    stats = dict(zip(names, row, strict=True)) if row else {}
    reads = (stats.get("blks_read") or 0) + (stats.get("blks_hit") or 0)
    stats["cache_hit_ratio"] = (stats.get("blks_hit") or 0) / reads if reads else None
    return stats


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    for name, value in after.items():
        if isinstance(value, int) and isinstance(before.get(name), int):
            delta[name] = value - before[name]
    reads = delta.get("blks_read", 0) + delta.get("blks_hit", 0)
    delta["cache_hit_ratio"] = delta.get("blks_hit", 0) / reads if reads else None
    return delta


def reset_statements(conninfo: str) -> bool:
    """pg_stat_statements in the run's database, emptied; False when it is not loaded."""
    with psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
        except psycopg.Error:
            return False
    return True


def top_statements(conninfo: str, limit: int = 10) -> list[dict[str, Any]]:
    with psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        try:
            rows = conn.execute(_TOP_STATEMENTS, [limit]).fetchall()
        except psycopg.Error:
            return []
    keys = (
        "query",
        "calls",
        "total_ms",
        "mean_ms",
        "rows",
        "shared_blks_hit",
        "shared_blks_read",
        "temp_blks_written",
    )
    return [dict(zip(keys, row, strict=True)) for row in rows]


def postmaster_pid(conninfo: str) -> int | None:
    """The postmaster's pid when the server runs on this machine (a backend's parent)."""
    with psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        try:
            stat = Path(f"/proc/{backend}/stat").read_text()
        except OSError:
            return None  # another machine's server
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1])


@dataclass
class ConnectionWatcher:
    """Polls pg_stat_activity once a second; keeps the peak count per state."""

    conninfo: str
    interval: float = 1.0
    peaks: dict[str, int] = field(default_factory=dict)
    peak_total: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fixproof-activity", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return {"peak_total": self.peak_total, "peak_by_state": self.peaks}

    def _loop(self) -> None:
        query = (
            "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1"
        )
        try:
            with psycopg.connect(
                self.conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True
            ) as conn:
                while not self._stop.is_set():
                    rows = conn.execute(query).fetchall()
                    total = 0
                    for state, count in rows:
                        self.peaks[state] = max(self.peaks.get(state, 0), count)
                        total += count
                    self.peak_total = max(self.peak_total, total)
                    self._stop.wait(self.interval)
        except psycopg.Error:
            return  # the figures stay as far as they got


# ---------------------------------------------------------------- what a killed worker left


def record_spawn(pid_file: Path, pid: int, argv0: str) -> None:
    """Remember a process group we started, for the janitor should this worker die."""
    with pid_file.open("a") as handle:
        handle.write(f"{pid} {argv0}\n")


def stop_recorded(pid_file: Path) -> list[int]:
    """Kill the process groups listed in `pid_file` that are still the ones we started
    (the same program, still leading its own session); returns the pids killed."""
    killed = []
    try:
        lines = pid_file.read_text().splitlines()
    except OSError:
        return killed
    for line in lines:
        pid_text, _, argv0 = line.partition(" ")
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            session = os.getsid(pid)
        except (OSError, ProcessLookupError):
            continue
        # A script runs as "interpreter script ...": its path is the first or second word.
        if argv0 not in args[:2] or session != pid:
            continue  # the pid was reused by another program
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)
    return killed
