"""Snapshots of a source built to trip the masking: quoted identifiers in another schema,
French column names, a natural key referenced by e-mail, domains over domains, composite
types, e-mails deep inside JSON arrays, free text with e-mails inside, INHERITS, a
partition of a partition, a rule and an audit trigger, row-level security.

The promise checked: no original e-mail comes out anywhere in `pg_restore -f -` of the
dump, and what the masking would miss is refused before anything is dumped.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from perfruns.masking.draft import draft_policy
from perfruns.masking.pii import scan
from perfruns.masking.policy import Policy, parse_policy, validate
from perfruns.masking.schema import introspect
from perfruns.models import SnapshotStatus
from perfruns.pipeline import snapshot as pipeline
from tests import sourcedb

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = 60

SCHEMA = """
CREATE EXTENSION citext;
CREATE SCHEMA crm;
CREATE DOMAIN email_base AS text CHECK (VALUE LIKE '%@%');
CREATE DOMAIN email_addr AS email_base CHECK (length(VALUE) <= 80);
CREATE TYPE postal AS (street text, city text, zip text);
CREATE TABLE crm."Customer" (
  "Id" serial PRIMARY KEY,
  "E-mail" email_addr NOT NULL UNIQUE,
  "FullName" varchar(60) NOT NULL,
  "prénom" text,
  courriel citext,
  aliases text[],
  home postal,
  doc json,
  avatar bytea,
  label text GENERATED ALWAYS AS ("FullName" || ' <' || "E-mail" || '>') STORED
);
CREATE UNIQUE INDEX customer_lower_email ON crm."Customer" (lower("E-mail"));
CREATE TABLE crm.orders (
  id serial PRIMARY KEY,
  customer_email email_addr NOT NULL REFERENCES crm."Customer" ("E-mail") ON UPDATE CASCADE,
  total numeric(8,2)
);
CREATE TABLE audit_log (id serial PRIMARY KEY, old_email text, new_email text);
CREATE FUNCTION audit_email() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit_log (old_email, new_email) VALUES (OLD."E-mail", NEW."E-mail");
  RETURN NEW;
END $$;
CREATE TRIGGER customer_audit AFTER UPDATE ON crm."Customer"
  FOR EACH ROW EXECUTE FUNCTION audit_email();
CREATE TABLE tickets (id serial PRIMARY KEY, body text NOT NULL);
CREATE TABLE person (id serial PRIMARY KEY, email text, name text);
CREATE TABLE employee (salary int) INHERITS (person);
CREATE TABLE visits (id int, visitor_email text, day date NOT NULL, region text NOT NULL)
  PARTITION BY LIST (region);
CREATE TABLE visits_eu PARTITION OF visits FOR VALUES IN ('eu') PARTITION BY RANGE (day);
CREATE TABLE visits_eu_2024 PARTITION OF visits_eu
  FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE visits_eu_other PARTITION OF visits_eu DEFAULT;
CREATE TABLE visits_us PARTITION OF visits FOR VALUES IN ('us');
CREATE TABLE contact (id serial PRIMARY KEY, email text, name text);
CREATE TABLE contact_archive (email text, name text);
CREATE RULE archive_contact AS ON UPDATE TO contact
  DO ALSO INSERT INTO contact_archive VALUES (OLD.email, OLD.name);
ALTER TABLE contact ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON contact USING (email = current_user);
CREATE VIEW crm.customer_view AS SELECT "Id", "E-mail", "FullName" FROM crm."Customer";
CREATE MATERIALIZED VIEW crm.customer_mv AS SELECT "E-mail" AS email FROM crm."Customer";
"""

DATA = f"""
INSERT INTO crm."Customer" ("E-mail", "FullName", "prénom", courriel, aliases, home, doc, avatar)
SELECT 'zebediah.quimby' || i || '@gmail.com', 'Zebediah Quimby' || i, 'Zebedine' || i,
       'Z.Quimby' || i || '@Hotmail.fr', ARRAY['zq' || i || '@yahoo.co.uk'],
       ROW(i || ' avenue Gambetta', 'Perpignan', '66000')::postal,
       json_build_object('contacts', json_build_array(
         json_build_object('who', json_build_object('mail', 'deep.zeb' || i || '@laposte.net')))),
       convert_to('caption mailto:avatar.zeb' || i || '@sfr.fr', 'UTF8')
FROM generate_series(1, {ROWS}) i;
UPDATE crm."Customer" SET "FullName" = "FullName" WHERE "Id" <= 10;
INSERT INTO crm.orders (customer_email, total)
  SELECT 'zebediah.quimby' || (1 + i % {ROWS}) || '@gmail.com', i FROM generate_series(1, 120) i;
INSERT INTO tickets (body)
  SELECT 'Hello, this is Zebediah. Please reply to ticket.zeb' || i || '@outlook.com, thanks!'
  FROM generate_series(1, {ROWS}) i;
INSERT INTO person (email, name)
  SELECT 'parent.zeb' || i || '@icloud.com', 'Parentine Quimby' || i FROM generate_series(1, 30) i;
INSERT INTO employee (email, name, salary)
  SELECT 'child.zeb' || i || '@icloud.com', 'Childeric Quimby' || i, 1000
  FROM generate_series(1, 30) i;
INSERT INTO visits (id, visitor_email, day, region)
  SELECT i, 'visitor.zeb' || i || '@gmx.de', date '2024-01-01' + (i * 7 % 500),
         CASE WHEN i % 3 = 0 THEN 'us' ELSE 'eu' END
  FROM generate_series(1, 90) i;
INSERT INTO contact (email, name)
  SELECT 'rule.zeb' || i || '@tutanota.com', 'Rulewald Quimby' || i FROM generate_series(1, 30) i;
UPDATE contact SET name = name WHERE id <= 5;
REFRESH MATERIALIZED VIEW crm.customer_mv;
ANALYZE;
"""

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[a-z]{2,}")


@pytest.fixture
def tricky_db() -> Iterator[str]:
    name = f"fixproof_tricky_{secrets.token_hex(4)}"
    with psycopg.connect(sourcedb.server_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(sourcedb.server_conninfo(name), autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(DATA)
    yield name
    sourcedb.drop_source(name)


@pytest.fixture
def tricky_source(tricky_db, monkeypatch):
    monkeypatch.setenv("FIXPROOF_TRICKY_DSN", sourcedb.server_conninfo(tricky_db))
    return sourcedb.source_saver("tricky", "FIXPROOF_TRICKY_DSN")


take = sourcedb.take_snapshot


def drafted(dbname: str) -> str:
    with psycopg.connect(sourcedb.server_conninfo(dbname)) as conn:
        return draft_policy(conn, schema=introspect(conn))


def reviewed(draft: str) -> str:
    """The draft as a person leaves it: each line still to review kept, with a reason."""
    return re.sub(r"\{review: \"[^\"]*\"\}", '{keep: "reviewed: no personal data"}', draft)


def original_emails(dbname: str) -> set[str]:
    found: set[str] = set()
    with psycopg.connect(sourcedb.server_conninfo(dbname)) as conn:
        tables = conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
            " WHERE schemaname IN ('public', 'crm')"
        ).fetchall()
        for (table,) in tables:
            for (row,) in conn.execute(f"SELECT t::text FROM {table} t").fetchall():
                found |= {email.lower() for email in EMAIL.findall(row)}
            if table == 'crm."Customer"':
                for (avatar,) in conn.execute(f"SELECT convert_from(avatar, 'UTF8') FROM {table}"):
                    found |= {email.lower() for email in EMAIL.findall(avatar)}
    return found


dump_text = sourcedb.dump_text


def test_the_reviewed_draft_gives_a_dump_holding_no_original_e_mail_anywhere(
    data_dir, tricky_db, tricky_source
):
    policy = reviewed(drafted(tricky_db))

    snapshot = take(tricky_source(policy))

    assert snapshot.status == SnapshotStatus.READY, (snapshot.error, snapshot.report)
    originals = original_emails(tricky_db)
    assert len(originals) > 6 * ROWS  # the audit trail and the rule's archive included
    text = dump_text(snapshot.file_path).lower()
    assert sorted(email for email in originals if email in text) == []
    assert "zebedine" not in text and "gambetta" not in text


def test_the_draft_reads_accented_french_names_and_composite_fields(tricky_db):
    draft = drafted(tricky_db)
    lines = draft.splitlines()

    def rule(column: str) -> str:
        return next(line.strip() for line in lines if line.startswith(f"    {column}:"))

    assert rule('"pr\\u00e9nom"') == '"pr\\u00e9nom": {fake: "first_name"}'
    assert "    # its type's fields name personal data: street, city, zip" in lines
    assert rule("home") == "home: null"
    # A document whose e-mails sit in an array under keys no json_mask can name goes
    # whole; free text with e-mails inside keeps its length, not an e-mail's shape.
    assert rule("doc") == "doc: null"
    assert rule("body") == 'body: {fake: "text"}'


def test_a_table_that_inherits_another_is_masked_by_its_own_rules_and_the_parent_by_its(
    data_dir, tricky_db, tricky_source
):
    policy = re.sub(
        r"(  public\.employee:\n(?:    .*\n)*?)    name: \{fake: \"name\"\}",
        r'\1    name: {constant: "Employee"}',
        reviewed(drafted(tricky_db)),
    )

    snapshot = take(tricky_source(policy))

    assert snapshot.status == SnapshotStatus.READY, (snapshot.error, snapshot.report)
    text = dump_text(snapshot.file_path)
    employees = text.split("COPY public.employee ")[1].split("\\.")[0].splitlines()[1:]
    people = text.split("COPY public.person ")[1].split("\\.")[0].splitlines()[1:]
    assert len(employees) == len(people) == 30
    assert {row.split("\t")[2] for row in employees} == {"Employee"}
    assert "Employee" not in {row.split("\t")[2] for row in people}
    assert snapshot.table_rows["public.person"] == 30  # its own rows, not its children's


def test_a_json_mask_missing_e_mails_nested_in_arrays_is_refused_before_anything_is_dumped(
    data_dir, tricky_db, tricky_source
):
    policy = reviewed(drafted(tricky_db)).replace(
        "    doc: null\n", '    doc: {json_mask: {mail: {fake: "email"}}}\n'
    )
    line = policy.splitlines().index('    doc: {json_mask: {mail: {fake: "email"}}}') + 1

    snapshot = take(tricky_source(policy))

    assert snapshot.status == SnapshotStatus.FAILED
    assert snapshot.error.startswith(
        "The masking would leave personal data in the copy; nothing was dumped (1 problem"
    )
    [problem] = snapshot.report["policy_errors"]
    assert problem.startswith(
        f"crm.Customer.doc (policy line {line}): json_mask leaves original e-mail addresses, "
        f"IBANs or card numbers in {ROWS} masked sample row(s); it reaches only the keys"
    )
    assert "@laposte.net" not in problem
    assert not list((data_dir / "snapshots").glob("**/*.dump"))


def test_verification_finds_an_original_e_mail_left_anywhere_inside_a_document(tricky_db):
    dsn = sourcedb.server_conninfo(tricky_db)
    policy_text = reviewed(drafted(tricky_db)).replace(
        "    doc: null\n", "    doc: {json_drop: [mail]}\n"
    )
    policy, schema, samples = pipeline.check_source(dsn=dsn, policy_text=policy_text)
    [inside] = [s for s in samples if s.get("inside") and s["column"] == "doc"]
    assert len(inside["values"]) == ROWS

    # The source itself stands for a copy whose masking missed them.
    with psycopg.connect(dsn, autocommit=True) as conn:
        checks, _rows = pipeline.verify_masked(conn, policy=policy, schema=schema, samples=[inside])

    [check] = [c for c in checks if c["name"].endswith("crm.Customer.doc")]
    assert check == {
        "name": "no original e-mail, IBAN or card number inside crm.Customer.doc",
        "ok": False,
        "detail": f"{ROWS} sampled originals, found in {ROWS} row(s)",
    }


def test_a_natural_key_masked_unlike_its_parent_is_refused_naming_the_policy_line(tricky_db):
    policy_text = reviewed(drafted(tricky_db)).replace(
        '    customer_email: {fake: "email"}', "    customer_email: {mask: {first: 2, last: 10}}"
    )
    line = policy_text.splitlines().index("    customer_email: {mask: {first: 2, last: 10}}") + 1
    with psycopg.connect(sourcedb.server_conninfo(tricky_db)) as conn:
        problems = validate(parse_policy(policy_text), introspect(conn))

    assert problems == [
        "crm.orders.customer_email references crm.Customer.E-mail (fake: email) but is mask: "
        "give both the same hash or fake on columns of the same type and width, or the "
        f"foreign key breaks (policy line {line})."
    ]


def test_an_inheritance_parent_is_scanned_without_its_children_rows(tricky_db):
    with psycopg.connect(sourcedb.server_conninfo(tricky_db)) as conn:
        schema = introspect(conn)
        found = {(f.table, f.column): f for f in scan(conn, schema=schema, policy=Policy())}

    assert schema.tables["public.person"].inheritance
    assert schema.tables["public.employee"].inheritance
    assert not schema.tables["public.tickets"].inheritance
    assert "30 of 30 sampled values look like e-mail addresses" in (
        found[("public.person", "email")].reasons
    )
