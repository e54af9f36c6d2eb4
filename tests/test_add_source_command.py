"""manage.py add_source: create or update a dump source from a policy file."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from perfruns.masking.policy import policy_hash
from perfruns.models import DumpSource
from tests import sourcedb

BAD_POLICY = "tables:\n  users:\n    email: {fake: emial}\n"


@pytest.fixture
def policy_file(tmp_path) -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text(sourcedb.POLICY, encoding="utf-8")
    return path


def add_source(*args: str) -> str:
    out = io.StringIO()
    call_command("add_source", *args, stdout=out)
    return out.getvalue()


def test_it_creates_a_source_then_updates_it_by_name(db, policy_file, tmp_path):
    created = add_source("shop", "--dsn-env", "SHOP_DSN", "--policy", str(policy_file))

    source = DumpSource.objects.get()
    assert created == f"Created source shop (policy {policy_hash(sourcedb.POLICY)[:12]}).\n"
    assert source.name == "shop"
    assert source.dsn_env == "SHOP_DSN"
    assert source.dsn_file == ""
    assert source.policy_yaml == sourcedb.POLICY
    assert source.retention is None

    new_policy = sourcedb.POLICY.replace("phone: null", "phone: {fake: phone}")
    new_file = tmp_path / "shop-v2.yaml"
    new_file.write_text(new_policy, encoding="utf-8")
    updated = add_source(
        "shop",
        "--dsn-file",
        "/run/secrets/shop_dsn",
        "--policy",
        str(new_file),
        "--retention",
        "2",
    )

    assert updated == f"Updated source shop (policy {policy_hash(new_policy)[:12]}).\n"
    assert DumpSource.objects.count() == 1
    source.refresh_from_db()
    assert source.dsn_env == ""
    assert source.dsn_file == "/run/secrets/shop_dsn"
    assert source.policy_yaml == new_policy
    assert source.policy_hash == policy_hash(new_policy)
    assert source.retention == 2


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://shop_reader:hunter2@db.internal:5432/shop",
        "host=db.internal user=shop_reader password=hunter2 dbname=shop",
    ],
)
def test_it_refuses_a_dsn_given_for_the_variable_without_echoing_it(db, policy_file, dsn):
    with pytest.raises(CommandError) as raised:
        add_source("shop", "--dsn-env", dsn, "--policy", str(policy_file))

    assert str(raised.value) == "Give the NAME of the variable holding the DSN, not the DSN."
    assert not DumpSource.objects.exists()


def test_it_refuses_a_variable_name_with_a_hyphen(db, policy_file):
    with pytest.raises(CommandError) as raised:
        add_source("shop", "--dsn-env", "SHOP-DSN", "--policy", str(policy_file))

    assert str(raised.value) == (
        "'SHOP-DSN' is not an environment variable name (letters, digits, underscores)."
    )
    assert not DumpSource.objects.exists()


def test_a_bad_policy_names_the_file_and_the_yaml_line_and_saves_nothing(db, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_POLICY, encoding="utf-8")

    with pytest.raises(CommandError) as raised:
        add_source("shop", "--dsn-env", "SHOP_DSN", "--policy", str(bad))

    assert str(raised.value) == (
        f"{bad}: line 3: users.email: fake kind 'emial' is not one of email, name, "
        "first_name, last_name, phone, address, city, postcode, username, code, company, text, ip"
    )
    assert not DumpSource.objects.exists()


def test_a_bad_policy_leaves_the_existing_source_untouched(db, policy_file, tmp_path):
    add_source("shop", "--dsn-env", "SHOP_DSN", "--policy", str(policy_file))
    before = list(DumpSource.objects.values())
    bad = tmp_path / "bad.yaml"
    bad.write_text("tables:\n  users: [\n", encoding="utf-8")

    with pytest.raises(CommandError) as raised:
        add_source("shop", "--dsn-env", "OTHER_DSN", "--policy", str(bad))

    assert str(raised.value) == (
        f"{bad}: line 3: not valid YAML: expected the node content, but found '<stream end>'"
    )
    assert list(DumpSource.objects.values()) == before


def test_a_missing_policy_file_is_named(db, tmp_path):
    missing = tmp_path / "nope.yaml"

    with pytest.raises(CommandError) as raised:
        add_source("shop", "--dsn-env", "SHOP_DSN", "--policy", str(missing))

    assert str(raised.value) == (
        f"Cannot read the policy {missing}: [Errno 2] No such file or directory: '{missing}'"
    )
    assert not DumpSource.objects.exists()


def test_it_refuses_a_name_the_pages_cannot_link_to(db, policy_file):
    with pytest.raises(CommandError) as raised:
        add_source("shop db", "--dsn-env", "SHOP_DSN", "--policy", str(policy_file))

    assert str(raised.value) == (
        "'shop db' is not a valid name: use letters, digits, hyphens and underscores (at most 100)."
    )
    assert not DumpSource.objects.exists()


def test_it_refuses_to_keep_no_snapshot(db, policy_file):
    with pytest.raises(CommandError) as raised:
        add_source(
            "shop", "--dsn-env", "SHOP_DSN", "--policy", str(policy_file), "--retention", "0"
        )

    assert str(raised.value) == "The number of snapshots kept must be at least 1."
    assert not DumpSource.objects.exists()


def test_it_needs_one_dsn_origin(db, policy_file):
    with pytest.raises(CommandError) as raised:
        add_source("shop", "--policy", str(policy_file))

    assert str(raised.value) == "Error: one of the arguments --dsn-env --dsn-file is required"
    assert not DumpSource.objects.exists()


def test_it_creates_a_source_without_a_policy_and_an_update_keeps_the_policy(db, policy_file):
    add_source("shop", "--dsn-env", "SHOP_DSN")
    assert DumpSource.objects.get().policy_yaml == "tables: {}\n"

    add_source("shop", "--dsn-env", "SHOP_DSN", "--policy", str(policy_file))
    add_source("shop", "--dsn-env", "OTHER_DSN", "--retention", "3")

    source = DumpSource.objects.get()
    assert source.policy_yaml == sourcedb.POLICY
    assert (source.dsn_env, source.retention) == ("OTHER_DSN", 3)
