from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from postmortems import markdown
from postmortems.models import PostMortem


class Command(BaseCommand):
    help = "Print a post-mortem as Markdown (or write it to --output)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("id", type=int)
        parser.add_argument("--language", choices=sorted(markdown.HEADINGS), default="en")
        parser.add_argument("--output", "-o", help="file to write instead of standard output")

    def handle(self, *args, **options) -> None:
        try:
            pm = PostMortem.objects.get(pk=options["id"])
        except PostMortem.DoesNotExist:
            raise CommandError(f"No post-mortem with id {options['id']}.") from None
        text = markdown.export(pm, language=options["language"])
        if options["output"]:
            try:
                with open(options["output"], "w", encoding="utf-8") as fh:
                    fh.write(text)
            except OSError as exc:
                # A message, not a traceback, like import_postmortem's unreadable file.
                raise CommandError(f"Cannot write {options['output']}: {exc.strerror}.") from None
        else:
            self.stdout.write(text, ending="")
