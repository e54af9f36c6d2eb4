"""Review environment pages: list, detail and its live progress, create/edit, restore."""

from __future__ import annotations

import datetime as dt
import html
import itertools

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse
from django.utils import timezone

from perfruns.models import (
    DumpSource,
    Restore,
    RestoreStatus,
    ReviewEnvironment,
    Snapshot,
    SnapshotStatus,
)
from perfruns.services import environments, restores, sources
from tests import sourcedb

LIST = reverse("perfruns:environments")
CREATE = reverse("perfruns:environment_create")


def detail(name: str = "review") -> str:
    return reverse("perfruns:environment", args=[name])


def edit(name: str = "review") -> str:
    return reverse("perfruns:environment_edit", args=[name])


def progress(name: str = "review") -> str:
    return reverse("perfruns:progress", args=[name])


def restore_url(name: str = "review") -> str:
    return reverse("perfruns:restore", args=[name])


@pytest.fixture
def admin(db) -> User:
    """Staff, with only the viewer role: the staff flag is what allows editing."""
    user = User.objects.create_user("ada", password="correct horse battery", is_staff=True)
    user.groups.add(Group.objects.get(name="viewer"))
    return user


@pytest.fixture
def source(db) -> DumpSource:
    source, _ = sources.source_save(name="shop", dsn_env="SHOP_DSN", policy_yaml=sourcedb.POLICY)
    return source


@pytest.fixture
def env(db, source) -> ReviewEnvironment:
    env, _ = environments.environment_save(
        name="review", source=source, shared_buffers="256MB", work_mem="8MB", max_connections=40
    )
    return env


# Each snapshot made finishes a minute after the one before: "latest" is well defined.
_minutes = itertools.count()


def make_snapshot(source: DumpSource, status: str = SnapshotStatus.READY, **fields) -> Snapshot:
    """A snapshot row; a ready one has a (fake) file and sha256, as restore_request checks."""
    finished = timezone.now() - dt.timedelta(days=1) + dt.timedelta(minutes=next(_minutes))
    values = {"status": status, "finished_at": finished, "policy_hash": source.policy_hash}
    if status == SnapshotStatus.READY:
        values.update(file_path=f"/srv/snapshots/shop-{finished:%H%M%S}.dump", sha256="ab" * 32)
    values.update(fields)
    return Snapshot.objects.create(source=source, **values)


def form_data(**fields) -> dict:
    data = {
        "name": "staging",
        "kind": "managed",
        "dsn_env": "",
        "database_name": "shop_review",
        "source": "",
        "shared_buffers": "512MB",
        "work_mem": "16MB",
        "max_connections": "50",
    }
    data.update(fields)
    return data


def shown_messages(client, url: str) -> list[str]:
    """The texts of the messages the next page shows."""
    page = client.get(url).content.decode()
    return [
        html.unescape(part.split(">", 1)[1].split("</div>", 1)[0])
        for part in page.split('<div class="message ')[1:]
    ]


# ---------------------------------------------------------------- list


def test_the_list_shows_each_environment_and_its_current_snapshot(
    client, viewer, env, source, django_assert_num_queries
):
    snapshot = make_snapshot(source)
    ReviewEnvironment.objects.filter(pk=env.pk).update(
        current_snapshot=snapshot, last_restored_at=timezone.now()
    )
    environments.environment_save(name="bare", database_name="bare_db")
    client.force_login(viewer)

    # session, user, the user's groups, the environments with their snapshots.
    with django_assert_num_queries(4):
        response = client.get(LIST)

    assert response.status_code == 200
    page = response.content.decode()
    assert f'<a href="{detail("review")}">review</a>' in page
    assert f'<a href="{detail("bare")}">bare</a>' in page
    assert "<code>bare_db</code>" in page
    assert (
        f'<a href="{reverse("perfruns:snapshot", args=[snapshot.pk])}">#{snapshot.pk}</a>' in page
    )
    assert CREATE not in page


def test_the_list_offers_staff_a_new_environment(client, admin):
    client.force_login(admin)

    page = client.get(LIST).content.decode()

    assert "No review environment yet." in page
    assert f'href="{CREATE}"' in page


def test_the_list_refuses_a_post(client, viewer):
    client.force_login(viewer)

    assert client.post(LIST).status_code == 405


def test_the_list_is_forbidden_to_a_user_without_a_role(client, nobody):
    client.force_login(nobody)

    assert client.get(LIST).status_code == 403


def test_the_list_sends_an_anonymous_visitor_to_the_login_page(client):
    response = client.get(LIST)

    assert response.status_code == 302
    assert response.url == f"/login/?next={LIST}"


# ---------------------------------------------------------------- detail


def test_an_environment_page_shows_its_settings_restores_and_restore_form(
    client, engineer, env, source, django_assert_num_queries
):
    done = make_snapshot(source)
    rejected = make_snapshot(source, SnapshotStatus.REJECTED)
    Restore.objects.create(
        environment=env,
        snapshot=done,
        status=RestoreStatus.DONE,
        tables_done=4,
        tables_total=4,
        created_by=engineer,
    )
    for _ in range(4):
        make_snapshot(source)
    client.force_login(engineer)

    # session, user, the user's groups, the environment with its current
    # snapshot, its source, its restores, the ready snapshots (with their
    # sources) for the restore form.
    with django_assert_num_queries(7):
        response = client.get(detail())

    assert response.status_code == 200
    page = response.content.decode()
    assert "Environment review" in page
    assert "<dt>shared_buffers</dt><dd>256MB</dd>" in page
    assert "<dt>work_mem</dt><dd>8MB</dd>" in page
    assert "<dt>max_connections</dt><dd>40</dd>" in page
    assert f'<a href="{reverse("perfruns:source", args=["shop"])}">shop</a>' in page
    assert f'data-poll="{progress()}"' in page
    assert 'data-active="false"' in page
    assert '<td class="num">4 / 4</td>' in page
    # Ready snapshots only, newest first, offered by their source's name.
    assert f'<option value="{done.pk}">shop #{done.pk}</option>' in page
    assert f'<option value="{rejected.pk}"' not in page
    form = page.split(f'action="{restore_url()}"')[1].split("</form>")[0]
    assert form.count("<option value=") == 1 + 5  # "Latest ready snapshot" and five
    # An engineer is not staff: no edit button.
    assert edit() not in page


def test_an_environment_page_offers_a_viewer_no_restore(client, viewer, env, source):
    make_snapshot(source)
    client.force_login(viewer)

    page = client.get(detail()).content.decode()

    assert "No restore yet." in page
    assert restore_url() not in page


def test_an_environment_page_refuses_a_post(client, viewer, env):
    client.force_login(viewer)

    assert client.post(detail()).status_code == 405


def test_an_environment_page_is_forbidden_to_a_user_without_a_role(client, nobody, env):
    client.force_login(nobody)

    assert client.get(detail()).status_code == 403


def test_an_environment_page_sends_an_anonymous_visitor_to_the_login_page(client, env):
    response = client.get(detail())

    assert response.status_code == 302
    assert response.url == f"/login/?next={detail()}"


def test_an_unknown_environment_is_not_found(client, viewer):
    client.force_login(viewer)

    assert client.get(detail("nope")).status_code == 404


# ---------------------------------------------------------------- progress


def test_the_progress_partial_shows_the_bar_of_an_active_restore(
    client, engineer, env, source, django_assert_num_queries
):
    snapshot = make_snapshot(source)
    Restore.objects.create(
        environment=env,
        snapshot=snapshot,
        status=RestoreStatus.RUNNING,
        stage="restoring",
        tables_done=3,
        tables_total=4,
    )
    client.force_login(engineer)

    # session, user, the user's groups, the environment with its current
    # snapshot, its restores (no restore form while one is active).
    with django_assert_num_queries(5):
        response = client.get(progress())

    assert response.status_code == 200
    page = response.content.decode()
    # The live part alone, not a whole page.
    assert page.lstrip().startswith('<div class="live" data-active="true">')
    assert "<html" not in page
    assert (
        f"<p>Restoring snapshot #{snapshot.pk} — Running, restoring (3 of 4 tables)</p>"
        in " ".join(page.split())
    )
    assert '<progress max="100" value="75">75%</progress>' in page
    assert restore_url() not in page


def test_the_progress_partial_stops_the_polling_once_the_restore_is_done(
    client, engineer, env, source
):
    snapshot = make_snapshot(source)
    Restore.objects.create(
        environment=env, snapshot=snapshot, status=RestoreStatus.DONE, tables_done=4, tables_total=4
    )
    ReviewEnvironment.objects.filter(pk=env.pk).update(
        current_snapshot=snapshot, last_restored_at=timezone.now()
    )
    client.force_login(engineer)

    page = client.get(progress()).content.decode()

    assert 'data-active="false"' in page
    assert "<progress" not in page
    assert (
        f'<a href="{reverse("perfruns:snapshot", args=[snapshot.pk])}">#{snapshot.pk}</a>' in page
    )
    assert f'action="{restore_url()}"' in page


def test_the_progress_partial_refuses_a_post(client, viewer, env):
    client.force_login(viewer)

    assert client.post(progress()).status_code == 405


def test_the_progress_partial_is_forbidden_to_a_user_without_a_role(client, nobody, env):
    client.force_login(nobody)

    assert client.get(progress()).status_code == 403


def test_the_progress_partial_sends_an_anonymous_visitor_to_the_login_page(client, env):
    response = client.get(progress())

    assert response.status_code == 302
    assert response.url == f"/login/?next={progress()}"


# ---------------------------------------------------------------- create / edit


def test_staff_create_an_environment(client, admin, source, django_assert_num_queries):
    client.force_login(admin)

    # session, user, the chosen source (form); environment_save: SAVEPOINT,
    # update_or_create's SAVEPOINT, SELECT ... FOR UPDATE, INSERT's SAVEPOINT,
    # INSERT, RELEASE x3.
    with django_assert_num_queries(11):
        response = client.post(CREATE, form_data(source=str(source.pk)))

    assert response.status_code == 302
    assert response.url == detail("staging")
    env = ReviewEnvironment.objects.get(name="staging")
    assert env.kind == "managed"
    assert env.dsn_env == ""
    assert env.database_name == "shop_review"
    assert env.source == source
    assert env.shared_buffers == "512MB"
    assert env.work_mem == "16MB"
    assert env.max_connections == 50
    assert env.current_snapshot is None
    assert shown_messages(client, response.url) == ["Environment saved."]


def test_a_bad_shared_buffers_is_refused_with_its_message_and_nothing_saved(client, admin):
    client.force_login(admin)

    response = client.post(CREATE, form_data(shared_buffers="512 megs"))

    assert response.status_code == 400
    assert (
        '<div class="message error" role="alert"><ul class="errorlist nonfield"><li>'
        + html.escape("shared_buffers must look like 128MB, 4MB or 1GB (got '512 megs').")
        + "</li></ul></div>"
    ) in response.content.decode()
    assert not ReviewEnvironment.objects.exists()


def test_an_existing_server_needs_its_dsn_variable(client, admin):
    client.force_login(admin)

    response = client.post(CREATE, form_data(kind="existing"))

    assert response.status_code == 400
    assert (
        "An existing server needs --dsn-env, the variable holding its DSN."
        in response.content.decode()
    )
    assert not ReviewEnvironment.objects.exists()


def test_an_admin_dsn_given_for_the_variable_is_refused_and_never_shown_back(client, admin):
    client.force_login(admin)

    response = client.post(
        CREATE, form_data(kind="existing", dsn_env="host=db.internal password=hunter2")
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert "Give the NAME of the variable holding the DSN, not the DSN." in page
    assert "hunter2" not in page
    assert "db.internal" not in page
    assert not ReviewEnvironment.objects.exists()


def test_creating_an_environment_is_forbidden_to_a_non_staff_engineer(client, engineer):
    client.force_login(engineer)

    assert client.get(CREATE).status_code == 403
    assert client.post(CREATE, form_data()).status_code == 403
    assert not ReviewEnvironment.objects.exists()


def test_creating_an_environment_sends_an_anonymous_visitor_to_the_login_page(client, db):
    response = client.post(CREATE, form_data())

    assert response.status_code == 302
    assert response.url == f"/login/?next={CREATE}"
    assert not ReviewEnvironment.objects.exists()


def test_the_new_environment_form_refuses_a_put(client, admin):
    client.force_login(admin)

    assert client.put(CREATE).status_code == 405


def test_the_edit_form_shows_the_current_settings(client, admin, env, source):
    client.force_login(admin)

    response = client.get(edit())

    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="shared_buffers" value="256MB"' in page
    assert 'name="max_connections" value="40"' in page
    assert f'<option value="{source.pk}" selected>shop</option>' in page


def test_staff_edit_an_environment(client, admin, env, django_assert_num_queries):
    client.force_login(admin)

    # session, user, the environment, its source (the form's initial value);
    # environment_save: SAVEPOINT, update_or_create's SAVEPOINT,
    # SELECT ... FOR UPDATE, UPDATE, RELEASE x2.
    with django_assert_num_queries(10):
        response = client.post(edit(), form_data(name="review", database_name="review"))

    assert response.status_code == 302
    assert response.url == detail()
    env.refresh_from_db()
    assert env.shared_buffers == "512MB"
    assert env.work_mem == "16MB"
    assert env.max_connections == 50
    assert env.source is None
    assert ReviewEnvironment.objects.count() == 1


def test_an_environment_cannot_be_renamed(client, admin, env):
    before = ReviewEnvironment.objects.values().get(pk=env.pk)
    client.force_login(admin)

    response = client.post(edit(), form_data(name="review-2"))

    assert response.status_code == 400
    assert "An environment cannot be renamed." in response.content.decode()
    assert list(ReviewEnvironment.objects.values()) == [before]


def test_a_bad_work_mem_leaves_the_saved_environment_untouched(client, admin, env):
    before = ReviewEnvironment.objects.values().get(pk=env.pk)
    client.force_login(admin)

    response = client.post(edit(), form_data(name="review", work_mem="8"))

    assert response.status_code == 400
    assert (
        html.escape("work_mem must look like 128MB, 4MB or 1GB (got '8').")
        in response.content.decode()
    )
    assert list(ReviewEnvironment.objects.values()) == [before]


def test_editing_an_environment_is_forbidden_to_a_non_staff_engineer(client, engineer, env):
    before = ReviewEnvironment.objects.values().get(pk=env.pk)
    client.force_login(engineer)

    assert client.get(edit()).status_code == 403
    assert client.post(edit(), form_data(name="review")).status_code == 403
    assert list(ReviewEnvironment.objects.values()) == [before]


def test_editing_an_environment_sends_an_anonymous_visitor_to_the_login_page(client, env):
    response = client.get(edit())

    assert response.status_code == 302
    assert response.url == f"/login/?next={edit()}"


def test_the_edit_form_refuses_a_delete(client, admin, env):
    client.force_login(admin)

    assert client.delete(edit()).status_code == 405
    assert ReviewEnvironment.objects.filter(pk=env.pk).exists()


# ---------------------------------------------------------------- restore_create


def test_an_engineer_queues_a_restore_of_the_latest_ready_snapshot(
    client, engineer, env, source, django_capture_on_commit_callbacks, django_assert_num_queries
):
    make_snapshot(source)
    latest = make_snapshot(source)
    make_snapshot(source, SnapshotStatus.REJECTED)
    other, _ = sources.source_save(name="crm", dsn_env="CRM_DSN", policy_yaml=sourcedb.POLICY)
    make_snapshot(other)  # newer, but of another source
    client.force_login(engineer)

    # session, user, the user's groups, the environment; SAVEPOINT (view),
    # the latest ready snapshot of its source, SAVEPOINT (service), INSERT the
    # restore, RELEASE x2.
    with (
        django_capture_on_commit_callbacks(execute=False) as callbacks,
        django_assert_num_queries(10),
    ):
        response = client.post(restore_url(), {"snapshot": ""})

    assert response.status_code == 302
    assert response.url == detail()
    assert len(callbacks) == 1
    restore = Restore.objects.get()
    assert restore.environment == env
    assert restore.snapshot == latest
    assert restore.status == RestoreStatus.QUEUED
    assert restore.created_by == engineer
    assert restore.tables_done == 0
    assert shown_messages(client, response.url) == ["Restore queued."]


def test_an_engineer_queues_a_restore_of_a_chosen_snapshot(
    client, engineer, env, source, django_capture_on_commit_callbacks
):
    chosen = make_snapshot(source)
    make_snapshot(source)
    client.force_login(engineer)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(restore_url(), {"snapshot": str(chosen.pk)})

    assert response.url == detail()
    assert len(callbacks) == 1
    assert Restore.objects.get().snapshot == chosen


def test_a_restore_is_refused_when_there_is_no_ready_snapshot(
    client, engineer, env, source, django_capture_on_commit_callbacks
):
    make_snapshot(source, SnapshotStatus.REJECTED)
    make_snapshot(source, deleted_at=timezone.now())  # removed by retention
    client.force_login(engineer)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(restore_url(), {"snapshot": ""})

    assert response.status_code == 302
    assert response.url == detail()
    assert callbacks == []
    assert not Restore.objects.exists()
    assert shown_messages(client, response.url) == [
        "There is no ready snapshot to restore into review: take one first."
    ]


def test_a_rejected_snapshot_cannot_be_chosen(
    client, engineer, env, source, django_capture_on_commit_callbacks
):
    rejected = make_snapshot(source, SnapshotStatus.REJECTED)
    make_snapshot(source)
    client.force_login(engineer)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(restore_url(), {"snapshot": str(rejected.pk)})

    assert callbacks == []
    assert not Restore.objects.exists()
    assert shown_messages(client, response.url) == ["Unknown snapshot."]


def test_a_second_restore_is_refused_while_one_is_queued(
    client, engineer, env, source, django_capture_on_commit_callbacks
):
    first = restores.restore_request(environment=env, snapshot=make_snapshot(source), actor=None)
    client.force_login(engineer)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(restore_url(), {"snapshot": ""})

    assert callbacks == []
    assert list(Restore.objects.values_list("pk", flat=True)) == [first.pk]
    assert shown_messages(client, response.url) == [
        "A restore into review is already queued or running."
    ]


def test_starting_a_restore_refuses_a_get(client, engineer, env):
    client.force_login(engineer)

    assert client.get(restore_url()).status_code == 405


@pytest.mark.parametrize("role", ["viewer", "manager", "nobody", "admin"])
def test_starting_a_restore_is_forbidden_to_anyone_but_an_engineer(
    client, request, role, env, source, django_capture_on_commit_callbacks
):
    make_snapshot(source)
    client.force_login(request.getfixturevalue(role))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(restore_url(), {"snapshot": ""})

    assert response.status_code == 403
    assert callbacks == []
    assert not Restore.objects.exists()


def test_starting_a_restore_sends_an_anonymous_visitor_to_the_login_page(client, env):
    response = client.post(restore_url())

    assert response.status_code == 302
    assert response.url == f"/login/?next={restore_url()}"
    assert not Restore.objects.exists()


def test_a_restore_into_an_unknown_environment_is_not_found(client, engineer):
    client.force_login(engineer)

    assert client.post(restore_url("nope")).status_code == 404
