from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser
from django.db import transaction

from perfruns.management.waiting import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_NO_VERDICT,
    EXIT_PASSED,
    StartCommand,
    refused,
    scenario_named,
    wait_until_ended,
)
from perfruns.models import ComparisonStatus, VersionComparison
from perfruns.services import common, version_comparisons

# Exit statuses CI pipelines read: B not worse (same, better or inconclusive), B worse,
# no verdict (invalid runs, or A drifted).
EXIT = {
    "same": EXIT_PASSED,
    "better": EXIT_PASSED,
    "inconclusive": EXIT_PASSED,
    "worse": EXIT_FAILED,
    "drift": EXIT_NO_VERDICT,
    "invalid": EXIT_NO_VERDICT,
}


class Command(StartCommand):
    help = (
        "Compare two versions of a scenario's target as A, B, A back to back (the start "
        "command's {version} takes each); print the URL and, with --wait or --here, the "
        "verdict. Exit status: 0 B not worse, 1 B worse, 2 error (refused, broken or "
        "cancelled), 3 no verdict (no worker took it, invalid runs, or the environment "
        "drifted)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("scenario", help="the scenario's name")
        parser.add_argument("version_a", help="the reference version (run first and last)")
        parser.add_argument("version_b", help="the version under test")
        parser.add_argument(
            "--wait", action="store_true", help="wait for a Celery worker to finish it"
        )
        parser.add_argument(
            "--here",
            action="store_true",
            help="make the three runs in this process instead of a Celery worker",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.refuse_django_version(options)
        scenario = scenario_named(options["scenario"])
        try:
            with transaction.atomic():
                comparison = version_comparisons.version_comparison_request(
                    scenario=scenario,
                    version_a=options["version_a"],
                    version_b=options["version_b"],
                    actor=None,
                )
                if not options["here"]:
                    version_comparisons.version_comparison_enqueue(comparison)
        except common.PipelineRefused as exc:
            raise refused(str(exc)) from None
        self.stdout.write(f"{settings.SITE_URL}{comparison.get_absolute_url()}")
        if options["here"]:
            comparison = version_comparisons.version_comparison_run(comparison_id=comparison.pk)
        elif options["wait"]:
            comparison = wait_until_ended(
                comparison,
                noun="comparison",
                # Three runs back to back, and a wait for the environment before each.
                budget_s=4 * settings.PIPELINE_TIMEOUT + 300,
                cancel=lambda: version_comparisons.version_comparison_cancel(comparison=comparison),
            )
        else:
            return
        self._report(comparison)

    def _report(self, comparison: VersionComparison) -> None:
        if comparison.status != ComparisonStatus.DONE:
            self.stderr.write(
                f"{comparison.get_status_display()}: {comparison.error or 'no verdict'}"
            )
            raise SystemExit(EXIT_ERROR)
        self.stdout.write(
            f"{comparison.get_verdict_display()} ({comparison.version_b} against "
            f"{comparison.version_a})"
        )
        for row in comparison.result.get("rows", []):
            if row["verdict"] in ("worse", "better", "drift"):
                change = row["change_rel_a1"]
                shown = f" {100 * change:+.1f} %" if change is not None else ""
                self.stdout.write(f"  {row['verdict']:<6} {row['endpoint']} {row['metric']}{shown}")
        for reason in comparison.result.get("reasons", []):
            self.stderr.write(f"Invalid: {reason}")
        raise SystemExit(EXIT.get(comparison.verdict, EXIT_NO_VERDICT))
