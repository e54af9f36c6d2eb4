"""The pages people read, as bench/ui_load.py drives them: each simulated person takes one
of the seeded accounts' sessions (signed in ahead), then reads the dashboard, the post-mortems, one
post-mortem, the actions, their own actions and one run, in turn."""

from __future__ import annotations

import itertools
import os
import random

from locust import HttpUser, between, task

SESSIONS = os.environ["UI_BENCH_SESSIONS"].split(",")
POSTMORTEMS = int(os.environ["UI_BENCH_POSTMORTEMS"])
RUNS = os.environ["UI_BENCH_RUNS"].split("-")  # first-last primary keys
FIRST_PM = int(os.environ["UI_BENCH_FIRST_POSTMORTEM"])
THINK_S = [float(part) for part in os.environ["UI_BENCH_THINK_S"].split("-")]
_sessions = itertools.cycle(SESSIONS)


class Reader(HttpUser):
    # How long a person looks at a page before the next one.
    wait_time = between(THINK_S[0], THINK_S[1])

    def on_start(self) -> None:
        host = self.host.split("//", 1)[1].split(":", 1)[0]
        self.client.cookies.set("sessionid", next(_sessions), domain=host)

    def _read(self, path: str, name: str) -> None:
        # A lost session would be a redirect to the log-in page: a failure, not a fast page.
        with self.client.get(
            path, name=name, allow_redirects=False, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")

    @task
    def dashboard(self) -> None:
        self._read("/dashboard/", "dashboard")

    @task
    def postmortems(self) -> None:
        self._read("/postmortems/", "post-mortems")

    @task
    def postmortem(self) -> None:
        pk = FIRST_PM + random.randrange(POSTMORTEMS)
        self._read(f"/postmortems/{pk}/", "post-mortem")

    @task
    def actions(self) -> None:
        self._read("/postmortems/actions/?state=open", "actions")

    @task
    def my_actions(self) -> None:
        self._read("/postmortems/actions/mine/", "my actions")

    @task
    def run_page(self) -> None:
        pk = random.randint(int(RUNS[0]), int(RUNS[1]))
        self._read(f"/perf/runs/{pk}/", "run")
