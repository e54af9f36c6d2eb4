"""The A/B/A pages: asked for on the scenario page, watched and read on its own page,
stopped; who may do what."""

from __future__ import annotations

import html

import pytest
from django.urls import reverse

from perfruns.models import ComparisonStatus, VersionComparison
from perfruns.services import version_comparisons
from tests.runfiles import make_run

pytestmark = pytest.mark.scenario(
    start_command="bin/serve --release {version}", default_version="1.0"
)


def create_url(name: str = "checkout") -> str:
    return reverse("perfruns:version_comparison_create", args=[name])


@pytest.fixture
def judged(scenario, tmp_path) -> VersionComparison:
    """A comparison whose three runs are made and judged: B's /report 50 % slower."""
    comparison = VersionComparison.objects.create(
        scenario=scenario, version_a="1.0", version_b="2.0"
    )
    for seed, (role, level) in enumerate((("a1", 400.0), ("b", 600.0), ("a2", 400.0))):
        make_run(
            scenario, tmp_path / role, p95={"/users": 100.0, "/report": level}, seed=seed,
            version_comparison=comparison, role=role, version=comparison.version_of(role),
            summary={"rps": 40.0, "p95_ms": level},
        )  # fmt: skip
    return version_comparisons.version_comparison_run(comparison_id=comparison.pk)


def test_an_engineer_asks_for_a_comparison_and_lands_on_its_page(
    client, engineer, scenario, django_capture_on_commit_callbacks
):
    client.force_login(engineer)

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(create_url(), {"version_a": "1.0", "version_b": "2.0-rc1"})

    comparison = VersionComparison.objects.get()
    assert response.status_code == 302 and response["Location"] == comparison.get_absolute_url()
    assert (comparison.version_a, comparison.version_b) == ("1.0", "2.0-rc1")
    assert comparison.status == "queued" and comparison.created_by == engineer
    assert len(callbacks) == 1  # the task goes out once the comparison is committed


def test_a_bad_version_is_named_and_nothing_is_queued(client, engineer, scenario):
    client.force_login(engineer)

    response = client.post(
        create_url(), {"version_a": "1.0", "version_b": "2.0;reboot"}, follow=True
    )

    assert "The version B '2.0;reboot' is not a version" in html.unescape(response.content.decode())
    assert not VersionComparison.objects.exists()


def test_asking_for_a_comparison_needs_post_and_an_engineer(client, viewer, nobody, scenario):
    client.force_login(viewer)
    assert client.get(create_url()).status_code == 405
    assert client.post(create_url(), {"version_a": "1", "version_b": "2"}).status_code == 403
    client.force_login(nobody)
    assert client.post(create_url(), {"version_a": "1", "version_b": "2"}).status_code == 403
    assert client.post(create_url("nope"), {"version_a": "1"}).status_code == 403
    assert not VersionComparison.objects.exists()


def test_the_scenario_page_offers_a_comparison_only_when_its_target_takes_a_version(
    client, engineer, scenario
):
    client.force_login(engineer)
    assert "Compare two versions" in client.get(scenario.get_absolute_url()).content.decode()

    scenario.start_command, scenario.default_version = "bin/serve", ""
    scenario.save()
    assert "Compare two versions" not in client.get(scenario.get_absolute_url()).content.decode()


def test_the_comparison_page_shows_the_three_runs_the_verdict_and_each_row(
    client, viewer, judged, django_assert_num_queries
):
    client.force_login(viewer)
    runs = {run.role: run for run in judged.runs.all()}

    # session, user, groups, the comparison with its scenario and author, its runs
    with django_assert_num_queries(5):
        response = client.get(judged.get_absolute_url())

    page = response.content.decode()
    assert response.status_code == 200
    assert judged.verdict == "worse" and "B is worse" in page
    assert "Version 2.0 against 1.0" in page
    for run in runs.values():
        assert f'href="/perf/runs/{run.pk}/"' in page
    assert reverse("perfruns:run_compare", args=[runs["a1"].pk, runs["a2"].pk]) in page
    assert "No drift: the two runs of A agree" in page
    report_row = page.split("<td>/report</td><td>p95</td>")[1].split("</tr>")[0]
    assert "+50." in report_row and "verdict-worse" in report_row


def test_the_live_part_polls_while_it_runs_and_stops_once_done(client, viewer, scenario, judged):
    running = VersionComparison.objects.create(
        scenario=scenario, version_a="1.0", version_b="3.0", status=ComparisonStatus.RUNNING,
        stage="run B (3.0)",
    )  # fmt: skip
    client.force_login(viewer)

    live = client.get(reverse("perfruns:version_comparison_progress", args=[running.pk]))
    done = client.get(reverse("perfruns:version_comparison_progress", args=[judged.pk]))

    assert 'data-active="true"' in live.content.decode()
    assert "run B (3.0)" in live.content.decode()
    assert "Cancel" not in live.content.decode()  # a viewer cannot stop it
    assert 'data-active="false"' in done.content.decode()


def test_an_engineer_stops_a_queued_comparison_and_a_viewer_cannot(
    client, engineer, viewer, scenario
):
    comparison = VersionComparison.objects.create(
        scenario=scenario, version_a="1.0", version_b="2.0"
    )
    url = reverse("perfruns:version_comparison_cancel", args=[comparison.pk])
    client.force_login(viewer)
    assert client.post(url).status_code == 403
    client.force_login(engineer)
    assert client.get(url).status_code == 405

    response = client.post(url)

    comparison.refresh_from_db()
    assert response.status_code == 302 and comparison.status == "cancelled"
    again = client.post(url, follow=True)
    assert "The comparison has already ended." in again.content.decode()


def test_an_unknown_comparison_is_a_404(client, viewer, db):
    client.force_login(viewer)
    assert client.get(reverse("perfruns:version_comparison", args=[999])).status_code == 404
