"""Process groups started and stopped, and file digests, on the real operating system."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

from perfruns.system import (
    file_sha256,
    kill_group,
    pid_alive,
    record_spawn,
    spawn,
    stop_group,
    stop_recorded,
)

# A parent that starts a child in its own group (inherited), prints the child's pid, sleeps.
PARENT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True  # a zombie waiting for its reaper is dead
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"abc" * 1000)

    assert file_sha256(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert file_sha256(str(path)) == file_sha256(path)


def test_a_spawned_program_leads_its_own_process_group():
    proc = spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
    finally:
        kill_group(proc)

    assert proc.returncode is not None


def test_stopping_a_group_stops_the_children_its_leader_started():
    proc = spawn([sys.executable, "-c", PARENT], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())

    stop_group(proc, grace=5)

    assert proc.returncode is not None
    assert gone(child)


def test_killing_a_group_stops_a_leader_that_ignores_sigterm_and_its_children():
    stubborn = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + PARENT
    proc = spawn([sys.executable, "-c", stubborn], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())

    started = time.monotonic()
    stop_group(proc, grace=0.5)

    assert time.monotonic() - started < 10
    assert proc.returncode == -9
    assert gone(child)


def test_recorded_groups_are_killed_and_a_reused_pid_is_left_alone(tmp_path):
    pid_file = tmp_path / "pids"
    ours = spawn(
        [sys.executable, "-c", "print(flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    assert ours.stdout is not None
    ours.stdout.readline()  # it runs the program now, not the fork of this one
    # A live process that is not a group we started: this test's own interpreter's pid,
    # recorded under another program's name, as when a pid was reused.
    record_spawn(pid_file, ours.pid, sys.executable)
    record_spawn(pid_file, os.getpid(), "/usr/bin/some-other-program")
    try:
        killed = stop_recorded(pid_file)
        ours.wait(timeout=10)
    finally:
        kill_group(ours)

    assert killed == [ours.pid]
    assert ours.returncode == -9
    assert pid_alive(os.getpid())


def test_a_pid_that_no_longer_exists_is_not_alive():
    proc = spawn([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)

    assert not pid_alive(proc.pid)
