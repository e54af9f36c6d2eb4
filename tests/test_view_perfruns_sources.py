"""Dump source pages: the list, a source, and creating or editing one (staff only)."""

from __future__ import annotations

import html

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from perfruns.masking.policy import policy_hash
from perfruns.models import DumpSource, Snapshot, SnapshotStatus
from perfruns.services import sources
from tests import sourcedb

# What $SHOP_DSN holds: none of it may reach a page.
SHOP_DSN = "postgresql://shop_reader:hunter2@db.internal:5432/shop"
LIST = reverse("perfruns:sources")
CREATE = reverse("perfruns:source_create")
BAD_POLICY = "tables:\n  users:\n    email: {fake: emial}\n"
BAD_POLICY_ERROR = (
    "line 3: users.email: fake kind 'emial' is not one of email, name, first_name, "
    "last_name, phone, address, city, postcode, username, code, company, text, ip"
)


def detail(name: str) -> str:
    return reverse("perfruns:source", args=[name])


def edit(name: str) -> str:
    return reverse("perfruns:source_edit", args=[name])


@pytest.fixture
def admin(db) -> User:
    """Staff, with only the viewer role: the staff flag is what allows editing."""
    user = User.objects.create_user("ada", password="correct horse battery", is_staff=True)
    user.groups.add(Group.objects.get(name="viewer"))
    return user


@pytest.fixture
def source(db, monkeypatch) -> DumpSource:
    monkeypatch.setenv("SHOP_DSN", SHOP_DSN)
    source, _ = sources.source_save(name="shop", dsn_env="SHOP_DSN", policy_yaml=sourcedb.POLICY)
    return source


def form_data(**fields) -> dict:
    data = {
        "name": "billing",
        "dsn_env": "BILLING_DSN",
        "dsn_file": "",
        "retention": "3",
        "policy_yaml": sourcedb.POLICY,
    }
    data.update(fields)
    return data


def make_snapshot(source: DumpSource, **fields) -> Snapshot:
    return Snapshot.objects.create(source=source, policy_hash=source.policy_hash, **fields)


def assert_no_dsn(page: str) -> None:
    assert "hunter2" not in page
    assert "db.internal" not in page
    assert "shop_reader" not in page


def shown_messages(client, url: str) -> list[str]:
    """The texts of the messages the next page shows."""
    page = client.get(url).content.decode()
    return [
        html.unescape(part.split(">", 1)[1].split("</div>", 1)[0])
        for part in page.split('<div class="message ')[1:]
    ]


# ---------------------------------------------------------------- list


def test_the_list_shows_each_source_with_its_dsn_variable_and_last_snapshot(client, viewer, source):
    make_snapshot(source, status=SnapshotStatus.FAILED)
    latest = make_snapshot(source, status=SnapshotStatus.READY)
    client.force_login(viewer)

    response = client.get(LIST)

    assert response.status_code == 200
    page = response.content.decode()
    assert f'<a href="{detail("shop")}">shop</a>' in page
    assert "<code>$SHOP_DSN</code>" in page
    assert f"<code>{source.policy_hash[:12]}</code>" in page
    assert f'<a href="{reverse("perfruns:snapshot", args=[latest.pk])}">#{latest.pk}</a>' in page
    assert_no_dsn(page)
    # Only staff are offered to add one.
    assert CREATE not in page


def test_the_list_offers_staff_a_new_source(client, admin, source):
    client.force_login(admin)

    assert f'href="{CREATE}"' in client.get(LIST).content.decode()


def test_the_list_takes_the_same_queries_however_many_sources_and_snapshots(
    client, viewer, source, django_assert_num_queries
):
    client.force_login(viewer)
    # session, user, the user's groups, the sources, the latest snapshot of each.
    with django_assert_num_queries(5):
        assert client.get(LIST).status_code == 200

    for n in range(5):
        other, _ = sources.source_save(
            name=f"shop-{n}", dsn_env="SHOP_DSN", policy_yaml=sourcedb.POLICY
        )
        make_snapshot(other, status=SnapshotStatus.READY)
        make_snapshot(other, status=SnapshotStatus.REJECTED)
    with django_assert_num_queries(5):
        response = client.get(LIST)
    assert response.content.decode().count("snap-rejected") == 5


def test_the_list_refuses_a_post(client, viewer):
    client.force_login(viewer)

    assert client.post(LIST).status_code == 405


def test_the_list_is_forbidden_to_a_user_without_a_role(client, nobody, source):
    client.force_login(nobody)

    assert client.get(LIST).status_code == 403


def test_the_list_sends_an_anonymous_visitor_to_the_login_page(client):
    response = client.get(LIST)

    assert response.status_code == 302
    assert response.url == f"/login/?next={LIST}"


# ---------------------------------------------------------------- detail


def test_a_source_page_shows_its_snapshots_and_policy_but_not_its_dsn(
    client, engineer, source, django_assert_num_queries
):
    ready = make_snapshot(
        source, status=SnapshotStatus.READY, sha256="ab" * 32, size_bytes=2048, created_by=engineer
    )
    rejected = make_snapshot(source, status=SnapshotStatus.REJECTED)
    client.force_login(engineer)

    # session, user, the user's groups, the source, its snapshots.
    with django_assert_num_queries(5):
        response = client.get(detail("shop"))

    assert response.status_code == 200
    page = response.content.decode()
    assert "<code>$SHOP_DSN</code>" in page
    assert_no_dsn(page)
    assert f'<a href="{reverse("perfruns:snapshot", args=[ready.pk])}">#{ready.pk}</a>' in page
    assert f'<a href="{reverse("perfruns:snapshot", args=[rejected.pk])}">' in page
    assert "Rejected (PII found)" in page
    assert "<code>abababababababab</code>" in page
    assert html.escape("invitee_email: {fake: email}") in page
    # An engineer may take a snapshot, but is not staff: no edit button.
    assert reverse("perfruns:snapshot_create", args=["shop"]) in page
    assert edit("shop") not in page


def test_a_source_page_offers_a_viewer_no_snapshot_button(client, viewer, source):
    client.force_login(viewer)

    page = client.get(detail("shop")).content.decode()

    assert "No snapshot yet." in page
    assert reverse("perfruns:snapshot_create", args=["shop"]) not in page


def test_a_source_page_refuses_a_post(client, engineer, source):
    client.force_login(engineer)

    assert client.post(detail("shop")).status_code == 405


def test_a_source_page_is_forbidden_to_a_user_without_a_role(client, nobody, source):
    client.force_login(nobody)

    assert client.get(detail("shop")).status_code == 403


def test_a_source_page_sends_an_anonymous_visitor_to_the_login_page(client, source):
    response = client.get(detail("shop"))

    assert response.status_code == 302
    assert response.url == f"/login/?next={detail('shop')}"


def test_an_unknown_source_is_not_found(client, viewer):
    client.force_login(viewer)

    assert client.get(detail("nope")).status_code == 404


# ---------------------------------------------------------------- create


def test_staff_create_a_source(client, admin, django_assert_num_queries):
    client.force_login(admin)

    # session, user; source_save: SAVEPOINT, update_or_create's SAVEPOINT,
    # SELECT ... FOR UPDATE, INSERT's SAVEPOINT, INSERT, RELEASE x3.
    with django_assert_num_queries(10):
        response = client.post(CREATE, form_data())

    assert response.status_code == 302
    assert response.url == detail("billing")
    source = DumpSource.objects.get(name="billing")
    assert source.dsn_env == "BILLING_DSN"
    assert source.dsn_file == ""
    assert source.retention == 3
    # Stripped like any text field: the trailing newline goes.
    assert source.policy_yaml == sourcedb.POLICY.rstrip("\n")
    assert source.policy_hash == policy_hash(sourcedb.POLICY)
    assert shown_messages(client, response.url) == ["Source saved."]


def test_the_new_source_form_explains_the_dsn_is_not_stored(client, admin):
    client.force_login(admin)

    response = client.get(CREATE)

    assert response.status_code == 200
    assert (
        "Fixproof stores the name of the variable or file that holds the source's DSN, "
        "never the DSN itself." in response.content.decode()
    )


def test_a_policy_that_does_not_parse_is_shown_with_its_line_and_nothing_is_saved(client, admin):
    client.force_login(admin)

    response = client.post(CREATE, form_data(policy_yaml=BAD_POLICY))

    assert response.status_code == 400
    assert html.escape(BAD_POLICY_ERROR) in response.content.decode()
    assert not DumpSource.objects.exists()


def test_invalid_yaml_is_shown_with_its_line(client, admin):
    client.force_login(admin)

    response = client.post(CREATE, form_data(policy_yaml="tables:\n  users: [\n"))

    assert response.status_code == 400
    # The text is stripped first: the end of the stream is on line 2.
    assert (
        html.escape("line 2: not valid YAML: expected the node content, but found '<stream end>'")
        in response.content.decode()
    )
    assert not DumpSource.objects.exists()


def test_a_dsn_given_for_the_variable_is_refused_and_never_shown_back(client, admin):
    client.force_login(admin)

    response = client.post(CREATE, form_data(dsn_env=SHOP_DSN))

    assert response.status_code == 400
    page = response.content.decode()
    assert (
        '<div class="message error" role="alert"><ul class="errorlist nonfield"><li>'
        "Give the NAME of the variable holding the DSN, not the DSN.</li></ul></div>"
    ) in page
    assert_no_dsn(page)
    assert not DumpSource.objects.exists()


def test_a_source_needs_exactly_one_dsn_origin(client, admin):
    client.force_login(admin)

    response = client.post(CREATE, form_data(dsn_file="/run/secrets/billing"))

    assert response.status_code == 400
    assert (
        "Give either the DSN environment variable or the DSN file, not both."
        in response.content.decode()
    )
    assert not DumpSource.objects.exists()


def test_creating_a_source_is_forbidden_to_a_non_staff_engineer(client, engineer):
    client.force_login(engineer)

    assert client.get(CREATE).status_code == 403
    assert client.post(CREATE, form_data()).status_code == 403
    assert not DumpSource.objects.exists()


def test_creating_a_source_sends_an_anonymous_visitor_to_the_login_page(client, db):
    response = client.post(CREATE, form_data())

    assert response.status_code == 302
    assert response.url == f"/login/?next={CREATE}"
    assert not DumpSource.objects.exists()


def test_the_new_source_form_refuses_a_put(client, admin):
    client.force_login(admin)

    assert client.put(CREATE).status_code == 405


# ---------------------------------------------------------------- edit


def test_the_edit_form_shows_the_variable_name_and_policy(client, admin, source):
    client.force_login(admin)

    response = client.get(edit("shop"))

    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="dsn_env" value="SHOP_DSN"' in page
    assert html.escape("invitee_email: {fake: email}") in page
    assert_no_dsn(page)


def test_staff_edit_a_source(client, admin, source, django_assert_num_queries):
    new_policy = sourcedb.POLICY.replace("phone: null", "phone: {fake: phone}")
    client.force_login(admin)

    # session, user, the source; source_save: SAVEPOINT, update_or_create's
    # SAVEPOINT, SELECT ... FOR UPDATE, UPDATE, RELEASE x2.
    with django_assert_num_queries(9):
        response = client.post(
            edit("shop"),
            form_data(
                name="shop", dsn_env="", dsn_file="/run/secrets/shop", policy_yaml=new_policy
            ),
        )

    assert response.status_code == 302
    assert response.url == detail("shop")
    source.refresh_from_db()
    assert source.dsn_env == ""
    assert source.dsn_file == "/run/secrets/shop"
    assert source.retention == 3
    assert source.policy_yaml == new_policy.rstrip("\n")
    assert source.policy_hash == policy_hash(new_policy)
    assert DumpSource.objects.count() == 1


def test_a_source_cannot_be_renamed(client, admin, source):
    before = DumpSource.objects.values().get(pk=source.pk)
    client.force_login(admin)

    response = client.post(edit("shop"), form_data(name="shop-2", dsn_env="SHOP_DSN"))

    assert response.status_code == 400
    assert "A source cannot be renamed." in response.content.decode()
    assert list(DumpSource.objects.values()) == [before]


def test_a_bad_policy_leaves_the_saved_one_untouched(client, admin, source):
    before = DumpSource.objects.values().get(pk=source.pk)
    client.force_login(admin)

    response = client.post(
        edit("shop"), form_data(name="shop", dsn_env="SHOP_DSN", policy_yaml=BAD_POLICY)
    )

    assert response.status_code == 400
    assert html.escape(BAD_POLICY_ERROR) in response.content.decode()
    assert list(DumpSource.objects.values()) == [before]


def test_editing_a_source_is_forbidden_to_a_non_staff_engineer(client, engineer, source):
    before = DumpSource.objects.values().get(pk=source.pk)
    client.force_login(engineer)

    assert client.get(edit("shop")).status_code == 403
    response = client.post(edit("shop"), form_data(name="shop", policy_yaml=BAD_POLICY))
    assert response.status_code == 403
    assert list(DumpSource.objects.values()) == [before]


def test_editing_a_source_sends_an_anonymous_visitor_to_the_login_page(client, source):
    response = client.get(edit("shop"))

    assert response.status_code == 302
    assert response.url == f"/login/?next={edit('shop')}"


def test_the_edit_form_refuses_a_delete(client, admin, source):
    client.force_login(admin)

    assert client.delete(edit("shop")).status_code == 405
    assert DumpSource.objects.filter(pk=source.pk).exists()


def test_editing_an_unknown_source_is_not_found(client, admin):
    client.force_login(admin)

    assert client.get(edit("nope")).status_code == 404
