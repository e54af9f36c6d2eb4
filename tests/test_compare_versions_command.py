"""manage.py compare_versions: what CI asks ("is this build slower?"), its refusals and
its exit statuses. (The three real runs: tests/test_perfrun_pipeline.py.)"""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from perfruns.management.commands.compare_versions import Command
from perfruns.models import VersionComparison

pytestmark = pytest.mark.scenario(
    start_command="bin/serve --release {version}", default_version="1.0"
)


def test_it_queues_the_comparison_and_prints_its_url(scenario, django_capture_on_commit_callbacks):
    out = io.StringIO()

    with django_capture_on_commit_callbacks() as callbacks:
        call_command("compare_versions", "checkout", "1.0", "2.0", stdout=out)

    comparison = VersionComparison.objects.get()
    assert out.getvalue().strip().endswith(comparison.get_absolute_url())
    assert (comparison.version_a, comparison.version_b, comparison.status) == (
        "1.0", "2.0", "queued",
    )  # fmt: skip
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope", "1", "2"), "No scenario named nope."),
        (("checkout", "1.0", "2.0 && reboot"), "The version B '2.0 && reboot' is not a version"),
    ],
)
def test_a_bad_request_is_named_and_nothing_is_queued(scenario, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("compare_versions", *args)
    assert not VersionComparison.objects.exists()


def finished(scenario, **fields) -> VersionComparison:
    return VersionComparison.objects.create(
        scenario=scenario, version_a="1.0", version_b="2.0", **fields
    )


@pytest.mark.parametrize(
    ("fields", "code", "printed"),
    [
        ({"status": "done", "verdict": "worse", "result": {"rows": [
            {"verdict": "worse", "endpoint": "/report", "metric": "p95", "change_rel": 0.5,
             "change_rel_a1": 0.5}]}}, 1, "worse  /report p95 +50.0 %"),
        ({"status": "done", "verdict": "same", "result": {"rows": []}}, 0, "B is the same"),
        ({"status": "done", "verdict": "inconclusive", "result": {}}, 0, "inconclusive"),
        ({"status": "done", "verdict": "drift", "result": {}}, 3, "A drifted: no verdict"),
        ({"status": "done", "verdict": "invalid", "result": {}}, 3, "not comparable"),
        ({"status": "error", "error": "Run B (#3, version 2.0) broke: x"}, 2, ""),
    ],
)  # fmt: skip
def test_the_exit_status_says_whether_b_is_worse(scenario, fields, code, printed):
    out, err = io.StringIO(), io.StringIO()
    command = Command(stdout=out, stderr=err)

    with pytest.raises(SystemExit) as exited:
        command._report(finished(scenario, **fields))

    assert exited.value.code == code
    assert printed in out.getvalue()
    if fields["status"] == "error":
        assert "Run B (#3, version 2.0) broke: x" in err.getvalue()
