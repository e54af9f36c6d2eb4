"""The live figures of a run under way: the rows Locust's history and the memory sampler
added since the last read, whole lines only, as the fields of samples."""

from __future__ import annotations

import csv
import io

from perfruns.loadtest.results import CsvTail
from perfruns.pipeline.load import MEMORY_COLUMNS, LiveTail
from tests.runfiles import HEADER

STARTED = 1_700_000_000.0


def _line(values: list[object]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue()


def test_a_tail_reads_only_whole_lines_and_only_once(tmp_path):
    path = tmp_path / "file.csv"
    tail = CsvTail(path)
    assert tail.read() == []  # not written yet

    path.write_text("a,b\n1,2\n3,")
    first = tail.read()
    with path.open("a") as fh:
        fh.write("4\n5,6\n")
    second = tail.read()

    assert first == [{"a": "1", "b": "2"}]
    assert second == [{"a": "3", "b": "4"}, {"a": "5", "b": "6"}]
    assert tail.read() == []


def test_the_live_tail_gives_locusts_aggregated_rows_and_the_memory_rows(tmp_path):
    history, memory = tmp_path / "locust_stats_history.csv", tmp_path / "memory.csv"
    history.write_text(
        _line(HEADER)
        + _line([STARTED + 3, 10, "GET", "/report", 4, 0, 900, 2400, 3000, 12, 0])
        + _line([STARTED + 3, 10, "", "Aggregated", 40, 0.5, 20, 410, 900, 120, 2])
        + _line([STARTED + 4, 10, "", "Aggregated", 41, 0, "N/A", "N/A", "N/A", 160, 2])
    )
    memory.write_text(
        _line(MEMORY_COLUMNS)
        + _line(["3.2", "db", 300 << 20, 40 << 20, 260 << 20, 900 << 20, "", 12])
        + _line(["3.2", "target", 64 << 20, 60 << 20, 4 << 20, 131 << 20, "", 5])
    )

    points = LiveTail(history, memory, started=STARTED).read()

    assert points == [
        {"t": 3.0, "users": 10, "rps": 40.0, "failures_per_s": 0.5, "p50_ms": 20.0,
         "p95_ms": 410.0},
        {"t": 4.0, "users": 10, "rps": 41.0, "failures_per_s": 0.0, "p50_ms": None,
         "p95_ms": None},
        {"t": 3.2, "db_pss": 300 << 20, "db_pss_anon": 40 << 20, "db_pss_shared": 260 << 20,
         "db_cgroup": None},
        {"t": 3.2, "target_rss": 131 << 20, "target_pss": 64 << 20, "target_processes": 5},
    ]  # fmt: skip
