"""The fail-closed PII scan and the drafted policy, against a real PostgreSQL."""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from perfruns.masking import (
    DROP_FUNCTIONS,
    Finding,
    Policy,
    draft_policy,
    functions_sql,
    introspect,
    parse_policy,
    plan_sql,
    report,
    scan,
    validate,
)
from perfruns.masking.pii import detect, iban_valid, luhn_valid, name_kinds
from perfruns.masking.policy import undecided_lines

SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
ROWS = 500


def _luhn_complete(prefix: str) -> str:
    for digit in "0123456789":
        if luhn_valid(prefix + digit):
            return prefix + digit
    raise AssertionError(prefix)


def _iban(country: str, bban: str) -> str:
    moved = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    return f"{country}{check:02d}{bban}"


def _scratch() -> str:
    name = f"fixproof_masktest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(**SERVER, dbname="postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def _drop(name: str) -> None:
    with psycopg.connect(**SERVER, dbname="postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _fill_customers(conn: psycopg.Connection) -> None:
    rng = random.Random(7)
    conn.execute(
        """
        CREATE TABLE customers (
          id bigint PRIMARY KEY, contact text, reach text, ref text, pay text, meta jsonb,
          status text, notes text, sku text, created text, domain text, pipeline text,
          version text, serial text, account_code text, tracking uuid, settings jsonb,
          username text, first_name text, seen_from inet, amount numeric, few text, several text
        )
        """
    )
    rows = []
    for i in range(1, ROWS + 1):
        bad_card = _luhn_complete(f"4{rng.randrange(10**14):014d}")
        bad_card = bad_card[:-1] + str((int(bad_card[-1]) + 1) % 10)  # Luhn now fails
        good_iban = _iban("DE", f"{rng.randrange(10**18):018d}")
        rows.append(
            (
                i,
                f"Person.{i}@mail-{i % 7}.example.com",
                f"+44 20 7946 {i:04d}",
                _luhn_complete(f"4{rng.randrange(10**14):014d}"),
                good_iban if i % 4 else " ".join(good_iban[k : k + 4] for k in range(0, 22, 4)),
                json.dumps({"origin": f"203.0.113.{i % 250}", "source": "web", "n": i}),
                rng.choice(["active", "pending", "closed"]),
                "Customer asked about the delivery schedule for order " + str(i),
                f"SKU-{i:06d}",
                f"2024-01-{1 + i % 28:02d} 10:{i % 60:02d}:00",
                f"shop{i % 9}.example.org",
                f"build-{i}",
                f"{i % 4}.{i % 10}.{i % 13}",
                bad_card,
                "DE" + str((int(good_iban[2:4]) + 1) % 100).zfill(2) + good_iban[4:],
                uuid.UUID(int=rng.getrandbits(128)),
                json.dumps({"theme": "dark", "page_size": 50, "tags": ["a", "b"]}),
                f"user{i}",
                rng.choice(["Ann", "Bob", "Cy"]),
                f"198.51.100.{i % 250}",
                i * 1.5,
                "contact me at someone@example.com" if i == 10 else "nothing here",
                "x@example.com" if i in (10, 20, 30) else "plain words",
            )
        )
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO customers VALUES (" + ", ".join(["%s"] * 23) + ")", rows)


@pytest.fixture(scope="module")
def shop() -> Iterator[psycopg.Connection]:
    name = _scratch()
    try:
        with psycopg.connect(**SERVER, dbname=name, autocommit=True) as conn:
            _fill_customers(conn)
            conn.execute(
                """
                CREATE TABLE sessions (id bigint PRIMARY KEY, token text, ip text);
                INSERT INTO sessions SELECT i, md5(i::text), '10.0.0.' || (i % 250)
                  FROM generate_series(1, 100) i;
                """
            )
            yield conn
    finally:
        _drop(name)


@pytest.fixture
def db() -> Iterator[psycopg.Connection]:
    name = _scratch()
    try:
        with psycopg.connect(**SERVER, dbname=name, autocommit=True) as conn:
            yield conn
    finally:
        _drop(name)


def _findings(conn: psycopg.Connection, policy_text: str = "tables: {}") -> dict[str, Finding]:
    schema = introspect(conn)
    found = scan(conn, schema=schema, policy=parse_policy(policy_text))
    return {f"{finding.table}.{finding.column}": finding for finding in found}


# --- detectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("email", "email"),
        ("user_email", "email"),
        ("emails", "email"),
        ("first_name", "first_name"),
        ("firstName", "first_name"),
        ("family_name", "last_name"),
        ("mobile_phone", "phone"),
        ("client_ip", "ip"),
        ("ip_address", "ip"),
        ("date_of_birth", "birth"),
        ("dob", "birth"),
        ("zip", "postcode"),
        ("postal_code", "postcode"),
        ("username", "username"),
        ("city", "city"),
        ("street", "address"),
        ("iban", "finance"),
        ("card_last4", "finance"),
        ("reset_token", "secret"),
        ("password", "secret"),
        ("passport_no", "identity"),
        ("ssn", "identity"),
    ],
)
def test_it_reads_personal_data_in_whole_words_of_a_column_name(name, kind):
    assert kind in [found for _, found in name_kinds(name)]


@pytest.mark.parametrize(
    "name",
    ["domain", "pipeline", "filename", "hostname", "first_seen", "last_login", "typename",
     "shipment", "status", "created_at", "description", "tips", "classname"],
)  # fmt: skip
def test_it_does_not_read_personal_data_inside_other_words(name):
    assert name_kinds(name) == []


def test_it_checks_cards_with_luhn_and_ibans_with_mod_97():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE88370400440532013000")
    assert detect("card 4111 1111 1111 1111 on file") == {"card"}
    assert detect("4111111111111112") == set()
    assert detect("pay to DE89 3704 0044 0532 0130 00 please") == {"iban"}
    assert "iban" not in detect("GB82 WEST 1234 5698 7654 33")  # one digit off


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("write to Alice.Martin@example.co.uk", {"email"}),
        ("+33 6 12 34 56 78", {"phone"}),
        ("(555) 123-4567", {"phone"}),
        ("06 12 34 56 78", {"phone"}),
        ("from 192.168.1.20 at noon", {"ip"}),
        ("2001:db8::8a2e:370:7334", {"ip"}),
        ("2024-01-15 10:30:00", set()),
        ("12:30:45", set()),
        ("550e8400-e29b-41d4-a716-446655440000", set()),
        ("order 1234567890 shipped", set()),
        ("version 1.2.3", set()),
        ("price 1234.5678", set()),
    ],
)
def test_it_recognizes_personal_data_in_a_value(text, found):
    assert detect(text) == found


# --- the scan ------------------------------------------------------------------------------


def test_it_catches_unlisted_columns_by_content(shop):
    found = _findings(shop)
    assert found["public.customers.contact"].reasons == [
        f"{ROWS} of {ROWS} sampled values look like e-mail addresses"
    ]
    assert found["public.customers.reach"].reasons == [
        f"{ROWS} of {ROWS} sampled values look like phone numbers"
    ]
    assert found["public.customers.ref"].reasons == [
        f"{ROWS} of {ROWS} sampled values contain card numbers (valid Luhn check)"
    ]
    assert found["public.customers.pay"].reasons == [
        f"{ROWS} of {ROWS} sampled values contain IBANs (valid mod-97 check)"
    ]
    assert found["public.customers.meta"].reasons == [
        f"{ROWS} of {ROWS} sampled values contain IP addresses"
    ]
    assert found["public.customers.seen_from"].kinds == ["ip"]
    assert found["public.sessions.ip"].reasons == [
        "name contains 'ip'",
        "100 of 100 sampled values contain IP addresses",
    ]
    # three hits are enough even when they are under 10% of the sample
    assert found["public.customers.several"].reasons == [
        f"3 of {ROWS} sampled values look like e-mail addresses"
    ]


def test_it_catches_unlisted_columns_by_name(shop):
    found = _findings(shop)
    assert found["public.customers.username"].reasons == ["name contains 'username'"]
    assert found["public.customers.first_name"].reasons == ["name contains 'first_name'"]
    assert found["public.customers.first_name"].kinds == ["first_name"]
    assert found["public.sessions.token"].reasons == ["name contains 'token'"]


def test_it_does_not_flag_clean_columns(shop):
    found = _findings(shop)
    clean = [
        "id", "status", "notes", "sku", "created", "domain", "pipeline", "version", "serial",
        "account_code", "tracking", "settings", "amount", "few",
    ]  # fmt: skip
    assert [column for column in clean if f"public.customers.{column}" in found] == []
    assert len(found) == 11


def test_it_does_not_report_covered_columns(shop):
    found = _findings(
        shop,
        """
        tables:
          customers:
            contact: {fake: email}
            meta: {json_drop: [origin]}
            username: {keep: "public handles, by design"}
          sessions: truncate
        """,
    )
    assert "public.customers.contact" not in found
    assert "public.customers.meta" not in found
    assert "public.customers.username" not in found
    assert not any(name.startswith("public.sessions.") for name in found)
    assert "public.customers.reach" in found


def test_it_finds_ips_and_personal_keys_inside_json(db):
    db.execute(
        """
        CREATE TABLE events (id int PRIMARY KEY, payload jsonb, body json);
        INSERT INTO events SELECT i,
          jsonb_build_object(
            'kind', 'click', 'ctx', jsonb_build_object('remote', '2001:db8::' || i)
          ),
          json_build_object('user', json_build_object('email', 'hidden', 'phone', null))
        FROM generate_series(1, 40) i;
        """
    )
    found = _findings(db)
    assert found["public.events.payload"].reasons == [
        "40 of 40 sampled values contain IP addresses"
    ]
    assert found["public.events.body"].reasons == [
        "sampled JSON values hold keys that name personal data: email, phone"
    ]
    assert found["public.events.body"].json_keys == ["email", "phone"]


def test_it_samples_big_tables_instead_of_reading_them(db):
    db.execute(
        """
        CREATE TABLE logs (id int, line text);
        INSERT INTO logs
          SELECT i, 'login by u' || i || '@example.com' FROM generate_series(1, 30000) i;
        ANALYZE logs;
        """
    )
    schema = introspect(db)
    assert schema.tables["public.logs"].estimated_rows > 20 * 100
    (finding,) = scan(db, schema=schema, policy=Policy(), sample_size=100)
    assert finding.reasons == ["100 of 100 sampled values look like e-mail addresses"]


def test_it_reports_one_line_per_column_without_quoting_values(shop):
    findings = scan(shop, schema=introspect(shop), policy=Policy())
    lines = report(findings).splitlines()
    assert len(lines) == len(findings) == 11
    assert lines[0] == (
        f"public.customers.contact: {ROWS} of {ROWS} sampled values look like e-mail addresses"
    )
    assert (
        "public.sessions.ip: name contains 'ip'; 100 of 100 sampled values contain IP addresses"
        in lines
    )
    text = report(findings)
    assert "@" not in text and "203.0.113" not in text  # no sampled value leaks into the report
    stored = json.loads(json.dumps([finding.as_dict() for finding in findings]))
    assert stored[0]["table"] == "public.customers" and stored[0]["column"] == "contact"
    assert report([]) == "No column outside the policy looks like personal data."


# --- the drafted policy --------------------------------------------------------------------


def test_it_drafts_a_strict_policy_listing_every_column(shop):
    schema = introspect(shop)
    draft = draft_policy(shop, schema=schema)
    policy = parse_policy(draft)
    assert policy.strict
    # A draft is not a decision: each line to review is refused, once.
    problems = validate(policy, schema)
    to_review = undecided_lines(policy)
    assert len(problems) == len(to_review) == len(set(problems)) == 11
    assert all("still needs a person's decision" in problem for problem in problems)
    decided = parse_policy(re.sub(r"\{review: (\"[^\"]*\")\}", r"{keep: \1}", draft))
    assert validate(decided, schema) == []
    for table in schema.tables.values():
        for column in table.columns:
            assert policy.covers(table.schema, table.name, column.name), column.name
    lines = draft.splitlines()
    contact = lines.index('    contact: {fake: "email"}')
    assert lines[contact - 1] == (
        f"    # {ROWS} of {ROWS} sampled values look like e-mail addresses"
    )
    assert lines[lines.index("  public.customers:") + 1] == (
        '    id: {keep: "bigint: holds no text, and its sampled values look plain"}'
    )
    assert (
        '    status: {review: "nothing personal found in a sample: keep it (say why) or mask it"}'
        in lines
    )
    assert '    first_name: {fake: "first_name"}' in lines
    assert '    username: {fake: "username"}' in lines
    assert '    seen_from: {fake: "ip"}' in lines
    # cards, IBANs and tokens keep their shape, and no digit of them
    assert '    ref: {fake: "code"}' in lines and '    pay: {fake: "code"}' in lines
    assert '    token: {fake: "code"}' in lines
    assert "    meta: null" in lines


def test_it_masks_every_suspect_value_with_a_drafted_policy(db):
    db.execute(
        """
        CREATE TABLE people (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, first_name text,
                             contact varchar(80), note text, seen_from inet, extra jsonb NOT NULL);
        INSERT INTO people
          SELECT i, 'p' || i || '@example.com', 'Ann' || i, 'c' || i || '@example.net',
          'plain note', ('192.0.2.' || (i % 250))::inet,
          jsonb_build_object('email', 'k' || i || '@example.org', 'n', i)
        FROM generate_series(1, 200) i;
        """
    )
    originals = db.execute(
        "SELECT email, first_name, contact, extra->>'email' FROM people"
    ).fetchall()
    schema = introspect(db)
    draft = draft_policy(db, schema=schema)
    assert (
        '    note: {review: "nothing personal found in a sample: keep it (say why) or mask it"}'
        in draft
    )
    policy = parse_policy(draft.replace("{review:", "{keep:"))
    assert validate(policy, schema) == []
    db.execute(functions_sql(key=b"drafted policy test key"))
    for statement in plan_sql(policy=policy, schema=schema):
        db.execute(statement)
    db.execute(DROP_FUNCTIONS)
    dump = json.dumps(db.execute("SELECT json_agg(p) FROM people p").fetchone()[0])
    assert not [value for row in originals for value in row if value in dump]
    assert "192.0.2." not in dump
    assert db.execute("SELECT count(DISTINCT note) FROM people").fetchone()[0] == 1


# --- types beyond text, numbers on evidence, derived columns -------------------------------


def test_it_flags_numbers_only_on_evidence_and_keys_never(db):
    db.execute(
        """
        CREATE TABLE staff (id int PRIMARY KEY, address_id int, store_id smallint,
                            phone bigint, amount numeric(9,2), card bigint);
        INSERT INTO staff SELECT i, i, 1 + i % 3, 612345000 + i, i * 1.5,
          CASE WHEN i % 2 = 0 THEN 4111111111111111 ELSE 5555555555554444 END
        FROM generate_series(1, 60) i;
        """
    )
    found = _findings(db)
    assert set(found) == {"public.staff.phone", "public.staff.card"}
    assert found["public.staff.phone"].reasons == [
        "60 of 60 sampled values are phone-length numbers in a column named for phones"
    ]
    assert found["public.staff.card"].kinds == ["finance", "card"]


def test_it_does_not_call_a_genre_a_language_or_a_title_a_person():
    for table in ("category", "language", "film", "game", "product"):
        assert name_kinds("name", table=table) == [], table
    assert name_kinds("title", table="film") == []
    assert name_kinds("name", table="customer") == [("name", "name")]
    assert name_kinds("name", table="staff_members") == [("name", "name")]
    assert name_kinds("address_id") == [] and name_kinds("email_verified") == []


def test_it_reads_text_carried_by_xml_hstore_arrays_and_encoded_values(db):
    db.execute("CREATE EXTENSION IF NOT EXISTS hstore")
    db.execute(
        """
        CREATE TABLE docs (id int PRIMARY KEY, card xml, attrs hstore, cc text[],
                           blob bytea, packed text, plain bytea);
        INSERT INTO docs SELECT i,
          xmlparse(content '<contact><mail>p' || i || '@example.com</mail></contact>'),
          hstore('phone', '0612345678'),
          ARRAY['x' || i || '@example.org'],
          convert_to('{"email": "b' || i || '@example.net"}', 'UTF8'),
          encode(convert_to('q' || i || '@example.com', 'UTF8'), 'base64'),
          convert_to('just some words ' || i, 'UTF8')
        FROM generate_series(1, 30) i;
        """
    )
    found = _findings(db)
    assert "e-mail" in "; ".join(found["public.docs.card"].reasons)
    assert "phone" in "; ".join(found["public.docs.attrs"].reasons)
    assert "e-mail" in "; ".join(found["public.docs.cc"].reasons)
    assert "e-mail" in "; ".join(found["public.docs.blob"].reasons)
    assert "e-mail" in "; ".join(found["public.docs.packed"].reasons)
    assert "public.docs.plain" not in found


def test_it_stops_on_binary_it_cannot_read_and_on_a_search_column_nothing_recomputes(db):
    db.execute(
        """
        CREATE TABLE files (id int PRIMARY KEY, body bytea, owner_email text, words tsvector);
        INSERT INTO files SELECT i, decode(md5(i::text) || md5((-i)::text), 'hex'),
          'o' || i || '@example.com', to_tsvector('simple', 'o' || i || '@example.com')
        FROM generate_series(1, 30) i;
        """
    )
    found = _findings(db, "tables: {files: {owner_email: {fake: email}}}")
    assert found["public.files.body"].undecided
    assert "binary data that the scan cannot read" in found["public.files.body"].reasons[0]
    assert found["public.files.words"].undecided
    assert (
        found["public.files.words"]
        .reasons[0]
        .startswith("a tsvector that no trigger or generation of the table computes")
    )
    # Recomputed from the masked row, it is covered.
    covered = _findings(
        db,
        "tables: {files: {owner_email: {fake: email}, body: null,"
        " words: {recompute: \"to_tsvector('simple', owner_email)\"}}}",
    )
    assert covered == {}
