"""manage.py load_scenarios: scenarios kept as YAML next to their locustfiles."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask

from perfruns.models import ReviewEnvironment, Scenario

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def environment(db) -> ReviewEnvironment:
    return ReviewEnvironment.objects.create(name="demo")


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "locustfile.py").write_text("from locust import HttpUser\n")
    path = tmp_path / "scenarios.yml"
    path.write_text(text)
    return path


def load(path: Path) -> str:
    out = io.StringIO()
    call_command("load_scenarios", str(path), stdout=out)
    return out.getvalue()


def test_it_loads_the_demo_scenarios_with_their_schedule(environment):
    assert load(ROOT / "examples" / "demo" / "scenarios.yml") == "created demo\n"

    scenario = Scenario.objects.get(name="demo")
    assert scenario.locustfile_path == "examples/demo/locustfile.py"
    assert scenario.environment == environment
    assert scenario.start_env == {
        "DEMO_PATHOLOGIES": "n_plus_one,leak,slow_join",
        "DEMO_SLOWDOWN_PCT": "{version}",
    }
    assert scenario.default_version == "0" and scenario.takes_version
    assert scenario.thresholds["endpoints"] == {"/users/[id]/events": {"p95_ms": 200}}
    assert scenario.tags == "demo"
    task = PeriodicTask.objects.get(name=scenario.schedule_name)
    assert (task.crontab.day_of_week, task.crontab.hour, task.enabled) == ("1", "3", True)


def test_loading_again_updates_by_name(environment, tmp_path):
    text = """
scenarios:
  - name: checkout
    environment: demo
    locustfile: locustfile.py
    target_url: http://127.0.0.1:9000
    users: {users}
"""
    load(write(tmp_path, text.format(users=5)))
    assert load(write(tmp_path, text.format(users=50))) == "updated checkout\n"

    scenario = Scenario.objects.get()
    assert scenario.users == 50
    assert scenario.locustfile_path == str(tmp_path / "locustfile.py")


BASE = "name: a, environment: demo, locustfile: locustfile.py"
LOCAL = "target_url: 'http://127.0.0.1:9000'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f"scenarios: [{{name: a, environment: nowhere, locustfile: locustfile.py, {LOCAL}}}]",
            "scenario a: no review environment named 'nowhere'",
        ),
        (
            f"scenarios: [{{name: a, environment: demo, locustfile: missing.py, {LOCAL}}}]",
            "scenario a: the locustfile .*missing.py does not exist",
        ),
        (
            f"scenarios: [{{{BASE}, target_url: 'http://192.168.1.10'}}]",
            "scenario a: The target URL .* is not on this machine",
        ),
        (
            f"scenarios: [{{{BASE}, {LOCAL}, users: many}}]",
            "scenario a: users must be a whole number",
        ),
        (f"scenarios: [{{{BASE}, {LOCAL}, colour: blue}}]", "scenario a: unknown key 'colour'"),
        (
            f"scenarios: [{{{BASE}, {LOCAL}, schedule: {{hour: 30}}}}]",
            "scenario a: The hour is 0 to 23",
        ),
        (
            f"scenarios: [{{{BASE}, {LOCAL}, start_command: 'serve {{version}}'}}]",
            r"scenario a: The target start command takes a \{version\}: give the version",
        ),
        (
            f"scenarios: [{{{BASE}, {LOCAL}, default_version: 'v1 --debug'}}]",
            "scenario a: The version of the weekly runs 'v1 --debug' is not a version",
        ),
        ("scenarios:\n  - name: [unclosed", r"is not valid YAML \(line \d\)"),
        ("scenarios: []", "has no `scenarios:` list"),
    ],
)
def test_a_bad_file_names_the_scenario_and_the_problem(environment, tmp_path, text, message):
    with pytest.raises(CommandError, match=message):
        load(write(tmp_path, text))
    assert not Scenario.objects.exists()


def test_one_bad_scenario_leaves_every_scenario_of_the_file_unsaved(environment, tmp_path):
    text = """
scenarios:
  - {name: good, environment: demo, locustfile: locustfile.py, target_url: 'http://127.0.0.1:1'}
  - {name: bad, environment: demo, locustfile: locustfile.py, target_url: 'http://10.1.1.1'}
"""
    with pytest.raises(CommandError, match="scenario bad"):
        load(write(tmp_path, text))

    assert not Scenario.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith="fixproof scenario").exists()


def test_a_scenario_names_its_team_by_slug_and_remembers_its_file(environment, tmp_path):
    from postmortems.models import Team

    team = Team.objects.create(name="Shop", slug="shop")
    path = write(
        tmp_path,
        """
scenarios:
  - name: checkout
    environment: demo
    team: shop
    locustfile: locustfile.py
    target_url: http://127.0.0.1:9000
""",
    )

    load(path)

    scenario = Scenario.objects.get(name="checkout")
    assert scenario.team == team
    # The file stays the source of truth: the scenario's page will say so.
    assert scenario.defined_in == str(path.resolve())
    assert load(ROOT / "examples" / "demo" / "scenarios.yml") == "created demo\n"
    assert Scenario.objects.get(name="demo").defined_in == "examples/demo/scenarios.yml"


def test_an_unknown_team_is_refused_and_nothing_is_saved(environment, tmp_path):
    path = write(
        tmp_path,
        """
scenarios:
  - name: checkout
    environment: demo
    team: nobody-here
    locustfile: locustfile.py
    target_url: http://127.0.0.1:9000
""",
    )

    with pytest.raises(
        CommandError, match="scenario checkout: no team with the slug 'nobody-here'"
    ):
        load(path)
    assert not Scenario.objects.exists()
