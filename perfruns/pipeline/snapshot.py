"""Produce an anonymized snapshot of a source database (DESIGN.md step 2).

    check the source   policy against its schema (a draft's undecided lines refused),
                       fail-closed PII scan
    probe              in the scratch cluster, the source's pre-data schema and a
                       sample of each masked table's rows, masked: every constraint the
                       masked values break (domains, CHECKs, lengths, NOT NULL, unique)
                       is reported before anything is dumped, naming table.column and
                       the policy line
    dump               pg_dump -Fc of the source, read-only, into a private folder
                       (without large objects when the policy drops them)
    mask               restore into a throw-away cluster: pre-data; data, with the
                       masked values (twins) or the HMACs computed as rows load (big
                       tables over `jobs` sessions, the others beside them); for tables
                       not masked by twins, one rewriting ALTER each (in parallel);
                       post-data (indexes and foreign keys built once, on masked data)
    verify             no sampled original value left, no PII in unlisted columns,
                       no dead tuples; the plans of the source's top statements and of
                       the policy's queries compared (plan fidelity, reported)
    write              pg_dump -Fc of the masked database, owner-only, with its sha256

The raw dump and the scratch cluster are removed as soon as masking is done, and
on every failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

import psycopg
from psycopg import sql

from perfruns.masking import functions as masking_functions
from perfruns.masking import sql as masking_sql
from perfruns.masking import twins as masking_twins
from perfruns.masking.expressions import column_expression, column_type
from perfruns.masking.pii import MAX_VALUE, pii_tokens, scan
from perfruns.masking.pii import report as pii_report
from perfruns.masking.policy import (
    SHAPE_FAKES,
    Policy,
    Strategy,
    TablePolicy,
    parse_policy,
    policy_hash,
    undecided_lines,
    validate,
)
from perfruns.masking.schema import Schema, TableInfo, introspect
from perfruns.masking.twins import RestoredColumn
from perfruns.system import file_sha256

from . import plans as plan_check
from .cluster import ManagedCluster
from .databases import create_database, drop_database
from .pgtools import find_binary, one_value, redact, run, split_password
from .restore import restore_dump

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10
# Original values sampled per masked column, looked for in the masked copy.
SAMPLES_PER_COLUMN = 50
# Rows of each masked table copied into the probe database and masked there.
PROBE_ROWS = 2000
# A masked table with at least this many rows (the source's estimate) loads over `jobs`
# sessions side by side; a smaller one in one of pg_restore's.
SPLIT_ROWS = 200_000


class SourceUnreachable(Exception):
    """The source could not be read; the message never holds its DSN or password."""


class PolicyInvalid(Exception):
    """The policy cannot make a snapshot: the message says how many problems and what
    kind, the report lists each once (the page shows both: the list is not repeated)."""

    def __init__(self, problems: list[str], *, undecided: list[str] | None = None, lead: str = ""):
        self.report = {"policy_errors": problems, "text": "\n".join(problems)}
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        if undecided:
            lead = (
                f"The masking policy is a draft: {len(undecided)} line"
                f"{'s' if len(undecided) != 1 else ''} still to decide"
                + (
                    f", {len(problems) - len(undecided)} other problem(s)"
                    if len(problems) > len(undecided)
                    else ""
                )
            )
        lead = lead or "The masking policy does not fit the source"
        super().__init__(f"{lead} ({count}, listed in the report).")


class PiiRejected(Exception):
    def __init__(self, findings: list[Any]):
        text = pii_report(findings)
        self.report = {"findings": [f.as_dict() for f in findings], "text": text}
        super().__init__(
            f"Possible PII in {len(findings)} column(s) the policy does not cover; nothing "
            "was written. Mask them, or 'keep' them with a reason."
        )


class VerificationFailed(Exception):
    def __init__(self, checks: list[dict[str, Any]]):
        self.report = {"checks": checks}
        failed = [c for c in checks if not c["ok"]]
        super().__init__(
            "The masked copy failed verification: "
            + "; ".join(f"{c['name']}: {c['detail']}" for c in failed)
        )


@dataclass
class SnapshotResult:
    path: Path
    sha256: str
    size: int
    table_rows: dict[str, int]
    policy_hash: str
    report: dict[str, Any] = field(default_factory=dict)


def connect_source(dsn: str) -> psycopg.Connection:
    """A read-only session on the source: a role without write is enough."""
    try:
        conn = psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT, autocommit=True)
    except psycopg.OperationalError as exc:
        text = str(exc)
        if "password authentication failed" in text or "no password supplied" in text:
            reason = "the source refused the password (wrong password for its role)"
        elif "does not exist" in text:
            reason = redact(text.strip().splitlines()[-1])
        else:
            reason = "the source is unreachable (" + redact(text.strip().splitlines()[-1]) + ")"
        raise SourceUnreachable(f"Cannot connect to the source: {reason}.") from None
    except psycopg.ProgrammingError:
        raise SourceUnreachable("The source's DSN is not a valid PostgreSQL DSN.") from None
    conn.execute("SET default_transaction_read_only = on")
    return conn


# ---------------------------------------------------------------- checking


def _sample_targets(
    policy: Policy, schema: Schema
) -> list[tuple[TableInfo, str, str | None, Strategy]]:
    """(table, column, json key or None, rule) whose original values must not survive."""
    targets: list[tuple[TableInfo, str, str | None, Strategy]] = []
    for name, rules in policy.tables.items():
        info = schema.tables.get(name)
        if info is None or rules.truncate:
            continue
        for column, rule in rules.columns.items():
            if not _survival_checked(rule, info.column(column)):
                continue
            if rule.kind == "json_drop":
                targets += [(info, column, key, rule) for key in rule.keys if "." not in key]
            elif rule.kind == "json_mask":
                targets += [
                    (info, column, key, sub)
                    for key, sub in rule.fields
                    if _survival_checked(sub, None) and sub.kind not in ("json_mask", "json_drop")
                ]
            else:
                targets.append((info, column, None, rule))
    return targets


def _survival_checked(rule: Strategy, column: Any) -> bool:
    """Whether no original value may be found in the masked column. Not for rules that
    keep values, move them (dates, offsets), or permute them within their own kind: a
    shape fake or an integer hash is a bijection, so another row's original legitimately
    comes out."""
    if rule.kind in ("keep", "review", "date_shift", "offset", "constant", "recompute", "drop"):
        return False
    if rule.kind == "fake" and rule.fake in SHAPE_FAKES:
        return False
    if column is not None and column.is_array:
        return False
    return not (
        rule.kind == "hash" and column is not None and column.type_class in ("int", "number")
    )


def _value_expr(column: str, key: str | None) -> sql.Composable:
    if key is None:
        return sql.SQL("{}::text").format(sql.Identifier(column))
    return sql.SQL("{} ->> {}").format(sql.Identifier(column), sql.Literal(key))


def sample_originals(
    conn: psycopg.Connection, *, policy: Policy, schema: Schema
) -> list[dict[str, Any]]:
    samples = []
    for info, column, key, rule in _sample_targets(policy, schema):
        expr = _value_expr(column, key)
        rows = conn.execute(
            sql.SQL("SELECT DISTINCT {e} FROM {o}{t} WHERE {e} IS NOT NULL LIMIT {n}").format(
                e=expr, o=info.only, t=info.identifier, n=sql.Literal(SAMPLES_PER_COLUMN)
            )
        ).fetchall()
        values = [r[0] for r in rows]
        if rule.kind == "mask":
            # A value no longer than what mask keeps is legitimately unchanged.
            values = [v for v in values if len(v) > rule.first + rule.last]
        if rule.kind in ("fake", "hash"):
            # Blank values stay as they are.
            values = [v for v in values if v.strip()]
        if values:
            samples.append(
                {"table": info.qualified, "column": column, "key": key, "values": values}
            )
    return samples


# Rules that keep part of each value: what they leave is searched for original e-mail
# addresses, IBANs and card numbers (pii_tokens), anywhere inside the masked value.
_PARTIAL = ("json_mask", "json_drop", "mask")
# Rows of a partially masked column whose tokens are looked for in the masked copy.
TOKEN_ROWS = 200


def _partial_columns(rules: TablePolicy, info: TableInfo) -> list[tuple[str, Strategy]]:
    """Columns whose masking keeps part of each value: a document masked key by key, a
    string masked but for its ends, an array masked element by element."""
    found = []
    for name, rule in rules.columns.items():
        column = info.column(name)
        if column is None or rules.truncate:
            continue
        whole = rule.kind in ("keep", "review", "null", "constant", "recompute", "drop")
        if rule.kind in _PARTIAL or (column.is_array and not whole):
            found.append((name, rule))
    return found


def _column_tokens(conn: psycopg.Connection, info: TableInfo, column: str) -> list[str]:
    rows = conn.execute(
        sql.SQL("SELECT left({c}::text, {m}) FROM {o}{t} WHERE {c} IS NOT NULL LIMIT {n}").format(
            c=sql.Identifier(column),
            m=sql.Literal(MAX_VALUE),
            o=info.only,
            t=info.identifier,
            n=sql.Literal(TOKEN_ROWS),
        )
    ).fetchall()
    tokens: set[str] = set()
    for (text,) in rows:
        tokens |= pii_tokens(text)
    return sorted(tokens)[: SAMPLES_PER_COLUMN * 4]


def _rows_holding(conn: psycopg.Connection, info: TableInfo, column: str, tokens: list[str]) -> int:
    """Rows whose column, as text, still holds one of `tokens` (lowercased) anywhere."""
    return int(
        one_value(
            conn.execute(
                # Each row's text lowered once, not once per token (OFFSET 0 keeps the
                # planner from pulling the subquery up into the EXISTS).
                sql.SQL(
                    "SELECT count(*) FROM (SELECT lower({c}::text) AS v FROM {o}{t} OFFSET 0)"
                    " AS row_ WHERE EXISTS (SELECT 1 FROM unnest(%s::text[]) AS token(v)"
                    " WHERE strpos(row_.v, token.v) > 0)"
                ).format(o=info.only, t=info.identifier, c=sql.Identifier(column)),
                [tokens],
            )
        )
    )


def sample_tokens(
    conn: psycopg.Connection, *, policy: Policy, schema: Schema
) -> list[dict[str, Any]]:
    """The e-mail addresses, IBANs and card numbers found in a sample of each partially
    masked column (`inside`: looked for anywhere inside the masked values)."""
    samples = []
    for name, rules in policy.tables.items():
        info = schema.tables.get(name)
        if info is None:
            continue
        for column, _rule in _partial_columns(rules, info):
            tokens = _column_tokens(conn, info, column)
            if tokens:
                samples.append(
                    {
                        "table": info.qualified,
                        "column": column,
                        "key": None,
                        "values": tokens,
                        "inside": True,
                    }
                )
    return samples


def check_source(*, dsn: str, policy_text: str) -> tuple[Policy, Schema, list[dict[str, Any]]]:
    policy = parse_policy(policy_text)
    with connect_source(dsn) as conn:
        schema = introspect(conn)
        problems = validate(policy, schema)
        if problems:
            raise PolicyInvalid(problems, undecided=undecided_lines(policy))
        findings = scan(conn, schema=schema, policy=policy)
        if findings:
            raise PiiRejected(findings)
        samples = sample_originals(conn, policy=policy, schema=schema)
        samples += sample_tokens(conn, policy=policy, schema=schema)
    return policy, schema, samples


# ---------------------------------------------------------------- masking


def _descendants(schema: Schema, roots: set[str]) -> set[str]:
    seen, queue = set(roots), list(roots)
    while queue:
        for child, _fk in schema.children_of(queue.pop()):
            if child.qualified not in seen:
                seen.add(child.qualified)
                queue.append(child.qualified)
    return seen


# Plain tables only: ALTER TABLE on an inheritance parent or a partitioned table reaches
# tables whose rows load under other names.
_PLAIN_TABLE = """
SELECT c.relkind = 'r' AND NOT c.relispartition
   AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""


# The columns of a restored table, in order, for masking_twins.twin_masking_sql.
_RESTORED_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid),
       CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END,
       CASE WHEN a.attstorage <> t.typstorage THEN a.attstorage::text END,
       nullif(a.attcompression::text, ''),
       a.attstattarget,
       col_description(a.attrelid, a.attnum),
       ARRAY(SELECT o FROM unnest(a.attoptions) o
             WHERE split_part(o, '=', 1) IN ('n_distinct', 'n_distinct_inherited')),
       a.attidentity = '' AND a.attgenerated = ''
       AND NOT EXISTS (
         SELECT 1 FROM pg_depend dep
         WHERE dep.refclassid = 'pg_class'::regclass AND dep.refobjid = a.attrelid
           AND dep.refobjsubid = a.attnum
           AND NOT (dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid))
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = %s AND c.relname = %s)
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def restored_columns(conn: psycopg.Connection, info: TableInfo) -> list[RestoredColumn]:
    rows = conn.execute(_RESTORED_COLUMNS, [info.schema, info.name]).fetchall()
    return [RestoredColumn(*row) for row in rows]


class MaskingSteps:
    """The masking, around the data section of the restore (restore_dump's hooks).

    before_data, on the empty tables: the keyed helper functions, and for each masked plain
    table the generated columns that compute as its rows load either its masked values
    (masking_twins.TwinMasking: then no rewrite at all, for a table that loses no rows) or
    its HMACs (masking_sql.LoadMasking).
    split_loaded, once a split table's rows are in: when no filter can still change which
    rows stay, its rewrite starts right away, beside the loading of the other tables.
    between, once all rows are in: filters and orphan clean-up, the twins made plain
    columns (catalog changes only), then one rewriting ALTER
    per masked table not rewritten yet (tables in parallel, `jobs` sessions), VACUUM FULL
    for the filtered tables that are not rewritten, and the functions go.
    """

    def __init__(
        self, *, conninfo: str, policy: Policy, schema: Schema, key: bytes, jobs: int
    ) -> None:
        self.conninfo = conninfo
        self.policy = policy
        self.schema = schema
        self.key = key
        self.jobs = jobs
        self.present = [
            (rules, schema.tables[n]) for n, rules in policy.tables.items() if n in schema.tables
        ]
        self.rewritten = {
            info.qualified
            for rules, info in self.present
            if masking_sql.table_masking_sql(table=rules, info=info, policy=policy) is not None
        }
        # Tables masked only once all rows are in, by the statement of table_masking_sql.
        self.late = {
            info.qualified
            for rules, info in self.present
            if not masking_sql.early_maskable(table=rules, info=info, policy=policy)
        }
        filtered = {info.qualified for rules, info in self.present if rules.where is not None}
        truncated = {info.qualified for rules, info in self.present if rules.truncate}
        # Rows may only be rewritten once no filter or clean-up can delete any.
        self.rows_settled = not filtered and not truncated
        # Tables that lose rows keep dead tuples unless rewritten: the masked ones are
        # rewritten anyway, the others by VACUUM FULL.
        touched = _descendants(schema, filtered | truncated) - truncated
        self.vacuum = sorted(touched - self.rewritten)
        self.losing_rows = touched | filtered | truncated
        # The finishing statements of each table masked by twins, by qualified name.
        self.twins: dict[str, list[sql.Composed]] = {}
        self.native = False  # whether the fixproof_native extension computes the HMACs
        # The rewrite of each table prepared by before_data, by qualified name.
        self.prepared: dict[str, sql.Composed] = {}
        self.early: dict[str, threading.Thread] = {}
        self.early_errors: list[BaseException] = []

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True)

    def _rewrite(self, rules: TablePolicy, info: TableInfo) -> sql.Composed | None:
        prepared = self.prepared.get(info.qualified)
        if prepared is not None:
            return prepared
        return masking_sql.table_masking_sql(table=rules, info=info, policy=self.policy)

    def before_data(self) -> None:
        with self._connect() as conn:
            self.native = one_value(conn.execute(masking_functions.NATIVE_AVAILABLE))
            conn.execute(masking_functions.functions_sql(key=self.key, native=self.native))
            for rules, info in self.present:
                if info.qualified not in self.rewritten or info.qualified in self.late:
                    continue
                row = conn.execute(_PLAIN_TABLE, [info.schema, info.name]).fetchone()
                if row is None or not row[0]:
                    continue
                if info.qualified not in self.losing_rows and self._prepare_twins(
                    conn, rules, info
                ):
                    continue
                masking = masking_sql.load_masking_sql(table=rules, info=info)
                if masking is None:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(masking.prepare)
                except psycopg.Error as exc:
                    # Then it is masked after loading, as a whole, like any other table.
                    logger.info(
                        "masking %s after its rows load: %s",
                        info.qualified,
                        exc.diag.message_primary or type(exc).__name__,
                    )
                    continue
                self.prepared[info.qualified] = masking.rewrite

    def _prepare_twins(self, conn: psycopg.Connection, rules: TablePolicy, info: TableInfo) -> bool:
        twins = masking_twins.twin_masking_sql(
            table=rules, info=info, restored=restored_columns(conn, info)
        )
        if twins is None:
            return False
        try:
            with conn.transaction():
                for statement in twins.prepare:
                    conn.execute(statement)
        except psycopg.Error as exc:
            logger.info(
                "masking %s by a rewrite: %s",
                info.qualified,
                exc.diag.message_primary or type(exc).__name__,
            )
            return False
        self.twins[info.qualified] = twins.finish
        return True

    def split_loaded(self, schema: str, table: str) -> bool:
        qualified = f"{schema}.{table}"
        found = next(((r, i) for r, i in self.present if i.qualified == qualified), None)
        if qualified in self.twins:
            return False  # nothing to rewrite: its finish takes no time
        if not self.rows_settled or found is None or qualified not in self.rewritten:
            return False
        if qualified in self.late or masking_sql.uses_maps(found[0]):
            return False
        statement = self._rewrite(*found)
        if statement is None:
            return False

        def run() -> None:
            try:
                with self._connect() as conn:
                    conn.execute(statement)
            except BaseException as exc:
                self.early_errors.append(exc)

        thread = threading.Thread(target=run, name=f"fixproof-rewrite-{qualified}", daemon=True)
        thread.start()
        self.early[qualified] = thread
        return True

    def wait(self) -> None:
        """Wait for the rewrites split_loaded started; raise the first failure."""
        for thread in self.early.values():
            thread.join()
        if self.early_errors:
            raise self.early_errors[0]

    def between(self) -> None:
        with self._connect() as conn:
            try:
                for rules, info in self.present:
                    statement = masking_sql.filter_sql(table=rules, info=info)
                    if statement is not None:
                        conn.execute(statement)
                cleanup = masking_sql.orphan_cleanup_sql(policy=self.policy, schema=self.schema)
                if cleanup is not None:
                    conn.execute(cleanup)
                for statements in self.twins.values():
                    with conn.transaction():
                        for statement in statements:
                            conn.execute(statement)
                for statement in masking_sql.map_sql(policy=self.policy, schema=self.schema):
                    conn.execute(statement)
                # One rewriting statement per table, biggest first, tables in parallel.
                rewrites = [
                    (info.estimated_rows, statement)
                    for rules, info in self.present
                    if info.qualified not in self.early
                    and info.qualified not in self.twins
                    and (statement := self._rewrite(rules, info)) is not None
                ]
                rewrites.sort(key=lambda item: -item[0])
                statements = [statement for _, statement in rewrites]
                # A session fewer while an early rewrite still runs.
                running = sum(thread.is_alive() for thread in self.early.values())
                _run_parallel(self.conninfo, statements, jobs=max(1, self.jobs - running))
                self.wait()
                for name in self.vacuum:
                    info = self.schema.tables[name]
                    conn.execute(sql.SQL("VACUUM (FULL) {}").format(info.identifier))
            finally:
                # The keyed functions must never reach the written dump (with CASCADE,
                # neither do the generated columns of a rewrite that failed).
                for thread in self.early.values():
                    thread.join()
                conn.execute(masking_functions.DROP_FUNCTIONS)


def _run_parallel(conninfo: str, statements: list[sql.Composed], *, jobs: int) -> None:
    """Run the statements in `jobs` sessions, each taking the next; after a failure no
    session takes another, and the first failure is raised."""
    pending: SimpleQueue[sql.Composed] = SimpleQueue()
    for statement in statements:
        pending.put(statement)
    failed = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with psycopg.connect(
                conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True
            ) as conn:
                while not failed.is_set():
                    try:
                        statement = pending.get_nowait()
                    except Empty:
                        return
                    conn.execute(statement)
        except BaseException as exc:
            errors.append(exc)
            failed.set()

    workers = [
        threading.Thread(target=work, daemon=True)
        for _ in range(max(1, min(jobs, len(statements))))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]


def restore_masked(
    *,
    dump_path: Path,
    conninfo: str,
    policy: Policy,
    schema: Schema,
    key: bytes,
    jobs: int,
    timeout: float,
    progress: Callable[[int, int], None] | None = None,
    split_rows: float = SPLIT_ROWS,
) -> None:
    """Restore a raw dump into an empty database, masked before indexes are built.

    The rows of a masked table of `split_rows` rows or more (the source's estimate) load
    over `jobs` sessions, each computing the HMACs of the rows it loads (MaskingSteps): the
    costly part of the masking runs as wide as the load, and only the final rewrite of
    each table is one session's work.
    """
    truncated = {
        (info.schema, info.name)
        for name, rules in policy.tables.items()
        if rules.truncate and (info := schema.tables.get(name)) is not None
    }
    split = {
        (info.schema, info.name): jobs
        for name, rules in policy.tables.items()
        if jobs > 1
        and (info := schema.tables.get(name)) is not None
        and info.estimated_rows >= split_rows
        and masking_sql.table_masking_sql(table=rules, info=info, policy=policy) is not None
    }
    steps = MaskingSteps(conninfo=conninfo, policy=policy, schema=schema, key=key, jobs=jobs)
    try:
        restore_dump(
            dump_path=dump_path,
            conninfo=conninfo,
            jobs=jobs,
            before_data=steps.before_data,
            split=split,
            split_loaded=steps.split_loaded,
            between=steps.between,
            exclude_data=truncated,
            progress=progress,
            timeout=timeout,
        )
    finally:
        # A restore that failed after a rewrite started: let that session end.
        with contextlib.suppress(Exception):
            steps.wait()


# ---------------------------------------------------------------- probing


def _masked_rules(policy: Policy, schema: Schema) -> list[tuple[TablePolicy, TableInfo]]:
    return [
        (rules, info)
        for name, rules in policy.tables.items()
        if (info := schema.tables.get(name)) is not None
        and not rules.truncate
        and masking_sql.table_masking_sql(table=rules, info=info, policy=policy) is not None
    ]


def _copy_sample(
    source: psycopg.Connection, probe: psycopg.Connection, info: TableInfo, rows: int
) -> None:
    """The first `rows` rows of a table, from the source into the probe's empty table."""
    columns = sql.SQL(", ").join(
        sql.Identifier(column.name) for column in info.columns if not column.generated
    )
    only = info.only
    read = sql.SQL("COPY (SELECT {c} FROM {o}{t} LIMIT {n}) TO STDOUT").format(
        c=columns, o=only, t=info.identifier, n=sql.Literal(rows)
    )
    write = sql.SQL("COPY {t} ({c}) FROM STDIN").format(t=info.identifier, c=columns)
    with source.cursor().copy(read) as out, probe.cursor().copy(write) as into:
        for block in out:
            into.write(block)


def _where(rules: TablePolicy, column: str) -> str:
    rule = rules.columns.get(column)
    at = f" (policy line {rule.line})" if rule is not None and rule.line else ""
    return f"{rules.qualified}.{column}{at}"


def _error_text(exc: psycopg.Error) -> str:
    return redact(exc.diag.message_primary or str(exc).strip().splitlines()[0])


def _probe_columns(conn: psycopg.Connection, rules: TablePolicy, info: TableInfo) -> list[str]:
    """One problem per masked column whose masked values break its type (a domain's CHECK,
    a length) or turn a value into NULL in a NOT NULL column."""
    problems = []
    for column in info.columns:
        rule = rules.columns.get(column.name)
        if rule is None or rule.kind in ("keep", "review", "recompute", "drop", "null"):
            continue
        value = column_expression(rule=rule, column=column, info=info)
        col = sql.Identifier(column.name)
        length = (
            sql.SQL("char_length(v::text) > {}").format(sql.Literal(column.max_length))
            if column.max_length and not column.is_array
            else sql.SQL("false")
        )
        statement = sql.SQL(
            "SELECT count(*) FILTER (WHERE v IS NULL AND {c} IS NOT NULL),"
            " count(*) FILTER (WHERE {long}), max(char_length(v::text))"
            " FROM (SELECT {c}, CAST({v} AS {t}) AS v FROM {o}{table}) AS probe"
        ).format(
            c=col,
            long=length,
            v=value,
            t=column_type(column),
            o=info.only,
            table=info.identifier,
        )
        where = _where(rules, column.name)
        try:
            with conn.transaction():
                nulls, long, longest = conn.execute(statement).fetchone() or (0, 0, 0)
        except psycopg.Error as exc:
            problems.append(
                f"{where}: {rule.describe()} makes values that {column.type} refuses: "
                f"{_error_text(exc)}."
            )
            continue
        if nulls and column.not_null:
            problems.append(
                f"{where}: {rule.describe()} turns {nulls} sampled value(s) into NULL, and the "
                "column is NOT NULL."
            )
        if long:
            problems.append(
                f"{where}: {rule.describe()} makes values of up to {longest} characters, longer "
                f"than {column.type}."
            )
    return problems


def _probe_table(
    conn: psycopg.Connection, rules: TablePolicy, info: TableInfo, policy: Policy
) -> list[str]:
    """The table masked as the snapshot masks it: a CHECK or a unique key the masked rows
    break."""
    statement = masking_sql.table_masking_sql(table=rules, info=info, policy=policy)
    masked = [n for n, r in rules.columns.items() if r.kind not in ("keep", "review")]
    lines = ", ".join(_where(rules, n) for n in masked)
    if statement is None:
        return []
    try:
        with conn.transaction():
            conn.execute(statement)
    except psycopg.Error as exc:
        column = exc.diag.column_name
        where = _where(rules, column) if column else f"{info.qualified} ({lines})"
        constraint = exc.diag.constraint_name
        what = f" constraint {constraint}" if constraint else ""
        return [f"{where}: the masked rows break{what}: {_error_text(exc)}."]
    problems = []
    for key in info.unique_sets:
        if not set(key) & set(masked):
            continue
        columns = [sql.Identifier(name) for name in key]
        duplicate = conn.execute(
            sql.SQL(
                "SELECT 1 FROM {o}{t} WHERE {nn} GROUP BY {c} HAVING count(*) > 1 LIMIT 1"
            ).format(
                o=info.only,
                t=info.identifier,
                nn=sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in columns),
                c=sql.SQL(", ").join(columns),
            )
        ).fetchone()
        if duplicate is not None:
            named = ", ".join(_where(rules, name) for name in key if name in masked)
            problems.append(
                f"{named}: the masked values repeat where ({', '.join(key)}) must be unique."
            )
    return problems


def _probe_leftovers(
    conn: psycopg.Connection,
    rules: TablePolicy,
    info: TableInfo,
    tokens: dict[tuple[str, str], list[str]],
) -> list[str]:
    """One problem per partially masked column whose masked sample rows still hold an
    e-mail address, IBAN or card number of the originals."""
    problems = []
    for column, rule in _partial_columns(rules, info):
        found = tokens.get((info.qualified, column))
        if not found:
            continue
        left = _rows_holding(conn, info, column, found)
        if not left:
            continue
        if rule.kind in ("json_mask", "json_drop"):
            how = (
                "it reaches only the keys it names, from the top of each document (not keys "
                "nested in arrays, nor values under other keys): name every path that holds "
                "them, or null the column"
            )
        else:
            how = "mask them whole (fake, hash or null)"
        problems.append(
            f"{_where(rules, column)}: {rule.describe()} leaves original e-mail addresses, "
            f"IBANs or card numbers in {left} masked sample row(s); {how}."
        )
    return problems


def probe_masking(
    *,
    source_dsn: str,
    probe_conninfo: str,
    policy: Policy,
    schema: Schema,
    key: bytes,
    work_dir: Path,
    timeout: float,
    rows: int = PROBE_ROWS,
) -> None:
    """Raise PolicyInvalid listing every constraint a sample of the masked rows breaks,
    before anything is dumped; or else every partially masked column whose masked sample
    still holds original e-mail addresses, IBANs or card numbers.

    The source's pre-data schema (types, domains, tables with their CHECKs and NOT NULLs)
    is restored into the probe database, the first `rows` rows of each masked table are
    copied in, and masked as the snapshot will mask them: column by column first (a
    domain's CHECK, a length, a NULL), then each table as a whole (CHECKs over several
    columns, unique keys among the sampled rows). Problems name table.column and the
    policy line."""
    masked = _masked_rules(policy, schema)
    if not masked:
        return
    schema_dump = work_dir / "probe-schema.dump"
    pg_dump(conninfo=source_dsn, target=schema_dump, timeout=timeout, pre_data=True)
    problems: list[str] = []
    leftovers: list[str] = []

    def between() -> None:
        with (
            psycopg.connect(
                probe_conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True
            ) as conn,
            connect_source(source_dsn) as source,
        ):
            conn.execute(masking_functions.functions_sql(key=key))
            for _rules, info in masked:
                _copy_sample(source, conn, info, rows)
            for statement in masking_sql.map_sql(policy=policy, schema=schema):
                conn.execute(statement)
            tokens = {
                (info.qualified, column): _column_tokens(conn, info, column)
                for rules, info in masked
                for column, _rule in _partial_columns(rules, info)
            }
            for rules, info in masked:
                problems.extend(_probe_columns(conn, rules, info))
            if not problems:
                for rules, info in masked:
                    problems.extend(_probe_table(conn, rules, info, policy))
            if not problems:
                for rules, info in masked:
                    leftovers.extend(_probe_leftovers(conn, rules, info, tokens))

    try:
        restore_dump(
            dump_path=schema_dump, conninfo=probe_conninfo, jobs=1, between=between, timeout=timeout
        )
    finally:
        schema_dump.unlink(missing_ok=True)
    if problems:
        raise PolicyInvalid(
            list(dict.fromkeys(problems)),
            lead="The masked values would break the copy's constraints; nothing was dumped",
        )
    if leftovers:
        raise PolicyInvalid(
            leftovers,
            lead="The masking would leave personal data in the copy; nothing was dumped",
        )


# ---------------------------------------------------------------- verifying


def dead_tuples(conn: psycopg.Connection) -> int:
    # n_dead_tup is an estimate that a DELETE raises and only ANALYZE brings back
    # down (VACUUM FULL and a rewrite leave it as is): analyze, then read.
    conn.execute("ANALYZE")
    # Statistics reach the shared view when a backend reports them: force it.
    conn.execute("SELECT pg_stat_force_next_flush()")
    time.sleep(0.5)
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(
        one_value(conn.execute("SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables"))
    )


def verify_masked(
    conn: psycopg.Connection, *, policy: Policy, schema: Schema, samples: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    checks: list[dict[str, Any]] = []
    for sample in samples:
        info = schema.tables[sample["table"]]
        if sample.get("inside"):
            left = _rows_holding(conn, info, sample["column"], sample["values"])
            checks.append(
                {
                    "name": f"no original e-mail, IBAN or card number inside "
                    f"{sample['table']}.{sample['column']}",
                    "ok": left == 0,
                    "detail": f"{len(sample['values'])} sampled originals, found in {left} row(s)",
                }
            )
            continue
        expr = _value_expr(sample["column"], sample["key"])
        left = one_value(
            conn.execute(
                sql.SQL("SELECT count(*) FROM {o}{t} WHERE {e} = ANY(%s)").format(
                    o=info.only, t=info.identifier, e=expr
                ),
                [sample["values"]],
            )
        )
        where = f"{sample['table']}.{sample['column']}" + (
            f"->{sample['key']}" if sample["key"] else ""
        )
        checks.append(
            {
                "name": f"no original value in {where}",
                "ok": left == 0,
                "detail": f"{len(sample['values'])} sampled originals, {left} found",
            }
        )
    masked_schema = introspect(conn)
    findings = scan(conn, schema=masked_schema, policy=policy)
    checks.append(
        {
            "name": "no PII in unlisted columns",
            "ok": not findings,
            "detail": pii_report(findings) if findings else "none found",
        }
    )
    rows = {
        name: int(
            one_value(
                conn.execute(
                    sql.SQL("SELECT count(*) FROM {}{}").format(info.only, info.identifier)
                )
            )
        )
        for name, info in sorted(masked_schema.tables.items())
    }
    dead = dead_tuples(conn)
    checks.append(
        {"name": "no dead tuples left by masking", "ok": dead == 0, "detail": f"{dead} dead tuples"}
    )
    return checks, rows


# ---------------------------------------------------------------- writing


def pg_dump(
    *, conninfo: str, target: Path, timeout: float, blobs: bool = True, pre_data: bool = False
) -> None:
    """pg_dump -Fc without owners, grants or security labels; password via environment.
    `blobs` False: without large objects; `pre_data`: the pre-data schema only."""
    safe, env = split_password(conninfo)
    run(
        [
            find_binary("pg_dump"),
            *([] if blobs else ["--no-blobs"]),
            *(["--schema-only", "--section=pre-data"] if pre_data else []),
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            "--no-security-labels",
            "--no-subscriptions",
            "--no-publications",
            f"--file={target}",
            f"--dbname={safe}",
        ],
        timeout=timeout,
        env={**os.environ, **env},
    )


def compare_plans(*, source_dsn: str, masked_conninfo: str, policy: Policy) -> dict[str, Any]:
    """The plan-fidelity report (plans.plan_fidelity); a failure to read plans is reported,
    never fatal: the masked copy is already verified."""
    try:
        with (
            connect_source(source_dsn) as source,
            psycopg.connect(
                masked_conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True
            ) as masked,
        ):
            return plan_check.plan_fidelity(source, masked, queries=policy.queries)
    except (psycopg.Error, SourceUnreachable) as exc:
        reason = _error_text(exc) if isinstance(exc, psycopg.Error) else str(exc)
        logger.warning("plan fidelity not checked: %s", reason)
        return {"plans": [], "compared": 0, "changed": 0, "text": f"not checked: {reason}"}


def _private_dir(path: Path, mode: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def produce_snapshot(
    *,
    source_dsn: str,
    source_name: str,
    policy_text: str,
    key: bytes,
    out_dir: Path,
    work_dir: Path,
    jobs: int,
    timeout: float,
    stage: Callable[[str], None] = lambda _name: None,
    os_user: str | None = None,
) -> SnapshotResult:
    stage("checking the source")
    policy, schema, samples = check_source(dsn=source_dsn, policy_text=policy_text)
    deadline = time.monotonic() + timeout
    # The scratch cluster's OS user must traverse work_dir; only the raw folder
    # (readable by this process alone) holds unmasked data.
    _private_dir(work_dir, 0o711)
    raw = _private_dir(work_dir / "raw", 0o700) / "source.dump"
    cluster = ManagedCluster(work_dir / "cluster", os_user=os_user)
    try:
        stage("starting a scratch cluster")
        # Thrown away after: durability is traded for speed.
        cluster.initialize(
            shared_buffers="256MB", work_mem="64MB", max_connections=20, durable=False
        )
        cluster.start()
        stage("probing the masking")
        create_database(cluster.conninfo("postgres"), "probe")
        probe_masking(
            source_dsn=source_dsn,
            probe_conninfo=cluster.conninfo("probe"),
            policy=policy,
            schema=schema,
            key=key,
            work_dir=raw.parent,
            timeout=max(60.0, deadline - time.monotonic()),
        )
        drop_database(cluster.conninfo("postgres"), "probe")
        stage("dumping the source")
        dropped_blobs = policy.large_objects is not None and policy.large_objects.kind == "drop"
        pg_dump(conninfo=source_dsn, target=raw, timeout=timeout, blobs=not dropped_blobs)
        create_database(cluster.conninfo("postgres"), "scratch")
        scratch = cluster.conninfo("scratch")
        stage("masking")
        restore_masked(
            dump_path=raw,
            conninfo=scratch,
            policy=policy,
            schema=schema,
            key=key,
            jobs=jobs,
            timeout=max(60.0, deadline - time.monotonic()),
        )
        # Masking is done: the unmasked copy goes now, not at the end.
        shutil.rmtree(raw.parent, ignore_errors=True)
        stage("verifying")
        with psycopg.connect(scratch, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
            checks, rows = verify_masked(conn, policy=policy, schema=schema, samples=samples)
        if not all(c["ok"] for c in checks):
            raise VerificationFailed(checks)
        stage("comparing plans")
        plans = compare_plans(source_dsn=source_dsn, masked_conninfo=scratch, policy=policy)
        stage("writing the dump")
        _private_dir(out_dir, 0o700)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        final = out_dir / f"{source_name}-{stamp}.dump"
        partial = final.with_suffix(".partial")
        try:
            pg_dump(
                conninfo=scratch,
                target=partial,
                timeout=max(60.0, deadline - time.monotonic()),
            )
            partial.chmod(0o600)
            with partial.open("rb") as fh:
                os.fsync(fh.fileno())
            partial.rename(final)
        finally:
            partial.unlink(missing_ok=True)
        return SnapshotResult(
            path=final,
            sha256=file_sha256(final),
            size=final.stat().st_size,
            table_rows=rows,
            policy_hash=policy_hash(policy_text),
            report={
                "checks": checks,
                "text": "\n".join(
                    f"{'ok' if c['ok'] else 'FAILED'}  {c['name']}: {c['detail']}" for c in checks
                )
                + "\n\nPlan fidelity: "
                + plans["text"],
                "plans": plans["plans"],
                "compared": plans["compared"],
                "changed": plans["changed"],
            },
        )
    finally:
        cluster.destroy()
        shutil.rmtree(work_dir, ignore_errors=True)
