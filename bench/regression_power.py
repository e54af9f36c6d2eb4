#!/usr/bin/env python
"""How often the verdicts find a planted +15 % p95 regression, and how often identical
runs raise a false alarm, on real runs of the demo target through Fixproof's pipeline.

    .venv/bin/python bench/regression_power.py [--trials 20] [--duration 60] [--users 20]
        [--upstream-ms 300] [--slowdown-pct 15]

Set-up, all thrown away at the end: a scratch application database
(fixproof_bench_power_app, migrated; the service's own database is not touched), the demo
database seeded on the local PostgreSQL and dumped, and a managed review cluster in a
scratch data folder with that dump restored, as a `make run` environment has.

The scenario drives examples/demo/locustfile.py at --users users for --duration seconds
against the demo target under gunicorn (1 worker, 64 threads), started by each run with
DEMO_UPSTREAM_MS=--upstream-ms (every endpoint waits for a simulated upstream: a few
hundred ms, past the 20 ms latency floor) and DEMO_SLOWDOWN_PCT={version}: version "0"
is A, version "--slowdown-pct" is B, a build that holds every response back by that share
of its time.

Runs, each a whole perf run (runs.perfrun_run: clone, target, Locust, memory sampler,
recording, judging): A0, then for each trial i a B run and an A run, alternating, so
that trial i compares

- A(i-1) with B(i): found when any endpoint's p95 verdict is "worse" (the weekly
  comparison with a baseline, perfruns.services.run_comparison.compare_runs);
- A(i-1) with A(i): a false alarm when any verdict at all (any endpoint, any metric:
  latencies, failure rate, RPS, DB RAM, memory slopes) is "worse";
- A(i-1), B(i), A(i) as an A/B/A comparison (perfruns.services.version_comparisons), whose
  verdict is shown.

Prints each trial, and last the line `found=X% false_alarms=Y%`; the targets are
found=100% and false_alarms at most 5%. Not part of the test suite: it takes a little
over 2 minutes a trial.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fixproof.settings")

import django  # noqa: E402

django.setup()

from benchsupport import bounded, perf_run, scratch_review_environment  # noqa: E402

APP_DATABASE = "fixproof_bench_power_app"
DEMO_DATABASE = "fixproof_bench_power_demo"


def scenario_for(environment, args):
    from perfruns.loadtest.command import free_port
    from perfruns.services import scenarios

    port = free_port()
    scenario, _ = scenarios.scenario_save(
        name="power",
        values={
            "environment": environment,
            "locustfile_path": "examples/demo/locustfile.py",
            "target_url": f"http://127.0.0.1:{port}",
            "start_command": (
                f"{sys.executable} -m gunicorn --chdir examples/demo --bind 127.0.0.1:{port}"
                " --workers 1 --threads 64 app:application"
            ),
            "start_env": {
                "DEMO_UPSTREAM_MS": str(args.upstream_ms),
                "DEMO_SLOWDOWN_PCT": "{version}",
            },
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


def aggregated_p95(comparison):
    return next(
        (v for v in comparison.verdicts if (v.endpoint, v.metric) == ("Aggregated", "p95")), None
    )


def p95_change(comparison) -> str:
    row = aggregated_p95(comparison)
    if row is None or row.change_rel is None:
        return "p95 not measured"
    change = 100 * row.change_rel
    interval = f"[{row.low:+.0f}, {row.high:+.0f}] ms" if row.low is not None else "no interval"
    q = f"q={row.q_value:.3g}" if row.q_value is not None else "no test"
    return (
        f"Aggregated p95 {row.baseline:.0f} → {row.candidate:.0f} ms ({change:+.1f} %, "
        f"{interval}, {q}: {row.verdict})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=bounded(1, 200), default=20)
    parser.add_argument("--duration", type=bounded(50, 3600), default=60)
    parser.add_argument("--users", type=bounded(1, 200), default=20)
    parser.add_argument("--upstream-ms", type=bounded(0, 2000), default=300)
    parser.add_argument("--slowdown-pct", type=bounded(1, 100), default=15)
    args = parser.parse_args()

    from perfruns.services import version_comparisons
    from perfruns.services.run_comparison import compare_runs

    started = time.monotonic()
    with scratch_review_environment(
        app_database=APP_DATABASE, demo_database=DEMO_DATABASE
    ) as environment:
        scenario = scenario_for(environment, args)
        planted = str(args.slowdown_pct)
        print(
            f"{args.trials} trials of {args.duration} s runs at {args.users} users, upstream "
            f"{args.upstream_ms} ms, B = +{planted} %"
        )
        found = alarms = invalid = 0
        changes, aba = [], []
        previous = perf_run(scenario, "0")
        for trial in range(1, args.trials + 1):
            slower = perf_run(scenario, planted)
            again = perf_run(scenario, "0")
            planted_cmp = compare_runs(baseline=previous, candidate=slower)
            same_cmp = compare_runs(baseline=previous, candidate=again)
            hit = planted_cmp.valid and any(v.metric == "p95" for v in planted_cmp.worse)
            false_alarm = same_cmp.valid and bool(same_cmp.worse)
            invalid += (not planted_cmp.valid) + (not same_cmp.valid)
            found += hit
            alarms += false_alarm
            row = aggregated_p95(planted_cmp)
            if row is not None and row.change_rel is not None:
                changes.append(row.change_rel)
            verdict, _result = version_comparisons.version_comparison_judge(
                a1=previous, b=slower, a2=again
            )
            aba.append(verdict)
            worse_aa = ", ".join(f"{v.endpoint} {v.metric}" for v in same_cmp.worse) or "none"
            print(
                f"trial {trial}: A #{previous.pk} → B #{slower.pk}: {p95_change(planted_cmp)}, "
                f"{'found' if hit else 'MISSED'}{'' if planted_cmp.valid else ' (invalid)'}; "
                f"A #{previous.pk} → A #{again.pk}: worse {worse_aa}"
                f"{'' if same_cmp.valid else ' (invalid)'}; A/B/A: {verdict}",
                flush=True,
            )
            previous = again
        minutes = (time.monotonic() - started) / 60
        if changes:
            median = 100 * statistics.median(changes)
            print(
                f"measured Aggregated p95 change of B: median {median:+.1f} %, from "
                f"{100 * min(changes):+.1f} % to {100 * max(changes):+.1f} %"
            )
        print("A/B/A verdicts: " + ", ".join(f"{v} {aba.count(v)}" for v in sorted(set(aba))))
        print(f"invalid comparisons: {invalid}; {minutes:.0f} min in all")
        print(
            f"found={100 * found / args.trials:.0f}% false_alarms={100 * alarms / args.trials:.0f}%"
        )


if __name__ == "__main__":
    main()
