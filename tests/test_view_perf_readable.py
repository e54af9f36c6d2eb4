"""The performance pages speak to people: sizes in MiB, durations in ms, rates in %,
thresholds and floors as lines, "All endpoints" for Locust's Aggregated row, why a failed
run failed in the lists of runs, and why a comparison could not decide anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from perfruns.models import EndpointStat, PerfRun, RunStatus, RunTrigger
from perfruns.services.run_comparison import compare_runs
from perfruns.thresholds import EndpointFigures, judge
from tests.runfiles import make_run

THRESHOLDS = {
    "p95_ms": 300,
    "failure_rate": 0.01,
    "db_ram_peak_mb": 1500,
    "probable_leak": False,
    "endpoints": {"/report": {"p95_ms": 500}},
}
FLOORS = {"db_ram_abs_mb": 32, "latency_rel": 0.2}
PEAK = 51_275_366  # bytes: 48.9 MiB, which the pages once wrote 5.127e+07

pytestmark = pytest.mark.scenario(thresholds=THRESHOLDS, floors=FLOORS)

# What a person should never have to read on these pages.
MACHINE = ("5.127e+07", "p95_ms", "failure_rate", "db_ram_peak", "Aggregated", "db_ram_abs_mb")


def machine_words(html: str) -> list[str]:
    return [word for word in MACHINE if word in html]


@pytest.fixture
def failed(scenario) -> PerfRun:
    """A run judged by its scenario's thresholds, with known figures."""
    summary = {
        "requests": 12_000, "failures": 150, "failure_rate": 0.0125, "rps": 40.0,
        "p50_ms": 20.0, "p95_ms": 412.0, "p99_ms": 900.0,
        "db_ram_peak": PEAK, "db_ram_peak_anon": 12 * 2**20,
    }  # fmt: skip
    stats = {
        "/report": (2400.0, 4000, 100),
        "/users/[id]": (90.0, 8000, 50),
        "Aggregated": (412.0, 12_000, 150),
    }
    endpoints = {
        name: EndpointFigures(requests, failures, 13.3, {"95": p95})
        for name, (p95, requests, failures) in stats.items()
    }
    run = PerfRun.objects.create(
        scenario=scenario,
        environment=scenario.environment,
        trigger=RunTrigger.SCHEDULE,
        status=RunStatus.FAILED,
        settings={"thresholds": THRESHOLDS, "floors": FLOORS},
        summary=summary,
        verdict=judge(THRESHOLDS, summary=summary, endpoints=endpoints),
    )
    for name, (p95, requests, failures) in stats.items():
        EndpointStat.objects.create(
            run=run, method="" if name == "Aggregated" else "GET", name=name,
            requests=requests, failures=failures, avg_ms=50, min_ms=2, max_ms=3000,
            percentiles={"50": 20.0, "95": p95, "99": 900.0}, rps=13.3,
        )  # fmt: skip
    return run


def short_run(scenario, folder: Path, seed: int) -> PerfRun:
    """A run of 30 s with few requests: three 10-second intervals, 50 requests."""
    run = make_run(scenario, folder, p95={"/report": 400.0}, seed=seed)
    history = folder / "locust_stats_history.csv"
    history.write_text("\n".join(history.read_text().splitlines()[: 1 + 30]) + "\n")
    run.endpoints.update(requests=50)
    run.samples.all().delete()
    return run


# ---------------------------------------------------------------------------- run page


def test_the_run_page_writes_figures_in_units_and_checks_as_sentences(
    client, viewer, failed, django_assert_num_queries
):
    client.force_login(viewer)

    # session, user, groups, the run with scenario/environment/creator/snapshot, its
    # endpoints, failure groups, whether it is attached to a post-mortem out of the
    # viewer's sight, artifacts, post-mortems, actions
    with django_assert_num_queries(10):
        response = client.get(failed.get_absolute_url())

    html = response.content.decode()
    assert response.status_code == 200
    assert "48.9\u00a0MiB" in html and "12\u00a0MiB" in html  # the peak and its anonymous part
    assert "412\u00a0ms" in html and "1.25\u00a0%" in html and "40\u00a0req/s" in html
    assert "≤ 300\u00a0ms" in html and "≤ 1\u00a0%" in html and "≤ 1,500\u00a0MiB" in html
    assert "/report: p95" in html and "2,400\u00a0ms" in html
    assert "All endpoints" in html
    assert machine_words(html) == []


def test_the_run_page_is_read_only_and_hidden_from_who_has_no_role(client, viewer, nobody, failed):
    client.force_login(viewer)
    assert client.post(failed.get_absolute_url()).status_code == 405
    client.force_login(nobody)
    assert client.get(failed.get_absolute_url()).status_code == 403


def test_the_run_page_writes_numbers_the_french_way(client, viewer, failed):
    client.force_login(viewer)

    html = client.get(failed.get_absolute_url(), HTTP_ACCEPT_LANGUAGE="fr").content.decode()

    # A comma before the decimals, a narrow no-break space between the thousands.
    assert "48,9\u00a0" in html and "1,25\u00a0%" in html and "2\u202f400\u00a0" in html
    assert "48.9\u00a0" not in html


# ------------------------------------------------------------------- scenario page


def test_the_scenario_page_writes_thresholds_and_floors_as_lines(
    client, viewer, failed, django_assert_num_queries
):
    client.force_login(viewer)

    # session, user, groups, the scenario with its environment, its schedule with its
    # crontab, the changes found, its runs, its post-mortems
    with django_assert_num_queries(8):
        response = client.get(reverse("perfruns:scenario", args=["checkout"]))

    html = response.content.decode()
    assert response.status_code == 200
    for line in (
        "p95 ≤ 300\u00a0ms",
        "failure rate ≤ 1\u00a0%",
        "DB RAM peak ≤ 1,500\u00a0MiB",
        "no probable memory leak",
        "/report: p95 ≤ 500\u00a0ms",
        "DB RAM peak, absolute: +32\u00a0MiB",
        "latency, relative: +20\u00a0%",
    ):
        assert line in html
    assert "{&#34;" not in html and "{&quot;" not in html  # no JSON
    assert machine_words(html) == []


def test_a_failed_run_says_why_in_the_scenarios_list_of_runs(client, viewer, failed):
    client.force_login(viewer)

    html = client.get(reverse("perfruns:scenario", args=["checkout"])).content.decode()

    assert "p95 412\u00a0ms (≤ 300\u00a0ms)" in html
    assert "failure rate 1.25\u00a0%" in html
    # the two first reasons, then how many more (the leak it could not rule out, /report)
    assert "and 2 more" in html


def test_an_invalid_run_says_why_in_the_list_of_runs(client, viewer, failed):
    PerfRun.objects.filter(pk=failed.pk).update(
        status=RunStatus.PASSED, verdict=[], invalid_reason="Locust's CPU was saturated."
    )
    client.force_login(viewer)

    html = client.get(reverse("perfruns:scenario", args=["checkout"])).content.decode()

    assert "Locust&#39;s CPU was saturated." in html or "Locust's CPU was saturated." in html


def test_a_post_mortem_says_why_its_measured_run_failed(
    client, viewer, engineer, make_postmortem, failed
):
    pm = make_postmortem(actor=engineer)
    failed.postmortems.add(pm)
    client.force_login(viewer)

    html = client.get(pm.get_absolute_url()).content.decode()

    assert "Measured runs" in html
    assert "p95 412\u00a0ms (≤ 300\u00a0ms)" in html and "48.9\u00a0MiB" in html


# ------------------------------------------------------------------ comparisons


def test_a_comparison_that_decides_nothing_says_it_was_inconclusive_and_why(
    client, viewer, nobody, scenario, tmp_path, django_assert_num_queries
):
    before = short_run(scenario, tmp_path / "a", seed=1)
    after = short_run(scenario, tmp_path / "b", seed=2)
    url = reverse("perfruns:run_compare", args=[before.pk, after.pk])
    client.force_login(viewer)

    # session, user, groups, the two runs with scenario and environment, each run's
    # endpoints and memory samples (the comparison's replicates)
    with django_assert_num_queries(9):
        response = client.get(url)

    html = response.content.decode()
    assert response.status_code == 200
    assert "The comparison was inconclusive" in html
    assert "too short a run: fewer than 5 ten-second intervals on one side" in html
    assert "too few requests to tell a change of the failure rate" in html
    assert "No endpoint is better or worse" not in html
    assert "p95" in html and machine_words(html) == []
    assert client.post(url).status_code == 405
    client.force_login(nobody)
    assert client.get(url).status_code == 403


def test_a_run_whose_baseline_comparison_decides_nothing_says_why(
    client, viewer, scenario, tmp_path
):
    before = short_run(scenario, tmp_path / "a", seed=1)
    after = short_run(scenario, tmp_path / "b", seed=2)
    after.regression = compare_runs(baseline=before, candidate=after).as_json()
    after.save(update_fields=["regression"])
    client.force_login(viewer)

    html = client.get(after.get_absolute_url()).content.decode()

    assert f"Compared with run #{before.pk}" in html
    assert "The comparison was inconclusive" in html
    assert "too few requests to tell a change of the failure rate" in html
    assert "No endpoint is better or worse beyond its floor." not in html


def test_the_compare_page_writes_the_changes_in_units_and_the_floors_in_force(
    client, viewer, scenario, tmp_path
):
    before = make_run(scenario, tmp_path / "a", p95={"/report": 400.0}, seed=1)
    after = make_run(scenario, tmp_path / "b", p95={"/report": 700.0}, seed=2,
                     settings={**before.settings, "floors": FLOORS})  # fmt: skip
    client.force_login(viewer)

    html = client.get(reverse("perfruns:run_compare", args=[before.pk, after.pk])).content.decode()

    assert "verdict-worse" in html and "\u00a0ms" in html
    assert "DB RAM peak, absolute: +32\u00a0MiB" in html  # the candidate's floor
    assert "latency, absolute: +20\u00a0ms" in html  # a default one
    assert "All endpoints" in html and machine_words(html) == []
