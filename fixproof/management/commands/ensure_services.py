"""Check that PostgreSQL and Redis answer; start them when installed but stopped.

Only a server on this machine is started (the URL's host is a loopback
address); for a remote one the command says it does not answer and stops.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from urllib.parse import urlsplit

import psycopg
import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "", None}
START_TIMEOUT = 60


def _postgres_answers() -> bool:
    db = settings.DATABASES["default"]
    try:
        with psycopg.connect(
            dbname="postgres",
            host=db.get("HOST") or None,
            port=db.get("PORT") or None,
            user=db.get("USER") or None,
            password=db.get("PASSWORD") or None,
            connect_timeout=3,
        ):
            return True
    except psycopg.OperationalError:
        return False


def _redis_answers() -> bool:
    try:
        return bool(redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=3).ping())
    except (redis.RedisError, OSError):
        return False


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=False, timeout=START_TIMEOUT, capture_output=True)


def _wait(check, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


class Command(BaseCommand):
    help = "Make sure PostgreSQL and Redis answer, starting local ones if needed."
    requires_system_checks: list[str] = []

    def handle(self, *args, **options) -> None:
        self._postgres()
        self._redis()

    def _postgres(self) -> None:
        if _postgres_answers():
            self.stdout.write("PostgreSQL answers.")
            return
        host = settings.DATABASES["default"].get("HOST")
        if host not in LOCAL_HOSTS:
            raise CommandError(
                f"PostgreSQL on {host} does not answer: check DATABASE_URL and that server."
            )
        clusters = sorted(glob.glob("/etc/postgresql/*/main"))
        if clusters and shutil.which("pg_ctlcluster"):
            version = clusters[-1].split("/")[3]
            self.stdout.write(f"Starting the local PostgreSQL {version} cluster...")
            _run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"])
            if _wait(_postgres_answers):
                self.stdout.write("PostgreSQL answers.")
                return
            raise CommandError(
                "PostgreSQL was started but does not answer on "
                f"{host or 'localhost'}:{settings.DATABASES['default'].get('PORT') or 5432}: "
                "see /var/log/postgresql/."
            )
        raise CommandError(
            "PostgreSQL is not installed. On Debian/Ubuntu: "
            "sudo apt-get install postgresql postgresql-contrib, "
            "or point DATABASE_URL at a server you have."
        )

    def _redis(self) -> None:
        if _redis_answers():
            self.stdout.write("Redis answers.")
            return
        parts = urlsplit(settings.CELERY_BROKER_URL)
        if parts.scheme not in ("redis", "rediss"):
            raise CommandError(
                f"The broker at {parts.hostname}:{parts.port} does not answer: "
                "check CELERY_BROKER_URL."
            )
        if parts.hostname not in LOCAL_HOSTS:
            raise CommandError(
                f"Redis on {parts.hostname} does not answer: "
                "check CELERY_BROKER_URL and that server."
            )
        server = shutil.which("redis-server")
        if server is None:
            raise CommandError(
                "Redis is not installed. On Debian/Ubuntu: sudo apt-get install redis-server, "
                "or point CELERY_BROKER_URL at a server you have."
            )
        self.stdout.write("Starting a local Redis...")
        workdir = "/var/lib/redis" if os.access("/var/lib/redis", os.W_OK) else "/tmp"
        _run(
            [
                server,
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                str(parts.port or 6379),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ]
        )
        if not _wait(_redis_answers):
            raise CommandError("Redis was started but does not answer: check its log.")
        self.stdout.write("Redis answers.")
