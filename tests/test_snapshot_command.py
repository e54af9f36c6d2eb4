"""manage.py snapshot: take a verified, anonymized snapshot of a source now."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from perfruns.models import Snapshot, SnapshotStatus
from perfruns.services import snapshots
from tests import sourcedb

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parent.parent


def add_unlisted_email_column(source_db: str) -> None:
    """A column the policy does not list, full of e-mail addresses."""
    with psycopg.connect(sourcedb.server_conninfo(source_db), autocommit=True) as conn:
        conn.execute("ALTER TABLE users ADD COLUMN backup_contact text")
        conn.execute("UPDATE users SET backup_contact = 'someone' || id || '@mail.example'")


def snapshot(*args: str) -> str:
    out = io.StringIO()
    call_command("snapshot", *args, stdout=out)
    return out.getvalue()


def dump_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "snapshots").rglob("*"))


def test_it_prints_the_file_and_its_sha256(data_dir, dump_source):
    out = snapshot("shop")

    taken = Snapshot.objects.get()
    assert taken.status == SnapshotStatus.READY, taken.error
    path, sha256 = out.splitlines()
    assert out == f"{path}\n{sha256}\n"
    assert path == taken.file_path
    assert Path(path).parent == data_dir / "snapshots" / "shop"
    assert sha256 == taken.sha256
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha256


def test_an_unlisted_pii_column_is_refused_with_the_report(data_dir, dump_source, source_db):
    add_unlisted_email_column(source_db)

    with pytest.raises(CommandError) as raised:
        snapshot("shop")

    taken = Snapshot.objects.get()
    assert str(raised.value) == (
        f"Snapshot #{taken.pk} of shop rejected: Possible PII in 1 column(s) the policy does "
        "not cover; nothing was written. Mask them, or 'keep' them with a reason.\n"
        "public.users.backup_contact: 400 of 400 sampled values look like e-mail addresses"
    )
    assert taken.status == SnapshotStatus.REJECTED
    assert taken.file_path == ""
    assert taken.sha256 == ""
    assert [f["column"] for f in taken.report["findings"]] == ["backup_contact"]
    assert dump_files(data_dir) == []
    assert not (data_dir / "scratch" / f"snapshot-{taken.pk}").exists()


def test_a_refused_snapshot_exits_non_zero(data_dir, dump_source, source_db):
    add_unlisted_email_column(source_db)
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "fixproof.settings",
        "FIXPROOF_DATA_DIR": str(data_dir),
        # The test database, not the one .env names.
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
    }

    result = subprocess.run(
        [sys.executable, "manage.py", "snapshot", "shop"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert "public.users.backup_contact: 400 of 400 sampled values" in result.stderr
    assert Snapshot.objects.get().status == SnapshotStatus.REJECTED
    assert dump_files(data_dir) == []


def test_an_unknown_source_is_named(data_dir):
    with pytest.raises(CommandError) as raised:
        snapshot("nope")

    assert str(raised.value) == "No dump source named nope."
    assert not Snapshot.objects.exists()


def test_a_snapshot_under_way_is_not_doubled(data_dir, dump_source):
    queued = snapshots.snapshot_request(source=dump_source, actor=None)

    with pytest.raises(CommandError) as raised:
        snapshot("shop")

    assert str(raised.value) == "A snapshot of shop is already queued or running."
    assert list(Snapshot.objects.values_list("pk", "status")) == [(queued.pk, "queued")]


def test_an_unset_dsn_variable_fails_the_snapshot_with_its_name(data_dir, dump_source, monkeypatch):
    monkeypatch.delenv("FIXPROOF_TEST_SOURCE_DSN")

    with pytest.raises(CommandError) as raised:
        snapshot("shop")

    taken = Snapshot.objects.get()
    assert str(raised.value) == (
        f"Snapshot #{taken.pk} of shop failed: The environment variable "
        "FIXPROOF_TEST_SOURCE_DSN that should hold the DSN of source shop is not set."
    )
    assert taken.status == SnapshotStatus.FAILED
    assert dump_files(data_dir) == []
