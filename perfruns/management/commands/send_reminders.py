from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from perfruns.services import reminders


class Command(BaseCommand):
    help = (
        "Send today's digests of actions due soon or overdue (what the daily beat job does); "
        "a digest already sent today is not sent again."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="list the digests, send none")
        parser.add_argument("--date", help="the day to act as (YYYY-MM-DD), today by default")

    def handle(self, *args, **options) -> None:
        today = timezone.localdate()
        if options["date"]:
            try:
                today = dt.date.fromisoformat(options["date"])
            except ValueError:
                raise CommandError(
                    f"--date {options['date']!r} is not a YYYY-MM-DD date."
                ) from None
        report = reminders.reminders_send(today=today, dry_run=options["dry_run"])
        for line in report.lines:
            self.stdout.write(line)
        verb = "would send" if options["dry_run"] else "sent"
        count = len(report.lines) if options["dry_run"] else report.sent
        self.stdout.write(f"{verb} {count} digest(s) for {today.isoformat()}")
