"""Managed review clusters: a scratch PostgreSQL made with initdb and driven with pg_ctl.

The cluster lives in a folder of its own, listens on 127.0.0.1 only, on a free port, with
pg_stat_statements preloaded and the memory settings of the review environment (they change
what the RAM figures of a run mean, so they are written down and read back). PostgreSQL
refuses to run as root, so when Fixproof is root the cluster runs as an unprivileged OS user.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pwd
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from perfruns.pipeline.pgtools import (
    PgToolError,
    ToolMissing,
    condense,
    conninfo,
    current_os_user,
    find_binary,
    run,
)

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
SUPERUSER = "postgres"
SETTINGS_FILE = "fixproof.conf"
RECORD_FILE = "fixproof.json"
LOG_FILE = "server.log"
STOP_MODES = frozenset({"smart", "fast", "immediate"})
MEMORY_SETTINGS = ("shared_buffers", "work_mem", "max_connections")

# sockaddr_un.sun_path holds 108 bytes with the final NUL; PostgreSQL refuses longer paths.
_SOCKET_PATH_MAX = 107
_SOCKET_NAME = "/.s.PGSQL.65535"
# Values go into postgresql.conf: a unit-suffixed number and nothing that could close a quote.
_MEMORY_VALUE = re.compile(r"^\d+\s*(?:B|kB|MB|GB|TB)?$")
_PORT_TAKEN = re.compile(r"could not bind|address already in use|already in use", re.IGNORECASE)
_INITDB_TIMEOUT = 300.0
# The default log_line_prefix ("%m [%p] "): noise in a message shown to a person.
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[\d+\] ", re.MULTILINE)


class ClusterError(RuntimeError):
    """A managed cluster could not be made, started or stopped; the message says why."""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (another process may take it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class ManagedCluster:
    """One PostgreSQL cluster in `data_dir`, run as `os_user`.

    `os_user` None means the current user, or 'postgres' when Fixproof runs as root.
    """

    def __init__(self, data_dir: Path, *, os_user: str | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.os_user = _resolve_os_user(os_user)
        self.port: int | None = self._pidfile_port() if self.pid() is not None else None

    def __repr__(self) -> str:
        return f"ManagedCluster({str(self.data_dir)!r}, os_user={self.os_user!r}, port={self.port})"

    # Life cycle -----------------------------------------------------------------------------

    def initialize(
        self,
        *,
        shared_buffers: str,
        work_mem: str,
        max_connections: int,
        durable: bool,
        timeout: float = _INITDB_TIMEOUT,
    ) -> None:
        """Create the cluster if needed and (re)write its settings.

        The settings take effect at the next start: on a running cluster, `settings()` keeps
        reporting what the server runs with until it is restarted.

        A scratch cluster (durable=False) trades crash safety for restore speed: nothing in
        it needs to survive a power cut, the anonymized dump is the source of truth.
        """
        for name, value in (("shared_buffers", shared_buffers), ("work_mem", work_mem)):
            if not _MEMORY_VALUE.match(value):
                raise ValueError(f"{name} must be a size such as 128MB, not {value!r}")
        if isinstance(max_connections, bool) or not 1 <= max_connections <= 10_000:
            raise ValueError(f"max_connections must be between 1 and 10000, not {max_connections}")
        socket_path_length = len(os.fsencode(self.data_dir)) + len(_SOCKET_NAME)
        if socket_path_length > _SOCKET_PATH_MAX:
            raise ClusterError(
                f"the data folder {self.data_dir} is too long for PostgreSQL's Unix socket "
                f"(at most {_SOCKET_PATH_MAX - len(_SOCKET_NAME)} characters): choose a shorter one"
            )
        # Looked up before anything is written, so a missing initdb leaves no folder behind.
        initdb = find_binary("initdb")
        self._make_parents()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(initdb, durable=durable, timeout=timeout)
        self._chown(self.data_dir)
        self._write_settings(
            shared_buffers=shared_buffers,
            work_mem=work_mem,
            max_connections=max_connections,
            durable=durable,
        )

    def start(self, *, port: int | None = None, timeout: float = 60) -> int:
        """Start the server and return its port.

        Without `port`, a free one is picked, and another once more if something takes it
        between the pick and the bind. An explicit `port` is used as given or not at all.
        Already running: returns the port it runs on.
        """
        if not self.is_initialized():
            raise ClusterError(f"no cluster in {self.data_dir}: initialize it first")
        if self.is_running():
            running_port = self._pidfile_port()
            if running_port is None:
                raise ClusterError(
                    f"the cluster in {self.data_dir} runs, but its postmaster.pid names no port"
                )
            if port is not None and port != running_port:
                raise ClusterError(
                    f"the cluster in {self.data_dir} already runs on port {running_port}, "
                    f"not {port}"
                )
            self.port = running_port
            return running_port
        pg_ctl = self._server_binary("pg_ctl")
        log_file = self.data_dir / LOG_FILE
        tried: list[int] = []
        while True:
            candidate = port if port is not None else free_port()
            tried.append(candidate)
            log_offset = log_file.stat().st_size if log_file.exists() else 0
            try:
                run(
                    [
                        pg_ctl,
                        "start",
                        "-D",
                        str(self.data_dir),
                        "-w",
                        "-t",
                        str(max(1, math.ceil(timeout))),
                        "-l",
                        str(log_file),
                        "-o",
                        f"-p {candidate:d}",
                    ],
                    timeout=timeout + 15,
                    as_user=self.os_user,
                )
            except BaseException as exc:
                # pg_ctl gives up waiting but leaves a slow server starting: stop it, so a
                # failed start leaves nothing running behind.
                with contextlib.suppress(ClusterError, PgToolError):
                    if self.pid() is not None:
                        self.stop(mode="immediate")
                if not isinstance(exc, PgToolError) or isinstance(exc, ToolMissing):
                    raise
                server_log = _read_from(log_file, log_offset)
                if _PORT_TAKEN.search(server_log):
                    if port is None and len(tried) < 2:
                        continue
                    ports = " and ".join(str(p) for p in tried)
                    verb = "is" if len(tried) == 1 else "are"
                    raise ClusterError(
                        f"could not start the cluster in {self.data_dir}: "
                        f"port {ports} on {HOST} {verb} already in use"
                    ) from exc
                detail = condense(_LOG_PREFIX.sub("", server_log)) or exc.message
                raise ClusterError(
                    f"could not start the cluster in {self.data_dir}: {detail}"
                ) from exc
            self.port = candidate
            return candidate

    def stop(self, *, mode: str = "fast", timeout: float = 60) -> None:
        """Stop the server if it runs (fast: end sessions; immediate: no shutdown checkpoint)."""
        if mode not in STOP_MODES:
            raise ValueError(f"mode must be one of {sorted(STOP_MODES)}, not {mode!r}")
        if not self.is_running():
            self.port = None
            return
        pg_ctl = self._server_binary("pg_ctl")
        try:
            run(
                [
                    pg_ctl,
                    "stop",
                    "-D",
                    str(self.data_dir),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    str(max(1, math.ceil(timeout))),
                ],
                timeout=timeout + 15,
                as_user=self.os_user,
            )
        except ToolMissing:
            raise
        except PgToolError as exc:
            raise ClusterError(
                f"could not stop the cluster in {self.data_dir}: {exc.message}"
            ) from exc
        self.port = None

    def destroy(self) -> None:
        """Stop the server (immediate: its data is about to go) and delete the folder."""
        if not self.data_dir.exists():
            return
        # Deleting a folder as root is unforgiving: only ever one that is a cluster (or empty).
        if not self.is_initialized() and any(self.data_dir.iterdir()):
            raise ClusterError(f"{self.data_dir} holds no PostgreSQL cluster: not deleting it")
        self.stop(mode="immediate")
        shutil.rmtree(self.data_dir)
        self.port = None

    # State ----------------------------------------------------------------------------------

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def pid(self) -> int | None:
        """The postmaster's pid from postmaster.pid, when that process is alive and ours."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ClusterError(f"cannot read {self.data_dir / 'postmaster.pid'}: {exc}") from exc
        try:
            pid = int(first_line)
        except ValueError:
            return None  # written right now by a starting postmaster
        return pid if _is_postmaster_of(pid, self.data_dir) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def conninfo(self, dbname: str = "postgres") -> str:
        if self.port is None:
            raise ClusterError(f"the cluster in {self.data_dir} is not running")
        return conninfo(HOST, self.port, SUPERUSER, dbname)

    def settings(self) -> dict[str, Any]:
        """The memory settings: as the server reports them when running, else as recorded."""
        if self.is_running():
            self.port = self._pidfile_port()
            values: dict[str, Any] = {}
            with psycopg.connect(self.conninfo(), autocommit=True, connect_timeout=10) as conn:
                for name in MEMORY_SETTINGS:
                    row = conn.execute("SELECT current_setting(%s)", [name]).fetchone()
                    values[name] = row[0] if row else None
            values["max_connections"] = int(values["max_connections"])
            return values
        try:
            record = json.loads((self.data_dir / RECORD_FILE).read_text())
        except FileNotFoundError as exc:
            raise ClusterError(f"no cluster in {self.data_dir}: initialize it first") from exc
        return {name: record[name] for name in MEMORY_SETTINGS}

    # Helpers --------------------------------------------------------------------------------

    def _server_binary(self, name: str) -> str:
        # pg_ctl must match the initdb that made the cluster: take it from the same folder.
        initdb = Path(find_binary("initdb")).resolve()
        sibling = initdb.parent / name
        return str(sibling) if os.access(sibling, os.X_OK) else find_binary(name)

    def _pidfile_port(self) -> int | None:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().split("\n")
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def _make_parents(self) -> None:
        # Checked before creating anything, so a refusal leaves no folder behind.
        for parent in reversed(self.data_dir.parents):
            if not parent.exists():
                break
            if not _user_can_traverse(parent, self.os_user):
                raise ClusterError(
                    f"the OS user {self.os_user} cannot enter {parent}, on the way to the "
                    f"cluster folder {self.data_dir}: allow it (chmod o+x {parent}) or choose "
                    "a folder it can reach"
                )
        for parent in reversed(self.data_dir.parents):
            if not parent.exists():
                parent.mkdir()
                # Whatever our umask, the OS user has to walk through to its data folder.
                os.chmod(parent, 0o755)

    def _initdb(self, initdb: str, *, durable: bool, timeout: float) -> None:
        existed = self.data_dir.exists()
        if existed and any(self.data_dir.iterdir()):
            raise ClusterError(
                f"{self.data_dir} is not empty and holds no PostgreSQL cluster: "
                "choose an empty or new folder"
            )
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        # PostgreSQL refuses a data folder that others can read.
        os.chmod(self.data_dir, 0o700)
        self._chown(self.data_dir)
        cmd = [
            initdb,
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]
        if not durable:
            cmd.append("--no-sync")
        try:
            run(cmd, timeout=timeout, as_user=self.os_user)
        except BaseException as exc:
            # A half-made folder would pass for a cluster next time: remove what initdb wrote.
            if existed:
                _empty_directory(self.data_dir)
            else:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            if isinstance(exc, PgToolError) and not isinstance(exc, ToolMissing):
                raise ClusterError(
                    f"could not initialize a cluster in {self.data_dir}: {exc.message}"
                ) from exc
            raise

    def _write_settings(
        self, *, shared_buffers: str, work_mem: str, max_connections: int, durable: bool
    ) -> None:
        lines = [
            "# Written by Fixproof at every initialize(): edits here are overwritten.",
            f"listen_addresses = '{HOST}'",
            f"unix_socket_directories = {_conf_quote(str(self.data_dir))}",
            "shared_preload_libraries = 'pg_stat_statements'",
            f"shared_buffers = '{shared_buffers}'",
            f"work_mem = '{work_mem}'",
            f"max_connections = {max_connections:d}",
        ]
        if durable:
            lines += [
                "fsync = on",
                "synchronous_commit = on",
                "full_page_writes = on",
                "wal_level = replica",
                "max_wal_senders = 10",
            ]
        else:
            lines += [
                "# A scratch copy: durability traded for restore speed.",
                "fsync = off",
                "synchronous_commit = off",
                "full_page_writes = off",
                # Index builds and the masking's table rewrites then write no WAL at all.
                "wal_level = minimal",
                "max_wal_senders = 0",
            ]
        self._write_file(SETTINGS_FILE, "\n".join(lines) + "\n")
        self._write_file(
            "pg_hba.conf",
            "# Written by Fixproof: a scratch cluster, reachable only from this machine.\n"
            "# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
            "local   all       all                 trust\n"
            "host    all       all   127.0.0.1/32  trust\n",
        )
        main_conf = self.data_dir / "postgresql.conf"
        include = f"include = '{SETTINGS_FILE}'"
        text = main_conf.read_text()
        if include not in text.splitlines():
            # Last in the file, so our values win over the ones initdb wrote above.
            self._write_file("postgresql.conf", text.rstrip("\n") + f"\n\n{include}\n")
        record = {
            "shared_buffers": shared_buffers,
            "work_mem": work_mem,
            "max_connections": max_connections,
            "durable": durable,
        }
        self._write_file(RECORD_FILE, json.dumps(record, indent=2) + "\n")

    def _write_file(self, name: str, text: str) -> None:
        # Write-then-rename: a crash mid-write must not leave the server a half config file.
        fd, tmp = tempfile.mkstemp(dir=self.data_dir, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.chmod(tmp, 0o600)
            self._chown(Path(tmp))
            os.replace(tmp, self.data_dir / name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _chown(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam(self.os_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def stop_stale_clusters(root: Path, *, timeout: float = 60) -> list[Path]:
    """Stop (immediate) every cluster still running under `root`; return their folders.

    For the janitor: a worker killed mid-run leaves its cluster running, owned by the OS user
    it ran as, which is the owner of its folder. A cluster that cannot be stopped is logged
    and the others are still stopped.
    """
    stopped: list[Path] = []
    for data_dir in _cluster_dirs(Path(root)):
        if not (data_dir / "postmaster.pid").exists():
            continue
        try:
            owner = pwd.getpwuid(data_dir.stat().st_uid).pw_name
            cluster = ManagedCluster(data_dir, os_user=owner)
            if not cluster.is_running():
                continue
            cluster.stop(mode="immediate", timeout=timeout)
        except (ClusterError, PgToolError, KeyError, OSError):
            logger.exception("could not stop the stale cluster in %s", data_dir)
            continue
        logger.info("stopped the stale cluster in %s", data_dir)
        stopped.append(data_dir)
    return stopped


def _cluster_dirs(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if "PG_VERSION" in filenames:
            dirnames.clear()  # a cluster's own folders hold no other cluster
            yield Path(dirpath)


def _resolve_os_user(os_user: str | None) -> str:
    me = current_os_user()
    if os_user is None:
        os_user = "postgres" if os.geteuid() == 0 else me
    try:
        entry = pwd.getpwnam(os_user)
    except KeyError:
        raise ClusterError(
            f"the OS user {os_user} does not exist: create it (the Debian postgresql package "
            "creates 'postgres') or choose another"
        ) from None
    if entry.pw_uid == 0:
        raise ClusterError("PostgreSQL refuses to run as root: choose an unprivileged OS user")
    if os_user != me and os.geteuid() != 0:
        raise ClusterError(f"cannot run a cluster as {os_user}: Fixproof runs as {me}, not root")
    return os_user


def _user_can_traverse(path: Path, user: str) -> bool:
    if user == current_os_user():
        return os.access(path, os.X_OK)
    entry = pwd.getpwnam(user)
    info = path.stat()
    # POSIX checks one class only: the owner's bits for the owner, else the group's, else others'.
    if info.st_uid == entry.pw_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in os.getgrouplist(user, entry.pw_gid):
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    # After a reboot the pid in a stale postmaster.pid may belong to another program; the
    # postmaster's working directory is its data folder, which tells them apart.
    try:
        return os.path.realpath(os.readlink(f"/proc/{pid}/cwd")) == os.path.realpath(data_dir)
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone now, or no /proc to ask
    except PermissionError:
        return True


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(1_000_000).decode(errors="replace")
    except OSError:
        return ""


def _empty_directory(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                child.unlink()


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
