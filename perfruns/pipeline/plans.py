"""Plan fidelity: does the planner choose the same plans on the masked copy as on the source?

A masked copy is only worth load-testing if its statistics lead the planner where the
source's lead it: masking that collapses a column to a few values can turn an Index Scan
into a Seq Scan. After masking, the generic plan of each statement worth checking (the
policy's `queries:` first, then the source's top statements from pg_stat_statements) is
read on both databases and reduced to its shape; a changed shape is reported with the
snapshot, never a failure.

Plain library code: functions take open psycopg connections and return JSON-ready values.
Nothing here writes: every plan is read inside a read-only transaction that is rolled
back, so the source's read-only session is enough. No DSN reaches a report or a log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

PLAN_NAME = "fixproof_plan"
# pg_stat_statements keeps up to track_activity_query_size bytes; a statement this long is
# generated SQL (a huge IN list, a report), not one whose plan people would read.
MAX_STATEMENT_CHARS = 10_000
REPORT_STATEMENT_CHARS = 300
TEXT_STATEMENT_CHARS = 120
MAX_REASON_CHARS = 200
MAX_SHAPE_LINES = 200
# Planning only reads the catalog and statistics, but a huge join can plan for long, and a

# pg_stat_statements keeps leading comments ("/* app:checkout */ SELECT ..."): look past them.
_LEADING_COMMENTS = r"^(\s+|--[^\n]*(\n|$)|/\*([^*]|\*+[^*/])*\*+/)*"
_PLANNABLE = r"^(select|with|insert|update|delete|values|table)\M"
# The catalog, the statistics views (our own query among them) and the masking's helpers.
_INTERNAL = r"pg_catalog|pg_stat|fixproof_mask"

_EXTENSION_SCHEMA = """
SELECT n.nspname
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""

# One row per text: the same normalized statement is kept per user and per nesting level.
_TOP_STATEMENTS = """
WITH statements AS (
    SELECT query, sum(total_exec_time) AS total
    FROM {view}
    WHERE dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
      AND length(query) <= %(max_chars)s
      AND query !~* %(internal)s
    GROUP BY query
)
SELECT query FROM statements
WHERE regexp_replace(query, %(comments)s, '') ~* %(plannable)s
ORDER BY total DESC, query
LIMIT %(limit)s
"""

# Positional children, shown by their place under their parent as EXPLAIN does.
_POSITIONAL = frozenset({"Outer", "Inner", "Member"})
# The names EXPLAIN's text format gives to strategies people know them by.
_STRATEGY_NAMES = {
    ("Aggregate", "Plain"): "Aggregate",
    ("Aggregate", "Sorted"): "GroupAggregate",
    ("Aggregate", "Hashed"): "HashAggregate",
    ("Aggregate", "Mixed"): "MixedAggregate",
    ("SetOp", "Sorted"): "SetOp",
    ("SetOp", "Hashed"): "HashSetOp",
}


@dataclass(frozen=True)
class PlanNode:
    """One node of a plan, reduced to what the planner chose: no costs, rows or workers."""

    label: str
    children: tuple[PlanNode, ...] = ()

    def lines(self, depth: int = 0) -> list[str]:
        # Like EXPLAIN's text: a child's arrow sits under its parent's name.
        head = " " * (4 * depth - 2) + "-> " + self.label if depth else self.label
        return [head] + [line for child in self.children for line in child.lines(depth + 1)]

    def text(self) -> str:
        lines = self.lines()
        if len(lines) > MAX_SHAPE_LINES:
            lines = lines[:MAX_SHAPE_LINES] + [f"… {len(lines) - MAX_SHAPE_LINES} more nodes"]
        return "\n".join(lines)


@dataclass(frozen=True)
class Planned:
    """A statement's generic plan shape, or why it could not be planned."""

    shape: PlanNode | None = None
    reason: str = ""


# ---------------------------------------------------------------- statements


def source_statements(conn: psycopg.Connection[Any], *, limit: int = 20) -> list[str]:
    """The connected database's top plannable statements by total time, normalized ($1...).

    Empty when the database has no pg_stat_statements, when the library is not preloaded
    (the view then raises) or when the role may not read it: the check then relies on the
    policy's queries alone.
    """
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL statement_timeout = '10s'")
            row = conn.execute(_EXTENSION_SCHEMA).fetchone()
            if row is None:
                return []
            view = sql.Identifier(row[0], "pg_stat_statements")
            params = {
                "max_chars": MAX_STATEMENT_CHARS,
                "internal": _INTERNAL,
                "comments": _LEADING_COMMENTS,
                "plannable": _PLANNABLE,
                "limit": limit,
            }
            rows = conn.execute(sql.SQL(_TOP_STATEMENTS).format(view=view), params).fetchall()
    except psycopg.Error as exc:
        logger.info("pg_stat_statements cannot be read on the source: %s", _reason(exc))
        return []
    return [query for (query,) in rows]


def _statements(queries: Sequence[str], top: Sequence[str]) -> list[str]:
    """The policy's queries first, then the top statements, each text once."""
    seen: set[str] = set()
    statements: list[str] = []
    for statement in [*queries, *top]:
        key = " ".join(statement.split()).rstrip(";").strip()
        if key and key not in seen:
            seen.add(key)
            statements.append(statement)
    return statements


# ---------------------------------------------------------------- plans


def generic_plan(conn: psycopg.Connection[Any], statement: str) -> Planned:
    """The shape of the plan the planner would cache for `statement`, whatever its $n.

    PostgreSQL 15 has no EXPLAIN (GENERIC_PLAN): the statement is prepared and explained
    under force_generic_plan with NULL for each parameter, which a generic plan never
    looks at. EXPLAIN without ANALYZE runs nothing, so INSERT, UPDATE and DELETE plan in
    a read-only transaction; the transaction is rolled back whatever happens.
    """
    prepared = False
    try:
        with conn.transaction(force_rollback=True):
            _plan_settings(conn)
            # Binary results force the extended protocol, which takes one statement only:
            # "SELECT 1; DROP TABLE t" is refused by the server, never run after PREPARE.
            conn.execute(
                sql.SQL("PREPARE {} AS ").format(sql.Identifier(PLAN_NAME)) + sql.SQL(statement),
                prepare=False,
                binary=True,
            )
            prepared = True
            tree = _explain_prepared(conn)
    except psycopg.Error as exc:
        return Planned(reason=_reason(exc))
    finally:
        if prepared:
            _deallocate(conn)
    return Planned(shape=plan_shape(tree))


def _plan_settings(conn: psycopg.Connection[Any]) -> None:
    # LOCAL: the caller's session keeps its own settings once the transaction is rolled back.
    conn.execute("SET LOCAL transaction_read_only = on")
    conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    # Planning only reads the catalog and statistics, but a huge join can plan for long,
    # and a production table locked by a migration must not hold the snapshot: give up.
    conn.execute("SET LOCAL statement_timeout = '10s'")
    conn.execute("SET LOCAL lock_timeout = '2s'")


def _explain_prepared(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    # The server counts the parameters it inferred; "$12" in a comment would fool a regex.
    found = conn.execute(
        "SELECT cardinality(parameter_types) FROM pg_catalog.pg_prepared_statements"
        " WHERE name = %s",
        [PLAN_NAME],
    ).fetchone()
    count = found[0] if found else 0
    query = sql.SQL("EXPLAIN (FORMAT JSON, COSTS OFF) EXECUTE {}").format(sql.Identifier(PLAN_NAME))
    if count:
        query += sql.SQL("({})").format(sql.SQL(", ").join([sql.NULL] * count))
    row = conn.execute(query, prepare=False).fetchone()
    if row is None:
        raise psycopg.DataError("EXPLAIN returned no plan")
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


def _deallocate(conn: psycopg.Connection[Any]) -> None:
    # A prepared statement outlives the rollback of its transaction: drop it, or the next
    # PREPARE of the same name fails. Inside a rolled-back transaction so that the
    # caller's session is left as it was, autocommit or not.
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(sql.SQL("DEALLOCATE {}").format(sql.Identifier(PLAN_NAME)))
    except psycopg.Error as exc:
        logger.warning("could not deallocate the plan-fidelity statement: %s", _reason(exc))


def _reason(exc: psycopg.Error) -> str:
    """The server's own one-line message (no DSN, no query text), shortened."""
    text = exc.diag.message_primary or f"the session failed ({type(exc).__name__})"
    return shorten(text, MAX_REASON_CHARS)


# ---------------------------------------------------------------- shapes


def plan_shape(node: dict[str, Any]) -> PlanNode:
    """A node of EXPLAIN (FORMAT JSON) and its children, reduced to the planner's choices."""
    children = tuple(plan_shape(child) for child in node.get("Plans", []))
    return PlanNode(label=_label(node), children=children)


def _label(node: dict[str, Any]) -> str:
    label = _node_name(node)
    if node.get("Scan Direction") == "Backward":
        label += " Backward"
    if node.get("Index Name"):
        label += f" using {node['Index Name']}"
    if node.get("Relation Name"):
        label += f" on {node['Relation Name']}"
    relationship = node.get("Subplan Name") or node.get("Parent Relationship")
    if relationship and relationship not in _POSITIONAL:
        label = f"{relationship}: {label}"
    return label


def _node_name(node: dict[str, Any]) -> str:
    """The node's name as EXPLAIN's text format writes it ("Hash Left Join", "HashAggregate")."""
    name: str = node.get("Operation") or node["Node Type"]  # ModifyTable: "Insert", "Update"
    strategy = node.get("Strategy")
    if strategy:
        name = _STRATEGY_NAMES.get((name, strategy), f"{name} ({strategy})")
    join = node.get("Join Type")
    if join and join != "Inner":
        name = name.removesuffix(" Join") + f" {join} Join"
    if node.get("Partial Mode") in ("Partial", "Finalize"):
        name = f"{node['Partial Mode']} {name}"
    if node.get("Parallel Aware"):
        name = f"Parallel {name}"
    return name


# ---------------------------------------------------------------- comparing


def compare_plans(
    source_conn: psycopg.Connection[Any],
    masked_conn: psycopg.Connection[Any],
    statements: Sequence[str],
) -> list[dict[str, Any]]:
    """Per statement, the shapes of its generic plan on both sides, or why it was skipped."""
    return [_compare_one(source_conn, masked_conn, statement) for statement in statements]


def _compare_one(
    source_conn: psycopg.Connection[Any], masked_conn: psycopg.Connection[Any], statement: str
) -> dict[str, Any]:
    short = shorten(statement, REPORT_STATEMENT_CHARS)
    source = generic_plan(source_conn, statement)
    if source.shape is None:
        return {"statement": short, "skipped": f"on the source: {source.reason}"}
    masked = generic_plan(masked_conn, statement)
    if masked.shape is None:
        return {"statement": short, "skipped": f"on the masked copy: {masked.reason}"}
    return {
        "statement": short,
        "same": source.shape == masked.shape,
        "source": source.shape.text(),
        "masked": masked.shape.text(),
    }


def plan_fidelity(
    source_conn: psycopg.Connection[Any],
    masked_conn: psycopg.Connection[Any],
    *,
    queries: Sequence[str] = (),
    limit: int = 20,
) -> dict[str, Any]:
    """The plan-fidelity report of a snapshot: policy queries, then the source's top ones.

    The masked copy must have been ANALYZEd: its plans are read from its statistics.
    """
    statements = _statements(queries, source_statements(source_conn, limit=limit))
    plans = compare_plans(source_conn, masked_conn, statements)
    compared = [plan for plan in plans if "skipped" not in plan]
    changed = sum(1 for plan in compared if not plan["same"])
    logger.info(
        "plan fidelity: %d statements compared, %d plans changed, %d skipped",
        len(compared),
        changed,
        len(plans) - len(compared),
    )
    return {
        "plans": plans,
        "changed": changed,
        "compared": len(compared),
        "text": _summary(plans, compared=len(compared), changed=changed),
    }


def _summary(plans: list[dict[str, Any]], *, compared: int, changed: int) -> str:
    lines = [f"{compared} statement(s) compared, {changed} plan(s) changed on the masked copy"]
    for plan in plans:
        statement = shorten(plan["statement"], TEXT_STATEMENT_CHARS)
        if "skipped" in plan:
            lines.append(f"skipped ({plan['skipped']}): {statement}")
        else:
            lines.append(f"{'same plan' if plan['same'] else 'plan changed'}: {statement}")
    return "\n".join(lines)


def shorten(text: str, limit: int) -> str:
    """`text` on one line, whitespace collapsed, cut to `limit` characters."""
    line = re.sub(r"\s+", " ", text).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"
