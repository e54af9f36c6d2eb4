#!/usr/bin/env python
"""How fast the pages people read answer with a year of records, under load.

    .venv/bin/python bench/ui_load.py [--postmortems 1000] [--actions-per-pm 10]
        [--runs 5000] [--users 20] [--duration 60] [--warmup 10] [--think 1-3]

Creates the scratch database fixproof_bench_ui on the local PostgreSQL (dropped first and
at the end), migrates it and seeds it in bulk: 1,000 post-mortems of 8 teams over twelve
months, 10,000 actions (owners, due dates, statuses, a proof on half of them), 5,000 runs
of 20 scenarios (3 endpoints and 20 samples each), regressions. Starts Fixproof under
gunicorn as the Procfile's `web` line runs it (`make run`), DEBUG off, on a free loopback
port; then Locust with --users people (half managers, half engineers, each signed in
ahead with a session of their own) reading the dashboard, the post-mortems list, one
post-mortem, the actions list, "My actions" and one run page for --duration seconds, each
spending --think seconds on a page (1-3: a person reading; 0.1-0.5 makes each simulated
person a crowd), after an unmeasured warm-up run of --warmup seconds (every worker's first
pages compile templates and open connections). Prints each page's request count, failures
and p50/p95, then one line `max_p95_ms=N errors=M` (the worst page's p95; every failed
request). The goal is every page p95 < 100 ms and no error. Not part of the test suite:
absolute times depend on the machine; the tests assert instead that the query count of
each page does not grow with the data (tests/test_query_counts.py).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import random
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fixproof.settings")

import django  # noqa: E402

django.setup()

from benchsupport import bounded, drop, recreate, server  # noqa: E402
from django.conf import settings  # noqa: E402

from perfruns.loadtest.command import free_port  # noqa: E402
from perfruns.pipeline.execution import database_url  # noqa: E402

DATABASE = "fixproof_bench_ui"
PASSWORD = "bench-" + secrets.token_hex(8)  # nobody logs in with it: see the sessions
TEAMS = 8
SCENARIOS = 20
ENGINEERS = 40
MANAGERS = 10
HEALTH_TIMEOUT_S = 60
SLACK_S = 60
SEVERITIES = ("sev1", "sev2", "sev3", "sev4")
KINDS = ("investigate", "mitigate", "repair", "detect", "prevent", "process")
STATUSES = ("todo", "to_debate", "in_progress", "done", "wont_do")


def seed(postmortems: int, actions_per_pm: int, runs: int) -> dict[str, str]:
    """Everything in bulk (the services' one-by-one writes would take an hour); returns
    what the locustfile needs to know."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, User
    from django.contrib.sessions.backends.db import SessionStore
    from django.utils import timezone

    from perfruns.models import (
        EndpointStat,
        PerfRun,
        RegressionIncident,
        ReviewEnvironment,
        RunStatus,
        RunTrigger,
        Sample,
        Scenario,
        VerificationCriterion,
    )
    from postmortems.models import Action, PostMortem, Team

    rng = random.Random(7)
    now = timezone.now()
    today = timezone.localdate()
    hashed = make_password(PASSWORD)
    engineers = User.objects.bulk_create(
        User(username=f"eng{n}", first_name=f"Eng{n}", last_name="Bench", password=hashed)
        for n in range(ENGINEERS)
    )
    managers = User.objects.bulk_create(
        User(username=f"mgr{n}", first_name=f"Mgr{n}", last_name="Bench", password=hashed)
        for n in range(MANAGERS)
    )
    Group.objects.get(name="engineer").user_set.add(*engineers)
    Group.objects.get(name="manager").user_set.add(*managers)
    teams = Team.objects.bulk_create(
        Team(name=f"Team {n}", slug=f"team-{n}", manager=managers[n % MANAGERS])
        for n in range(TEAMS)
    )
    pms = []
    for n in range(postmortems):
        started = now - dt.timedelta(days=rng.uniform(0, 365))
        published = n % 3 == 0
        pms.append(
            PostMortem(
                title=f"Incident {n}: pool exhausted at peak",
                severity=SEVERITIES[n % 4],
                status="published" if published else ("draft", "in_review")[n % 2],
                published_at=started + dt.timedelta(days=3) if published else None,
                team=teams[n % TEAMS],
                started_at=started,
                detected_at=started + dt.timedelta(minutes=rng.uniform(1, 60)),
                resolved_at=started + dt.timedelta(minutes=rng.uniform(30, 600)),
                ended_at=started + dt.timedelta(minutes=rng.uniform(600, 900)),
                summary="The checkout API returned 502s for 38 minutes. " * 5,
                created_by=engineers[n % ENGINEERS],
            )
        )
    pms = PostMortem.objects.bulk_create(pms, batch_size=500)
    actions = []
    for pm in pms:
        for number in range(1, actions_per_pm + 1):
            status = STATUSES[rng.randrange(len(STATUSES))]
            created = pm.started_at + dt.timedelta(days=1)  # type: ignore[operator]
            actions.append(
                Action(
                    postmortem=pm,
                    number=number,
                    kind=KINDS[number % len(KINDS)],
                    title=f"Action {number} of {pm.title[:40]}",
                    owner=engineers[rng.randrange(ENGINEERS)],
                    due_date=today + dt.timedelta(days=rng.randint(-60, 60)),
                    status=status,
                    done_at=created + dt.timedelta(days=rng.uniform(1, 40))
                    if status == "done"
                    else None,
                )
            )
    actions = Action.objects.bulk_create(actions, batch_size=2000)
    Action.objects.update(created_at=now - dt.timedelta(days=200))
    environment = ReviewEnvironment.objects.create(name="review")
    scenarios = Scenario.objects.bulk_create(
        Scenario(
            name=f"scenario-{n}", target_url="http://127.0.0.1:9", environment=environment,
            locustfile_path="locustfile.py", team=teams[n % TEAMS],
        )
        for n in range(SCENARIOS)
    )  # fmt: skip
    made = []
    for n in range(runs):
        finished = now - dt.timedelta(hours=(runs - n) * 1.5)
        failed = n % 7 == 0
        made.append(
            PerfRun(
                scenario=scenarios[n % SCENARIOS], environment=environment,
                trigger=RunTrigger.SCHEDULE,
                status=RunStatus.FAILED if failed else RunStatus.PASSED,
                started_at=finished - dt.timedelta(minutes=5), finished_at=finished,
                verdict=[{"check": "p95_ms", "measured": 612.0 if failed else 212.0,
                          "limit": 500, "passed": not failed}],
                summary={"p95_ms": 212.0, "failure_rate": 0.001, "db_ram_peak": 48 * 2**20,
                         "requests": 9000, "rps": 30.0},
                settings={"users": 20, "shape": "constant", "duration_s": 300},
                progress=100,
            )
        )  # fmt: skip
    made = PerfRun.objects.bulk_create(made, batch_size=1000)
    endpoints, samples = [], []
    for run in made:
        for name in ("/checkout", "/users/[id]", "Aggregated"):
            endpoints.append(
                EndpointStat(
                    run=run, method="" if name == "Aggregated" else "GET", name=name,
                    requests=3000, failures=3, avg_ms=80, min_ms=2, max_ms=900,
                    percentiles={"50": 60.0, "95": 212.0, "99": 400.0}, rps=10.0,
                )
            )  # fmt: skip
        for t in range(20):
            samples.append(
                Sample(
                    run=run, t=t * 15.0, users=20, rps=30.0, failures_per_s=0.0,
                    p50_ms=60.0, p95_ms=212.0, db_pss=48 * 2**20, target_rss=90 * 2**20,
                )
            )  # fmt: skip
    EndpointStat.objects.bulk_create(endpoints, batch_size=5000)
    Sample.objects.bulk_create(samples, batch_size=5000)
    criteria = []
    for n, action in enumerate(actions[::2]):
        run = made[n % len(made)]
        criteria.append(
            VerificationCriterion(
                action=action, scenario=run.scenario, metric="p95_ms", value=500,
                state=("verified", "unverified", "failed", "regressed")[n % 4],
                state_run=run,
            )
        )  # fmt: skip
    VerificationCriterion.objects.bulk_create(criteria, batch_size=2000)
    RegressionIncident.objects.bulk_create(
        RegressionIncident(
            scenario=made[n].scenario, start_run=made[n], postmortem=pms[n % len(pms)],
            state=("confirmed", "fixed")[n % 2],
            resolved_at=made[n].finished_at if n % 2 else None,
        )
        for n in range(0, len(made), 50)
    )  # fmt: skip
    PerfRun.postmortems.through.objects.bulk_create(
        PerfRun.postmortems.through(perfrun_id=made[n].pk, postmortem_id=pms[n % len(pms)].pk)
        for n in range(0, len(made), 5)
    )
    # Signed in ahead: a log-in checks a password hash on purpose slowly (PBKDF2), and
    # twenty of them at the start of the run would be measured as the pages' wait.
    sessions = []
    for user in (u for pair in zip(managers, engineers, strict=False) for u in pair):
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        sessions.append(store.session_key)
    return {
        "UI_BENCH_SESSIONS": ",".join(s for s in sessions if s),
        "UI_BENCH_POSTMORTEMS": str(len(pms)),
        "UI_BENCH_FIRST_POSTMORTEM": str(pms[0].pk),
        "UI_BENCH_RUNS": f"{made[0].pk}-{made[-1].pk}",
    }


def web_command(port: int) -> list[str]:
    """The Procfile's web command (what `make run` serves), bound to `port`."""
    line = next(
        line.split(":", 1)[1]
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    )
    words = shlex.split(line)
    words[words.index("--bind") + 1] = f"127.0.0.1:{port}"
    return [str(ROOT / words[0]) if words[0].startswith(".") else words[0], *words[1:]]


def think_range(text: str) -> str:
    try:
        low, high = (float(part) for part in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError("must be MIN-MAX seconds, such as 1-3") from None
    if not 0 <= low <= high <= 60:
        raise argparse.ArgumentTypeError("must be MIN-MAX with 0 <= MIN <= MAX <= 60")
    return text


def wait_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/login/", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"Fixproof did not answer at {url} within {HEALTH_TIMEOUT_S} s")


def p95_table(stats_csv: Path) -> tuple[list[tuple[str, int, int, float, float]], int]:
    rows, errors = [], 0
    with stats_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                continue
            failures = int(row["Failure Count"])
            errors += failures
            if row["Name"].startswith("/login/"):
                continue
            rows.append(
                (row["Name"], int(row["Request Count"]), failures,
                 float(row["50%"]), float(row["95%"]))
            )  # fmt: skip
    return rows, errors


def locust(
    url: str, prefix: Path, users: int, duration: int, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "locust"), "-f",
         str(ROOT / "bench" / "ui_locustfile.py"), "--headless", "-u", str(users),
         "-r", str(users), "-t", f"{duration}s", "--host", url,
         "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"],
        env={**os.environ, **env}, stdin=subprocess.DEVNULL,
        timeout=duration + SLACK_S, check=False, capture_output=True, text=True,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postmortems", type=bounded(10, 20000), default=1000)
    parser.add_argument("--actions-per-pm", type=bounded(1, 50), default=10)
    parser.add_argument("--runs", type=bounded(20, 50000), default=5000)
    parser.add_argument("--users", type=bounded(1, 100), default=20)
    parser.add_argument("--duration", type=bounded(5, 600), default=60)
    parser.add_argument("--warmup", type=bounded(0, 120), default=10)
    parser.add_argument(
        "--think",
        type=think_range,
        default="1-3",
        help="seconds a person spends on a page, MIN-MAX (default 1-3)",
    )
    args = parser.parse_args()

    from django.core.management import call_command
    from django.db import connections

    recreate(DATABASE)
    settings.DATABASES["default"]["NAME"] = DATABASE
    # The sessions made here are signed with the key the served Fixproof will check.
    settings.SECRET_KEY = secrets.token_hex(32)
    gunicorn = None
    try:
        call_command("migrate", verbosity=0)
        started = time.monotonic()
        env_for_locust = seed(args.postmortems, args.actions_per_pm, args.runs)
        # Autovacuum would otherwise visit the freshly loaded tables during the measure.
        connections["default"].cursor().execute("VACUUM ANALYZE")
        print(
            f"seeded {args.postmortems} post-mortems, {args.postmortems * args.actions_per_pm} "
            f"actions, {args.runs} runs in {time.monotonic() - started:.0f} s"
        )
        connections.close_all()
        call_command("collectstatic", interactive=False, verbosity=0)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        service_env = {
            **os.environ,
            "DATABASE_URL": database_url(server(DATABASE)),
            "DEBUG": "0",
            "SECRET_KEY": settings.SECRET_KEY,
            "ALLOWED_HOSTS": "127.0.0.1",
        }
        gunicorn = subprocess.Popen(
            web_command(port), cwd=ROOT, env=service_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_healthy(url, gunicorn)
        with tempfile.TemporaryDirectory(prefix="fixproof-ui-bench-") as folder:
            env_for_locust["UI_BENCH_THINK_S"] = args.think
            if args.warmup:
                locust(url, Path(folder) / "warmup", args.users, args.warmup, env_for_locust)
            prefix = Path(folder) / "ui"
            done = locust(url, prefix, args.users, args.duration, env_for_locust)
            stats = Path(f"{prefix}_stats.csv")
            if not stats.is_file():
                raise SystemExit(
                    f"Locust wrote no statistics (status {done.returncode}): {done.stderr[-1500:]}"
                )
            rows, errors = p95_table(stats)
        print(f"{'page':<14} {'requests':>9} {'failures':>9} {'p50 ms':>8} {'p95 ms':>8}")
        for name, requests, failures, p50, p95 in rows:
            print(f"{name:<14} {requests:>9} {failures:>9} {p50:>8.0f} {p95:>8.0f}")
        worst = max((p95 for *_, p95 in rows), default=0.0)
        print(f"max_p95_ms={worst:.0f} errors={errors}")
    finally:
        if gunicorn is not None and gunicorn.poll() is None:
            os.killpg(gunicorn.pid, signal.SIGTERM)
            try:
                gunicorn.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(gunicorn.pid, signal.SIGKILL)
        connections.close_all()
        drop(DATABASE)


if __name__ == "__main__":
    main()
