"""manage.py add_environment: create or update a review environment."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from perfruns.models import DumpSource, ReviewEnvironment
from perfruns.services import sources
from tests import sourcedb


def add_environment(*args: str) -> str:
    out = io.StringIO()
    call_command("add_environment", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def source(db) -> DumpSource:
    source, _ = sources.source_save(name="shop", dsn_env="SHOP_DSN", policy_yaml=sourcedb.POLICY)
    return source


def test_it_creates_a_managed_environment_with_the_defaults(db):
    out = add_environment("review")

    assert out == "Created review environment review.\n"
    env = ReviewEnvironment.objects.get()
    assert env.name == "review"
    assert env.kind == "managed"
    assert env.dsn_env == ""
    assert env.database_name == "review"
    assert env.source is None
    assert (env.shared_buffers, env.work_mem, env.max_connections) == ("128MB", "4MB", 100)


def test_it_updates_an_environment_by_name(db, source):
    add_environment("review")

    out = add_environment(
        "review",
        "--source",
        "shop",
        "--database",
        "shop_review",
        "--shared-buffers",
        "1GB",
        "--work-mem",
        "64MB",
        "--max-connections",
        "20",
    )

    assert out == "Updated review environment review.\n"
    env = ReviewEnvironment.objects.get()
    assert env.source == source
    assert env.database_name == "shop_review"
    assert (env.shared_buffers, env.work_mem, env.max_connections) == ("1GB", "64MB", 20)


def test_it_creates_an_environment_on_an_existing_server(db):
    add_environment("perf-box", "--kind", "existing", "--dsn-env", "PERF_BOX_ADMIN_DSN")

    env = ReviewEnvironment.objects.get()
    assert env.kind == "existing"
    assert env.dsn_env == "PERF_BOX_ADMIN_DSN"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--kind", "existing"],
            "An existing server needs --dsn-env, the variable holding its DSN.",
        ),
        (
            ["--kind", "existing", "--dsn-env", "postgresql://admin:hunter2@perf-box/postgres"],
            "Give the NAME of the variable holding the DSN, not the DSN.",
        ),
        (
            ["--shared-buffers", "128M"],
            "shared_buffers must look like 128MB, 4MB or 1GB (got '128M').",
        ),
        (["--work-mem", "4 MB"], "work_mem must look like 128MB, 4MB or 1GB (got '4 MB')."),
        (["--max-connections", "2"], "max_connections must be between 5 and 10000."),
        (
            ["--database", "Review-DB"],
            "The database name must be lower-case letters, digits and underscores "
            "(at most 50 characters).",
        ),
        (["--source", "nope"], "No dump source named nope."),
    ],
)
def test_bad_settings_are_refused_with_their_message_and_nothing_is_saved(db, args, message):
    with pytest.raises(CommandError) as raised:
        add_environment("review", *args)

    assert str(raised.value) == message
    assert not ReviewEnvironment.objects.exists()


def test_bad_settings_leave_the_existing_environment_untouched(db):
    add_environment("review", "--shared-buffers", "256MB")
    before = list(ReviewEnvironment.objects.values())

    with pytest.raises(CommandError):
        add_environment("review", "--shared-buffers", "1TB")

    assert list(ReviewEnvironment.objects.values()) == before


def test_it_refuses_a_name_that_is_not_a_plain_slug(db):
    # The name becomes a folder under the data directory and a URL.
    with pytest.raises(CommandError) as raised:
        add_environment("../review")

    assert str(raised.value) == (
        "'../review' is not a valid name: use letters, digits, hyphens and underscores "
        "(at most 100)."
    )
    assert not ReviewEnvironment.objects.exists()
