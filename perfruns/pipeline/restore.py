"""Restoring an anonymized dump into a review database, and swapping it in.

A restore goes into a *new* database, in sections (pre-data, data, the masking hook,
post-data), is analyzed, then replaces the live database by rename in one transaction. Until
that commit the previous database keeps serving; a failure drops the new one. The live
database is a template, so each perf run clones it (FILE_COPY: seconds, not a restore).

Beside this module: `archive` reads the dump with pg_restore, `split_copy` loads a big
table over several COPY sessions, `databases` creates, clones, drops and swaps databases.
"""

from __future__ import annotations

import logging
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import make_conninfo

from perfruns.pipeline.archive import (
    MATVIEW_DATA,
    TABLE_DATA,
    TOC_LINE,
    TocEntry,
    check_deadline,
    read_toc,
    readable_dump,
    run_pg_restore,
)
from perfruns.pipeline.databases import (
    analyze,
    check_live_name,
    create_database,
    drop_database,
    scratch_name,
    swap_database,
)
from perfruns.pipeline.pgtools import ToolCancelled, find_binary, split_password
from perfruns.pipeline.split_copy import copy_split

logger = logging.getLogger(__name__)

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
# What `pg_restore --verbose` says as tables load (`_DataProgress`).
_SERIAL_DATA = re.compile(r"processing data for table ")
_PARALLEL_DONE = re.compile(r"finished item (\d+) ")


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
    dump_path = readable_dump(dump_path)
    entries, sections, archive_format = read_toc(pg_restore, dump_path, deadline=deadline)
    plan = plan_restore(
        entries, sections, defer_views=between is not None, exclude_data=exclude_data
    )
    missing = set(exclude_data) - {(e.schema, e.name) for e in plan.skipped_data}
    if missing:
        logger.info("tables to leave empty are not in %s: %s", dump_path.name, sorted(missing))
    # Parallel restore needs a seekable custom or directory archive, not tar.
    jobs = jobs if archive_format in {"CUSTOM", "DIRECTORY"} else 1
    target, env = split_password(conninfo)

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
            run_pg_restore(
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
            check_deadline(deadline, timeout=timeout, label="data")
        streams = split or {}
        split_entries = [
            (entry, streams[(entry.schema, entry.name)])
            for entry in plan.data
            if entry.kind == TABLE_DATA and streams.get((entry.schema, entry.name), 1) > 1
        ]
        rest = [e for e in plan.data if all(e is not entry for entry, _ in split_entries)]
        # The split tables load first, each with every session: the longest loads. The
        # other tables load beside them in one more pg_restore session, so that no core
        # waits while the last split table or the last small table loads.
        beside = bool(split_entries) and any(e.kind == TABLE_DATA for e in rest)
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
            for entry, sessions in split_entries:
                loaded = copy_split(
                    entry,
                    streams=sessions,
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
            check_deadline(deadline, timeout=timeout, label="post-data")
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
        if entry.kind == TABLE_DATA and (entry.schema, entry.name) in exclude_data:
            skipped.append(entry)
        else:
            data.append(entry)
    post = [
        e
        for e in entries
        if (e.dump_id in deferred or sections.get(e.dump_id) == "post-data")
        and e.kind != MATVIEW_DATA
    ]
    return RestorePlan(
        pre_data=[e for e in pre if e.dump_id not in deferred],
        data=data,
        post_data=post,
        matview_data=[e for e in entries if e.kind == MATVIEW_DATA],
        skipped_data=skipped,
    )


def verify_archive(dump_path: Path, *, timeout: float = 3600) -> int:
    """The number of TOC entries of a pg_dump archive, after reading it to the end.

    `pg_restore -l` only reads the table of contents, which sits at the start of a custom
    archive and survives a cut; reading every data block (into /dev/null) catches the cut.
    """
    deadline = time.monotonic() + timeout
    pg_restore = find_binary("pg_restore")
    dump_path = readable_dump(dump_path)
    listing = run_pg_restore(
        [pg_restore, "--list", str(dump_path)],
        label="table of contents",
        deadline=deadline,
        timeout=timeout,
    )
    count = sum(1 for line in listing.splitlines() if TOC_LINE.match(line))
    run_pg_restore(
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
    check_live_name(live)
    deadline = time.monotonic() + timeout
    new = scratch_name(live, "new")
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
        self.table_ids = {e.dump_id for e in entries if e.kind == TABLE_DATA}
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
