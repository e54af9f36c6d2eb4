"""perfrun --wait and compare_versions --wait: no worker takes what they queued, so they
cancel it and say so, instead of waiting for ever."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from perfruns.management import waiting
from perfruns.models import PerfRun, VersionComparison

pytestmark = pytest.mark.scenario(
    start_command="bin/serve --release {version}", default_version="1.0"
)


@pytest.fixture(autouse=True)
def impatient(monkeypatch):
    """No worker consumes the broker here: give up on a queued job at once."""
    monkeypatch.setattr(waiting, "QUEUED_PATIENCE", 0)


def test_a_run_no_worker_takes_is_cancelled_and_named(scenario):
    # No worker consumes the broker here: the run stays queued.
    with pytest.raises(CommandError, match=r"No Celery worker took run #\d+ within 0 s") as no:
        call_command("perfrun", "checkout", "--wait")

    assert no.value.returncode == 3  # no verdict, not a failed run

    assert PerfRun.objects.get().status == "cancelled"


def test_a_comparison_no_worker_takes_is_cancelled_and_named(scenario):
    with pytest.raises(CommandError, match=r"No Celery worker took comparison #\d+ within 0 s"):
        call_command("compare_versions", "checkout", "1.0", "2.0", "--wait")

    assert VersionComparison.objects.get().status == "cancelled"


def test_what_has_ended_is_returned_at_once(scenario):
    run = PerfRun.objects.create(
        scenario=scenario, environment=scenario.environment, trigger="command", status="passed"
    )

    assert waiting.wait_until_ended(run, noun="run", budget_s=0, cancel=pytest.fail) == run
