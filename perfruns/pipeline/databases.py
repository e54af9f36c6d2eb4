"""The databases of a managed cluster: create, clone, drop, list, analyze, swap.

A restored database becomes the live one by rename (`swap_database`), and is a template
that each perf run clones (FILE_COPY: seconds, not a restore). Names are checked against
PostgreSQL's limit, which would otherwise truncate two of ours into one.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import Iterator

import psycopg
from psycopg import sql

from perfruns.pipeline.pgtools import condense

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10
# NAMEDATALEN - 1: PostgreSQL silently truncates longer names, which would make two of ours
# collide.
MAX_NAME_BYTES = 63
_SCRATCH_SUFFIX_BYTES = len("__new_") + 8
MAX_LIVE_NAME_BYTES = MAX_NAME_BYTES - _SCRATCH_SUFFIX_BYTES


class RestoreError(RuntimeError):
    """A restore, swap or database operation failed; the message says why, fit to show."""


def create_database(conninfo: str, name: str, *, template: str | None = None) -> None:
    """Create `name`: empty (from template0), or as a file copy of `template`.

    template0 rather than template1: objects an administrator added to template1 would
    collide with the restored ones.
    """
    _check_name(name)
    with connect(conninfo, action=f"could not create the database {name}") as conn:
        _create(conn, name, template=template)


def clone_database(conninfo: str, *, template: str, name: str, wait: float = 10) -> None:
    """Copy `template` to `name` for one perf run, ending the template's sessions first."""
    _check_name(name)
    _check_name(template)
    action = f"could not clone the database {template} as {name}"
    with connect(conninfo, action=action) as conn:
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
    with connect(conninfo, action=f"could not drop the database {name}") as conn:
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
    with connect(conninfo, action=f"could not look for the database {name}") as conn:
        return _exists(conn, name)


def list_databases(conninfo: str, prefix: str) -> list[str]:
    """Names of the databases starting with `prefix`, sorted."""
    with connect(conninfo, action="could not list the databases") as conn:
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
    with connect(conninfo, action="could not analyze the restored database") as conn:
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
    check_live_name(live)
    old = scratch_name(live, "old")
    action = f"could not swap the database {new} in as {live}"
    with connect(admin_conninfo, action=action) as conn:
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


@contextlib.contextmanager
def connect(conninfo: str, *, action: str) -> Iterator[psycopg.Connection]:
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
        with connect(admin_conninfo, action=f"could not reopen {live}") as conn:
            if _exists(conn, live):
                _set_allow_connections(conn, live, allow=True)
    except RestoreError:
        logger.exception("the database %s may still refuse connections", live)


def _rename(old: str, new: str) -> sql.Composed:
    return sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
        sql.Identifier(old), sql.Identifier(new)
    )


def scratch_name(live: str, kind: str) -> str:
    return f"{live}__{kind}_{secrets.token_hex(4)}"


def _check_name(name: str) -> None:
    if not name or "\x00" in name or len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"{name!r} is not a usable database name (1 to 63 bytes)")


def check_live_name(live: str) -> None:
    _check_name(live)
    if len(live.encode()) > MAX_LIVE_NAME_BYTES:
        raise ValueError(
            f"the database name {live!r} is too long: at most {MAX_LIVE_NAME_BYTES} bytes leave "
            "room for the suffix of its scratch copies"
        )
