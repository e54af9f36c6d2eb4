"""The anonymization policy: YAML in, a checked `Policy` out.

Parsing checks the shape of the YAML on its own (and says on which line a mistake
is); `validate` then checks it against a real database schema, because whether
`fake: email` fits a column depends on that column's type and length.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from perfruns.masking.schema import ColumnInfo, Schema, TableInfo

STRATEGIES = (
    "keep",
    "null",
    "constant",
    "fake",
    "hash",
    "mask",
    "date_shift",
    "offset",
    "json_drop",
    "json_mask",
    "recompute",
    "drop",
    "review",
)
FAKE_KINDS = (
    "email",
    "name",
    "first_name",
    "last_name",
    "phone",
    "address",
    "city",
    "postcode",
    "username",
    "code",
    "company",
    "text",
    "ip",
)
# Fakes drawn through a map of the column's distinct values (see functions.py): each
# original gets its own fake, so the distinct count stays, and no fake is an original.
MAPPED_FAKES = ("name", "first_name", "last_name", "address", "city", "company")
# Fakes that keep the original's shape: a digit for a digit, a letter for a letter, the
# separators where they were (functions.py: a keyed permutation, so distinct stays distinct).
SHAPE_FAKES = ("phone", "postcode", "username", "code")
# Written by draft_policy, or by hand: a line a person must still decide.
TODO_MARK = "todo"
TOP_LEVEL_KEYS = ("strict", "tables", "queries", "large_objects")
MAX_QUERIES = 100
WHERE_KEY = "_where"
MAX_SHIFT_DAYS = 36500

# Shortest column that can hold each output without losing the HMAC bits that keep
# it unique; longer outputs are cut from their readable part, never from those bits.
MIN_LENGTH = {
    "email": 34,  # 1 letter + "." + 16 hex + "@example.invalid"
    "ip": 29,  # "2001:db8::" + 4 groups of 4 hex digits
    "ip4": 15,  # "255.255.255.255": an IPv4 original's fake, outside unique columns
    "hash": 16,  # 16 hex digits = 64 bits
    "unique_text": 18,  # 1 letter + " " + 16 hex
    "mapped": 4,  # room enough for the map to find distinct fakes
}
INTEGER_TYPES = ("int2", "int4", "int8", "numeric", "float4", "float8", "money")
MAX_OFFSET = 1e15


class PolicyError(ValueError):
    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


@dataclass(frozen=True)
class Strategy:
    kind: str
    line: int | None = field(default=None, compare=False)
    reason: str = ""  # keep, review
    value: Any = None  # constant; offset (the bound); recompute (the expression, or None)
    fake: str = ""  # fake
    first: int = 0  # mask
    last: int = 0  # mask
    days: int = 0  # date_shift
    keys: tuple[str, ...] = ()  # json_drop, dotted paths allowed: "address.street"
    fields: tuple[tuple[str, Strategy], ...] = ()  # json_mask

    def to_data(self) -> Any:
        """The canonical, JSON-ready form (what policy_hash hashes)."""
        match self.kind:
            case "keep":
                return {"keep": self.reason}
            case "null":
                return None
            case "hash":
                return "hash"
            case "constant":
                return {"constant": self.value}
            case "fake":
                return {"fake": self.fake}
            case "mask":
                return {"mask": {"first": self.first, "last": self.last}}
            case "date_shift":
                return {"date_shift": self.days}
            case "json_drop":
                return {"json_drop": sorted(self.keys)}
            case "json_mask":
                return {"json_mask": {key: rule.to_data() for key, rule in self.fields}}
            case "offset":
                return {"offset": self.value}
            case "recompute":
                return {"recompute": self.value} if self.value else "recompute"
            case "drop":
                return "drop"
            case "review":
                return {"review": self.reason}
        raise AssertionError(self.kind)

    def describe(self) -> str:
        if self.kind == "fake":
            return f"fake: {self.fake}"
        return self.kind

    @property
    def undecided(self) -> bool:
        """A line a person must still decide: `review`, or a keep whose reason is a TODO."""
        if self.kind == "review":
            return True
        return self.kind == "keep" and bool(re.match(r"\W*todo\b", self.reason, re.IGNORECASE))


@dataclass(frozen=True)
class TablePolicy:
    schema: str
    name: str
    truncate: bool = False
    where: str | None = None
    columns: dict[str, Strategy] = field(default_factory=dict)
    line: int | None = field(default=None, compare=False)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def to_data(self) -> Any:
        if self.truncate:
            return "truncate"
        data: dict[str, Any] = {name: rule.to_data() for name, rule in self.columns.items()}
        if self.where is not None:
            data[WHERE_KEY] = self.where
        return data


@dataclass(frozen=True)
class Policy:
    strict: bool = False
    tables: dict[str, TablePolicy] = field(default_factory=dict)  # by "schema.table"
    # Statements whose plans on the masked copy are compared with the source's (besides
    # the source's own top statements from pg_stat_statements).
    queries: tuple[str, ...] = ()
    # What to do with the source's large objects: "drop", a keep Strategy, or None
    # (not said: a source that has some is refused, since no scan reads them).
    large_objects: Strategy | None = None

    def table(self, schema: str, name: str) -> TablePolicy | None:
        return self.tables.get(f"{schema}.{name}")

    def covers(self, schema: str, table: str, column: str) -> bool:
        """Whether the policy decides what happens to this column's values."""
        rule = self.table(schema, table)
        return rule is not None and (rule.truncate or column in rule.columns)

    def strategy(self, schema: str, table: str, column: str) -> Strategy | None:
        rule = self.table(schema, table)
        return None if rule is None else rule.columns.get(column)

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "strict": self.strict,
            "tables": {name: self.tables[name].to_data() for name in sorted(self.tables)},
        }
        if self.queries:
            data["queries"] = list(self.queries)
        if self.large_objects is not None:
            data["large_objects"] = self.large_objects.to_data()
        return data


# --- parsing -----------------------------------------------------------------------------


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _scalar(node: yaml.Node) -> Any:
    """The Python value of a node, with the safe loader's types (int, bool, None...)."""
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _shown(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return repr(node.value)
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _pairs(node: yaml.MappingNode, where: str) -> list[tuple[str, int, yaml.Node]]:
    """(key, key's line, value) with keys as written: a column named `on` stays a string."""
    seen: set[str] = set()
    pairs = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise PolicyError(f"{where}: keys must be plain names", line=_line(key_node))
        key = key_node.value
        if key in seen:
            raise PolicyError(f"{where}: '{key}' is listed twice", line=_line(key_node))
        seen.add(key)
        pairs.append((key, _line(key_node), value_node))
    return pairs


def _split_table_name(name: str, *, line: int) -> tuple[str, str]:
    parts = name.split(".")
    if len(parts) == 1 and parts[0]:
        return "public", parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise PolicyError(f"'{name}' is not a table name (use 'table' or 'schema.table')", line=line)


def _parse_strategy(node: yaml.Node, *, where: str, in_json: bool = False) -> Strategy:
    line = _line(node)
    if _is_null(node):
        return Strategy(kind="null", line=line)
    if isinstance(node, yaml.ScalarNode):
        word = node.value.strip()
        if word in ("hash", "null", "recompute", "drop"):
            if in_json and word in ("recompute", "drop"):
                raise PolicyError(f"{where}: {word} is not supported inside json_mask", line=line)
            return Strategy(kind=word, line=line)
        if word == "review":
            return Strategy(kind="review", reason="to review", line=line)
        if word == "keep":
            raise PolicyError(f'{where}: keep needs a reason, e.g. keep: "no PII"', line=line)
        if word == "truncate":
            raise PolicyError(
                f"{where}: truncate applies to a whole table, not a column", line=line
            )
        if word in STRATEGIES:
            raise PolicyError(f"{where}: {word} needs a value, e.g. {{{word}: ...}}", line=line)
        raise PolicyError(
            f"{where}: unknown strategy '{word}'; expected one of {', '.join(STRATEGIES)}",
            line=line,
        )
    if not isinstance(node, yaml.MappingNode):
        raise PolicyError(f"{where}: a strategy is a word or a one-key mapping", line=line)
    pairs = _pairs(node, where)
    if len(pairs) != 1:
        names = ", ".join(key for key, _, _ in pairs) or "nothing"
        raise PolicyError(f"{where}: give exactly one strategy, not {names}", line=line)
    kind, _, arg = pairs[0]
    line = _line(arg)
    if kind not in STRATEGIES:
        raise PolicyError(
            f"{where}: unknown strategy '{kind}'; expected one of {', '.join(STRATEGIES)}",
            line=line,
        )
    if in_json and kind in ("date_shift", "offset", "recompute", "drop"):
        raise PolicyError(f"{where}: {kind} is not supported inside json_mask", line=line)
    value = None if isinstance(arg, yaml.MappingNode | yaml.SequenceNode) else _scalar(arg)
    if kind == "keep":
        if not isinstance(value, str) or not value.strip():
            raise PolicyError(f'{where}: keep needs a reason, e.g. keep: "no PII"', line=line)
        return Strategy(kind="keep", reason=value.strip(), line=line)
    if kind in ("null", "hash", "drop"):
        if not _is_null(arg):
            raise PolicyError(f"{where}: {kind} takes no value", line=line)
        return Strategy(kind=kind, line=line)
    if kind == "review":
        text = "" if _is_null(arg) else value
        if not isinstance(text, str):
            raise PolicyError(f'{where}: review takes a note, e.g. review: "free text"', line=line)
        return Strategy(kind="review", reason=text.strip() or "to review", line=line)
    if kind == "recompute":
        if _is_null(arg):
            return Strategy(kind="recompute", line=line)
        if not isinstance(value, str) or not value.strip():
            raise PolicyError(
                f"{where}: recompute takes nothing, or a SQL expression of the row's columns, "
                "e.g. {recompute: \"to_tsvector('simple', title)\"}",
                line=line,
            )
        if ";" in value:
            raise PolicyError(f"{where}: recompute's expression must not contain ';'", line=line)
        return Strategy(kind="recompute", value=value.strip(), line=line)
    if kind == "offset":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value <= MAX_OFFSET
        ):
            raise PolicyError(
                f"{where}: offset must be a positive number, the most a value may move "
                f"(each row moves by its own amount up to it), not {_shown(arg)}",
                line=line,
            )
        return Strategy(kind="offset", value=value, line=line)
    if kind == "constant":
        if _is_null(arg):
            raise PolicyError(f"{where}: constant needs a value (for NULL use null)", line=line)
        return Strategy(kind="constant", value=_scalar(arg), line=line)
    if kind == "fake":
        if value not in FAKE_KINDS:
            raise PolicyError(
                f"{where}: fake kind {_shown(arg)} is not one of {', '.join(FAKE_KINDS)}",
                line=line,
            )
        return Strategy(kind="fake", fake=value, line=line)
    if kind == "date_shift":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SHIFT_DAYS:
            raise PolicyError(
                f"{where}: date_shift must be a positive whole number of days "
                f"(1 to {MAX_SHIFT_DAYS}), not {_shown(arg)}",
                line=line,
            )
        return Strategy(kind="date_shift", days=value, line=line)
    if kind == "mask":
        return _parse_mask(arg, where=where)
    if kind == "json_drop":
        return _parse_json_drop(arg, where=where)
    return _parse_json_mask(arg, where=where)


def _parse_mask(node: yaml.Node, *, where: str) -> Strategy:
    line = _line(node)
    problem = (
        f"{where}: mask needs whole numbers first and last, e.g. {{mask: {{first: 0, last: 4}}}}"
    )
    if not isinstance(node, yaml.MappingNode):
        raise PolicyError(problem, line=line)
    values = {key: _scalar(value) for key, _, value in _pairs(node, where)}
    if set(values) != {"first", "last"} or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values.values()
    ):
        raise PolicyError(problem, line=line)
    return Strategy(kind="mask", first=values["first"], last=values["last"], line=line)


def _parse_json_drop(node: yaml.Node, *, where: str) -> Strategy:
    line = _line(node)
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        raise PolicyError(f"{where}: json_drop needs a list of keys, e.g. [ip, iban]", line=line)
    keys = []
    for item in node.value:
        key = _scalar(item) if isinstance(item, yaml.ScalarNode) else None
        if not isinstance(key, str) or not key or "" in key.split("."):
            raise PolicyError(f"{where}: json_drop keys must be non-empty names", line=_line(item))
        keys.append(key)
    return Strategy(kind="json_drop", keys=tuple(keys), line=line)


def _parse_json_mask(node: yaml.Node, *, where: str) -> Strategy:
    line = _line(node)
    if not isinstance(node, yaml.MappingNode) or not node.value:
        raise PolicyError(
            f"{where}: json_mask needs a mapping of key: strategy, e.g. {{ip: {{fake: ip}}}}",
            line=line,
        )
    fields = tuple(
        (key, _parse_strategy(value, where=f"{where}.{key}", in_json=True))
        for key, _, value in _pairs(node, where)
    )
    return Strategy(kind="json_mask", fields=fields, line=line)


def _parse_table(name: str, node: yaml.Node, *, key_line: int) -> TablePolicy:
    schema, table = _split_table_name(name, line=key_line)
    line = _line(node)
    if isinstance(node, yaml.ScalarNode) and node.value == "truncate" and not _is_null(node):
        return TablePolicy(schema=schema, name=table, truncate=True, line=key_line)
    if not isinstance(node, yaml.MappingNode) or not node.value:
        raise PolicyError(
            f"{name}: expected 'truncate' or a mapping of column: strategy", line=line
        )
    columns: dict[str, Strategy] = {}
    where: str | None = None
    for column, _, value in _pairs(node, name):
        if column == WHERE_KEY:
            where = _scalar(value) if isinstance(value, yaml.ScalarNode) else None
            if not isinstance(where, str) or not where.strip():
                raise PolicyError(
                    f"{name}: {WHERE_KEY} must be a SQL boolean expression", line=_line(value)
                )
            # The filter is inlined as SQL: refuse anything that could end the statement.
            if ";" in where:
                raise PolicyError(f"{name}: {WHERE_KEY} must not contain ';'", line=_line(value))
            where = where.strip()
            continue
        columns[column] = _parse_strategy(value, where=f"{name}.{column}")
    return TablePolicy(schema=schema, name=table, where=where, columns=columns, line=key_line)


# A policy is a few levels deep (tables, columns, JSON fields): limits far past any real
# one, so that a hostile document is refused before its nesting exhausts the parser.
MAX_POLICY_BYTES = 1_000_000
MAX_POLICY_DEPTH = 32


def _check_shape(text: str) -> None:
    """Refuse a policy too large or nested too deep, reading its events (no recursion)."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise PolicyError(
            f"the policy is {len(text.encode()):,} bytes, more than the {MAX_POLICY_BYTES:,} "
            "a policy may have"
        )
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_POLICY_DEPTH:
                raise PolicyError(
                    f"the policy is nested more than {MAX_POLICY_DEPTH} levels deep",
                    line=event.start_mark.line + 1 if event.start_mark else None,
                )
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1


def parse_policy(text: str) -> Policy:
    """Parse a policy; PolicyError names the first problem and its line."""
    try:
        _check_shape(text)
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise PolicyError(
            f"not valid YAML: {exc.problem or exc.context}",
            line=mark.line + 1 if mark else None,
        ) from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {exc}") from exc
    if root is None or _is_null(root):
        raise PolicyError("the policy is empty; it needs at least a 'tables:' mapping")
    if not isinstance(root, yaml.MappingNode):
        raise PolicyError("the policy must be a mapping with a 'tables:' key", line=_line(root))
    strict = False
    tables: dict[str, TablePolicy] = {}
    queries: tuple[str, ...] = ()
    large_objects: Strategy | None = None
    seen_tables = False
    for key, key_line, value in _pairs(root, "policy"):
        if key == "strict":
            given = _scalar(value) if isinstance(value, yaml.ScalarNode) else None
            if not isinstance(given, bool):
                raise PolicyError("strict must be true or false", line=_line(value))
            strict = given
        elif key == "tables":
            seen_tables = True
            if not isinstance(value, yaml.MappingNode):
                raise PolicyError("tables must be a mapping of table: columns", line=_line(value))
            for name, table_line, table_node in _pairs(value, "tables"):
                table = _parse_table(name, table_node, key_line=table_line)
                if table.qualified in tables:
                    raise PolicyError(f"{table.qualified} is listed twice", line=table_line)
                tables[table.qualified] = table
        elif key == "queries":
            queries = _parse_queries(value)
        elif key == "large_objects":
            large_objects = _parse_large_objects(value)
        else:
            raise PolicyError(
                f"unknown top-level key '{key}'; expected {' or '.join(TOP_LEVEL_KEYS)}",
                line=key_line,
            )
    if not seen_tables:
        raise PolicyError("the policy has no 'tables:' key")
    return Policy(strict=strict, tables=tables, queries=queries, large_objects=large_objects)


def _parse_queries(node: yaml.Node) -> tuple[str, ...]:
    problem = "queries must be a list of SQL statements, e.g. - SELECT * FROM users WHERE id = $1"
    if not isinstance(node, yaml.SequenceNode):
        raise PolicyError(problem, line=_line(node))
    if len(node.value) > MAX_QUERIES:
        raise PolicyError(f"queries lists more than {MAX_QUERIES} statements", line=_line(node))
    queries = []
    for item in node.value:
        text = _scalar(item) if isinstance(item, yaml.ScalarNode) else None
        if not isinstance(text, str) or not text.strip():
            raise PolicyError(problem, line=_line(item))
        text = text.strip().rstrip(";").strip()
        # Each one is prepared on its own: a second statement would run outside EXPLAIN.
        if ";" in text:
            raise PolicyError("a query must be one statement, without ';'", line=_line(item))
        queries.append(text)
    return tuple(queries)


def _parse_large_objects(node: yaml.Node) -> Strategy:
    line = _line(node)
    if isinstance(node, yaml.ScalarNode) and node.value == "drop":
        return Strategy(kind="drop", line=line)
    rule = _parse_strategy(node, where="large_objects")
    if rule.kind not in ("keep", "review"):
        raise PolicyError(
            'large_objects: expected drop, or keep with a reason, e.g. keep: "no personal files"',
            line=line,
        )
    return rule


def policy_hash(text: str) -> str:
    """sha256 of the normalized policy: comments, order and spacing do not change it."""
    canonical = json.dumps(
        parse_policy(text).to_data(), sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- validation against a schema ------------------------------------------------------------


def _at(rule: Strategy | TablePolicy) -> str:
    return f" (policy line {rule.line})" if rule.line else ""


def _length_needed(rule: Strategy, *, table: TableInfo, column: ColumnInfo) -> int:
    if rule.kind == "hash":
        return MIN_LENGTH["hash"]
    if rule.kind == "fake" and rule.fake == "ip" and not table.in_any_unique(column.name):
        # IPv4 originals get IPv4 fakes; an IPv6 original's longer fake is the probe's to
        # check against the sampled rows.
        return MIN_LENGTH["ip4"]
    if rule.kind == "fake" and rule.fake in MIN_LENGTH:
        return MIN_LENGTH[rule.fake]
    if rule.kind == "fake" and rule.fake in MAPPED_FAKES:
        return MIN_LENGTH["mapped"]
    if rule.kind == "fake" and rule.fake == "text" and table.in_any_unique(column.name):
        return MIN_LENGTH["unique_text"]
    if rule.kind == "constant":
        return len(str(rule.value))
    return 1


def _constant_problem(value: Any, *, column: ColumnInfo) -> str | None:
    if column.category == "json":
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            return "constant is not a JSON value"
        return None
    if isinstance(value, dict | list):
        return f"constant is a mapping or list, which only fits json columns, not {column.type}"
    if column.base_type == "bool" and not isinstance(value, bool):
        return f"constant {value!r} is not true or false, which the {column.type} column needs"
    if column.base_type in INTEGER_TYPES and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        return f"constant {value!r} is not a number, which the {column.type} column needs"
    if column.category == "date":
        parse = dt.date.fromisoformat if column.base_type == "date" else dt.datetime.fromisoformat
        try:
            parse(str(value))
        except ValueError:
            return f"constant {value!r} is not an ISO date, which the {column.type} column needs"
    return None


def _text_like(column: ColumnInfo) -> bool:
    """A string column, or an array of strings (masked element by element)."""
    return column.category == "text" or (column.is_array and column.element_class == "text")


def _undecided_problem(rule: Strategy, *, name: str) -> str:
    at = _at(rule)
    if rule.kind == "review":
        return (
            f"{name} still needs a person's decision ({rule.reason}): "
            f"replace review with a strategy{at}."
        )
    return (
        f'{name}: keep "{rule.reason}" is a draft\'s placeholder, not a decision: '
        f"give the real reason, or a strategy{at}."
    )


def _derived_problems(rule: Strategy, *, table: TableInfo, column: ColumnInfo) -> list[str] | None:
    """Problems of a rule on a derived column, or of recompute/drop; None: not such a case."""
    name = f"{table.qualified}.{column.name}"
    at = _at(rule)
    if column.generated:
        if rule.kind == "drop" and column.read_by_views:
            return [
                f"{name}: drop would break the views that read it "
                f"({', '.join(column.read_by_views)}); recompute it instead{at}."
            ]
        if rule.kind in ("recompute", "drop") and not rule.value:
            return []
        if rule.kind == "recompute":
            return [
                f"{name} is a generated column: PostgreSQL computes it, "
                f"so recompute takes no expression here{at}."
            ]
        return [
            f"{name} is a generated column: mask the columns it is computed from (it is then "
            "computed again from the masked values), recompute it, or drop it from the "
            f"review copy{at}."
        ]
    if rule.kind == "drop":
        return [f"{name}: drop applies to generated columns only; {name} is not one{at}."]
    if rule.kind == "recompute" and not rule.value and not column.derived_by:
        return [
            f"{name}: no trigger of {table.qualified} computes it, so recompute needs the "
            f"expression, e.g. recompute: \"to_tsvector('simple', title)\"{at}."
        ]
    if rule.kind == "recompute":
        return []
    return None


def _type_problems(
    rule: Strategy, *, table: TableInfo, column: ColumnInfo
) -> tuple[list[str], bool]:
    """(problems, whether the strategy fits the column's type at all)."""
    name = f"{table.qualified}.{column.name}"
    at = _at(rule)
    what = rule.describe()
    kind = column.type_class
    problems: list[str] = []
    fits = True
    if rule.kind == "null":
        if column.not_null:
            problems.append(f"{name}: null does not fit a NOT NULL column{at}.")
    elif rule.kind == "constant":
        problem = _constant_problem(rule.value, column=column)
        if problem:
            problems.append(f"{name}: {problem}{at}.")
        if column.name in table.unique_columns:
            problems.append(
                f"{name}: constant on a unique column would repeat one value; "
                f"use hash or a fake{at}."
            )
    elif rule.kind == "fake":
        fits = _text_like(column) or (rule.fake == "ip" and column.category == "inet")
        if not fits:
            kinds = "a text or inet" if rule.fake == "ip" else "a text"
            problems.append(f"{name}: {what} needs {kinds} column, but it is {column.type}{at}.")
    elif rule.kind == "hash":
        fits = (
            _text_like(column) or kind in ("int", "uuid", "binary") or column.base_type == "numeric"
        )
        if not fits:
            problems.append(
                f"{name}: hash needs a text, integer, numeric, uuid or bytea column, but it is "
                f"{column.type}{at}."
            )
    elif rule.kind == "mask":
        fits = _text_like(column)
        if not fits:
            problems.append(f"{name}: mask needs a text column, but it is {column.type}{at}.")
        elif column.name in table.unique_columns:
            problems.append(
                f"{name}: mask on a unique column would make equal values; use hash{at}."
            )
    elif rule.kind in ("date_shift", "offset"):
        wanted = "date" if rule.kind == "date_shift" else "number"
        if (rule.kind == "date_shift" and column.category != "date") or (
            rule.kind == "offset" and kind not in ("int", "number")
        ):
            noun = "a date or timestamp" if wanted == "date" else "a number"
            problems.append(
                f"{name}: {rule.kind} needs {noun} column, but it is {column.type}{at}."
            )
        if not table.primary_key:
            problems.append(
                f"{name}: {rule.kind} needs a primary key on {table.qualified} "
                f"to derive each row's {'shift' if rule.kind == 'date_shift' else 'offset'}, "
                f"and it has none{at}."
            )
    elif rule.kind in ("json_drop", "json_mask"):
        if column.category != "json":
            problems.append(
                f"{name}: {what} needs a json or jsonb column, but it is {column.type}{at}."
            )
    return problems, fits


def _strategy_problems(rule: Strategy, *, table: TableInfo, column: ColumnInfo) -> list[str]:
    name = f"{table.qualified}.{column.name}"
    if rule.undecided:
        return [_undecided_problem(rule, name=name)]
    if rule.kind == "keep":
        return []
    derived = _derived_problems(rule, table=table, column=column)
    if derived is not None:
        return derived
    problems, fits = _type_problems(rule, table=table, column=column)
    if fits and column.category == "text" and column.max_length is not None:
        needed = _length_needed(rule, table=table, column=column)
        at = _at(rule)
        if needed > column.max_length and rule.kind == "constant":
            problems.append(
                f"{name}: constant is {needed} characters, longer than {column.type}{at}."
            )
        elif needed > column.max_length:
            # Longer outputs are cut from their readable part; the HMAC part cannot be cut.
            problems.append(
                f"{name}: {rule.describe()} needs at least {needed} characters to stay distinct, "
                f"but the column is {column.type}{at}."
            )
    return problems


def hash_family(column: ColumnInfo) -> str:
    """Which hash a column gets: equal families give equal outputs for equal inputs."""
    if column.base_type in ("int2", "int4", "int8", "uuid", "numeric", "bytea"):
        return column.base_type
    return "text"


def _join_key(rule: Strategy | None, column: ColumnInfo | None) -> tuple[Any, ...] | None:
    """What makes two masked columns hold equal values for equal inputs (None: nothing)."""
    if rule is None or rule.kind == "keep":
        return ("keep",)
    if rule.kind == "hash":
        return ("hash", hash_family(column) if column else "text")
    if rule.kind == "fake" and rule.fake in MAPPED_FAKES:
        # One map per kind and column width (functions.py).
        return ("fake", rule.fake, column.max_length if column else None)
    if rule.kind == "fake":
        return ("fake", rule.fake)
    return None


def _foreign_key_problems(policy: Policy, schema: Schema) -> list[str]:
    problems = []
    for table in schema.tables.values():
        child_rules = policy.table(table.schema, table.name)
        if child_rules is not None and child_rules.truncate:
            continue
        for fk in table.foreign_keys:
            parent = schema.tables.get(fk.parent)
            parent_rules = policy.tables.get(fk.parent)
            if parent is None or (parent_rules is not None and parent_rules.truncate):
                continue  # an emptied parent is handled by the orphan clean-up
            for column, parent_column in zip(fk.columns, fk.parent_columns, strict=True):
                child_rule = policy.strategy(table.schema, table.name, column)
                parent_rule = policy.strategy(parent.schema, parent.name, parent_column)
                if child_rule is not None and child_rule.kind == "null":
                    continue  # a NULL reference is always valid
                child_key = _join_key(child_rule, table.column(column))
                parent_key = _join_key(parent_rule, parent.column(parent_column))
                if child_key is not None and child_key == parent_key:
                    continue
                child_what = child_rule.describe() if child_rule else "not masked"
                parent_what = parent_rule.describe() if parent_rule else "not masked"
                lined = child_rule if child_rule is not None and child_rule.line else parent_rule
                problems.append(
                    f"{table.qualified}.{column} references {parent.qualified}.{parent_column}"
                    f" ({parent_what}) but is {child_what}: give both the same hash or fake "
                    f"on columns of the same type and width, or the foreign key breaks"
                    f"{_at(lined) if lined is not None else ''}."
                )
    return problems


def _large_object_problems(policy: Policy, schema: Schema) -> list[str]:
    if policy.large_objects is not None and policy.large_objects.undecided:
        return [_undecided_problem(policy.large_objects, name="large_objects")]
    if not schema.large_objects or policy.large_objects is not None:
        return []
    return [
        f"the source holds {schema.large_objects} large object(s), which pg_dump copies and no "
        'scan reads: add large_objects: drop, or large_objects: {keep: "why"}, to the policy.'
    ]


def validate(policy: Policy, schema: Schema) -> list[str]:
    """Every problem of the policy against this schema, one sentence each, each once."""
    problems: list[str] = []
    for rules in policy.tables.values():
        table = schema.tables.get(rules.qualified)
        if table is None:
            problems.append(f"{rules.qualified} does not exist in the database{_at(rules)}.")
            continue
        for name, rule in rules.columns.items():
            column = table.column(name)
            if column is None:
                problems.append(
                    f"{rules.qualified}.{name} does not exist: {rules.qualified} has no "
                    f"column {name!r}{_at(rule)}."
                )
                continue
            problems.extend(_strategy_problems(rule, table=table, column=column))
    problems.extend(_foreign_key_problems(policy, schema))
    problems.extend(_large_object_problems(policy, schema))
    if policy.strict:
        for table in schema.tables.values():
            for column in table.columns:
                if not policy.covers(table.schema, table.name, column.name):
                    problems.append(
                        f"strict policy: {table.qualified}.{column.name} is not listed."
                    )
    return list(dict.fromkeys(problems))


def undecided_lines(policy: Policy) -> list[str]:
    """`schema.table.column (line N)` of every line still to decide, for messages."""
    lines = []
    for rules in policy.tables.values():
        for name, rule in rules.columns.items():
            if rule.undecided:
                lines.append(
                    f"{rules.qualified}.{name}" + (f" (line {rule.line})" if rule.line else "")
                )
    blobs = policy.large_objects
    if blobs is not None and blobs.undecided:
        lines.append("large_objects" + (f" (line {blobs.line})" if blobs.line else ""))
    return lines
