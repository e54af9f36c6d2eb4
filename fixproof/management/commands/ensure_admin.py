"""Create the first administrator once.

The password comes from FIXPROOF_ADMIN_PASSWORD, or is generated and printed
this one time (it is never written to a log or a file).
"""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the administrator account if there is none."

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
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Created administrator '{username}' with password: {password}\n"
                    "It is shown only this once: note it now."
                )
            )
