"""The SQL that anonymizes a restored copy, table by table.

Order the pipeline follows (see `plan_sql`), after restoring pre-data and data and
before post-data (so no index or foreign key exists yet):

1. `functions_sql(key=...)`: the `fixproof_mask` helper functions, keyed.
2. `truncate_sql` and `filter_sql` (subsetting), then `orphan_cleanup_sql` so that
   every foreign key of post-data still holds.
3. `table_masking_sql`: one ALTER TABLE per table. Its USING clauses rewrite the
   table into a new file, which also drops the dead tuples the filter left behind;
   only filtered tables that are not masked need the pipeline's VACUUM FULL. (Neither
   resets pg_stat_user_tables.n_dead_tup: an ANALYZE does.)
4. `DROP_FUNCTIONS`, before dumping: the function bodies hold the derived key.

The snapshot pipeline splits step 3 of a plain table around the loading of its rows:
with the functions created before the data section, generated columns compute as the
rows load, in every session that loads them, either the masked values themselves
(`twin_masking_sql`: no rewrite after, for tables that lose no rows and whose rules look
into each HMAC once) or the HMACs (`load_masking_sql`: the one ALTER then only moves
those values in). Same values every way.

The `Schema` these functions take must come from the source database (or a schema-only
restore): primary keys, unique indexes and foreign keys are post-data, so the half
restored copy does not have them yet. Views are pre-data but block ALTER COLUMN ... TYPE
on the columns they read: restore them after the masking, with post-data.

The helper functions are in `functions`, the per-column expressions in `expressions`, the
twins in `twins`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from psycopg import sql

from perfruns.masking.derived import (
    DROPPED,
    EXPRESSION,
    changes,
    recomputed,
    reload_reason,
    replayed_triggers,
)
from perfruns.masking.expressions import (
    COMPRESSION,
    STORAGE,
    Loaded,
    alter_table,
    column_expression,
    column_type,
    json_mapped_paths,
    map_group,
    map_width,
    whole_is_immutable,
)
from perfruns.masking.functions import helper
from perfruns.masking.policy import MAPPED_FAKES, Policy, Strategy, TablePolicy
from perfruns.masking.schema import ColumnInfo, ForeignKey, Schema, TableInfo


def _rewrite_clauses(
    *,
    table: TablePolicy,
    info: TableInfo,
    using: Callable[[Strategy, ColumnInfo], sql.Composable],
) -> list[sql.Composable]:
    """The ALTER COLUMN clauses of a rewrite, each masked column's USING from `using`."""
    if table.truncate:
        return []
    clauses: list[sql.Composable] = []
    for column in info.columns:
        rule = table.columns.get(column.name)
        if not changes(rule) or rule is None or rule.kind in ("recompute", "drop"):
            continue
        clause = sql.SQL("ALTER COLUMN {c} TYPE {t}").format(
            c=sql.Identifier(column.name), t=column_type(column)
        )
        # ALTER ... TYPE resets collation, storage and compression to the type's
        # defaults: set back what the restored table had.
        if column.collation:
            clause += sql.SQL(" COLLATE {}").format(sql.Identifier(*column.collation))
        clause += sql.SQL(" USING {}").format(using(rule, column))
        clauses.append(clause)
        if column.storage in STORAGE:
            clauses.append(
                sql.SQL("ALTER COLUMN {} SET STORAGE " + STORAGE[column.storage]).format(
                    sql.Identifier(column.name)
                )
            )
        if column.compression in COMPRESSION:
            clauses.append(
                sql.SQL("ALTER COLUMN {} SET COMPRESSION {}").format(
                    sql.Identifier(column.name),
                    sql.Identifier(COMPRESSION[column.compression]),
                )
            )
    return clauses


def _own_policy(table: TablePolicy) -> Policy:
    return Policy(tables={table.qualified: table})


def _dropped(policy: Policy, info: TableInfo) -> list[ColumnInfo]:
    return [c for c in info.columns if recomputed(policy, info, c) == DROPPED]


def _drop_columns(info: TableInfo, dropped: list[ColumnInfo]) -> list[sql.Composed]:
    if not dropped:
        return []
    return [
        alter_table(
            info, [sql.SQL("DROP COLUMN {}").format(sql.Identifier(c.name)) for c in dropped]
        )
    ]


def table_masking_sql(
    *, table: TablePolicy, info: TableInfo, policy: Policy | None = None
) -> sql.Composed | None:
    """The statement(s) masking the table (None: nothing to mask).

    Mostly one ALTER TABLE rewriting every masked column. A USING clause that is not the
    column itself makes PostgreSQL write the table into a new relfilenode from the old
    tuples: no dead tuples, one pass over the data, and every USING expression sees the
    row's original values (so date_shift can read a primary key that is itself being
    hashed). A table whose derived columns must be computed again, or whose masked
    columns a generated column reads or partition it, is reloaded instead (`reload_sql`).
    Generated columns the policy drops go first.
    """
    policy = policy or _own_policy(table)
    if table.truncate:
        return None
    if reload_reason(policy, info) is not None:
        return reload_sql(table=table, info=info, policy=policy)
    clauses = _rewrite_clauses(
        table=table,
        info=info,
        using=lambda rule, column: column_expression(rule=rule, column=column, info=info),
    )
    statements = _drop_columns(info, _dropped(policy, info))
    if clauses:
        statements.append(alter_table(info, clauses))
    return sql.SQL(";\n").join(statements) if statements else None


RELOAD_TABLE = sql.Identifier("fixproof_reload")


def reload_sql(*, table: TablePolicy, info: TableInfo, policy: Policy) -> sql.Composed:
    """Mask a table by reloading its rows: copy them aside, empty the table, insert them
    back masked. What one ALTER cannot do: the inserted rows compute their generated
    columns from the masked values, the triggers that compute columns (replayed as BEFORE
    INSERT triggers: the restored copy has no triggers before post-data) fire on the
    masked rows, `recompute: "expression"` columns are computed from the masked row, a
    partition key may change (rows move to their new partition).

    One multi-statement text, run as one transaction; the copy is a temporary table of the
    session. The emptied table's new file holds no dead tuple.
    """
    dropped = _dropped(policy, info)
    kept = [c for c in info.columns if c not in dropped and not c.generated]
    only = info.only
    inner: list[sql.Composable] = []
    outer: list[sql.Composable] = []
    for column in kept:
        name = sql.Identifier(column.name)
        rule = table.columns.get(column.name)
        how = recomputed(policy, info, column)
        if changes(rule) and rule is not None and rule.kind not in ("recompute", "drop"):
            value = column_expression(rule=rule, column=column, info=info)
            inner.append(sql.SQL("CAST({} AS {}) AS {}").format(value, column_type(column), name))
        else:
            inner.append(name)
        if how == EXPRESSION and rule is not None:
            # The policy's SQL, reading the masked row's columns by name.
            outer.append(
                sql.SQL("CAST(({}) AS {}) AS {}").format(
                    sql.SQL(rule.value), column_type(column), name
                )
            )
        else:
            outer.append(name)
    triggers = replayed_triggers(policy, info)
    trigger_names = [sql.Identifier(f"fixproof_replay_{i}") for i in range(len(triggers))]
    statements: list[sql.Composable] = [
        *_drop_columns(info, dropped),
        sql.SQL("CREATE TEMPORARY TABLE {} AS SELECT * FROM {}{}").format(
            RELOAD_TABLE, only, info.identifier
        ),
        sql.SQL("TRUNCATE {}{}").format(only, info.identifier),
    ]
    for trigger, name in zip(triggers, trigger_names, strict=True):
        statements.append(
            sql.SQL(
                "CREATE TRIGGER {} BEFORE INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {}({})"
            ).format(
                name,
                info.identifier,
                sql.SQL(trigger.function),
                sql.SQL(", ").join(sql.Literal(a) for a in trigger.arguments),
            )
        )
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in kept)
    statements.append(
        sql.SQL(
            "INSERT INTO {t} ({cols}) OVERRIDING SYSTEM VALUE SELECT {outer} FROM "
            "(SELECT {inner} FROM {copy}) AS fixproof_masked"
        ).format(
            t=info.identifier,
            cols=columns,
            outer=sql.SQL(", ").join(outer),
            inner=sql.SQL(", ").join(inner),
            copy=RELOAD_TABLE,
        )
    )
    statements += [
        sql.SQL("DROP TRIGGER {} ON {}").format(name, info.identifier) for name in trigger_names
    ]
    statements.append(sql.SQL("DROP TABLE {}").format(RELOAD_TABLE))
    return sql.SQL(";\n").join(statements)


def early_maskable(*, table: TablePolicy, info: TableInfo, policy: Policy) -> bool:
    """Whether the table may be prepared before its rows load (twins, loaded HMACs): not
    when it is reloaded, loses a column, or has a rule the load path does not know."""
    if table.truncate or reload_reason(policy, info) is not None or _dropped(policy, info):
        return False
    for name, rule in table.columns.items():
        column = info.column(name)
        if column is None or not changes(rule):
            continue
        if rule.kind in ("offset", "recompute", "drop") or column.is_array:
            return False
        if rule.kind == "hash" and column.base_type in ("int2", "int4", "numeric", "bytea"):
            return False
    return True


def uses_maps(table: TablePolicy) -> bool:
    """Whether the table's masking reads the maps (map_sql): then it is rewritten only
    once every table's rows are in and the maps are built."""
    return any(
        (rule.kind == "fake" and rule.fake in MAPPED_FAKES)
        or (rule.kind == "json_mask" and bool(json_mapped_paths(rule)))
        for rule in table.columns.values()
    )


def map_sql(*, policy: Policy, schema: Schema) -> list[sql.Composed]:
    """Fill and build the maps of the mapped fakes (functions.build_map), before any table
    reads them: each map holds the distinct values of every column (array element, JSON
    value) of its group, so the same value gets the same fake everywhere."""
    groups: dict[str, tuple[str, list[sql.Composable]]] = {}

    def add(kind: str, width: int | None, select: sql.Composable) -> None:
        group = map_group(kind, width)
        groups.setdefault(group, (kind, []))[1].append(select)

    for name, rules in policy.tables.items():
        info = schema.tables.get(name)
        if info is None or rules.truncate:
            continue
        for column_name, rule in rules.columns.items():
            column = info.column(column_name)
            if column is None:
                continue
            col = sql.Identifier(column_name)
            if rule.kind == "fake" and rule.fake in MAPPED_FAKES:
                if column.is_array:
                    select = sql.SQL("SELECT unnest({})::text FROM {}").format(col, info.identifier)
                    add(rule.fake, None, select)
                else:
                    select = sql.SQL("SELECT {}::text FROM {}").format(col, info.identifier)
                    add(rule.fake, column.max_length, select)
            for path, kind in json_mapped_paths(rule) if rule.kind == "json_mask" else []:
                select = sql.SQL("SELECT {}::jsonb #>> {} FROM {}").format(
                    col, sql.Literal(list(path)), info.identifier
                )
                add(kind, None, select)
    statements = []
    for group, (kind, selects) in sorted(groups.items()):
        statements.append(
            sql.SQL(
                "INSERT INTO {m} (grp, orig) SELECT DISTINCT {g}, v FROM ({s}) AS values_(v)"
                " WHERE v IS NOT NULL ON CONFLICT DO NOTHING"
            ).format(m=helper("map"), g=sql.Literal(group), s=sql.SQL(" UNION ALL ").join(selects))
        )
        statements.append(
            sql.SQL("SELECT {}({}, {}, {})").format(
                helper("build_map"),
                sql.Literal(group),
                sql.Literal(kind),
                sql.Literal(map_width(group)),
            )
        )
    return statements


@dataclass(frozen=True)
class LoadMasking:
    """The masking of a table split around the loading of its rows.

    `prepare`, on the empty restored table: SET UNLOGGED (its rows are rewritten anyway,
    so loading them need not write WAL) and stored generated columns that compute the
    costly part of the masked values (the HMACs) as each row loads, in every session that
    loads rows. `rewrite`, once the rows are there: the ALTER of `table_masking_sql`,
    reading those columns, dropping them and SET LOGGED, all in its one rewrite. The
    table keeps its definition; the dropped columns stay in pg_attribute as dropped
    (never in a dump), and the rewrite leaves no value of theirs in the new file.
    """

    prepare: sql.Composed
    rewrite: sql.Composed


def load_masking_sql(*, table: TablePolicy, info: TableInfo) -> LoadMasking | None:
    """`LoadMasking` for a plain table (not partitioned, no inheritance); None: nothing to mask.

    Gives the same values as table_masking_sql. The helper functions must exist before
    `prepare` runs (generated columns call them) and until `rewrite` has run.
    """
    loaded = Loaded(taken=[column.name for column in info.columns])

    def using(rule: Strategy, column: ColumnInfo) -> sql.Composable:
        if whole_is_immutable(rule, column):
            expression = column_expression(rule=rule, column=column, info=info)
            return loaded.add(expression, type_=column_type(column))
        return column_expression(rule=rule, column=column, info=info, loaded=loaded)

    clauses = _rewrite_clauses(table=table, info=info, using=using)
    if not clauses:
        return None
    clauses += [sql.SQL("DROP COLUMN {}").format(name) for name, _, _ in loaded.columns]
    clauses.append(sql.SQL("SET LOGGED"))
    adds = [
        sql.SQL("ADD COLUMN {} {} GENERATED ALWAYS AS ({}) STORED").format(name, type_, expr)
        for name, type_, expr in loaded.columns
    ]
    return LoadMasking(
        prepare=alter_table(info, [sql.SQL("SET UNLOGGED"), *adds]),
        rewrite=alter_table(info, clauses),
    )


def truncate_sql(*, table: TablePolicy) -> sql.Composed | None:
    """TRUNCATE for a `truncate` table (None otherwise). No CASCADE: it runs before
    post-data adds the foreign keys, and orphan_cleanup_sql empties the children."""
    if not table.truncate:
        return None
    return sql.SQL("TRUNCATE {}").format(sql.Identifier(table.schema, table.name))


def filter_sql(*, table: TablePolicy, info: TableInfo) -> sql.Composed | None:
    """DELETE the rows the table's `_where` does not keep (None without `_where`)."""
    if table.where is None or table.truncate:
        return None
    # `_where` is SQL by definition, written by whoever may edit the policy; parsing
    # refused ';' so it cannot end this statement. IS NOT TRUE also drops rows where
    # the filter is NULL: only rows it positively keeps are kept.
    return sql.SQL("DELETE FROM {} WHERE ({}) IS NOT TRUE").format(
        info.identifier, sql.SQL(table.where)
    )


_ORPHAN_TAG = "$fixproof_orphans$"


def _orphan_statement(child: TableInfo, fk: ForeignKey, parent: TableInfo) -> sql.Composed:
    c, p = sql.Identifier("fixproof_child"), sql.Identifier("fixproof_parent")
    # MATCH SIMPLE: a reference with a NULL in it is not checked, so it is no orphan.
    present = sql.SQL(" AND ").join(
        sql.SQL("{}.{} IS NOT NULL").format(c, sql.Identifier(col)) for col in fk.columns
    )
    matches = sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(p, sql.Identifier(pcol), c, sql.Identifier(col))
        for col, pcol in zip(fk.columns, fk.parent_columns, strict=True)
    )
    orphan = sql.SQL("{present} AND NOT EXISTS (SELECT 1 FROM {parent} AS {p} WHERE {m})").format(
        present=present, parent=parent.identifier, p=p, m=matches
    )
    columns = [child.column(name) for name in fk.columns]
    if fk.on_delete == "n" and all(col is not None and not col.not_null for col in columns):
        # ON DELETE SET NULL: what the database itself would have done to this child.
        sets = sql.SQL(", ").join(
            sql.SQL("{} = NULL").format(sql.Identifier(col)) for col in fk.columns
        )
        return sql.SQL("UPDATE {t} AS {c} SET {s} WHERE {o}").format(
            t=child.identifier, c=c, s=sets, o=orphan
        )
    return sql.SQL("DELETE FROM {t} AS {c} WHERE {o}").format(t=child.identifier, c=c, o=orphan)


def orphan_cleanup_sql(*, policy: Policy, schema: Schema) -> sql.Composed | None:
    """One DO block removing child rows whose parent was filtered out or truncated.

    It follows foreign keys transitively (the grandchildren of a filtered table lose
    their parents too) and repeats until a pass changes nothing, which also settles
    self-references and cycles. A child whose foreign key says ON DELETE SET NULL keeps
    its row and loses the reference. None when no filtered or truncated table has children.
    """
    roots = [
        name
        for name, rules in policy.tables.items()
        if name in schema.tables and (rules.truncate or rules.where is not None)
    ]
    affected: list[tuple[TableInfo, ForeignKey, TableInfo]] = []
    seen_tables, seen_keys = set(roots), set()
    queue = list(roots)
    while queue:  # breadth first: parents are cleaned before their children
        parent = schema.tables[queue.pop(0)]
        for child, fk in schema.children_of(parent.qualified):
            rules = policy.tables.get(child.qualified)
            if rules is not None and rules.truncate:
                continue  # already empty
            if (child.qualified, fk.name) not in seen_keys:
                seen_keys.add((child.qualified, fk.name))
                affected.append((child, fk, parent))
            if child.qualified not in seen_tables:
                seen_tables.add(child.qualified)
                queue.append(child.qualified)
    if not affected:
        return None
    body = sql.SQL("").join(
        sql.SQL(
            "\n    {};\n    GET DIAGNOSTICS n = ROW_COUNT;\n    changed := changed + n;"
        ).format(_orphan_statement(child, fk, parent))
        for child, fk, parent in affected
    )
    # The body is quoted with a dollar tag: no identifier inside may contain it.
    if _ORPHAN_TAG in body.as_string():
        raise ValueError(f"an identifier contains {_ORPHAN_TAG}, which quotes the DO block")
    return (
        sql.SQL(
            "DO " + _ORPHAN_TAG + "\nDECLARE n bigint; changed bigint;\nBEGIN\n  LOOP\n"
            "    changed := 0;"
        )
        + body
        + sql.SQL("\n    EXIT WHEN changed = 0;\n  END LOOP;\nEND\n" + _ORPHAN_TAG)
    )


def plan_sql(*, policy: Policy, schema: Schema) -> list[sql.Composed]:
    """Truncates, filters, the orphan clean-up, then one rewrite per masked table.

    Only for tables present in `schema`; run `validate` first. The helper functions
    (functions_sql) must exist, and DROP_FUNCTIONS should follow.
    """
    plan: list[sql.Composed] = []
    present = [
        (rules, schema.tables[name])
        for name, rules in policy.tables.items()
        if name in schema.tables
    ]
    for rules, _ in present:
        statement = truncate_sql(table=rules)
        if statement is not None:
            plan.append(statement)
    for rules, info in present:
        statement = filter_sql(table=rules, info=info)
        if statement is not None:
            plan.append(statement)
    cleanup = orphan_cleanup_sql(policy=policy, schema=schema)
    if cleanup is not None:
        plan.append(cleanup)
    plan += map_sql(policy=policy, schema=schema)
    for rules, info in present:
        statement = table_masking_sql(table=rules, info=info, policy=policy)
        if statement is not None:
            plan.append(statement)
    return plan
