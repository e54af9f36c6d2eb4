"""The masking SQL against a real PostgreSQL: scratch databases fixproof_masktest_*."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from perfruns.masking import (
    DROP_FUNCTIONS,
    ColumnInfo,
    Schema,
    TableInfo,
    filter_sql,
    functions_sql,
    introspect,
    orphan_cleanup_sql,
    parse_policy,
    plan_sql,
    table_masking_sql,
    truncate_sql,
    validate,
)
from perfruns.masking.functions import NATIVE_AVAILABLE
from perfruns.masking.sql import load_masking_sql
from perfruns.masking.twins import twin_masking_sql
from perfruns.pipeline.snapshot import restored_columns

SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
KEY = b"fixproof test key, 32 bytes long"


def _connect(dbname: str) -> psycopg.Connection:
    return psycopg.connect(**SERVER, dbname=dbname, autocommit=True)


@pytest.fixture
def new_db() -> Iterator[Callable[[], str]]:
    """Creates scratch databases on demand; drops them all at teardown."""
    created: list[str] = []

    def make() -> str:
        name = f"fixproof_masktest_{uuid.uuid4().hex[:12]}"
        with _connect("postgres") as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return name

    yield make
    with _connect("postgres") as admin:
        for name in created:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def db(new_db) -> Iterator[psycopg.Connection]:
    with _connect(new_db()) as conn:
        yield conn


def _hmac(message: str, *, key: bytes = KEY) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _apply(
    conn: psycopg.Connection,
    policy_text: str,
    *,
    schema: Schema | None = None,
    native: bool = False,
) -> None:
    """What the pipeline does: helpers, truncates/filters/clean-up/rewrites, drop helpers."""
    policy = parse_policy(policy_text)
    schema = schema or introspect(conn)
    assert validate(policy, schema) == []
    conn.execute(functions_sql(key=KEY, native=native))
    for statement in plan_sql(policy=policy, schema=schema):
        conn.execute(statement)
    conn.execute(DROP_FUNCTIONS)


def _pg(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, "-h", SERVER["host"], "-p", str(SERVER["port"]), "-U", SERVER["user"], *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _restore_like_the_pipeline(
    source: str, target: str, dump: Path, *, policy_text: str
) -> subprocess.CompletedProcess[str]:
    """Dump the source; restore pre-data and data; mask; restore post-data (its result)."""
    assert _pg("pg_dump", "-Fc", "-f", str(dump), source).returncode == 0
    restored = _pg("pg_restore", "--exit-on-error", "--section=pre-data", "--section=data",
                   "-d", target, str(dump))  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    # Keys, uniques and foreign keys only exist after post-data: read them from the source.
    with _connect(source) as source_conn:
        schema = introspect(source_conn)
    with _connect(target) as conn:
        _apply(conn, policy_text, schema=schema)
    return _pg("pg_restore", "--exit-on-error", "--section=post-data", "-d", target, str(dump))


def _filenode(conn: psycopg.Connection, table: str) -> int:
    return conn.execute("SELECT pg_relation_filenode(%s::regclass)", [table]).fetchone()[0]


def _dead_tuples(conn: psycopg.Connection, table: str) -> int:
    # Table statistics reach the shared view only when a backend flushes them.
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %s::regclass", [table]
    ).fetchone()[0]


# --- HMAC and determinism -----------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [KEY, b"k" * 64, b"a key longer than one sha256 block of sixty-four bytes, hashed first"],
)
def test_it_computes_the_same_hmac_in_sql_as_python(db, key):
    db.execute(functions_sql(key=key))
    for message in [b"", b"alice@example.com", "Zoë \\x41 €".encode(), bytes(range(256))]:
        got = db.execute("SELECT fixproof_mask.hmac(%s)", [message]).fetchone()[0]
        assert got == hmac.new(key, message, hashlib.sha256).digest()
    # text goes in as its UTF-8 bytes, backslashes included (no escape processing)
    got = db.execute("SELECT fixproof_mask.hmac_text('hash', %s)", ["Zoë \\x41"]).fetchone()[0]
    assert got == hmac.new(key, "hash:Zoë \\x41".encode(), hashlib.sha256).digest()


def test_it_refuses_a_key_shorter_than_16_bytes():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        functions_sql(key=b"short")


def test_it_derives_the_unique_part_of_a_fake_email_from_the_hmac_of_the_normalized_value(db):
    db.execute(functions_sql(key=KEY))
    fake = db.execute(
        "SELECT fixproof_mask.fake_email(%s, 10485760, false)", [" Alice@Example.COM "]
    ).fetchone()[0]
    unique_part = _hmac("email:alice@example.com")[8:16].hex()
    assert fake.endswith(f".{unique_part}@example.invalid")
    first, last = fake.split(".")[:2]
    assert first.isalpha() and last.isalpha()


def test_it_gives_the_same_fake_for_differently_written_emails(db):
    db.execute(functions_sql(key=KEY))
    pairs = [
        ("fake_email", " Alice@Example.COM ", "alice@example.com"),
        ("fake_email", "alice @example.com", "ALICE@EXAMPLE.COM"),
    ]
    for function, one, other in pairs:
        query = sql.SQL("SELECT {f}(%s, 10485760, false), {f}(%s, 10485760, false)").format(
            f=sql.Identifier("fixproof_mask", function)
        )
        first, second = db.execute(query, [one, other]).fetchone()
        assert first == second, function
    different = db.execute(
        "SELECT fixproof_mask.fake_email('alice@example.com', 10485760, false),"
        " fixproof_mask.fake_email('alicia@example.com', 10485760, false)"
    ).fetchone()
    assert different[0] != different[1]


def test_it_gives_other_fakes_with_another_key(db):
    db.execute(functions_sql(key=KEY))
    one = db.execute("SELECT fixproof_mask.fake_email('a@b.c', 100, false)").fetchone()[0]
    db.execute(DROP_FUNCTIONS)
    db.execute(functions_sql(key=b"another key of at least 16 bytes"))
    other = db.execute("SELECT fixproof_mask.fake_email('a@b.c', 100, false)").fetchone()[0]
    assert one != other


def test_it_keeps_users_and_invitations_joinable_after_masking(db):
    db.execute(
        """
        CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, name text);
        CREATE TABLE invitations (id bigint PRIMARY KEY, invitee_email varchar(200));
        INSERT INTO users SELECT i, 'person' || i || '@example.com', 'Person ' || i
          FROM generate_series(1, 300) i;
        -- the same people, written the way people type them
        INSERT INTO invitations SELECT i, '  Person' || i || '@EXAMPLE.com '
          FROM generate_series(1, 300) i;
        INSERT INTO invitations VALUES (1000, 'stranger@example.com');
        """
    )
    _apply(
        db,
        """
        tables:
          users:
            email: {fake: email}
            name: {fake: name}
          invitations:
            invitee_email: {fake: email}
        """,
    )
    joined = db.execute(
        "SELECT count(*) FROM users u JOIN invitations i ON i.invitee_email = u.email"
    ).fetchone()[0]
    assert joined == 300
    assert db.execute("SELECT count(*) FROM users WHERE email LIKE 'person%'").fetchone()[0] == 0
    assert (
        db.execute(
            "SELECT count(*) FROM invitations WHERE invitee_email NOT LIKE '%@example.invalid'"
        ).fetchone()[0]
        == 0
    )


# --- the rewrite ---------------------------------------------------------------------------


def test_it_rewrites_the_table_into_a_new_file_without_dead_tuples(db):
    db.execute(
        """
        CREATE TABLE customers (id bigint PRIMARY KEY, email text, phone text, note text);
        INSERT INTO customers
          SELECT i, 'c' || i || '@example.com', '+3361234' || lpad(i::text, 4, '0'), 'n'
          FROM generate_series(1, 5000) i;
        CREATE TABLE control (id bigint PRIMARY KEY, email text);
        INSERT INTO control SELECT i, 'c' || i || '@example.com' FROM generate_series(1, 5000) i;
        """
    )
    before = _filenode(db, "customers")
    assert _dead_tuples(db, "customers") == 0
    _apply(db, "tables: {customers: {email: {fake: email}, phone: {fake: phone}}}")
    assert _filenode(db, "customers") != before
    assert _dead_tuples(db, "customers") == 0
    # The measurement does see dead tuples when a table is updated in place.
    db.execute("UPDATE control SET email = upper(email)")
    assert _dead_tuples(db, "control") == 5000


def test_it_masks_all_columns_of_a_table_in_one_statement():
    table = parse_policy(
        "tables: {users: {email: {fake: email}, phone: null, note: {keep: 'fine'}, ref: hash}}"
    ).tables["public.users"]
    info = TableInfo(
        schema="public",
        name="users",
        columns=(
            ColumnInfo("id", "bigint", "other", not_null=True, base_type="int8"),
            ColumnInfo("email", "text", "text", base_type="text"),
            ColumnInfo("phone", "text", "text", base_type="text"),
            ColumnInfo("note", "text", "text", base_type="text"),
            ColumnInfo("ref", "text", "text", base_type="text"),
        ),
        primary_key=("id",),
    )
    statement = table_masking_sql(table=table, info=info).as_string()
    assert statement.count("ALTER TABLE") == 1
    assert statement.count("ALTER COLUMN") == 3
    assert '"note"' not in statement  # kept columns are not rewritten
    assert ";" not in statement


def test_it_masks_a_200k_row_table_in_one_statement(db):
    db.execute(
        """
        CREATE TABLE big (
          id bigint PRIMARY KEY, email varchar(120) NOT NULL, name text, phone text,
          ip inet, ref text, created_at timestamptz NOT NULL, payload jsonb
        );
        INSERT INTO big SELECT i, 'user' || i || '@example.com', 'Name ' || i,
          '+33 6 ' || lpad(i::text, 8, '0'),
          ('10.' || (i / 65536) || '.' || (i / 256 % 256) || '.' || (i % 256))::inet,
          'REF-' || i, timestamptz '2024-01-01' + i * interval '1 minute',
          jsonb_build_object('ip', '192.168.0.' || (i % 256), 'n', i)
        FROM generate_series(1, 200000) i;
        """
    )
    policy = parse_policy(
        """
        tables:
          big:
            email: {fake: email}
            name: {fake: name}
            phone: {fake: phone}
            ip: {fake: ip}
            ref: hash
            created_at: {date_shift: 30}
            payload: {json_mask: {ip: {fake: ip}}}
        """
    )
    schema = introspect(db)
    assert validate(policy, schema) == []
    statement = table_masking_sql(
        table=policy.tables["public.big"], info=schema.tables["public.big"]
    )
    db.execute(functions_sql(key=KEY))
    before = _filenode(db, "big")
    db.execute(statement)
    assert _filenode(db, "big") != before
    row = db.execute(
        "SELECT count(*), count(DISTINCT email), count(DISTINCT phone), count(DISTINCT ref),"
        " count(*) FILTER (WHERE email LIKE 'user%'),"
        " count(*) FILTER (WHERE payload->>'ip' LIKE '192.168.%'),"
        " count(*) FILTER (WHERE family(ip) = 4 AND ip << '240.0.0.0/4'),"
        " count(DISTINCT ip) FROM big"
    ).fetchone()
    assert row[:7] == (200000, 200000, 200000, 200000, 0, 0, 200000)
    # IPv4 fakes are 2^28: 200,000 of them meet about n^2 / 2^29 = 75 times (birthdays).
    assert 200000 - 300 < row[7] < 200000


def test_it_inlines_the_masking_functions_into_the_statement(db):
    db.execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, email text, ip text, ref text, d date, s text)"
    )
    db.execute(functions_sql(key=KEY))
    for expression in [
        "fixproof_mask.fake_email(email, 10485760, false)",
        "fixproof_mask.fake_ip(ip, 10485760, false)",
        "fixproof_mask.hash_text(ref, 64)",
        "fixproof_mask.hash_bigint(id)",
        "fixproof_mask.mask(s, 0, 2)",
        "d + fixproof_mask.shift_days('public.t:' || id::text, 30)",
    ]:
        plan = "\n".join(
            row[0] for row in db.execute(f"EXPLAIN VERBOSE SELECT {expression} FROM t")
        )
        assert "fixproof_mask." not in plan, expression
        assert "sha256" in plan or "repeat" in plan, expression


def test_it_masks_a_partitioned_table_through_its_parent(db):
    db.execute(
        """
        CREATE TABLE measures (id bigint, day date, email text, PRIMARY KEY (id, day))
          PARTITION BY RANGE (day);
        CREATE TABLE measures_2024 PARTITION OF measures
          FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        CREATE TABLE measures_2025 PARTITION OF measures
          FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        INSERT INTO measures
          SELECT i, date '2024-06-01' + (i % 400), 'm' || i || '@example.com'
          FROM generate_series(1, 1000) i;
        """
    )
    assert sorted(introspect(db).tables) == ["public.measures"]  # partitions follow the parent
    before = {_filenode(db, "measures_2024"), _filenode(db, "measures_2025")}
    _apply(db, "tables: {measures: {email: {fake: email}}}")
    assert not before & {_filenode(db, "measures_2024"), _filenode(db, "measures_2025")}
    assert db.execute(
        "SELECT count(*), count(*) FILTER (WHERE email LIKE '%@example.invalid') FROM measures"
    ).fetchone() == (1000, 1000)


# --- what each strategy does ----------------------------------------------------------------


def test_it_leaves_no_original_value_in_any_masked_column(db):
    db.execute(
        """
        CREATE TABLE people (
          id bigint PRIMARY KEY, email text, first_name text, last_name text, full_name text,
          phone text, street text, company text, bio text, ip inet, ssn text, card text,
          coupon text, born date, profile jsonb, misc json
        );
        INSERT INTO people SELECT i, 'p' || i || '@mail.example', 'First' || i, 'Last' || i,
          'First' || i || ' Last' || i, '+4420' || lpad(i::text, 8, '0'), i || ' Baker Street',
          'Company ' || i, 'Bio of person ' || i,
          ('172.16.' || (i / 256) || '.' || (i % 256))::inet,
          lpad(i::text, 9, '0'), '4000' || lpad(i::text, 12, '0'), 'COUPON' || i,
          date '1980-01-01' + i,
          jsonb_build_object('ip', '10.1.' || (i / 256) || '.' || (i % 256), 'iban', 'DE' || i,
                             'email', 'p' || i || '@mail.example', 'ok', 'stays'),
          json_build_object('token', 'secret-' || i)
        FROM generate_series(1, 2000) i;
        """
    )
    originals = {
        row[0]: row[1:] for row in db.execute("SELECT id, * FROM people ORDER BY id").fetchall()
    }
    columns = [d.name for d in db.execute("SELECT * FROM people LIMIT 0").description]
    _apply(
        db,
        """
        tables:
          people:
            email: {fake: email}
            first_name: {fake: first_name}
            last_name: {fake: last_name}
            full_name: {fake: name}
            phone: {fake: phone}
            street: {fake: address}
            company: {fake: company}
            bio: {fake: text}
            ip: {fake: ip}
            ssn: hash
            card: {mask: {first: 0, last: 4}}
            coupon: {constant: "REDACTED"}
            born: {date_shift: 400}
            profile: {json_mask: {ip: {fake: ip}, email: hash, iban: null}}
            misc: {json_drop: [token]}
        """,
    )
    masked = {row[0]: row[1:] for row in db.execute("SELECT id, * FROM people").fetchall()}
    for position, column in enumerate(columns):
        if column in ("id", "born"):
            continue
        before = {json.dumps(values[position], default=str) for values in originals.values()}
        after = {json.dumps(values[position], default=str) for values in masked.values()}
        assert not before & after, column
    # Keys inside the JSON documents, value by value.
    for values in masked.values():
        profile = values[columns.index("profile")]
        assert profile["ok"] == "stays" and profile["iban"] is None
        assert not profile["ip"].startswith("10.1.") and "@" not in profile["email"]
        assert "token" not in values[columns.index("misc")]
    # A mask keeps only what it was told to keep; a date moves (almost always).
    cards = {values[columns.index("card")] for values in masked.values()}
    assert all(card.startswith("************") for card in cards)
    moved = sum(
        masked[i][columns.index("born")] != originals[i][columns.index("born")] for i in originals
    )
    assert moved > 1990


def test_it_drops_and_masks_keys_inside_jsonb_and_leaves_the_rest(db):
    db.execute(
        """
        CREATE TABLE events (id bigint PRIMARY KEY, payload jsonb, raw json);
        INSERT INTO events VALUES
          (1, '{"ip": "10.0.0.1", "email": "a@b.io", "name": "Ann", "n": 1,
                "address": {"street": "1 Main St", "city": "Leeds"}, "card": "4111111111111111"}',
              '{"ip": "10.0.0.1", "keep": true}'),
          (2, '{"email": null, "other": "x"}', '{"other": 1}'),
          (3, '["10.0.0.1", "a@b.io"]', '"just a string"'),
          (4, NULL, NULL),
          (5, '{"address": ["not", "an", "object"]}', '{}');
        """
    )
    _apply(
        db,
        """
        tables:
          events:
            payload:
              json_mask:
                ip: {fake: ip}
                email: hash
                name: {constant: "Someone"}
                address: {json_drop: [street]}
                card: {mask: {first: 0, last: 4}}
            raw: {json_drop: [ip]}
        """,
    )
    rows = {row[0]: row[1:] for row in db.execute("SELECT id, payload, raw FROM events")}
    first = rows[1][0]
    assert ipaddress.ip_address(first["ip"]) in ipaddress.ip_network("240.0.0.0/4")
    assert first["n"] == 1
    assert first["email"] == _hmac("hash:a@b.io").hex()
    assert first["name"] == "Someone"
    assert first["address"] == {"city": "Leeds"}
    assert first["card"] == "************1111"
    assert rows[1][1] == {"keep": True}
    # a JSON null stays null, and a key that was absent is not added
    assert rows[2] == ({"email": None, "other": "x"}, {"other": 1})
    # the rules name keys of objects: any other shape fails closed, to JSON null
    assert rows[3] == (None, None)
    assert db.execute("SELECT payload = 'null'::jsonb FROM events WHERE id = 3").fetchone()[0]
    assert rows[4] == (None, None)
    assert db.execute("SELECT payload IS NULL FROM events WHERE id = 4").fetchone()[0]
    assert rows[5][0] == {"address": None}


def test_it_shifts_dates_by_the_hmac_of_the_primary_key_within_bounds(db):
    db.execute(
        """
        CREATE TABLE visits (id bigint PRIMARY KEY, day date, at timestamptz, other text);
        INSERT INTO visits SELECT i, date '2024-03-01', timestamptz '2024-03-01 12:00+00', 'x'
          FROM generate_series(1, 1000) i;
        """
    )
    _apply(db, "tables: {visits: {day: {date_shift: 30}, at: {date_shift: 30}}}")
    shifts = set()
    for id_, day, at in db.execute("SELECT id, day, at FROM visits").fetchall():
        digest = _hmac(f"row:public.visits:{id_}")
        expected = int.from_bytes(digest[:7], "big") % 61 - 30
        assert (day - dt.date(2024, 3, 1)).days == expected
        # every date column of a row moves by the same days: durations within a row hold
        assert at - dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC) == dt.timedelta(days=expected)
        shifts.add(expected)
    assert min(shifts) == -30 and max(shifts) == 30 and len(shifts) == 61


def test_it_shifts_by_the_original_key_when_the_key_itself_is_hashed(db):
    db.execute(
        """
        CREATE TABLE a (id bigint PRIMARY KEY, day date);
        INSERT INTO a SELECT i, date '2024-03-01' FROM generate_series(1, 50) i;
        """
    )
    _apply(db, "tables: {a: {id: hash, day: {date_shift: 10}}}")
    for id_ in range(1, 51):
        hashed = int.from_bytes(_hmac(f"hash:{id_}")[:8], "big") & (2**63 - 1)
        day = db.execute("SELECT day FROM a WHERE id = %s", [hashed]).fetchone()[0]
        shift = int.from_bytes(_hmac(f"row:public.a:{id_}")[:7], "big") % 21 - 10
        assert day == dt.date(2024, 3, 1) + dt.timedelta(days=shift)


def test_it_masks_short_values_entirely_and_keeps_nulls(db):
    db.execute(
        """
        CREATE TABLE m (id int PRIMARY KEY, code text, coupon text, note text);
        INSERT INTO m VALUES
          (1, 'ABCDEFGH', 'C1', 'n'), (2, 'ABC', NULL, NULL), (3, NULL, 'C3', 'n');
        """
    )
    _apply(
        db,
        "tables: {m: {code: {mask: {first: 1, last: 2}}, coupon: {constant: X}, note: null}}",
    )
    assert db.execute("SELECT code, coupon, note FROM m ORDER BY id").fetchall() == [
        ("A*****GH", "X", None),
        ("***", None, None),
        (None, "X", None),
    ]


def test_it_fits_fakes_into_short_varchar_columns_without_losing_uniqueness(db):
    db.execute(
        """
        CREATE TABLE short (
          id bigint PRIMARY KEY, email varchar(36) UNIQUE, ref varchar(20) UNIQUE,
          login varchar(20) UNIQUE, city varchar(5), phone varchar(20) UNIQUE
        );
        INSERT INTO short
          SELECT i, 'u' || i || '@x.io', 'r' || i, 'login' || i, 'Paris', '0' || (600000000 + i)
          FROM generate_series(1, 3000) i;
        """
    )
    _apply(
        db,
        """
        tables:
          short:
            email: {fake: email}
            ref: hash
            login: {fake: name}
            city: {fake: address}
            phone: {fake: phone}
        """,
    )
    row = db.execute(
        "SELECT max(length(email)), count(DISTINCT email), max(length(ref)), count(DISTINCT ref),"
        " max(length(login)), count(DISTINCT login), max(length(city)), count(DISTINCT phone)"
        " FROM short"
    ).fetchone()
    assert row == (36, 3000, 20, 3000, 20, 3000, 5, 3000)
    shape = r"^[a-z]+\.[0-9a-f]{16}@example\.invalid$"
    assert db.execute("SELECT count(*) FROM short WHERE email !~ %s", [shape]).fetchone()[0] == 0


def test_it_keeps_collation_storage_and_compression_through_the_rewrite(db):
    db.execute(
        """
        CREATE TABLE c (id int PRIMARY KEY, name text COLLATE "C", bio text);
        ALTER TABLE c ALTER COLUMN bio SET STORAGE EXTERNAL, ALTER COLUMN bio SET COMPRESSION pglz;
        INSERT INTO c VALUES (1, 'Ann', 'bio');
        """
    )
    _apply(db, "tables: {c: {name: {fake: first_name}, bio: {fake: text}}}")
    rows = db.execute(
        "SELECT attname, attcollation::regcollation::text, attstorage, attcompression"
        " FROM pg_attribute WHERE attrelid = 'c'::regclass AND attname IN ('name', 'bio')"
        " ORDER BY attname"
    ).fetchall()
    assert rows == [("bio", '"default"', "e", "p"), ("name", '"C"', "x", "")]


def test_it_returns_nothing_for_tables_with_nothing_to_rewrite(db):
    db.execute("CREATE TABLE k (id int PRIMARY KEY, note text); CREATE TABLE s (id int)")
    policy = parse_policy("tables: {k: {note: {keep: reviewed}, _where: 'id > 1'}, s: truncate}")
    schema = introspect(db)
    k, s = policy.tables["public.k"], policy.tables["public.s"]
    assert table_masking_sql(table=k, info=schema.tables["public.k"]) is None
    assert table_masking_sql(table=s, info=schema.tables["public.s"]) is None
    assert truncate_sql(table=k) is None
    assert filter_sql(table=s, info=schema.tables["public.s"]) is None
    assert orphan_cleanup_sql(policy=policy, schema=schema) is None


# --- subsetting ------------------------------------------------------------------------------


def test_it_truncates_and_keeps_only_rows_the_filter_positively_keeps(db):
    db.execute(
        """
        CREATE TABLE sessions (id int PRIMARY KEY);
        INSERT INTO sessions SELECT generate_series(1, 10);
        CREATE TABLE orders (id int PRIMARY KEY, created_at date);
        INSERT INTO orders VALUES
          (1, '2024-01-01'), (2, '2024-06-01'), (3, NULL), (4, '2025-01-01');
        """
    )
    _apply(db, "tables: {sessions: truncate, orders: {_where: \"created_at > '2024-03-01'\"}}")
    assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
    # a NULL filter result is not a yes: row 3 goes
    assert db.execute("SELECT id FROM orders ORDER BY id").fetchall() == [(2,), (4,)]


SHOP = """
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, name text);
CREATE TABLE tags (id int PRIMARY KEY, label text);
CREATE TABLE orders (
  id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users, created_at date NOT NULL
);
CREATE TABLE order_items (
  id bigint PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders,
  parent_id bigint REFERENCES order_items
);
CREATE TABLE invoices (id int PRIMARY KEY, order_id bigint REFERENCES orders ON DELETE SET NULL);
CREATE TABLE order_tags (order_id bigint REFERENCES orders, tag_id int REFERENCES tags);
CREATE TABLE sessions (id int PRIMARY KEY, user_id bigint REFERENCES users);
INSERT INTO users SELECT i, 'u' || i || '@example.com', 'User ' || i FROM generate_series(1, 100) i;
INSERT INTO tags SELECT i, 't' || i FROM generate_series(1, 5) i;
INSERT INTO orders SELECT i, 1 + i % 100, date '2024-01-01' + i FROM generate_series(1, 300) i;
-- chains of ten items crossing orders: an item goes when its order or its parent goes
INSERT INTO order_items SELECT i, 1 + (i * 7) % 300, CASE WHEN i % 10 <> 1 THEN i - 1 END
  FROM generate_series(1, 1000) i;
INSERT INTO invoices SELECT i, i FROM generate_series(1, 300) i;
INSERT INTO order_tags SELECT i, 1 + i % 5 FROM generate_series(1, 300) i;
INSERT INTO sessions SELECT i, 1 + i % 100 FROM generate_series(1, 50) i;
"""

SHOP_POLICY = """
tables:
  users:
    id: hash
    email: {fake: email}
    name: {fake: name}
  orders:
    _where: "created_at >= '2024-07-01'"
    user_id: hash
  tags: truncate
  sessions: truncate
"""


def test_it_keeps_foreign_keys_valid_after_filtering_and_cleaning_orphans(new_db, tmp_path):
    source, target = new_db(), new_db()
    with _connect(source) as conn:
        conn.execute(SHOP)
        kept_orders = {
            row[0] for row in conn.execute("SELECT id FROM orders WHERE created_at >= '2024-07-01'")
        }
        items = conn.execute("SELECT id, order_id, parent_id FROM order_items ORDER BY id")
        kept_items: set[int] = set()
        for id_, order_id, parent_id in items.fetchall():
            if order_id in kept_orders and (parent_id is None or parent_id in kept_items):
                kept_items.add(id_)
    assert 0 < len(kept_items) < 1000  # the filter does cut through the chains

    post_data = _restore_like_the_pipeline(
        source, target, tmp_path / "shop.dump", policy_text=SHOP_POLICY
    )
    assert post_data.returncode == 0, post_data.stderr

    with _connect(target) as conn:
        constraints = conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated"
        ).fetchone()[0]
        assert constraints == 7
        assert {r[0] for r in conn.execute("SELECT id FROM orders")} == kept_orders
        assert {r[0] for r in conn.execute("SELECT id FROM order_items")} == kept_items
        # ON DELETE SET NULL children keep their row and lose the reference
        assert conn.execute("SELECT count(*), count(order_id) FROM invoices").fetchone() == (
            300,
            len(kept_orders),
        )
        assert conn.execute("SELECT count(*) FROM order_tags").fetchone()[0] == 0
        # hashed keys still join: every kept order finds its (hashed) user
        assert conn.execute(
            "SELECT count(*) FROM orders o JOIN users u ON u.id = o.user_id"
        ).fetchone()[0] == len(kept_orders)
        assert conn.execute("SELECT count(*) FROM users WHERE id <= 100").fetchone()[0] < 5


def test_it_builds_unique_indexes_after_masking_10k_distinct_values(new_db, tmp_path):
    source, target = new_db(), new_db()
    with _connect(source) as conn:
        conn.execute(
            """
            CREATE TABLE accounts (
              id bigint PRIMARY KEY, email text NOT NULL UNIQUE, username text NOT NULL UNIQUE,
              phone text UNIQUE, last_ip text UNIQUE, api_ref text UNIQUE, company text
            );
            CREATE UNIQUE INDEX accounts_company_lower ON accounts (lower(company));
            INSERT INTO accounts SELECT i, 'user' || i || '@example.com', 'user' || i,
              '+3361' || lpad(i::text, 7, '0'), '10.9.' || (i / 256) || '.' || (i % 256),
              md5(i::text), 'Company number ' || i
            FROM generate_series(1, 10000) i;
            """
        )
    policy_text = """
        tables:
          accounts:
            email: {fake: email}
            username: {fake: name}
            phone: {fake: phone}
            last_ip: {fake: ip}
            api_ref: hash
            company: {fake: company}
    """
    post_data = _restore_like_the_pipeline(
        source, target, tmp_path / "accounts.dump", policy_text=policy_text
    )
    assert post_data.returncode == 0, post_data.stderr
    with _connect(target) as conn:
        indexes = conn.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'accounts'::regclass AND indisunique"
            " AND indisvalid"
        ).fetchone()[0]
        assert indexes == 7
        assert (
            conn.execute(
                "SELECT count(*) FROM accounts WHERE email LIKE 'user%' OR username LIKE 'user%'"
            ).fetchone()[0]
            == 0
        )


# --- masking as the rows load ------------------------------------------------------------------

LOADED_TABLE = """
CREATE TABLE people (
  id bigint PRIMARY KEY, email varchar(40) UNIQUE, first_name text, full_name text,
  phone text, street text, company text, bio text, ip inet, ip_text text, ssn text,
  ref uuid, code text COLLATE "C", coupon text, note text, born date, seen timestamp,
  at timestamptz, profile jsonb, misc json, fixproof_value_1 text
);
ALTER TABLE people ALTER COLUMN bio SET STORAGE EXTERNAL;
"""
LOADED_ROWS = """
INSERT INTO people
SELECT i, 'p' || i || '@mail.example', 'First' || (i % 7), 'First' || i || ' Last' || i,
  '+4420' || lpad(i::text, 8, '0'), i || ' Baker Street', 'Company ' || i, 'Bio ' || i,
  ('172.16.' || (i / 256) || '.' || (i % 256))::inet, ' 10.2.' || (i % 256) || '.1 ',
  lpad(i::text, 9, '0'), md5(i::text)::uuid, 'CODE' || i, CASE WHEN i % 3 > 0 THEN 'C' END,
  'note', date '1980-01-01' + i, timestamp '2024-01-01' + i * interval '1 hour',
  timestamptz '2024-01-01 00:00+00' + i * interval '1 hour',
  CASE i % 5
    WHEN 0 THEN jsonb_build_object('ip', '10.1.0.' || (i % 256), 'email', 'j' || i || '@x.io',
                                   'card', '4000' || i, 'id', i, 'ok', 'stays',
                                   'sub', jsonb_build_object('x', 1, 'y', i))
    WHEN 1 THEN jsonb_build_object('email', null, 'other', i)
    WHEN 2 THEN '["10.0.0.1"]'::jsonb
    WHEN 3 THEN 'null'::jsonb
  END,
  CASE WHEN i % 4 > 0 THEN json_build_object('token', 't' || i, 'who', 'Who ' || i) END,
  'mine ' || i
FROM generate_series(1, 3000) i;
"""
LOADED_POLICY = """
tables:
  people:
    email: {fake: email}
    first_name: {fake: username}
    full_name: {fake: text}
    phone: {fake: phone}
    street: {fake: text}
    company: hash
    bio: {fake: text}
    ip: {fake: ip}
    ip_text: {fake: ip}
    ssn: hash
    ref: hash
    code: {mask: {first: 1, last: 2}}
    coupon: {constant: X}
    note: null
    born: {date_shift: 30}
    seen: {date_shift: 30}
    at: {date_shift: 30}
    profile:
      json_mask:
        ip: {fake: ip}
        email: {fake: email}
        card: {mask: {first: 0, last: 2}}
        id: hash
        sub: {json_drop: [x]}
    misc: {json_mask: {token: hash, who: {fake: text}}}
"""


def test_masking_as_the_rows_load_gives_the_values_of_the_one_alter(db):
    db.execute(LOADED_TABLE)
    db.execute(LOADED_ROWS)
    schema = introspect(db)  # with its keys: the restored copy gets them in post-data
    policy = parse_policy(LOADED_POLICY)
    assert validate(policy, schema) == []
    table, info = policy.tables["public.people"], schema.tables["public.people"]
    _apply(db, LOADED_POLICY, schema=schema)
    expected = db.execute("SELECT * FROM people ORDER BY id").fetchall()

    db.execute("DROP TABLE people")
    db.execute(LOADED_TABLE)
    masking = load_masking_sql(table=table, info=info)
    db.execute(functions_sql(key=KEY))
    # PostgreSQL refuses a generation expression that is not immutable: this is the check
    # that every value computed as rows load may be.
    db.execute(masking.prepare)
    assert "fixproof_value_2" in [
        d.name for d in db.execute("SELECT * FROM people LIMIT 0").description
    ]
    db.execute(LOADED_ROWS)
    before = _filenode(db, "people")
    db.execute(masking.rewrite)
    db.execute(DROP_FUNCTIONS)

    assert db.execute("SELECT * FROM people ORDER BY id").fetchall() == expected
    assert _filenode(db, "people") != before
    assert _dead_tuples(db, "people") == 0
    # The table as it was restored: its columns in order, logged, collation and storage
    # kept, and none of the columns that computed the values.
    columns = db.execute(
        "SELECT attname, attcollation::regcollation::text, attstorage FROM pg_attribute"
        " WHERE attrelid = 'people'::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum"
    ).fetchall()
    assert [c[0] for c in columns] == [
        "id", "email", "first_name", "full_name", "phone", "street", "company", "bio", "ip",
        "ip_text", "ssn", "ref", "code", "coupon", "note", "born", "seen", "at", "profile",
        "misc", "fixproof_value_1",
    ]  # fmt: skip
    assert ("code", '"C"', "x") in columns and ("bio", '"default"', "e") in columns
    persistence = "SELECT relpersistence FROM pg_class WHERE relname = 'people'"
    assert db.execute(persistence).fetchone()[0] == "p"
    assert db.execute("SELECT count(*) FROM pg_attrdef").fetchone()[0] == 0


def test_it_loads_each_hmac_once_and_leaves_the_rewrite_none_to_compute():
    policy = parse_policy(
        "tables: {u: {email: {fake: email}, ip: {fake: ip}, born: {date_shift: 10},"
        " at: {date_shift: 20}, doc: {json_mask: {who: {fake: email}, ip: {fake: ip}}}}}"
    )
    info = TableInfo(
        schema="public",
        name="u",
        columns=(
            ColumnInfo("id", "bigint", "other", not_null=True, base_type="int8"),
            ColumnInfo("email", "text", "text", base_type="text"),
            ColumnInfo("ip", "text", "text", base_type="text"),
            ColumnInfo("born", "date", "date", base_type="date"),
            ColumnInfo("at", "timestamp with time zone", "date", base_type="timestamptz"),
            ColumnInfo("doc", "jsonb", "json", base_type="jsonb"),
        ),
        primary_key=("id",),
    )
    masking = load_masking_sql(table=policy.tables["public.u"], info=info)
    prepare, rewrite = masking.prepare.as_string(), masking.rewrite.as_string()
    # email and the one in doc: their digests load, the rewrite builds the fakes from them
    # (they look into them several times); ip: one look, the whole fake loads; the two
    # shifted dates share the row's digest.
    assert prepare.count("hmac_text") == 4 and prepare.count("fake_ip") == 1
    assert prepare.count("'row'") == 1
    assert '"mk_email"("fixproof_value_1"' in rewrite
    assert "hmac" not in rewrite and "fake_" not in rewrite and "shift_days" not in rewrite
    assert prepare.startswith('ALTER TABLE "public"."u" SET UNLOGGED')
    assert rewrite.endswith("SET LOGGED")


def test_its_fake_ip_keeps_the_documented_format_and_the_family_of_the_original(db):
    db.execute(functions_sql(key=KEY))
    query = "SELECT fixproof_mask.fake_ip(%s, 10485760, %s)"
    for value in ["10.0.0.1", " 192.168.1.20 ", "10.1.0.0/16", "2001:DB8::1"]:
        digest = _hmac(f"ip:{value.strip().lower()}")
        groups = ":".join(digest[8:16].hex()[i : i + 4] for i in range(0, 16, 4))
        fake, unique_fake = (db.execute(query, [value, u]).fetchone()[0] for u in (False, True))
        if ":" in value:
            assert fake == unique_fake == f"2001:db8::{groups}"
        else:
            # IPv4 in 240.0.0.0/4, reserved; a unique column's keeps 64 bits of the digest.
            assert fake == f"{240 + digest[8] % 16}.{digest[9]}.{digest[10]}.{digest[11]}"
            assert unique_fake == f"2001:db8::{groups}"


def test_a_fake_ipv4_fits_a_varchar_15_an_inet_checked_for_family_4_and_a_cidr(db):
    db.execute(
        """
        CREATE TABLE hits (id int PRIMARY KEY, ip varchar(15), addr inet CHECK (family(addr) = 4),
                           net cidr, payload jsonb);
        INSERT INTO hits SELECT i, '10.0.' || (i % 250) || '.' || (i / 250),
                                ('192.168.' || (i % 250) || '.7')::inet,
                                ('10.' || (i % 250) || '.0.0/16')::cidr,
                                jsonb_build_object('ip', '172.16.0.' || (i % 250),
                                                   'v6', '2001:db8::' || i)
          FROM generate_series(1, 500) i;
        """
    )
    before = db.execute("SELECT ip, addr::text, net::text FROM hits ORDER BY id").fetchall()

    _apply(
        db,
        "tables: {hits: {ip: {fake: ip}, addr: {fake: ip}, net: {fake: ip},"
        " payload: {json_mask: {ip: {fake: ip}, v6: {fake: ip}}}}}",
    )

    rows = db.execute(
        "SELECT ip, addr::text, net::text, payload->>'ip', payload->>'v6' FROM hits ORDER BY id"
    ).fetchall()
    v4 = re.compile(r"2(4\d|5[0-5])\.\d{1,3}\.\d{1,3}\.\d{1,3}(/32)?")
    assert all(v4.fullmatch(value) for row in rows for value in row[:4])
    assert all(row[4].startswith("2001:db8::") for row in rows)
    assert not {v for row in before for v in row} & {v for row in rows for v in row}


# --- the native HMAC (native/fixproof_native.c, installed by `make native`) -----------------


def test_the_native_hmac_extension_is_installed_for_the_masking(db):
    # `make test` builds and installs it: without it the masking is three times slower.
    assert db.execute(NATIVE_AVAILABLE).fetchone()[0] is True


@pytest.mark.parametrize(
    "key",
    [KEY, b"k" * 64, b"a key longer than one sha256 block of sixty-four bytes, hashed first"],
)
def test_the_native_hmac_gives_the_values_of_the_sql_one(db, key):
    messages = [b"", b"alice@example.com", "Zoë \\x41 €".encode(), bytes(range(256)), b"x" * 1000]
    db.execute(functions_sql(key=key, native=True))
    native = [db.execute("SELECT fixproof_mask.hmac(%s)", [m]).fetchone()[0] for m in messages]
    native_text = db.execute("SELECT fixproof_mask.hmac_text('ip', %s)", ["Zoë \\x41"]).fetchone()
    db.execute(DROP_FUNCTIONS)
    db.execute(functions_sql(key=key))
    plain = [db.execute("SELECT fixproof_mask.hmac(%s)", [m]).fetchone()[0] for m in messages]
    plain_text = db.execute("SELECT fixproof_mask.hmac_text('ip', %s)", ["Zoë \\x41"]).fetchone()

    assert native == plain == [hmac.new(key, m, hashlib.sha256).digest() for m in messages]
    assert native_text == plain_text
    # One statement, many rows: the key's digest states are reused from row to row.
    db.execute(DROP_FUNCTIONS)
    db.execute(functions_sql(key=key, native=True))
    rows = db.execute(
        "SELECT fixproof_mask.hmac_text('ip', i::text) FROM generate_series(1, 500) i"
    ).fetchall()
    assert [r[0] for r in rows] == [
        hmac.new(key, f"ip:{i}".encode(), hashlib.sha256).digest() for i in range(1, 501)
    ]


def test_the_native_helpers_give_the_fakes_of_the_sql_ones(db):
    values = ["10.0.0.1", " 10.0.0.1 ", "2001:DB8::1", "", "fe80::1%eth0", "Zoë"]
    query = (
        "SELECT fixproof_mask.fake_ip(v, 100, false), fixproof_mask.fake_email(v, 100, true),"
        " fixproof_mask.hash_text(v, 64) FROM unnest(%s::text[]) v"
    )
    db.execute(functions_sql(key=KEY, native=True))
    native = db.execute(query, [values]).fetchall()
    db.execute(DROP_FUNCTIONS)
    db.execute(functions_sql(key=KEY))

    assert native == db.execute(query, [values]).fetchall()
    assert native[0][0] == native[1][0]  # normalised first


def test_the_native_shape_gives_the_fakes_of_the_sql_one(db):
    values = [
        "+33 6 12 34 56 78", "06.12.34.56.78", "0044 20 7946 0958", "75011", "SW1A 1AA",
        "ab-12-CD", "Zoë-42-é", "", "-", "0000", "007", "x" * 40, "A1b2C3d4E5f6G7h8I9j0K1l2M3",
        "12345678901234567890123456789012345", "zz", "9",
    ]  # fmt: skip
    query = (
        "SELECT v, fixproof_mask.shape(v, d, k, l) FROM unnest(%s::text[]) v,"
        " unnest(ARRAY['phone', 'code']) d, unnest(ARRAY[0, 2]) k, unnest(ARRAY[false, true]) l"
        " ORDER BY v, d, k, l"
    )
    db.execute(functions_sql(key=KEY, native=True))
    native = db.execute(query, [values]).fetchall()
    null = db.execute("SELECT fixproof_mask.shape(NULL, 'phone', 0, false)").fetchone()[0]
    db.execute(DROP_FUNCTIONS)
    db.execute(functions_sql(key=KEY))

    assert native == db.execute(query, [values]).fetchall()
    assert len(native) == len(values) * 8 and null is None
    # Not the identity: the digits and letters did change.
    # Not the identity: of the 128 fakes, only those with nothing to replace (empty, "-",
    # all kept or leading zeros) are their value: 30 of them.
    assert sum(fake == value for value, fake in native) == 30


def test_the_native_map_lookup_gives_the_fakes_of_the_sql_one_in_columns_and_arrays(new_db):
    people = """
        CREATE TABLE people (id int PRIMARY KEY, last_name text, first_name varchar(20),
                             aliases text[]);
        INSERT INTO people SELECT i, 'Surname' || (i % 700), (ARRAY['Zoë', 'Bruno', ''])[1 + i % 3],
                                  ARRAY['Surname' || (i % 7), NULL, 'Zoë']
          FROM generate_series(1, 3000) i;
        INSERT INTO people VALUES (3001, NULL, NULL, NULL), (3002, 'Dupont', 'Élodie', '{}');
    """
    policy = (
        "tables: {people: {last_name: {fake: last_name}, first_name: {fake: first_name},"
        " aliases: {fake: last_name}}}"
    )
    masked = []
    for native in (True, False):
        with _connect(new_db()) as conn:
            conn.execute(people)
            _apply(conn, policy, native=native)
            masked.append(conn.execute("SELECT * FROM people ORDER BY id").fetchall())

    assert masked[0] == masked[1]
    assert masked[0][0][1] != "Surname1" and masked[0][-1][1] != "Dupont"
    assert masked[0][-2] == (3001, None, None, None)
    # In an array as in a column, the same name gets the same fake (ids 1 and 8: Surname1).
    assert masked[0][0][3][1] is None and masked[0][0][3][0] == masked[0][7][3][0]
    assert masked[0][0][3][0] == masked[0][0][1]


def test_the_native_map_lookup_reads_a_map_changed_earlier_in_its_transaction(db):
    db.execute(functions_sql(key=KEY, native=True))

    def fake(value: str) -> str | None:
        return db.execute("SELECT fixproof_mask.mapped('g', %s)", [value]).fetchone()[0]

    with db.transaction():
        db.execute("INSERT INTO fixproof_mask.map (grp, orig, fake) VALUES ('g', 'a', 'x')")
        assert fake("a") == "x" and fake("b") is None
        db.execute("UPDATE fixproof_mask.map SET fake = 'y' WHERE orig = 'a'")
        db.execute("INSERT INTO fixproof_mask.map (grp, orig, fake) VALUES ('g', 'b', 'z')")
        assert fake("a") == "y" and fake("b") == "z"
    db.execute("UPDATE fixproof_mask.map SET fake = 'w' WHERE orig = 'a'")
    assert fake("a") == "w"


def test_the_native_hex_groups_refuse_bytes_out_of_range(db):
    db.execute(functions_sql(key=KEY, native=True))

    with pytest.raises(psycopg.errors.InvalidParameterValue, match="bytes 30 to 33"):
        db.execute("SELECT fixproof_mask.fixproof_hex_groups(fixproof_mask.hmac('x'), 30, 2)")


def test_the_native_hmac_goes_with_the_helper_functions(db):
    db.execute(functions_sql(key=KEY, native=True))
    db.execute(DROP_FUNCTIONS)

    assert (
        db.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'fixproof_native'"
        ).fetchone()[0]
        == 0
    )
    assert db.execute(NATIVE_AVAILABLE).fetchone()[0] is True


# --- masking by twins: no rewrite -----------------------------------------------------------

TWIN_TABLE = """
CREATE SEQUENCE twin_seq;
CREATE TABLE twins (
    id bigint NOT NULL DEFAULT nextval('twin_seq'),
    code text COLLATE "C" NOT NULL DEFAULT 'none',
    kind text,
    payload jsonb,
    ref text NOT NULL,
    note text DEFAULT 'n/a',
    at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN twins.note IS 'free text, reviewed';
COMMENT ON COLUMN twins.ref IS 'the partner''s reference';
ALTER TABLE twins ALTER COLUMN note SET STORAGE EXTERNAL, ALTER COLUMN note SET STATISTICS 500,
  ALTER COLUMN at SET (n_distinct = -0.5);
"""
TWIN_ROWS = """
INSERT INTO twins (id, code, kind, payload, ref, note, at)
SELECT i, 'CODE-' || i, 'k' || i % 3,
       CASE i % 4 WHEN 0 THEN jsonb_build_object('ip', '10.0.' || i % 250 || '.' || i % 7, 'n', i)
                  WHEN 1 THEN jsonb_build_object('n', i) WHEN 2 THEN 'null'::jsonb END,
       'REF' || i, CASE WHEN i % 5 > 0 THEN 'note ' || i END,
       timestamptz '2026-01-01' + i * interval '1 hour'
FROM generate_series(1, 2000) i;
"""
TWIN_POLICY = """
tables:
  twins:
    code: {mask: {first: 2, last: 1}}
    payload: {json_mask: {ip: {fake: ip}}}
    ref: hash
    note: {keep: reviewed}
"""
_COLUMNS_AS_RESTORED = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attcollation::regcollation::text, a.attstorage,
       a.attstattarget, col_description(a.attrelid, a.attnum),
       ARRAY(SELECT o FROM unnest(a.attoptions) o WHERE o LIKE 'n\\_distinct%%')
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = 'twins'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""


def _twins(db: psycopg.Connection, policy_text: str = TWIN_POLICY):
    db.execute(TWIN_TABLE)
    schema = introspect(db)
    policy = parse_policy(policy_text)
    assert validate(policy, schema) == []
    info = schema.tables["public.twins"]
    return policy, schema, info


def test_masking_by_twins_gives_the_values_of_the_one_alter_without_rewriting(db):
    policy, schema, info = _twins(db)
    db.execute(TWIN_ROWS)
    as_restored = db.execute(_COLUMNS_AS_RESTORED).fetchall()
    _apply(db, TWIN_POLICY, schema=schema)
    expected = db.execute("SELECT * FROM twins ORDER BY id").fetchall()
    db.execute("DROP TABLE twins; DROP SEQUENCE twin_seq")

    db.execute(TWIN_TABLE)
    db.execute(functions_sql(key=KEY, native=True))
    twins = twin_masking_sql(
        table=policy.tables["public.twins"], info=info, restored=restored_columns(db, info)
    )
    assert twins is not None
    with db.transaction():
        for statement in twins.prepare:
            db.execute(statement)
    db.execute(TWIN_ROWS)  # by column name, as pg_restore and the split loader do
    before = _filenode(db, "twins")
    with db.transaction():
        for statement in twins.finish:
            db.execute(statement)
    db.execute(DROP_FUNCTIONS)

    assert db.execute("SELECT * FROM twins ORDER BY id").fetchall() == expected
    assert db.execute("SELECT count(*) FROM twins WHERE ref LIKE 'REF%'").fetchone()[0] == 0
    assert _filenode(db, "twins") == before  # no rewrite
    assert _dead_tuples(db, "twins") == 0
    # The table as restored: columns in order with their types, NOT NULL, defaults,
    # collation, storage, statistics target, options and comments.
    assert db.execute(_COLUMNS_AS_RESTORED).fetchall() == as_restored
    # The sequence still feeds the default, and the helper functions are gone from it.
    db.execute("INSERT INTO twins (ref) VALUES ('new')")
    assert db.execute("SELECT id, code FROM twins WHERE ref = 'new'").fetchone() == (1, "none")


@pytest.mark.parametrize(
    ("setup", "policy_extra"),
    [
        # A sequence owned by a column after the first masked one would go with it.
        ("ALTER SEQUENCE twin_seq OWNED BY twins.note", ""),
        # So would a check constraint, a view or another column reading it.
        ("ALTER TABLE twins ADD CHECK (at > '2000-01-01')", ""),
        ("ALTER TABLE twins ADD COLUMN up text GENERATED ALWAYS AS (upper(note)) STORED", ""),
        ("ALTER TABLE twins ADD COLUMN n int GENERATED ALWAYS AS IDENTITY", ""),
        # An e-mail fake looks into its HMAC three times: loading digests is cheaper.
        ("ALTER TABLE twins ADD COLUMN email text", "    email: {fake: email}\n"),
        ("", "    at: {date_shift: 3}\n"),
    ],
)
def test_a_table_is_masked_by_a_rewrite_when_twins_would_change_it(db, setup, policy_extra):
    db.execute(TWIN_TABLE)
    if setup:
        db.execute(setup)
    schema = introspect(db)
    policy = parse_policy(TWIN_POLICY + policy_extra)
    info = schema.tables["public.twins"]
    restored = restored_columns(db, info)

    assert (
        twin_masking_sql(table=policy.tables["public.twins"], info=info, restored=restored) is None
    )


@pytest.mark.parametrize(
    "policy_text", [TWIN_POLICY + '    _where: "id > 10"\n', "tables: {twins: truncate}"]
)
def test_a_table_that_loses_rows_is_not_masked_by_twins(db, policy_text):
    policy, _schema, info = _twins(db, policy_text)
    restored = restored_columns(db, info)

    assert (
        twin_masking_sql(table=policy.tables["public.twins"], info=info, restored=restored) is None
    )


# --- shapes, maps and the types beyond text --------------------------------------------


def test_shape_fakes_keep_each_characters_class_and_place_and_stay_distinct(db):
    db.execute(functions_sql(key=KEY))
    originals = [f"+33 6 {i:02d} {i * 7 % 100:02d} 45 {i % 97:02d}" for i in range(2000)]
    fakes = [
        row[0]
        for row in db.execute(
            "SELECT fixproof_mask.fake_phone(v) FROM unnest(%s::text[]) WITH ORDINALITY AS"
            " u(v, i) ORDER BY i",
            [originals],
        )
    ]
    assert len(set(fakes)) == len(set(originals))  # a bijection: distinct stays distinct
    for original, fake in zip(originals, fakes, strict=True):
        assert len(fake) == len(original)
        assert [c.isdigit() for c in fake] == [c.isdigit() for c in original]
        assert fake[:4] == "+33 "  # the country code stays
    assert sum(f == o for f, o in zip(originals, fakes, strict=True)) == 0
    shapes = db.execute(
        "SELECT fixproof_mask.fake_postcode('SW1A 1AA'), fixproof_mask.fake_username('jo.doe_42'),"
        " fixproof_mask.fake_code(''), fixproof_mask.fake_code(NULL)"
    ).fetchone()
    assert re.fullmatch(r"[A-Z]{2}\d[A-Z] \d[A-Z]{2}", shapes[0])
    assert re.fullmatch(r"[a-z]{2}\.[a-z]{3}_\d{2}", shapes[1])
    assert shapes[2:] == ("", None)


def test_integer_and_numeric_hashes_stay_in_their_type_and_keep_keys_distinct(db):
    db.execute(functions_sql(key=KEY))
    small = db.execute(
        "SELECT count(DISTINCT h), min(h), max(h), count(*) FILTER (WHERE h = g)"
        " FROM (SELECT g, fixproof_mask.hash_int(g, 15) AS h"
        "       FROM generate_series(-5000, 4999) g) s"
    ).fetchone()
    assert small[0] == 10_000 and -32768 <= small[1] and small[2] <= 32767 and small[3] < 5
    signs = db.execute(
        "SELECT bool_and(sign(fixproof_mask.hash_int(g, 31)) = sign(g) OR g = 0)"
        " FROM generate_series(-3000, 3000, 7) g"
    ).fetchone()[0]
    assert signs is True
    amounts = db.execute(
        "SELECT fixproof_mask.shape('-1234.50', 'hash', 0, true),"
        " fixproof_mask.shape('0.07', 'hash', 0, true)"
    ).fetchone()
    assert re.fullmatch(r"-[1-9]\d{3}\.\d{2}", amounts[0]) and amounts[0] != "-1234.50"
    assert re.fullmatch(r"0\.\d{2}", amounts[1])


def test_mapped_fakes_keep_the_distinct_count_the_case_and_blank_values_and_no_original(db):
    db.execute(
        """
        CREATE TABLE people (id int PRIMARY KEY, last_name text, city varchar(12));
        INSERT INTO people SELECT i, 'Surname' || (i % 1499), 'TOWN' || (i % 40)
          FROM generate_series(1, 6000) i;
        INSERT INTO people VALUES (6001, '', ' '), (6002, NULL, NULL), (6003, 'Dupont', 'Paris');
        """
    )
    before = db.execute(
        "SELECT count(DISTINCT last_name), count(DISTINCT city) FROM people"
    ).fetchone()
    originals = {r[0] for r in db.execute("SELECT last_name FROM people")} | {
        r[0] for r in db.execute("SELECT city FROM people")
    }
    _apply(db, "tables: {people: {last_name: {fake: last_name}, city: {fake: city}}}")
    after = db.execute(
        "SELECT count(DISTINCT last_name), count(DISTINCT city) FROM people"
    ).fetchone()
    assert after == before
    rows = dict(db.execute("SELECT id, (last_name, city) FROM people").fetchall())
    assert rows[6001] == ("", " ") and rows[6002] == (None, None)
    masked = {v for pair in rows.values() for v in pair if v and v.strip()}
    assert not {v.lower() for v in masked} & {o.lower() for o in originals if o}
    assert all(len(city) <= 12 for _, city in rows.values() if city)
    assert rows[1][1].isupper()  # TOWN1 was in capitals
    # Equal originals, equal fakes: the column still groups as it did.
    assert len({rows[i][0] for i in (1, 1500, 2999)}) == 1


def test_text_arrays_offsets_and_binary_hashes_are_masked_in_their_own_types(db):
    db.execute(
        """
        CREATE TABLE t (id int PRIMARY KEY, emails varchar(200)[], tags text[],
                        score int, price numeric(7,2), blob bytea);
        INSERT INTO t VALUES
          (1, ARRAY['a@x.org', 'b@y.org'], ARRAY['vip', ''], 50, 12.50, '\\x0102'),
          (2, '{}', NULL, 7, 0.99, NULL);
        """
    )
    _apply(
        db,
        "tables: {t: {emails: {fake: email}, tags: hash, score: {offset: 5},"
        " price: {offset: 0.5}, blob: hash}}",
    )
    rows = db.execute("SELECT emails, tags, score, price, blob FROM t ORDER BY id").fetchall()
    first, second = rows
    assert len(first[0]) == 2 and all(e.endswith("@example.invalid") for e in first[0])
    assert first[1][1] == "" and first[1][0] != "vip" and len(first[1][0]) == 64
    assert 45 <= first[2] <= 55 and abs(float(first[3]) - 12.50) <= 0.5
    assert isinstance(first[4], bytes) and len(first[4]) == 32
    assert second[0] == [] and second[1] is None and second[4] is None
