"""The validity gates of a comparison, each with the sentence that explains it."""

from __future__ import annotations

from perfruns.regression import RunFacts, check_validity

SETTINGS = {
    "shared_buffers": "128MB",
    "work_mem": "4MB",
    "max_connections": "100",
    "server_version": "15.8",
}


def facts(**changes) -> RunFacts:
    values = {
        "saturated": False,
        "shape": "arrival",
        "arrival_rps": 100.0,
        "achieved_rps": 99.5,
        "settings": dict(SETTINGS),
    }
    values.update(changes)
    return RunFacts(**values)


def test_two_runs_alike_in_everything_can_be_compared():
    validity = check_validity(baseline=facts(), candidate=facts())

    assert validity.valid
    assert validity.reasons == []


def test_a_saturated_load_generator_makes_the_comparison_invalid():
    validity = check_validity(baseline=facts(), candidate=facts(saturated=True))

    assert not validity.valid
    assert validity.reasons == [
        "The candidate's load generator was saturated, so its figures measure Locust, "
        "not the target."
    ]


def test_each_saturated_side_has_its_own_reason():
    validity = check_validity(baseline=facts(saturated=True), candidate=facts(saturated=True))

    assert [reason.split("'")[0] for reason in validity.reasons] == [
        "The baseline",
        "The candidate",
    ]


def test_a_fixed_arrival_run_under_90_percent_of_its_target_is_invalid():
    validity = check_validity(baseline=facts(), candidate=facts(achieved_rps=85.0))

    assert validity.reasons == [
        "The candidate achieved 85 requests/s, 85% of its fixed arrival target of "
        "100 requests/s (at least 90% is needed)."
    ]


def test_a_fixed_arrival_run_at_exactly_90_percent_of_its_target_is_valid():
    assert check_validity(baseline=facts(achieved_rps=90.0), candidate=facts()).valid


def test_a_fixed_arrival_run_without_its_achieved_rate_is_invalid():
    validity = check_validity(baseline=facts(achieved_rps=None), candidate=facts())

    assert validity.reasons == [
        "The baseline is a fixed-arrival run at 100 requests/s whose achieved rate was not "
        "recorded."
    ]


def test_a_run_of_users_may_achieve_any_rate():
    users = {"shape": "constant", "arrival_rps": None}
    validity = check_validity(
        baseline=facts(**users, achieved_rps=50.0), candidate=facts(**users, achieved_rps=5.0)
    )

    assert validity.valid


def test_different_load_shapes_or_targets_cannot_be_compared():
    shapes = check_validity(
        baseline=facts(shape="steps", arrival_rps=None), candidate=facts(achieved_rps=100.0)
    )
    targets = check_validity(
        baseline=facts(), candidate=facts(arrival_rps=200.0, achieved_rps=199.0)
    )

    assert shapes.reasons == [
        "The load shape differs: steps on the baseline, arrival on the candidate."
    ]
    assert targets.reasons == [
        "The arrival target differs: 100 requests/s on the baseline, 200 requests/s on the "
        "candidate."
    ]


def test_a_differently_configured_review_environment_makes_the_comparison_invalid():
    candidate = facts(settings={**SETTINGS, "shared_buffers": "256MB", "max_connections": "200"})

    validity = check_validity(baseline=facts(), candidate=candidate)

    assert not validity.valid
    assert validity.reasons == [
        "The environment setting max_connections differs: 100 on the baseline, 200 on the "
        "candidate.",
        "The environment setting shared_buffers differs: 128MB on the baseline, 256MB on the "
        "candidate.",
    ]


def test_a_setting_recorded_on_one_side_only_differs():
    baseline = facts(settings={**SETTINGS, "effective_io_concurrency": "200"})

    validity = check_validity(baseline=baseline, candidate=facts())

    assert validity.reasons == [
        "The environment setting effective_io_concurrency differs: 200 on the baseline, "
        "not recorded on the candidate."
    ]
