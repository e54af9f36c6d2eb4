from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from perfruns.models import DumpSource, SnapshotStatus
from perfruns.services import common, snapshots


class Command(BaseCommand):
    help = "Take an anonymized snapshot of a source now; prints its file and sha256."

    def add_arguments(self, parser) -> None:
        parser.add_argument("source", help="the dump source's name")

    def handle(self, *args, **options) -> None:
        try:
            source = DumpSource.objects.get(name=options["source"])
        except DumpSource.DoesNotExist:
            raise CommandError(f"No dump source named {options['source']}.") from None
        try:
            snapshot = snapshots.snapshot_request(source=source, actor=None)
        except common.PipelineRefused as exc:
            raise CommandError(str(exc)) from None
        snapshot = snapshots.snapshot_run(snapshot_id=snapshot.pk)
        if snapshot.status == SnapshotStatus.READY:
            self.stdout.write(f"{snapshot.file_path}\n{snapshot.sha256}")
            return
        report = snapshot.report.get("text", "") if isinstance(snapshot.report, dict) else ""
        message = f"Snapshot #{snapshot.pk} of {source.name} {snapshot.status}: {snapshot.error}"
        if report:
            message += "\n" + report
        raise CommandError(message)
