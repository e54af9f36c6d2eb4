"""Loading one table's rows over several COPY sessions side by side (`copy_split`)."""

from __future__ import annotations

import contextlib
import itertools
import queue
import re
import subprocess
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

from perfruns.pipeline.archive import TocEntry, restore_failure
from perfruns.pipeline.databases import CONNECT_TIMEOUT, RestoreError, connect
from perfruns.pipeline.pgtools import DISK_FULL, condense
from perfruns.system import kill_group, spawn

# What `pg_restore --data-only --file=-` writes before a table's rows.
_COPY_LINE = re.compile(rb"^COPY .* FROM stdin;\n\Z")
_ENCODING_LINE = re.compile(rb"^SET client_encoding = '([A-Za-z0-9_]+)';\n\Z")
_END_OF_COPY = b"\\.\n"
# Rows go to the COPY sessions in blocks of whole lines of about this size: small enough
# that the sessions take turns finely (the table keeps the dump's order closely),
# large enough that Python only hands buffers around.
SPLIT_BLOCK_BYTES = 1 << 20

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


def copy_split(
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
        with connect(self.conninfo, action=f"restoring the {label} failed") as conn:
            row = conn.execute(_COPY_COLUMNS, [entry.schema, entry.name]).fetchone()
        if row is None:
            return False
        expected, columns = row[0].encode() + b"\n", row[1]
        list_file = self.workdir / f"split-{entry.dump_id}.list"
        list_file.write_text(f"{entry.line}\n")
        stderr_file = self.workdir / f"split-{entry.dump_id}.err"
        with stderr_file.open("wb") as stderr:
            proc = spawn(
                [
                    self.pg_restore,
                    "--data-only",
                    "--use-list",
                    str(list_file),
                    "--file=-",
                    str(self.dump_path),
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        # A read blocks until pg_restore writes: past the deadline, end it and say so.
        watchdog = threading.Timer(max(0.0, self.deadline - time.monotonic()), kill_group, [proc])
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
                kill_group(proc)
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
            first = errors[0]
            # The primary message only: the context of a COPY error quotes the row.
            message = (
                first.diag.message_primary if isinstance(first, psycopg.Error) else None
            ) or type(first).__name__
            raise RestoreError(f"restoring the {label} failed: {condense(message)}") from first

    def _tool_failure(
        self, proc: subprocess.Popen[bytes], stderr_file: Path, *, label: str
    ) -> RestoreError:
        detail = condense(stderr_file.read_text(errors="replace"))
        detail = detail or f"exited with status {proc.returncode}"
        if not detail.startswith(("pg_restore", DISK_FULL)):
            detail = f"pg_restore: {detail}"
        return restore_failure(detail, label=label, tool=self.pg_restore)

    def _timed_out(self, label: str) -> None:
        raise RestoreError(
            f"the restore did not finish within {self.timeout:g} s and was stopped "
            f"(during the {label})"
        )
