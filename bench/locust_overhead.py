#!/usr/bin/env python
"""Locust driven by the service vs bare `locust --headless`, on the same target, same run.

    .venv/bin/python bench/locust_overhead.py [--users 20] [--duration 20] [--rounds 3]
        [--warmup 5]

Creates the scratch database fixproof_bench_overhead on the local PostgreSQL (dropped and
recreated, seeded by examples/demo/seed.py with its defaults), starts the demo target
healthy (no DEMO_PATHOLOGIES) under gunicorn on a free loopback port once, then for each
round runs both sides with the same users and duration (their order swapped every other
round, so that neither always gets the warmer target; an unrecorded bare run of --warmup
seconds comes first):

- bare: `locust -f examples/demo/locustfile.py --headless -u U -r U -t Ds --host URL
  --json-file ...`, nothing else;
- service: what a perf run does during its load (perfruns.pipeline.execution
  ._Execution._load): locust_plan() (CSV with full history, JSON, HTML, log, stop timeout)
  run by run_load(), with a MemorySampler on the PostgreSQL postmaster and the gunicorn
  master writing memory.csv as the runner does, and a ConnectionWatcher polling
  pg_stat_activity (the run row's progress updates aside: there is no run row here).

Both read their total requests per second from the JSON's "Aggregated" entry
(perfruns.loadtest.read_final). Prints each round (and which side's Locust warned that
its CPU was saturated), the medians, the sampler's own CPU fraction and achieved interval,
and last the line `ratio=X.XX` (median service RPS / median bare RPS; the target is
≥ 0.95). Drops the database and stops gunicorn at the end.

The demo's users wait 0.05-0.2 s between tasks: at the default 20 users the throughput is
set by that wait (about 150 req/s), so the ratio says whether the service slows Locust
below it; with --users 100 or more the two cores saturate and the rounds get much noisier.
Not part of the test suite: on a shared machine only the side-by-side ratio means
something.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fixproof.settings")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.conf import settings  # noqa: E402

from perfruns.loadtest import (  # noqa: E402
    LoadShape,
    load_generator_saturated,
    locust_plan,
    read_final,
)
from perfruns.loadtest.command import free_port  # noqa: E402
from perfruns.pipeline.databases import create_database, drop_database  # noqa: E402
from perfruns.pipeline.execution import database_url, locust_binary  # noqa: E402
from perfruns.pipeline.load import measured_load, memory_roots  # noqa: E402
from perfruns.pipeline.target import Target  # noqa: E402
from perfruns.system import stop_group  # noqa: E402

DATABASE = "fixproof_bench_overhead"
DEMO = ROOT / "examples" / "demo"
LOCUSTFILE = DEMO / "locustfile.py"
# seed.py's default --users: the locustfile draws its ids from 1..DEMO_USERS.
SEEDED_USERS = 2000
SEED_TIMEOUT_S = 600
HEALTH_TIMEOUT_S = 60
# Seconds a Locust run may take beyond its duration (start-up, stop timeout, reports).
SLACK_S = 90


def server(dbname: str) -> str:
    db = settings.DATABASES["default"]
    return psycopg.conninfo.make_conninfo(
        host=db["HOST"] or "127.0.0.1",
        port=str(db["PORT"] or 5432),
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        dbname=dbname,
    )


def bounded(low: int, high: int):
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def seed(conninfo: str, log: Path) -> None:
    env = {**os.environ, "DATABASE_URL": database_url(conninfo)}
    with log.open("ab") as out:
        done = subprocess.run(
            [sys.executable, str(DEMO / "seed.py")],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=SEED_TIMEOUT_S,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"seed.py failed with status {done.returncode}, see {log}")


def bare_round(url: str, users: int, duration: int, work: Path) -> tuple[float, int, int, bool]:
    """Requests/s, requests, failures and Locust's CPU warning of a bare headless run."""
    prefix = work / "bare"
    json_file = prefix.with_suffix(".json")
    json_file.unlink(missing_ok=True)
    argv = [locust_binary(), "-f", str(LOCUSTFILE), "--headless"]
    argv += ["-u", str(users), "-r", str(users), "-t", f"{duration}s"]
    argv += ["--host", url, "--json-file", str(prefix)]
    console = work / "bare-console.log"
    with console.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=duration + SLACK_S)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"bare Locust did not end within {duration + SLACK_S} s") from None
        finally:
            stop_group(proc, grace=15)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"bare Locust exited with status {proc.returncode}")
    total = read_final(json_file)[-1]
    return total.rps, total.requests, total.failures, load_generator_saturated(console)


def service_round(
    url: str, users: int, duration: int, work: Path, conninfo: str, target: Target
) -> tuple[float, int, int, bool, float, float | None]:
    """Requests/s, requests, failures, Locust's CPU warning, the sampler's CPU fraction and
    achieved interval of a service-driven run: the runner's own measured_load."""
    workdir = work / "service"
    shutil.rmtree(workdir, ignore_errors=True)
    plan = locust_plan(
        locust=locust_binary(),
        locustfile=LOCUSTFILE,
        host=url,
        shape=LoadShape(kind="constant", users=users, spawn_rate=users, duration_s=duration),
        workdir=workdir,
    )
    load = measured_load(
        [plan.master, *plan.workers],
        conninfo=conninfo,
        roots=memory_roots(conninfo, target),
        memory_file=workdir / "memory.csv",
        cwd=workdir,
        log_file=workdir / "locust-console.log",
        deadline=time.monotonic() + plan.expected_duration_s + SLACK_S,
        expected_s=plan.expected_duration_s,
        target=target,
        cancelled=lambda: False,
        progress=lambda _fraction: None,
    )
    outcome, sampler = load.outcome, load.sampler
    if outcome.timed_out or outcome.target_died is not None or outcome.killed_by is not None:
        raise SystemExit(f"the service-driven run did not end normally: {outcome}")
    if outcome.returncode not in (0, 1):
        raise SystemExit(f"service-driven Locust exited with status {outcome.returncode}")
    if sampler.rounds == 0:
        raise SystemExit(f"the memory sampler took no sample ({sampler.last_error})")
    total = read_final(plan.json_file)[-1]
    return (
        total.rps,
        total.requests,
        total.failures,
        plan.log_file.exists() and load_generator_saturated(plan.log_file),
        sampler.cpu_fraction,
        sampler.achieved_interval,
    )


def check(side: str, requests: int, failures: int) -> None:
    if requests == 0:
        raise SystemExit(f"{side}: Locust made no request")
    if failures > requests * 0.01:
        raise SystemExit(f"{side}: {failures} of {requests} requests failed: not a healthy run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=bounded(1, 200), default=20)
    parser.add_argument("--duration", type=bounded(5, 600), default=20, help="seconds per run")
    parser.add_argument("--rounds", type=bounded(1, 15), default=3)
    parser.add_argument(
        "--warmup", type=bounded(0, 60), default=5, help="seconds of unrecorded load first"
    )
    args = parser.parse_args()

    admin = server("postgres")
    conninfo = server(DATABASE)
    work = Path(tempfile.mkdtemp(prefix="fixproof-bench-overhead-", dir="/tmp"))
    os.environ["DEMO_USERS"] = str(SEEDED_USERS)  # read by the locustfile, both sides
    target: Target | None = None
    bare_rps: list[float] = []
    service_rps: list[float] = []
    cpu_fractions: list[float] = []
    intervals: list[float] = []
    try:
        drop_database(admin, DATABASE)
        create_database(admin, DATABASE)
        print(f"seeding {DATABASE} with examples/demo/seed.py defaults ...", flush=True)
        seed(conninfo, work / "seed.log")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [str(Path(sys.executable).parent / "gunicorn"), "--chdir", str(DEMO)]
        command += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4"]
        command += ["app:application"]
        target = Target(
            command=shlex.join(command),
            env={"DATABASE_URL": database_url(conninfo), "DEMO_PATHOLOGIES": ""},
            log_file=work / "target.log",
            cwd=ROOT,
        )
        target.start()
        target.wait_healthy(f"{url}/health", timeout=HEALTH_TIMEOUT_S, cancelled=lambda: False)
        print(
            f"target: gunicorn (1 worker, 4 threads) at {url}; "
            f"load: {args.users} users for {args.duration} s per run",
            flush=True,
        )
        if args.warmup:
            bare_round(url, args.users, args.warmup, work)
        for round_no in range(1, args.rounds + 1):
            sides = ["bare", "service"] if round_no % 2 else ["service", "bare"]
            saturated = []
            for side in sides:
                if side == "bare":
                    rps, requests, failures, busy = bare_round(url, args.users, args.duration, work)
                    bare_rps.append(rps)
                else:
                    rps, requests, failures, busy, cpu, interval = service_round(
                        url, args.users, args.duration, work, conninfo, target
                    )
                    service_rps.append(rps)
                    cpu_fractions.append(cpu)
                    if interval is not None:
                        intervals.append(interval)
                check(side, requests, failures)
                if busy:
                    saturated.append(side)
            print(
                f"round {round_no} ({' then '.join(sides)}): bare {bare_rps[-1]:.1f} req/s, "
                f"service {service_rps[-1]:.1f} req/s, ratio {service_rps[-1] / bare_rps[-1]:.2f}"
                + (f"; Locust CPU warning: {', '.join(saturated)}" if saturated else ""),
                flush=True,
            )
    finally:
        if target is not None:
            target.stop()
        try:
            drop_database(admin, DATABASE)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    bare_median = statistics.median(bare_rps)
    service_median = statistics.median(service_rps)
    interval_text = f"{statistics.median(intervals):.3f} s" if intervals else "n/a"
    print(f"median: bare {bare_median:.1f} req/s, service {service_median:.1f} req/s")
    print(
        f"memory sampler: cpu_fraction {statistics.median(cpu_fractions):.4f} (median; max "
        f"{max(cpu_fractions):.4f}), achieved interval {interval_text} (asked 1.000 s)"
    )
    print(f"ratio={service_median / bare_median:.2f}")


if __name__ == "__main__":
    main()
