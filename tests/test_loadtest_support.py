"""Shared by the load-test tests (it holds no test itself): a tiny target web app and a
runner that never leaves a Locust process behind.

Locust is only ever run as a subprocess: importing it here would patch the test process
with gevent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from perfruns.loadtest import LocustPlan

LOCUST = (
    shutil.which("locust", path=str(Path(sys.executable).parent))
    or shutil.which("locust")
    or "/work/main/.venv/bin/locust"
)

# Two endpoints: /ok always answers 200, /flaky answers 500 to every third request.
LOCUSTFILE = """\
from locust import HttpUser, constant, task


class Visitor(HttpUser):
    wait_time = constant(0.05)

    @task(2)
    def ok(self):
        self.client.get("/ok")

    @task
    def flaky(self):
        self.client.get("/flaky")
"""
FLAKY_EVERY = 3


def write_locustfile(folder: Path, text: str = LOCUSTFILE, name: str = "visitors.py") -> Path:
    path = folder / name
    path.write_text(text)
    return path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status = 404
        if self.path == "/ok":
            status = 200
        elif self.path == "/flaky":
            with self.server.lock:  # type: ignore[attr-defined]
                self.server.flaky_count += 1  # type: ignore[attr-defined]
                count = self.server.flaky_count  # type: ignore[attr-defined]
            status = 500 if count % FLAKY_EVERY == 0 else 200
        body = b"ok\n" if status == 200 else b"no\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@contextlib.contextmanager
def target_server() -> Iterator[str]:
    """The URL of a web app on a free port of 127.0.0.1, served from a thread."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    server.flaky_count = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def run_plan(plan: LocustPlan, *, margin_s: float = 60) -> int:
    """Run the plan's master and workers to their end; the master's exit code.

    Everything is killed on the way out, whether the run ended, timed out or failed.
    """
    workdir = plan.csv_prefix.parent
    deadline = time.monotonic() + plan.expected_duration_s + margin_s
    procs: list[subprocess.Popen] = []
    try:
        argvs = [plan.master, *plan.workers]
        for number, argv in enumerate(argvs):
            with (workdir / f"console-{number}.txt").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=workdir,
                        start_new_session=True,
                    )
                )
        code = procs[0].wait(timeout=max(deadline - time.monotonic(), 1))
        for worker in procs[1:]:
            worker.wait(timeout=max(deadline - time.monotonic(), 1))
        return code
    finally:
        for proc in procs:
            _kill_group(proc)


def console(plan: LocustPlan) -> str:
    """What the master printed, to explain a failing assertion."""
    path = plan.csv_prefix.parent / "console-0.txt"
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""
