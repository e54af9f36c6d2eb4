from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from postmortems import markdown, services
from postmortems.markdown import MarkdownError


class Command(BaseCommand):
    help = "Create a post-mortem from a wiki Markdown file; prints its id and URL."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="the Markdown file")
        parser.add_argument("--title", help="the title, when the file's first heading has none")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="print what would be imported, and every guess, without saving anything",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="refuse the file on any guess (a typo in a status, a missing title...)",
        )

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
        read = {"data": data, "title": options["title"], "file_name": path.name}
        try:
            if options["dry_run"]:
                parsed = services.postmortem_read(**read, strict=options["strict"])
                self.stdout.write(markdown.describe(parsed))
                return
            result = services.postmortem_import(actor=None, strict=options["strict"], **read)
        except MarkdownError as exc:
            if len(exc.problems) > 1:
                lines = [
                    f"{path}:{p.line}: {p.message}" if p.line else f"{path}: {p.message}"
                    for p in exc.problems
                ]
                raise CommandError("\n".join(lines) + "\nNothing was saved.") from None
            where = f"{path}:{exc.line}: " if exc.line else f"{path}: "
            raise CommandError(where + exc.message + " Nothing was saved.") from None
        for warning in result.warnings:
            self.stderr.write(f"warning: {warning}")
        pm = result.postmortem
        self.stdout.write(f"{pm.pk} {settings.SITE_URL}{pm.get_absolute_url()}")
