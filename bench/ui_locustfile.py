"""The pages people read, as bench/ui_load.py drives them: each simulated person logs in
with one of the seeded accounts, then reads the dashboard, the post-mortems, one
post-mortem, the actions, their own actions and one run, in turn."""

from __future__ import annotations

import itertools
import os
import random

from locust import HttpUser, between, task

ACCOUNTS = os.environ["UI_BENCH_ACCOUNTS"].split(",")
PASSWORD = os.environ["UI_BENCH_PASSWORD"]
POSTMORTEMS = int(os.environ["UI_BENCH_POSTMORTEMS"])
RUNS = os.environ["UI_BENCH_RUNS"].split("-")  # first-last primary keys
FIRST_PM = int(os.environ["UI_BENCH_FIRST_POSTMORTEM"])
_accounts = itertools.cycle(ACCOUNTS)


class Reader(HttpUser):
    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        self.client.get("/login/", name="/login/")
        token = self.client.cookies.get("csrftoken", "")
        self.client.post(
            "/login/",
            {"username": next(_accounts), "password": PASSWORD, "csrfmiddlewaretoken": token},
            headers={"Referer": f"{self.host}/login/"},
            name="/login/ (POST)",
        )

    @task
    def dashboard(self) -> None:
        self.client.get("/dashboard/", name="dashboard")

    @task
    def postmortems(self) -> None:
        self.client.get("/postmortems/", name="post-mortems")

    @task
    def postmortem(self) -> None:
        pk = FIRST_PM + random.randrange(POSTMORTEMS)
        self.client.get(f"/postmortems/{pk}/", name="post-mortem")

    @task
    def actions(self) -> None:
        self.client.get("/postmortems/actions/?state=open", name="actions")

    @task
    def my_actions(self) -> None:
        self.client.get("/postmortems/actions/mine/", name="my actions")

    @task
    def run_page(self) -> None:
        pk = random.randint(int(RUNS[0]), int(RUNS[1]))
        self.client.get(f"/perf/runs/{pk}/", name="run")
