"""scenarios.scenario_save and scenario_schedule_set: scenarios and their weekly runs."""

from __future__ import annotations

import pytest
from django_celery_beat.models import PeriodicTask

from perfruns.models import ReviewEnvironment, Scenario
from perfruns.services import common, scenarios


@pytest.fixture
def environment(db) -> ReviewEnvironment:
    return ReviewEnvironment.objects.create(name="review")


def values(environment, **overrides):
    base = {
        "environment": environment,
        "locustfile_path": "examples/demo/locustfile.py",
        "target_url": "http://127.0.0.1:8765",
        "users": 5,
        "spawn_rate": 5,
        "duration_s": 20,
    }
    return {**base, **overrides}


def test_a_new_scenario_gets_a_weekly_schedule_on_monday_at_three(environment):
    scenario, created = scenarios.scenario_save(name="checkout", values=values(environment))

    assert created
    task = PeriodicTask.objects.get(name=scenario.schedule_name)
    assert task.task == "perfruns.scenario_scheduled" and task.args == f"[{scenario.pk}]"
    assert (task.crontab.day_of_week, task.crontab.hour, task.crontab.minute) == ("1", "3", "0")
    assert task.enabled


def test_saving_a_scenario_again_updates_it_and_keeps_its_schedule(environment):
    scenario, _ = scenarios.scenario_save(name="checkout", values=values(environment))
    scenarios.scenario_schedule_set(
        scenario=scenario, day_of_week="5", hour=22, minute=30, enabled=False
    )

    again, created = scenarios.scenario_save(name="checkout", values=values(environment, users=50))

    assert not created and again.pk == scenario.pk
    again.refresh_from_db()
    assert again.users == 50
    task = PeriodicTask.objects.get(name=scenario.schedule_name)
    assert (task.crontab.day_of_week, task.crontab.hour, task.enabled) == ("5", "22", False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"target_url": "http://10.0.0.5:8000"}, "not on this machine"),
        ({"health_url": "http://example.com/health"}, "not on this machine"),
        ({"locustfile_text": "from locust import HttpUser"}, "either a locustfile path"),
        ({"locustfile_path": ""}, "either a locustfile path"),
        ({"shape": "steps", "step_size": 0}, "step"),
        ({"thresholds": {"p95": 500}}, "Unknown threshold 'p95'"),
        ({"thresholds": {"p95_ms": -1}}, "p95_ms must be a number"),
        ({"thresholds": {"endpoints": {"/a": {"rps": 1}}}}, "endpoint '/a'"),
        ({"start_env": {"DEMO": 1}}, "text values"),
    ],
)
def test_a_scenario_the_pipeline_could_not_run_is_refused_and_not_saved(
    environment, overrides, message
):
    with pytest.raises(common.PipelineRefused, match=message):
        scenarios.scenario_save(name="checkout", values=values(environment, **overrides))

    assert not Scenario.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith="fixproof scenario").exists()


def test_a_loopback_target_is_accepted_in_every_spelling(environment):
    for url in ("http://localhost:8000", "http://[::1]:8000/", "http://127.0.0.1"):
        scenarios.scenario_save(name="checkout", values=values(environment, target_url=url))


def test_a_schedule_with_an_impossible_time_is_refused(environment):
    scenario, _ = scenarios.scenario_save(name="checkout", values=values(environment))

    with pytest.raises(common.PipelineRefused, match="hour is 0 to 23"):
        scenarios.scenario_schedule_set(
            scenario=scenario, day_of_week="1", hour=24, minute=0, enabled=True
        )
    with pytest.raises(common.PipelineRefused, match="day of the week"):
        scenarios.scenario_schedule_set(
            scenario=scenario, day_of_week="8", hour=3, minute=0, enabled=True
        )
