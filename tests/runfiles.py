"""Finished runs with the files a comparison reads (a Locust history of one row a second
per endpoint, memory samples), built without Locust: known answers for the verdicts."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from perfruns.models import EndpointStat, PerfRun, RunStatus, RunTrigger, Sample

HEADER = [
    "Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", "50%", "95%",
    "99%", "Total Request Count", "Total Failure Count",
]  # fmt: skip
LOAD = {"shape": "constant", "users": 10, "spawn_rate": 5, "duration_s": 300}
SETTINGS = {"shared_buffers": "128MB", "work_mem": "4MB", "max_connections": "50"}


def make_run(
    scenario, folder: Path, *, p95: dict[str, float], seed: int, db_pss: float = 200e6, **fields
) -> PerfRun:
    """A finished run of 300 s whose history holds one row a second per endpoint."""
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    totals = dict.fromkeys(p95, 0)
    with (folder / "locust_stats_history.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for second in range(300):
            for name, level in p95.items():
                totals[name] += 20
                value = level * rng.uniform(0.95, 1.05)
                writer.writerow(
                    [1_700_000_000 + second, 10, "GET", name, 20, 0, value / 3, value,
                     value * 1.5, totals[name], 0]
                )  # fmt: skip
    values = {
        "scenario": scenario,
        "environment": scenario.environment,
        "trigger": RunTrigger.SCHEDULE,
        "status": RunStatus.PASSED,
        "settings": LOAD,
        "environment_settings": SETTINGS,
        "summary": {"rps": 40.0},
        "artifacts_dir": str(folder),
    }
    values.update(fields)
    run = PerfRun.objects.create(**values)
    for name in p95:
        EndpointStat.objects.create(
            run=run, method="GET", name=name, requests=6000, failures=0, avg_ms=1, min_ms=1,
            max_ms=1, percentiles={"95": p95[name]}, rps=20,
        )  # fmt: skip
    Sample.objects.bulk_create(
        Sample(run=run, t=t, db_pss=int(db_pss * rng.uniform(0.99, 1.01))) for t in range(60)
    )
    return run


def make_step_run(scenario, folder: Path, *, levels: dict[int, float], seed: int, **fields):
    """A finished step load: 60 s at each number of users, one history row a second, p95 at
    the level given (and a request every 50 ms a user)."""
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    total = 0
    second = 0
    with (folder / "locust_stats_history.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for users, level in levels.items():
            for _ in range(60):
                total += 20 * users
                value = level * rng.uniform(0.95, 1.05)
                writer.writerow(
                    [1_700_000_000 + second, users, "", "Aggregated", 20 * users, 0, value / 3,
                     value, value * 1.5, total, 0]
                )  # fmt: skip
                second += 1
    values = {
        "scenario": scenario,
        "environment": scenario.environment,
        "trigger": RunTrigger.SCHEDULE,
        "status": RunStatus.PASSED,
        "settings": {"shape": "steps", "users": max(levels), "spawn_rate": 10,
                     "step_start": min(levels), "duration_s": 60 * len(levels)},
        "environment_settings": SETTINGS,
        "summary": {"rps": 100.0},
        "artifacts_dir": str(folder),
    }  # fmt: skip
    values.update(fields)
    run = PerfRun.objects.create(**values)
    EndpointStat.objects.create(
        run=run, method="", name="Aggregated", requests=total, failures=0, avg_ms=1, min_ms=1,
        max_ms=1, percentiles={"95": max(levels.values())}, rps=100,
    )  # fmt: skip
    return run
