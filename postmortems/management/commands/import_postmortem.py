from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from postmortems import services
from postmortems.markdown import MarkdownError


class Command(BaseCommand):
    help = "Create a post-mortem from a wiki Markdown file; prints its id and URL."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="the Markdown file")
        parser.add_argument("--title", help="the title, when the file's first heading has none")

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
        try:
            result = services.postmortem_import(data=data, actor=None, title=options["title"])
        except MarkdownError as exc:
            where = f"{path}:{exc.line}: " if exc.line else f"{path}: "
            raise CommandError(where + exc.message + " Nothing was saved.") from None
        for warning in result.warnings:
            self.stderr.write(f"warning: {warning}")
        pm = result.postmortem
        self.stdout.write(f"{pm.pk} {settings.SITE_URL}{pm.get_absolute_url()}")
