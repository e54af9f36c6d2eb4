"""snapshots.snapshot_run: dump, mask, verify and write an anonymized snapshot."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import psycopg
import pytest

from perfruns.models import SnapshotStatus
from perfruns.services import common, snapshots
from tests import sourcedb

pytestmark = pytest.mark.django_db(transaction=True)


take = sourcedb.take_snapshot


def source_values(source_db: str, query: str) -> list[str]:
    with psycopg.connect(sourcedb.server_conninfo(source_db)) as conn:
        return [row[0] for row in conn.execute(query)]


dump_text = sourcedb.dump_text


def test_it_writes_a_verified_owner_only_dump_with_its_sha256(data_dir, dump_source):
    snapshot = take(dump_source)

    assert snapshot.status == SnapshotStatus.READY, snapshot.error
    path = Path(snapshot.file_path)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(snapshot.sha256) == 64
    assert snapshot.size_bytes == path.stat().st_size
    assert snapshot.policy_hash == dump_source.policy_hash
    assert snapshot.table_rows["public.users"] == 400
    assert snapshot.table_rows["public.sessions"] == 0
    assert snapshot.table_rows["public.events"] == 3000
    assert all(check["ok"] for check in snapshot.report["checks"])
    # The raw dump and the scratch cluster are gone.
    assert not (data_dir / "scratch" / f"snapshot-{snapshot.pk}").exists()


def test_no_original_value_of_a_pii_column_is_anywhere_in_the_dump(
    data_dir, dump_source, source_db
):
    snapshot = take(dump_source)
    assert snapshot.status == SnapshotStatus.READY, snapshot.error
    text = dump_text(snapshot.file_path).lower()

    originals = (
        source_values(source_db, "SELECT lower(email) FROM users")
        + source_values(source_db, "SELECT lower(trim(invitee_email)) FROM invitations")
        + source_values(source_db, "SELECT phone FROM users")
        + source_values(source_db, "SELECT 'surname' || id FROM users")
        + source_values(source_db, "SELECT token FROM sessions")
        + source_values(source_db, "SELECT DISTINCT payload->>'ip' FROM events")
        + source_values(source_db, "SELECT DISTINCT profile->>'ip' FROM users")
        + ["fr7630006000011234567890189"]
    )
    leaked = [value for value in originals if value.lower() in text]
    assert leaked == []
    # Kept columns are there, as the policy says.
    assert "prefers the blue plan" in text
    # The keyed functions never reach the dump.
    assert "fixproof_mask" not in text


def test_the_same_email_gives_the_same_fake_in_every_table(data_dir, dump_source):
    snapshot = take(dump_source)
    assert snapshot.status == SnapshotStatus.READY, snapshot.error
    text = dump_text(snapshot.file_path)
    # invitations.invitee_email was '  customer<i>@example.com ' for users <i>
    # 'Customer<i>@Example.COM': normalised, they must map to the same fake.
    users = {}
    invitations = []
    section = None
    for line in text.splitlines():
        if line.startswith("COPY public.users "):
            section = "users"
            continue
        if line.startswith("COPY public.invitations "):
            section = "invitations"
            continue
        if line == "\\.":
            section = None
            continue
        if section == "users":
            cols = line.split("\t")
            users[cols[0]] = cols[1]
        elif section == "invitations":
            cols = line.split("\t")
            invitations.append((cols[1], cols[2]))
    assert len(invitations) == 100
    assert all(users[user_id] == email for user_id, email in invitations)
    assert len(set(users.values())) == 400  # still unique


def test_masking_the_same_source_twice_gives_the_same_fakes(data_dir, dump_source):
    first = dump_text(take(dump_source).file_path)
    second = dump_text(take(dump_source).file_path)
    pick = [line for line in first.splitlines() if "@" in line][:20]
    assert pick and all(line in second for line in pick)


def test_it_keeps_only_the_last_snapshots_of_a_source(data_dir, dump_source):
    dump_source.retention = 1
    dump_source.save()
    first = take(dump_source)
    second = take(dump_source)

    first.refresh_from_db()
    assert first.deleted_at is not None
    assert not Path(first.file_path).exists()
    assert second.deleted_at is None
    assert Path(second.file_path).exists()


def test_a_second_snapshot_request_is_refused_while_one_is_queued(db, dump_source):
    snapshots.snapshot_request(source=dump_source, actor=None)
    with pytest.raises(common.PipelineRefused, match="already queued or running"):
        snapshots.snapshot_request(source=dump_source, actor=None)


def test_a_redelivered_task_does_nothing(data_dir, dump_source):
    snapshot = take(dump_source)
    again = snapshots.snapshot_run(snapshot_id=snapshot.pk)
    assert again.status == SnapshotStatus.READY
    assert again.finished_at == snapshot.finished_at


def test_a_row_filter_subsets_the_data_and_leaves_no_dead_tuples(data_dir, dump_source, source_db):
    # Keep a third of the users: their invitations and events must follow.
    dump_source.policy_yaml = sourcedb.POLICY.replace(
        "  users:\n", '  users:\n    _where: "id % 3 = 0"\n'
    )
    dump_source.save()

    snapshot = take(dump_source)

    assert snapshot.status == SnapshotStatus.READY, snapshot.error
    expected = {
        table: source_values(
            source_db,
            f"SELECT count(*)::text FROM {table} WHERE "
            + ("id % 3 = 0" if table == "users" else "user_id % 3 = 0"),
        )[0]
        for table in ("users", "invitations", "events")
    }
    assert snapshot.table_rows["public.users"] == int(expected["users"]) == 133
    assert snapshot.table_rows["public.invitations"] == int(expected["invitations"]) > 0
    assert snapshot.table_rows["public.events"] == int(expected["events"]) > 0
    dead = next(c for c in snapshot.report["checks"] if c["name"].startswith("no dead tuples"))
    assert dead["ok"], dead


@pytest.fixture
def full_snapshot_disk(data_dir):
    """The snapshots folder on an 8 kB tmpfs: writing the dump fills the disk."""
    target = data_dir / "snapshots"
    target.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8k,mode=0700", "tmpfs", str(target)],
        capture_output=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield target
    subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


def test_a_full_disk_fails_the_snapshot_and_leaves_no_partial_file(
    data_dir, dump_source, full_snapshot_disk
):
    snapshot = take(dump_source)

    assert snapshot.status == SnapshotStatus.FAILED
    assert "disk is full" in snapshot.error
    assert list(full_snapshot_disk.rglob("*.dump")) == []
    assert list(full_snapshot_disk.rglob("*.partial")) == []
    assert not (data_dir / "scratch" / f"snapshot-{snapshot.pk}").exists()


@pytest.fixture
def password_server(data_dir):
    """A cluster that checks passwords (the local server trusts everyone)."""
    from perfruns.pipeline.cluster import ManagedCluster
    from perfruns.services.environments import cluster_os_user

    cluster = ManagedCluster(data_dir / "password-server", os_user=cluster_os_user())
    cluster.initialize(shared_buffers="32MB", work_mem="4MB", max_connections=20, durable=False)
    hba = cluster.data_dir / "pg_hba.conf"
    hba.write_text("host all shop 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    port = cluster.start()
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE ROLE shop LOGIN PASSWORD 'right-password'")
    yield port
    cluster.destroy()


def test_a_wrong_password_fails_the_snapshot_without_showing_it(
    data_dir, dump_source, password_server, monkeypatch
):
    monkeypatch.setenv(
        "FIXPROOF_TEST_SOURCE_DSN",
        f"postgresql://shop:hunter2-wrong@127.0.0.1:{password_server}/postgres",
    )
    snapshot = take(dump_source)

    assert snapshot.status == SnapshotStatus.FAILED
    assert "refused the password" in snapshot.error
    assert "hunter2" not in snapshot.error
    assert not snapshot.file_path


def test_an_unreachable_source_fails_the_snapshot_naming_the_problem(
    data_dir, dump_source, monkeypatch
):
    monkeypatch.setenv("FIXPROOF_TEST_SOURCE_DSN", "postgresql://shop:hunter2@127.0.0.1:1/shop")
    snapshot = take(dump_source)

    assert snapshot.status == SnapshotStatus.FAILED
    assert "the source is unreachable" in snapshot.error
    assert "hunter2" not in snapshot.error


def test_a_policy_that_does_not_fit_the_source_fails_before_any_dump(data_dir, dump_source):
    dump_source.policy_yaml = sourcedb.POLICY + (
        "  ghosts:\n    email: {fake: email}\n  orders_archive: truncate\n"
    )
    dump_source.policy_yaml = dump_source.policy_yaml.replace(
        '    kind: {keep: "an enum of event kinds"}\n',
        '    kind: {keep: "an enum of event kinds"}\n    user_id: {fake: email}\n',
    )
    dump_source.save()

    snapshot = take(dump_source)

    assert snapshot.status == SnapshotStatus.FAILED
    problems = " ".join(snapshot.report["policy_errors"])
    assert "public.ghosts" in problems
    assert "public.orders_archive" in problems
    assert "public.events.user_id" in problems
    assert not (data_dir / "snapshots").exists() or not list((data_dir / "snapshots").rglob("*"))


def test_an_unlisted_pii_column_stops_the_snapshot_with_a_report(data_dir, dump_source, source_db):
    with psycopg.connect(sourcedb.server_conninfo(source_db), autocommit=True) as conn:
        conn.execute("ALTER TABLE users ADD COLUMN backup_contact text")
        conn.execute("UPDATE users SET backup_contact = 'someone' || id || '@mail.example'")
        conn.execute("ALTER TABLE events ADD COLUMN client_address text")

    snapshot = take(dump_source)

    assert snapshot.status == SnapshotStatus.REJECTED
    findings = {(f["table"], f["column"]): f["reasons"] for f in snapshot.report["findings"]}
    # By content: the name says nothing.
    assert any("e-mail" in r for r in findings[("public.users", "backup_contact")])
    # By name: the column is empty.
    assert ("public.events", "client_address") in findings
    assert "public.users.backup_contact" in snapshot.report["text"]
    assert not snapshot.file_path
