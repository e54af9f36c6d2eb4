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
        backend = one_value(conn.execute("SELECT pg_backend_pid()"))
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


def read_settings(conninfo: str) -> dict[str, Any]:
    """The server settings that change what its memory means."""
    names = ("server_version", "shared_buffers", "work_mem", "max_connections", "fsync")
    with psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        return {
            name: one_value(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))))
            for name in names
        }
