"""manage.py draft_policy: a starter masking policy read from a real source database."""

from __future__ import annotations

import io

import psycopg
import pytest
import yaml
from django.core.management import CommandError, call_command

from perfruns.masking.policy import parse_policy
from perfruns.models import DumpSource
from tests import sourcedb


def draft(*args: str) -> str:
    out = io.StringIO()
    call_command("draft_policy", *args, stdout=out)
    return out.getvalue()


def source_columns(source_db: str) -> dict[str, list[str]]:
    """{"public.users": [columns in order], ...} of the source's tables."""
    with psycopg.connect(sourcedb.server_conninfo(source_db)) as conn:
        rows = conn.execute(
            "SELECT c.table_schema || '.' || c.table_name, c.column_name"
            " FROM information_schema.columns c JOIN information_schema.tables t"
            " USING (table_schema, table_name)"
            " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
            " ORDER BY 1, c.ordinal_position"
        ).fetchall()
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    return columns


def test_it_lists_every_table_and_column_as_a_valid_strict_policy(dump_source, source_db):
    text = draft("shop")

    data = yaml.safe_load(text)
    assert data["strict"] is True
    assert {table: list(cols) for table, cols in data["tables"].items()} == source_columns(
        source_db
    )
    # It parses as a policy: reviewed, it can be saved as it is.
    assert set(parse_policy(text).tables) == set(source_columns(source_db))


def test_suspect_columns_get_a_strategy_and_the_reason_as_a_comment(dump_source):
    lines = draft("shop").splitlines()

    def entry(column: str) -> tuple[str, str]:
        """(the line before, the line) of a column's entry."""
        at = next(i for i, line in enumerate(lines) if line.startswith(f"    {column}:"))
        return lines[at - 1].strip(), lines[at].strip()

    assert entry("email") == (
        "# name contains 'email'; 400 of 400 sampled values look like e-mail addresses",
        'email: {fake: "email"}',
    )
    assert entry("phone") == (
        "# name contains 'phone'; 400 of 400 sampled values look like phone numbers",
        'phone: {fake: "phone"}',
    )
    assert entry("token") == ("# name contains 'token'", 'token: {fake: "code"}')
    comment, rule = entry("profile")
    assert comment.startswith("# 400 of 400 sampled values contain IP addresses;")
    assert comment.endswith("sampled JSON values hold keys that name personal data: iban, ip")
    assert rule == 'profile: {json_mask: {iban: hash, ip: {fake: "ip"}}}'
    # A text column nothing points at is for a person to review, with no comment.
    assert entry("notes") == (
        'phone: {fake: "phone"}',
        'notes: {review: "nothing personal found in a sample: keep it (say why) or mask it"}',
    )
    # Sampled values are never quoted.
    assert "@Example.COM" not in "\n".join(lines)


def test_it_writes_the_draft_to_a_file(dump_source, tmp_path):
    target = tmp_path / "shop.yaml"

    out = draft("shop", "--output", str(target))

    assert out == f"Wrote {target}: review every line before using it.\n"
    assert target.read_text(encoding="utf-8") == draft("shop")


def test_an_unknown_source_is_named(db):
    with pytest.raises(CommandError) as raised:
        draft("nope")

    assert str(raised.value) == "No dump source named nope: add it, or give --dsn-env VAR."


def test_it_drafts_from_a_dsn_in_the_environment_before_any_source_exists(
    db, source_db, monkeypatch
):
    monkeypatch.setenv("DRAFT_ME_DSN", sourcedb.server_conninfo(source_db))

    text = draft("newshop", "--dsn-env", "DRAFT_ME_DSN")

    assert set(parse_policy(text).tables) == set(source_columns(source_db))
    assert not DumpSource.objects.exists()


def test_an_empty_dsn_variable_is_named_without_a_source(db, monkeypatch):
    monkeypatch.delenv("DRAFT_ME_DSN", raising=False)

    with pytest.raises(CommandError) as raised:
        draft("newshop", "--dsn-env", "DRAFT_ME_DSN")

    assert str(raised.value) == (
        "The environment variable DRAFT_ME_DSN is not set or empty: set it to the source's DSN."
    )


def test_an_unset_dsn_variable_is_named(dump_source, monkeypatch):
    monkeypatch.delenv("FIXPROOF_TEST_SOURCE_DSN")

    with pytest.raises(CommandError) as raised:
        draft("shop")

    assert str(raised.value) == (
        "The environment variable FIXPROOF_TEST_SOURCE_DSN that should hold the DSN of "
        "source shop is not set."
    )


def test_a_dsn_that_does_not_parse_is_not_echoed(dump_source, monkeypatch):
    # One slash short of a URI: libpq quotes the whole string in its error.
    monkeypatch.setenv("FIXPROOF_TEST_SOURCE_DSN", "postgresql:/shop_reader:hunter2@db/shop")

    with pytest.raises(CommandError) as raised:
        draft("shop")

    assert str(raised.value) == (
        "The DSN of source shop (from $FIXPROOF_TEST_SOURCE_DSN) is not a valid PostgreSQL DSN."
    )


def test_an_unreachable_source_is_reported_without_its_password(dump_source, monkeypatch):
    monkeypatch.setenv(
        "FIXPROOF_TEST_SOURCE_DSN", "postgresql://shop_reader:hunter2@127.0.0.1:1/shop"
    )

    with pytest.raises(CommandError) as raised:
        draft("shop")

    message = str(raised.value)
    assert message.startswith(
        'Cannot read source shop: connection failed: connection to server at "127.0.0.1", '
        "port 1 failed: Connection refused"
    )
    assert "hunter2" not in message
