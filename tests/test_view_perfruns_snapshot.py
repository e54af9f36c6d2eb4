"""Taking a snapshot of a source from its page, and a snapshot's page."""

from __future__ import annotations

import html

import psycopg
import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from perfruns.models import DumpSource, Snapshot, SnapshotStatus
from perfruns.services import snapshots, sources
from tests import sourcedb


def create(name: str = "shop") -> str:
    return reverse("perfruns:snapshot_create", args=[name])


def detail(snapshot: Snapshot) -> str:
    return reverse("perfruns:snapshot", args=[snapshot.pk])


@pytest.fixture
def source(db) -> DumpSource:
    # Never reached here: the snapshot itself is the task's job, not the view's.
    source, _ = sources.source_save(name="shop", dsn_env="SHOP_DSN", policy_yaml=sourcedb.POLICY)
    return source


def shown_messages(client, url: str) -> list[str]:
    """The texts of the messages the next page shows."""
    page = client.get(url).content.decode()
    return [
        html.unescape(part.split(">", 1)[1].split("</div>", 1)[0])
        for part in page.split('<div class="message ')[1:]
    ]


def add_unlisted_email_column(source_db: str) -> None:
    """A column the policy does not list, full of e-mail addresses."""
    with psycopg.connect(sourcedb.server_conninfo(source_db), autocommit=True) as conn:
        conn.execute("ALTER TABLE users ADD COLUMN backup_contact text")
        conn.execute("UPDATE users SET backup_contact = 'someone' || id || '@mail.example'")


# ---------------------------------------------------------------- snapshot_create


def test_an_engineer_queues_a_snapshot_and_its_task_after_commit(
    client, engineer, source, django_capture_on_commit_callbacks, django_assert_num_queries
):
    client.force_login(engineer)

    # session, user, the user's groups, the source; SAVEPOINT (view),
    # SAVEPOINT (service), INSERT the snapshot, RELEASE x2.
    with (
        django_capture_on_commit_callbacks(execute=False) as callbacks,
        django_assert_num_queries(9),
    ):
        response = client.post(create())

    snapshot = Snapshot.objects.get()
    assert response.status_code == 302
    assert response.url == detail(snapshot)
    assert len(callbacks) == 1
    assert snapshot.source == source
    assert snapshot.status == SnapshotStatus.QUEUED
    assert snapshot.created_by == engineer
    assert snapshot.policy_hash == source.policy_hash
    assert snapshot.started_at is None
    assert shown_messages(client, response.url) == ["Snapshot queued."]


def test_a_second_snapshot_is_refused_while_one_is_queued(
    client, engineer, source, django_capture_on_commit_callbacks, django_assert_num_queries
):
    first = snapshots.snapshot_request(source=source, actor=engineer)
    client.force_login(engineer)

    # session, user, the user's groups, the source; SAVEPOINT (view),
    # SAVEPOINT (service), the INSERT the unique index refuses, then
    # ROLLBACK TO and RELEASE of each savepoint.
    with (
        django_capture_on_commit_callbacks(execute=False) as callbacks,
        django_assert_num_queries(11),
    ):
        response = client.post(create())

    assert response.status_code == 302
    assert response.url == reverse("perfruns:source", args=["shop"])
    assert callbacks == []
    assert list(Snapshot.objects.values_list("pk", "status")) == [(first.pk, "queued")]
    assert shown_messages(client, response.url) == [
        "A snapshot of shop is already queued or running."
    ]


def test_a_new_snapshot_may_be_queued_once_the_last_one_finished(
    client, engineer, source, django_capture_on_commit_callbacks
):
    first = snapshots.snapshot_request(source=source, actor=engineer)
    Snapshot.objects.filter(pk=first.pk).update(status=SnapshotStatus.REJECTED)
    client.force_login(engineer)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(create())

    second = Snapshot.objects.exclude(pk=first.pk).get()
    assert response.url == detail(second)
    assert second.status == SnapshotStatus.QUEUED
    assert len(callbacks) == 1


def test_taking_a_snapshot_refuses_a_get(client, engineer, source):
    client.force_login(engineer)

    assert client.get(create()).status_code == 405
    assert not Snapshot.objects.exists()


@pytest.mark.parametrize("role", ["viewer", "manager", "nobody"])
def test_taking_a_snapshot_is_forbidden_to_anyone_but_an_engineer(
    client, request, role, source, django_capture_on_commit_callbacks
):
    client.force_login(request.getfixturevalue(role))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(create())

    assert response.status_code == 403
    assert callbacks == []
    assert not Snapshot.objects.exists()


def test_taking_a_snapshot_sends_an_anonymous_visitor_to_the_login_page(client, source):
    response = client.post(create())

    assert response.status_code == 302
    assert response.url == f"/login/?next={create()}"
    assert not Snapshot.objects.exists()


def test_a_snapshot_of_an_unknown_source_is_not_found(client, engineer):
    client.force_login(engineer)

    assert client.post(create("nope")).status_code == 404
    assert not Snapshot.objects.exists()


# ---------------------------------------------------------------- snapshot detail


def ready_snapshot(source: DumpSource, **fields) -> Snapshot:
    """A ready snapshot's row as snapshot_run records it (the file is not needed here)."""
    checks = [
        {
            "name": "no original value in public.users.email",
            "ok": True,
            "detail": "50 sampled originals, 0 found",
        },
        {"name": "no PII in unlisted columns", "ok": True, "detail": "none found"},
        {"name": "no dead tuples left by masking", "ok": False, "detail": "12 dead tuples"},
    ]
    values = {
        "status": SnapshotStatus.READY,
        "file_path": "/srv/fixproof/snapshots/shop/shop-20260301T020000Z.dump",
        "sha256": "9f" * 32,
        "size_bytes": 3 * 1024 * 1024,
        "table_rows": {"public.users": 400, "public.events": 3000},
        "policy_hash": source.policy_hash,
        "report": {
            "checks": checks,
            "text": "\n".join(
                f"{'ok' if c['ok'] else 'FAILED'}  {c['name']}: {c['detail']}" for c in checks
            ),
        },
    }
    values.update(fields)
    return Snapshot.objects.create(source=source, **values)


def test_a_ready_snapshot_shows_its_file_rows_and_checks(
    client, viewer, source, django_assert_num_queries
):
    snapshot = ready_snapshot(source, created_by=viewer)
    client.force_login(viewer)

    # session, user, the user's groups, the snapshot with its source and author.
    with django_assert_num_queries(4):
        response = client.get(detail(snapshot))

    assert response.status_code == 200
    page = response.content.decode()
    assert f"Snapshot #{snapshot.pk} of shop" in page
    assert "<code>/srv/fixproof/snapshots/shop/shop-20260301T020000Z.dump</code>" in page
    assert f"<code>{'9f' * 32}</code>" in page
    assert "3\u00a0MiB" in page  # in binary units, as every size on the pages
    # Rows per table, sorted by table.
    assert page.index("<code>public.events</code>") < page.index("<code>public.users</code>")
    assert '<td class="num">3000</td>' in page
    # Every check, a failed one marked as such.
    assert (
        '<tr><td>no original value in public.users.email</td><td class="ok">50 sampled '
        "originals, 0 found</td></tr>"
    ) in page
    assert (
        '<tr><td>no dead tuples left by masking</td><td class="missing">12 dead tuples</td></tr>'
    ) in page
    # The checks show once, as a table, not again as the plain-text report.
    assert "FAILED  no dead tuples left by masking" not in page
    assert "Why it is suspect" not in page


@pytest.mark.django_db(transaction=True)
def test_a_rejected_snapshot_shows_the_columns_it_found_and_why(
    client, data_dir, source_db, dump_source
):
    add_unlisted_email_column(source_db)
    snapshot = snapshots.snapshot_run(
        snapshot_id=snapshots.snapshot_request(source=dump_source, actor=None).pk
    )
    assert snapshot.status == SnapshotStatus.REJECTED, snapshot.error
    # Groups made by a migration are gone after another transactional test's flush.
    reader = User.objects.create_user("rita")
    reader.groups.add(Group.objects.get_or_create(name="viewer")[0])
    client.force_login(reader)

    response = client.get(detail(snapshot))

    assert response.status_code == 200
    page = response.content.decode()
    assert (
        '<div class="message error" role="alert">Possible PII in 1 column(s) the policy does '
        "not cover; nothing was written. Mask them, or &#39;keep&#39; them with a reason.</div>"
    ) in page
    assert "<th>Column</th><th>Why it is suspect</th>" in page
    assert (
        "<tr><td><code>public.users.backup_contact</code></td>"
        "<td>400 of 400 sampled values look like e-mail addresses</td></tr>"
    ) in page
    # No sampled value is quoted back.
    assert "@mail.example" not in page
    assert "<dt>File</dt>" not in page


def test_a_snapshot_page_refuses_a_post(client, viewer, source):
    snapshot = ready_snapshot(source)
    client.force_login(viewer)

    assert client.post(detail(snapshot)).status_code == 405


def test_a_snapshot_page_is_forbidden_to_a_user_without_a_role(client, nobody, source):
    snapshot = ready_snapshot(source)
    client.force_login(nobody)

    assert client.get(detail(snapshot)).status_code == 403


def test_a_snapshot_page_sends_an_anonymous_visitor_to_the_login_page(client, source):
    snapshot = ready_snapshot(source)

    response = client.get(detail(snapshot))

    assert response.status_code == 302
    assert response.url == f"/login/?next={detail(snapshot)}"


def test_an_unknown_snapshot_is_not_found(client, viewer):
    client.force_login(viewer)

    assert client.get(reverse("perfruns:snapshot", args=[999999])).status_code == 404
