from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from perfruns.management.waiting import scenario_named, wait_until_ended
from perfruns.models import PerfRun, RunStatus, RunTrigger
from perfruns.services import common, runs

# Exit statuses CI pipelines read: passed, failed (thresholds), error (the pipeline broke).
EXIT: dict[str, int] = {RunStatus.PASSED: 0, RunStatus.FAILED: 1}


class Command(BaseCommand):
    help = (
        "Start a perf run of a scenario; print its URL and, with --wait, its verdict. "
        "Exit status: 0 passed, 1 failed, 2 error (or cancelled, or invalid)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("scenario", help="the scenario's name")
        parser.add_argument(
            "--wait", action="store_true", help="wait for a Celery worker to finish the run"
        )
        parser.add_argument(
            "--here",
            action="store_true",
            help="run it in this process instead of a Celery worker (waits too)",
        )

    def handle(self, *args, **options) -> None:
        scenario = scenario_named(options["scenario"])
        try:
            with transaction.atomic():
                run = runs.perfrun_request(
                    scenario=scenario, trigger=RunTrigger.COMMAND, actor=None
                )
                if not options["here"]:
                    runs.perfrun_enqueue(run)
        except common.PipelineRefused as exc:
            raise CommandError(str(exc)) from None
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
        self.stdout.write(f"{run.get_status_display()}: " + ", ".join(figures))
        for line in run.verdict:
            mark = "ok " if line["passed"] else "FAIL"
            self.stdout.write(f"  {mark} {line['check']}: {line['value']} (limit {line['limit']})")
        if run.invalid_reason:
            self.stderr.write(f"Invalid: {run.invalid_reason}")
            raise SystemExit(2)
        if run.error:
            self.stderr.write(run.error)
        raise SystemExit(EXIT.get(run.status, 2))
