"""An engineer writes a post-mortem in a real browser, from login to the Markdown download.

Playwright drives Debian's Chromium (`make test` installs it), never a browser
Playwright downloaded itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connections
from playwright.sync_api import Browser, Page, expect, sync_playwright

from postmortems.models import Action, PostMortem

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOT = Path("/tmp/fixproof-detail.png")
TITLE = "Checkout pool exhausted at lunch"

pytestmark = [
    pytest.mark.browser,
    # The live server reads what the test wrote, so no wrapping transaction; the
    # serialized rollback brings back the role groups that the flush removes.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture(scope="module", autouse=True)
def migrated_data_back(django_db_setup, django_db_blocker) -> Iterator[None]:
    yield
    # A transactional test ends with a flush that empties every table, the role
    # groups of migration 0002 included, and pytest-django runs the tests that
    # only reach the database through getfixturevalue() after it: put back what
    # the migrations wrote, as serialized when the test database was created.
    with django_db_blocker.unblock():
        for connection in connections.all():
            contents = getattr(connection, "_test_serialized_contents", None)
            if contents:
                connection.creation.deserialize_db_from_string(contents)


@pytest.fixture
def browser(monkeypatch) -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: run `make chromium` "
            "(or `sudo apt-get install chromium`).",
            pytrace=False,
        )
    # Playwright's sync API runs an event loop in this thread; Django would
    # otherwise refuse the ORM calls the test makes around it.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()
            # Inside this block the ORM runs in Playwright's context, so on a
            # connection of its own that pytest-django never sees: left open,
            # it stops the test database from being dropped.
            connections.close_all()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(
        locale="en-US", viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()


def test_an_engineer_writes_publishes_and_downloads_a_postmortem(
    live_server, page: Page, engineer: User
):
    # Asking for the form first goes through the login page and back.
    page.goto(f"{live_server.url}/postmortems/new/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_label("Username").fill("emma")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="New post-mortem")).to_be_visible()

    page.locator("#id_title").fill(TITLE)
    page.locator("#id_severity").select_option("sev2")
    page.locator("#id_summary").fill("The checkout API returned 502s for 38 minutes.")
    page.locator("#id_impacts-0-label").fill("failed requests")
    page.locator("#id_impacts-0-value").fill("270")
    page.locator("#id_causes-0-category").select_option("database")
    page.locator("#id_causes-0-description").fill("A slow join on order_events held connections.")
    page.locator("#id_actions-0-kind").select_option("detect")
    page.locator("#id_actions-0-title").fill("Weekly load test of checkout")
    page.locator("#id_actions-0-status").select_option("todo")

    # The second action row only exists once "Add an action" has cloned it.
    expect(page.locator("#id_actions-1-title")).to_have_count(0)
    page.get_by_role("button", name="Add an action").click()
    expect(page.locator("#id_actions-TOTAL_FORMS")).to_have_value("2")
    page.locator("#id_actions-1-kind").select_option("prevent")
    page.locator("#id_actions-1-title").fill("Index order_events")
    page.locator("#id_actions-1-status").select_option("in_progress")
    page.get_by_role("button", name="Save").click()

    expect(page.get_by_role("status")).to_have_text("Post-mortem saved.")
    expect(page.get_by_role("heading", level=1)).to_have_text(TITLE)
    expect(page.locator(".action")).to_have_count(2)

    page.get_by_role("button", name="Send to review").click()
    expect(page.get_by_role("status")).to_have_text("Status changed.")
    expect(page.locator(".heading-row .status-in_review")).to_have_text("In review")
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_role("status")).to_have_text("Status changed.")
    expect(page.locator(".heading-row .status-published")).to_have_text("Published")
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download Markdown").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".md")
    text = Path(download.path()).read_text(encoding="utf-8")

    assert f"## POST MORTEM: {TITLE}" in text
    assert "### Status\nPublished" in text
    first, second = text.split("**Action 1 (detect): Weekly load test of checkout**")[1].split(
        "**Action 2 (prevent): Index order_events**"
    )
    assert "\nStatus: to do" in first
    assert "\nStatus: in progress" in second

    # Read back from the database, not from anything the pages showed.
    pm = PostMortem.objects.get(title=TITLE)
    assert pm.status == "published"
    assert pm.published_at is not None
    assert pm.created_by == engineer
    assert list(pm.actions.values_list("number", "kind", "title", "status")) == [
        (1, "detect", "Weekly load test of checkout", "todo"),
        (2, "prevent", "Index order_events", "in_progress"),
    ]
    assert pm.impacts.count() == 1
    assert pm.root_causes.count() == 1
    assert Action.objects.filter(postmortem=pm).count() == 2


def test_an_engineer_watches_a_run_finish_and_reads_its_charts(
    live_server, page: Page, engineer: User
):
    from perfruns.models import PerfRun, ReviewEnvironment, RunStatus, RunTrigger, Sample
    from perfruns.services import runs, scenarios

    env = ReviewEnvironment.objects.create(name="review")
    scenario, _ = scenarios.scenario_save(
        name="checkout",
        values={
            "environment": env,
            "locustfile_path": "examples/demo/locustfile.py",
            "target_url": "http://127.0.0.1:18765",
        },
    )
    run = runs.perfrun_request(scenario=scenario, trigger=RunTrigger.MANUAL, actor=engineer)
    runs.perfrun_claim(run_id=run.pk)
    PerfRun.objects.filter(pk=run.pk).update(stage="load", progress=45)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{live_server.url}/perf/runs/{run.pk}/")  # through the login page
    page.get_by_label("Username").fill("emma")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#run-live progress")).to_have_attribute("value", "45")
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()

    # The worker finishes: the page notices on its next poll and shows the results.
    Sample.objects.bulk_create(
        [Sample(run=run, t=t, users=10, rps=40.0 + t, failures_per_s=0.0, p50_ms=10.0,
                p95_ms=30.0 + t)
         for t in range(30)]
        + [Sample(run=run, t=t + 0.5, db_pss=(200 + t) * 2**20, target_rss=80 * 2**20)
           for t in range(30)]
    )  # fmt: skip
    PerfRun.objects.filter(pk=run.pk).update(
        status=RunStatus.PASSED,
        stage="",
        progress=100,
        summary={"requests": 1200, "failures": 0, "failure_rate": 0.0, "rps": 40.0,
                 "p50_ms": 10.0, "p95_ms": 59.0, "p99_ms": 80.0, "db_ram_peak": 229 * 2**20,
                 "db_ram_peak_anon": 20 * 2**20},
        verdict=[{"check": "p95_ms", "limit": 500, "value": 59.0, "passed": True}],
    )  # fmt: skip

    expect(page.get_by_role("heading", name="Verdict")).to_be_visible(timeout=20_000)
    expect(page.locator("#run-live .badge")).to_have_text("Passed")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    # Four charts on one time axis: latency, users and RPS, failures, memory.
    expect(page.locator("#charts .chart")).to_have_count(4)
    expect(page.locator("#charts canvas")).to_have_count(4)
    assert errors == []


def test_the_compare_page_overlays_the_two_runs(live_server, page: Page, engineer: User):
    from perfruns.models import PerfRun, ReviewEnvironment, RunStatus, RunTrigger, Sample
    from perfruns.services import scenarios

    env = ReviewEnvironment.objects.create(name="review")
    scenario, _ = scenarios.scenario_save(
        name="checkout",
        values={
            "environment": env,
            "locustfile_path": "examples/demo/locustfile.py",
            "target_url": "http://127.0.0.1:18765",
        },
    )
    runs = []
    for level in (100.0, 150.0):
        run = PerfRun.objects.create(
            scenario=scenario, environment=env, trigger=RunTrigger.MANUAL,
            status=RunStatus.PASSED,
        )  # fmt: skip
        Sample.objects.bulk_create(
            [Sample(run=run, t=t, users=10, rps=40.0, p95_ms=level + t % 5) for t in range(30)]
            + [Sample(run=run, t=t + 0.5, db_pss=int(level) * 2**20) for t in range(30)]
        )
        runs.append(run)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{live_server.url}/perf/runs/{runs[0].pk}/vs/{runs[1].pk}/")
    page.get_by_label("Username").fill("emma")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()

    # The runs kept no Locust files here: the verdicts cannot be computed, the charts can.
    expect(page.locator(".error")).to_contain_text("has no Locust history")
    expect(page.locator("#overlay canvas")).to_have_count(3)
    expect(page.locator("#overlay .u-legend").first).to_contain_text(f"#{runs[1].pk}")
    assert errors == []


def test_the_scenario_page_charts_its_series_and_marks_where_it_changed(
    live_server, page: Page, engineer: User
):
    from perfruns.models import PerfRun, ReviewEnvironment, RunStatus, RunTrigger
    from perfruns.services import scenarios, trends

    env = ReviewEnvironment.objects.create(name="review")
    scenario, _ = scenarios.scenario_save(
        name="checkout",
        values={
            "environment": env,
            "locustfile_path": "examples/demo/locustfile.py",
            "target_url": "http://127.0.0.1:18765",
        },
    )
    runs = [
        PerfRun.objects.create(
            scenario=scenario, environment=env, trigger=RunTrigger.SCHEDULE,
            status=RunStatus.PASSED,
            summary={"p95_ms": (100.0 if n < 10 else 160.0) + n % 3, "failure_rate": 0.0,
                     "db_ram_peak": 300 * 2**20 + n % 2},
        )
        for n in range(16)
    ]  # fmt: skip
    trends.regression_incidents_open(scenario=scenario)  # what the worker does after a run
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{live_server.url}/perf/scenarios/checkout/")
    page.get_by_label("Username").fill("emma")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()

    expect(page.locator("#trend canvas")).to_have_count(3)  # p95, failure rate, DB RAM
    p95 = page.locator('#trend [data-metric="p95_ms"]')
    expect(p95.locator("a.verdict-worse")).to_have_text(f"#{runs[10].pk}")
    expect(page.locator('#trend [data-metric="failure_rate"] a')).to_have_count(0)
    assert errors == []


def test_a_manager_filters_one_teams_overdue_actions_and_gives_one_a_new_owner(
    live_server, page: Page, manager: User, engineer: User, other_engineer: User
):
    import datetime as dt

    from django.utils import timezone

    from postmortems import services
    from postmortems.models import Team
    from tests.conftest import make_content

    platform = Team.objects.create(name="Platform", slug="platform")
    search = Team.objects.create(name="Search", slug="search")
    late = timezone.localdate() - dt.timedelta(days=4)
    ours = services.postmortem_save(
        actor=engineer, content=make_content("Pool exhausted", team=platform)
    )
    theirs = services.postmortem_save(
        actor=engineer, content=make_content("Indexer leak", team=search)
    )
    Action.objects.filter(postmortem__in=[ours, theirs]).update(owner=engineer, due_date=late)
    Action.objects.filter(postmortem=ours, number=2).update(due_date=None)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("marc")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    expect(page.locator("#monthly-charts canvas")).to_have_count(3)

    page.locator("#id_team").select_option(label="Platform")
    page.locator("#id_state").select_option("overdue")
    page.get_by_role("button", name="Show").click()
    page.get_by_role("link", name="List these actions").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Actions")
    rows = page.locator("table.actions tbody tr")
    expect(rows).to_have_count(1)  # Platform's overdue action; not Search's, not the undated
    expect(rows.first).to_contain_text("Weekly load test")

    rows.first.get_by_label("Owner").select_option(label="Karim Haddad")
    rows.first.get_by_role("button", name="Save").click()

    expect(page.get_by_role("status")).to_have_text("Action 1 updated.")
    expect(page.locator("#id_team")).to_have_value(str(platform.pk))  # the filters kept
    assert Action.objects.get(postmortem=ours, number=1).owner == other_engineer
    assert Action.objects.get(postmortem=theirs, number=1).owner == engineer
    assert errors == []
