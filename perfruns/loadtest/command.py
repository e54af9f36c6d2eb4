"""Locust command lines for one load test, and the files they write.

Locust is always run as a subprocess (it patches the interpreter with gevent): this module
only builds argv lists and writes the small generated locustfiles a shape needs.

    constant   -u users -r spawn_rate -t duration
    steps      a generated LoadTestShape file loaded before the user's locustfile:
               start, start + size, ... up to max users, each level for step_duration_s
    arrival    a generated wrapper locustfile that imports the user's one by path and gives
               every User class wait_time = constant_throughput(arrival_rps / users), so
               task iterations arrive at a fixed total rate instead of waiting for replies

Locust appends ".json" to --json-file, so the plan passes the name without it.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from perfruns.system import kill_group, spawn

KINDS = ("constant", "steps", "arrival")
# Seconds a user gets to finish its current task once the run time is over.
STOP_TIMEOUT_S = 10
# Seconds a distributed master waits for its workers to connect before giving up.
EXPECT_WORKERS_MAX_WAIT_S = 60
FILE_PREFIX = "locust"
SHAPE_FILE = "fixproof_step_shape.py"
ARRIVAL_FILE = "fixproof_arrival.py"


@dataclass(frozen=True)
class LoadShape:
    kind: str  # "constant" | "steps" | "arrival"
    users: int = 10
    spawn_rate: float = 10
    duration_s: int = 60
    step_start: int = 0
    step_size: int = 0
    step_duration_s: int = 0
    step_max: int = 0
    arrival_rps: float = 0.0

    def validate(self) -> list[str]:
        """One sentence per bad field; empty when the shape can run."""
        if self.kind not in KINDS:
            return [f"the load shape must be constant, steps or arrival, not {self.kind!r}"]
        errors = []
        if not self.spawn_rate > 0:
            errors.append("the spawn rate must be above 0 users per second")
        if self.kind in ("constant", "arrival"):
            if self.users < 1:
                errors.append("the load needs at least 1 user")
            if self.duration_s < 1:
                errors.append("the duration must be at least 1 second")
        if self.kind == "arrival" and not self.arrival_rps > 0:
            errors.append("a fixed arrival rate must be above 0 requests per second")
        if self.kind == "steps":
            if self.step_start < 0:
                errors.append("steps cannot start below 0 users")
            if self.step_size < 1:
                errors.append("steps need a step size of at least 1")
            if self.step_duration_s < 1:
                errors.append("each step must last at least 1 second")
            if self.step_size >= 1 and self.step_max < self.first_step_users:
                errors.append(
                    f"the step maximum must be at least the first step's "
                    f"{self.first_step_users} users"
                )
        return errors

    @property
    def first_step_users(self) -> int:
        """A step load starting at 0 users starts at one step instead."""
        return self.step_start if self.step_start > 0 else self.step_size

    def step_levels(self) -> list[int]:
        """User counts of a step load: start, start + size, ..., with the last one at max."""
        first, size, top = self.first_step_users, self.step_size, self.step_max
        if size < 1 or top < first:
            return []
        count = math.ceil((top - first) / size) + 1
        return [min(first + i * size, top) for i in range(count)]


@dataclass
class LocustPlan:
    master: list[str]
    workers: list[list[str]]
    csv_prefix: Path
    json_file: Path
    html_file: Path
    log_file: Path
    history_file: Path
    failures_file: Path
    stats_file: Path
    # The run time plus the stop timeout: a healthy run ends within it, start-up aside.
    expected_duration_s: float
    worker_log_files: list[Path] = field(default_factory=list)


def locust_plan(
    *,
    locust: str,
    locustfile: Path,
    host: str,
    shape: LoadShape,
    workdir: Path,
    workers: int = 0,
    stop_timeout_s: int = STOP_TIMEOUT_S,
) -> LocustPlan:
    """The argv of a headless Locust run (and of its workers), writing its files in workdir.

    Locust exits 0 even when requests failed (--exit-code-on-error 0), so a non-zero exit
    means the run itself broke. The argv uses absolute paths only.
    """
    errors = shape.validate()
    if errors:
        raise ValueError("; ".join(errors))
    if workers < 0:
        raise ValueError("the number of workers cannot be negative")
    workdir = Path(workdir).resolve()
    locustfile = Path(locustfile).resolve()
    for path in (workdir, locustfile):
        if "," in str(path):
            raise ValueError(f"Locust splits -f on commas: {path} cannot hold one")
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = workdir / FILE_PREFIX

    if shape.kind == "steps":
        shape_file = workdir / SHAPE_FILE
        shape_file.write_text(step_shape_source(shape))
        # Locust runs the first shape class it loads: ours, even if the locustfile has one.
        files = f"{shape_file},{locustfile}"
        load: list[str] = []
        run_time = len(shape.step_levels()) * shape.step_duration_s
    else:
        if shape.kind == "arrival":
            wrapper = workdir / ARRIVAL_FILE
            wrapper.write_text(arrival_source(locustfile, shape.arrival_rps / shape.users))
            files = str(wrapper)
        else:
            files = str(locustfile)
        load = ["-u", str(shape.users), "-r", _number(shape.spawn_rate)]
        load += ["-t", f"{shape.duration_s}s"]
        run_time = shape.duration_s

    master = [locust, "-f", files, "--headless", "--host", host, *load]
    master += ["--csv", str(prefix), "--csv-full-history"]
    master += ["--json-file", str(prefix), "--html", f"{prefix}.html"]
    master += ["--logfile", f"{prefix}.log", "--loglevel", "INFO", "--only-summary"]
    master += ["--stop-timeout", str(stop_timeout_s), "--exit-code-on-error", "0"]

    worker_argvs: list[list[str]] = []
    worker_logs: list[Path] = []
    if workers:
        port = free_port()
        master += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)]
        master += ["--expect-workers", str(workers)]
        master += ["--expect-workers-max-wait", str(EXPECT_WORKERS_MAX_WAIT_S)]
        for number in range(1, workers + 1):
            log = workdir / f"{FILE_PREFIX}-worker{number}.log"
            worker_logs.append(log)
            worker_argvs.append(
                [locust, "-f", files, "--worker", "--master-host", "127.0.0.1"]
                + ["--master-port", str(port), "--host", host]
                + ["--logfile", str(log), "--loglevel", "INFO"]
            )

    return LocustPlan(
        master=master,
        workers=worker_argvs,
        csv_prefix=prefix,
        json_file=workdir / f"{FILE_PREFIX}.json",
        html_file=workdir / f"{FILE_PREFIX}.html",
        log_file=workdir / f"{FILE_PREFIX}.log",
        history_file=workdir / f"{FILE_PREFIX}_stats_history.csv",
        failures_file=workdir / f"{FILE_PREFIX}_failures.csv",
        stats_file=workdir / f"{FILE_PREFIX}_stats.csv",
        expected_duration_s=float(run_time + stop_timeout_s),
        worker_log_files=worker_logs,
    )


def step_shape_source(shape: LoadShape) -> str:
    """A LoadTestShape whose parameters are literal constants of the generated file."""
    return f'''"""Step load generated by Fixproof: do not edit."""

from locust import LoadTestShape

LEVELS = {shape.step_levels()!r}
STEP_SECONDS = {float(shape.step_duration_s)!r}
SPAWN_RATE = {float(shape.spawn_rate)!r}


class FixproofStepShape(LoadTestShape):
    def tick(self):
        step = int(self.get_run_time() // STEP_SECONDS)
        if step >= len(LEVELS):
            return None
        return LEVELS[step], SPAWN_RATE
'''


def arrival_source(locustfile: Path, per_user_rate: float) -> str:
    """A locustfile running the User classes of `locustfile` at a constant throughput each."""
    module = locustfile.stem
    if module in ("locust", Path(ARRIVAL_FILE).stem):
        module = "locustfile"
    return f'''"""Fixed arrival rate generated by Fixproof: do not edit.

Every User class of the locustfile below runs its tasks at {per_user_rate!r} per second, so
N users together start N times that many task iterations a second, slow replies or not.
"""

import importlib.util
import sys

from locust import User, constant_throughput

LOCUSTFILE = {str(locustfile)!r}
MODULE = {module!r}
PER_USER_RATE = {float(per_user_rate)!r}


def _paced_user_classes():
    """The locustfile's runnable User classes, each set to PER_USER_RATE iterations/s."""
    sys.path.insert(0, {str(locustfile.parent)!r})
    spec = importlib.util.spec_from_file_location(MODULE, LOCUSTFILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    spec.loader.exec_module(module)
    found = {{}}
    for name, value in vars(module).items():
        if isinstance(value, type) and issubclass(value, User) and not value.abstract:
            value.wait_time = constant_throughput(PER_USER_RATE)
            found[name] = value
    return found


# Locust finds the User classes among this module's names.
globals().update(_paced_user_classes())
'''


def check_locustfile(locust: str, locustfile: Path, *, timeout: float = 30) -> str | None:
    """None when Locust loads the file and finds a User class in it, else one line saying why."""
    locustfile = Path(locustfile)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = spawn(
            [locust, "-f", str(locustfile), "--list", "--loglevel", "WARNING"],
            stdout=out,
            stderr=err,
            cwd=locustfile.parent if locustfile.parent.is_dir() else None,
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"Locust took more than {timeout:g} s to load {locustfile.name}"
        finally:
            kill_group(proc)
        stdout, stderr = _tail(out), _tail(err)
    if code != 0:
        return _load_error(stderr or stdout, locustfile, code)
    users = stdout.split("Available Users:", 1)
    if len(users) < 2 or not users[1].strip():
        return f"{locustfile.name} defines no Locust User class"
    return None


def _tail(fh, size: int = 1 << 20) -> str:
    """The last `size` bytes of an output file: where a traceback ends."""
    end = fh.seek(0, os.SEEK_END)
    fh.seek(max(end - size, 0))
    return fh.read(size).decode(errors="replace")


def _load_error(output: str, locustfile: Path, code: int) -> str:
    """The exception of a traceback, with the file and line it points at."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    frames = []  # (file, line) of each traceback frame, innermost last
    for line in lines:
        stripped = line.strip()
        if stripped.startswith('File "') and ", line " in stripped:
            path, _, rest = stripped[len('File "') :].partition('", line ')
            frames.append((Path(path), rest.split(",")[0]))
    # The deepest frame in the user's file, else the deepest one.
    own = [frame for frame in frames if frame[0].name == locustfile.name]
    where = ""
    if own or frames:
        frame, line_number = (own or frames)[-1]
        where = f"{frame.name} line {line_number}"
    error = ""
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if not line.startswith((" ", "[")) and (head.endswith(("Error", "Exception"))):
            error = line
            break
    if error and where:
        return f"{where}: {error}"
    if error:
        return f"{locustfile.name}: {error}"
    tail = [line for line in lines if not line.startswith("[")]
    return tail[-1] if tail else f"Locust could not load {locustfile.name} (exit code {code})"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (another process may still take it before Locust)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
