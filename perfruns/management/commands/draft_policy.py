from __future__ import annotations

import os

import psycopg
from django.core.management.base import BaseCommand, CommandError

from perfruns.masking.draft import draft_policy
from perfruns.masking.schema import introspect
from perfruns.models import DumpSource, SourceConfigError
from perfruns.pipeline.pgtools import redact


class Command(BaseCommand):
    help = "Print a starter masking policy of a source for a person to review."

    def add_arguments(self, parser) -> None:
        parser.add_argument("source", help="the dump source's name")
        parser.add_argument(
            "--dsn-env",
            metavar="VAR",
            help="read the DSN from this environment variable: no dump source needs to exist",
        )
        parser.add_argument("--output", "-o", help="file to write instead of standard output")

    def handle(self, *args, **options) -> None:
        name, origin = options["source"], f"${options['dsn_env']}"
        try:
            if options["dsn_env"]:
                dsn = os.environ.get(options["dsn_env"], "").strip()
                if not dsn:
                    raise CommandError(
                        f"The environment variable {options['dsn_env']} is not set or empty: "
                        "set it to the source's DSN."
                    )
            else:
                try:
                    source = DumpSource.objects.get(name=name)
                except DumpSource.DoesNotExist:
                    raise CommandError(
                        f"No dump source named {name}: add it, or give --dsn-env VAR."
                    ) from None
                origin = source.dsn_origin
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
                f"The DSN of source {name} (from {origin}) is not a valid PostgreSQL DSN."
            ) from None
        except psycopg.Error as exc:
            raise CommandError(f"Cannot read source {name}: {redact(str(exc).strip())}") from None
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8") as fh:
                fh.write(text)
            self.stdout.write(f"Wrote {options['output']}: review every line before using it.")
        else:
            self.stdout.write(text, ending="")
