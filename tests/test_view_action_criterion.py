"""The proof an action asks for, set from its post-mortem: what a run must show for the
action to count as verified."""

from __future__ import annotations

import pytest
from django.urls import reverse

from perfruns.models import (
    PerfRun,
    RunStatus,
    RunTrigger,
    Verification,
    VerificationCriterion,
)
from perfruns.services import scenarios
from postmortems.models import Action, HistoryEntry

pytestmark = pytest.mark.scenario(name="advisors")


@pytest.fixture
def action(make_postmortem, engineer) -> Action:
    return make_postmortem(actor=engineer).actions.get(number=2)


def url(action: Action) -> str:
    return reverse("perfruns:action_criterion", args=[action.postmortem_id, action.pk])


def proof(scenario, **fields) -> dict[str, object]:
    values = {
        "scenario": scenario.pk,
        "endpoint": "/advisors/[id]/young",
        "metric": "p95_ms",
        "comparison": "lt",
        "value": "500",
        "users": "200",
        "reference_run": "",
    }
    values.update(fields)
    return values


def run_of(scenario, **fields) -> PerfRun:
    values = {"status": RunStatus.PASSED, **fields}
    return PerfRun.objects.create(
        scenario=scenario, environment=scenario.environment, trigger=RunTrigger.SCHEDULE, **values
    )


def test_an_engineer_asks_for_a_proof_and_it_is_in_the_history(
    client, engineer, action, scenario, django_assert_num_queries
):
    client.force_login(engineer)

    # session, user, groups, the visible post-mortem, the action with its criterion (5);
    # the form's scenario (1); the service: SAVEPOINT, the action's criterion, INSERT
    # criterion, its old verifications (none to delete), INSERT history, RELEASE (6)
    with django_assert_num_queries(12):
        response = client.post(url(action), proof(scenario))

    assert response.status_code == 302
    assert response.url.endswith(f"/postmortems/{action.postmortem_id}/#action-2")
    criterion = VerificationCriterion.objects.get(action=action)
    assert (criterion.scenario, criterion.endpoint, criterion.metric) == (
        scenario, "/advisors/[id]/young", "p95_ms",
    )  # fmt: skip
    assert (criterion.comparison, criterion.value, criterion.users) == ("lt", 500, 200)
    assert criterion.state == "unverified"
    entry = HistoryEntry.objects.get(action=action, verb="updated")
    assert entry.changes == [
        {"field": "proof asked", "old": "",
         "new": "/advisors/[id]/young p95_ms < 500 at 200 users (advisors)"}
    ]  # fmt: skip
    page = client.get(reverse("postmortems:detail", args=[action.postmortem_id])).content.decode()
    assert "Change the proof asked" in page and "p95_ms &lt; 500 at 200 users" in page


def test_a_changed_proof_starts_unverified_again_without_the_old_evidence(
    client, engineer, action, scenario
):
    run = run_of(scenario)
    criterion = VerificationCriterion.objects.create(
        action=action, scenario=scenario, metric="p95_ms", value=500, state="verified",
        state_run=run, measured=412,
    )  # fmt: skip
    Verification.objects.create(criterion=criterion, run=run, passed=True, measured=412)
    client.force_login(engineer)

    client.post(url(action), proof(scenario, value="300"))

    criterion.refresh_from_db()
    assert (criterion.value, criterion.state, criterion.state_run, criterion.measured) == (
        300, "unverified", None, None,
    )  # fmt: skip
    assert not Verification.objects.exists()


def test_saving_the_same_proof_changes_nothing(client, engineer, action, scenario):
    client.force_login(engineer)
    client.post(url(action), proof(scenario))
    VerificationCriterion.objects.update(state="verified")

    client.post(url(action), proof(scenario))

    assert VerificationCriterion.objects.get().state == "verified"
    assert HistoryEntry.objects.filter(action=action, verb="updated").count() == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"metric": "not_worse", "value": ""}, "“Not worse than a reference run” needs"),
        ({"metric": "failure_rate", "value": "5"}, "A failure rate is between 0 and 1"),
        ({"value": ""}, "Give the value the run&#39;s figure must be compared with."),
        ({"value": "-1"}, "The value must be at least 0."),
        ({"metric": "not_worse", "reference_run": "999"}, "There is no run #999."),
        ({"metric": "p42"}, "Select a valid choice."),
    ],
)
def test_a_bad_proof_is_named_and_nothing_is_saved(
    client, engineer, action, scenario, fields, message
):
    client.force_login(engineer)

    response = client.post(url(action), proof(scenario, **fields))

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not VerificationCriterion.objects.exists()
    assert not HistoryEntry.objects.filter(action=action, verb="updated").exists()


def test_the_reference_run_must_be_a_valid_run_of_the_same_scenario(
    client, engineer, action, scenario
):
    other, _ = scenarios.scenario_save(
        name="search",
        values={"environment": scenario.environment, "locustfile_path": "x.py",
                "target_url": "http://127.0.0.1:1"},
    )  # fmt: skip
    elsewhere, broken = run_of(other), run_of(scenario, status=RunStatus.ERROR)
    client.force_login(engineer)

    wrong = client.post(
        url(action), proof(scenario, metric="not_worse", reference_run=elsewhere.pk)
    )
    error = client.post(url(action), proof(scenario, metric="not_worse", reference_run=broken.pk))
    good = run_of(scenario)
    ok = client.post(url(action), proof(scenario, metric="not_worse", reference_run=good.pk))

    assert f"Run #{elsewhere.pk} is a run of search, not of advisors." in wrong.content.decode()
    assert f"Run #{broken.pk} has no valid figures (error)" in error.content.decode()
    assert ok.status_code == 302
    criterion = VerificationCriterion.objects.get()
    assert (criterion.reference_run, criterion.value) == (good, None)


def test_a_proof_can_be_removed(client, manager, action, scenario):
    VerificationCriterion.objects.create(action=action, scenario=scenario, metric="rps", value=9)
    client.force_login(manager)

    response = client.post(url(action), {"remove": "1"})

    assert response.status_code == 302
    assert not VerificationCriterion.objects.exists()
    entry = HistoryEntry.objects.get(action=action, verb="updated")
    assert entry.changes[0]["new"] == "" and "rps" in entry.changes[0]["old"]


def test_viewers_outsiders_and_other_methods_are_refused(
    client, viewer, nobody, engineer, action, scenario, make_postmortem
):
    client.force_login(viewer)
    assert client.get(url(action)).status_code == 403
    assert client.post(url(action), proof(scenario)).status_code == 403
    client.force_login(nobody)
    assert client.get(url(action)).status_code == 403
    client.force_login(engineer)
    assert client.put(url(action)).status_code == 405
    private = make_postmortem(title="Private", is_private=True).actions.first()
    assert client.get(url(private)).status_code == 404
    assert not VerificationCriterion.objects.exists()


def test_its_address_stays_under_the_post_mortem(action):
    assert url(action) == f"/postmortems/{action.postmortem_id}/actions/{action.pk}/proof/"


def test_the_form_shows_the_current_proof(client, engineer, action, scenario):
    VerificationCriterion.objects.create(
        action=action, scenario=scenario, metric="db_ram_peak_mb", comparison="le", value=1500
    )
    client.force_login(engineer)

    page = client.get(url(action)).content.decode()

    assert "Proof asked of action 2" in page
    assert 'value="1500.0"' in page and "Ask for no proof" in page
