"""Create the database DATABASE_URL names when it does not exist yet.

Runs before migrations, so it connects to the server's maintenance database
itself instead of through Django's connection.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from psycopg import sql


class Command(BaseCommand):
    help = "Create the application database if it is missing."
    requires_system_checks: list[str] = []

    def handle(self, *args, **options) -> None:
        db = settings.DATABASES["default"]
        params: dict[str, Any] = {
            "host": db.get("HOST") or None,
            "port": db.get("PORT") or None,
            "user": db.get("USER") or None,
            "password": db.get("PASSWORD") or None,
            "connect_timeout": 5,
        }
        name = db["NAME"]
        try:
            with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", [name]
                ).fetchone()
                if exists:
                    self.stdout.write(f"Database {name} exists.")
                    return
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            # The message names host and database, never the password.
            raise CommandError(
                f"Cannot create database {name} on {params['host']}:{params['port']}: "
                f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
        self.stdout.write(f"Created database {name}.")
