from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from perfruns.services import weekly_summary


class Command(BaseCommand):
    help = (
        "E-mail the managers the summary of a week (what the Monday beat job does for the "
        "week just ended); a summary already sent for that week is not sent again."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="list the e-mails, send none")
        parser.add_argument(
            "--week",
            help="an ISO week (2026-W12) or its first day (2026-03-16); the last full week "
            "by default",
        )

    def handle(self, *args, **options) -> None:
        today = timezone.localdate()
        if options["week"]:
            try:
                period = weekly_summary.period_parse(options["week"])
            except ValueError as exc:
                raise CommandError(f"--week: {exc}") from None
        else:
            period = weekly_summary.period_previous_week(today)
        report = weekly_summary.weekly_summary_send(
            period=period, today=today, dry_run=options["dry_run"]
        )
        for line in report.lines:
            self.stdout.write(line)
        verb = "would send" if options["dry_run"] else "sent"
        count = len(report.lines) if options["dry_run"] else report.sent
        self.stdout.write(f"{verb} {count} summary(ies) for {period.label}")
