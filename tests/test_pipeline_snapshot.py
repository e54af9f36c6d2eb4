"""restore_masked: a raw dump restored into a scratch cluster, masked as its rows load."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from perfruns.masking import (
    DROP_FUNCTIONS,
    functions_sql,
    introspect,
    parse_policy,
    plan_sql,
    validate,
)
from perfruns.pipeline import snapshot
from perfruns.pipeline.databases import create_database, drop_database
from perfruns.pipeline.pgtools import find_binary, run
from tests.managed import Server, managed_server

KEY = b"fixproof test key, 32 bytes long"
EVENTS = 20_000
SOURCE = f"""
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, name text, phone text);
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users,
    payload jsonb,
    at timestamptz NOT NULL,
    note text
);
CREATE INDEX events_at ON events (at);
CREATE VIEW event_ips AS SELECT id, payload ->> 'ip' AS ip FROM events;
INSERT INTO users SELECT i, 'user' || i || '@example.com', 'User ' || i, '+3361234' || i
    FROM generate_series(1, 500) i;
INSERT INTO events (user_id, payload, at, note)
    SELECT 1 + i % 500,
           CASE WHEN i % 10 = 0 THEN '["not", "an", "object"]'::jsonb
                ELSE jsonb_build_object('ip', '10.0.' || (i / 256 % 256) || '.' || (i % 256),
                                        'n', i) END,
           timestamptz '2025-01-01 00:00+00' + i * interval '1 minute',
           'note ' || i
    FROM generate_series(1, {EVENTS}) i;
ANALYZE;
"""
POLICY = """
tables:
  users:
    email: {fake: email}
    name: {fake: name}
    phone: null
  events:
    payload: {json_mask: {ip: {fake: ip}}}
    at: {date_shift: 30}
    note: hash
"""
FILTERED = (
    POLICY
    + """
    _where: "id % 3 <> 0"
"""
)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with managed_server() as running:
        yield running


@pytest.fixture(scope="module")
def dump(server) -> Path:
    create_database(server.admin, "source")
    with psycopg.connect(server.db("source"), autocommit=True) as conn:
        conn.execute(SOURCE)
    path = server.folder / "source.dump"
    run(
        [find_binary("pg_dump"), "-Fc", "-f", str(path), "--dbname", server.db("source")],
        timeout=120,
    )
    return path


@pytest.fixture
def databases(server) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        drop_database(server.admin, name)


def _schema(server: Server):
    with psycopg.connect(server.db("source")) as conn:
        return introspect(conn)


def _masked(server: Server, dump: Path, name: str, policy_text: str, **kwargs) -> None:
    create_database(server.admin, name)
    policy = parse_policy(policy_text)
    schema = _schema(server)
    assert validate(policy, schema) == []
    snapshot.restore_masked(
        dump_path=dump,
        conninfo=server.db(name),
        policy=policy,
        schema=schema,
        key=KEY,
        jobs=2,
        timeout=120,
        **kwargs,
    )


def _altered(server: Server, dump: Path, name: str, policy_text: str) -> None:
    """The reference: pre-data and data, then one ALTER per table, then post-data."""
    create_database(server.admin, name)
    pg_restore = find_binary("pg_restore")
    for section in ("--section=pre-data", "--section=data"):
        # Views are created after the masking, like the pipeline does.
        run([pg_restore, section, "--dbname", server.db(name), str(dump)], timeout=120)
        if section == "--section=pre-data":
            with psycopg.connect(server.db(name), autocommit=True) as conn:
                conn.execute("DROP VIEW event_ips")
    with psycopg.connect(server.db(name), autocommit=True) as conn:
        conn.execute(functions_sql(key=KEY))
        for statement in plan_sql(policy=parse_policy(policy_text), schema=_schema(server)):
            conn.execute(statement)
        conn.execute(DROP_FUNCTIONS)
        conn.execute("CREATE VIEW event_ips AS SELECT id, payload ->> 'ip' AS ip FROM events")
    run([pg_restore, "--section=post-data", "--dbname", server.db(name), str(dump)], timeout=120)


TABLES = ["SELECT * FROM users ORDER BY id", "SELECT * FROM events ORDER BY id"]
COLUMNS = (
    "SELECT table_name, column_name, data_type FROM information_schema.columns"
    " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
)


def test_a_split_table_is_masked_as_it_loads_with_the_values_of_the_one_alter(
    server, dump, databases, monkeypatch
):
    started: list[tuple[str, bool]] = []
    split_loaded = snapshot.MaskingSteps.split_loaded

    def watched(self, schema: str, table: str) -> bool:
        result = split_loaded(self, schema, table)
        started.append((f"{schema}.{table}", result))
        return result

    monkeypatch.setattr(snapshot.MaskingSteps, "split_loaded", watched)
    databases += ["masked", "altered"]

    _masked(server, dump, "masked", POLICY, split_rows=1000)
    _altered(server, dump, "altered", POLICY)

    # events is big enough to load over two sessions and be rewritten at once; users not.
    assert started == [("public.events", True)]
    for query in TABLES:
        assert server.rows("masked", query) == server.rows("altered", query)
    assert server.rows("masked", COLUMNS) == server.rows("source", COLUMNS)
    with psycopg.connect(server.db("masked"), autocommit=True) as conn:
        assert snapshot.dead_tuples(conn) == 0
        assert _one(conn, "SELECT count(*) FROM event_ips WHERE ip LIKE '10.%'") == 0
        assert _one(conn, "SELECT count(*) FROM users WHERE email LIKE 'user%'") == 0
        assert _one(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'fixproof_mask'") == 0
        # Logged again, the identity's sequence too; keys and the foreign key built after.
        ours = "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        assert _one(conn, ours + " AND relpersistence <> 'p'") == 0
        assert _one(conn, ours + " AND relkind = 'i'") == 4
        constraints = (
            "SELECT count(*) FROM pg_constraint WHERE contype IN ('p', 'u', 'f') AND convalidated"
            " AND connamespace = 'public'::regnamespace"
        )
        assert _one(conn, constraints) == 4


TWINNED = """
tables:
  users:
    email: {fake: email}
    name: {fake: name}
    phone: null
  events:
    payload: {json_mask: {ip: {fake: ip}}}
    note: hash
"""


def test_a_table_whose_masking_computes_each_hmac_once_is_masked_as_it_loads_without_rewrite(
    server, dump, databases, monkeypatch
):
    prepared: list[str] = []
    prepare_twins = snapshot.MaskingSteps._prepare_twins

    def watched(self, conn, rules, info) -> bool:
        if prepare_twins(self, conn, rules, info):
            prepared.append(info.qualified)
            return True
        return False

    monkeypatch.setattr(snapshot.MaskingSteps, "_prepare_twins", watched)
    databases += ["masked", "altered"]

    _masked(server, dump, "masked", TWINNED, split_rows=1000)
    _altered(server, dump, "altered", TWINNED)

    # events: an IP fake and a hash, one HMAC each; users' e-mail fake looks three times.
    assert prepared == ["public.events"]
    for query in TABLES:
        assert server.rows("masked", query) == server.rows("altered", query)
    assert server.rows("masked", COLUMNS) == server.rows("source", COLUMNS)
    with psycopg.connect(server.db("masked"), autocommit=True) as conn:
        assert snapshot.dead_tuples(conn) == 0
        assert _one(conn, "SELECT count(*) FROM event_ips WHERE ip LIKE '10.%'") == 0
        assert _one(conn, "SELECT count(*) FROM events WHERE note LIKE 'note%'") == 0
        assert _one(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'fixproof_mask'") == 0
        assert (
            _one(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'fixproof_native'") == 0
        )
        # The identity still numbers new rows after the restored ones.
        conn.execute("INSERT INTO events (user_id, at) VALUES (1, now())")
        assert _one(conn, "SELECT max(id) FROM events") == EVENTS + 1


def _one(conn: psycopg.Connection, query: str) -> object:
    return conn.execute(query).fetchone()[0]


def test_a_filter_holds_the_rewrites_back_until_the_rows_are_settled(
    server, dump, databases, monkeypatch
):
    started: list[bool] = []
    split_loaded = snapshot.MaskingSteps.split_loaded

    def watched(self, schema: str, table: str) -> bool:
        started.append(split_loaded(self, schema, table))
        return started[-1]

    monkeypatch.setattr(snapshot.MaskingSteps, "split_loaded", watched)
    databases += ["masked", "altered"]

    _masked(server, dump, "masked", FILTERED, split_rows=1000)
    _altered(server, dump, "altered", FILTERED)

    assert started == [False]  # rewritten after the filter, in between()
    for query in TABLES:
        assert server.rows("masked", query) == server.rows("altered", query)
    assert server.rows("masked", "SELECT count(*) FROM events") == [(EVENTS - EVENTS // 3,)]
    with psycopg.connect(server.db("masked"), autocommit=True) as conn:
        assert snapshot.dead_tuples(conn) == 0
