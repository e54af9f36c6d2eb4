"""pipeline.dbstats: connections counted from pg_stat_activity (client backends apart from
background processes, Fixproof's own monitoring left out), and whether a run reached the
server's connection limit."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from perfruns.pipeline.dbstats import (
    _ACTIVITY,
    _LIMITS,
    MONITOR_APPLICATION,
    ConnectionWatcher,
    connection_limit,
)


def test_it_counts_client_backends_apart_from_background_processes_and_its_own():
    watcher = ConnectionWatcher("")

    watcher.observe(
        [
            ("client backend", True, "active", False, 12),
            ("client backend", True, "idle in transaction", False, 3),
            ("client backend", True, "idle", True, 1),  # Fixproof's own monitoring
            ("client backend", False, "idle", False, 4),  # another database of the server
            ("autovacuum worker", True, "active", False, 2),
            ("checkpointer", None, "unknown", False, 1),
        ]
    )
    watcher.observe([("client backend", True, "active", False, 5)])

    figures = watcher.stop()
    assert figures["peak_clients"] == 15
    assert figures["peak_by_state"] == {"active": 12, "idle in transaction": 3}
    assert figures["peak_server_clients"] == 20
    assert figures["peak_total"] == 17  # the database's, autovacuum included
    assert figures["peak_background"] == {"autovacuum worker": 2, "checkpointer": 1}


def test_the_limit_is_reached_when_the_peak_takes_every_slot_left_to_the_target():
    connections = {
        "peak_server_clients": 47,
        "max_connections": 50,
        "superuser_reserved_connections": 3,
        "reserved_connections": 0,
    }

    reached = connection_limit(connections, too_many_clients=False)
    below = connection_limit({**connections, "peak_server_clients": 46}, too_many_clients=False)

    assert reached == {"limit": 47, "limit_hit": True, "limit_hit_by": ["peak"]}
    assert below == {"limit": 47, "limit_hit": False, "limit_hit_by": []}


def test_too_many_clients_failures_say_the_limit_was_reached_when_the_poll_missed_it():
    connections = {"peak_server_clients": 20, "max_connections": 50}

    result = connection_limit(connections, too_many_clients=True)

    assert result["limit_hit"] and result["limit_hit_by"] == ["failures"]


def test_a_run_without_settings_has_no_limit_and_is_not_flagged():
    assert connection_limit({"peak_server_clients": 5}, too_many_clients=False) == {
        "limit": None,
        "limit_hit": False,
        "limit_hit_by": [],
    }


@pytest.mark.django_db
def test_on_a_real_server_it_sees_the_clients_opened_and_not_the_monitoring_one():
    conninfo = " ".join(
        f"{key}={value}"
        for key, value in (
            ("host", connection.settings_dict["HOST"] or "127.0.0.1"),
            ("port", connection.settings_dict["PORT"] or 5432),
            ("user", connection.settings_dict["USER"]),
            ("dbname", connection.settings_dict["NAME"]),
        )
        if value
    )
    clients = [psycopg.connect(conninfo, autocommit=True) for _ in range(3)]
    try:
        for client in clients:
            client.execute("SELECT 1")
        watcher = ConnectionWatcher(conninfo)
        with psycopg.connect(
            conninfo, autocommit=True, application_name=MONITOR_APPLICATION
        ) as monitor:
            limits = monitor.execute(_LIMITS).fetchone()
            watcher.observe(monitor.execute(_ACTIVITY, [MONITOR_APPLICATION]).fetchall())
    finally:
        for client in clients:
            client.close()

    figures = watcher.stop()
    # The three clients, the test's own Django connection: the monitor is left out.
    assert figures["peak_clients"] == 4
    assert figures["peak_server_clients"] >= 5
    assert limits is not None and limits[0] >= 5 and limits[1] >= 0
