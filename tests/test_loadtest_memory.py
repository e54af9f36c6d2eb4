"""The memory of real process trees: a family of Python processes, the local PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from perfruns.loadtest import MemorySampler, process_tree, tree_memory
from perfruns.loadtest.memory import _parent, memory_cgroup

MB = 1024 * 1024
CHILD_MB = 50

# Each child writes CHILD_MB of its own anonymous memory, says so, and waits for its stdin
# to close (so it also ends when its parent does).
CHILD = f"""
import sys
block = b"\\x01" * ({CHILD_MB} * 1024 * 1024)
print("ready", flush=True)
sys.stdin.read()
"""
PARENT = f"""
import subprocess, sys
children = [
    subprocess.Popen([sys.executable, "-c", {CHILD!r}], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, text=True)
    for _ in range(2)
]
for child in children:
    child.stdout.readline()
print(" ".join(str(child.pid) for child in children), flush=True)
sys.stdin.read()
"""


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no line from pid {proc.pid} within {timeout} s")
    return proc.stdout.readline()


@pytest.fixture
def family():
    """A parent process and its two children, each child holding 50 MB; their pids."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        children = [int(pid) for pid in _read_line(parent, timeout=60).split()]
        yield parent.pid, children
    finally:
        if parent.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(10)
        parent.stdin.close()
        parent.stdout.close()


def test_a_process_tree_is_the_parent_then_its_children(family):
    parent, children = family

    assert process_tree(parent) == [parent, *sorted(children)]
    assert _parent(children[0]) == parent


def test_the_tree_memory_holds_the_anonymous_memory_of_the_children(family):
    parent, children = family

    memory = tree_memory(parent)
    alone = tree_memory(children[0])

    assert memory.processes == 3
    assert memory.pss_anon >= 2 * CHILD_MB * MB
    assert alone.processes == 1 and alone.pss_anon >= CHILD_MB * MB
    assert memory.pss_anon >= 2 * alone.pss_anon - 5 * MB
    assert memory.pss >= memory.pss_anon
    # The interpreter's code is shared: each process counts a share of it only.
    assert memory.pss_shared > 0
    assert memory.rss >= memory.pss


def test_a_process_gone_has_an_empty_tree_and_no_memory():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(60)  # exited and reaped: its pid is free

    assert process_tree(proc.pid) == []
    assert tree_memory(proc.pid).processes == 0


@pytest.fixture
def postmaster():
    """The pid of the local PostgreSQL server's postmaster, while a session is open."""
    try:
        conn = psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"
        )
    except psycopg.OperationalError as exc:
        pytest.skip(f"no local PostgreSQL server: {exc}")
    try:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        postmaster = _parent(backend)
        assert postmaster is not None
        yield postmaster
    finally:
        conn.close()


def test_the_postgres_server_tree_holds_its_postmaster_and_its_other_processes(postmaster):
    memory = tree_memory(postmaster)

    assert Path(f"/proc/{postmaster}/cmdline").read_bytes().split(b"\0")[0].endswith(b"postgres")
    assert memory.processes > 1
    assert memory.pss > 0 and memory.rss >= memory.pss
    assert memory.pss_shared > 0


def _until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not hold in time")
        time.sleep(0.05)


def test_the_sampler_samples_each_target_until_stopped_and_reports_its_cost(family, postmaster):
    parent, _ = family
    sampler = MemorySampler({"target": parent, "db": postmaster}, interval=0.05)
    sampler.start()
    try:
        _until(lambda: sampler.rounds >= 3)
    finally:
        samples = sampler.stop()

    rounds = sampler.rounds
    assert rounds >= 3
    assert [s.label for s in samples] == ["target", "db"] * rounds
    assert all(s.memory.pss_anon >= 2 * CHILD_MB * MB for s in samples if s.label == "target")
    assert all(s.memory.processes > 1 for s in samples if s.label == "db")
    times = [s.t for s in samples]
    assert times == sorted(times)
    assert 0 < sampler.cpu_fraction
    assert sampler.achieved_interval is not None and sampler.achieved_interval > 0
    assert sampler.errors == 0
    # Stopped means stopped: no more rounds.
    assert sampler.rounds == rounds


def test_the_sampler_streams_samples_to_a_callback_instead_of_keeping_them(family):
    parent, _ = family
    streamed = []
    sampler = MemorySampler({"target": parent}, interval=0.05, on_sample=streamed.append)
    sampler.start()
    try:
        _until(lambda: len(streamed) >= 2)
    finally:
        kept = sampler.stop()

    assert kept == []
    assert len(streamed) == sampler.rounds
    assert streamed[0].label == "target" and streamed[0].memory.processes == 3


def test_a_failing_callback_is_counted_and_the_sampling_goes_on(family):
    parent, _ = family

    def refuse(sample):
        raise OSError("disk full")

    sampler = MemorySampler({"target": parent}, interval=0.05, on_sample=refuse)
    sampler.start()
    try:
        _until(lambda: sampler.rounds >= 2)
    finally:
        sampler.stop()

    assert sampler.errors == sampler.rounds
    assert sampler.last_error == "target: disk full"


def test_the_sampler_spreads_its_rounds_out_to_stay_within_its_cpu_budget(family, postmaster):
    parent, _ = family
    # A budget so small that every round, however cheap, must wait far longer than asked.
    sampler = MemorySampler({"target": parent, "db": postmaster}, interval=0.001, cpu_budget=0.01)
    sampler.start()
    try:
        _until(lambda: sampler.rounds >= 2)
    finally:
        sampler.stop()

    assert sampler.achieved_interval is not None
    assert sampler.achieved_interval > 10 * 0.001
    # Asked for a round every millisecond, it would otherwise use a whole core.
    assert sampler.cpu_fraction < 0.05


def test_a_cpu_budget_outside_a_core_is_refused():
    with pytest.raises(ValueError, match="fraction of a core"):
        MemorySampler({"x": 1}, cpu_budget=0)


def test_a_database_in_a_cgroup_of_its_own_has_its_container_memory_sampled(family, postmaster):
    parent, _ = family
    sampler = MemorySampler({"target": parent, "db": postmaster}, interval=0.05)
    sampler.start()
    try:
        _until(lambda: sampler.rounds >= 1)
    finally:
        samples = sampler.stop()

    by_label = {s.label: s.memory for s in samples}
    # Our own child shares our cgroup: no container figure for it.
    assert by_label["target"].cgroup is None
    if memory_cgroup(postmaster) != memory_cgroup(os.getpid()):
        assert by_label["db"].cgroup is not None and by_label["db"].cgroup > 0
    else:
        assert by_label["db"].cgroup is None


@pytest.mark.parametrize(
    ("cgroup_file", "files"),
    [
        # cgroup v1: the memory controller's own hierarchy
        ("4:memory:/docker/abc\n0::/\n", {"memory/docker/abc/memory.usage_in_bytes": "4096\n"}),
        # cgroup v2 alone
        ("0::/system.slice/postgresql.service\n",
         {"system.slice/postgresql.service/memory.current": "8192\n"}),
        # cgroup v2 beside v1, under unified/
        ("1:cpu:/\n0::/db\n", {"unified/db/memory.current": "16384\n"}),
    ],
)  # fmt: skip
def test_the_container_memory_is_read_from_either_cgroup_layout(
    tmp_path, monkeypatch, cgroup_file, files
):
    from perfruns.loadtest import memory

    proc = tmp_path / "proc" / "42"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(cgroup_file)
    for name, text in files.items():
        path = tmp_path / "cgroup" / name
        path.parent.mkdir(parents=True)
        path.write_text(text)
    monkeypatch.setattr(memory, "PROC", tmp_path / "proc")
    monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path / "cgroup")

    assert memory.cgroup_memory(memory.memory_cgroup(42)) == int(next(iter(files.values())))
