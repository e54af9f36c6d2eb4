"""Restoring an anonymized dump into a review database, and swapping it in.

A restore goes into a *new* database, in sections (pre-data, data, the masking hook,
post-data), is analyzed, then replaces the live database by rename in one transaction. Until
that commit the previous database keeps serving; a failure drops the new one. The live
database is a template, so each perf run clones it (FILE_COPY: seconds, not a restore).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from perfruns.pipeline.pgtools import (
    DISK_FULL,
    PgToolError,
    ToolCancelled,
    condense,
    find_binary,
    run,
)

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
# What `pg_restore --data-only --file=-` writes before a table's rows.
_COPY_LINE = re.compile(rb"^COPY .* FROM stdin;\n\Z")
_ENCODING_LINE = re.compile(rb"^SET client_encoding = '([A-Za-z0-9_]+)';\n\Z")
_END_OF_COPY = b"\\.\n"
# Rows go to the COPY sessions in blocks of whole lines of about this size: small enough
# that the sessions take turns finely (the table keeps the dump's order closely),
# large enough that Python only hands buffers around.
SPLIT_BLOCK_BYTES = 1 << 20


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
    before_data: Callable[[], None] | None = None,
    split: Mapping[tuple[str, str], int] | None = None,
    split_loaded: Callable[[str, str], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
    timeout: float,
) -> None:
    """Restore a pg_dump archive into an existing, empty database.

    Passes: pre-data; `before_data()`, which may prepare the empty tables; data (`jobs` in
    parallel; tables in `exclude_data` as (schema, table) stay empty; a table in `split`
    loads first, over that many COPY sessions side by side, then `split_loaded(schema,
    table)` may start work on it in the background and says whether it did, which leaves
    pg_restore a session fewer for the other tables); `between()`, which may rewrite tables;
    post-data with the views and rules held back from pre-data when `between` is given;
    materialized view data last, so it is computed from the data as `between` left it.
    `progress(done, total)` counts tables loaded.
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
            cancel: threading.Event | None = None,
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
            _pg_restore(
                cmd,
                label=label,
                env=env,
                deadline=deadline,
                timeout=timeout,
                on=on_line,
                cancel=cancel,
            )

        restore(plan.pre_data, label="pre-data", jobs=1)
        if before_data is not None:
            before_data()
            _check_deadline(deadline, timeout=timeout, label="data")
        streams = split or {}
        split_entries = [
            (entry, streams[(entry.schema, entry.name)])
            for entry in plan.data
            if entry.kind == _TABLE_DATA and streams.get((entry.schema, entry.name), 1) > 1
        ]
        rest = [e for e in plan.data if all(e is not entry for entry, _ in split_entries)]
        # The split tables load first, each with every session: the longest loads. The
        # other tables load beside them in one more pg_restore session, so that no core
        # waits while the last split table or the last small table loads.
        beside = bool(split_entries) and any(e.kind == _TABLE_DATA for e in rest)
        # pg_restore reports otherwise in a single session.
        counter = _DataProgress(plan.data, parallel=jobs > 1 and not beside, progress=progress)
        counter.start()
        stop = threading.Event()
        errors: list[BaseException] = []

        def restore_rest() -> None:
            try:
                restore(rest, label="data", jobs=1, on_line=counter.see, cancel=stop)
            except BaseException as exc:
                errors.append(exc)

        others = threading.Thread(target=restore_rest, name="fixproof-restore-data", daemon=True)
        if beside:
            others.start()
        busy = 0
        try:
            for entry, streams in split_entries:
                loaded = _copy_split(
                    entry,
                    streams=streams,
                    pg_restore=pg_restore,
                    dump_path=dump_path,
                    conninfo=conninfo,
                    workdir=Path(workdir),
                    deadline=deadline,
                    timeout=timeout,
                )
                if not loaded:
                    # Rows pg_restore does not write as COPY text (a dump made with
                    # --inserts), or columns in another order: one pg_restore session.
                    restore([entry], label="split data", jobs=1)
                counter.advance_one()
                if split_loaded is not None and split_loaded(entry.schema, entry.name):
                    busy += 1
        finally:
            if beside:
                if sys.exc_info()[0] is not None:
                    stop.set()  # the restore fails anyway: stop loading the others
                others.join()
        if errors and not isinstance(errors[0], ToolCancelled):
            raise errors[0]
        if not beside:
            restore(rest, label="data", jobs=max(1, jobs - busy), on_line=counter.see)
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


# Split loading -----------------------------------------------------------------------------

# The header pg_dump writes before a table's rows (its fmtId quotes like quote_ident), and
# the columns it lists: the stored ones, in order.
_COPY_COLUMNS = """
SELECT format('COPY %%s.%%s (%%s) FROM stdin;', quote_ident(n.nspname), quote_ident(c.relname),
              string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)),
       array_agg(a.attname::text ORDER BY a.attnum)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid
WHERE n.nspname = %s AND c.relname = %s
  AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
GROUP BY n.nspname, c.relname
"""


class _RowsCutShort(RestoreError):
    """pg_restore's output ended before the end of a table's rows."""


def _copy_split(
    entry: TocEntry,
    *,
    streams: int,
    pg_restore: str,
    dump_path: Path,
    conninfo: str,
    workdir: Path,
    deadline: float,
    timeout: float,
) -> bool:
    """Load the rows of `entry` over `streams` COPY sessions; False: not as COPY text.

    pg_restore loads a table's rows in one COPY: one backend parses them all while the
    other cores wait. Here `pg_restore --file=-` writes the rows as text, and blocks of
    whole lines go to `streams` COPY sessions into the table, side by side.
    """
    return _SplitCopy(
        entry,
        streams=streams,
        pg_restore=pg_restore,
        dump_path=dump_path,
        conninfo=conninfo,
        workdir=workdir,
        deadline=deadline,
        timeout=timeout,
    ).run()


class _SplitCopy:
    def __init__(
        self,
        entry: TocEntry,
        *,
        streams: int,
        pg_restore: str,
        dump_path: Path,
        conninfo: str,
        workdir: Path,
        deadline: float,
        timeout: float,
    ) -> None:
        self.entry = entry
        self.streams = streams
        self.pg_restore = pg_restore
        self.dump_path = dump_path
        self.conninfo = conninfo
        self.workdir = workdir
        self.deadline = deadline
        self.timeout = timeout

    def run(self) -> bool:
        entry = self.entry
        label = f"data of {entry.schema}.{entry.name}"
        with _connect(self.conninfo, action=f"restoring the {label} failed") as conn:
            row = conn.execute(_COPY_COLUMNS, [entry.schema, entry.name]).fetchone()
        if row is None:
            return False
        expected, columns = row[0].encode() + b"\n", row[1]
        list_file = self.workdir / f"split-{entry.dump_id}.list"
        list_file.write_text(f"{entry.line}\n")
        stderr_file = self.workdir / f"split-{entry.dump_id}.err"
        with stderr_file.open("wb") as stderr:
            proc = subprocess.Popen(
                [
                    self.pg_restore,
                    "--data-only",
                    "--use-list",
                    str(list_file),
                    "--file=-",
                    str(self.dump_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        # A read blocks until pg_restore writes: past the deadline, end it and say so.
        watchdog = threading.Timer(max(0.0, self.deadline - time.monotonic()), _kill, [proc])
        watchdog.daemon = True
        watchdog.start()
        try:
            assert proc.stdout is not None
            encoding = None
            while True:
                line = proc.stdout.readline()
                if not line or line == _END_OF_COPY:
                    return False
                if found := _ENCODING_LINE.match(line):
                    encoding = found.group(1).decode()
                if _COPY_LINE.match(line):
                    break
            if line != expected:
                return False
            copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(entry.schema, entry.name),
                sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            )
            try:
                self._stream(proc, copy=copy, encoding=encoding, label=label)
            except _RowsCutShort:
                # pg_restore stopped writing rows: its own failure (a cut dump) is the cause.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, min(10.0, self.deadline - time.monotonic())))
                if proc.returncode not in (None, 0):
                    raise self._tool_failure(proc, stderr_file, label=label) from None
                raise
            try:
                proc.wait(timeout=max(0.1, self.deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._timed_out(label)
            if proc.returncode != 0:
                raise self._tool_failure(proc, stderr_file, label=label)
            return True
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                _kill(proc)
            if proc.stdout is not None:
                proc.stdout.close()

    def _stream(
        self,
        proc: subprocess.Popen[bytes],
        *,
        copy: sql.Composed,
        encoding: str | None,
        label: str,
    ) -> None:
        assert proc.stdout is not None
        streams = self.streams
        # A queue per session, blocks dealt in turn: every session loads its share. (With
        # one shared queue, a session whose writes return at once took every block while
        # the others waited.) The sessions load the same table: their pace is the same.
        queues: list[queue.Queue[bytes | None]] = [queue.Queue(maxsize=2) for _ in range(streams)]
        dealt = itertools.count()
        failed = threading.Event()
        errors: list[BaseException] = []

        def write(conn: psycopg.Connection, blocks: queue.Queue[bytes | None]) -> None:
            ended = False
            try:
                with conn, conn.cursor() as cur, cur.copy(copy) as writer:
                    while (block := blocks.get()) is not None:
                        # A memoryview: psycopg cuts big writes in slices of it.
                        writer.write(memoryview(block))
                    ended = True  # the COPY may still fail as it ends
            except BaseException as exc:
                errors.append(exc)
                failed.set()
                # Keep taking blocks so that the reader never waits on a dead session.
                while not ended and blocks.get() is not None:
                    pass

        def put(item: bytes | None, blocks: queue.Queue[bytes | None] | None = None) -> None:
            blocks = blocks if blocks is not None else queues[next(dealt) % streams]
            while True:
                if time.monotonic() >= self.deadline:
                    self._timed_out(label)
                try:
                    blocks.put(item, timeout=0.2)
                    return
                except queue.Full:
                    continue

        # Every session connected before the first block: they all take blocks from the
        # start.
        connections: list[psycopg.Connection] = []
        try:
            for _ in range(streams):
                conn = psycopg.connect(
                    self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                )
                connections.append(conn)
                if encoding is not None:
                    # The rows are in the dump's encoding, as pg_restore would declare.
                    conn.execute("SELECT set_config('client_encoding', %s, false)", [encoding])
                remaining = max(1, int((self.deadline - time.monotonic()) * 1000))
                conn.execute("SELECT set_config('statement_timeout', %s, false)", [f"{remaining}"])
        except psycopg.Error as exc:
            for conn in connections:
                conn.close()
            raise RestoreError(
                f"restoring the {label} failed: {condense(str(exc)) or type(exc).__name__}"
            ) from exc
        writers = [
            threading.Thread(target=write, args=[c, q], daemon=True)
            for c, q in zip(connections, queues, strict=True)
        ]
        for writer in writers:
            writer.start()
        try:
            ended = False
            while not ended and not failed.is_set():
                if time.monotonic() >= self.deadline:
                    self._timed_out(label)
                block = proc.stdout.read(SPLIT_BLOCK_BYTES)
                if not block:
                    break
                if not block.endswith(b"\n"):
                    # To the end of its last line: a session gets whole rows only.
                    block += proc.stdout.readline()
                # A block starts at a line, and the end marker is a line of its own (a
                # row holding "\." is written "\\.").
                if block.startswith(_END_OF_COPY):
                    block, ended = b"", True
                elif (end := block.find(b"\n" + _END_OF_COPY)) >= 0:
                    block, ended = block[: end + 1], True
                if block:
                    put(block)
            if time.monotonic() >= self.deadline:
                self._timed_out(label)
            if not ended and not failed.is_set():
                raise _RowsCutShort(f"restoring the {label} failed: the rows end unexpectedly")
            # What follows the rows (comments) must not fill the pipe pg_restore waits on.
            while proc.stdout.read(SPLIT_BLOCK_BYTES):
                pass
        finally:
            for blocks in queues:
                put(None, blocks)
            for writer in writers:
                writer.join()
        if errors:
            exc = errors[0]
            # The primary message only: the context of a COPY error quotes the row.
            message = (
                exc.diag.message_primary if isinstance(exc, psycopg.Error) else None
            ) or type(exc).__name__
            raise RestoreError(f"restoring the {label} failed: {condense(message)}") from exc

    def _tool_failure(
        self, proc: subprocess.Popen[bytes], stderr_file: Path, *, label: str
    ) -> RestoreError:
        detail = condense(stderr_file.read_text(errors="replace"))
        detail = detail or f"exited with status {proc.returncode}"
        if not detail.startswith(("pg_restore", DISK_FULL)):
            detail = f"pg_restore: {detail}"
        return _failure(detail, label=label, tool=self.pg_restore)

    def _timed_out(self, label: str) -> None:
        raise RestoreError(
            f"the restore did not finish within {self.timeout:g} s and was stopped "
            f"(during the {label})"
        )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


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
    """Counts tables loaded from `pg_restore -v` as its stderr streams by.

    The split tables (`_SplitLoader`) load in another thread and report with
    `advance_one`: a lock keeps the two counts and the calls to `progress` in order.
    """

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
        self.loaded = 0  # by pg_restore
        self.started = 0
        self.others = 0  # by the split loader
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self._emit(0)

    def see(self, line: str) -> None:
        if self.parallel:
            # "finished item 3364 TABLE DATA customers": that table's COPY committed.
            match = _PARALLEL_DONE.search(line)
            if match and int(match.group(1)) in self.table_ids:
                with self._lock:
                    self.loaded += 1
                    self._advance()
        elif _SERIAL_DATA.search(line):
            # One table at a time: one starting means the one before it is loaded.
            with self._lock:
                self.started += 1
                self.loaded = self.started - 1
                self._advance()

    def advance_one(self) -> None:
        with self._lock:
            self.others += 1
            self._advance()

    def finish(self) -> None:
        with self._lock:
            self.loaded = self.total
            self._advance()

    def _advance(self) -> None:
        done = min(self.loaded + self.others, self.total)
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

    def listing(*options: str) -> str:
        return _pg_restore(
            [pg_restore, "--list", *options, str(dump_path)],
            label="table of contents",
            deadline=deadline,
            timeout=timeout,
        )

    # Sections are not printed, but `--list --section` lists only that section's entries.
    # Four short runs of pg_restore, side by side: each is mostly its start-up.
    with ThreadPoolExecutor(max_workers=1 + len(_SECTIONS)) as pool:
        verbose = pool.submit(listing, "--verbose")
        by_section = {
            section: pool.submit(listing, f"--section={section}") for section in _SECTIONS
        }
        full = verbose.result()
        outputs = {section: future.result() for section, future in by_section.items()}
    entries = parse_toc(full)
    sections: dict[int, str] = {}
    for section, out in outputs.items():
        for line in out.splitlines():
            if match := _TOC_LINE.match(line):
                sections[int(match.group(1))] = section
    found = _FORMAT.search(full)
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
    cancel: threading.Event | None = None,
) -> str:
    _check_deadline(deadline, timeout=timeout, label=label)
    try:
        return run(
            cmd, timeout=deadline - time.monotonic(), env=env, on_stderr_line=on, cancel=cancel
        ).stdout
    except ToolCancelled:
        raise
    except PgToolError as exc:
        if time.monotonic() >= deadline:
            raise RestoreError(
                f"the restore did not finish within {timeout:g} s and was stopped "
                f"(during the {label})"
            ) from exc
        raise _failure(exc.message, label=label, tool=cmd[0]) from exc


def _failure(message: str, *, label: str, tool: str) -> RestoreError:
    """pg_restore's condensed failure, said in the words a person needs."""
    if message.startswith(DISK_FULL):
        return RestoreError(f"restoring the {label} failed: {message}")
    if _TEXT_DUMP.search(message):
        return RestoreError(
            f"the dump file is a plain SQL script, not a pg_dump archive: {message}"
        )
    if _NEWER_DUMP.search(message):
        return RestoreError(
            f"the dump was written by a newer pg_dump than {tool} can read: {message}"
        )
    if _CORRUPT.search(message):
        return RestoreError(f"the dump file is truncated or corrupted: {message}")
    return RestoreError(f"restoring the {label} failed: {message}")


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
