"""Finding and running the PostgreSQL command-line tools.

Every tool runs with a deadline, from an argument list, and its failure becomes a
`PgToolError` whose message is short enough for the run page and never carries a password:
the conninfo strings we hand to the tools hold them, and tools echo what they were given.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import selectors
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from perfruns.system import kill_group, spawn

# Debian/Ubuntu install the server binaries per major version, off PATH.
SERVER_BIN_ROOT = Path("/usr/lib/postgresql")

_CLIENT_TOOLS = frozenset(
    {"pg_dump", "pg_dumpall", "pg_restore", "psql", "pg_isready", "vacuumdb", "createdb", "dropdb"}
)
_SERVER_PACKAGE = "the PostgreSQL server package (Debian: apt-get install postgresql)"
_CLIENT_PACKAGE = "the PostgreSQL client package (Debian: apt-get install postgresql-client)"

# Lines worth showing a person: the failure and what PostgreSQL suggests about it.
_IMPORTANT = re.compile(
    r"error|fatal|panic|could not|cannot|no space left|denied|failed|invalid|not found"
    r"|does not exist|too long|too short|corrupt|unexpected|refused|in use|^hint:",
    re.IGNORECASE,
)
# Progress chatter of `-v`, pg_ctl's waiting dots and usage hints.
_NOISE = re.compile(
    r"^(?:\S+: (?:processing|creating|launching|finished|skipping|entering|connecting"
    r"|implied|executing|setting|dropping|restoring|while processing|from toc entry)\b"
    r"|try \".*--help\"|waiting for server|stopped waiting|\.+$|\.* ?done$)",
    re.IGNORECASE,
)
# pg_restore quotes the failing SQL ("Command was: ...") and the row ("DETAIL: Key (email)=...");
# both can hold data from the dump, which is not ours to print.
_DATA_ECHO = re.compile(r"^(?:command was:|detail:|context:|copy )", re.IGNORECASE)
_MAX_LINES = 6
DISK_FULL = "the disk is full"
_MAX_LINE_CHARS = 300

_URI_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/@:]*:)[^\s/]*(?=@)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s#]*", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"((?<![?&])\b\w*password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_SQL_PASSWORD = re.compile(r"(\bpassword\s+)'(?:[^']|'')*'", re.IGNORECASE)


class PgToolError(RuntimeError):
    """A PostgreSQL tool failed; `message` is fit to show a person (condensed, redacted)."""

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(message)
        self.tool = tool
        self.message = message


class ToolMissing(PgToolError):
    """The tool is not installed where we look for it."""


class ToolCancelled(PgToolError):
    """The caller's `cancel` event was set: the tool was stopped."""


def find_binary(name: str) -> str:
    """Path of a PostgreSQL tool: PATH first, then the newest /usr/lib/postgresql/<v>/bin."""
    found = shutil.which(name)
    if found:
        return found
    for bin_dir in _versioned_bin_dirs():
        candidate = bin_dir / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    package = _CLIENT_PACKAGE if name in _CLIENT_TOOLS else _SERVER_PACKAGE
    raise ToolMissing(
        name, f"{name} not found on PATH or under {SERVER_BIN_ROOT}/*/bin: install {package}"
    )


def _versioned_bin_dirs() -> list[Path]:
    def version(path: Path) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in path.parent.name.split("."))
        except ValueError:
            return (-1,)

    # Sorted as numbers: "9.6" is older than "15", which a string sort gets wrong.
    return sorted(SERVER_BIN_ROOT.glob("*/bin"), key=version, reverse=True)


def redact(text: str) -> str:
    """`text` with the passwords of conninfo strings, URIs and SQL replaced by ***."""
    text = _URI_USERINFO.sub(r"\1***", text)
    text = _QUERY_PASSWORD.sub(r"\1***", text)
    text = _KV_PASSWORD.sub(r"\1***", text)
    return _SQL_PASSWORD.sub(r"\1'***'", text)


# Parallel workers (pg_restore -j) write to one stderr in fragments ("pg_restore: ", then
# "error: ", then the text), so the fragments of two workers can interleave at a line's head:
# "pg_restore: pg_restore:error:  could not read". The head is put back together.
_INTERLEAVED_HEAD = re.compile(
    r"^(?P<tool>[\w.-]+):\s*(?:(?P=tool):\s*)*"
    r"(?:(?P<level>error|warning|detail|hint):\s*(?:(?:(?P=tool)|(?P=level)):\s*)*)?"
)


def _reassembled(line: str) -> str:
    head = _INTERLEAVED_HEAD.match(line)
    if head is None or head[0].count(f"{head['tool']}:") < 2:
        return line  # one writer: the line is as the tool wrote it
    rest = line[head.end() :]
    level = f"{head['level']}: " if head["level"] else ""
    return f"{head['tool']}: {level}{rest}"


def condense(output: str) -> str:
    """The meaningful lines of a tool's output on one line, redacted; says when the disk is full."""
    lines: list[str] = []
    for raw in output.splitlines():
        line = _reassembled(raw.strip())
        if not line or _NOISE.search(line) or _DATA_ECHO.search(line):
            continue
        line = line if len(line) <= _MAX_LINE_CHARS else line[: _MAX_LINE_CHARS - 1] + "…"
        if line not in lines:
            lines.append(line)
    important = [line for line in lines if _IMPORTANT.search(line)]
    # The first errors are the cause; later ones ("a worker process died") are consequences.
    chosen = important[:_MAX_LINES] if important else lines[-_MAX_LINES:]
    message = "; ".join(chosen)
    if "no space left on device" in output.lower():
        message = f"{DISK_FULL} (No space left on device): {message}"
    return redact(message)


def conninfo(host: str, port: int, user: str, dbname: str, password: str | None = None) -> str:
    """A libpq keyword/value conninfo string, quoted where the values need it."""
    params: dict[str, str] = {"host": host, "port": str(port), "user": user, "dbname": dbname}
    if password is not None:
        params["password"] = password
    return make_conninfo("", **params)


def current_os_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a container uid without a passwd entry
        return str(os.geteuid())


def run(
    cmd: list[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    as_user: str | None = None,
    stdin: str | bytes | IO[bytes] | None = None,
    on_stderr_line: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool and return its output, or raise `PgToolError` with a condensed message.

    `env` adds to (and overrides) the inherited environment. `as_user` runs the tool as that
    OS user through runuser (only root may switch). `on_stderr_line` sees each stderr line as
    it arrives, in this thread, for progress reports. The tool and every process it started
    in its session are killed when the deadline passes, when `cancel` is set (then
    `ToolCancelled` is raised, within half a second) or an exception (KeyboardInterrupt
    too) leaves this function.
    """
    if not cmd:
        raise ValueError("cmd is empty")
    tool = Path(cmd[0]).name
    argv = [str(part) for part in cmd]
    cwd = None
    if as_user is not None and as_user != current_os_user():
        if os.geteuid() != 0:
            raise PgToolError(
                tool,
                f"cannot run {tool} as the OS user {as_user}: "
                f"Fixproof runs as {current_os_user()}, not root",
            )
        argv = [_runuser(), "-u", as_user, "--", *argv]
        # PostgreSQL tools resolve their working directory at start and give up when the
        # target user may not enter ours (root's home, a private checkout).
        cwd = "/"
    full_env = {**os.environ, **env} if env is not None else None

    if isinstance(stdin, str | bytes):
        stdin_arg: int | IO[bytes] = subprocess.PIPE
        stdin_data: bytes | None = stdin.encode() if isinstance(stdin, str) else stdin
    else:
        stdin_arg = stdin if stdin is not None else subprocess.DEVNULL
        stdin_data = None

    try:
        # Its own process group, so a deadline also ends pg_restore's -j workers.
        proc = spawn(
            argv,
            stdin=stdin_arg,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
        )
    except FileNotFoundError as exc:
        raise ToolMissing(tool, f"{tool} could not be started: {exc.strerror}") from exc
    except PermissionError as exc:
        raise PgToolError(tool, f"{tool} could not be started: {exc.strerror}") from exc

    stderr_tail: deque[str] = deque(maxlen=400)
    # Verbose tools print thousands of lines; keep the errors even when they scroll away.
    stderr_errors: list[str] = []
    stdout_chunks: list[bytes] = []
    outcome = _FINISHED
    try:
        if stdin_data is not None:
            threading.Thread(target=_feed, args=(proc, stdin_data), daemon=True).start()
        outcome = _pump(
            proc,
            deadline=time.monotonic() + timeout,
            cancel=cancel,
            stdout_chunks=stdout_chunks,
            on_line=lambda line: _keep_line(line, stderr_tail, stderr_errors, on_stderr_line),
        )
    finally:
        if proc.poll() is None:
            kill_group(proc)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()

    if outcome == _TIMED_OUT:
        raise PgToolError(tool, f"{tool} did not finish within {timeout:g} s and was stopped")
    if outcome == _CANCELLED:
        raise ToolCancelled(tool, f"{tool} was stopped")
    stdout_text = b"".join(stdout_chunks).decode(errors="replace")
    if proc.returncode != 0:
        detail = condense("\n".join([*stderr_errors, *stderr_tail])) or condense(stdout_text)
        if not detail:
            detail = f"exited with status {proc.returncode}"
        if not detail.startswith((tool, DISK_FULL)):
            detail = f"{tool}: {detail}"
        raise PgToolError(tool, detail)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout_text, "\n".join(stderr_tail))


def _keep_line(
    line: str,
    tail: deque[str],
    errors: list[str],
    on_line: Callable[[str], None] | None,
) -> None:
    tail.append(line)
    if _IMPORTANT.search(line) and len(errors) < 50 and not _NOISE.search(line):
        errors.append(line)
    if on_line is not None:
        on_line(line)


_FINISHED, _TIMED_OUT, _CANCELLED = "finished", "timed out", "cancelled"


def _pump(
    proc: subprocess.Popen[bytes],
    *,
    deadline: float,
    cancel: threading.Event | None,
    stdout_chunks: list[bytes],
    on_line: Callable[[str], None],
) -> str:
    """Read stdout and stderr until both close, the deadline or `cancel`; how it ended."""
    assert proc.stdout is not None and proc.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ, "out")
    selector.register(proc.stderr, selectors.EVENT_READ, "err")
    pending = b""
    exited_at: float | None = None
    try:
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                return _TIMED_OUT
            if cancel is not None and cancel.is_set():
                return _CANCELLED
            if proc.poll() is not None:
                # A daemon the tool started (pg_ctl's postmaster) may hold our pipes open
                # forever; once the tool itself is gone, read what is left and move on.
                exited_at = exited_at or now
                if now - exited_at > 2:
                    break
            for key, _ in selector.select(timeout=min(0.5, deadline - now)):
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fileobj)
                elif key.data == "out":
                    stdout_chunks.append(data)
                else:
                    pending += data
                    *complete, pending = pending.split(b"\n")
                    for raw in complete:
                        on_line(raw.decode(errors="replace").rstrip("\r"))
        if pending:
            on_line(pending.decode(errors="replace"))
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return _TIMED_OUT
        return _FINISHED
    finally:
        selector.close()


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, OSError):
        proc.stdin.write(data)
    with contextlib.suppress(BrokenPipeError, OSError):
        proc.stdin.close()


def _runuser() -> str:
    found = shutil.which("runuser") or next(
        (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise ToolMissing(
            "runuser", "runuser not found: install util-linux (Debian: apt-get install util-linux)"
        )
    return found


def split_password(conninfo: str) -> tuple[str, dict[str, str]]:
    """The conninfo without its password, and the environment that gives it to a tool."""
    # A password on pg_restore's command line is readable by every local user (ps); the
    # environment of a process is not.
    params = conninfo_to_dict(conninfo)
    password = params.pop("password", None)
    env = {"PGPASSWORD": str(password)} if password else {}
    return make_conninfo("", **params), env


def one_value(cursor: psycopg.Cursor[Any]) -> Any:
    """The first column of a query's one row (a SHOW, an aggregate, a function's value)."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the query returned no row")
    return row[0]
