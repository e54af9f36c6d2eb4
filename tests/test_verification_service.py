"""proofs.criteria_evaluate: an action verified by a run, failed, regressed and reopened."""

from __future__ import annotations

import pytest
from django.utils import timezone

from perfruns.models import (
    EndpointStat,
    PerfRun,
    RunStatus,
    RunTrigger,
    Verification,
    VerificationCriterion,
)
from perfruns.services import common, proofs, trends
from postmortems.models import ActionStatus

pytestmark = pytest.mark.scenario(name="advisors", users=200)


@pytest.fixture
def action(make_postmortem, engineer):
    action = make_postmortem(actor=engineer).actions.first()
    action.status = ActionStatus.DONE
    action.done_at = timezone.now()
    action.save()
    return action


def run_with(scenario, *, p95: float, users: int = 200, status=RunStatus.PASSED, **fields):
    run = PerfRun.objects.create(
        scenario=scenario,
        environment=scenario.environment,
        trigger=RunTrigger.SCHEDULE,
        status=status,
        settings={"users": users, "shape": "constant"},
        summary={"db_ram_peak": 1200 * 2**20},
        **fields,
    )
    EndpointStat.objects.create(
        run=run, method="GET", name="/advisors/[id]/young", requests=1000, failures=5,
        avg_ms=100, min_ms=1, max_ms=900, percentiles={"95": p95}, rps=50,
    )  # fmt: skip
    return run


def criterion_for(action, scenario, **fields) -> VerificationCriterion:
    values = {
        "endpoint": "/advisors/[id]/young",
        "metric": "p95_ms",
        "comparison": "lt",
        "value": 500,
        "users": 200,
    }
    values.update(fields)
    return VerificationCriterion.objects.create(action=action, scenario=scenario, **values)


def test_a_passing_run_verifies_a_done_action_with_its_figure(scenario, action):
    criterion = criterion_for(action, scenario)
    run = run_with(scenario, p95=412)

    assert proofs.criteria_evaluate(run=run) == [f"action {action.pk}: verified by run #{run.pk}"]

    criterion.refresh_from_db()
    assert (criterion.state, criterion.state_run, criterion.measured) == ("verified", run, 412)
    assert Verification.objects.get().passed


def test_a_later_run_that_breaks_it_marks_it_regressed_and_reopens_the_action(scenario, action):
    criterion = criterion_for(action, scenario)
    proofs.criteria_evaluate(run=run_with(scenario, p95=412))
    slower = run_with(scenario, p95=760)

    proofs.criteria_evaluate(run=slower)

    criterion.refresh_from_db()
    action.refresh_from_db()
    assert (criterion.state, criterion.state_run, criterion.measured) == ("regressed", slower, 760)
    assert action.status == ActionStatus.IN_PROGRESS and action.done_at is None


def test_a_run_that_misses_the_criterion_first_is_a_failed_verification(scenario, action):
    criterion = criterion_for(action, scenario)

    proofs.criteria_evaluate(run=run_with(scenario, p95=760))

    criterion.refresh_from_db()
    action.refresh_from_db()
    assert criterion.state == "failed"
    assert action.status == ActionStatus.DONE  # never verified: nothing to reopen


def test_an_action_not_done_yet_is_not_verified_by_a_passing_run(scenario, action):
    action.status, action.done_at = ActionStatus.IN_PROGRESS, None
    action.save()
    criterion = criterion_for(action, scenario)

    proofs.criteria_evaluate(run=run_with(scenario, p95=100))

    criterion.refresh_from_db()
    assert criterion.state == "unverified"
    assert Verification.objects.get().passed  # the evidence is kept for later


@pytest.mark.parametrize(
    "run_fields",
    [
        {"users": 50},  # another load than the criterion's "at 200 users"
        {"invalid_reason": "Locust's CPU was saturated"},
        {"status": RunStatus.ERROR},
    ],
)
def test_a_run_that_proves_nothing_leaves_the_state_alone(scenario, action, run_fields):
    criterion = criterion_for(action, scenario)

    assert proofs.criteria_evaluate(run=run_with(scenario, p95=100, **run_fields)) == []

    criterion.refresh_from_db()
    assert criterion.state == "unverified" and not Verification.objects.exists()


def test_a_redelivered_evaluation_does_not_count_twice(scenario, action):
    criterion_for(action, scenario)
    run = run_with(scenario, p95=100)

    proofs.criteria_evaluate(run=run)

    assert proofs.criteria_evaluate(run=run) == []
    assert Verification.objects.count() == 1


def test_the_db_ram_and_failure_rate_criteria_read_the_run_figures(scenario, action, engineer):
    ram = criterion_for(action, scenario, endpoint="", metric="db_ram_peak_mb", value=1536)
    other = action.postmortem.actions.exclude(pk=action.pk).first()
    failures = criterion_for(other, scenario, metric="failure_rate", value=0.001)

    proofs.criteria_evaluate(run=run_with(scenario, p95=100))

    ram.refresh_from_db()
    failures.refresh_from_db()
    assert (ram.state, ram.measured) == ("verified", 1200)
    assert failures.state == "failed" and failures.measured == pytest.approx(0.005)


def test_the_post_mortem_page_shows_each_action_with_its_evidence(client, viewer, scenario, action):
    criterion_for(action, scenario)
    run = run_with(scenario, p95=412)
    proofs.criteria_evaluate(run=run)
    client.force_login(viewer)

    html = client.get(action.postmortem.get_absolute_url()).content.decode()

    assert "verification-verified" in html
    assert "/advisors/[id]/young p95_ms &lt; 500 at 200 users" in html
    assert f"run #{run.pk}" in html and "measured 412" in html


def test_a_worse_level_in_the_series_opens_one_draft_post_mortem_with_its_figures(
    scenario, engineer
):
    from perfruns.models import RegressionIncident
    from postmortems.models import PostMortem

    runs = []
    for n in range(20):
        run = run_with(scenario, p95=(100.0 if n < 12 else 180.0) + n % 3)
        run.summary = {"p95_ms": (100.0 if n < 12 else 180.0) + n % 3, "failure_rate": 0.0}
        run.save()
        runs.append(run)

    opened = trends.regression_incidents_open(scenario=scenario)
    again = trends.regression_incidents_open(scenario=scenario)

    assert len(opened) == 1 and again == []
    pm = PostMortem.objects.get(pk=opened[0].pk)
    assert pm.status == "draft"
    assert pm.title == f"Regression of advisors from run #{runs[12].pk}"
    impacts = {i.label: i.value for i in pm.impacts.all()}
    assert float(impacts["p95 (ms) before"]) == pytest.approx(101, abs=1)
    assert float(impacts["p95 (ms) after"]) == pytest.approx(181, abs=1)
    assert set(pm.perf_runs.all()) == set(runs[12:])
    assert RegressionIncident.objects.get().start_run == runs[12]


def test_a_level_that_got_better_opens_nothing(scenario):
    for n in range(20):
        run = run_with(scenario, p95=100)
        run.summary = {"p95_ms": (180.0 if n < 12 else 100.0) + n % 3}
        run.save()

    assert trends.regression_incidents_open(scenario=scenario) == []


def test_accepting_a_change_pins_the_new_level_as_the_baseline(scenario):
    from perfruns.models import RegressionIncident

    runs = []
    for n in range(20):
        run = run_with(scenario, p95=100)
        run.summary = {"p95_ms": (100.0 if n < 12 else 180.0) + n % 3}
        run.save()
        runs.append(run)
    trends.regression_incidents_open(scenario=scenario)
    incident = RegressionIncident.objects.get()
    assert incident.state == "confirmed"

    assert trends.regression_incident_resolve(incident=incident, state="accepted")
    assert not trends.regression_incident_resolve(incident=incident, state="fixed")

    incident.refresh_from_db()
    scenario.refresh_from_db()
    assert incident.state == "accepted"
    assert scenario.baseline_run == runs[-1]  # the latest run of the new normal
    with pytest.raises(common.PipelineRefused, match="accepted or fixed, not 'ignored'"):
        trends.regression_incident_resolve(incident=incident, state="ignored")


def test_a_change_whose_level_comes_back_is_marked_fixed_from_that_run(scenario):
    from perfruns.models import RegressionIncident

    def runs_at(levels: list[float]) -> list:
        made = []
        for n, level in enumerate(levels):
            run = run_with(scenario, p95=level)
            run.summary = {"p95_ms": level + n % 3}
            run.save()
            made.append(run)
        return made

    runs = runs_at([100.0] * 8 + [180.0] * 8)
    trends.regression_incidents_open(scenario=scenario)
    incident = RegressionIncident.objects.get()
    assert (incident.state, incident.start_run) == ("confirmed", runs[8])

    runs += runs_at([100.0] * 8)
    trends.regression_incidents_open(scenario=scenario)

    incident.refresh_from_db()
    assert (incident.state, incident.fixed_by_run) == ("fixed", runs[16])
    assert RegressionIncident.objects.count() == 1  # going back is no new regression


def test_a_change_that_only_partly_came_back_stays_confirmed(scenario):
    from perfruns.models import RegressionIncident

    for n, level in enumerate([100.0] * 8 + [200.0] * 8 + [150.0] * 8):
        run = run_with(scenario, p95=level)
        run.summary = {"p95_ms": level + n % 3}
        run.save()

    trends.regression_incidents_open(scenario=scenario)

    first = RegressionIncident.objects.order_by("start_run_id").first()
    assert first.state == "confirmed" and first.fixed_by_run is None
    # Its levels are those of the regimes on either side, not of everything before/after.
    impacts = {i.label: float(i.value) for i in first.postmortem.impacts.all()}
    assert impacts["p95 (ms) before"] == pytest.approx(101, abs=1)
    assert impacts["p95 (ms) after"] == pytest.approx(201, abs=1)
    assert first.postmortem.perf_runs.count() == 8  # the runs of the worse level
