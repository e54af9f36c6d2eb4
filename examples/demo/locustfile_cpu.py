"""Load for the demo target's CPU-bound endpoint: scores (all computation), with profiles
beside them. What bench/verdict_power.py drives to judge verdicts where time is CPU, not
a wait.

    locust -f examples/demo/locustfile_cpu.py --host http://127.0.0.1:8000
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, task

SEEDED_USERS = int(os.environ.get("DEMO_USERS", "2000"))
if SEEDED_USERS < 1:
    raise ValueError(f"DEMO_USERS must be at least 1, not {SEEDED_USERS}")


class Scorer(HttpUser):
    wait_time = between(0.05, 0.15)

    def _user_id(self) -> int:
        return random.randint(1, SEEDED_USERS)

    @task(3)
    def score(self) -> None:
        self.client.get(f"/users/{self._user_id()}/score", name="/users/[id]/score")

    @task(1)
    def profile(self) -> None:
        self.client.get(f"/users/{self._user_id()}", name="/users/[id]")
