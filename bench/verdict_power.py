#!/usr/bin/env python
"""Verdicts on real workloads: does an unchanged target stay green whatever its
throughput, and are a CPU-bound regression and a steady leak found?

    .venv/bin/python bench/verdict_power.py [--series 10] [--trials 10] [--duration 60]
        [--users 10] [--extra-work-pct 25] [--leak-mb-per-min 2]

Set-up, all thrown away at the end: a scratch application database (the service's own is
not touched), the demo database seeded on the local PostgreSQL and dumped, and a managed
review cluster in a scratch data folder with that dump restored. Every run is a whole
perf run (runs.perfrun_run: clone, target under gunicorn, Locust, memory sampler,
recording, judging against its baseline), as a weekly run is.

(a) The A/A series: --series runs of the demo with all its pathologies on (the N+1, the
    never-evicting cache that leaks ~64 KiB a profile, the slow report) under
    examples/demo/locustfile.py, nothing changed between them, but every other run made
    with a CPU hog beside it (one busy process on this 2-core machine), so that their
    throughput varies. A false alarm is a run that fails, or any "worse" at all against
    its baseline (suspected memory regressions included).
(b) Planted changes on the CPU-bound endpoint (/users/[id]/score, PBKDF2 rounds, under
    examples/demo/locustfile_cpu.py), each in --trials trials of A(i-1), B(i), A(i):
    - +--extra-work-pct % more rounds (DEMO_EXTRA_WORK_PCT={version}): found when the
      score endpoint's p50 or p95 is "worse" against the previous A;
    - a leak of --leak-mb-per-min MiB a minute (DEMO_LEAK_MB_PER_MIN={version}): found
      when B is flagged a probable leak and its target memory growth is "worse" against
      the previous A.
    Every A(i-1)/A(i) comparison counts for false alarms too.

Prints each run and trial, and last the line `found=X% false_alarms=Y% leak_found=Z%`;
the targets are found and leak_found at least 95 % and false_alarms 0 %. Not part of the
test suite: about 75 s a run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fixproof.settings")

import django  # noqa: E402

django.setup()

from benchsupport import bounded, perf_run, scratch_review_environment  # noqa: E402

APP_DATABASE = "fixproof_bench_verdicts_app"
DEMO_DATABASE = "fixproof_bench_verdicts_demo"
SCORE = "/users/[id]/score"


def scenario_for(environment: Any, name: str, args: Any, *, locustfile: str, env: dict) -> Any:
    from perfruns.loadtest.command import free_port
    from perfruns.services import scenarios

    port = free_port()
    scenario, _ = scenarios.scenario_save(
        name=name,
        values={
            "environment": environment,
            "locustfile_path": f"examples/demo/{locustfile}",
            "target_url": f"http://127.0.0.1:{port}",
            "start_command": (
                f"{sys.executable} -m gunicorn --chdir examples/demo --bind 127.0.0.1:{port}"
                " --workers 1 --threads 4 app:application"
            ),
            "start_env": env,
            "default_version": "0",
            "health_url": f"http://127.0.0.1:{port}/health",
            "health_timeout_s": 60,
            "users": args.users,
            "spawn_rate": args.users,
            "duration_s": args.duration,
            "thresholds": {},
        },
    )
    return scenario


class CpuHog:
    """One process spinning on a core for the length of a run: a noisy neighbour."""

    def __enter__(self) -> CpuHog:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL
        )
        return self

    def __exit__(self, *_exc: object) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def worse_list(comparison: Any) -> str:
    return ", ".join(f"{v.endpoint} {v.metric}" for v in comparison.worse) or "none"


def series(scenario: Any, count: int) -> tuple[int, int]:
    """(runs, false alarms) of the unchanged A/A series at varying throughput."""
    alarms = 0
    for number in range(1, count + 1):
        hogged = number % 2 == 0
        if hogged:
            with CpuHog():
                run = perf_run(scenario, "0")
        else:
            run = perf_run(scenario, "0")
        worse = [
            line["check"] for line in run.verdict if not line["passed"] or line.get("suspected")
        ]
        alarm = run.status != "passed" or bool(worse)
        alarms += alarm
        fit = run.summary.get("target_slope") or {}
        per_request = fit.get("per_request")
        print(
            f"series run {number} #{run.pk}{' (CPU hog beside it)' if hogged else ''}: "
            f"{run.summary.get('rps', 0):.1f} requests/s, target memory "
            f"{fit.get('per_minute', 0) / 2**20:+.1f} MiB/min"
            + (f" = {per_request:,.0f} B/request" if per_request is not None else "")
            + f", baseline #{run.regression.get('baseline', '-')}: {run.status}"
            + (f", worse: {', '.join(worse)}" if worse else ""),
            flush=True,
        )
    return count, alarms


def trials(scenario: Any, planted: str, count: int, *, leak: bool) -> tuple[int, int, int]:
    """(found, false alarms, A/A comparisons) over `count` trials of A(i-1), B(i), A(i)."""
    from perfruns.services.run_comparison import compare_runs

    found = alarms = 0
    previous = perf_run(scenario, "0")
    for trial in range(1, count + 1):
        changed = perf_run(scenario, planted)
        again = perf_run(scenario, "0")
        planted_cmp = compare_runs(baseline=previous, candidate=changed)
        same_cmp = compare_runs(baseline=previous, candidate=again)
        if leak:
            fit = changed.summary.get("target_slope") or {}
            growth = next(
                (v for v in planted_cmp.worse if v.endpoint == "target"), None
            )  # per request or per minute
            hit = bool(fit.get("leak")) and growth is not None
            shown = (
                f"B target memory {fit.get('per_minute', 0) / 2**20:+.2f} MiB/min "
                f"[{fit.get('low', 0) / 2**20:+.2f}, {fit.get('high', 0) / 2**20:+.2f}]"
                f"{' probable leak' if fit.get('leak') else ''}, growth verdict "
                f"{growth.metric + ' worse' if growth else 'not worse'}"
            )
        else:
            rows = [
                v
                for v in planted_cmp.verdicts
                if v.endpoint == SCORE and v.metric in ("p50", "p95")
            ]
            hit = any(v.verdict == "worse" for v in rows)
            shown = ", ".join(
                f"{v.metric} {v.baseline:.0f} → {v.candidate:.0f} ms "
                f"({100 * (v.change_rel or 0):+.1f} %, {v.verdict})"
                for v in rows
                if v.baseline is not None and v.candidate is not None
            )
        hit = hit and planted_cmp.valid
        alarm = same_cmp.valid and bool(same_cmp.worse)
        found += hit
        alarms += alarm
        print(
            f"trial {trial}: A #{previous.pk} → B #{changed.pk}: {shown}: "
            f"{'found' if hit else 'MISSED'}{'' if planted_cmp.valid else ' (invalid)'}; "
            f"A #{previous.pk} → A #{again.pk}: worse {worse_list(same_cmp)}",
            flush=True,
        )
        previous = again
    return found, alarms, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=bounded(2, 100), default=10)
    parser.add_argument("--trials", type=bounded(1, 100), default=10)
    parser.add_argument("--duration", type=bounded(40, 3600), default=60)
    parser.add_argument("--users", type=bounded(1, 100), default=10)
    parser.add_argument("--extra-work-pct", type=bounded(1, 200), default=25)
    parser.add_argument("--leak-mb-per-min", type=bounded(1, 100), default=2)
    args = parser.parse_args()

    started = time.monotonic()
    with scratch_review_environment(
        app_database=APP_DATABASE, demo_database=DEMO_DATABASE
    ) as environment:
        demo = scenario_for(
            environment, "series", args, locustfile="locustfile.py",
            env={"DEMO_PATHOLOGIES": "all", "DEMO_SLOWDOWN_PCT": "{version}"},
        )  # fmt: skip
        cpu = scenario_for(
            environment, "cpu", args, locustfile="locustfile_cpu.py",
            env={"DEMO_EXTRA_WORK_PCT": "{version}"},
        )  # fmt: skip
        leaky = scenario_for(
            environment, "leak", args, locustfile="locustfile_cpu.py",
            env={"DEMO_LEAK_MB_PER_MIN": "{version}"},
        )  # fmt: skip
        print(
            f"{args.series} unchanged runs, then {args.trials} trials of +{args.extra_work_pct} % "
            f"CPU work and {args.trials} of a {args.leak_mb_per_min} MiB/min leak; "
            f"{args.duration} s runs at {args.users} users"
        )
        series_runs, series_alarms = series(demo, args.series)
        found, cpu_alarms, cpu_pairs = trials(
            cpu, str(args.extra_work_pct), args.trials, leak=False
        )
        leak_found, leak_alarms, leak_pairs = trials(
            leaky, str(args.leak_mb_per_min), args.trials, leak=True
        )
        alarms = series_alarms + cpu_alarms + leak_alarms
        judged = series_runs + cpu_pairs + leak_pairs
        minutes = (time.monotonic() - started) / 60
        pair_alarms, pairs = cpu_alarms + leak_alarms, cpu_pairs + leak_pairs
        print(
            f"false alarms: {series_alarms} of {series_runs} series runs, {pair_alarms} of "
            f"{pairs} A/A pairs; {minutes:.0f} min in all"
        )
        print(
            f"found={100 * found / args.trials:.0f}% false_alarms={100 * alarms / judged:.0f}% "
            f"leak_found={100 * leak_found / args.trials:.0f}%"
        )


if __name__ == "__main__":
    main()
