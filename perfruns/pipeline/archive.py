"""Reading a pg_dump archive with pg_restore: its table of contents, and its failures.

`read_toc` lists the entries and the section of each; `run_pg_restore` runs pg_restore
within the restore's deadline and turns its failure into a `RestoreError` worded for a
person (a cut or corrupt dump, a plain SQL script, a dump from a newer pg_dump).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from perfruns.pipeline.databases import RestoreError
from perfruns.pipeline.pgtools import DISK_FULL, PgToolError, ToolCancelled, run

MATVIEW_DATA = "MATERIALIZED VIEW DATA"
TABLE_DATA = "TABLE DATA"
# The `desc` column of `pg_restore -l`; several hold spaces, longest first to match.
_KNOWN_KINDS = sorted(
    {
        "ACCESS METHOD", "ACL", "AGGREGATE", "BLOB", "BLOBS", "CAST", "CHECK CONSTRAINT",
        "COLLATION", "COMMENT", "CONSTRAINT", "CONVERSION", "DATABASE", "DATABASE PROPERTIES",
        "DEFAULT", "DEFAULT ACL", "DOMAIN", "ENCODING", "EVENT TRIGGER", "EXTENSION",
        "FK CONSTRAINT", "FOREIGN DATA WRAPPER", "FOREIGN SERVER", "FOREIGN TABLE", "FUNCTION",
        "INDEX", "INDEX ATTACH", "LARGE OBJECT", "MATERIALIZED VIEW", MATVIEW_DATA,
        "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "POLICY", "PROCEDURAL LANGUAGE",
        "PROCEDURE", "PUBLICATION", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA",
        "ROW SECURITY", "RULE", "SCHEMA", "SEARCHPATH", "SECURITY LABEL", "SEQUENCE",
        "SEQUENCE OWNED BY", "SEQUENCE SET", "SERVER", "SHELL TYPE", "STATISTICS",
        "STDSTRINGS", "SUBSCRIPTION", "TABLE", "TABLE ATTACH", TABLE_DATA,
        "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE", "TRANSFORM", "TRIGGER", "TYPE", "USER MAPPING", "VIEW",
    },
    key=len,
    reverse=True,
)  # fmt: skip
_SECTIONS = ("pre-data", "data", "post-data")
TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
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


@dataclass(frozen=True)
class TocEntry:
    """One line of `pg_restore -l`: `line` is what goes back into a `-L` list."""

    dump_id: int
    kind: str
    schema: str
    name: str
    line: str
    depends_on: frozenset[int]


def read_toc(
    pg_restore: str, dump_path: Path, *, deadline: float
) -> tuple[list[TocEntry], dict[int, str], str]:
    timeout = deadline - time.monotonic()

    def listing(*options: str) -> str:
        return run_pg_restore(
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
            if match := TOC_LINE.match(line):
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
        match = TOC_LINE.match(line)
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


def run_pg_restore(
    cmd: list[str],
    *,
    label: str,
    deadline: float,
    timeout: float,
    env: dict[str, str] | None = None,
    on: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> str:
    check_deadline(deadline, timeout=timeout, label=label)
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
        raise restore_failure(exc.message, label=label, tool=cmd[0]) from exc


def restore_failure(message: str, *, label: str, tool: str) -> RestoreError:
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


def check_deadline(deadline: float, *, timeout: float, label: str) -> None:
    if time.monotonic() >= deadline:
        raise RestoreError(
            f"the restore did not finish within {timeout:g} s (stopped before the {label})"
        )


def readable_dump(dump_path: Path) -> Path:
    dump_path = Path(dump_path)
    if not dump_path.exists():
        raise RestoreError(f"the dump file {dump_path} does not exist")
    if dump_path.is_file() and dump_path.stat().st_size == 0:
        raise RestoreError(f"the dump file {dump_path} is empty")
    return dump_path
