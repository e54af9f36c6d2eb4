"""A starter masking policy, drafted from a database's columns and a sample of its values.

A draft is not a decision: every line the scan could not settle is written as `review:`,
which `validate` refuses until a person replaces it (and a `keep` whose reason starts
with TODO is refused the same way). What the scan flags gets a strategy that fits the
column's type and what its values are, with the reasons as a comment; a column of a type
that cannot carry text (a number, a date, a flag) is kept, saying so. `strict: true`, so
that a column added later is refused until someone decides about it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg

from perfruns.masking.derived import GENERATED, TRIGGER, recomputed
from perfruns.masking.pii import Finding, name_kinds, scan
from perfruns.masking.policy import MIN_LENGTH, Policy, parse_policy
from perfruns.masking.schema import ColumnInfo, Schema, TableInfo

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")

# Per kind the scan finds, the fake that keeps its shape, in order of preference.
_FAKES = (
    ("email", "email"),
    ("phone", "phone"),
    ("first_name", "first_name"),
    ("last_name", "last_name"),
    ("name", "name"),
    ("username", "username"),
    ("address", "address"),
    ("city", "city"),
    ("postcode", "postcode"),
    ("company", "company"),
)
# Values whose shape is their meaning (a card, an IBAN, a national id, a token): a fake of
# the same shape keeps formats and joins, and no original digit sequence survives.
_SHAPED = {"finance", "identity", "card", "iban", "secret"}
_NOT_TEXT = {"int", "number", "uuid", "bool", "enum", "date"}


def _yaml_key(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) else json.dumps(key)


def _yaml_flow(data: Any) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool):
        return "true" if data else "false"
    if isinstance(data, int | float):
        return str(data)
    if isinstance(data, str):
        return data if data in ("hash", "recompute", "drop") else json.dumps(data)
    if isinstance(data, list):
        return "[" + ", ".join(_yaml_flow(item) for item in data) + "]"
    return "{" + ", ".join(f"{_yaml_key(k)}: {_yaml_flow(v)}" for k, v in data.items()) + "}"


def _fits(column: ColumnInfo, needed: int) -> bool:
    return column.max_length is None or column.max_length >= needed


def _text_suggestion(kinds: list[str], *, column: ColumnInfo, table: TableInfo) -> Any:
    if "prose" in kinds and not table.in_any_unique(column.name):
        return {"fake": "text"}  # free text with e-mails inside: as long as the original
    for kind, fake in _FAKES:
        if kind in kinds and _fits(column, MIN_LENGTH.get(fake, MIN_LENGTH["mapped"])):
            return {"fake": fake}
    ip_length = MIN_LENGTH["ip" if table.in_any_unique(column.name) else "ip4"]
    if "ip" in kinds and _fits(column, ip_length):
        return {"fake": "ip"}
    if _SHAPED & set(kinds):
        return {"fake": "code"}
    if table.in_any_unique(column.name) and _fits(column, MIN_LENGTH["hash"]):
        return "hash"
    if "image" in kinds:
        return None if not column.not_null else {"constant": ""}
    if not table.in_any_unique(column.name):
        return {"fake": "text"}
    return {"review": "looks personal; no fake fits this column's width"}


def _json_key_suggestion(key: str) -> Any:
    kinds = [kind for _, kind in name_kinds(key)]
    for kind, fake in (*_FAKES, ("ip", "ip")):
        if kind in kinds:
            return {"fake": fake}
    return "hash"


def _json_mask_suggestion(paths: list[list[str]]) -> dict[str, Any]:
    """A json_mask reaching each path: a nested key is masked by a json_mask of its parent."""
    fields: dict[str, Any] = {}
    for path in paths:
        node = fields
        for parent in path[:-1]:
            node = node.setdefault(parent, {"json_mask": {}})["json_mask"]
        node[path[-1]] = _json_key_suggestion(path[-1])
    return {"json_mask": fields}


def suggestion(finding: Finding, *, column: ColumnInfo, table: TableInfo) -> Any:
    """A strategy for a flagged column, as policy data; `review` where nothing fits."""
    kinds = finding.kinds
    kind = column.type_class
    if kind == "json":
        if finding.json_paths and not finding.json_out_of_reach:
            return _json_mask_suggestion(finding.json_paths)
        # Personal data that no json_mask can name (inside arrays, under keys that say
        # nothing): the whole document goes.
        return None if not column.not_null else {"constant": {}}
    if finding.undecided:
        return {"review": "the scan cannot read these values: null, constant or hash them"}
    if kind == "inet":
        return {"fake": "ip"}
    if kind == "text" or (kind == "array" and column.element_class == "text"):
        return _text_suggestion(kinds, column=column, table=table)
    if kind == "tsvector":
        return {"review": "words of personal data: recompute it from masked columns, or null"}
    if kind == "date" and table.primary_key:
        return {"date_shift": 365}
    if kind in ("int", "uuid", "binary") or column.base_type == "numeric":
        return "hash"
    if not column.not_null:
        return None
    return {"review": "looks personal, and no strategy fits this type: constant, or keep"}


def _unflagged(column: ColumnInfo, *, table: TableInfo, policy: Policy) -> Any:
    how = recomputed(policy, table, column)
    if how == GENERATED:
        return "recompute"
    if how == TRIGGER:
        return "recompute"
    if column.generated:
        return {"keep": "generated from columns that are kept"}
    kind = column.type_class
    if kind in _NOT_TEXT or (kind == "array" and column.element_class in _NOT_TEXT):
        return {"keep": f"{column.type}: holds no text, and its sampled values look plain"}
    return {"review": "nothing personal found in a sample: keep it (say why) or mask it"}


def draft_policy(conn: psycopg.Connection, *, schema: Schema) -> str:
    """The draft as YAML text, one line per column of every table."""
    findings = {
        (finding.table, finding.column): finding
        for finding in scan(conn, schema=schema, policy=Policy())
    }
    drafted: dict[str, dict[str, Any]] = {}
    notes: dict[tuple[str, str], str] = {}
    for table in schema.tables.values():
        rules: dict[str, Any] = {}
        for column in table.columns:
            finding = findings.get((table.qualified, column.name))
            if finding is not None and not column.derived:
                notes[(table.qualified, column.name)] = "; ".join(finding.reasons)
                rules[column.name] = suggestion(finding, column=column, table=table)
        drafted[table.qualified] = rules
    lines = [
        "# Drafted by Fixproof from the database's columns and a sample of their values.",
        "# A draft is not a decision: Fixproof refuses every `review` line until a person",
        "# replaces it with a strategy, or with keep and the reason.",
        "strict: true",
    ]
    if schema.large_objects:
        lines.append(
            f"# The database holds {schema.large_objects} large object(s): no scan reads them."
        )
        lines.append('large_objects: {review: "drop them, or keep them with a reason"}')
    lines.append("tables:")
    # Derived columns last: whether they are computed again depends on the others' rules.
    masked = parse_policy(
        json.dumps(
            {
                "tables": {
                    name: {c: r for c, r in rules.items() if not _is_review(r)}
                    for name, rules in drafted.items()
                    if any(not _is_review(r) for r in rules.values())
                }
            }
        )
    )
    for table in schema.tables.values():
        lines.append(f"  {_yaml_key(table.qualified)}:")
        for column in table.columns:
            key = (table.qualified, column.name)
            if column.name in drafted[table.qualified]:
                rule = drafted[table.qualified][column.name]
            else:
                rule = _unflagged(column, table=table, policy=masked)
            if key in notes:
                lines.append(f"    # {notes[key]}")
            lines.append(f"    {_yaml_key(column.name)}: {_yaml_flow(rule)}")
    return "\n".join(lines) + "\n"


def _is_review(rule: Any) -> bool:
    return isinstance(rule, dict) and "review" in rule
