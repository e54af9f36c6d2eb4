"""The memory of process trees (a PostgreSQL server, the target app) from Linux's /proc.

PSS (proportional set size) counts a page shared by n processes as 1/n in each, so the PSS
of a tree is what it really holds: PostgreSQL's shared buffers count once, not once per
backend as RSS would. Only /proc/PID/smaps_rollup is read, the kernel's one-block summary,
never the full smaps.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PROC = Path("/proc")
# smaps_rollup field -> TreeMemory field; Pss_File and Pss_Shmem both count as shared.
ROLLUP_FIELDS = {
    "Pss:": "pss",
    "Pss_Anon:": "pss_anon",
    "Pss_File:": "pss_shared",
    "Pss_Shmem:": "pss_shared",
    "Rss:": "rss",
}


@dataclass
class TreeMemory:
    pss: int
    pss_anon: int
    pss_shared: int
    rss: int
    processes: int
    # What the kernel charges to the root process's memory cgroup, when that cgroup is not
    # the sampler's own (the database in a container of its own); page cache included.
    cgroup: int | None = None


CGROUP_ROOT = Path("/sys/fs/cgroup")


def memory_cgroup(pid: int) -> str | None:
    """The memory cgroup path of a process: the v1 memory controller's, else v2's."""
    try:
        lines = (PROC / str(pid) / "cgroup").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    unified = None
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return f"memory{path}"
        if controllers == "":
            unified = path
    return f"unified{unified}" if unified is not None else None


def cgroup_memory(cgroup: str) -> int | None:
    """Bytes charged to a cgroup from memory_cgroup(), None when the file is not there."""
    kind, _, path = cgroup.partition("/")
    if kind == "memory":
        files = [CGROUP_ROOT / "memory" / path / "memory.usage_in_bytes"]
    else:
        # v2 mounted alone at the root, or beside v1 under unified/.
        files = [
            CGROUP_ROOT / path / "memory.current",
            CGROUP_ROOT / "unified" / path / "memory.current",
        ]
    for file in files:
        try:
            return int(file.read_text())
        except (FileNotFoundError, ValueError, PermissionError):
            continue
    return None


# The share of one core the sampler may use; its rounds spread out beyond the interval
# asked when they cost more (achieved_interval says what it was).
CPU_BUDGET = 0.02


@dataclass
class MemorySample:
    t: float  # time.time(), to line up with Locust's history timestamps
    label: str
    memory: TreeMemory


def _parent(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def _children() -> dict[int, list[int]]:
    """parent pid -> child pids, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        parent = _parent(int(entry.name))
        if parent is not None:
            children.setdefault(parent, []).append(int(entry.name))
    return children


def process_tree(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """pid then all its living descendants; empty when pid itself is gone.

    `children` (from one pass over /proc) can be shared by the trees of one moment.
    """
    if not (PROC / str(pid)).exists():
        return []
    if children is None:
        children = _children()
    tree, seen = [pid], {pid}
    for current in tree:  # grows as it goes; `seen` keeps it finite
        for child in sorted(children.get(current, ())):
            if child not in seen:
                seen.add(child)
                tree.append(child)
    return tree


def _rollup(pid: int) -> dict[str, int] | None:
    """The smaps_rollup sizes of one process in bytes; None when it is gone."""
    sizes = dict.fromkeys(set(ROLLUP_FIELDS.values()), 0)
    try:
        with open(PROC / str(pid) / "smaps_rollup", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, rest = line.partition(" ")
                field = ROLLUP_FIELDS.get(key)
                if field is not None:
                    sizes[field] += int(rest.split()[0]) * 1024  # always in kB
    except (FileNotFoundError, ProcessLookupError):
        return None
    return sizes


def tree_memory(pid: int, children: dict[int, list[int]] | None = None) -> TreeMemory:
    """The summed memory of pid and its descendants, skipping those that exit meanwhile."""
    total = TreeMemory(pss=0, pss_anon=0, pss_shared=0, rss=0, processes=0)
    for member in process_tree(pid, children):
        sizes = _rollup(member)
        if sizes is None:
            continue
        total.processes += 1
        total.pss += sizes["pss"]
        total.pss_anon += sizes["pss_anon"]
        total.pss_shared += sizes["pss_shared"]
        total.rss += sizes["rss"]
    return total


class MemorySampler:
    """Samples the memory of labelled process trees every `interval` seconds in a thread.

    Samples are kept for stop() unless on_sample is given: then each is handed to it as
    taken and none is kept. The sampler measures its own cost: cpu_fraction is the CPU time
    its thread used over the wall time it ran, achieved_interval the mean spacing of its
    rounds (longer than asked when a round takes longer than the interval, or costs more
    CPU than `cpu_budget` of the interval).
    """

    def __init__(
        self,
        targets: dict[str, int],
        interval: float = 1.0,
        on_sample: Callable[[MemorySample], None] | None = None,
        cpu_budget: float = CPU_BUDGET,
    ) -> None:
        if not interval > 0:
            raise ValueError("the sampling interval must be above 0 seconds")
        if not 0 < cpu_budget <= 1:
            raise ValueError("the CPU budget is a fraction of a core, above 0 and at most 1")
        self.cpu_budget = cpu_budget
        self.targets = dict(targets)
        self.interval = interval
        self.on_sample = on_sample
        self.errors = 0
        self.last_error: str | None = None
        self._samples: list[MemorySample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rounds = 0
        self._first_round: float | None = None
        self._last_round: float | None = None
        self._started = 0.0
        self._ended: float | None = None
        self._cpu = 0.0
        self._cgroups: dict[str, str | None] = {}

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("this sampler was already started")
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> list[MemorySample]:
        """Stop sampling (waiting at most `timeout` s for the round under way)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._ended is None:
            self._ended = time.monotonic()
        return list(self._samples)

    @property
    def rounds(self) -> int:
        return self._rounds

    @property
    def cpu_fraction(self) -> float:
        wall = (self._ended or time.monotonic()) - self._started
        return self._cpu / wall if wall > 0 else 0.0

    @property
    def achieved_interval(self) -> float | None:
        if self._rounds < 2 or self._first_round is None or self._last_round is None:
            return None
        return (self._last_round - self._first_round) / (self._rounds - 1)

    def _run(self) -> None:
        cpu_start = time.thread_time()
        next_round = time.monotonic()
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                round_cpu = time.thread_time()
                self._round()
                round_cpu = time.thread_time() - round_cpu
                self._rounds += 1
                if self._first_round is None:
                    self._first_round = began
                self._last_round = began
                self._cpu = time.thread_time() - cpu_start
                # smaps_rollup walks each process's page tables: with many large backends a
                # round costs more, and the rounds spread out to stay within the budget.
                next_round += max(self.interval, round_cpu / self.cpu_budget)
                now = time.monotonic()
                if next_round < now:  # a slow round: do not try to catch up
                    next_round = now
                self._stop.wait(next_round - now)
        finally:
            self._cpu = time.thread_time() - cpu_start
            self._ended = time.monotonic()

    def _own_cgroup(self, label: str, pid: int) -> str | None:
        """The root's memory cgroup when it has one of its own (looked up once)."""
        if label not in self._cgroups:
            theirs = memory_cgroup(pid)
            self._cgroups[label] = theirs if theirs != memory_cgroup(os.getpid()) else None
        return self._cgroups[label]

    def _round(self) -> None:
        try:
            children = _children()  # one pass over /proc for all the targets
        except OSError as exc:
            children = None
            self.last_error = f"/proc: {exc}"
        for label, pid in self.targets.items():
            try:
                memory = tree_memory(pid, children)
                cgroup = self._own_cgroup(label, pid)
                if cgroup is not None and memory.processes:
                    memory.cgroup = cgroup_memory(cgroup)
                sample = MemorySample(t=time.time(), label=label, memory=memory)
                if self.on_sample is not None:
                    self.on_sample(sample)
                else:
                    self._samples.append(sample)
            except Exception as exc:  # one unreadable tree must not end the sampling
                self.errors += 1
                self.last_error = f"{label}: {exc}"
                logger.warning("memory sample of %s (pid %s) failed: %s", label, pid, exc)
