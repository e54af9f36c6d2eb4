"""A scenario's own page to create and edit it (administrators), every problem said at once,
and a scenario loaded from YAML left to its file."""

from __future__ import annotations

import html

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from perfruns.models import ReviewEnvironment, Scenario
from perfruns.services import scenarios
from postmortems.models import Team

CREATE = reverse("perfruns:scenario_create")


def edit(name: str = "checkout") -> str:
    return reverse("perfruns:scenario_edit", args=[name])


@pytest.fixture
def admin(db) -> User:
    """Staff, with only the viewer role: the staff flag is what allows editing."""
    user = User.objects.create_user("ada", password="correct horse battery", is_staff=True)
    user.groups.add(Group.objects.get(name="viewer"))
    return user


@pytest.fixture
def environment(db) -> ReviewEnvironment:
    return ReviewEnvironment.objects.create(name="review")


@pytest.fixture
def team(db) -> Team:
    return Team.objects.create(name="Shop", slug="shop")


def form_data(environment: ReviewEnvironment, **changes) -> dict[str, str]:
    data = {
        "name": "checkout",
        "description": "The checkout path at lunch peak.",
        "team": "",
        "environment": str(environment.pk),
        "target_url": "http://127.0.0.1:18765",
        "health_url": "",
        "health_timeout_s": "60",
        "locustfile_path": "examples/demo/locustfile.py",
        "locustfile_text": "",
        "start_command": "",
        "start_env": "",
        "default_version": "",
        "shape": "constant",
        "users": "50",
        "spawn_rate": "10",
        "duration_s": "120",
        "step_start": "0",
        "step_size": "0",
        "step_duration_s": "0",
        "step_max": "0",
        "arrival_rps": "0",
        "workers": "0",
        "warmup_s": "",
        "thresholds": (
            "p95_ms: 500\nfailure_rate: 0.01\nendpoints:\n  /users/[id]:\n    p95_ms: 300\n"
        ),
        "floors": "latency_rel: 0.2",
        "tags": "shop, weekly",
    }
    data.update(changes)
    return data


@pytest.fixture
def existing(environment) -> Scenario:
    scenario, _ = scenarios.scenario_save(
        name="checkout",
        values={
            "environment": environment,
            "locustfile_path": "examples/demo/locustfile.py",
            "target_url": "http://127.0.0.1:18765",
            "thresholds": {"p95_ms": 800},
        },
    )
    return scenario


def test_an_administrator_creates_a_scenario_with_its_weekly_schedule(
    client, admin, environment, team
):
    client.force_login(admin)

    response = client.post(CREATE, form_data(environment, team=str(team.pk)))

    assert response.status_code == 302
    scenario = Scenario.objects.get(name="checkout")
    assert response["Location"] == scenario.get_absolute_url()
    assert scenario.team == team
    assert scenario.users == 50 and scenario.duration_s == 120
    assert scenario.thresholds == {
        "p95_ms": 500,
        "failure_rate": 0.01,
        "endpoints": {"/users/[id]": {"p95_ms": 300}},
    }
    assert scenario.floors == {"latency_rel": 0.2}
    assert scenario.defined_in == ""
    assert PeriodicTask.objects.filter(name=scenario.schedule_name, enabled=True).exists()


def test_an_administrator_edits_a_scenario_and_the_form_shows_its_values(
    client, admin, environment, existing
):
    client.force_login(admin)
    page = client.get(edit()).content.decode()
    assert "p95_ms: 800" in page
    assert "examples/demo/locustfile.py" in page

    response = client.post(edit(), form_data(environment, users="200", floors=""))

    assert response.status_code == 302
    existing.refresh_from_db()
    assert existing.users == 200
    assert existing.thresholds["p95_ms"] == 500
    assert existing.floors == {}


def test_every_bad_value_is_named_at_once_and_nothing_is_saved(
    client, admin, environment, existing
):
    client.force_login(admin)

    response = client.post(
        edit(),
        form_data(
            environment,
            users="many",
            target_url="http://10.0.0.5:8000",
            locustfile_text="from locust import HttpUser",
            thresholds="p95: 500\nfailure_rate: -1",
            floors="latency_rel: [",
            start_env="- DEBUG",
            shape="steps",
        ),
    )

    assert response.status_code == 400
    page = html.unescape(response.content.decode())
    for message in (
        "Enter a whole number.",  # users
        "The target URL http://10.0.0.5:8000 is not on this machine",
        "Give either a locustfile path or an uploaded locustfile.",
        "Unknown threshold 'p95'",
        "failure_rate must be a number",
        "Not valid YAML (line 1)",  # floors
        "Write “key: value” pairs, as in DEBUG: '0'.",  # start_env
        "Steps need a step size of at least 1.",
    ):
        assert message in page, message
    existing.refresh_from_db()
    assert existing.users == 10 and existing.thresholds == {"p95_ms": 800}
    assert existing.locustfile_text == ""


def test_a_name_taken_or_changed_is_refused(client, admin, environment, existing):
    client.force_login(admin)

    taken = client.post(CREATE, form_data(environment, users="99"))
    renamed = client.post(edit(), form_data(environment, name="checkout-2"))

    assert taken.status_code == 400
    assert "A scenario with this name exists already." in taken.content.decode()
    assert renamed.status_code == 400
    assert "A scenario cannot be renamed." in renamed.content.decode()
    assert list(Scenario.objects.values_list("name", "users")) == [("checkout", 10)]


def test_a_scenario_from_a_yaml_file_is_left_to_its_file(client, admin, environment, existing):
    Scenario.objects.filter(pk=existing.pk).update(defined_in="teams/shop/scenarios.yml")
    client.force_login(admin)

    page = client.get(edit())
    assert "This scenario is loaded from teams/shop/scenarios.yml" in page.content.decode()
    assert "<fieldset disabled>" in page.content.decode()

    response = client.post(edit(), form_data(environment, users="500"))

    assert response.status_code == 409
    existing.refresh_from_db()
    assert existing.users == 10


def test_the_links_show_only_to_administrators(client, admin, engineer, existing):
    client.force_login(engineer)
    assert CREATE not in client.get(reverse("perfruns:scenarios")).content.decode()
    assert edit() not in client.get(existing.get_absolute_url()).content.decode()

    client.force_login(admin)
    assert CREATE in client.get(reverse("perfruns:scenarios")).content.decode()
    assert edit() in client.get(existing.get_absolute_url()).content.decode()


def test_anyone_but_an_administrator_is_refused(client, engineer, environment, existing):
    client.force_login(engineer)

    assert client.get(CREATE).status_code == 403
    assert client.post(edit(), form_data(environment, users="500")).status_code == 403
    existing.refresh_from_db()
    assert existing.users == 10


def test_an_unknown_scenario_is_a_404_and_a_wrong_method_a_405(client, admin, existing):
    client.force_login(admin)

    assert client.get(edit("nope")).status_code == 404
    assert client.put(edit()).status_code == 405


def test_the_edit_page_costs_a_fixed_number_of_queries(
    client, admin, existing, team, django_assert_num_queries
):
    client.force_login(admin)
    # Session, user; the scenario with its environment and team; the user's roles (the
    # page's menu); the <option>s of the teams and of the environments.
    with django_assert_num_queries(6):
        response = client.get(edit())
    assert response.status_code == 200
