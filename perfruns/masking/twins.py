"""Masking a table as its rows load, with no rewrite after: twin generated columns.

See `twin_masking_sql`; the snapshot pipeline reads `RestoredColumn`s from the catalog of
the restored, still empty table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql

from perfruns.masking.expressions import (
    COMPRESSION,
    STORAGE,
    alter_table,
    column_expression,
    whole_is_immutable,
)
from perfruns.masking.policy import Strategy, TablePolicy
from perfruns.masking.schema import ColumnInfo, TableInfo


@dataclass(frozen=True)
class RestoredColumn:
    """A column of a restored, still empty table, as its catalog has it (see twin_masking_sql)."""

    name: str
    type: str  # format_type()
    not_null: bool = False
    default: str | None = None  # pg_get_expr(), in the session's search_path
    collation: str | None = None  # regcollation text, when not the type's own
    storage: str | None = None  # attstorage letter, when not the type's default
    compression: str | None = None  # attcompression letter, when set
    statistics: int = -1  # attstattarget
    comment: str | None = None
    options: list[str] = field(default_factory=list)  # "n_distinct=-0.5"
    # Nothing else hangs on it: no identity, generation, owned sequence,
    # constraint, statistics object or other column reading it.
    movable: bool = True


@dataclass(frozen=True)
class TwinMasking:
    """The masking of a table done as its rows load, with no rewrite after.

    `prepare`, on the empty restored table (one transaction): each masked column gets a
    twin, a stored generated column computing its masked value from the loaded one, added
    where the column stands in the row; the unmasked columns after the first masked one
    are dropped and added again behind the twins, the same, so that the columns keep their
    order. The rows load by column name as before. `finish`, once they are in (one
    transaction, catalog changes only): each twin becomes a plain column, the loaded
    column is dropped and the twin takes its name and default.

    A dropped column's values stay in the table's file until the file is rewritten: in the
    scratch database of a snapshot, never dumped (pg_dump reads live columns only) and
    deleted with it. No row is ever updated: no dead tuples.
    """

    prepare: list[sql.Composed]
    finish: list[sql.Composed]


TWIN_PREFIX = "fixproof_masked_"


def _twin_ready(rule: Strategy, column: ColumnInfo) -> bool:
    # null and constant cost nothing; a constant whose cast is not immutable makes the
    # generated column fail, and the caller falls back on the rewrite. (A fake that looks
    # into its digest several times would compute the HMAC at each look, and the helpers
    # it inlines look again: measured slower than loading the digests and rewriting.)
    return rule.kind in ("null", "constant") or whole_is_immutable(rule, column)


def _column_settings(name: sql.Identifier, column: RestoredColumn) -> list[sql.Composable]:
    settings: list[sql.Composable] = []
    if column.storage in STORAGE:
        settings.append(
            sql.SQL("ALTER COLUMN {} SET STORAGE " + STORAGE[column.storage]).format(name)
        )
    if column.compression in COMPRESSION:
        settings.append(
            sql.SQL("ALTER COLUMN {} SET COMPRESSION {}").format(
                name, sql.Identifier(COMPRESSION[column.compression])
            )
        )
    if column.statistics >= 0:
        settings.append(
            sql.SQL("ALTER COLUMN {} SET STATISTICS {}").format(
                name, sql.Literal(column.statistics)
            )
        )
    if column.options:
        settings.append(
            sql.SQL("ALTER COLUMN {} SET ({})").format(
                name, sql.SQL(", ").join(_option(option) for option in column.options)
            )
        )
    return settings


def _option(option: str) -> sql.Composed:
    key, _, value = option.partition("=")
    return sql.SQL("{} = {}").format(sql.Identifier(key), sql.Literal(float(value)))


def twin_masking_sql(
    *, table: TablePolicy, info: TableInfo, restored: list[RestoredColumn]
) -> TwinMasking | None:
    """`TwinMasking` for a plain table whose rows are never deleted; None when the table
    must be masked by a rewrite instead: nothing masked, a rule that would compute its HMAC
    more than once per value (a generated column cannot read another), or a column to move
    that something else hangs on.

    `restored` lists the columns of the restored table in order. Gives the values of
    table_masking_sql.
    """
    if table.truncate or table.where is not None:
        return None
    masked = {name: rule for name, rule in table.columns.items() if rule.kind != "keep"}
    first = next((i for i, c in enumerate(restored) if c.name in masked), None)
    if first is None or set(masked) - {c.name for c in restored}:
        return None
    moved = restored[first:]
    if not all(column.movable for column in moved):
        return None
    for column_name, rule in masked.items():
        source = info.column(column_name)
        if source is None or not _twin_ready(rule, source):
            return None
    taken = {column.name for column in restored}
    drops: list[sql.Composable] = []
    adds: list[sql.Composable] = []
    settings: list[sql.Composable] = []
    comments: list[sql.Composed] = []
    expressions_dropped: list[sql.Composable] = []
    raws_dropped: list[sql.Composable] = []
    renames: list[sql.Composed] = []
    defaults: list[sql.Composable] = []
    for column in moved:
        definition: sql.Composable = sql.SQL(column.type)
        if column.collation:
            definition += sql.SQL(" COLLATE " + column.collation)
        if column.not_null:
            definition += sql.SQL(" NOT NULL")
        name = sql.Identifier(column.name)
        if column.name in masked:
            twin_name = TWIN_PREFIX + column.name
            while twin_name in taken:
                twin_name = "_" + twin_name
            taken.add(twin_name)
            twin = sql.Identifier(twin_name)
            source = info.column(column.name)
            assert source is not None
            expression = column_expression(rule=masked[column.name], column=source, info=info)
            adds.append(
                sql.SQL("ADD COLUMN {} {} GENERATED ALWAYS AS ({}) STORED").format(
                    twin, definition, expression
                )
            )
            settings += _column_settings(twin, column)
            expressions_dropped.append(sql.SQL("ALTER COLUMN {} DROP EXPRESSION").format(twin))
            raws_dropped.append(sql.SQL("DROP COLUMN {}").format(name))
            renames.append(
                sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(info.identifier, twin, name)
            )
            if column.default is not None:
                defaults.append(
                    sql.SQL("ALTER COLUMN {} SET DEFAULT " + column.default).format(name)
                )
            target: sql.Identifier = twin
        else:
            drops.append(sql.SQL("DROP COLUMN {}").format(name))
            if column.default is not None:
                definition += sql.SQL(" DEFAULT " + column.default)
            adds.append(sql.SQL("ADD COLUMN {} {}").format(name, definition))
            settings += _column_settings(name, column)
            target = name
        if column.comment is not None:
            comments.append(
                sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                    info.identifier, target, sql.Literal(column.comment)
                )
            )
    # Drops before adds: a dropped column's name is taken again by the column added.
    prepare = [alter_table(info, drops)] if drops else []
    prepare.append(alter_table(info, adds))
    if settings:
        prepare.append(alter_table(info, settings))
    prepare += comments
    # The expressions go first: a generated column depends on the column it reads, and
    # dropping that one would drop the twin with it.
    finish = [alter_table(info, expressions_dropped), alter_table(info, raws_dropped), *renames]
    if defaults:
        finish.append(alter_table(info, defaults))
    return TwinMasking(prepare=prepare, finish=finish)
