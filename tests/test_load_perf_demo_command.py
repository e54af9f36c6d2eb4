"""manage.py load_perf_demo: the perf half of `make run`'s demo."""

from __future__ import annotations

import io
import uuid

import psycopg
import pytest
from django.core.management import call_command
from psycopg import sql

from perfruns.management.commands import load_perf_demo
from perfruns.models import DumpSource, PerfRun, ReviewEnvironment, Scenario, SnapshotStatus
from postmortems.management.commands.load_demo import POOL_TITLE
from postmortems.models import PostMortem

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def role_groups(db):
    # An earlier transactional test's flush may have emptied the groups of migration 0002;
    # load_demo only needs them to exist.
    from django.contrib.auth.models import Group

    from postmortems.access import ROLES

    for role in ROLES:
        Group.objects.get_or_create(name=role)


@pytest.fixture
def target_db(monkeypatch):
    name = f"fixproof_demotest_{uuid.uuid4().hex[:10]}"
    monkeypatch.setattr(load_perf_demo, "TARGET_DB", name)
    yield name
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def test_it_sets_up_a_masked_snapshot_an_environment_and_the_demo_scenario(data_dir, target_db):
    call_command("load_demo", stdout=io.StringIO())
    out = io.StringIO()

    call_command("load_perf_demo", "--no-run", stdout=out)

    source = DumpSource.objects.get(name="demo-shop")
    assert source.dsn_file and not source.dsn_env
    assert (data_dir / "secrets" / "demo-shop.dsn").stat().st_mode & 0o077 == 0
    env = ReviewEnvironment.objects.get(name="demo")
    assert env.current_snapshot.status == SnapshotStatus.READY
    assert env.current_snapshot.table_rows["public.events"] > 0
    scenario = Scenario.objects.get(name="demo")
    incident = PostMortem.objects.get(title=POOL_TITLE)
    assert list(scenario.postmortems.all()) == [incident]
    assert set(scenario.actions.all()) == set(incident.actions.all())
    assert scenario.team == incident.team  # its health on the dashboard
    assert not PerfRun.objects.exists()
    assert f"Seeded the demo target's database {target_db}" in out.getvalue()

    # Again: nothing is seeded, snapshotted or restored twice.
    again = io.StringIO()
    call_command("load_perf_demo", "--no-run", stdout=again)
    assert again.getvalue() == "updated demo\n"
    env.refresh_from_db()
    assert env.restores.count() == 1
