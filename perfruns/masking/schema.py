"""What the masking needs to know about a database, read from pg_catalog.

One pass over the catalog per call: tables, columns, keys, foreign keys and the triggers
that compute columns, of the connected database, without system schemas, extension-owned
objects or our own `fixproof_mask` helper schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

HELPER_SCHEMA = "fixproof_mask"

CATEGORIES = ("text", "json", "date", "inet", "other")

# What the values of a type are, for the scan and for which strategies fit (`type_class`):
# text (any string type, citext, domains over them), json, inet, date, int (int2/4/8),
# number (numeric, floats, money), uuid, bool, binary (bytea), tsvector, xml, hstore,
# composite, enum, array, and "other" for any other type (ranges, geometry, intervals,
# types of extensions), whose text form the scan still reads.
INT_TYPES = ("int2", "int4", "int8")
NUMBER_TYPES = ("numeric", "float4", "float8", "money")
_NAMED_CLASSES = {
    "json": "json",
    "jsonb": "json",
    "inet": "inet",
    "cidr": "inet",
    "date": "date",
    "timestamp": "date",
    "timestamptz": "date",
    "uuid": "uuid",
    "bool": "bool",
    "bytea": "binary",
    "tsvector": "tsvector",
    "xml": "xml",
    "hstore": "hstore",
    **dict.fromkeys(INT_TYPES, "int"),
    **dict.fromkeys(NUMBER_TYPES, "number"),
}
# Classes whose values cannot hold a word of text: judged by their name only where the name
# says what they are (a birth date), never by a sampled value.
NO_TEXT_CLASSES = frozenset({"date", "uuid", "bool", "enum"})


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # format_type(), e.g. "character varying(120)"
    category: str  # one of CATEGORIES
    not_null: bool = False
    max_length: int | None = None  # varchar(n) / char(n), also through a domain
    base_type: str = ""  # typname after resolving domains: "int4", "varchar", "jsonb"...
    is_array: bool = False
    generated: bool = False
    array_category: str = ""  # category of the element type when is_array
    # What ALTER COLUMN ... TYPE resets and the rewrite must therefore set again:
    collation: tuple[str, str] | None = None  # (schema, name) when not the type's default
    storage: str = ""  # attstorage letter when not the type's default
    compression: str = ""  # attcompression letter when set
    feeds_generated: bool = False  # used by a stored generated column
    partition_key: bool = False  # ALTER ... TYPE refuses partition key columns too
    type_class: str = "other"  # see _NAMED_CLASSES
    element_class: str = ""  # type_class of the elements of an array
    generated_from: tuple[str, ...] = ()  # the columns a generated column reads
    derived_by: tuple[str, ...] = ()  # triggers of its table that assign it
    read_by_views: tuple[str, ...] = ()  # views and materialized views reading it
    fields: tuple[str, ...] = ()  # a composite type's attributes (of its elements, an array's)

    @property
    def derived(self) -> bool:
        """Computed from other columns: by PostgreSQL (generated) or by a trigger."""
        return self.generated or bool(self.derived_by)


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    parent: str  # qualified "schema.table"
    parent_columns: tuple[str, ...]
    on_delete: str = "a"  # pg_constraint.confdeltype: a, r, c, n, d


@dataclass(frozen=True)
class TriggerInfo:
    """A BEFORE ROW trigger on INSERT or UPDATE that assigns columns of the new row."""

    name: str
    function: str  # schema-qualified and quoted: "pg_catalog.tsvector_update_trigger"
    arguments: tuple[str, ...]
    assigns: tuple[str, ...]  # the columns it computes
    language: str = ""
    on_insert: bool = True
    on_update: bool = True


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: tuple[ColumnInfo, ...] = ()
    primary_key: tuple[str, ...] = ()
    unique_columns: frozenset[str] = frozenset()  # single-column unique constraints/indexes
    unique_sets: tuple[tuple[str, ...], ...] = ()  # every unique index, by key columns
    foreign_keys: tuple[ForeignKey, ...] = ()
    estimated_rows: float = -1.0
    triggers: tuple[TriggerInfo, ...] = ()  # the ones that compute columns, in firing order
    kind: str = "r"  # pg_class.relkind: r plain, p partitioned, m materialized view
    inheritance: bool = False  # a parent or a child of INHERITS (not of partitioning)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def only(self) -> sql.SQL:
        """What reads or empties the table's own rows: ONLY, but for a partitioned table,
        whose rows are all in its partitions. An inheritance parent's SELECT would read its
        children's rows too, which have their own policy."""
        return sql.SQL("") if self.kind == "p" else sql.SQL("ONLY ")

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def column(self, name: str) -> ColumnInfo | None:
        for column in self.columns:
            if column.name == name:
                return column
        return None

    def in_any_unique(self, name: str) -> bool:
        return name in self.unique_columns or any(name in cols for cols in self.unique_sets)


@dataclass(frozen=True)
class Schema:
    tables: dict[str, TableInfo] = field(default_factory=dict)  # by "schema.table"
    large_objects: int = 0  # how many the database holds (pg_dump dumps them too)

    def table(self, schema: str, name: str) -> TableInfo | None:
        return self.tables.get(f"{schema}.{name}")

    def children_of(self, qualified: str) -> list[tuple[TableInfo, ForeignKey]]:
        return [
            (table, fk)
            for table in self.tables.values()
            for fk in table.foreign_keys
            if fk.parent == qualified
        ]


def class_of(*, typname: str, typcategory: str, typtype: str) -> str:
    if typname in _NAMED_CLASSES:
        return _NAMED_CLASSES[typname]
    if typcategory == "S":
        return "text"
    if typcategory == "A":
        return "array"
    if typtype == "c":
        return "composite"
    if typtype == "e":
        return "enum"
    return "other"


def category_of(*, typname: str, typcategory: str) -> str:
    if typname in ("json", "jsonb"):
        return "json"
    if typname in ("date", "timestamp", "timestamptz"):
        return "date"
    if typname in ("inet", "cidr"):
        return "inet"
    if typcategory == "S":
        return "text"
    return "other"


# Extension members are excluded through pg_depend (deptype 'e'): a table created by
# CREATE EXTENSION is restored by the extension itself, not by our policy.
_TABLES = """
SELECT c.oid, n.nspname, c.relname, c.reltuples, c.relkind::text,
       c.relkind = 'r'
       AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = ANY(%(kinds)s)
  AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', %(helper)s)
  AND n.nspname NOT LIKE 'pg\\_%%'
  AND NOT EXISTS (
    SELECT 1 FROM pg_depend d
    WHERE d.deptype = 'e'
      AND ((d.classid = 'pg_class'::regclass AND d.objid = c.oid)
        OR (d.classid = 'pg_namespace'::regclass AND d.objid = n.oid))
  )
ORDER BY n.nspname, c.relname
"""

# Domains are resolved to their base type for the category and length, while
# format_type() keeps the domain name so that ALTER ... TYPE keeps it too.
_COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       a.attgenerated <> '',
       bt.typname, bt.typcategory,
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
       et.typname, et.typcategory,
       cn.nspname, co.collname,
       CASE WHEN a.attstorage <> t.typstorage THEN a.attstorage::text ELSE '' END,
       a.attcompression::text,
       EXISTS (
         SELECT 1 FROM pg_depend d
         JOIN pg_attrdef ad ON ad.oid = d.objid
         JOIN pg_attribute g ON g.attrelid = ad.adrelid AND g.attnum = ad.adnum
         WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
           AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum
           AND g.attgenerated <> '' AND g.attnum <> a.attnum
       ),
       EXISTS (
         SELECT 1 FROM pg_partitioned_table pt
         WHERE pt.partrelid = a.attrelid AND a.attnum = ANY(pt.partattrs::int2[])
       ),
       bt.typtype::text, et.typtype::text,
       ARRAY(
         SELECT s.attname FROM pg_attrdef ad
         JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
           AND d.refclassid = 'pg_class'::regclass AND d.refobjid = a.attrelid
         JOIN pg_attribute s ON s.attrelid = a.attrelid AND s.attnum = d.refobjsubid
         WHERE ad.adrelid = a.attrelid AND ad.adnum = a.attnum AND a.attgenerated <> ''
           AND s.attnum <> a.attnum
         ORDER BY s.attnum
       ),
       ARRAY(
         SELECT f.attname FROM pg_attribute f
         WHERE f.attrelid = coalesce(nullif(bt.typrelid, 0), et.typrelid)
           AND f.attnum > 0 AND NOT f.attisdropped
         ORDER BY f.attnum
       )
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> t.typcollation
LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
WHERE a.attrelid = ANY(%(oids)s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_PRIMARY_KEYS = """
SELECT c.conrelid, array_agg(a.attname ORDER BY k.ord)
FROM pg_constraint c
CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
WHERE c.contype = 'p' AND c.conrelid = ANY(%(oids)s)
GROUP BY c.oid, c.conrelid
"""

# Key columns of every unique index: the plain ones from indkey (INCLUDE columns
# are not part of the key), plus, for expression indexes such as unique(lower(email)),
# the columns the index depends on. A partial index's predicate columns then count
# too, which only makes a column look "more unique": the safe side.
_UNIQUE = """
SELECT i.indrelid,
       ARRAY(
         SELECT DISTINCT a.attname
         FROM pg_attribute a
         WHERE a.attrelid = i.indrelid
           AND (a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1])
             OR (i.indexprs IS NOT NULL AND a.attnum IN (
                   SELECT d.refobjsubid FROM pg_depend d
                   WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                     AND d.refclassid = 'pg_class'::regclass AND d.refobjid = i.indrelid
                     AND d.refobjsubid > 0
                     AND d.refobjsubid <> ALL((i.indkey::int2[])[i.indnkeyatts:])
             )))
         ORDER BY a.attname
       )
FROM pg_index i
WHERE i.indisunique AND i.indrelid = ANY(%(oids)s)
"""

_FOREIGN_KEYS = """
SELECT c.conrelid, c.conname, pn.nspname, pc.relname, c.confdeltype,
       ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o),
       ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o)
FROM pg_constraint c
JOIN pg_class pc ON pc.oid = c.confrelid
JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE c.contype = 'f' AND c.conparentid = 0 AND c.conrelid = ANY(%(oids)s)
ORDER BY c.conrelid, c.conname
"""


# Views and materialized views reading each column (their rewrite rules depend on it).
_VIEW_READERS = """
SELECT DISTINCT d.refobjid, a.attname, v.oid::regclass::text
FROM pg_depend d
JOIN pg_rewrite r ON r.oid = d.objid
JOIN pg_class v ON v.oid = r.ev_class
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.refobjsubid > 0 AND v.oid <> d.refobjid AND d.refobjid = ANY(%(oids)s)
ORDER BY 3
"""

# BEFORE ROW triggers on INSERT or UPDATE (tgtype bits: 1 row, 2 before, 4 insert,
# 16 update), enabled, in the order PostgreSQL fires them (by name). Those of a partition
# come from its partitioned table's (tgparentid), which is the one listed.
_TRIGGERS = """
SELECT t.tgrelid, t.tgname, quote_ident(pn.nspname) || '.' || quote_ident(p.proname),
       l.lanname, p.prosrc,
       t.tgargs, t.tgnargs, (t.tgtype & 4) <> 0, (t.tgtype & 16) <> 0
FROM pg_trigger t
JOIN pg_proc p ON p.oid = t.tgfoid
JOIN pg_namespace pn ON pn.oid = p.pronamespace
JOIN pg_language l ON l.oid = p.prolang
WHERE t.tgrelid = ANY(%(oids)s) AND NOT t.tgisinternal AND t.tgparentid = 0
  AND t.tgenabled <> 'D'
  AND (t.tgtype & 3) = 3 AND (t.tgtype & 20) <> 0
ORDER BY t.tgrelid, t.tgname
"""

# Assignments to a column of NEW at the start of a PL/pgSQL statement (`NEW.x := ...`,
# `NEW.x = ...`) or as a SELECT ... INTO target; a comparison `IF NEW.x = OLD.x` is not
# at a statement's start.
_IDENT = r'("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_ASSIGNMENTS = (
    re.compile(
        r"(?:^|;|\bthen\b|\belse\b|\bbegin\b|\bloop\b)\s*new\s*\.\s*" + _IDENT + r"\s*:?=",
        re.IGNORECASE | re.MULTILINE,
    ),
    re.compile(r"\binto\s+(?:strict\s+)?new\s*\.\s*" + _IDENT, re.IGNORECASE),
)
# Built-in trigger functions whose first argument names the column they compute.
_TSVECTOR_TRIGGERS = ("tsvector_update_trigger", "tsvector_update_trigger_column")


def _identifier(text: str) -> str:
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    return text.lower()


def assigned_columns(
    *, function: str, language: str, source: str, arguments: tuple[str, ...], columns: set[str]
) -> tuple[str, ...]:
    """The columns of `columns` a trigger function assigns in the new row."""
    name = function.rsplit(".", 1)[-1].strip('"')
    if name in _TSVECTOR_TRIGGERS and arguments:
        return (arguments[0],) if arguments[0] in columns else ()
    if language not in ("plpgsql", "sql"):
        return ()
    found: list[str] = []
    for pattern in _ASSIGNMENTS:
        for match in pattern.finditer(source or ""):
            column = _identifier(match.group(1))
            if column in columns and column not in found:
                found.append(column)
    return tuple(found)


def _trigger_arguments(raw: bytes | None, count: int) -> tuple[str, ...]:
    if not raw or not count:
        return ()
    return tuple(part.decode() for part in bytes(raw).split(b"\0")[:count])


def introspect(conn: psycopg.Connection, *, matviews: bool = False) -> Schema:
    """Read the user tables of the connected database (and its materialized views, which
    only a check of a masked copy reads: they are computed again from the masked tables)."""
    kinds = ["r", "p", "m"] if matviews else ["r", "p"]
    with conn.cursor() as cur:
        tables = cur.execute(_TABLES, {"helper": HELPER_SCHEMA, "kinds": kinds}).fetchall()
        oids = [row[0] for row in tables]
        columns: dict[int, list[ColumnInfo]] = {oid: [] for oid in oids}
        names: dict[int, set[str]] = {oid: set() for oid in oids}
        rows = cur.execute(_COLUMNS, {"oids": oids}).fetchall()
        for row in rows:
            names[row[0]].add(row[1])
        triggers: dict[int, list[TriggerInfo]] = {}
        derived: dict[tuple[int, str], list[str]] = {}
        for (
            relid,
            tgname,
            function,
            language,
            source,
            raw,
            nargs,
            on_insert,
            on_update,
        ) in cur.execute(_TRIGGERS, {"oids": oids}).fetchall():
            arguments = _trigger_arguments(raw, nargs)
            assigns = assigned_columns(
                function=function,
                language=language,
                source=source,
                arguments=arguments,
                columns=names[relid],
            )
            if not assigns:
                continue
            triggers.setdefault(relid, []).append(
                TriggerInfo(
                    name=tgname,
                    function=function,
                    arguments=arguments,
                    assigns=assigns,
                    language=language,
                    on_insert=on_insert,
                    on_update=on_update,
                )
            )
            for column in assigns:
                derived.setdefault((relid, column), []).append(tgname)
        readers: dict[tuple[int, str], list[str]] = {}
        for relid, column, view in cur.execute(_VIEW_READERS, {"oids": oids}).fetchall():
            readers.setdefault((relid, column), []).append(view)
        for row in rows:
            (relid, name, type_, not_null, generated, typname, typcat, typmod, etn, etc) = row[:10]
            coll_schema, coll_name, storage, compression, feeds_generated, part_key = row[10:16]
            typtype, etyptype, generated_from, fields = row[16:]
            max_length = None
            if typname in ("varchar", "bpchar") and typmod is not None and typmod > 4:
                max_length = typmod - 4  # VARHDRSZ: varchar(n) stores n + 4
            is_array = typcat == "A"
            columns[relid].append(
                ColumnInfo(
                    name=name,
                    type=type_,
                    category="other"
                    if is_array
                    else category_of(typname=typname, typcategory=typcat),
                    not_null=not_null,
                    max_length=max_length,
                    base_type=typname,
                    is_array=is_array,
                    generated=generated,
                    array_category=category_of(typname=etn, typcategory=etc) if is_array else "",
                    collation=(coll_schema, coll_name) if coll_name else None,
                    storage=storage,
                    compression=compression or "",
                    feeds_generated=feeds_generated,
                    partition_key=part_key,
                    type_class=class_of(typname=typname, typcategory=typcat, typtype=typtype),
                    element_class=class_of(typname=etn, typcategory=etc, typtype=etyptype)
                    if is_array
                    else "",
                    generated_from=tuple(generated_from or ()),
                    derived_by=tuple(derived.get((relid, name), ())),
                    read_by_views=tuple(readers.get((relid, name), ())),
                    fields=tuple(fields or ()),
                )
            )
        primary: dict[int, tuple[str, ...]] = {
            relid: tuple(cols) for relid, cols in cur.execute(_PRIMARY_KEYS, {"oids": oids})
        }
        unique_sets: dict[int, set[tuple[str, ...]]] = {}
        for relid, cols in cur.execute(_UNIQUE, {"oids": oids}).fetchall():
            if cols:
                unique_sets.setdefault(relid, set()).add(tuple(cols))
        fks: dict[int, list[ForeignKey]] = {}
        for relid, conname, pschema, ptable, deltype, cols, pcols in cur.execute(
            _FOREIGN_KEYS, {"oids": oids}
        ).fetchall():
            fks.setdefault(relid, []).append(
                ForeignKey(
                    name=conname,
                    columns=tuple(cols),
                    parent=f"{pschema}.{ptable}",
                    parent_columns=tuple(pcols),
                    on_delete=deltype,
                )
            )
        large_objects = int(
            cur.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]  # type: ignore[index]
        )
    result: dict[str, TableInfo] = {}
    for oid, nspname, relname, reltuples, relkind, inheritance in tables:
        sets = sorted(unique_sets.get(oid, set()))
        info = TableInfo(
            schema=nspname,
            name=relname,
            columns=tuple(columns[oid]),
            primary_key=primary.get(oid, ()),
            unique_columns=frozenset(cols[0] for cols in sets if len(cols) == 1),
            unique_sets=tuple(sets),
            foreign_keys=tuple(fks.get(oid, ())),
            estimated_rows=float(reltuples),
            triggers=tuple(triggers.get(oid, ())),
            kind=relkind,
            inheritance=inheritance,
        )
        result[info.qualified] = info
    return Schema(tables=result, large_objects=large_objects)
