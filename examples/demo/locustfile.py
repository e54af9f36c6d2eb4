"""Load for the demo target: profiles, event feeds and the occasional report.

    DEMO_USERS=2000 locust -f examples/demo/locustfile.py --host http://127.0.0.1:8000

User ids are drawn from 1..$DEMO_USERS, which must match seed.py's --users (default
2000), or the requests for ids past the seeded range fail with a 404.
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, task

SEEDED_USERS = int(os.environ.get("DEMO_USERS", "2000"))
if SEEDED_USERS < 1:
    raise ValueError(f"DEMO_USERS must be at least 1, not {SEEDED_USERS}")
REPORT_DAYS = 7


class DemoVisitor(HttpUser):
    wait_time = between(0.05, 0.2)

    def _user_id(self) -> int:
        return random.randint(1, SEEDED_USERS)

    @task(6)
    def profile(self) -> None:
        self.client.get(f"/users/{self._user_id()}", name="/users/[id]")

    @task(3)
    def events(self) -> None:
        self.client.get(f"/users/{self._user_id()}/events", name="/users/[id]/events")

    @task(1)
    def report(self) -> None:
        self.client.get(f"/report?days={REPORT_DAYS}", name="/report")
