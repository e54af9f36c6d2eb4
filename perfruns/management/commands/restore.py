from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from perfruns.models import RestoreStatus, ReviewEnvironment, Snapshot
from perfruns.services import common, restores


class Command(BaseCommand):
    help = "Restore a snapshot (by default the latest ready one) into a review environment."

    def add_arguments(self, parser) -> None:
        parser.add_argument("environment", help="the review environment's name")
        parser.add_argument("--snapshot", type=int, help="the snapshot's id")

    def handle(self, *args, **options) -> None:
        try:
            env = ReviewEnvironment.objects.get(name=options["environment"])
        except ReviewEnvironment.DoesNotExist:
            raise CommandError(f"No review environment named {options['environment']}.") from None
        snapshot = None
        if options["snapshot"] is not None:
            try:
                snapshot = Snapshot.objects.get(pk=options["snapshot"])
            except Snapshot.DoesNotExist:
                raise CommandError(f"No snapshot #{options['snapshot']}.") from None
        try:
            restore = restores.restore_request(environment=env, snapshot=snapshot, actor=None)
        except common.PipelineRefused as exc:
            raise CommandError(str(exc)) from None
        restore = restores.restore_run(restore_id=restore.pk)
        if restore.status != RestoreStatus.DONE:
            raise CommandError(f"Restore into {env.name} failed: {restore.error}")
        env.refresh_from_db()
        self.stdout.write(
            f"Restored snapshot #{restore.snapshot_id} into {env.name} "
            f"(database {env.database_name}, {restore.tables_total} tables)."
        )
