"""manage.py perfrun: what CI asks of one run — the application's version, a refused
--version, and exit statuses that tell passed, failed, error and no verdict apart."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from perfruns.management.commands.perfrun import Command
from perfruns.models import PerfRun, RunStatus, RunTrigger

pytestmark = pytest.mark.scenario(
    start_command="bin/serve --release {version}", default_version="1.0"
)


def test_app_version_queues_a_run_of_that_version(scenario, django_capture_on_commit_callbacks):
    out = io.StringIO()

    with django_capture_on_commit_callbacks() as callbacks:
        call_command("perfrun", "checkout", "--app-version", "2.1", stdout=out)

    run = PerfRun.objects.get()
    assert (run.version, run.status) == ("2.1", "queued")
    assert out.getvalue().strip().endswith(run.get_absolute_url())
    assert len(callbacks) == 1


def test_without_a_version_a_run_takes_the_weekly_runs_version(scenario):
    call_command("perfrun", "checkout", stdout=io.StringIO())

    assert PerfRun.objects.get().version == "1.0"


@pytest.mark.parametrize("flag", [["--version"], ["--version", "bounded"]])
def test_djangos_version_flag_is_refused_as_an_error_and_runs_nothing(scenario, flag):
    with pytest.raises(CommandError, match="give --app-version VERSION") as refused:
        call_command("perfrun", "checkout", *flag)

    assert refused.value.returncode == 2
    assert not PerfRun.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope",), "No scenario named nope."),
        (("checkout", "--app-version", "2.0 && reboot"), "is not a version"),
    ],
)
def test_a_bad_request_is_an_error_and_queues_nothing(scenario, args, message):
    with pytest.raises(CommandError, match=message) as refused:
        call_command("perfrun", *args)

    assert refused.value.returncode == 2
    assert not PerfRun.objects.exists()


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"status": RunStatus.PASSED}, 0),
        ({"status": RunStatus.FAILED}, 1),
        ({"status": RunStatus.ERROR, "error": "load: Locust was killed (signal 9)"}, 2),
        ({"status": RunStatus.CANCELLED, "error": "Cancelled during the load step."}, 2),
        ({"status": RunStatus.PASSED, "invalid_reason": "Locust's CPU was saturated"}, 3),
    ],
)
def test_the_exit_status_tells_passed_failed_error_and_no_verdict_apart(scenario, fields, code):
    run = PerfRun.objects.create(
        scenario=scenario, environment=scenario.environment, trigger=RunTrigger.COMMAND, **fields
    )
    command = Command(stdout=io.StringIO(), stderr=io.StringIO())

    with pytest.raises(SystemExit) as exited:
        command._report(run)

    assert exited.value.code == code
