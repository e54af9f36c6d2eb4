#!/usr/bin/env python
"""Peak memory of recording a 1-hour, 50-endpoint Locust result set into the database.

    .venv/bin/python bench/record_memory.py [--seconds 3600] [--endpoints 50] [--shape constant]

Writes, in a temporary folder and in Locust's own formats, what a one-hour perf run leaves
behind: PREFIX_stats_history.csv (--csv-full-history: one row a second for each endpoint
plus "Aggregated"), PREFIX_failures.csv, the --json-file list (per-endpoint entries with
their response-time histograms and per-second num_reqs_per_sec / num_fail_per_sec for
every second), Locust's log, and the memory.csv the runner writes (a db and a target row
a second, with the db's cgroup charge). A forked child writes them, so that their making
leaves nothing in this process's heap.

Then, in this process (Django set up, the project's database), it creates a throw-away
ReviewEnvironment, Scenario and PerfRun, and calls perfruns.services.recording.run_record()
on those files, as the worker does at the end of a run (the run's folder set to that
folder, whose files become Artifact rows; --shape steps also reads the history again for
the breaking point). It measures this process's resident set just before the call and its peak
during it (VmHWM, reset through /proc/self/clear_refs, cross-checked by a thread reading
VmRSS every 50 ms), and prints the rows written per table and the time taken. The
objects are deleted (CASCADE) at the end whatever happens.

For comparison, a forked child reads the same history CSV into a list with csv.reader,
what a naive recorder would do, and reports its own growth as `naive_growth_mb=N`.
The last line is `rss_growth_mb=N` (peak minus before, MiB, one decimal; the target is
< 50). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import multiprocessing
import os
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fixproof.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

import perfruns.loadtest  # noqa: E402, F401  (imported by run_record: not part of its growth)
from perfruns.loadtest import LocustPlan  # noqa: E402
from perfruns.models import (  # noqa: E402
    LOAD_SHAPE_FIELDS,
    Artifact,
    EndpointStat,
    FailureGroup,
    PerfRun,
    ReviewEnvironment,
    RunStatus,
    RunTrigger,
    Sample,
    Scenario,
)
from perfruns.pipeline.execution import LoadFigures  # noqa: E402
from perfruns.pipeline.load import LoadOutcome  # noqa: E402
from perfruns.services.recording import run_record  # noqa: E402

MIB = 1024 * 1024
PREFIX = "locust"
SEED = 20260101
USERS = 50
# Locust's PERCENTILES_TO_REPORT as CSV headers, and a latency profile for each of them
# relative to the median (a long tail).
PERCENTILE_HEADERS = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%"]
PERCENTILE_HEADERS += ["99.99%", "100%"]
TAIL = [1.0, 1.2, 1.35, 1.45, 1.8, 2.3, 3.0, 3.6, 6.0, 8.0, 9.0]
HISTORY_HEADER = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s"]
HISTORY_HEADER += PERCENTILE_HEADERS
HISTORY_HEADER += ["Total Request Count", "Total Failure Count", "Total Median Response Time"]
HISTORY_HEADER += ["Total Average Response Time", "Total Min Response Time"]
HISTORY_HEADER += ["Total Max Response Time", "Total Average Content Size"]
FAILURES_HEADER = ["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"]
# Seconds between the step levels of --shape steps (users rise by STEP_USERS each time).
STEP_SECONDS = 300
STEP_USERS = 10
SAMPLE_EVERY_S = 0.05
CHILD_TIMEOUT_S = 1800


def bounded(low: int, high: int):
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


# ---------------------------------------------------------------- synthetic Locust files


def bucket(ms: float) -> int:
    """Locust keeps response times at about two significant digits."""
    if ms < 100:
        return round(ms)
    digits = 1 if ms < 1000 else 2 if ms < 10_000 else 3
    return int(round(ms, -digits))


class Endpoint:
    def __init__(self, number: int, rng: random.Random) -> None:
        self.method = "POST" if number % 5 == 4 else "GET"
        self.name = f"/api/v1/resource-{number:02d}/[id]"
        self.rate = rng.uniform(0.5, 8.0)  # requests a second
        self.median_ms = rng.uniform(8, 250)
        self.failing = number % 7 == 3
        self.requests = 0
        self.failures = 0
        self.total_ms = 0.0
        self.min_ms: float | None = None
        self.max_ms = 0.0
        self.content = 0
        self.histogram: dict[int, int] = {}
        self.per_second: dict[int, int] = {}
        self.fail_per_second: dict[int, int] = {}

    def second(self, rng: random.Random, timestamp: int, users: int, full: int) -> tuple:
        """Make this second's requests; returns (count, failures, current median)."""
        count = max(0, round(self.rate * users / full + rng.gauss(0, self.rate * 0.1)))
        failed = 0
        if self.failing and count and timestamp % 4 == 0:
            failed = max(1, count // 20)
        median = self.median_ms * (1 + 0.3 * users / full) * rng.uniform(0.9, 1.1)
        for _ in range(count):
            ms = rng.lognormvariate(0, 0.5) * median
            key = bucket(ms)
            self.histogram[key] = self.histogram.get(key, 0) + 1
            self.total_ms += ms
            self.min_ms = ms if self.min_ms is None else min(self.min_ms, ms)
            self.max_ms = max(self.max_ms, ms)
            self.content += 1800
        self.requests += count
        self.failures += failed
        if count:
            self.per_second[timestamp] = count
        if failed:
            self.fail_per_second[timestamp] = failed
        return count, failed, median

    def avg_ms(self) -> float:
        return self.total_ms / self.requests if self.requests else 0.0

    def median_total(self) -> int:
        wanted, seen = self.requests // 2, 0
        for key in sorted(self.histogram):
            seen += self.histogram[key]
            if seen > wanted:
                return key
        return 0


def users_at(second: int, shape: str) -> int:
    if shape == "steps":
        return min(USERS, STEP_USERS * (1 + (second - 1) // STEP_SECONDS))
    return USERS


def history_row(timestamp, users, method, name, rps, fps, median, totals) -> list:
    requests, failures, total_median, avg, low, high, content = totals
    if requests:
        percentiles = [bucket(median * factor) for factor in TAIL]
    else:
        percentiles = ["N/A"] * len(TAIL)
    return [timestamp, users, method, name, f"{rps:2f}", f"{fps:2f}", *percentiles] + [
        requests,
        failures,
        total_median,
        avg,
        low,
        high,
        content,
    ]


def write_files(folder: Path, seconds: int, endpoints: int, shape: str, started: float) -> None:
    """Every file a run leaves, as Locust and the runner write them."""
    rng = random.Random(SEED)
    points = [Endpoint(number, rng) for number in range(endpoints)]
    points.sort(key=lambda e: (e.name, e.method))  # Locust's sort_stats order
    start = int(started)
    agg_requests = agg_failures = 0
    agg_total_ms = 0.0
    agg_min: float | None = None
    agg_max = 0.0
    with (folder / f"{PREFIX}_stats_history.csv").open("w", newline="") as history:
        writer = csv.writer(history)
        writer.writerow(HISTORY_HEADER)
        for second in range(1, seconds + 1):
            timestamp = start + second
            users = users_at(second, shape)
            counts = fails = 0
            medians = []
            for e in points:
                count, failed, median = e.second(rng, timestamp, users, USERS)
                counts += count
                fails += failed
                medians.append(median)
                writer.writerow(
                    history_row(
                        timestamp,
                        users,
                        e.method,
                        e.name,
                        count,
                        failed,
                        median,
                        (
                            e.requests,
                            e.failures,
                            e.median_total(),
                            e.avg_ms(),
                            bucket(e.min_ms or 0),
                            bucket(e.max_ms),
                            e.content / e.requests if e.requests else 0,
                        ),
                    )
                )
            agg_requests += counts
            agg_failures += fails
            agg_total_ms = sum(e.total_ms for e in points)
            lows = [e.min_ms for e in points if e.min_ms is not None]
            agg_min = min(lows) if lows else None
            agg_max = max(e.max_ms for e in points)
            writer.writerow(
                history_row(
                    timestamp,
                    users,
                    "",
                    "Aggregated",
                    counts,
                    fails,
                    sorted(medians)[len(medians) // 2],
                    (
                        agg_requests,
                        agg_failures,
                        sorted(e.median_total() for e in points)[len(points) // 2],
                        agg_total_ms / agg_requests if agg_requests else 0,
                        bucket(agg_min or 0),
                        bucket(agg_max),
                        1800 if agg_requests else 0,
                    ),
                )
            )
    with (folder / f"{PREFIX}_failures.csv").open("w", newline="") as failures:
        writer = csv.writer(failures)
        writer.writerow(FAILURES_HEADER)
        groups = []  # (endpoint, error, occurrences): two errors per failing endpoint
        for e in points:
            if e.failures:
                server = e.failures * 3 // 4
                groups.append((e, f"HTTPError('500 Server Error: for url: {e.name}')", server))
                dropped = "RemoteDisconnected('Remote end closed connection without response')"
                groups.append((e, dropped, e.failures - server))
        for e, error, occurrences in sorted(groups, key=lambda g: -g[2]):
            first = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(min(e.fail_per_second)))
            last = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(e.fail_per_second)))
            writer.writerow([e.method, e.name, error, occurrences, first, last])
    # Locust writes json.dump(list, indent=4); an entry at a time keeps this child small.
    with (folder / f"{PREFIX}.json").open("w") as out:
        out.write("[")
        for index, e in enumerate(points):
            entry = {
                "name": e.name,
                "method": e.method,
                "last_request_timestamp": start + seconds + rng.random(),
                "start_time": started,
                "num_requests": e.requests,
                "num_none_requests": 0,
                "num_failures": e.failures,
                "total_response_time": e.total_ms,
                "max_response_time": e.max_ms,
                "min_response_time": e.min_ms,
                "total_content_length": e.content,
                "response_times": e.histogram,
                "num_reqs_per_sec": e.per_second,
                "num_fail_per_sec": e.fail_per_second,
            }
            text = json.dumps(entry, indent=4)
            out.write(("," if index else "") + "\n    " + text.replace("\n", "\n    "))
        out.write("\n]")
    with (folder / f"{PREFIX}.log").open("w") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        log.write(f"[{stamp},000] host/INFO/locust.main: Starting Locust 2.47.0\n")
        log.write(f"[{stamp},000] host/INFO/locust.main: Run time limit set to {seconds} s\n")
        log.write(f"[{stamp},001] host/INFO/locust.runners: Ramping to {USERS} users\n")
        log.write(f"[{stamp},900] host/INFO/locust.main: --run-time limit reached, stopping\n")
        log.write(f"[{stamp},950] host/INFO/locust.main: Shutting down (exit code 1)\n")
    with (folder / "memory.csv").open("w", newline="") as memory:
        writer = csv.writer(memory)
        writer.writerow(["t", "label", "pss", "pss_anon", "pss_shared", "rss", "cgroup"])
        db, target = 180 * MIB, 90 * MIB
        for second in range(seconds):
            db += rng.randint(-64, 96) * 1024
            target += rng.randint(-32, 48) * 1024
            t = second + rng.uniform(0.0005, 0.004)
            # The database in a cgroup of its own (its charge filled in), the target not.
            db_row = [db, db // 3, db - db // 3, db + 40 * MIB, db + 64 * MIB]
            writer.writerow([f"{t:.3f}", "db", *db_row])
            writer.writerow([f"{t + 0.002:.3f}", "target", target, target, 0, target, ""])


# ---------------------------------------------------------------- memory of this process


def status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> bool:
    """Set VmHWM back to the current RSS (Linux >= 4.0); False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return status_kib("VmHWM") <= status_kib("VmRSS") + 64


class PeakWatcher:
    """Reads VmRSS every SAMPLE_EVERY_S seconds from a thread; keeps the highest."""

    def __init__(self) -> None:
        self.peak_kib = status_kib("VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-peak", daemon=True)

    def __enter__(self) -> PeakWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak_kib = max(self.peak_kib, status_kib("VmRSS"))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.peak_kib = max(self.peak_kib, status_kib("VmRSS"))


def measure(work) -> tuple[int, int, float]:
    """(RSS before in KiB, peak RSS during in KiB, seconds) of work()."""
    gc.collect()
    hwm = reset_peak()
    before = status_kib("VmRSS")
    began = time.perf_counter()
    with PeakWatcher() as watcher:
        work()
    took = time.perf_counter() - began
    peak = max(watcher.peak_kib, status_kib("VmHWM") if hwm else 0)
    return before, peak, took


def in_child(function, *args):
    """function(*args) in a forked child; its return value, or SystemExit on a failure."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def body() -> None:
        try:
            send.send(("ok", function(*args)))
        except BaseException as exc:  # reported to the parent
            send.send(("error", repr(exc)))

    child = context.Process(target=body, daemon=True)
    child.start()
    try:
        if not receive.poll(CHILD_TIMEOUT_S):
            raise SystemExit(f"{function.__name__} did not finish within {CHILD_TIMEOUT_S} s")
        status, value = receive.recv()
    finally:
        if child.is_alive():
            child.kill()
        child.join(timeout=10)
    if status != "ok":
        raise SystemExit(f"{function.__name__} failed: {value}")
    return value


def naive_read(history: Path) -> tuple[int, int, float, int]:
    """The growth of holding the whole history in a list, the recorder this one is not."""
    rows: list[list[str]] = []

    def read() -> None:
        with history.open(newline="") as fh:
            rows.extend(csv.reader(fh))

    before, peak, took = measure(read)
    return before, peak, took, len(rows)


# ---------------------------------------------------------------- the bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=bounded(60, 4 * 3600), default=3600)
    parser.add_argument("--endpoints", type=bounded(1, 200), default=50)
    parser.add_argument("--shape", choices=["constant", "steps"], default="constant")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fixproof-bench-record-", dir="/tmp"))
    started = time.time() - args.seconds - 15
    tag = f"bench-record-memory-{secrets.token_hex(4)}"
    environment = scenario = None
    try:
        began = time.perf_counter()
        in_child(write_files, work, args.seconds, args.endpoints, args.shape, started)
        sizes = {path.name: path.stat().st_size for path in sorted(work.iterdir())}
        print(
            f"synthetic {args.seconds} s x {args.endpoints} endpoints ({args.shape}) written in "
            f"{time.perf_counter() - began:.1f} s: "
            + ", ".join(f"{name} {size / MIB:.1f} MiB" for name, size in sizes.items()),
            flush=True,
        )
        plan = LocustPlan(
            master=[],
            workers=[],
            csv_prefix=work / PREFIX,
            json_file=work / f"{PREFIX}.json",
            html_file=work / f"{PREFIX}.html",
            log_file=work / f"{PREFIX}.log",
            history_file=work / f"{PREFIX}_stats_history.csv",
            failures_file=work / f"{PREFIX}_failures.csv",
            stats_file=work / f"{PREFIX}_stats.csv",
            expected_duration_s=float(args.seconds + 10),
        )

        environment = ReviewEnvironment.objects.create(name=tag, database_name="bench_record")
        scenario = Scenario.objects.create(
            name=tag,
            locustfile_path="examples/demo/locustfile.py",
            target_url="http://127.0.0.1:8000",
            environment=environment,
            users=USERS,
            spawn_rate=10,
            duration_s=args.seconds,
            shape=args.shape,
            step_start=STEP_USERS if args.shape == "steps" else 0,
            step_size=STEP_USERS if args.shape == "steps" else 0,
            step_duration_s=STEP_SECONDS if args.shape == "steps" else 0,
            step_max=USERS if args.shape == "steps" else 0,
        )
        # As in a real run, the folder holding Locust's files is the run's: its files are
        # recorded as artifacts (and var/runs/run-<pk> of an older database is left alone).
        run = PerfRun.objects.create(
            scenario=scenario,
            environment=environment,
            trigger=RunTrigger.COMMAND,
            status=RunStatus.RUNNING,
            settings={name: getattr(scenario, name) for name in LOAD_SHAPE_FIELDS},
            artifacts_dir=str(work),
        )
        load = LoadFigures(
            plan=plan,
            started=started,
            memory_file=work / "memory.csv",
            database={"before": {}, "after": {}, "delta": {}, "connections": {},
                      "top_statements": []},
            sampler={"achieved_interval_s": None, "cpu_fraction": None},
            outcome=LoadOutcome(returncode=0),
        )  # fmt: skip
        before, peak, took = measure(lambda: run_record(run=run, load=load))
        counts = {
            "EndpointStat": EndpointStat.objects.filter(run=run).count(),
            "Sample": Sample.objects.filter(run=run).count(),
            "FailureGroup": FailureGroup.objects.filter(run=run).count(),
            "Artifact": Artifact.objects.filter(run=run).count(),
        }
        run.refresh_from_db()
        print(
            f"run_record: {took:.1f} s; rows "
            + ", ".join(f"{table} {count}" for table, count in counts.items())
            + f"; summary rps {run.summary.get('rps', 0):.1f}, "
            f"requests {run.summary.get('requests')}"
            + (f", breaking point {run.summary['breaking_point']}" if args.shape == "steps" else "")
        )
        print(
            f"RSS before {before / 1024:.1f} MiB, peak during {peak / 1024:.1f} MiB "
            f"(DEBUG={settings.DEBUG}, database {connection.settings_dict['NAME']})"
        )

        naive_before, naive_peak, naive_took, naive_rows = in_child(naive_read, plan.history_file)
        print(
            f"naive csv.reader list of the history: {naive_rows} rows in {naive_took:.1f} s, "
            f"RSS {naive_before / 1024:.1f} -> {naive_peak / 1024:.1f} MiB"
        )
    finally:
        try:
            if scenario is not None:
                PerfRun.objects.filter(scenario=scenario).delete()
                scenario.delete()
            if environment is not None:
                environment.delete()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"naive_growth_mb={(naive_peak - naive_before) / 1024:.1f}")
    print(f"rss_growth_mb={(peak - before) / 1024:.1f}")


if __name__ == "__main__":
    main()
