"""A run's measurements on its page: failures by cause, connections against the limit,
the target's PSS and processes beside its RSS, each endpoint's p95 over time (the series),
and the live figures of a run under way (the polled partial)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from perfruns.models import (
    EndpointSample,
    FailureGroup,
    PerfRun,
    RunStatus,
    RunTrigger,
    Sample,
)
from perfruns.services import runs

MIB = 1 << 20
TOO_MANY = "FATAL: sorry, too many clients already"


@pytest.fixture
def measured(scenario) -> PerfRun:
    """A finished run that hit the connection limit, on a 4-worker target."""
    run = PerfRun.objects.create(
        scenario=scenario,
        environment=scenario.environment,
        trigger=RunTrigger.MANUAL,
        status=RunStatus.FAILED,
        summary={
            "requests": 1200,
            "failures": 59,
            "failure_rate": 0.05,
            "rps": 40.0,
            "p50_ms": 20.0,
            "p95_ms": 412.0,
            "p99_ms": 900.0,
            "target_rss_peak": 131 * MIB,
            "target_pss_peak": 64 * MIB,
            "target_rss_last": 129 * MIB,
            "target_pss_last": 63 * MIB,
            "target_processes_peak": 5,
            "target_processes_last": 5,
            "failure_causes": [
                {
                    "cause": TOO_MANY,
                    "occurrences": 59,
                    "endpoints": ["GET /users/[id]", "POST /orders"],
                    "example": "OperationalError('... port 5433 failed: FATAL:  sorry, too "
                    "many clients already')",
                }
            ],
        },
        database={
            "delta": {"xact_commit": 10},
            "connections": {
                "peak_total": 49,
                "peak_by_state": {"active": 40, "idle": 7},
                "peak_clients": 47,
                "peak_server_clients": 48,
                "peak_background": {"autovacuum launcher": 1, "checkpointer": 1},
                "max_connections": 50,
                "superuser_reserved_connections": 3,
                "reserved_connections": 0,
                "limit": 47,
                "limit_hit": True,
                "limit_hit_by": ["peak", "failures"],
            },
        },
    )
    FailureGroup.objects.create(
        run=run, method="GET", name="/users/[id]", error=f"OperationalError('{TOO_MANY}')",
        occurrences=50,
    )  # fmt: skip
    return run


def test_the_run_page_shows_failures_by_cause_connections_and_the_targets_pss(
    client, viewer, measured, django_assert_num_queries
):
    client.force_login(viewer)

    # session, user, groups, the run with scenario/environment/creator/snapshot, its
    # endpoints, failure groups, whether it is attached to a post-mortem out of the
    # viewer's sight (its files would be too), artifacts, post-mortems, actions
    with django_assert_num_queries(10):
        response = client.get(measured.get_absolute_url())

    html = response.content.decode()
    assert response.status_code == 200
    causes = html[html.index('id="failure-causes"') :]
    assert TOO_MANY in causes and "59" in causes and "GET /users/[id], POST /orders" in causes
    assert "Failures by error" in html  # each endpoint's own list stays
    assert 'id="connection-limit"' in html and "48 client connections" in html
    assert "max_connections 50" in html and "autovacuum launcher 1" in html
    assert "peak 47" in html
    # A figure and its unit are joined by a no-break space (perfruns.labels).
    assert "peak 64\xa0MiB" in html and "RSS at the end 129\xa0MiB" in html
    assert "5 processes" in html


def test_a_run_recorded_before_causes_were_kept_groups_its_failures_on_the_page(
    client, viewer, measured
):
    summary = {k: v for k, v in measured.summary.items() if k != "failure_causes"}
    PerfRun.objects.filter(pk=measured.pk).update(summary=summary, database={})
    FailureGroup.objects.create(
        run=measured, method="POST", name="/orders",
        error=f"HTTPError 500 body: {TOO_MANY} (pid 4182)", occurrences=9,
    )  # fmt: skip
    client.force_login(viewer)

    html = client.get(measured.get_absolute_url()).content.decode()

    causes = html[html.index('id="failure-causes"') :]
    assert TOO_MANY in causes and "59" in causes
    assert 'id="connection-limit"' not in html


def test_the_run_page_of_a_run_below_the_limit_raises_no_flag(client, viewer, measured):
    measured.database["connections"].update(limit_hit=False, limit_hit_by=[])
    measured.save(update_fields=["database"])
    client.force_login(viewer)

    html = client.get(measured.get_absolute_url()).content.decode()

    assert "Client connections, whole server" in html
    assert 'id="connection-limit"' not in html and "limit reached" not in html


def test_the_run_page_refuses_a_post_and_someone_without_a_role(client, viewer, nobody, measured):
    client.force_login(viewer)
    assert client.post(measured.get_absolute_url()).status_code == 405
    client.force_login(nobody)
    assert client.get(measured.get_absolute_url()).status_code == 403


def test_the_series_draws_each_endpoints_p95_so_a_blocked_light_route_shows(
    client, viewer, measured, django_assert_num_queries
):
    # /slow holds the server's only worker from the third second: /light waits behind it.
    rows = []
    for t in range(4):
        rows.append(EndpointSample(run=measured, t=t, method="GET", name="/slow", p95_ms=1000))
        if t != 1:  # a second with no /light request
            light = 5.0 if t < 2 else 900.0
            rows.append(
                EndpointSample(run=measured, t=t, method="GET", name="/light", p95_ms=light)
            )
    EndpointSample.objects.bulk_create(rows)
    Sample.objects.create(run=measured, t=1.5, target_rss=131 * MIB, target_pss=64 * MIB)
    client.force_login(viewer)

    # session, user, groups, the run, its samples, its endpoint samples
    with django_assert_num_queries(6):
        data = client.get(reverse("perfruns:run_series", args=[measured.pk])).json()

    assert data["endpoints"]["t"] == [0.0, 1.0, 2.0, 3.0]
    lines = {line["label"]: line["p95_ms"] for line in data["endpoints"]["lines"]}
    assert lines == {"GET /light": [5.0, None, 900.0, 900.0], "GET /slow": [1000.0] * 4}
    assert data["target_pss"] == [64 * MIB] and data["target_rss"] == [131 * MIB]


def test_the_series_refuses_a_post_and_someone_without_a_role(client, viewer, nobody, measured):
    url = reverse("perfruns:run_series", args=[measured.pk])
    client.force_login(viewer)
    assert client.post(url).status_code == 405
    client.force_login(nobody)
    assert client.get(url).status_code == 403


@pytest.fixture
def running(scenario) -> PerfRun:
    run = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=None)
    runs.perfrun_claim(run_id=run.pk)
    PerfRun.objects.filter(pk=run.pk).update(stage="load", progress=40)
    Sample.objects.bulk_create(
        [
            Sample(run=run, t=11, users=10, rps=38.0, failures_per_s=0.0, p95_ms=120.0),
            Sample(run=run, t=11.4, db_pss=250 * MIB, db_pss_anon=30 * MIB),
            Sample(run=run, t=12, users=10, rps=41.5, failures_per_s=2.5, p95_ms=412.0),
        ]
    )
    return run


def test_the_live_part_of_a_run_under_way_shows_its_latest_figures(
    client, engineer, running, django_assert_num_queries
):
    client.force_login(engineer)
    url = reverse("perfruns:run_progress", args=[running.pk])

    # session, user, groups (read once for the role and the cancel button), the run with
    # its scenario, its latest Locust sample, its latest memory sample
    with django_assert_num_queries(6):
        response = client.get(url)

    html = response.content.decode()
    figures = html[html.index('id="live-figures"') :]
    assert "412\xa0ms" in figures and "41.5\xa0req/s" in figures and "2.5" in figures
    assert "250\xa0MiB" in figures and "At 12 s of the load" in html
    assert 'value="40"' in html


def test_the_live_part_of_a_finished_run_shows_no_live_figures(client, viewer, measured):
    Sample.objects.create(run=measured, t=1, users=10, rps=40.0, p95_ms=400.0)
    client.force_login(viewer)

    html = client.get(reverse("perfruns:run_progress", args=[measured.pk])).content.decode()

    assert 'id="live-figures"' not in html and 'data-active="false"' in html


def test_the_live_part_refuses_a_post_and_someone_without_a_role(client, viewer, nobody, running):
    url = reverse("perfruns:run_progress", args=[running.pk])
    client.force_login(viewer)
    assert client.post(url).status_code == 405
    client.force_login(nobody)
    assert client.get(url).status_code == 403
