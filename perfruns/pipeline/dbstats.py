"""What a perf run reads of its database (DESIGN.md step 6): pg_stat_database before and
after, the top statements of pg_stat_statements, the server's settings, the postmaster's
pid (whose process tree is sampled), and peak connections by state while the load runs.

Plain library code: functions take conninfo strings, never models.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from .pgtools import one_value

CONNECT_TIMEOUT = 10
# Fixproof's own monitoring: its connections say so in pg_stat_activity, and each of its
# statements starts with this comment (pg_stat_statements keeps a leading comment), so
# that neither counts among what the target did.
MONITOR_APPLICATION = "fixproof-monitor"
MONITOR_TAG = "/* fixproof-monitor */"


def _monitor_connect(conninfo: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        conninfo,
        connect_timeout=CONNECT_TIMEOUT,
        autocommit=True,
        application_name=MONITOR_APPLICATION,
    )


_DATABASE_STATS = f"""{MONITOR_TAG}
SELECT xact_commit, xact_rollback, blks_read, blks_hit, temp_files, temp_bytes, deadlocks,
       tup_returned, tup_fetched, tup_inserted, tup_updated, tup_deleted
FROM pg_stat_database WHERE datname = current_database()
"""

_TOP_STATEMENTS = f"""{MONITOR_TAG}
SELECT left(query, 500), calls, total_exec_time, mean_exec_time, rows,
       shared_blks_hit, shared_blks_read, temp_blks_written
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND NOT starts_with(query, %s)
ORDER BY total_exec_time DESC
LIMIT %s
"""


def database_stats(conninfo: str) -> dict[str, Any]:
    with _monitor_connect(conninfo) as conn:
        conn.execute(f"{MONITOR_TAG} SELECT pg_stat_force_next_flush()")
        conn.execute(f"{MONITOR_TAG} SELECT pg_stat_clear_snapshot()")
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
    with _monitor_connect(conninfo) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute(f"{MONITOR_TAG} SELECT pg_stat_statements_reset()")
        except psycopg.Error:
            return False
    return True


def top_statements(conninfo: str, limit: int = 10) -> list[dict[str, Any]]:
    """The statements of the run's database by total time, Fixproof's own left out."""
    with _monitor_connect(conninfo) as conn:
        try:
            rows = conn.execute(_TOP_STATEMENTS, [MONITOR_TAG, limit]).fetchall()
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
    with _monitor_connect(conninfo) as conn:
        backend = one_value(conn.execute(f"{MONITOR_TAG} SELECT pg_backend_pid()"))
        try:
            stat = Path(f"/proc/{backend}/stat").read_text()
        except OSError:
            return None  # another machine's server
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1])


_ACTIVITY = f"""{MONITOR_TAG}
SELECT backend_type, datname = current_database(), coalesce(state, 'unknown'),
       application_name = %s, count(*)
FROM pg_stat_activity
GROUP BY 1, 2, 3, 4
"""
_LIMITS = f"""{MONITOR_TAG}
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true), '0')::int
"""
CLIENT = "client backend"


@dataclass
class ConnectionWatcher:
    """Polls pg_stat_activity once a second and keeps the peaks: the run database's
    connections (all, and its client backends by state, Fixproof's own left out), the
    server's client backends (what max_connections limits, Fixproof's own counted: it
    holds a slot too) and its background processes by backend_type."""

    conninfo: str
    interval: float = 1.0
    peaks: dict[str, int] = field(default_factory=dict)
    peak_total: int = 0
    peak_clients: int = 0
    peak_server_clients: int = 0
    background: dict[str, int] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fixproof-activity", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return {
            "peak_total": self.peak_total,
            "peak_by_state": self.peaks,
            "peak_clients": self.peak_clients,
            "peak_server_clients": self.peak_server_clients,
            "peak_background": self.background,
            **self.limits,
        }

    def observe(self, rows: list[tuple[str | None, bool | None, str, bool, int]]) -> None:
        """One poll's (backend_type, in the run database, state, Fixproof's, count) rows."""
        total = clients = server_clients = 0
        states: dict[str, int] = {}
        background: dict[str, int] = {}
        for backend_type, here, state, own, count in rows:
            kind = backend_type or "unknown"
            if kind == CLIENT:
                server_clients += count
                if here and not own:
                    clients += count
                    states[state] = states.get(state, 0) + count
            else:
                background[kind] = background.get(kind, 0) + count
            if here and not own:
                total += count
        self.peak_total = max(self.peak_total, total)
        self.peak_clients = max(self.peak_clients, clients)
        self.peak_server_clients = max(self.peak_server_clients, server_clients)
        for state, count in states.items():
            self.peaks[state] = max(self.peaks.get(state, 0), count)
        for kind, count in background.items():
            self.background[kind] = max(self.background.get(kind, 0), count)

    def _loop(self) -> None:
        try:
            with _monitor_connect(self.conninfo) as conn:
                row = conn.execute(_LIMITS).fetchone()
                if row is not None:
                    self.limits = {
                        "max_connections": row[0],
                        "superuser_reserved_connections": row[1],
                        "reserved_connections": row[2],
                    }
                while not self._stop.is_set():
                    self.observe(conn.execute(_ACTIVITY, [MONITOR_APPLICATION]).fetchall())
                    self._stop.wait(self.interval)
        except psycopg.Error:
            return  # the figures stay as far as they got


def connection_limit(connections: dict[str, Any], *, too_many_clients: bool) -> dict[str, Any]:
    """Whether the run reached the server's connection limit: its peak of client backends
    at max_connections less the reserved slots (a once-a-second poll may miss the moment),
    or the target's requests failing with "too many clients" (which cannot miss it)."""
    maximum = connections.get("max_connections")
    limit = None
    if isinstance(maximum, int):
        limit = maximum - int(connections.get("superuser_reserved_connections") or 0)
        limit -= int(connections.get("reserved_connections") or 0)
    peak = connections.get("peak_server_clients")
    by_peak = limit is not None and isinstance(peak, int) and peak >= limit
    reasons = (["peak"] if by_peak else []) + (["failures"] if too_many_clients else [])
    return {"limit": limit, "limit_hit": bool(reasons), "limit_hit_by": reasons}


def read_settings(conninfo: str) -> dict[str, Any]:
    """The server settings that change what its memory means."""
    names = ("server_version", "shared_buffers", "work_mem", "max_connections", "fsync")
    with psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        return {
            name: one_value(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))))
            for name in names
        }
