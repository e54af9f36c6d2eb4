"""Parsing the masking policy, hashing it, and validating it against a real schema."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from perfruns.masking import (
    Policy,
    PolicyError,
    Schema,
    functions_sql,
    introspect,
    parse_policy,
    policy_hash,
    validate,
)

SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}

ISSUE_POLICY = """\
strict: false            # optional; true = every column of the source must be listed
tables:
  users:                 # schema-qualified allowed ("billing.invoices"), public by default
    email: {fake: email}
    first_name: {fake: first_name}
    phone: null
    notes: {keep: "free text reviewed, no PII"}
    profile: {json_drop: [ip, iban]}
  invitations:
    invitee_email: {fake: email}   # same input, same output as users.email
  events:
    payload: {json_mask: {ip: {fake: ip}, email: hash}}
    created_at: {date_shift: 30}
  sessions: truncate
  orders:
    _where: "created_at > now() - interval '90 days'"   # optional row filter (subsetting)
    card_last4: {mask: {first: 0, last: 2}}
    coupon: {constant: "REDACTED"}
    customer_ref: hash
  billing.invoices:
    iban: hash
"""

SOURCE = """
CREATE SCHEMA billing;
CREATE DOMAIN email_address AS varchar(50);
CREATE TABLE users (
  id bigint PRIMARY KEY, email varchar(120) NOT NULL UNIQUE, first_name text, phone text,
  notes text NOT NULL, profile jsonb, created_at timestamptz NOT NULL DEFAULT now(),
  age int, short_code varchar(10), slug text, flag boolean, amount numeric(10, 2),
  birthday date, ip inet, small_ref int, work_email email_address, tags text[],
  nickname text, upper_nick text GENERATED ALWAYS AS (upper(nickname)) STORED
);
CREATE UNIQUE INDEX users_slug ON users (lower(slug));
CREATE TABLE invitations (id bigint PRIMARY KEY, invitee_email text,
                          user_id bigint REFERENCES users);
CREATE TABLE events (id bigint PRIMARY KEY, payload jsonb, created_at timestamptz);
CREATE TABLE sessions (id text PRIMARY KEY, user_id bigint REFERENCES users);
CREATE TABLE orders (
  id bigint PRIMARY KEY, created_at timestamptz, card_last4 char(4), coupon text,
  customer_ref text, UNIQUE (customer_ref, coupon)
);
CREATE TABLE billing.invoices (id int PRIMARY KEY, iban text);
CREATE TABLE logs (at timestamptz, message text);
CREATE TABLE measures (id int, day date NOT NULL) PARTITION BY RANGE (day);
CREATE TABLE measures_2024 PARTITION OF measures FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
"""


@pytest.fixture(scope="module")
def source() -> Iterator[psycopg.Connection]:
    name = f"fixproof_masktest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(**SERVER, dbname="postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(**SERVER, dbname=name, autocommit=True) as conn:
            conn.execute(SOURCE)
            # our own helper schema must never look like user data
            conn.execute(functions_sql(key=b"0123456789abcdef"))
            conn.execute("CREATE TABLE fixproof_mask.leftover (id int)")
            yield conn
    finally:
        with psycopg.connect(**SERVER, dbname="postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def schema(source) -> Schema:
    return introspect(source)


def _problems(policy_text: str, schema: Schema) -> list[str]:
    return validate(parse_policy(textwrap.dedent(policy_text)), schema)


# --- parsing ---------------------------------------------------------------------------------


def test_it_parses_the_policy_of_the_issue():
    policy = parse_policy(ISSUE_POLICY)
    assert policy.strict is False
    assert sorted(policy.tables) == [
        "billing.invoices",
        "public.events",
        "public.invitations",
        "public.orders",
        "public.sessions",
        "public.users",
    ]
    users = policy.tables["public.users"]
    assert users.columns["email"].kind == "fake" and users.columns["email"].fake == "email"
    assert users.columns["phone"].kind == "null"
    assert users.columns["notes"].reason == "free text reviewed, no PII"
    assert users.columns["profile"].keys == ("ip", "iban")
    payload = policy.tables["public.events"].columns["payload"]
    assert [(key, rule.kind) for key, rule in payload.fields] == [("ip", "fake"), ("email", "hash")]
    assert policy.tables["public.events"].columns["created_at"].days == 30
    assert policy.tables["public.sessions"].truncate
    orders = policy.tables["public.orders"]
    assert orders.where == "created_at > now() - interval '90 days'"
    assert (orders.columns["card_last4"].first, orders.columns["card_last4"].last) == (0, 2)
    assert orders.columns["coupon"].value == "REDACTED"
    assert orders.columns["customer_ref"].kind == "hash"
    invoices = policy.tables["billing.invoices"]
    assert (invoices.schema, invoices.name) == ("billing", "invoices")


def test_it_reads_column_names_as_written_even_when_yaml_would_make_them_booleans():
    policy = parse_policy("tables:\n  t:\n    on: null\n    'yes': hash\n    '123': null\n")
    assert sorted(policy.tables["public.t"].columns) == ["123", "on", "yes"]


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("tables:\n  users:\n    email: {fake: email\n", "not valid YAML", 4),
        ("tables:\n  users:\n    email: [a\n    b: c\n", "not valid YAML", 4),
        (
            "tables:\n  users:\n    email: {fakee: email}\n",
            "users.email: unknown strategy 'fakee'",
            3,
        ),
        ("tables:\n  users:\n    email: scramble\n", "users.email: unknown strategy 'scramble'", 3),
        ("tables:\n  users:\n    email: {fake: unicorn}\n", "fake kind 'unicorn' is not one of", 3),
        ("tables:\n  users:\n    notes: keep\n", "users.notes: keep needs a reason", 3),
        ("tables:\n  users:\n    notes: {keep: '  '}\n", "users.notes: keep needs a reason", 3),
        ("tables:\n  users:\n    notes: {keep: null}\n", "users.notes: keep needs a reason", 3),
        (
            "tables:\n  e:\n    at: {date_shift: 0}\n",
            "date_shift must be a positive whole number",
            3,
        ),
        (
            "tables:\n  e:\n    at: {date_shift: -3}\n",
            "date_shift must be a positive whole number",
            3,
        ),
        ("tables:\n  e:\n    at: {date_shift: '30'}\n", "date_shift must be a positive whole", 3),
        ("tables:\n  e:\n    at: {date_shift: 1.5}\n", "date_shift must be a positive whole", 3),
        ("tables:\n  e:\n    at: {date_shift: true}\n", "date_shift must be a positive whole", 3),
        ("tables:\n  e:\n    at: {date_shift: 99999}\n", "(1 to 36500)", 3),
        (
            "tables:\n  o:\n    card: {mask: {first: 0}}\n",
            "mask needs whole numbers first and last",
            3,
        ),
        ("tables:\n  o:\n    card: {mask: {first: a, last: 2}}\n", "mask needs whole numbers", 3),
        ("tables:\n  o:\n    card: {mask: {first: -1, last: 2}}\n", "mask needs whole numbers", 3),
        ("tables:\n  o:\n    card: {mask: 4}\n", "mask needs whole numbers first and last", 3),
        ("tables:\n  o:\n    card: mask\n", "o.card: mask needs a value", 3),
        ("strict: true\nversion: 2\ntables: {}\n", "unknown top-level key 'version'", 2),
        ("strict: maybe\ntables: {}\n", "strict must be true or false", 1),
        ("strict: true\n", "the policy has no 'tables:' key", None),
        ("", "the policy is empty", None),
        ("- a\n- b\n", "the policy must be a mapping", 1),
        ("tables: [users]\n", "tables must be a mapping", 1),
        ("tables:\n  users: drop\n", "users: expected 'truncate' or a mapping", 2),
        ("tables:\n  users: {}\n", "users: expected 'truncate' or a mapping", 2),
        ("tables:\n  a.b.c: truncate\n", "'a.b.c' is not a table name", 2),
        (
            "tables:\n  users: truncate\n  public.users: truncate\n",
            "public.users is listed twice",
            3,
        ),
        ("tables:\n  u:\n    a: null\n    a: hash\n", "u: 'a' is listed twice", 4),
        ("tables:\n  u:\n    _where: 'true; DROP TABLE u'\n", "u: _where must not contain ';'", 3),
        ("tables:\n  u:\n    _where: 42\n", "u: _where must be a SQL boolean expression", 3),
        ("tables:\n  u:\n    a: {json_drop: []}\n", "u.a: json_drop needs a list of keys", 3),
        ("tables:\n  u:\n    a: {json_drop: [ip, '']}\n", "json_drop keys must be non-empty", 3),
        ("tables:\n  u:\n    a: {json_mask: {}}\n", "u.a: json_mask needs a mapping", 3),
        (
            "tables:\n  u:\n    a:\n      json_mask:\n        at: {date_shift: 3}\n",
            "u.a.at: date_shift is not supported inside json_mask",
            5,
        ),
        ("tables:\n  u:\n    a: {json_mask: {ip: {fake: ipv9}}}\n", "u.a.ip: fake kind", 3),
        ("tables:\n  u:\n    a: {hash: 3}\n", "u.a: hash takes no value", 3),
        ("tables:\n  u:\n    a: {constant: null}\n", "constant needs a value", 3),
        ("tables:\n  u:\n    a: {fake: email, hash: null}\n", "give exactly one strategy", 3),
        ("tables:\n  u:\n    a: truncate\n", "truncate applies to a whole table", 3),
    ],
)
def test_it_rejects_a_bad_policy_naming_the_problem_and_the_line(text, message, line):
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert message in str(caught.value)
    assert caught.value.line == line
    if line:
        assert str(caught.value).startswith(f"line {line}: ")


def test_it_hashes_the_policy_regardless_of_comments_order_and_layout():
    reordered = """
    # the same decisions, written differently
    tables:
      billing.invoices: {iban: hash}
      public.orders:
        customer_ref: hash
        coupon:
          constant: REDACTED
        card_last4: {mask: {last: 2, first: 0}}
        _where: "created_at > now() - interval '90 days'"
      sessions: truncate
      events: {created_at: {date_shift: 30}, payload: {json_mask: {email: hash, ip: {fake: ip}}}}
      invitations: {invitee_email: {fake: email}}
      users:
        profile: {json_drop: [iban, ip]}
        notes: {keep: "free text reviewed, no PII"}
        phone: ~
        first_name: {fake: first_name}
        email: {fake: email}
    """
    digest = policy_hash(ISSUE_POLICY)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert policy_hash(textwrap.dedent(reordered)) == digest
    assert policy_hash(ISSUE_POLICY.replace("date_shift: 30", "date_shift: 31")) != digest
    assert policy_hash(ISSUE_POLICY.replace("strict: false", "strict: true")) != digest


def test_it_says_which_columns_a_policy_covers():
    policy = parse_policy(ISSUE_POLICY)
    assert policy.covers("public", "users", "email")
    assert policy.covers("public", "sessions", "anything")  # truncated: no value survives
    assert policy.covers("billing", "invoices", "iban")
    assert not policy.covers("public", "users", "created_at")
    assert not policy.covers("public", "orders", "_where")
    assert not policy.covers("billing", "users", "email")
    assert not Policy().covers("public", "users", "email")


# --- the schema ------------------------------------------------------------------------------


def test_it_reads_tables_columns_keys_and_foreign_keys_from_the_catalog(schema):
    assert sorted(schema.tables) == [
        "billing.invoices",
        "public.events",
        "public.invitations",
        "public.logs",
        "public.measures",  # the partitioned parent, not its partitions
        "public.orders",
        "public.sessions",
        "public.users",
    ]
    users = schema.tables["public.users"]
    email = users.column("email")
    assert (email.type, email.category, email.not_null, email.max_length) == (
        "character varying(120)",
        "text",
        True,
        120,
    )
    kinds = {column.name: column.category for column in users.columns}
    assert kinds["profile"] == "json" and kinds["created_at"] == "date"
    assert kinds["birthday"] == "date" and kinds["ip"] == "inet"
    assert kinds["age"] == "other" and kinds["tags"] == "other"
    assert users.column("tags").array_category == "text"
    work = users.column("work_email")  # a domain: its base type decides
    assert (work.type, work.category, work.max_length) == ("email_address", "text", 50)
    assert users.column("upper_nick").generated and users.column("nickname").feeds_generated
    assert not users.column("first_name").feeds_generated
    assert users.primary_key == ("id",)
    assert users.unique_columns == {"id", "email", "slug"}  # slug through unique(lower(slug))
    orders = schema.tables["public.orders"]
    assert orders.unique_columns == {"id"}
    assert ("coupon", "customer_ref") in orders.unique_sets
    assert orders.in_any_unique("coupon") and not orders.in_any_unique("created_at")
    assert schema.tables["public.orders"].column("card_last4").max_length == 4
    assert schema.tables["public.logs"].primary_key == ()
    (fk,) = schema.tables["public.invitations"].foreign_keys
    assert (fk.columns, fk.parent, fk.parent_columns) == (("user_id",), "public.users", ("id",))


# --- validation ------------------------------------------------------------------------------


def test_it_finds_nothing_wrong_with_a_policy_that_fits(schema):
    assert validate(parse_policy(ISSUE_POLICY), schema) == []


def test_it_reports_tables_and_columns_that_do_not_exist(schema):
    problems = _problems(
        """
        tables:
          ghosts: {name: null}
          billing.users: truncate
          users:
            emial: {fake: email}
        """,
        schema,
    )
    assert problems == [
        "public.ghosts does not exist in the database (policy line 3).",
        "billing.users does not exist in the database (policy line 4).",
        "public.users.emial does not exist: public.users has no column 'emial' (policy line 6).",
    ]


@pytest.mark.parametrize(
    ("column", "rule", "problem"),
    [
        (
            "age",
            "{fake: email}",
            "public.users.age: fake: email needs a text column, but it is integer",
        ),
        ("ip", "{fake: name}", "public.users.ip: fake: name needs a text column, but it is inet"),
        (
            "age",
            "{fake: ip}",
            "public.users.age: fake: ip needs a text or inet column, but it is integer",
        ),
        (
            "notes",
            "{json_drop: [ip]}",
            "public.users.notes: json_drop needs a json or jsonb column, but it is text",
        ),
        (
            "notes",
            "{json_mask: {ip: hash}}",
            "public.users.notes: json_mask needs a json or jsonb column",
        ),
        (
            "first_name",
            "{date_shift: 3}",
            "public.users.first_name: date_shift needs a date or timestamp column, but it is text",
        ),
        ("notes", "null", "public.users.notes: null does not fit a NOT NULL column"),
        (
            "birthday",
            "hash",
            "public.users.birthday: hash needs a text, integer, numeric, uuid or bytea column, "
            "but it is date",
        ),
        (
            "flag",
            "{offset: 5}",
            "public.users.flag: offset needs a number column, but it is boolean",
        ),
        (
            "birthday",
            "{mask: {first: 1, last: 1}}",
            "public.users.birthday: mask needs a text column, but it is date",
        ),
        (
            "short_code",
            "{fake: email}",
            "public.users.short_code: fake: email needs at least 34 characters to stay distinct, "
            "but the column is character varying(10)",
        ),
        (
            "short_code",
            "{constant: 'a much longer constant'}",
            "public.users.short_code: constant is 22 characters, longer than character varying(10)",
        ),
        (
            "slug",
            "{constant: x}",
            "public.users.slug: constant on a unique column would repeat one value",
        ),
        (
            "slug",
            "{mask: {first: 1, last: 0}}",
            "public.users.slug: mask on a unique column would make equal values",
        ),
        ("flag", "{constant: 'yes'}", "public.users.flag: constant 'yes' is not true or false"),
        ("amount", "{constant: abc}", "public.users.amount: constant 'abc' is not a number"),
        (
            "birthday",
            "{constant: tomorrow}",
            "public.users.birthday: constant 'tomorrow' is not an ISO date",
        ),
        (
            "age",
            "{constant: {a: 1}}",
            "public.users.age: constant is a mapping or list, which only fits json columns",
        ),
        (
            "upper_nick",
            "null",
            "public.users.upper_nick is a generated column: mask the columns it is computed from",
        ),
        (
            "nickname",
            "drop",
            "public.users.nickname: drop applies to generated columns only",
        ),
        (
            "notes",
            '{review: "who writes these?"}',
            "public.users.notes still needs a person's decision (who writes these?)",
        ),
        (
            "notes",
            '{keep: "TODO: review"}',
            'public.users.notes: keep "TODO: review" is a draft\'s placeholder, not a decision',
        ),
    ],
)
def test_it_reports_a_strategy_that_does_not_fit_the_column(schema, column, rule, problem):
    problems = _problems(f"tables:\n  users:\n    {column}: {rule}\n", schema)
    assert len(problems) == 1, problems
    assert problems[0].startswith(problem)
    assert problems[0].endswith("(policy line 3).")


def test_it_accepts_strategies_that_fit(schema):
    problems = _problems(
        """
        tables:
          users:
            ip: {fake: ip}
            short_code: {mask: {first: 0, last: 2}}
            flag: {constant: true}
            amount: {constant: 12.5}
            birthday: {date_shift: 365}
            created_at: {constant: "2024-01-01T00:00:00+00:00"}
            work_email: {fake: email}
            slug: {fake: company}
            profile: {constant: {}}
            age: null
        """,
        schema,
    )
    assert problems == []


def test_it_accepts_masking_a_partition_key_and_the_inputs_of_a_generated_column(schema):
    # Such tables are reloaded rather than rewritten (masking.sql.reload_sql).
    assert schema.tables["public.measures"].column("day").partition_key
    assert _problems("tables:\n  measures:\n    day: {constant: '2024-01-01'}\n", schema) == []
    assert _problems("tables:\n  users:\n    nickname: {fake: first_name}\n", schema) == []


def test_it_reports_date_shift_on_a_table_without_primary_key(schema):
    assert _problems("tables:\n  logs:\n    at: {date_shift: 7}\n", schema) == [
        "public.logs.at: date_shift needs a primary key on public.logs to derive each row's shift,"
        " and it has none (policy line 3)."
    ]


def test_it_reports_a_foreign_key_whose_two_ends_would_stop_matching(schema):
    problems = _problems(
        """
        tables:
          users: {id: hash}
          sessions: {user_id: {constant: 7}}
        """,
        schema,
    )
    assert problems == [
        "public.invitations.user_id references public.users.id (hash) but is not masked: give"
        " both the same hash or fake on columns of the same type and width, or the foreign key"
        " breaks (policy line 3).",
        "public.sessions.user_id references public.users.id (hash) but is constant: give"
        " both the same hash or fake on columns of the same type and width, or the foreign key"
        " breaks (policy line 4).",
    ]
    both = "tables:\n  users: {id: hash}\n  sessions: truncate\n  invitations: {user_id: hash}\n"
    assert _problems(both, schema) == []
    assert _problems("tables:\n  invitations: {user_id: null}\n", schema) == []


def test_it_lists_every_unlisted_column_under_a_strict_policy(schema):
    problems = _problems(
        """
        strict: true
        tables:
          users: {email: {fake: email}}
          sessions: truncate
        """,
        schema,
    )
    assert "strict policy: public.users.created_at is not listed." in problems
    assert "strict policy: public.users.email is not listed." not in problems
    assert not any("public.sessions" in problem for problem in problems)
    assert "strict policy: billing.invoices.iban is not listed." in problems
    expected = sum(len(t.columns) for t in schema.tables.values()) - 1 - 2
    assert len(problems) == expected
