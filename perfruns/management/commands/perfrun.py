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
from perfruns.models import PerfRun, RunStatus, RunTrigger
from perfruns.services import common, runs

EXIT: dict[str, int] = {RunStatus.PASSED: EXIT_PASSED, RunStatus.FAILED: EXIT_FAILED}


class Command(StartCommand):
    help = (
        "Start a perf run of a scenario; print its URL and, with --wait, its verdict. "
        "Exit status: 0 passed, 1 failed (a threshold or a regression), 2 error (refused, "
        "broken or cancelled), 3 no verdict (no worker took it, or its figures are invalid)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("scenario", help="the scenario's name")
        parser.add_argument(
            "--app-version",
            metavar="VERSION",
            help="the version of the application to run: what {version} stands for in the "
            "scenario's start command (default: its version of the weekly runs)",
        )
        parser.add_argument(
            "--wait", action="store_true", help="wait for a Celery worker to finish the run"
        )
        parser.add_argument(
            "--here",
            action="store_true",
            help="run it in this process instead of a Celery worker (waits too)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.refuse_django_version(options)
        scenario = scenario_named(options["scenario"])
        try:
            with transaction.atomic():
                run = runs.perfrun_request(
                    scenario=scenario,
                    trigger=RunTrigger.COMMAND,
                    actor=None,
                    version=options["app_version"],
                )
                if not options["here"]:
                    runs.perfrun_enqueue(run)
        except common.PipelineRefused as exc:
            raise refused(str(exc)) from None
        self.stdout.write(f"{settings.SITE_URL}{run.get_absolute_url()}")
        if options["here"]:
            run = runs.perfrun_run(run_id=run.pk)
        elif options["wait"]:
            run = wait_until_ended(
                run,
                noun="run",
                budget_s=settings.PIPELINE_TIMEOUT + 300,
                cancel=lambda: runs.perfrun_cancel(run=run),
            )
        else:
            return
        self._report(run)

    def _report(self, run: PerfRun) -> None:
        summary = run.summary
        figures = []
        if summary.get("requests") is not None:
            figures.append(f"{summary['requests']} requests")
            figures.append(f"failure rate {100 * summary.get('failure_rate', 0):.2f} %")
        if summary.get("p95_ms") is not None:
            figures.append(f"p95 {summary['p95_ms']:.0f} ms")
        if summary.get("db_ram_peak") is not None:
            figures.append(f"DB RAM peak {summary['db_ram_peak'] / 2**20:.0f} MiB")
        if run.version:
            figures.append(f"version {run.version}")
        self.stdout.write(f"{run.get_status_display()}: " + ", ".join(figures))
        for line in run.verdict:
            mark = "ok " if line["passed"] else "FAIL"
            if line.get("suspected"):
                mark = "susp"
            self.stdout.write(f"  {mark} {line['check']}: {line['value']} (limit {line['limit']})")
        if run.invalid_reason:
            self.stderr.write(f"Invalid: {run.invalid_reason}")
            raise SystemExit(EXIT_NO_VERDICT)
        if run.error:
            self.stderr.write(run.error)
        raise SystemExit(EXIT.get(run.status, EXIT_ERROR))
