"""Restoring an anonymized dump into a review database, and swapping it in.

A restore goes into a *new* database, in sections (pre-data, data, the masking hook,
post-data), is analyzed, then replaces the live database by rename in one transaction. Until
that commit the previous database keeps serving; a failure drops the new one. The live
database is a template, so each perf run clones it (FILE_COPY: seconds, not a restore).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from perfruns.pipeline.pgtools import DISK_FULL, PgToolError, condense, find_binary, run

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10
# NAMEDATALEN - 1: PostgreSQL silently truncates longer names, which would make two of ours
# collide.
MAX_NAME_BYTES = 63
_SCRATCH_SUFFIX_BYTES = len("__new_") + 8
MAX_LIVE_NAME_BYTES = MAX_NAME_BYTES - _SCRATCH_SUFFIX_BYTES

# Owners, grants and security labels of the source mean nothing in a review copy;
# subscriptions would connect back to production's publisher; its tablespaces do not exist
# here.
_RESTORE_OPTIONS = (
    "--exit-on-error",
    "--no-owner",
    "--no-privileges",
    "--no-security-labels",
    "--no-comments",
    "--no-publications",
    "--no-subscriptions",
    "--no-tablespaces",
)
# Masking rewrites columns with ALTER TABLE ... ALTER COLUMN TYPE, which PostgreSQL refuses on
# a column a view or rule uses: those are created after the masking instead.
_DEFERRED_KINDS = frozenset({"VIEW", "MATERIALIZED VIEW", "RULE"})
_MATVIEW_DATA = "MATERIALIZED VIEW DATA"
_TABLE_DATA = "TABLE DATA"
# The `desc` column of `pg_restore -l`; several hold spaces, longest first to match.
_KNOWN_KINDS = sorted(
    {
        "ACCESS METHOD", "ACL", "AGGREGATE", "BLOB", "BLOBS", "CAST", "CHECK CONSTRAINT",
        "COLLATION", "COMMENT", "CONSTRAINT", "CONVERSION", "DATABASE", "DATABASE PROPERTIES",
        "DEFAULT", "DEFAULT ACL", "DOMAIN", "ENCODING", "EVENT TRIGGER", "EXTENSION",
        "FK CONSTRAINT", "FOREIGN DATA WRAPPER", "FOREIGN SERVER", "FOREIGN TABLE", "FUNCTION",
        "INDEX", "INDEX ATTACH", "LARGE OBJECT", "MATERIALIZED VIEW", _MATVIEW_DATA,
        "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "POLICY", "PROCEDURAL LANGUAGE",
        "PROCEDURE", "PUBLICATION", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA",
        "ROW SECURITY", "RULE", "SCHEMA", "SEARCHPATH", "SECURITY LABEL", "SEQUENCE",
        "SEQUENCE OWNED BY", "SEQUENCE SET", "SERVER", "SHELL TYPE", "STATISTICS",
        "STDSTRINGS", "SUBSCRIPTION", "TABLE", "TABLE ATTACH", _TABLE_DATA,
        "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE", "TRANSFORM", "TRIGGER", "TYPE", "USER MAPPING", "VIEW",
    },
    key=len,
    reverse=True,
)  # fmt: skip
_SECTIONS = ("pre-data", "data", "post-data")
_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_DEPENDS = re.compile(r"^;\s*depends on:(.*)$")
_FORMAT = re.compile(r"^;\s+Format: (\w+)", re.MULTILINE)
_CORRUPT = re.compile(
    r"could not read from input file|end of file|corrupt|could not find block id"
    r"|unexpected block id|did not find magic string|not appear to be a valid archive"
    r"|too short|could not (?:un|de)compress|unexpected end|invalid (?:stored block|code)",
    re.IGNORECASE,
)
_TEXT_DUMP = re.compile(r"appears to be a text format dump", re.IGNORECASE)
_NEWER_DUMP = re.compile(r"unsupported version", re.IGNORECASE)
_SERIAL_DATA = re.compile(r"processing data for table ")
_PARALLEL_DONE = re.compile(r"finished item (\d+) ")


class RestoreError(RuntimeError):
    """A restore, swap or database operation failed; the message says why, fit to show."""


@dataclass(frozen=True)
class TocEntry:
    """One line of `pg_restore -l`: `line` is what goes back into a `-L` list."""

    dump_id: int
    kind: str
    schema: str
    name: str
    line: str
    depends_on: frozenset[int]


@dataclass(frozen=True)
class RestorePlan:
    """What each pg_restore pass loads, in archive (dependency) order."""

    pre_data: list[TocEntry]
    data: list[TocEntry]
    post_data: list[TocEntry]  # with the deferred views and rules
    matview_data: list[TocEntry]
    skipped_data: list[TocEntry]


# Restoring ---------------------------------------------------------------------------------


def restore_dump(
    *,
    dump_path: Path,
    conninfo: str,
    jobs: int = 2,
    between: Callable[[], None] | None = None,
    exclude_data: AbstractSet[tuple[str, str]] = frozenset(),
    progress: Callable[[int, int], None] | None = None,
    timeout: float,
) -> None:
    """Restore a pg_dump archive into an existing, empty database.

    Passes: pre-data; data (`jobs` in parallel; tables in `exclude_data` as (schema, table)
    stay empty); `between()`, which may rewrite tables; post-data with the views and rules
    held back from pre-data when `between` is given; materialized view data last, so it is
    computed from the data as `between` left it. `progress(done, total)` counts tables loaded.
    The whole restore has `timeout` seconds; a failure leaves the database partly restored,
    which is why callers restore into a database they can drop (`restore_and_swap`).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    deadline = time.monotonic() + timeout
    pg_restore = find_binary("pg_restore")
    dump_path = _readable_dump(dump_path)
    entries, sections, archive_format = _read_toc(pg_restore, dump_path, deadline=deadline)
    plan = plan_restore(
        entries, sections, defer_views=between is not None, exclude_data=exclude_data
    )
    missing = set(exclude_data) - {(e.schema, e.name) for e in plan.skipped_data}
    if missing:
        logger.info("tables to leave empty are not in %s: %s", dump_path.name, sorted(missing))
    # Parallel restore needs a seekable custom or directory archive, not tar.
    jobs = jobs if archive_format in {"CUSTOM", "DIRECTORY"} else 1
    target, env = _split_password(conninfo)

    with tempfile.TemporaryDirectory(prefix="fixproof-restore-") as workdir:

        def restore(
            entries: list[TocEntry],
            *,
            label: str,
            jobs: int,
            on_line: Callable[[str], None] | None = None,
        ) -> None:
            if not entries:
                return
            list_file = Path(workdir) / f"{label.replace(' ', '-')}.list"
            list_file.write_text("".join(f"{entry.line}\n" for entry in entries))
            cmd = [
                pg_restore,
                "--dbname",
                target,
                "--use-list",
                str(list_file),
                *_RESTORE_OPTIONS,
                f"--jobs={jobs}",
                "--verbose",
                str(dump_path),
            ]
            _pg_restore(cmd, label=label, env=env, deadline=deadline, timeout=timeout, on=on_line)

        restore(plan.pre_data, label="pre-data", jobs=1)
        counter = _DataProgress(plan.data, parallel=jobs > 1, progress=progress)
        counter.start()
        restore(plan.data, label="data", jobs=jobs, on_line=counter.see)
        counter.finish()
        if between is not None:
            between()
            _check_deadline(deadline, timeout=timeout, label="post-data")
        restore(plan.post_data, label="post-data", jobs=jobs)
        restore(plan.matview_data, label="materialized view data", jobs=jobs)


def plan_restore(
    entries: list[TocEntry],
    sections: dict[int, str],
    *,
    defer_views: bool,
    exclude_data: AbstractSet[tuple[str, str]] = frozenset(),
) -> RestorePlan:
    """Split an archive's entries into the passes of `restore_dump`."""
    pre = [e for e in entries if sections.get(e.dump_id) == "pre-data"]
    deferred: set[int] = set()
    if defer_views:
        # Whatever is built on a deferred view (another view, a function returning its row
        # type, a column default) waits with it. Iterated to a fixed point rather than trusting
        # the archive order.
        changed = True
        while changed:
            changed = False
            for entry in pre:
                if entry.dump_id not in deferred and (
                    entry.kind in _DEFERRED_KINDS or entry.depends_on & deferred
                ):
                    deferred.add(entry.dump_id)
                    changed = True
        # Except what a table's data needs (a column of a view's row type): that table's rows
        # load before the masking hook, so it and all it stands on stay in pre-data.
        by_id = {e.dump_id: e for e in entries}
        pinned: set[int] = set()
        stack = [
            dep
            for e in entries
            if sections.get(e.dump_id) == "data"
            for dep in e.depends_on & deferred
        ]
        while stack:
            dump_id = stack.pop()
            if dump_id in pinned or dump_id not in by_id:
                continue
            pinned.add(dump_id)
            stack.extend(by_id[dump_id].depends_on)
        deferred -= pinned

    data: list[TocEntry] = []
    skipped: list[TocEntry] = []
    for entry in entries:
        if sections.get(entry.dump_id) != "data":
            continue
        if entry.kind == _TABLE_DATA and (entry.schema, entry.name) in exclude_data:
            skipped.append(entry)
        else:
            data.append(entry)
    post = [
        e
        for e in entries
        if (e.dump_id in deferred or sections.get(e.dump_id) == "post-data")
        and e.kind != _MATVIEW_DATA
    ]
    return RestorePlan(
        pre_data=[e for e in pre if e.dump_id not in deferred],
        data=data,
        post_data=post,
        matview_data=[e for e in entries if e.kind == _MATVIEW_DATA],
        skipped_data=skipped,
    )


def verify_archive(dump_path: Path, *, timeout: float = 3600) -> int:
    """The number of TOC entries of a pg_dump archive, after reading it to the end.

    `pg_restore -l` only reads the table of contents, which sits at the start of a custom
    archive and survives a cut; reading every data block (into /dev/null) catches the cut.
    """
    deadline = time.monotonic() + timeout
    pg_restore = find_binary("pg_restore")
    dump_path = _readable_dump(dump_path)
    listing = _pg_restore(
        [pg_restore, "--list", str(dump_path)],
        label="table of contents",
        deadline=deadline,
        timeout=timeout,
    )
    count = sum(1 for line in listing.splitlines() if _TOC_LINE.match(line))
    _pg_restore(
        [pg_restore, "--file", "/dev/null", str(dump_path)],
        label="archive check",
        deadline=deadline,
        timeout=timeout,
    )
    return count


def restore_and_swap(
    *,
    dump_path: Path,
    admin_conninfo: str,
    live: str,
    jobs: int,
    between: Callable[[str], None] | None = None,
    exclude_data: AbstractSet[tuple[str, str]] = frozenset(),
    progress: Callable[[int, int], None] | None = None,
    timeout: float,
) -> None:
    """Restore into a new database, ANALYZE it, and swap it in as `live`.

    `between(conninfo)` is `restore_dump`'s masking hook, given the conninfo of the new
    database: its name is made here, so the hook could not know it otherwise.

    On any failure, Ctrl-C and SystemExit included, the new database is dropped and the
    previous `live` keeps serving, untouched; then the exception goes on.
    """
    _check_live_name(live)
    deadline = time.monotonic() + timeout
    new = _scratch_name(live, "new")
    create_database(admin_conninfo, new)
    try:
        target = make_conninfo(admin_conninfo, dbname=new)
        restore_dump(
            dump_path=dump_path,
            conninfo=target,
            jobs=jobs,
            between=None if between is None else (lambda: between(target)),
            exclude_data=exclude_data,
            progress=progress,
            timeout=deadline - time.monotonic(),
        )
        # Fresh tables have no statistics: the first perf run would measure bad plans.
        analyze(target, timeout=max(1.0, deadline - time.monotonic()))
        swap_database(admin_conninfo, new=new, live=live)
    except BaseException as exc:
        try:
            drop_database(admin_conninfo, new)
        except Exception as cleanup_error:  # the original failure is the one to report
            exc.add_note(
                f"The scratch database {new} could not be dropped ({cleanup_error}); "
                "the janitor will drop it."
            )
        raise


# Databases ---------------------------------------------------------------------------------


def create_database(conninfo: str, name: str, *, template: str | None = None) -> None:
    """Create `name`: empty (from template0), or as a file copy of `template`.

    template0 rather than template1: objects an administrator added to template1 would
    collide with the restored ones.
    """
    _check_name(name)
    with _connect(conninfo, action=f"could not create the database {name}") as conn:
        _create(conn, name, template=template)


def clone_database(conninfo: str, *, template: str, name: str, wait: float = 10) -> None:
    """Copy `template` to `name` for one perf run, ending the template's sessions first."""
    _check_name(name)
    _check_name(template)
    action = f"could not clone the database {template} as {name}"
    with _connect(conninfo, action=action) as conn:
        deadline = time.monotonic() + wait
        while True:
            _terminate(conn, template, wait=max(0.1, deadline - time.monotonic()))
            try:
                _create(conn, name, template=template)
                return
            except psycopg.errors.ObjectInUse as exc:
                # Someone connected between the terminate and the copy.
                if time.monotonic() >= deadline:
                    raise RestoreError(
                        f"{action}: sessions keep connecting to {template} ({exc})"
                    ) from exc
                time.sleep(0.2)


def drop_database(conninfo: str, name: str) -> None:
    """Drop `name` if it exists, ending its sessions; templates included."""
    _check_name(name)
    with _connect(conninfo, action=f"could not drop the database {name}") as conn:
        row = conn.execute(
            "SELECT datistemplate FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if row is None:
            return
        if row[0]:
            # PostgreSQL refuses to drop a template; the swapped-in databases are templates.
            conn.execute(
                sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(name))
            )
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_exists(conninfo: str, name: str) -> bool:
    with _connect(conninfo, action=f"could not look for the database {name}") as conn:
        return _exists(conn, name)


def list_databases(conninfo: str, prefix: str) -> list[str]:
    """Names of the databases starting with `prefix`, sorted."""
    with _connect(conninfo, action="could not list the databases") as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY datname",
            [prefix],
        ).fetchall()
    return [row[0] for row in rows]


def drop_scratch_databases(admin_conninfo: str, *, live: str) -> list[str]:
    """Drop the `<live>__new_*` and `<live>__old_*` databases a killed worker left behind."""
    dropped = []
    for name in list_databases(admin_conninfo, f"{live}__"):
        if re.fullmatch(rf"{re.escape(live)}__(?:new|old)_[0-9a-f]{{8}}", name):
            drop_database(admin_conninfo, name)
            dropped.append(name)
    return dropped


def analyze(conninfo: str, *, timeout: float | None = None) -> None:
    """ANALYZE the whole database `conninfo` points at."""
    with _connect(conninfo, action="could not analyze the restored database") as conn:
        if timeout is not None:
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)", [f"{int(timeout * 1000)}"]
            )
        conn.execute("ANALYZE")


def swap_database(admin_conninfo: str, *, new: str, live: str, wait: float = 10) -> None:
    """Make `new` the database called `live`, as a template open to connections.

    New sessions to `live` are refused and the open ones ended, then both renames commit
    together: a client sees the old database or the new one, never none. The old one is then
    dropped (a failure there is logged: the janitor drops `<live>__old_*` leftovers).
    """
    _check_name(new)
    _check_live_name(live)
    old = _scratch_name(live, "old")
    action = f"could not swap the database {new} in as {live}"
    with _connect(admin_conninfo, action=action) as conn:
        if not _exists(conn, new):
            raise RestoreError(f"{action}: {new} does not exist")
        live_exists = _exists(conn, live)
        # Nobody may hold `new` open either: a database in use cannot be renamed.
        _set_allow_connections(conn, new, allow=False)
        if live_exists:
            _set_allow_connections(conn, live, allow=False)
        try:
            deadline = time.monotonic() + wait
            while True:
                _terminate(conn, new, wait=max(0.1, deadline - time.monotonic()))
                if live_exists:
                    _terminate(conn, live, wait=max(0.1, deadline - time.monotonic()))
                try:
                    with conn.transaction():
                        if live_exists:
                            conn.execute(_rename(live, old))
                        conn.execute(_rename(new, live))
                        conn.execute(
                            sql.SQL(
                                "ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS true"
                            ).format(sql.Identifier(live))
                        )
                    break
                except psycopg.errors.ObjectInUse:
                    # A session that was already connecting got in after the terminate.
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.2)
        except BaseException:
            if live_exists:
                _reopen(admin_conninfo, live)
            raise
    if live_exists:
        try:
            drop_database(admin_conninfo, old)
        except RestoreError:
            logger.warning("swapped %s in as %s but could not drop %s", new, live, old)


# Helpers -----------------------------------------------------------------------------------


class _DataProgress:
    """Counts tables loaded from `pg_restore -v` as its stderr streams by."""

    def __init__(
        self,
        entries: list[TocEntry],
        *,
        parallel: bool,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.table_ids = {e.dump_id for e in entries if e.kind == _TABLE_DATA}
        self.total = len(self.table_ids)
        self.parallel = parallel
        self.progress = progress
        self.done = 0
        self.started = 0

    def start(self) -> None:
        self._emit(0)

    def see(self, line: str) -> None:
        if self.parallel:
            # "finished item 3364 TABLE DATA customers": that table's COPY committed.
            match = _PARALLEL_DONE.search(line)
            if match and int(match.group(1)) in self.table_ids:
                self._advance(self.done + 1)
        elif _SERIAL_DATA.search(line):
            # One table at a time: one starting means the one before it is loaded.
            self.started += 1
            self._advance(self.started - 1)

    def finish(self) -> None:
        self._advance(self.total)

    def _advance(self, done: int) -> None:
        done = min(done, self.total)
        if done > self.done:
            self._emit(done)

    def _emit(self, done: int) -> None:
        self.done = done
        if self.progress is not None:
            self.progress(done, self.total)


def _read_toc(
    pg_restore: str, dump_path: Path, *, deadline: float
) -> tuple[list[TocEntry], dict[int, str], str]:
    timeout = deadline - time.monotonic()
    listing = _pg_restore(
        [pg_restore, "--list", "--verbose", str(dump_path)],
        label="table of contents",
        deadline=deadline,
        timeout=timeout,
    )
    entries = parse_toc(listing)
    # Sections are not printed, but `--list --section` lists only that section's entries.
    sections: dict[int, str] = {}
    for section in _SECTIONS:
        out = _pg_restore(
            [pg_restore, "--list", f"--section={section}", str(dump_path)],
            label="table of contents",
            deadline=deadline,
            timeout=timeout,
        )
        for line in out.splitlines():
            if match := _TOC_LINE.match(line):
                sections[int(match.group(1))] = section
    found = _FORMAT.search(listing)
    return entries, sections, found.group(1).upper() if found else ""


def parse_toc(listing: str) -> list[TocEntry]:
    """The entries of `pg_restore -l -v` output, with their dependencies."""
    entries: list[TocEntry] = []
    for line in listing.splitlines():
        if entries and (depends := _DEPENDS.match(line)):
            last = entries[-1]
            ids = frozenset(int(part) for part in depends.group(1).split())
            entries[-1] = TocEntry(last.dump_id, last.kind, last.schema, last.name, last.line, ids)
            continue
        match = _TOC_LINE.match(line)
        if not match:
            continue
        rest = match.group(4)
        kind = next(
            (k for k in _KNOWN_KINDS if rest == k or rest.startswith(k + " ")), rest.split(" ")[0]
        )
        # "<schema> <name> <owner>": names may hold spaces, schemas and owners rarely do.
        words = rest[len(kind) + 1 :].split(" ")
        schema = words[0] if words else ""
        name = " ".join(words[1:-1]) if len(words) > 2 else (words[1] if len(words) > 1 else "")
        entries.append(TocEntry(int(match.group(1)), kind, schema, name, line, frozenset()))
    return entries


def _pg_restore(
    cmd: list[str],
    *,
    label: str,
    deadline: float,
    timeout: float,
    env: dict[str, str] | None = None,
    on: Callable[[str], None] | None = None,
) -> str:
    _check_deadline(deadline, timeout=timeout, label=label)
    try:
        return run(cmd, timeout=deadline - time.monotonic(), env=env, on_stderr_line=on).stdout
    except PgToolError as exc:
        if time.monotonic() >= deadline:
            raise RestoreError(
                f"the restore did not finish within {timeout:g} s and was stopped "
                f"(during the {label})"
            ) from exc
        if exc.message.startswith(DISK_FULL):
            raise RestoreError(f"restoring the {label} failed: {exc.message}") from exc
        if _TEXT_DUMP.search(exc.message):
            raise RestoreError(
                f"the dump file is a plain SQL script, not a pg_dump archive: {exc.message}"
            ) from exc
        if _NEWER_DUMP.search(exc.message):
            raise RestoreError(
                f"the dump was written by a newer pg_dump than {cmd[0]} can read: {exc.message}"
            ) from exc
        if _CORRUPT.search(exc.message):
            raise RestoreError(f"the dump file is truncated or corrupted: {exc.message}") from exc
        raise RestoreError(f"restoring the {label} failed: {exc.message}") from exc


def _check_deadline(deadline: float, *, timeout: float, label: str) -> None:
    if time.monotonic() >= deadline:
        raise RestoreError(
            f"the restore did not finish within {timeout:g} s (stopped before the {label})"
        )


def _readable_dump(dump_path: Path) -> Path:
    dump_path = Path(dump_path)
    if not dump_path.exists():
        raise RestoreError(f"the dump file {dump_path} does not exist")
    if dump_path.is_file() and dump_path.stat().st_size == 0:
        raise RestoreError(f"the dump file {dump_path} is empty")
    return dump_path


def _split_password(conninfo: str) -> tuple[str, dict[str, str]]:
    # A password on pg_restore's command line is readable by every local user (ps); the
    # environment of a process is not.
    params = conninfo_to_dict(conninfo)
    password = params.pop("password", None)
    env = {"PGPASSWORD": str(password)} if password else {}
    return make_conninfo("", **params), env


@contextlib.contextmanager
def _connect(conninfo: str, *, action: str) -> Iterator[psycopg.Connection]:
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            yield conn
    except psycopg.Error as exc:
        raise RestoreError(f"{action}: {condense(str(exc)) or type(exc).__name__}") from exc


def _create(conn: psycopg.Connection, name: str, *, template: str | None) -> None:
    if template is None:
        query = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    else:
        # FILE_COPY copies the files (one checkpoint) instead of WAL-logging every block: the
        # fast way for a large template. It appeared in PostgreSQL 15, which made WAL_LOG the
        # default; older servers only file-copy.
        strategy = sql.SQL(" STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else "")
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
            sql.Identifier(name), sql.Identifier(template), strategy
        )
    conn.execute(query)


def _exists(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    return row is not None


def _terminate(conn: psycopg.Connection, name: str, *, wait: float) -> None:
    """End every other session on `name` and wait until they are gone."""
    deadline = time.monotonic() + wait
    while True:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        ).fetchall()
        if not rows:
            return
        if time.monotonic() >= deadline:
            raise RestoreError(
                f"{len(rows)} sessions on the database {name} could not be ended within {wait:g} s"
            )
        time.sleep(0.1)


def _set_allow_connections(conn: psycopg.Connection, name: str, *, allow: bool) -> None:
    conn.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.SQL("true" if allow else "false")
        )
    )


def _reopen(admin_conninfo: str, live: str) -> None:
    # A fresh connection: the one that failed may be the reason we are here.
    try:
        with _connect(admin_conninfo, action=f"could not reopen {live}") as conn:
            if _exists(conn, live):
                _set_allow_connections(conn, live, allow=True)
    except RestoreError:
        logger.exception("the database %s may still refuse connections", live)


def _rename(old: str, new: str) -> sql.Composed:
    return sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
        sql.Identifier(old), sql.Identifier(new)
    )


def _scratch_name(live: str, kind: str) -> str:
    return f"{live}__{kind}_{secrets.token_hex(4)}"


def _check_name(name: str) -> None:
    if not name or "\x00" in name or len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"{name!r} is not a usable database name (1 to 63 bytes)")


def _check_live_name(live: str) -> None:
    _check_name(live)
    if len(live.encode()) > MAX_LIVE_NAME_BYTES:
        raise ValueError(
            f"the database name {live!r} is too long: at most {MAX_LIVE_NAME_BYTES} bytes leave "
            "room for the suffix of its scratch copies"
        )
