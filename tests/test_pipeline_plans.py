"""Plan fidelity: the generic plans of statements on the masked copy against the source's."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from perfruns.pipeline import plans
from perfruns.pipeline.databases import create_database
from tests.managed import managed_server
from tests.sourcedb import drop_source, server_conninfo

ROWS = 100_000
SCHEMA = """
CREATE TABLE accounts (id bigint PRIMARY KEY, code int NOT NULL, region text NOT NULL);
CREATE INDEX accounts_code ON accounts (code);
"""
# On the source every account has its own code: `code = $1` finds one row, by the index.
SOURCE_DATA = f"""
INSERT INTO accounts SELECT i, i, 'r' || i % 10 FROM generate_series(1, {ROWS}) i;
CREATE TABLE audit_only (id int);
ANALYZE;
"""
# Masking gave every account the same code: the index would return the whole table, so
# the planner reads it sequentially. Regions are spread over 4 values instead of 10: the
# estimates (and costs) of `region = $1` change, its plan does not.
MASKED_DATA = f"""
INSERT INTO accounts SELECT i, 7, 'r' || i % 4 FROM generate_series(1, {ROWS}) i;
ANALYZE;
"""
BY_CODE = "SELECT id, region FROM accounts WHERE code = $1"
BY_REGION = "SELECT count(*) FROM accounts WHERE region = $1"


def _database(data: str) -> str:
    name = f"fixproof_plans_{secrets.token_hex(4)}"
    with psycopg.connect(server_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(server_conninfo(name), autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(data)
    return name


@pytest.fixture(scope="module")
def databases() -> Iterator[tuple[str, str]]:
    names = (_database(SOURCE_DATA), _database(MASKED_DATA))
    yield names
    for name in names:
        drop_source(name)


@pytest.fixture
def source(databases) -> Iterator[psycopg.Connection[Any]]:
    """Opened the way snapshot.connect_source opens the production source: read-only."""
    with psycopg.connect(server_conninfo(databases[0]), autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = on")
        yield conn


@pytest.fixture
def masked(databases) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(server_conninfo(databases[1]), autocommit=True) as conn:
        yield conn


@pytest.fixture
def throwaway() -> Iterator[str]:
    name = _database("")
    yield name
    drop_source(name)


def _session_state(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """What a plan must leave as it found: settings, prepared statements, no open transaction."""
    row = conn.execute(
        "SELECT current_setting('plan_cache_mode'), current_setting('statement_timeout'),"
        " current_setting('transaction_read_only'), (SELECT count(*) FROM pg_prepared_statements)"
    ).fetchone()
    assert row is not None
    return (*row, conn.info.transaction_status)


def _estimated_rows(conn: psycopg.Connection[Any], statement: str) -> int:
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(statement)).fetchone()
    assert row is not None
    return int(row[0][0]["Plan"]["Plans"][0]["Plan Rows"])


# ---------------------------------------------------------------- comparing


def test_it_reports_a_statement_whose_plan_changed_on_the_masked_copy(source, masked):
    [result] = plans.compare_plans(source, masked, [BY_CODE])

    assert result == {
        "statement": BY_CODE,
        "same": False,
        "source": "Index Scan using accounts_code on accounts",
        "masked": "Seq Scan on accounts",
    }


def test_it_reports_the_same_shape_when_only_costs_differ(source, masked):
    # The planted difference is real: the masked copy expects 2.5 times the rows.
    with_constant = BY_REGION.replace("$1", "'r1'")
    # (ANALYZE samples 30,000 of the 100,000 rows: estimates near 10,000 and 25,000.)
    estimated = _estimated_rows(source, with_constant), _estimated_rows(masked, with_constant)
    assert 2 < estimated[1] / estimated[0] < 3, estimated

    [result] = plans.compare_plans(source, masked, [BY_REGION])

    assert result["same"] is True
    assert result["source"] == result["masked"] == "Aggregate\n  -> Seq Scan on accounts"


def test_it_plans_a_statement_with_parameters_on_a_read_only_session(source):
    before = _session_state(source)
    statement = "UPDATE accounts SET region = $2 WHERE code = $1 AND id > $3"

    planned = plans.generic_plan(source, statement)

    assert planned.reason == ""
    assert planned.shape is not None
    assert planned.shape.text() == (
        "Update on accounts\n  -> Index Scan using accounts_code on accounts"
    )
    # Explained, never run: the source is untouched and its session as it was.
    assert _session_state(source) == before
    assert before[2] == "on"  # the session was read-only all along
    assert source.execute("SELECT count(DISTINCT region) FROM accounts").fetchone() == (10,)


def test_it_skips_a_statement_that_cannot_be_planned_and_goes_on(source, masked):
    before = (_session_state(source), _session_state(masked))
    statements = [
        "SELEC id FROM accounts",
        "SELECT * FROM missing_table WHERE id = $1",
        "SELECT $1 + $2",
        "SELECT 1; DELETE FROM accounts",
        "SELECT * FROM audit_only",
        BY_CODE,
    ]

    results = plans.compare_plans(source, masked, statements)

    assert [r.get("skipped") for r in results] == [
        'on the source: syntax error at or near "SELEC"',
        'on the source: relation "missing_table" does not exist',
        "on the source: operator is not unique: unknown + unknown",
        "on the source: cannot insert multiple commands into a prepared statement",
        'on the masked copy: relation "audit_only" does not exist',
        None,
    ]
    assert results[-1]["same"] is False
    assert (_session_state(source), _session_state(masked)) == before
    assert masked.execute("SELECT count(*) FROM accounts").fetchone() == (ROWS,)


def test_it_leaves_a_session_with_an_open_transaction_as_it_found_it(databases):
    with psycopg.connect(server_conninfo(databases[1])) as conn:
        conn.execute("SELECT 1")  # a transaction is open: plans go in a savepoint

        assert plans.generic_plan(conn, "SELECT * FROM nowhere").reason
        planned = plans.generic_plan(conn, BY_CODE)

        assert planned.shape is not None
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)


def test_it_keeps_only_the_planners_choices_in_a_shape():
    node = {
        "Node Type": "Aggregate",
        "Strategy": "Sorted",
        "Partial Mode": "Finalize",
        "Startup Cost": 1.0,
        "Plan Rows": 10,
        "Plan Width": 8,
        "Plans": [
            {
                "Node Type": "Gather Merge",
                "Parent Relationship": "Outer",
                "Workers Planned": 2,
                "Plans": [
                    {
                        "Node Type": "Nested Loop",
                        "Parent Relationship": "Outer",
                        "Join Type": "Anti",
                        "Plans": [
                            {
                                "Node Type": "Index Scan",
                                "Parent Relationship": "Outer",
                                "Parallel Aware": True,
                                "Scan Direction": "Backward",
                                "Index Name": "events_at",
                                "Relation Name": "events",
                                "Alias": "e",
                                "Index Cond": "(at > $1)",
                            },
                            {
                                "Node Type": "Seq Scan",
                                "Parent Relationship": "SubPlan",
                                "Subplan Name": "SubPlan 1",
                                "Relation Name": "users",
                                "Filter": "(id = e.user_id)",
                            },
                        ],
                    }
                ],
            }
        ],
    }
    cheaper = json.loads(json.dumps(node).replace('"Workers Planned": 2', '"Workers Planned": 4'))

    shape = plans.plan_shape(node)

    assert shape.text() == (
        "Finalize GroupAggregate\n"
        "  -> Gather Merge\n"
        "      -> Nested Loop Anti Join\n"
        "          -> Parallel Index Scan Backward using events_at on events\n"
        "          -> SubPlan 1: Seq Scan on users"
    )
    assert plans.plan_shape(cheaper) == shape


# ---------------------------------------------------------------- the report


def test_it_reports_the_policy_queries_first_once_each_and_shortened(source, masked, caplog):
    spread = "  " + BY_CODE.replace(" ", "\n  ") + " ;"
    long_query = "SELECT id FROM accounts WHERE " + " OR ".join(
        f"code = ${i}" for i in range(1, 80)
    )
    caplog.set_level(logging.INFO, logger="perfruns.pipeline.plans")

    report = plans.plan_fidelity(
        source,
        masked,
        queries=[BY_CODE, BY_REGION, spread, long_query, "SELEC 1"],
    )

    assert [p["statement"] for p in report["plans"]][:2] == [BY_CODE, BY_REGION]
    assert len(report["plans"]) == 4  # the same statement written twice is compared once
    assert len(long_query) > 300
    assert report["plans"][2]["statement"] == long_query[:299] + "…"
    assert (report["compared"], report["changed"]) == (3, 2)
    assert report["text"].splitlines() == [
        "3 statement(s) compared, 2 plan(s) changed on the masked copy",
        f"plan changed: {BY_CODE}",
        f"same plan: {BY_REGION}",
        f"plan changed: {long_query[:119]}…",
        'skipped (on the source: syntax error at or near "SELEC"): SELEC 1',
    ]
    # No DSN, host or database name in what is stored or logged.
    dumped = json.dumps(report) + caplog.text
    for secret in ("127.0.0.1", "host=", "dbname", "postgres://", source.info.dbname):
        assert secret not in dumped
    assert "1 skipped" in caplog.text


def test_it_reports_nothing_to_compare_without_queries_or_pg_stat_statements(source, masked):
    assert plans.plan_fidelity(source, masked) == {
        "plans": [],
        "changed": 0,
        "compared": 0,
        "text": "0 statement(s) compared, 0 plan(s) changed on the masked copy",
    }


# ---------------------------------------------------------------- pg_stat_statements


def test_it_reads_nothing_when_the_source_has_no_pg_stat_statements(source):
    assert source.execute(
        "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
    ).fetchone() == (0,)

    assert plans.source_statements(source) == []
    assert source.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_it_reads_nothing_when_pg_stat_statements_is_installed_but_not_preloaded(throwaway):
    with psycopg.connect(server_conninfo(throwaway), autocommit=True) as conn:
        if "pg_stat_statements" in str(conn.execute("SHOW shared_preload_libraries").fetchone()):
            pytest.skip("the local server preloads pg_stat_statements: its view can be read")
        conn.execute("CREATE EXTENSION pg_stat_statements")
        conn.execute("SET default_transaction_read_only = on")

        assert plans.source_statements(conn) == []
        assert conn.execute("SELECT 1").fetchone() == (1,)


SLOW = "SELECT count(*) FROM accounts, pg_sleep(0.3)"
WIDE = "SELECT " + ", ".join(f"id AS column_{i}" for i in range(800)) + " FROM accounts"
WORKLOAD = [
    SLOW,
    "/* app: checkout */ SELECT * FROM accounts WHERE code = 42",
    "select region from accounts where id = 1",
    "INSERT INTO accounts VALUES (100001, 5, 'r1')",
    "UPDATE accounts SET region = 'r2' WHERE id = 3",
    "DELETE FROM accounts WHERE id = 100001",
    "WITH a AS (SELECT id FROM accounts WHERE code < 10) SELECT count(*) FROM a",
    "VALUES (1, 'x')",
    "TABLE accounts LIMIT 1",
    # Not plannable DML, or not the application's own statements.
    "CREATE TABLE scratch (id int)",
    "SET work_mem = '8MB'",
    "SELECT relname FROM pg_catalog.pg_class WHERE oid = 1259",
    "SELECT count(*) FROM pg_stat_activity",
    "CREATE SCHEMA fixproof_mask",
    "CREATE TABLE fixproof_mask.keys (k int)",
    "SELECT * FROM fixproof_mask.keys",
    WIDE,
]


def test_it_reads_the_top_statements_from_pg_stat_statements_when_the_source_has_it():
    assert len(WIDE) > plans.MAX_STATEMENT_CHARS
    with managed_server() as server:
        for name in ("shop", "other"):
            create_database(server.admin, name)
            with psycopg.connect(server.db(name), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION pg_stat_statements")
                conn.execute(SCHEMA)
                conn.execute("INSERT INTO accounts SELECT i, i, 'r1' FROM generate_series(1, 50) i")
        with psycopg.connect(server.db("other"), autocommit=True) as conn:
            conn.execute("SELECT id FROM accounts WHERE region = 'only in other'")
        with psycopg.connect(server.db("shop"), autocommit=True) as conn:
            for statement in WORKLOAD:
                conn.execute(statement)
            conn.execute("SET default_transaction_read_only = on")

            top = plans.source_statements(conn)
            two = plans.source_statements(conn, limit=2)

    # The sleep is 0.3 s; all the others together take a few milliseconds.
    assert top[0] == "SELECT count(*) FROM accounts, pg_sleep($1)"
    assert sorted(top[1:]) == sorted(
        [
            "/* app: checkout */ SELECT * FROM accounts WHERE code = $1",
            "INSERT INTO accounts SELECT i, i, $1 FROM generate_series($2, $3) i",
            "select region from accounts where id = $1",
            "INSERT INTO accounts VALUES ($1, $2, $3)",
            "UPDATE accounts SET region = $1 WHERE id = $2",
            "DELETE FROM accounts WHERE id = $1",
            "WITH a AS (SELECT id FROM accounts WHERE code < $1) SELECT count(*) FROM a",
            "VALUES ($1, $2)",
            "TABLE accounts LIMIT $1",
        ]
    )
    assert two == top[:2]
