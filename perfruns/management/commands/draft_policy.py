from __future__ import annotations

import psycopg
from django.core.management.base import BaseCommand, CommandError

from perfruns.masking.pii import draft_policy
from perfruns.masking.schema import introspect
from perfruns.models import DumpSource, SourceConfigError
from perfruns.pipeline.pgtools import redact


class Command(BaseCommand):
    help = "Print a starter masking policy of a source for a person to review."

    def add_arguments(self, parser) -> None:
        parser.add_argument("source", help="the dump source's name")
        parser.add_argument("--output", "-o", help="file to write instead of standard output")

    def handle(self, *args, **options) -> None:
        try:
            source = DumpSource.objects.get(name=options["source"])
        except DumpSource.DoesNotExist:
            raise CommandError(f"No dump source named {options['source']}.") from None
        try:
            dsn = source.read_dsn()
            with psycopg.connect(dsn, connect_timeout=10) as conn:
                conn.read_only = True
                text = draft_policy(conn, schema=introspect(conn))
        except SourceConfigError as exc:
            raise CommandError(str(exc)) from None
        except psycopg.ProgrammingError:
            # libpq quotes a DSN it cannot parse, password and all: say which
            # variable or file to fix, never what it holds.
            raise CommandError(
                f"The DSN of source {source.name} (from {source.dsn_origin}) is not a valid "
                "PostgreSQL DSN."
            ) from None
        except psycopg.Error as exc:
            raise CommandError(
                f"Cannot read source {source.name}: {redact(str(exc).strip())}"
            ) from None
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8") as fh:
                fh.write(text)
            self.stdout.write(f"Wrote {options['output']}: review every line before using it.")
        else:
            self.stdout.write(text, ending="")
