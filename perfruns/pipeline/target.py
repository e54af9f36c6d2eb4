"""The application under test (DESIGN.md step 4): started by its command with the run's
DATABASE_URL in a process group of its own, waited for on its health URL, stopped after.

Plain library code: no Django, no models.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from perfruns.system import spawn, stop_group


class RunStepError(RuntimeError):
    """A step of the run failed; the message names the step and says why, for a person."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


class RunCancelled(Exception):
    """Someone asked the run to stop."""


def is_loopback_url(url: str) -> bool:
    """Only this machine's addresses may be load-test targets."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4096))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)


def port_in_use(url: str) -> bool:
    """Whether something already accepts connections where the target should listen."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Target:
    """The application under test, started by its command with the run's DATABASE_URL."""

    command: str
    env: dict[str, str]
    log_file: Path
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def argv0(self) -> str:
        """The program started (spawn always takes a list)."""
        if self.proc is None or not isinstance(self.proc.args, list):
            return ""
        return str(self.proc.args[0])

    def start(self) -> int:
        try:
            argv = shlex.split(self.command)
        except ValueError as exc:
            raise RunStepError(
                "starting the target", f"the start command is not valid: {exc}"
            ) from None
        if not argv:
            raise RunStepError("starting the target", "the start command is empty")
        with self.log_file.open("ab") as log:
            try:
                self.proc = spawn(
                    argv,
                    cwd=self.cwd,
                    env={**os.environ, **self.env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            except OSError as exc:
                raise RunStepError(
                    "starting the target", f"{argv[0]} could not be started: {exc.strerror}"
                ) from exc
        return self.proc.pid

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_healthy(self, url: str, *, timeout: float, cancelled: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            status = self.exited()
            if status is not None:
                raise RunStepError(
                    "waiting for the target",
                    f"the target exited with status {status} before it was healthy"
                    + (f" (its log ends: {tail})" if (tail := log_tail(self.log_file)) else ""),
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                    if 200 <= response.status < 300:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            if cancelled():
                raise RunCancelled()
            if time.monotonic() >= deadline:
                raise RunStepError(
                    "waiting for the target",
                    f"{url} was not healthy within {timeout:g} s (last: {last})",
                )
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
