from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from perfruns.masking.policy import PolicyError
from perfruns.services.common import PipelineRefused
from perfruns.services.sources import source_save


class Command(BaseCommand):
    help = "Create or update a dump source: where its DSN comes from and its masking policy."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        origin = parser.add_mutually_exclusive_group(required=True)
        origin.add_argument("--dsn-env", default="", help="variable holding the source's DSN")
        origin.add_argument("--dsn-file", default="", help="file holding the source's DSN")
        parser.add_argument(
            "--policy",
            help="the masking policy (YAML file); without it, a new source starts with none "
            "(draft one with draft_policy) and an existing one keeps its own",
        )
        parser.add_argument("--retention", type=int, help="snapshots to keep")

    def handle(self, *args, **options) -> None:
        path = Path(options["policy"]) if options["policy"] else None
        text = None
        if path is not None:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"Cannot read the policy {path}: {exc}") from None
        try:
            source, created = source_save(
                name=options["name"],
                dsn_env=options["dsn_env"],
                dsn_file=options["dsn_file"],
                policy_yaml=text,
                retention=options["retention"],
            )
        except PolicyError as exc:
            raise CommandError(f"{path or 'policy'}: {exc}") from None
        except PipelineRefused as exc:
            raise CommandError(str(exc)) from None
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} source {source.name} (policy {source.policy_hash[:12]}).")
