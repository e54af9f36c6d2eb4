"""What Fixproof asks of the operating system: the process groups it starts and stops, and
the digests of the files it writes.

Every program Fixproof starts (PostgreSQL tools, Locust, the target) leads a session of its
own, so that stopping it stops its children too; a killed worker's groups are found again
by the pid files they were recorded in. Plain library code: no Django, no models.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

HASH_CHUNK = 1 << 20
# What a Popen stream argument accepts: a constant (DEVNULL, PIPE, STDOUT), a file or None.
Stream = int | IO[Any] | None


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: Stream = subprocess.DEVNULL,
    stdout: Stream = None,
    stderr: Stream = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` (never through a shell) as the leader of a new process group."""
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group at once (a timeout or a failure), and reap its leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def stop_group(proc: subprocess.Popen[bytes], *, grace: float = 10) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # children it left behind
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def record_spawn(pid_file: Path, pid: int, argv0: str) -> None:
    """Remember a process group we started, for the janitor should this worker die."""
    with pid_file.open("a") as handle:
        handle.write(f"{pid} {argv0}\n")


def stop_recorded(pid_file: Path) -> list[int]:
    """Kill the process groups listed in `pid_file` that are still the ones we started
    (the same program, still leading its own session); returns the pids killed."""
    killed: list[int] = []
    try:
        lines = pid_file.read_text().splitlines()
    except OSError:
        return killed
    for line in lines:
        pid_text, _, argv0 = line.partition(" ")
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            session = os.getsid(pid)
        except (OSError, ProcessLookupError):
            continue
        # A script runs as "interpreter script ...": its path is the first or second word.
        if argv0 not in args[:2] or session != pid:
            continue  # the pid was reused by another program
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def file_sha256(path: Path | str) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
