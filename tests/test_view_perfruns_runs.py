"""Scenario and run pages: list, detail, Run now, schedule, run page, progress, cancel,
series and files."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from perfruns.models import (
    Artifact,
    EndpointStat,
    FailureGroup,
    PerfRun,
    RunStatus,
    RunTrigger,
    Sample,
)
from perfruns.services import runs, trends

SCENARIOS = reverse("perfruns:scenarios")


def scenario_url(name: str = "checkout") -> str:
    return reverse("perfruns:scenario", args=[name])


pytestmark = pytest.mark.scenario(thresholds={"p95_ms": 300})


@pytest.fixture
def finished(scenario, tmp_path) -> PerfRun:
    """A run as the runner leaves it: figures, endpoints, samples, failures, files."""
    run = PerfRun.objects.create(
        scenario=scenario,
        environment=scenario.environment,
        trigger=RunTrigger.MANUAL,
        status=RunStatus.FAILED,
        settings={"thresholds": {"p95_ms": 300}},
        summary={
            "requests": 1200,
            "failures": 12,
            "failure_rate": 0.01,
            "rps": 40.0,
            "p50_ms": 20.0,
            "p95_ms": 412.0,
            "p99_ms": 900.0,
            "db_ram_peak": 300 * 2**20,
            "db_ram_peak_anon": 40 * 2**20,
            "target_slope": {"per_minute": 30 * 2**20, "r2": 0.97, "leak": True},
        },
        verdict=[{"check": "p95_ms", "limit": 300, "value": 412.0, "passed": False}],
        database={"top_statements": [{"query": "SELECT * FROM events WHERE user_id = $1",
                                      "calls": 900, "total_ms": 1234.0, "mean_ms": 1.4,
                                      "rows": 9000}]},
    )  # fmt: skip
    for name, p95 in (("/users/[id]", 90.0), ("/report", 2400.0), ("Aggregated", 412.0)):
        EndpointStat.objects.create(
            run=run, method="" if name == "Aggregated" else "GET", name=name, requests=400,
            failures=4, avg_ms=50, min_ms=2, max_ms=3000,
            percentiles={"50": 20.0, "95": p95, "99": 900.0, "99.9": 1500.0}, rps=13.3,
        )  # fmt: skip
    Sample.objects.bulk_create(
        [Sample(run=run, t=t, users=10, rps=40.0, p95_ms=400.0) for t in range(3)]
        + [Sample(run=run, t=t + 0.5, db_pss=300 * 2**20) for t in range(3)]
    )
    FailureGroup.objects.create(
        run=run, method="GET", name="/report", error="HTTPError('500 Server Error')", occurrences=12
    )
    report = tmp_path / "report.html"
    report.write_text("<html>locust report</html>")
    Artifact.objects.create(
        run=run, name="report.html", path=str(report), size_bytes=26, content_type="text/html"
    )
    return run


def test_the_scenario_list_shows_each_scenario_with_its_last_run(
    client, viewer, finished, django_assert_num_queries
):
    client.force_login(viewer)

    # session, user, groups, scenarios with environments, the last run of each
    with django_assert_num_queries(5):
        response = client.get(SCENARIOS)

    html = response.content.decode()
    assert response.status_code == 200
    assert "checkout" in html and f"#{finished.pk}" in html and "Failed" in html


def test_the_scenario_page_shows_its_settings_schedule_and_runs(
    client, engineer, finished, django_assert_num_queries
):
    client.force_login(engineer)

    # session, user, groups, the scenario with its environment (and its trend, kept on
    # it), its schedule with its crontab, the changes found, its runs, its post-mortems
    with django_assert_num_queries(8):
        response = client.get(scenario_url())

    html = response.content.decode()
    assert response.status_code == 200
    assert "Run now" in html and "412\u00a0ms" in html and "Save schedule" in html
    assert "examples/demo/locustfile.py" in html


def test_run_now_queues_a_run_and_shows_its_page(
    client, engineer, scenario, django_capture_on_commit_callbacks
):
    client.force_login(engineer)

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(reverse("perfruns:scenario_run", args=["checkout"]))

    run = PerfRun.objects.get()
    assert response.status_code == 302 and response["Location"] == run.get_absolute_url()
    assert run.status == RunStatus.QUEUED and run.trigger == RunTrigger.MANUAL
    assert run.created_by == engineer
    assert len(callbacks) == 1  # the task goes out once the run is committed


def test_run_now_runs_the_version_asked_for_and_refuses_a_target_without_one(
    client, engineer, scenario
):
    client.force_login(engineer)
    url = reverse("perfruns:scenario_run", args=["checkout"])

    refused = client.post(url, {"version": "2.0"}, follow=True)
    scenario.start_command = "bin/serve --release {version}"
    scenario.default_version = "1.0"
    scenario.save()
    client.post(url, {"version": "2.0"})

    assert "does not take a version" in refused.content.decode()
    assert list(PerfRun.objects.values_list("version", flat=True)) == ["2.0"]


def test_run_now_while_a_run_is_under_way_says_so_and_queues_nothing(
    client, engineer, scenario, django_capture_on_commit_callbacks
):
    first = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=None)
    client.force_login(engineer)

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(reverse("perfruns:scenario_run", args=["checkout"]), follow=True)

    assert f"already queued or running (run #{first.pk})" in response.content.decode()
    assert PerfRun.objects.count() == 1 and callbacks == []


def test_a_viewer_cannot_start_a_run_and_a_get_does_not_start_one(
    client, viewer, engineer, scenario
):
    client.force_login(viewer)
    assert client.post(reverse("perfruns:scenario_run", args=["checkout"])).status_code == 403
    client.force_login(engineer)
    assert client.get(reverse("perfruns:scenario_run", args=["checkout"])).status_code == 405
    assert not PerfRun.objects.exists()


def test_someone_without_a_role_sees_no_scenario(client, nobody, scenario):
    client.force_login(nobody)

    assert client.get(SCENARIOS).status_code == 403
    assert client.get(scenario_url()).status_code == 403


def test_an_engineer_changes_the_weekly_schedule(client, engineer, scenario):
    client.force_login(engineer)

    response = client.post(
        reverse("perfruns:scenario_schedule", args=["checkout"]),
        {"day_of_week": "5", "hour": "22", "minute": "15", "enabled": "on"},
    )

    assert response.status_code == 302
    task = PeriodicTask.objects.get(name=scenario.schedule_name)
    assert (task.crontab.day_of_week, task.crontab.hour, task.crontab.minute) == ("5", "22", "15")


def test_a_bad_schedule_is_refused_and_the_old_one_kept(client, engineer, scenario):
    client.force_login(engineer)

    response = client.post(
        reverse("perfruns:scenario_schedule", args=["checkout"]),
        {"day_of_week": "9", "hour": "25", "minute": "0"},
        follow=True,
    )

    assert "The schedule was not changed" in response.content.decode()
    task = PeriodicTask.objects.get(name=scenario.schedule_name)
    assert (task.crontab.day_of_week, task.crontab.hour) == ("1", "3")


def test_the_run_page_shows_the_verdict_endpoints_figures_and_files(
    client, viewer, finished, django_assert_num_queries
):
    client.force_login(viewer)

    # session, user, groups, the run with scenario/environment/creator/snapshot, its
    # endpoints, failure groups, whether it is attached to a post-mortem out of the
    # viewer's sight (its files would be too), artifacts, post-mortems, actions
    with django_assert_num_queries(10):
        response = client.get(finished.get_absolute_url())

    html = response.content.decode()
    assert response.status_code == 200
    assert "412" in html and "over" in html  # the p95 threshold it broke
    assert "/report" in html and "2,400\u00a0ms" in html and "500 Server Error" in html
    assert "probable leak" in html and "300\u00a0MiB" in html
    assert "SELECT * FROM events WHERE user_id = $1" in html
    assert reverse("perfruns:run_artifact", args=[finished.pk, "report.html"]) in html
    assert 'data-active="false"' in html


def test_the_live_part_of_an_active_run_shows_its_stage_and_a_cancel_button(
    client, engineer, scenario
):
    run = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=None)
    runs.perfrun_claim(run_id=run.pk)
    PerfRun.objects.filter(pk=run.pk).update(stage="load", progress=40)
    client.force_login(engineer)

    response = client.get(reverse("perfruns:run_progress", args=[run.pk]))

    html = response.content.decode()
    assert 'data-active="true"' in html and "load" in html and 'value="40"' in html
    assert reverse("perfruns:run_cancel", args=[run.pk]) in html


def test_cancel_asks_a_running_run_to_stop(client, engineer, viewer, scenario):
    run = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=None)
    runs.perfrun_claim(run_id=run.pk)
    client.force_login(viewer)
    assert client.post(reverse("perfruns:run_cancel", args=[run.pk])).status_code == 403
    client.force_login(engineer)

    response = client.post(reverse("perfruns:run_cancel", args=[run.pk]))

    assert response.status_code == 302
    run.refresh_from_db()
    assert run.cancel_requested and run.status == RunStatus.RUNNING


def test_the_series_puts_load_and_memory_on_one_time_axis(client, viewer, finished):
    client.force_login(viewer)

    data = client.get(reverse("perfruns:run_series", args=[finished.pk])).json()

    assert data["t"] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert data["rps"] == [40.0, None, 40.0, None, 40.0, None]
    assert data["db_pss"] == [None, 300 * 2**20, None, 300 * 2**20, None, 300 * 2**20]


def test_a_run_file_is_served_and_a_removed_one_is_a_404(client, viewer, finished):
    client.force_login(viewer)
    url = reverse("perfruns:run_artifact", args=[finished.pk, "report.html"])

    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"<html>locust report</html>"
    # Locust's report runs its own scripts: sandboxed, an origin of its own.
    assert response["Content-Security-Policy"].startswith("sandbox allow-scripts;")

    Path(finished.artifacts.get().path).unlink()
    assert client.get(url).status_code == 404
    assert (
        client.get(reverse("perfruns:run_artifact", args=[finished.pk, "x.csv"])).status_code == 404
    )


def test_the_post_mortem_page_shows_the_runs_attached_to_it_and_to_its_actions(
    client, viewer, engineer, make_postmortem, finished
):
    pm = make_postmortem(actor=engineer)
    finished.postmortems.add(pm)
    finished.actions.add(pm.actions.first())
    client.force_login(viewer)

    html = client.get(pm.get_absolute_url()).content.decode()

    assert "Measured runs" in html
    assert html.count(f"checkout #{finished.pk}") == 2  # the incident's and the action's
    assert "412\u00a0ms" in html and "1\u00a0%" in html and "300\u00a0MiB" in html


def test_the_scenario_page_marks_the_run_where_p95_moved_to_a_new_level(client, viewer, scenario):
    runs = [
        PerfRun.objects.create(
            scenario=scenario,
            environment=scenario.environment,
            trigger=RunTrigger.SCHEDULE,
            status=RunStatus.PASSED,
            summary={"p95_ms": (100.0 if n < 10 else 150.0) + n % 3},
        )
        for n in range(20)
    ]
    trends.scenario_trend_refresh(scenario=scenario)  # as after each run
    client.force_login(viewer)

    html = client.get(scenario_url()).content.decode()

    assert "Trend" in html
    assert f'a new level from run <a href="/perf/runs/{runs[10].pk}/">#{runs[10].pk}</a>' in html
    assert "no change over the last" not in html.split("<li>p95: ")[1].split("</li>")[0]


def test_an_engineer_marks_a_change_fixed_and_a_viewer_cannot(
    client, engineer, viewer, scenario, make_postmortem
):
    from perfruns.models import RegressionIncident

    start = PerfRun.objects.create(
        scenario=scenario, environment=scenario.environment, trigger=RunTrigger.SCHEDULE,
        status=RunStatus.PASSED,
    )  # fmt: skip
    incident = RegressionIncident.objects.create(
        scenario=scenario, start_run=start, postmortem=make_postmortem(actor=engineer)
    )
    url = reverse("perfruns:incident_resolve", args=["checkout", incident.pk])
    client.force_login(viewer)
    assert client.post(url, {"state": "fixed"}).status_code == 403
    client.force_login(engineer)
    assert "Accept as the new normal" in client.get(scenario_url()).content.decode()

    response = client.post(url, {"state": "fixed"})

    assert response.status_code == 302
    incident.refresh_from_db()
    assert incident.state == "fixed"
    assert client.get(url).status_code == 405


def test_the_scenario_page_says_from_which_run_a_change_came_back(
    client, viewer, scenario, make_postmortem, engineer
):
    from perfruns.models import ChangeState, RegressionIncident

    start, back = (
        PerfRun.objects.create(
            scenario=scenario, environment=scenario.environment, trigger=RunTrigger.SCHEDULE,
            status=RunStatus.PASSED,
        )
        for _ in range(2)
    )  # fmt: skip
    RegressionIncident.objects.create(
        scenario=scenario, start_run=start, postmortem=make_postmortem(actor=engineer),
        state=ChangeState.FIXED, fixed_by_run=back,
    )  # fmt: skip
    client.force_login(viewer)

    html = client.get(scenario_url()).content.decode()

    assert f'back to its level from run <a href="/perf/runs/{back.pk}/">#{back.pk}</a>' in html
