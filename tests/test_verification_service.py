"""proofs.criteria_evaluate: an action verified by a run, failed, regressed and reopened."""

from __future__ import annotations

import datetime as dt

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
    assert "/advisors/[id]/young: p95 &lt; 500\u00a0ms, at 200\u00a0users" in html
    assert f"run #{run.pk}" in html and "measured 412\u00a0ms" in html
    assert "limit 500\u00a0ms" in html and "p95_ms" not in html


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
    assert incident.state == "accepted" and incident.resolved_at is not None
    assert scenario.baseline_run == runs[-1]  # the latest run of the new normal
    with pytest.raises(common.PipelineRefused, match="accepted or fixed, not 'ignored'"):
        trends.regression_incident_resolve(incident=incident, state="ignored")


def test_a_change_whose_level_comes_back_is_marked_fixed_from_that_run(scenario):
    from perfruns.models import RegressionIncident

    def runs_at(levels: list[float]) -> list:
        made = []
        for n, level in enumerate(levels):
            finished = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=len(made))
            run = run_with(scenario, p95=level, finished_at=finished)
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
    assert incident.resolved_at == runs[16].finished_at
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


# ------------------------------------------------------- every figure, with its interval

MIB = 2**20


def memory_run(scenario, *, per_minute: float, low: float, high: float, leak=False, **fields):
    """A run whose target memory grew per_minute MiB a minute, within [low, high]."""
    values = {"users": 200, "shape": "constant"}
    run = PerfRun.objects.create(
        scenario=scenario,
        environment=scenario.environment,
        trigger=RunTrigger.SCHEDULE,
        status=fields.pop("status", RunStatus.PASSED),
        settings=values,
        summary={
            "target_slope": {
                "per_minute": per_minute * MIB,
                "low": low * MIB,
                "high": high * MIB,
                "per_request": None,
                "leak": leak,
            },
        },  # fmt: skip
        **fields,
    )
    return run


def slope_criterion(action, scenario, **fields):
    values = {"endpoint": "", "metric": "target_memory_slope_mb_per_min", "value": 2}
    return criterion_for(action, scenario, **{**values, **fields})


def test_a_memory_growth_whose_whole_interval_is_under_the_limit_verifies(scenario, action):
    criterion = slope_criterion(action, scenario)
    run = memory_run(scenario, per_minute=0.3, low=-0.4, high=1.1)

    proofs.criteria_evaluate(run=run)

    criterion.refresh_from_db()
    assert criterion.state == "verified"
    assert (criterion.measured, criterion.measured_low, criterion.measured_high) == (
        pytest.approx(0.3), pytest.approx(-0.4), pytest.approx(1.1),
    )  # fmt: skip


def test_a_value_under_the_limit_whose_interval_reaches_past_it_proves_nothing(scenario, action):
    criterion = slope_criterion(action, scenario)
    run = memory_run(scenario, per_minute=1.5, low=0.5, high=2.6)

    lines = proofs.criteria_evaluate(run=run)

    criterion.refresh_from_db()
    verification = Verification.objects.get()
    assert criterion.state == "unverified"
    assert (verification.outcome, verification.passed) == ("inconclusive", False)
    assert "its interval does not" in verification.note
    assert "inconclusive" in lines[0]


def test_a_failed_run_cannot_verify_an_action_and_says_why(scenario, action):
    criterion = criterion_for(action, scenario)
    run = run_with(
        scenario, p95=412, status=RunStatus.FAILED,
        verdict=[{"check": "failure_rate", "limit": 0.001, "value": 0.005, "passed": False}],
    )  # fmt: skip

    proofs.criteria_evaluate(run=run)

    criterion.refresh_from_db()
    verification = Verification.objects.get()
    assert criterion.state == "unverified"
    assert verification.outcome == "inconclusive"
    assert verification.note == "the run failed its own checks: failure_rate"


def test_a_probable_leak_fails_the_proof_and_none_verifies_it(scenario, action):
    criterion = slope_criterion(action, scenario, metric="probable_leak", value=None)
    leaking = memory_run(scenario, per_minute=20, low=18, high=22, leak=True)

    proofs.criteria_evaluate(run=leaking)
    criterion.refresh_from_db()
    assert criterion.state == "failed" and criterion.note == "probable leak: the target"

    proofs.criteria_evaluate(run=memory_run(scenario, per_minute=0.1, low=-0.3, high=0.4))
    criterion.refresh_from_db()
    assert criterion.state == "verified"


def test_better_than_a_reference_run_by_a_share_is_measured_against_that_run(scenario, action):
    before = memory_run(scenario, per_minute=20, low=18, high=22)
    criterion = slope_criterion(action, scenario, comparison="better_by", value=50,
                                reference_run=before)  # fmt: skip
    halved_only_just = memory_run(scenario, per_minute=9, low=7, high=12)
    far_better = memory_run(scenario, per_minute=1, low=0, high=2)

    proofs.criteria_evaluate(run=halved_only_just)
    criterion.refresh_from_db()
    assert criterion.state == "unverified"  # its interval reaches back to -40 %
    proofs.criteria_evaluate(run=far_better)
    criterion.refresh_from_db()
    assert criterion.state == "verified"
    assert criterion.note == f"+95.0 % against run #{before.pk} (20)"


def test_a_step_load_that_never_failed_proves_a_minimum_of_users(scenario, action):
    criterion = criterion_for(
        action, scenario, endpoint="", metric="first_failure_users", comparison="ge", value=150
    )
    run = run_with(scenario, p95=100)
    run.summary = {"breaking_point": {"first_failure_users": None, "knee_users": None}}
    run.save()

    proofs.criteria_evaluate(run=run)

    criterion.refresh_from_db()
    assert criterion.state == "verified"


# ------------------------------------------------------------------- red then green


def versioned_runs(scenario, *, a: float, b: float):
    """A/B/A runs of a comparison: the target's memory growth at `a` then `b` then `a`."""
    from perfruns.models import VersionComparison

    comparison = VersionComparison.objects.create(scenario=scenario, version_a="leaky",
                                                  version_b="bounded")  # fmt: skip
    runs = {}
    for role, level in (("a1", a), ("b", b), ("a2", a)):
        runs[role] = memory_run(
            scenario, per_minute=level, low=level - 0.5, high=level + 0.5,
            version_comparison=comparison, role=role, version=comparison.version_of(role),
        )  # fmt: skip
    return runs


def test_red_then_green_is_verified_when_a_reproduces_and_b_passes(scenario, action):
    criterion = slope_criterion(action, scenario, red_then_green=True)
    weekly = memory_run(scenario, per_minute=0.2, low=-0.3, high=0.7)
    proofs.criteria_evaluate(run=weekly)
    criterion.refresh_from_db()
    assert criterion.state == "unverified"  # one green run is no red then green

    runs = versioned_runs(scenario, a=20, b=0.2)
    proofs.criteria_evaluate_versions(**runs)

    criterion.refresh_from_db()
    assert (criterion.state, criterion.red_run, criterion.state_run) == (
        "verified", runs["a1"], runs["b"],
    )  # fmt: skip
    assert criterion.note.startswith(
        f"red on version leaky (run #{runs['a1'].pk}: 20), green on version bounded"
    )
    outcomes = dict(Verification.objects.values_list("run__role", "outcome").exclude(run=weekly))
    assert outcomes == {"a1": "failed", "b": "passed", "a2": "failed"}


def test_red_then_green_not_reproduced_on_a_verifies_nothing(scenario, action):
    criterion = slope_criterion(action, scenario, red_then_green=True)

    proofs.criteria_evaluate_versions(**versioned_runs(scenario, a=0.1, b=0.2))

    criterion.refresh_from_db()
    assert criterion.state == "unverified"
    assert criterion.note.startswith("not reproduced on version leaky")


def test_red_then_green_needs_a_scenario_whose_target_takes_a_version(scenario, action):
    with pytest.raises(common.PipelineRefused) as refused:
        proofs.criterion_save(
            action=action, actor=None, scenario=scenario, metric="not_worse",
            red_then_green=True,
        )  # fmt: skip

    message = str(refused.value)
    assert "needs that run's number" in message  # every problem at once
    assert "it needs a limit, not a reference run" in message
    assert "takes no {version}" in message
    assert not VerificationCriterion.objects.exists()
