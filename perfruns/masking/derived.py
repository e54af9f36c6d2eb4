"""Columns computed from other columns, and how the masked copy gets them.

A derived column is never copied from the source once what it is computed from is masked:
a stored generated column is computed by PostgreSQL from the masked row, a column a
trigger maintains (a full-text `tsvector`, typically) is computed by that trigger,
replayed on the masked rows, and a policy may give any column an expression of the masked
row (`recompute: "..."`) or drop a generated column from the review copy (`drop`).

Tables with such columns are masked by reloading their rows (see `sql.reload_sql`) rather
than by the one rewriting ALTER, which PostgreSQL refuses on a column a generated column
reads and on a partition key, and which fires no trigger.
"""

from __future__ import annotations

from perfruns.masking.policy import Policy, Strategy
from perfruns.masking.schema import ColumnInfo, TableInfo, TriggerInfo

# How a derived column gets its value in the masked copy (`recomputed`).
GENERATED, TRIGGER, EXPRESSION, DROPPED = "generated", "trigger", "expression", "dropped"


def changes(rule: Strategy | None) -> bool:
    """Whether a rule changes the column's values (keep and review do not)."""
    return rule is not None and rule.kind not in ("keep", "review")


def table_changes(policy: Policy, table: TableInfo) -> bool:
    rules = policy.table(table.schema, table.name)
    return rules is not None and not rules.truncate and any(map(changes, rules.columns.values()))


def recomputed(policy: Policy, table: TableInfo, column: ColumnInfo) -> str | None:
    """GENERATED, TRIGGER, EXPRESSION or DROPPED when the masked copy computes the column
    again (or drops it); None when its values are copied, or masked like any column's."""
    rule = policy.strategy(table.schema, table.name, column.name)
    if rule is not None and rule.kind == "drop":
        return DROPPED
    if rule is not None and rule.kind == "recompute":
        if rule.value:
            return EXPRESSION
        return GENERATED if column.generated else TRIGGER
    if rule is not None and rule.kind not in ("keep", "review"):
        return None  # masked as any other column
    if column.generated:
        inputs = [policy.strategy(table.schema, table.name, name) for name in column.generated_from]
        return GENERATED if any(map(changes, inputs)) else None
    if column.derived_by and rule is None and table_changes(policy, table):
        return TRIGGER
    return None


def replayed_triggers(policy: Policy, table: TableInfo) -> list[TriggerInfo]:
    """The triggers to fire again on the masked rows: those computing a column that is
    recomputed by its trigger, in the order PostgreSQL fires them."""
    by_trigger = {
        column.name
        for column in table.columns
        if column.derived_by and recomputed(policy, table, column) == TRIGGER
    }
    return [trigger for trigger in table.triggers if set(trigger.assigns) & by_trigger]


def reload_reason(policy: Policy, table: TableInfo) -> str | None:
    """Why the table must be masked by reloading its rows, or None when one rewriting ALTER
    does: a recomputed column, or a masked column that a generated column reads, that
    partitions the table, or of a table in an inheritance tree."""
    rules = policy.table(table.schema, table.name)
    if rules is None or rules.truncate:
        return None
    for column in table.columns:
        how = recomputed(policy, table, column)
        if how in (TRIGGER, EXPRESSION):
            return f"{table.qualified}.{column.name} is computed again from the masked row"
        rule = rules.columns.get(column.name)
        if not changes(rule) or rule is None or rule.kind in ("recompute", "drop"):
            continue
        if column.feeds_generated:
            return f"{table.qualified}.{column.name} is read by a generated column"
        if column.partition_key:
            return f"{table.qualified}.{column.name} is part of the partition key"
        if table.inheritance:
            # ALTER ... TYPE on a parent rewrites its children's rows with the parent's
            # rule, and is refused on a column a child inherits.
            return f"{table.qualified} is a parent or a child of INHERITS"
    return None
