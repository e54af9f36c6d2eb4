"""Create the first administrator once.

The password comes from FIXPROOF_ADMIN_PASSWORD, or is generated and shown this one time:
printed, or with --credentials-file written to that file (readable only by its owner), which
`make run` prints at the end of its set-up. It is never written to a log.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from fixproof.credentials import credentials_write


class Command(BaseCommand):
    help = "Create the administrator account if there is none."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--credentials-file",
            type=Path,
            help="Write a generated password to this file (mode 0600) instead of printing it.",
        )

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        username = os.environ.get("FIXPROOF_ADMIN_USER", "admin")
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"Administrator '{username}' exists (password unchanged).")
            return
        password = os.environ.get("FIXPROOF_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser(
            username=username, email=os.environ.get("FIXPROOF_ADMIN_EMAIL", ""), password=password
        )
        if os.environ.get("FIXPROOF_ADMIN_PASSWORD"):
            self.stdout.write(f"Created administrator '{username}' with FIXPROOF_ADMIN_PASSWORD.")
        elif options.get("credentials_file"):
            credentials_write(options["credentials_file"], {username: (password, "administrator")})
            self.stdout.write(
                f"Created administrator '{username}': its password is shown at the end."
            )
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Created administrator '{username}' with password: {password}\n"
                    "It is shown only this once: note it now."
                )
            )
