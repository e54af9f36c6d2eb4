"""Notifications: a regressed action and a broken run reach the team's webhooks, once,
and a webhook's URL appears in no line, log or page."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from django.utils import timezone

from perfruns import tasks
from perfruns.models import (
    EndpointStat,
    NotificationSent,
    PerfRun,
    RunStatus,
    RunTrigger,
    VerificationCriterion,
    Webhook,
)
from perfruns.services import notifications, proofs, trends
from postmortems.models import ActionStatus, Team
from tests.webhookreceiver import TOKEN, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture
def team(db) -> Team:
    return Team.objects.create(name="Platform", slug="platform")


pytestmark = pytest.mark.scenario(name="advisors")


def run_with(scenario, p95: float) -> PerfRun:
    run = PerfRun.objects.create(
        scenario=scenario,
        environment=scenario.environment,
        trigger=RunTrigger.SCHEDULE,
        status=RunStatus.PASSED,
        settings={"users": 10},
    )
    EndpointStat.objects.create(
        run=run, method="", name="Aggregated", requests=100, failures=0, avg_ms=1, min_ms=1,
        max_ms=1, percentiles={"95": p95}, rps=10,
    )  # fmt: skip
    return run


def test_a_regressed_action_notifies_its_team_once_with_its_figures(
    receiver, team, scenario, make_postmortem, engineer, monkeypatch, caplog,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    monkeypatch.setenv("PLATFORM_HOOK", receiver.url)
    Webhook.objects.create(team=team, kind="json", url_env="PLATFORM_HOOK")
    pm = make_postmortem(actor=engineer, team=team, title="Pool exhausted")
    action = pm.actions.first()
    action.status, action.done_at = ActionStatus.DONE, timezone.now()
    action.save()
    VerificationCriterion.objects.create(
        action=action, scenario=scenario, metric="p95_ms", comparison="lt", value=500
    )
    proofs.criteria_evaluate(run=run_with(scenario, 412))
    slower = run_with(scenario, 760)

    with django_capture_on_commit_callbacks() as callbacks:
        proofs.criteria_evaluate(run=slower)
    # The worker's part: the task as queued, run in this process.
    assert len(callbacks) == 1
    task_name, event, team_ids = callbacks[0].args
    assert task_name == tasks.notify_event.name
    with caplog.at_level(logging.INFO):
        lines = tasks.notify_event(event, team_ids)
        again = tasks.notify_event(event, team_ids)

    assert lines == ["sent to json"] and again == ["already sent to json"]
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["event"] == "verification_regressed"
    assert body["title"] == f"Action {action.number} of “Pool exhausted” regressed (reopened)"
    assert body["figures"]["measured"] == "760" and body["figures"]["run"] == f"#{slower.pk}"
    assert body["url"].endswith(f"{pm.get_absolute_url()}#action-{action.number}")
    assert TOKEN not in caplog.text
    assert NotificationSent.objects.count() == 1


def test_a_confirmed_regression_tells_the_scenario_teams_once_with_its_figures(
    receiver, team, scenario, make_postmortem, engineer, monkeypatch,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    monkeypatch.setenv("PLATFORM_HOOK", receiver.url)
    Webhook.objects.create(team=team, kind="json", url_env="PLATFORM_HOOK")
    scenario.postmortems.add(make_postmortem(actor=engineer, team=team))
    runs = []
    for n in range(20):
        run = run_with(scenario, 0)
        run.summary = {"p95_ms": (100.0 if n < 12 else 180.0) + n % 3}
        run.save()
        runs.append(run)

    with django_capture_on_commit_callbacks() as callbacks:
        (opened,) = trends.regression_incidents_open(scenario=scenario)
    with django_capture_on_commit_callbacks() as again:
        assert trends.regression_incidents_open(scenario=scenario) == []
    assert len(callbacks) == 1 and again == []
    tasks.notify_event(*callbacks[0].args[1:])

    (body,) = receiver.bodies
    assert body["event"] == "regression"
    assert body["title"] == f"advisors got worse from run #{runs[12].pk}"
    assert body["figures"]["p95 (ms)"] == "101 ms → 181 ms"
    assert body["figures"]["runs"] == f"#{runs[12].pk} and 7 after it"
    assert body["url"].endswith(opened.get_absolute_url())


def test_a_run_worse_than_its_baseline_alone_tells_nobody_yet(
    receiver, team, scenario, make_postmortem, engineer, monkeypatch,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    monkeypatch.setenv("PLATFORM_HOOK", receiver.url)
    Webhook.objects.create(team=team, kind="json", url_env="PLATFORM_HOOK")
    scenario.postmortems.add(make_postmortem(actor=engineer, team=team))
    for n in range(8):
        run = run_with(scenario, 0)
        run.summary = {"p95_ms": 400.0 if n == 7 else 100.0 + n % 3}  # one bad run: suspected
        run.save()

    with django_capture_on_commit_callbacks() as callbacks:
        assert trends.regression_incidents_open(scenario=scenario) == []

    assert callbacks == []


def test_nothing_is_queued_for_a_team_without_webhooks(
    team, scenario, make_postmortem, engineer, django_capture_on_commit_callbacks
):
    pm = make_postmortem(actor=engineer, team=team)
    action = pm.actions.first()
    VerificationCriterion.objects.create(
        action=action, scenario=scenario, metric="p95_ms", comparison="lt", value=500
    )

    with django_capture_on_commit_callbacks() as callbacks:
        proofs.criteria_evaluate(run=run_with(scenario, 900))

    assert callbacks == []


def test_a_webhook_that_fails_says_so_without_its_url_and_is_tried_again_later(team, monkeypatch):
    monkeypatch.setenv("PLATFORM_HOOK", f"http://127.0.0.1:9/hooks/{TOKEN}")  # nothing listens
    Webhook.objects.create(team=team, kind="slack", url_env="PLATFORM_HOOK")
    event = {"kind": "run_error", "title": "Run #1 broke", "url": "http://x/perf/runs/1/",
             "figures": {"error": "load: Locust was killed (signal 9)"},
             "dedupe_key": "run_error:run=1"}  # fmt: skip

    lines = notifications.notification_send(event=event, team_ids=[team.pk])

    assert len(lines) == 1 and lines[0].startswith("failed to send to slack: ")
    assert TOKEN not in lines[0]
    assert not NotificationSent.objects.exists()  # forgotten: the next event tries again


def test_a_missing_url_variable_is_named_and_its_value_never_shown(team):
    Webhook.objects.create(team=team, kind="mattermost", url_env="NOT_SET_ANYWHERE")
    event = {"kind": "run_error", "title": "t", "url": "http://x/", "figures": {},
             "dedupe_key": "k"}  # fmt: skip

    lines = notifications.notification_send(event=event, team_ids=[team.pk])

    assert lines == [
        "The environment variable NOT_SET_ANYWHERE that should hold the mattermost webhook "
        "URL of team Platform is not set."
    ]


def test_the_admin_never_shows_a_webhook_url_back(client, team, django_user_model):
    admin = django_user_model.objects.create_superuser("root", password="correct horse battery")
    hook = Webhook.objects.create(team=team, kind="slack", url=f"https://hooks.example/{TOKEN}")
    client.force_login(admin)

    html = client.get(f"/admin/perfruns/webhook/{hook.pk}/change/").content.decode()

    assert TOKEN not in html
