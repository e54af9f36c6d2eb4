"""Read what a Locust run wrote, a row or an entry at a time.

read_final               the JSON file (--json-file): the final totals per endpoint, plus
                         an "Aggregated" entry merged from them; Locust writes it at exit,
                         while its CSV files are snapshots taken every second or so and
                         miss the last one or two
iter_history             PREFIX_stats_history.csv (--csv-full-history): one row per second
                         for each endpoint and for "Aggregated"; rates and percentiles
                         over a sliding window, request and failure counts cumulative
read_failures            PREFIX_failures.csv: failures grouped by method, name and error
load_generator_saturated Locust's log: whether it warned that its CPU was saturated
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# Locust's PERCENTILES_TO_REPORT, keyed as in its CSV headers without the "%".
PERCENTILES = {
    "50": 0.50,
    "66": 0.66,
    "75": 0.75,
    "80": 0.80,
    "90": 0.90,
    "95": 0.95,
    "98": 0.98,
    "99": 0.99,
    "99.9": 0.999,
    "99.99": 0.9999,
    "100": 1.0,
}
AGGREGATED = "Aggregated"
# Locust's log lines when its CPU passes 90 %: during the run, at its end, and on a master
# whose workers passed it. The first is logged only after two 10-second CPU samples.
CPU_WARNINGS = (
    "CPU usage above",
    "CPU usage was too high at some point during the test",
    "CPU usage threshold was exceeded on workers",
)
CHUNK = 1 << 20


@dataclass
class EndpointResult:
    method: str
    name: str
    requests: int
    failures: int
    avg_ms: float
    min_ms: float
    max_ms: float
    percentiles: dict[str, float]
    rps: float

    @property
    def failure_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass
class HistoryRow:
    timestamp: int
    users: int
    name: str
    method: str
    rps: float
    failures_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    requests: int
    failures: int
    p99_ms: float | None = None


@dataclass
class FailureGroup:
    method: str
    name: str
    error: str
    occurrences: int


class _Totals:
    """Sums of serialized StatsEntry dicts, as Locust's StatsEntry.extend merges them."""

    def __init__(self) -> None:
        self.requests = 0
        self.none_requests = 0
        self.failures = 0
        self.total_ms = 0.0
        self.min_ms: float | None = None
        self.max_ms = 0.0
        self.histogram: dict[float, int] = {}
        self.start: float | None = None
        self.last: float | None = None

    def add(self, entry: dict[str, Any]) -> None:
        self.requests += int(entry.get("num_requests") or 0)
        self.none_requests += int(entry.get("num_none_requests") or 0)
        self.failures += int(entry.get("num_failures") or 0)
        self.total_ms += float(entry.get("total_response_time") or 0)
        self.max_ms = max(self.max_ms, float(entry.get("max_response_time") or 0))
        if entry.get("min_response_time") is not None:
            low = float(entry["min_response_time"])
            self.min_ms = low if self.min_ms is None else min(self.min_ms, low)
        for key, count in (entry.get("response_times") or {}).items():
            bucket = float(key)
            self.histogram[bucket] = self.histogram.get(bucket, 0) + int(count)
        if entry.get("start_time") is not None:
            start = float(entry["start_time"])
            self.start = start if self.start is None else min(self.start, start)
        if entry.get("last_request_timestamp") is not None:
            last = float(entry["last_request_timestamp"])
            self.last = last if self.last is None else max(self.last, last)

    def result(self, method: str, name: str, seconds: float) -> EndpointResult:
        timed = self.requests - self.none_requests
        return EndpointResult(
            method=method,
            name=name,
            requests=self.requests,
            failures=self.failures,
            avg_ms=self.total_ms / timed if timed > 0 else 0.0,
            min_ms=self.min_ms or 0.0,
            max_ms=self.max_ms,
            percentiles={
                key: percentile(self.histogram, timed, fraction)
                for key, fraction in PERCENTILES.items()
            },
            rps=self.requests / seconds if seconds > 0 else 0.0,
        )


def percentile(histogram: dict[float, int], requests: int, fraction: float) -> float:
    """Locust's calculate_response_time_percentile over a {bucket ms: count} histogram."""
    wanted = int(requests * fraction)
    processed = 0
    for bucket in sorted(histogram, reverse=True):
        processed += histogram[bucket]
        if requests - processed <= wanted:
            return bucket
    return 0.0


def read_final(json_file: Path) -> list[EndpointResult]:
    """One result per endpoint (by name, then method), then the merged "Aggregated" one.

    Requests per second divide by the run's span, first start to last request, for every
    entry, as Locust's total_rps does.
    """
    merged = _Totals()
    endpoints: list[tuple[str, str, _Totals]] = []
    with Path(json_file).open(encoding="utf-8") as fh:
        for entry in _iter_json_array(fh):
            if not isinstance(entry, dict):
                raise ValueError(f"{json_file} holds a {type(entry).__name__}, not a stats entry")
            totals = _Totals()
            totals.add(entry)
            merged.add(entry)
            endpoints.append((str(entry.get("method") or ""), str(entry.get("name")), totals))
    span = merged.last - merged.start if merged.last and merged.start else 0.0
    endpoints.sort(key=lambda item: (item[1], item[0]))
    results = [totals.result(method, name, span) for method, name, totals in endpoints]
    results.append(merged.result("", AGGREGATED, span))
    return results


def _iter_json_array(fh: IO[str]) -> Iterator[Any]:
    """The items of a top-level JSON array, decoded one at a time from the open file."""
    decoder = json.JSONDecoder()
    buffer, pos, eof = "", 0, False
    started = False
    while True:
        while pos < len(buffer) and (buffer[pos].isspace() or (started and buffer[pos] == ",")):
            pos += 1
        if pos >= len(buffer):
            if eof:
                raise ValueError("the JSON array is not closed")
            buffer, pos = fh.read(CHUNK), 0
            eof = not buffer
            continue
        if not started:
            if buffer[pos] != "[":
                raise ValueError("the JSON file does not hold an array")
            started, pos = True, pos + 1
            continue
        if buffer[pos] == "]":
            return
        try:
            item, end = decoder.raw_decode(buffer, pos)
        except json.JSONDecodeError:
            if eof:
                raise
            # An item cut by the end of the buffer: read at least as much again.
            more = fh.read(max(CHUNK, len(buffer) - pos))
            eof = not more
            buffer, pos = buffer[pos:] + more, 0
            continue
        yield item
        pos = end


def _columns(header: list[str], path: Path, *names: str) -> list[int]:
    try:
        return [header.index(name) for name in names]
    except ValueError as exc:
        raise ValueError(f"{path.name} has no column {exc.args[0].split()[0]}") from None


def _number(cell: str) -> float | None:
    cell = cell.strip()
    if not cell or cell == "N/A":
        return None
    return float(cell)


def iter_history(history_csv: Path) -> Iterator[HistoryRow]:
    """The rows of a stats history CSV in file order; "N/A" percentiles become None.

    Short rows (a line still being written) are skipped.
    """
    path = Path(history_csv)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        columns = _columns(
            header,
            path,
            "Timestamp",
            "User Count",
            "Type",
            "Name",
            "Requests/s",
            "Failures/s",
            "50%",
            "95%",
            "Total Request Count",
            "Total Failure Count",
            "99%",
        )
        width = max(columns) + 1
        ts, users, method, name, rps, fps, p50, p95, requests, failures, p99 = columns
        for row in reader:
            if len(row) < width:
                continue
            yield HistoryRow(
                timestamp=int(float(row[ts])),
                users=int(float(row[users])),
                name=row[name],
                method=row[method],
                rps=_number(row[rps]) or 0.0,
                failures_per_s=_number(row[fps]) or 0.0,
                p50_ms=_number(row[p50]),
                p95_ms=_number(row[p95]),
                p99_ms=_number(row[p99]),
                requests=int(float(row[requests])),
                failures=int(float(row[failures])),
            )


def read_failures(failures_csv: Path) -> list[FailureGroup]:
    """The failure groups of a failures CSV, most frequent first."""
    path = Path(failures_csv)
    groups = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return []
        columns = _columns(header, path, "Method", "Name", "Error", "Occurrences")
        width = max(columns) + 1
        method, name, error, occurrences = columns
        for row in reader:
            if len(row) < width:
                continue
            groups.append(
                FailureGroup(
                    method=row[method],
                    name=row[name],
                    error=row[error],
                    occurrences=int(float(row[occurrences])),
                )
            )
    groups.sort(key=lambda group: -group.occurrences)
    return groups


def load_generator_saturated(log_file: Path) -> bool:
    """Whether Locust logged that its CPU (or a worker's) passed its warning threshold."""
    keep = max(len(needle) for needle in CPU_WARNINGS)
    tail = ""
    with Path(log_file).open(encoding="utf-8", errors="replace") as fh:
        while chunk := fh.read(CHUNK):
            text = tail + chunk
            if any(needle in text for needle in CPU_WARNINGS):
                return True
            tail = text[-keep:]
    return False


class CsvTail:
    """The rows a CSV file gained since the last read(), as dicts keyed by its header: for
    the live figures of a run while Locust (or the memory sampler) still writes the file.

    Only whole lines are read (a line being written waits for the next read); a file not
    there yet reads as no rows. Each read costs what the file grew, not its size.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._header: list[str] | None = None

    def read(self, most: int = CHUNK) -> list[dict[str, str]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read(most)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        lines = data[: end + 1].decode("utf-8", errors="replace").splitlines()
        rows = []
        for values in csv.reader(lines):
            if self._header is None:
                self._header = values
                continue
            if len(values) == len(self._header):
                rows.append(dict(zip(self._header, values, strict=True)))
        return rows
