from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone, translation

from perfruns.models import ReviewEnvironment
from perfruns.services import scenarios, sources
from postmortems import services
from postmortems.access import ROLES
from postmortems.models import PostMortem


@pytest.fixture(autouse=True)
def fresh_cache():
    """The dashboard reuses its figures for a minute: each test starts with none kept."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def english_by_default():
    """LocaleMiddleware leaves a request's language active in the thread: reset it."""
    translation.activate("en")
    yield
    translation.deactivate()


def _user(username: str, role: str | None, **extra) -> User:
    user = User.objects.create_user(
        username=username, password="correct horse battery", first_name=username.title(), **extra
    )
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def engineer(db) -> User:
    return _user("emma", "engineer", last_name="Martin")


@pytest.fixture
def other_engineer(db) -> User:
    return _user("karim", "engineer", last_name="Haddad")


@pytest.fixture
def manager(db) -> User:
    return _user("marc", "manager", last_name="Lefebvre")


@pytest.fixture
def viewer(db) -> User:
    return _user("vera", "viewer", last_name="Nowak")


@pytest.fixture
def nobody(db) -> User:
    """Logged in, but with no role."""
    return _user("nina", None)


def make_content(title: str = "Pool exhausted", **fields) -> services.PostMortemContent:
    """A complete post-mortem, ready to publish unless the caller removes parts."""
    day = dt.date(2026, 3, 13)
    start = timezone.make_aware(dt.datetime.combine(day, dt.time(12, 2)), dt.UTC)
    base = {
        "title": title,
        "severity": "sev3",
        "written_on": dt.date(2026, 3, 14),
        "started_at": start,
        "ended_at": start + dt.timedelta(minutes=38),
        "summary": "The checkout API returned 502s.",
        "trigger": "Lunch peak.",
        "resolution": "Traffic dropped.",
        "detection": "Error-rate alert.",
    }
    base.update(fields)
    return services.PostMortemContent(
        fields=base,
        authors=[],
        impacts=[{"label": "failed requests", "value": Decimal(270), "unit": "", "window": ""}],
        root_causes=[{"category": "database", "description": "A slow join on order_events."}],
        timeline=[{"occurred_at": start, "text": "p95 passes 2 s."}],
        actions=[
            {
                "kind": "detect",
                "title": "Weekly load test",
                "description": "",
                "owner": None,
                "due_date": None,
                "status": "todo",
                "ticket_url": "",
            },
            {
                "kind": "prevent",
                "title": "Index order_events",
                "description": "",
                "owner": None,
                "due_date": None,
                "status": "todo",
                "ticket_url": "",
            },
        ],
    )


@pytest.fixture
def committed_roles(transactional_db) -> None:
    """Committed rows, seen by every session (threads, a live server); the roles, made by a
    migration, again, since an earlier transactional test's flush removes them."""
    for role in ROLES:
        Group.objects.get_or_create(name=role)


@pytest.fixture
def make_postmortem(db):
    def make(actor=None, authors=(), **fields) -> PostMortem:
        content = make_content(**fields)
        content.authors = list(authors)
        return services.postmortem_save(actor=actor, content=content)

    return make


@pytest.fixture
def data_dir(settings):
    """A data folder the managed clusters' OS user can traverse (pytest's is 0700)."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="fixproof-data-", dir="/tmp"))
    path.chmod(0o755)
    settings.FIXPROOF_DATA_DIR = path
    yield path
    from perfruns.pipeline.cluster import stop_stale_clusters

    stop_stale_clusters(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def source_db(monkeypatch):
    """A source database with PII; its DSN is in $FIXPROOF_TEST_SOURCE_DSN."""
    from tests import sourcedb

    name = sourcedb.create_source()
    monkeypatch.setenv("FIXPROOF_TEST_SOURCE_DSN", sourcedb.server_conninfo(name))
    yield name
    sourcedb.drop_source(name)


@pytest.fixture
def dump_source(db, source_db):
    from tests import sourcedb

    source, _ = sources.source_save(
        name="shop", dsn_env="FIXPROOF_TEST_SOURCE_DSN", policy_yaml=sourcedb.POLICY
    )
    return source


@pytest.fixture
def scenario(request, db):
    """The scenario `checkout` of the demo's locustfile on the review environment `review`.

    A test file that needs it otherwise says how, once, with
    `pytestmark = pytest.mark.scenario(name="advisors", users=200, ...)`: the marker's
    values replace the defaults (name included)."""
    marker = request.node.get_closest_marker("scenario")
    values = dict(marker.kwargs) if marker is not None else {}
    name = values.pop("name", "checkout")
    environment = ReviewEnvironment.objects.create(name="review")
    scenario, _ = scenarios.scenario_save(
        name=name,
        values={
            "environment": environment,
            "locustfile_path": "examples/demo/locustfile.py",
            "target_url": "http://127.0.0.1:18765",
            **values,
        },
    )
    return scenario
