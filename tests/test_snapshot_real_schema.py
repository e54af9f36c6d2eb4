"""Snapshots of a source shaped like real schemas: triggers, domains, generated columns,
partitions, full-text columns, binary data, extension types, large objects.

Each test takes a real snapshot (scratch cluster, pg_dump, masking, verification) and
looks at what a person restoring the dump would get.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from perfruns.masking.draft import draft_policy
from perfruns.masking.schema import introspect
from perfruns.models import Snapshot, SnapshotStatus
from perfruns.pipeline import snapshot as pipeline
from perfruns.pipeline.pgtools import find_binary
from tests import sourcedb

pytestmark = pytest.mark.django_db(transaction=True)

FIRST = "Zebediah Ottoline Perpetua Thaddeus Griselda Ambrose Clementine Barnaby".split()
LAST = "Quimby Fairweather Oddington Pemberton Huxtable Wigglesworth Blandings Marchbanks".split()
CUSTOMERS = 240

SCHEMA = """
CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE DOMAIN phone_digits AS text CHECK (VALUE ~ '^[0-9]+$');
CREATE TYPE mpaa_rating AS ENUM ('G', 'PG', 'R');
CREATE TABLE category (category_id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE address (
  address_id serial PRIMARY KEY, address text NOT NULL, city text NOT NULL,
  postal_code varchar(10), phone phone_digits NOT NULL
);
CREATE TABLE customer (
  customer_id serial PRIMARY KEY,
  first_name text NOT NULL,
  last_name text NOT NULL,
  email text,
  address_id int NOT NULL REFERENCES address,
  full_name text GENERATED ALWAYS AS (first_name || ' ' || last_name) STORED,
  fulltext tsvector,
  photo bytea,
  prefs hstore,
  rating mpaa_rating
);
CREATE FUNCTION customer_search() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.fulltext := to_tsvector('simple', coalesce(NEW.first_name, '') || ' '
    || coalesce(NEW.last_name, '') || ' ' || coalesce(NEW.email, ''));
  RETURN NEW;
END $$;
CREATE TRIGGER customer_search BEFORE INSERT OR UPDATE ON customer
  FOR EACH ROW EXECUTE FUNCTION customer_search();
CREATE TABLE staff (
  staff_id serial PRIMARY KEY, username varchar(16) NOT NULL UNIQUE, email citext,
  address_id int REFERENCES address
);
CREATE TABLE payment (
  payment_id serial, customer_id int NOT NULL, amount numeric(5,2) NOT NULL,
  payment_date date NOT NULL, PRIMARY KEY (payment_id, payment_date)
) PARTITION BY RANGE (payment_date);
CREATE TABLE payment_2022 PARTITION OF payment FOR VALUES FROM ('2022-01-01') TO ('2023-01-01');
CREATE TABLE payment_other PARTITION OF payment DEFAULT;
CREATE TABLE film (
  film_id serial PRIMARY KEY, title text NOT NULL, description text, fulltext tsvector NOT NULL
);
CREATE TRIGGER film_fulltext BEFORE INSERT OR UPDATE ON film FOR EACH ROW
  EXECUTE FUNCTION tsvector_update_trigger(fulltext, 'pg_catalog.english', title, description);
CREATE VIEW customer_list AS SELECT customer_id, full_name, email FROM customer;
CREATE MATERIALIZED VIEW customer_emails AS SELECT lower(email) AS email FROM customer;
"""


def _data() -> str:
    first = "ARRAY[" + ", ".join(f"'{n}'" for n in FIRST) + "]"
    last = "ARRAY[" + ", ".join(f"'{n}'" for n in LAST) + "]"
    return f"""
INSERT INTO category (name) VALUES ('Action'), ('Comedy'), ('Documentary'), ('Horror');
INSERT INTO address (address, city, postal_code, phone)
  SELECT i || ' Larkspur Crescent', 'Wyvernmoor', lpad((10000 + i * 37)::text, 5, '0'),
         '06' || lpad((i * 7919)::text, 8, '0')
  FROM generate_series(1, {CUSTOMERS}) i;
INSERT INTO customer (first_name, last_name, email, address_id, photo, prefs, rating)
  SELECT ({first})[1 + i % 8], ({last})[1 + (i / 8) % 8],
         lower(({first})[1 + i % 8]) || '.' || lower(({last})[1 + (i / 8) % 8]) || i
           || '@post.example.org',
         i, decode(md5(i::text) || md5((i * 3)::text), 'hex'),
         hstore('newsletter', 'yes'), 'PG'
  FROM generate_series(1, {CUSTOMERS}) i;
INSERT INTO staff (username, email, address_id) VALUES
  ('mike_h', 'Mike.Hillyer@staff.example.org', 1), ('jon.s', 'Jon.Stephens@staff.example.org', 2);
INSERT INTO payment (customer_id, amount, payment_date)
  SELECT 1 + i % {CUSTOMERS}, (i % 900) / 100.0 + 0.99, date '2022-02-01' + (i % 300)
  FROM generate_series(1, 1200) i;
INSERT INTO film (title, description) VALUES
  ('Academy Dinosaur', 'An epic drama of a feminist and a mad scientist'),
  ('Ace Goldfinger', 'An astounding epistle of a database administrator');
SELECT lo_from_bytea(0, 'the scanned contract of a customer');
REFRESH MATERIALIZED VIEW customer_emails;
ANALYZE;
"""


POLICY = """\
large_objects: drop
tables:
  address:
    address: {fake: address}
    city: {fake: city}
    postal_code: {fake: postcode}
    phone: {fake: phone}
  customer:
    first_name: {fake: first_name}
    last_name: {fake: last_name}
    email: {fake: email}
    photo: null
    prefs: null
  staff:
    username: {fake: username}
    email: {fake: email}
  payment:
    payment_date: {date_shift: 30}
    amount: {offset: 1}
queries:
  - SELECT customer_id FROM customer WHERE customer_id = $1
"""


@pytest.fixture
def real_db() -> Iterator[str]:
    name = f"fixproof_real_{secrets.token_hex(4)}"
    with psycopg.connect(sourcedb.server_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(sourcedb.server_conninfo(name), autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(_data())
    yield name
    sourcedb.drop_source(name)
    with psycopg.connect(sourcedb.server_conninfo(), autocommit=True) as conn:
        for (restored,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'fixproof_restored_%'"
        ).fetchall():
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(restored)))


@pytest.fixture
def real_source(real_db, monkeypatch):
    monkeypatch.setenv("FIXPROOF_REAL_DSN", sourcedb.server_conninfo(real_db))
    return sourcedb.source_saver("real", "FIXPROOF_REAL_DSN")


take = sourcedb.take_snapshot


def rows(dbname: str, query: str) -> list[tuple]:
    with psycopg.connect(sourcedb.server_conninfo(dbname)) as conn:
        return conn.execute(query).fetchall()


def restored(path: str) -> str:
    """The dump restored into a new database of the test server: its name."""
    name = f"fixproof_restored_{secrets.token_hex(4)}"
    with psycopg.connect(sourcedb.server_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conninfo = sourcedb.server_conninfo(name)
    subprocess.run(
        [find_binary("pg_restore"), "--exit-on-error", "--no-owner", f"--dbname={conninfo}", path],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return name


dump_text = sourcedb.dump_text


@pytest.fixture
def masked(data_dir, real_db, real_source) -> tuple[Snapshot, str]:
    snapshot = take(real_source(POLICY))
    assert snapshot.status == SnapshotStatus.READY, (snapshot.error, snapshot.report)
    return snapshot, restored(snapshot.file_path)


def test_a_trigger_maintained_search_column_left_out_of_the_policy_comes_out_masked(
    masked, real_db
):
    snapshot, copy = masked
    text = dump_text(snapshot.file_path).lower()
    emails = [email for (email,) in rows(real_db, "SELECT email FROM customer")]
    staff = [email.lower() for (email,) in rows(real_db, "SELECT email::text FROM staff")]
    assert len(emails) == CUSTOMERS
    # Not in the rows, the search column, the materialized view: nowhere in the dump.
    leaked = [email for email in emails + staff if email in text]
    assert leaked == []
    # The search column was computed again by the trigger, from the masked row.
    mismatched = rows(
        copy,
        "SELECT count(*) FROM customer WHERE fulltext IS DISTINCT FROM to_tsvector('simple',"
        " first_name || ' ' || last_name || ' ' || email)",
    )
    assert mismatched == [(0,)]
    assert rows(copy, "SELECT count(*) FROM customer WHERE fulltext IS NULL") == [(0,)]
    # The materialized view is computed from the masked table, never copied.
    assert rows(
        copy,
        "SELECT count(*) FROM customer_emails e WHERE NOT EXISTS"
        " (SELECT 1 FROM customer c WHERE lower(c.email) = e.email)",
    ) == [(0,)]


def test_a_generated_column_is_computed_again_from_the_masked_columns(masked, real_db):
    _snapshot, copy = masked
    assert rows(
        copy, "SELECT count(*) FROM customer WHERE full_name <> first_name || ' ' || last_name"
    ) == [(0,)]
    originals = {name.lower() for name in FIRST + LAST}
    masked_names = rows(copy, "SELECT lower(first_name), lower(last_name) FROM customer")
    assert not {n for pair in masked_names for n in pair} & originals
    # A film whose table is not masked keeps its own search column.
    assert rows(copy, "SELECT title FROM film ORDER BY film_id") == [
        ("Academy Dinosaur",),
        ("Ace Goldfinger",),
    ]


def test_names_keep_their_distinct_count_and_no_original_survives(masked, real_db):
    _snapshot, copy = masked
    for column in ("first_name", "last_name"):
        query = f"SELECT count(DISTINCT {column}) FROM customer"
        assert rows(copy, query) == rows(real_db, query)
        originals = ", ".join(f"'{n.lower()}'" for n in FIRST + LAST)
        survivors = rows(
            copy, f"SELECT count(*) FROM customer WHERE lower({column}) IN ({originals})"
        )
        assert survivors == [(0,)]


def test_phones_and_postcodes_keep_their_shape_and_the_domain_holds(masked, real_db):
    _snapshot, copy = masked
    before = rows(real_db, "SELECT address_id, phone, postal_code FROM address ORDER BY 1")
    after = rows(copy, "SELECT address_id, phone, postal_code FROM address ORDER BY 1")
    assert len(before) == len(after) == CUSTOMERS
    for (_, phone, _), (_, fake_phone, fake_postcode) in zip(before, after, strict=True):
        assert re.fullmatch(r"[0-9]+", fake_phone) and len(fake_phone) == len(phone)
        assert fake_phone[:2] == "06"  # the trunk prefix stays
        assert re.fullmatch(r"[0-9]{5}", fake_postcode)
    assert {p for _, p, _ in before} & {p for _, p, _ in after} <= {
        p for _, p, _ in before
    }  # (a permutation: another row's number may come out; never an invented shape)
    assert len({p for _, p, _ in after}) == len({p for _, p, _ in before})
    usernames = rows(copy, "SELECT username FROM staff ORDER BY staff_id")
    assert [len(u) for (u,) in usernames] == [len("mike_h"), len("jon.s")]
    assert usernames[0][0][4] == "_" and usernames[1][0][3] == "."
    assert ("mike_h",) not in usernames and ("jon.s",) not in usernames


def test_a_partitioned_table_gets_its_partition_key_shifted(masked, real_db):
    _snapshot, copy = masked
    query = "SELECT payment_id, payment_date, amount FROM payment ORDER BY payment_id"
    before, after = rows(real_db, query), rows(copy, query)
    assert len(before) == len(after) == 1200
    shifts = [(b[1] - a[1]).days for a, b in zip(before, after, strict=True)]
    assert all(-30 <= s <= 30 for s in shifts) and len(set(shifts)) > 10
    moves = [abs(b[2] - a[2]) for a, b in zip(before, after, strict=True)]
    assert max(moves) <= 1 and sum(1 for m in moves if m) > 1000
    # Rows whose new date left 2022 are in the other partition.
    assert rows(
        copy, "SELECT count(*) FROM ONLY payment_2022 WHERE payment_date >= '2023-01-01'"
    ) == [(0,)]


def test_large_objects_the_policy_drops_are_not_in_the_dump(masked):
    snapshot, copy = masked
    assert rows(copy, "SELECT count(*) FROM pg_largeobject_metadata") == [(0,)]
    assert "the scanned contract" not in dump_text(snapshot.file_path)


def test_the_unedited_draft_is_refused_listing_each_line_to_decide_once(
    data_dir, real_db, real_source
):
    with psycopg.connect(sourcedb.server_conninfo(real_db)) as conn:
        draft = draft_policy(conn, schema=introspect(conn))
    # The draft does not call a genre a person, nor flag keys to other tables.
    assert '    name: {review: "' in draft.split("public.category:")[1].split("public.")[0]
    assert "address_id: {keep:" in draft

    snapshot = take(real_source(draft))

    assert snapshot.status == SnapshotStatus.FAILED
    assert snapshot.error.startswith("The masking policy is a draft: ")
    problems = snapshot.report["policy_errors"]
    assert len(problems) == len(set(problems)) == draft.count("{review:")
    assert any(p.startswith("large_objects still needs a person's decision") for p in problems)
    assert all(re.search(r"\(policy line \d+\)\.$", p) for p in problems)
    assert snapshot.report["text"] not in snapshot.error  # listed once, in the report
    assert not list((data_dir / "snapshots").glob("**/*.dump"))


def test_a_domain_check_the_masked_values_break_is_refused_before_anything_is_dumped(
    data_dir, real_source
):
    policy = POLICY.replace("phone: {fake: phone}", "phone: {mask: {first: 2, last: 0}}")

    snapshot = take(real_source(policy))

    assert snapshot.status == SnapshotStatus.FAILED
    assert snapshot.error.startswith(
        "The masked values would break the copy's constraints; nothing was dumped (1 problem"
    )
    [problem] = snapshot.report["policy_errors"]
    assert problem.startswith("public.address.phone (policy line 7): mask makes values that")
    assert "phone_digits" in problem
    assert "Traceback" not in snapshot.error
    assert not list((data_dir / "snapshots").glob("**/*.dump"))


def test_binary_data_the_scan_cannot_read_stops_the_snapshot_until_the_policy_decides(
    real_db, monkeypatch
):
    dsn = sourcedb.server_conninfo(real_db)
    policy = POLICY.replace("    photo: null\n", "")

    with pytest.raises(pipeline.PiiRejected) as raised:
        pipeline.check_source(dsn=dsn, policy_text=policy)

    [finding] = raised.value.report["findings"]
    assert (finding["table"], finding["column"], finding["undecided"]) == (
        "public.customer",
        "photo",
        True,
    )
    assert "binary data that the scan cannot read" in raised.value.report["text"]


def test_a_policy_may_drop_a_generated_column_from_the_review_copy(data_dir, real_db, real_source):
    dropped = POLICY.replace("    prefs: null\n", "    prefs: null\n    full_name: drop\n")
    snapshot = take(real_source(dropped))
    assert snapshot.status == SnapshotStatus.FAILED
    assert snapshot.report["policy_errors"] == [
        "public.customer.full_name: drop would break the views that read it "
        "(customer_list); recompute it instead (policy line 14)."
    ]
    with psycopg.connect(sourcedb.server_conninfo(real_db), autocommit=True) as conn:
        conn.execute("DROP VIEW customer_list")

    snapshot = take(
        real_source(POLICY.replace("    prefs: null\n", "    prefs: null\n    full_name: drop\n"))
    )

    assert snapshot.status == SnapshotStatus.READY, snapshot.error
    copy = restored(snapshot.file_path)
    columns = [
        c
        for (c,) in rows(
            copy,
            "SELECT attname FROM pg_attribute WHERE attrelid = "
            "'customer'::regclass AND attnum > 0 AND NOT attisdropped",
        )
    ]
    assert "full_name" not in columns and "first_name" in columns


def test_the_snapshot_reports_the_plans_of_the_policy_queries(masked):
    snapshot, _copy = masked
    # The source has no pg_stat_statements: the policy's one query is compared.
    assert (snapshot.report["compared"], snapshot.report["changed"]) == (1, 0)
    [plan] = snapshot.report["plans"]
    assert plan["same"] is True
    assert "Plan fidelity: 1 statement(s) compared, 0 plan(s) changed" in snapshot.report["text"]
