from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from perfruns.models import DumpSource, EnvironmentKind
from perfruns.services import common, environments


class Command(BaseCommand):
    help = "Create or update a review environment."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument("--kind", choices=EnvironmentKind.values, default="managed")
        parser.add_argument("--dsn-env", default="", help="existing server: its admin DSN variable")
        parser.add_argument("--database", default="review", help="the restored database's name")
        parser.add_argument("--source", help="dump source whose latest snapshot a restore takes")
        parser.add_argument("--shared-buffers", default="128MB")
        parser.add_argument("--work-mem", default="4MB")
        parser.add_argument("--max-connections", type=int, default=100)

    def handle(self, *args, **options) -> None:
        source = None
        if options["source"]:
            source = DumpSource.objects.filter(name=options["source"]).first()
            if source is None:
                raise CommandError(f"No dump source named {options['source']}.")
        try:
            env, created = environments.environment_save(
                name=options["name"],
                kind=options["kind"],
                dsn_env=options["dsn_env"],
                database_name=options["database"],
                shared_buffers=options["shared_buffers"],
                work_mem=options["work_mem"],
                max_connections=options["max_connections"],
                source=source,
            )
        except common.PipelineRefused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{'Created' if created else 'Updated'} review environment {env.name}.")
