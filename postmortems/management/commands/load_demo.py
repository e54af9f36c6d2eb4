"""A small demo: two post-mortems, their team and people. Safe to run twice.

The demo people get generated passwords the first time (printed, or with --credentials-file
written to that file, readable only by its owner, which `make run` prints at the end of its
set-up); a second run leaves their passwords alone.
"""

from __future__ import annotations

import datetime as dt
import secrets
from decimal import Decimal
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from fixproof.credentials import credentials_write
from postmortems import services
from postmortems.models import PostMortem, PostMortemStatus, Team

POOL_TITLE = "Connection pool exhausted on the 13M-row events table"
LEAK_TITLE = "Report worker killed by the OOM killer every afternoon"


def _at(day: dt.date, hhmm: str) -> dt.datetime:
    hour, minute = (int(x) for x in hhmm.split(":"))
    return timezone.make_aware(dt.datetime.combine(day, dt.time(hour, minute)), dt.UTC)


class Command(BaseCommand):
    help = "Load the demo post-mortems (skipped when they are already there)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--credentials-file",
            type=Path,
            help="Write the demo people's new passwords to this file (mode 0600) "
            "instead of printing them.",
        )

    def handle(self, *args, **options) -> None:
        passwords = self._load()
        # Written once the demo is saved: a failed load leaves no password that does not work.
        if passwords and options.get("credentials_file"):
            credentials_write(options["credentials_file"], passwords)
            self.stdout.write("Demo people: their passwords are shown at the end.")
        elif passwords:
            self.stdout.write("Demo people and their passwords (shown only this once):")
            for username, (password, role) in passwords.items():
                self.stdout.write(f"  {username}  {password}  {role}")

    @transaction.atomic
    def _load(self) -> dict[str, tuple[str, str]]:
        User = get_user_model()
        people = {}
        passwords: dict[str, tuple[str, str]] = {}
        for username, first, last, role in (
            ("emma", "Emma", "Martin", "engineer"),
            ("karim", "Karim", "Haddad", "engineer"),
            ("marc", "Marc", "Lefebvre", "manager"),
            ("vera", "Vera", "Nowak", "viewer"),
        ):
            user, created = User.objects.get_or_create(
                username=username,
                defaults={
                    "first_name": first,
                    "last_name": last,
                    "email": f"{username}@example.com",
                },
            )
            # New people, and those an older demo left without a password, get one; a
            # password someone has already (perhaps changed since) is left alone.
            if created or not user.has_usable_password():
                password = secrets.token_urlsafe(9)
                user.set_password(password)
                user.save()
                passwords[username] = (password, role)
            user.groups.add(Group.objects.get(name=role))
            people[username] = user
        team, _ = Team.objects.get_or_create(name="Platform", defaults={"slug": "platform"})
        team.members.add(people["emma"], people["karim"])

        if not PostMortem.objects.filter(title=POOL_TITLE).exists():
            self._pool_story(people, team)
            self.stdout.write(f"Loaded demo post-mortem: {POOL_TITLE}")
        if not PostMortem.objects.filter(title=LEAK_TITLE).exists():
            self._leak_story(people, team)
            self.stdout.write(f"Loaded demo post-mortem: {LEAK_TITLE}")
        return passwords

    def _pool_story(self, people, team) -> None:
        day = dt.date(2026, 10, 6)
        content = services.PostMortemContent(
            fields={
                "title": POOL_TITLE,
                "severity": "sev2",
                "written_on": dt.date(2026, 10, 8),
                "started_at": _at(day, "17:02"),
                "detected_at": _at(day, "17:09"),
                "resolved_at": _at(day, "17:41"),
                "ended_at": _at(day, "17:45"),
                "team": team,
                "services": ["activity-api", "postgres-main"],
                "summary": (
                    "Between 17:02 and 17:45 the activity API answered slowly and then with "
                    "errors: every request waited for a database connection, and the pool "
                    "(20 connections, 10 overflow) stayed exhausted.\n"
                    "The 'recent activity' query scans the events table, which has grown to "
                    "13 million rows; at the evening peak each call held its connection for "
                    "seconds."
                ),
                "trigger": (
                    "Evening traffic peak (about 3x the daily mean) after a push notification."
                ),
                "resolution": (
                    "We raised the statement timeout to shed the slowest calls, then shipped a "
                    "keyset-paginated version of the 'recent activity' query at 17:41."
                ),
                "detection": "Error-rate alert on the API dashboard, 7 minutes after the start.",
                "lessons_learned": (
                    "Nobody knew how the query behaved at 13M rows: our staging data has 40k."
                ),
            },
            authors=[people["emma"]],
            impacts=[
                {
                    "label": "failed requests",
                    "value": Decimal(270),
                    "unit": "of 1620",
                    "window": "17:02-17:45",
                },
                {
                    "label": "average response time",
                    "value": Decimal(6),
                    "unit": "s",
                    "window": "17:02-17:45",
                },
                {
                    "label": "failure rate",
                    "value": Decimal(20),
                    "unit": "%",
                    "window": "17:02-17:45",
                },
                {
                    "label": "peak failure rate at 17:16",
                    "value": Decimal(50),
                    "unit": "%",
                    "window": "17:16",
                },
            ],
            root_causes=[
                {
                    "category": "database",
                    "description": (
                        "The 'recent activity' query sorts the 13M-row events table with OFFSET "
                        "pagination: 2.8 s per call at peak instead of 40 ms."
                    ),
                },
                {
                    "category": "capacity",
                    "description": (
                        "The connection pool (20 + 10 overflow) is sized for 40 ms queries; "
                        "with 2.8 s queries it is exhausted at 11 requests per second."
                    ),
                },
            ],
            timeline=[
                {"occurred_at": _at(day, "17:02"), "text": "p95 of /activity passes 2 s."},
                {"occurred_at": _at(day, "17:09"), "text": "Error-rate alert fires."},
                {"occurred_at": _at(day, "17:16"), "text": "Peak: half of the requests fail."},
                {"occurred_at": _at(day, "17:41"), "text": "Keyset pagination deployed."},
            ],
            actions=[
                {
                    "kind": "detect",
                    "title": "Load-test the activity API on a production-sized copy every week",
                    "description": "Restore the anonymized dump weekly, replay the evening peak, "
                    "measure p95, failure rate and database RAM.",
                    "owner": people["karim"],
                    "due_date": dt.date(2026, 11, 15),
                    "status": "in_progress",
                    "ticket_url": "",
                },
                {
                    "kind": "prevent",
                    "title": "Keyset pagination and an index on events(user_id, created_at)",
                    "description": (
                        "Replace OFFSET pagination everywhere the events table is listed."
                    ),
                    "owner": people["emma"],
                    "due_date": dt.date(2026, 12, 1),
                    "status": "todo",
                    "ticket_url": "",
                },
            ],
        )
        pm = services.postmortem_save(actor=people["emma"], content=content)
        services.postmortem_transition(
            postmortem=pm, actor=people["emma"], to=PostMortemStatus.IN_REVIEW
        )

    def _leak_story(self, people, team) -> None:
        day = dt.date(2026, 9, 14)
        content = services.PostMortemContent(
            fields={
                "title": LEAK_TITLE,
                "severity": "sev3",
                "written_on": dt.date(2026, 9, 16),
                "started_at": _at(day, "14:30"),
                "ended_at": _at(day, "15:05"),
                "team": team,
                "services": ["reports"],
                "summary": (
                    "The report worker's memory climbed by about 40 MB a minute from its "
                    "start until the kernel killed it; reports queued for 35 minutes."
                ),
                "trigger": "The daily batch of customer reports at 14:30.",
                "resolution": "Worker restarted with a per-process memory limit of 1 GB.",
                "detection": "A customer asked where their report was.",
            },
            authors=[people["karim"]],
            impacts=[
                {
                    "label": "reports delayed",
                    "value": Decimal(412),
                    "unit": "reports",
                    "window": "14:30-15:05",
                },
                {
                    "label": "worker memory growth",
                    "value": Decimal(40),
                    "unit": "MB/min",
                    "window": "",
                },
            ],
            root_causes=[
                {
                    "category": "code",
                    "description": ("A module-level cache of rendered charts is never evicted."),
                },
            ],
            timeline=[],
            actions=[
                {
                    "kind": "repair",
                    "title": "Bound the chart cache (LRU, 200 entries)",
                    "description": "",
                    "owner": people["karim"],
                    "due_date": dt.date(2026, 9, 30),
                    "status": "done",
                    "ticket_url": "",
                },
            ],
        )
        pm = services.postmortem_save(actor=people["karim"], content=content)
        # The transition checks the status it is given: pass on the returned row.
        pm = services.postmortem_transition(
            postmortem=pm, actor=people["karim"], to=PostMortemStatus.IN_REVIEW
        )
        services.postmortem_transition(
            postmortem=pm, actor=people["marc"], to=PostMortemStatus.PUBLISHED
        )
