"""The masked value of a column, as a SQL expression of the row's original values.

`column_expression` stands alone (an ALTER's USING clause, a twin's generated column) or,
given a `Loaded`, reads the costly parts (the HMACs) from generated columns that compute
as the rows load. `alter_table` and the storage and compression letters are shared by the
rewrite (`sql`) and the twins (`twins`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from perfruns.masking.functions import FAKE_FUNCTIONS, NORMALIZER, SINGLE_LOOK, helper
from perfruns.masking.policy import MAPPED_FAKES, MIN_LENGTH, SHAPE_FAKES, Strategy
from perfruns.masking.schema import ColumnInfo, TableInfo

UNBOUNDED = 10485760  # the longest varchar PostgreSQL allows: "no limit" for fit()

# Types whose ::text is immutable (dates and timestamps are not: DateStyle, TimeZone).
_IMMUTABLE_TEXT = frozenset({"int2", "int4", "int8", "numeric", "uuid", "bool", "oid"})


def _text_is_immutable(column: ColumnInfo) -> bool:
    if column.is_array:
        return False
    return column.category in ("text", "inet") or column.base_type in _IMMUTABLE_TEXT


def _row_key_is_immutable(info: TableInfo) -> bool:
    return bool(info.primary_key) and all(
        (column := info.column(name)) is not None and _text_is_immutable(column)
        for name in info.primary_key
    )


class Loaded:
    """Values of a row computed as the row loads: stored generated columns.

    PostgreSQL has no common-subexpression elimination: a fake that looks into its HMAC
    digest several times computes the HMAC again at each look. A digest stored in a
    generated column is computed once, and read as often as needed by the rewrite. The
    columns compute while the rows load, in as many sessions as the load uses (see
    `load_masking_sql`). A generated column's expression must be immutable.
    """

    def __init__(self, *, taken: Iterable[str]) -> None:
        self._taken = set(taken)
        self.columns: list[tuple[sql.Identifier, sql.Composable, sql.Composable]] = []

    def add(self, expression: sql.Composable, *, type_: sql.Composable) -> sql.Identifier:
        # The same value twice (the row digest of several shifted dates) loads once.
        for column, known_type, known in self.columns:
            if (known.as_string(), known_type.as_string()) == (
                expression.as_string(),
                type_.as_string(),
            ):
                return column
        number = len(self.columns) + 1
        name = f"fixproof_value_{number}"
        while name in self._taken:  # a table's own column of that name
            name = "_" + name
        self._taken.add(name)
        column = sql.Identifier(name)
        self.columns.append((column, type_, expression))
        return column


def map_group(kind: str, width: int | None) -> str:
    """The map a mapped fake reads (functions.build_map): one per kind and column width, so
    that columns joined on such values keep matching."""
    return f"{kind}:{width or 'any'}"


def map_width(group: str) -> int:
    width = group.partition(":")[2]
    return int(width) if width.isdigit() else MAP_ANY_WIDTH


MAP_ANY_WIDTH = 200  # the longest fake of a mapped kind in a column of no declared width


def _fake(
    kind: str,
    value: sql.Composable,
    *,
    length: sql.Composable,
    unique: sql.Composable,
    loaded: Loaded | None,
    width: int | None = None,
) -> sql.Composable:
    """The fake of a text `value` (never NULL-safe issues: NULL gives NULL).

    Shape fakes permute digits and letters; mapped fakes read the map built for the
    column's width; the digest fakes (email, text, ip) leave empty and blank values as
    they are, and a text fake is as long as the original (`length` is the column's)."""
    if kind in SHAPE_FAKES:
        return sql.SQL("{}({})").format(helper(f"fake_{kind}"), value)
    if kind in MAPPED_FAKES:
        return sql.SQL("{}({}, {})").format(
            helper("mapped"), sql.Literal(map_group(kind, width)), value
        )
    if kind == "text":
        floor = sql.SQL("CASE WHEN {} THEN {} ELSE 1 END").format(
            unique, sql.Literal(MIN_LENGTH["unique_text"])
        )
        length = sql.SQL("least(greatest(char_length({}), {}), {})").format(value, floor, length)
    return sql.SQL("CASE WHEN btrim({v}) = '' THEN {v} ELSE {f} END").format(
        v=value, f=_digest_fake(kind, value, length=length, unique=unique, loaded=loaded)
    )


def _digest_fake(
    kind: str,
    value: sql.Composable,
    *,
    length: sql.Composable,
    unique: sql.Composable,
    loaded: Loaded | None,
) -> sql.Composable:
    if loaded is None:
        return sql.SQL("{}({}, {}, {})").format(helper(FAKE_FUNCTIONS[kind]), value, length, unique)
    # The same text as fake_<kind>(value): mk_<kind> of the digest fake_<kind> computes.
    digest = loaded.add(
        sql.SQL("{}({}, {}({}))").format(
            helper("hmac_text"), sql.Literal(kind), helper(NORMALIZER.get(kind, "norm_name")), value
        ),
        type_=sql.SQL("bytea"),
    )
    if kind == "ip":
        # The fake keeps the original's family: mk_ip_of reads the value as well.
        return sql.SQL("{}({}, {}, {}, {})").format(
            helper("mk_ip_of"), value, digest, length, unique
        )
    return sql.SQL("{}({}, {}, {})").format(helper(f"mk_{kind}"), digest, length, unique)


@dataclass
class _JsonTree:
    """What to do inside one JSON object: keys to drop, keys to rewrite."""

    drop: set[str] = field(default_factory=set)
    fields: dict[str, Strategy | _JsonTree] = field(default_factory=dict)


def _json_tree(rule: Strategy) -> _JsonTree:
    tree = _JsonTree()
    if rule.kind == "json_drop":
        for path in rule.keys:
            *parents, last = path.split(".")
            node = tree
            for parent in parents:
                child = node.fields.get(parent)
                if not isinstance(child, _JsonTree):
                    child = node.fields[parent] = _JsonTree()
                node = child
            node.drop.add(last)
    else:
        for key, sub in rule.fields:
            tree.fields[key] = _json_tree(sub) if sub.kind in ("json_drop", "json_mask") else sub
    return tree


def _json_single_look(rule: Strategy | _JsonTree) -> bool:
    """Whether every fake inside computes its HMAC once without help (and is immutable:
    a mapped fake reads the map)."""
    if isinstance(rule, _JsonTree):
        return all(_json_single_look(sub) for sub in rule.fields.values())
    return rule.kind != "fake" or rule.fake in SINGLE_LOOK or rule.fake in SHAPE_FAKES


def json_mapped_paths(
    rule: Strategy, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], str]]:
    """(key path, kind) of every mapped fake inside a json_mask."""
    found: list[tuple[tuple[str, ...], str]] = []
    if rule.kind == "json_mask":
        for key, sub in rule.fields:
            found += json_mapped_paths(sub, (*path, key))
    elif rule.kind == "fake" and rule.fake in MAPPED_FAKES:
        found.append((path, rule.fake))
    return found


def _json_value(
    value: sql.Composable,
    text: sql.Composable,
    rule: Strategy | _JsonTree,
    loaded: Loaded | None,
) -> sql.Composable:
    """The new jsonb for one value inside a document (SQL NULL is turned into JSON null).

    `value` is the jsonb value, `text` the same as text (->> of its parent: what #>> '{}'
    of `value` would give, one operator cheaper)."""
    if isinstance(rule, _JsonTree):
        return _json_object(value, rule, loaded)
    match rule.kind:
        case "keep":
            return value
        case "null":
            return sql.SQL("'null'::jsonb")
        case "constant":
            return sql.SQL("{}::jsonb").format(sql.Literal(json.dumps(rule.value)))
        case "hash":
            hashed: sql.Composable = sql.SQL("{}({}, 64)").format(helper("hash_text"), text)
            hashed = sql.SQL("CASE WHEN btrim({t}) = '' THEN {t} ELSE {h} END").format(
                t=text, h=hashed
            )
            if loaded is not None:
                hashed = loaded.add(hashed, type_=sql.SQL("text"))
            return sql.SQL("{}({})").format(helper("jstr"), hashed)
        case "mask":
            return sql.SQL("{}({}({}, {}, {}))").format(
                helper("jstr"),
                helper("mask"),
                text,
                sql.Literal(rule.first),
                sql.Literal(rule.last),
            )
        case "fake":
            fake = _fake(
                rule.fake,
                text,
                length=sql.Literal(UNBOUNDED),
                unique=sql.Literal(False),
                loaded=loaded,
            )
            return sql.SQL("{}({})").format(helper("jstr"), fake)
    raise ValueError(f"{rule.kind} is not supported inside json_mask")


def _json_object(value: sql.Composable, tree: _JsonTree, loaded: Loaded | None) -> sql.Composable:
    # The rules name keys of an object. A value of another shape (an array of objects,
    # a bare string) is one the policy author did not foresee and the scan no longer
    # looks at once the column is covered: fail closed and make it JSON null.
    expr: sql.Composable = value
    if tree.drop:
        expr = sql.SQL("({} - {}::text[])").format(expr, sql.Literal(sorted(tree.drop)))
    for key, rule in tree.fields.items():
        inner = sql.SQL("({} -> {})").format(value, sql.Literal(key))
        text = sql.SQL("({} ->> {})").format(value, sql.Literal(key))
        expr = sql.SQL("{}({}, {}, {})").format(
            helper("jset"), expr, sql.Literal(key), _json_value(inner, text, rule, loaded)
        )
    # One jsonb_typeof per row; a SQL NULL matches no WHEN and stays NULL.
    return sql.SQL(
        "CASE jsonb_typeof({v}) WHEN 'object' THEN {e} WHEN 'null' THEN {v}"
        " ELSE CASE WHEN {v} IS NULL THEN {v} ELSE 'null'::jsonb END END"
    ).format(v=value, e=expr)


def column_type(column: ColumnInfo) -> sql.SQL:
    # format_type() is the server's own rendering of the type, every identifier in it
    # already quoted by quote_ident(); it is the only form that keeps modifiers such as
    # varchar(120) or "interval day to second(3)", which sql.Identifier cannot express.
    return sql.SQL(column.type)


def _constant_text(value: Any, *, column: ColumnInfo) -> str:
    if column.category == "json" or isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _row_key(*, info: TableInfo) -> sql.Composable:
    parts: list[sql.Composable] = [sql.Literal(info.qualified + ":")]
    for i, name in enumerate(info.primary_key):
        if i:
            parts.append(sql.Literal(","))
        parts.append(sql.SQL("{}::text").format(sql.Identifier(name)))
    return sql.SQL("(") + sql.SQL(" || ").join(parts) + sql.SQL(")")


def column_expression(
    *, rule: Strategy, column: ColumnInfo, info: TableInfo, loaded: Loaded | None = None
) -> sql.Composable:
    """The masked value of `column` for one row, from the row's original values.

    With `loaded`, the costly immutable parts (digests, date shifts) become generated
    columns and the expression reads them; without, it stands alone (an ALTER's USING).
    Both give the same values."""
    col = sql.Identifier(column.name)
    length = sql.Literal(column.max_length or UNBOUNDED)
    unique = sql.Literal(info.in_any_unique(column.name))
    match rule.kind:
        case "null":
            return sql.SQL("NULL")
        case "constant":
            # NULL stays NULL: whether a value was set is not personal, and the
            # application keeps behaving as with real data.
            return sql.SQL("CASE WHEN {c} IS NULL THEN NULL ELSE CAST({v} AS {t}) END").format(
                c=col,
                v=sql.Literal(_constant_text(rule.value, column=column)),
                t=column_type(column),
            )
        case "fake" | "hash" | "mask" if column.is_array:
            how, arg = _element_rule(rule)
            return sql.SQL("CAST({}({}::text[], {}, {}) AS {})").format(
                helper("each"), col, sql.Literal(how), sql.Literal(arg), column_type(column)
            )
        case "fake":
            text = sql.SQL("{}::text").format(col)
            expr = _fake(
                rule.fake,
                text,
                length=length,
                unique=unique,
                loaded=loaded if _text_is_immutable(column) else None,
                width=column.max_length,
            )
            if column.category == "inet":
                return sql.SQL("CAST({} AS {})").format(expr, column_type(column))
            return expr
        case "hash":
            return _hash(col, column)
        case "mask":
            return sql.SQL("{}({}::text, {}, {})").format(
                helper("mask"), col, sql.Literal(rule.first), sql.Literal(rule.last)
            )
        case "offset":
            if not info.primary_key:
                raise ValueError(f"{info.qualified} has no primary key for offset")
            if column.type_class == "int":
                moved = sql.SQL("{}({}, {})").format(
                    helper("offset_int"),
                    _row_key(info=info),
                    sql.Literal(max(1, round(rule.value))),
                )
            else:
                moved = sql.SQL("{}({}, {})").format(
                    helper("offset_real"), _row_key(info=info), sql.Literal(rule.value)
                )
            return sql.SQL("CAST({} + {} AS {})").format(col, moved, column_type(column))
        case "date_shift":
            if not info.primary_key:
                raise ValueError(f"{info.qualified} has no primary key for date_shift")
            days: sql.Composable = sql.SQL("{}({}, {})").format(
                helper("shift_days"), _row_key(info=info), sql.Literal(rule.days)
            )
            if loaded is not None and _row_key_is_immutable(info):
                # One digest of the row for all its shifted columns.
                digest = loaded.add(
                    sql.SQL("{}('row', {})").format(helper("hmac_text"), _row_key(info=info)),
                    type_=sql.SQL("bytea"),
                )
                days = sql.SQL("{}({}, {})").format(
                    helper("shift_of"), digest, sql.Literal(rule.days)
                )
            if column.base_type == "date":
                return sql.SQL("({}::date + {})").format(col, days)
            return sql.SQL("({} + {} * interval '1 day')").format(col, days)
        case "json_drop" | "json_mask":
            # (A generated column cannot read another: the digests inside read the
            # column itself, so the document stays an expression.)
            expr = _json_object(sql.SQL("{}::jsonb").format(col), _json_tree(rule), loaded)
            if column.base_type == "json":
                return sql.SQL("({})::json").format(expr)
            return expr
    raise ValueError(f"no expression for strategy {rule.kind}")


def _hash(col: sql.Identifier, column: ColumnInfo) -> sql.Composable:
    """A keyed hash into the column's own type: same input, same output, in every table."""
    match column.base_type:
        case "int2" | "int4":
            bits = 15 if column.base_type == "int2" else 31
            return sql.SQL("CAST({}({}, {}) AS {})").format(
                helper("hash_int"), col, sql.Literal(bits), column_type(column)
            )
        case "int8":
            return sql.SQL("{}({}::bigint)").format(helper("hash_bigint"), col)
        case "uuid":
            return sql.SQL("{}({}::uuid)").format(helper("hash_uuid"), col)
        case "numeric":
            # Digits permuted in place: the same sign, scale and number of digits.
            return sql.SQL("CAST({}({}::text, 'hash', 0, true) AS {})").format(
                helper("shape"), col, column_type(column)
            )
        case "bytea":
            return sql.SQL("{}('hash', encode({}, 'hex'))").format(helper("hmac_text"), col)
    hashed = sql.SQL("{}({}::text, {})").format(
        helper("hash_text"), col, sql.Literal(min(column.max_length or 64, 64))
    )
    return sql.SQL("CASE WHEN btrim({c}::text) = '' THEN {c}::text ELSE {h} END").format(
        c=col, h=hashed
    )


def _element_rule(rule: Strategy) -> tuple[str, str]:
    """(how, argument) of `fixproof_mask.each` for a rule applied to every array element."""
    if rule.kind == "hash":
        return "hash", "64"
    if rule.kind == "mask":
        return "mask", f"{rule.first}:{rule.last}"
    if rule.fake in SHAPE_FAKES:
        return "shape", rule.fake
    if rule.fake in MAPPED_FAKES:
        return "mapped", map_group(rule.fake, None)
    return "fake", rule.fake


def whole_is_immutable(rule: Strategy, column: ColumnInfo) -> bool:
    """Whether the whole masked value can be a generated column: an immutable expression
    that computes each HMAC once. (A date_shift loads the row's digest instead, one for
    all the shifted columns of the row; null and constant cost nothing.)"""
    if column.is_array:
        return False
    match rule.kind:
        case "fake":
            return (rule.fake in SINGLE_LOOK or rule.fake in SHAPE_FAKES) and _text_is_immutable(
                column
            )
        case "hash" | "mask":
            return _text_is_immutable(column)
        case "json_drop" | "json_mask":
            return _json_single_look(_json_tree(rule))
    return False


STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}
COMPRESSION = {"p": "pglz", "l": "lz4"}


def alter_table(info: TableInfo, clauses: list[sql.Composable]) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} ").format(info.identifier) + sql.SQL(",\n  ").join(clauses)
