"""Fail closed: find columns the policy does not cover that look like personal data.

A column is judged by its name (whole words, so `first_name` and `username` hit while
`domain` and `pipeline` do not) and by a sample of its values (e-mail addresses,
phone numbers, IP addresses, IBANs passing mod-97, card numbers passing Luhn). A
finding never quotes a sampled value: the report must not leak what it warns about.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from perfruns.masking.policy import MIN_LENGTH, Policy
from perfruns.masking.schema import ColumnInfo, Schema, TableInfo

SUSPECT_SHARE = 0.10  # of the non-null sampled values
SUSPECT_COUNT = 3  # or this many values, whatever the share
BIG_TABLE_ROWS = 20  # x sample_size: above this, sample pages instead of reading the head

# Whole words of a column name -> the kind of data they suggest.
NAME_WORDS: dict[str, str] = {
    **dict.fromkeys(("email", "mail", "emailaddress", "mailaddress"), "email"),
    **dict.fromkeys(("phone", "tel", "telephone", "mobile", "cell", "fax", "msisdn"), "phone"),
    **dict.fromkeys(("first", "firstname", "given", "givenname", "forename"), "first_name"),
    **dict.fromkeys(("last", "lastname", "surname", "family", "familyname"), "last_name"),
    **dict.fromkeys(
        ("name", "fullname", "username", "nickname", "displayname", "maidenname"),
        "name",
    ),
    **dict.fromkeys(
        ("address", "addr", "street", "city", "zip", "zipcode", "postcode", "postal"),
        "address",
    ),
    **dict.fromkeys(("birth", "birthday", "birthdate", "dob", "born"), "birth"),
    **dict.fromkeys(("ip", "ipaddr", "ipaddress", "ipv4", "ipv6"), "ip"),
    **dict.fromkeys(("iban", "bic", "swift", "card", "creditcard", "ccnumber", "cvv"), "finance"),
    **dict.fromkeys(
        ("token", "password", "passwd", "pwd", "secret", "apikey", "otp", "salt"), "secret"
    ),
    **dict.fromkeys(
        ("ssn", "passport", "nationalid", "taxid", "license", "licence", "nin"), "identity"
    ),
    **dict.fromkeys(("latitude", "longitude", "lat", "lng", "geo", "gps"), "location"),
}
# "first" and "last" alone are common (first_seen, last_login): they count only next
# to "name" ("first_name"), which then reads as a first name rather than a name.
_QUALIFIERS = {"first", "given", "last", "family"}

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\d.])"
)
_IPV6 = re.compile(r"(?<![0-9A-Za-z:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Za-z:])")
_PHONE = re.compile(r"(?<![\w+])(?:\+|\()?\d[\d\s().-]{6,20}\d(?!\w)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{2}[./-]\d{2}[./-]\d{4}")
# Compact, or printed in groups of four; what follows may be glued on, see _has_iban.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)\b")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")

DETECTORS = ("email", "phone", "ip", "iban", "card")
# Lengths from the SWIFT IBAN registry: a candidate must have its country's length.
IBAN_LENGTHS = {
    **dict.fromkeys(("NO",), 15),
    **dict.fromkeys(("BE",), 16),
    **dict.fromkeys(("DK", "FI", "FO", "GL", "NL"), 18),
    **dict.fromkeys(("MK", "SI"), 19),
    **dict.fromkeys(("AT", "BA", "EE", "KZ", "LT", "LU", "XK"), 20),
    **dict.fromkeys(("CH", "HR", "LI", "LV"), 21),
    **dict.fromkeys(("BG", "BH", "CR", "DE", "GB", "GE", "IE", "ME", "RS", "VA"), 22),
    **dict.fromkeys(("AE", "GI", "IL", "IQ", "TL"), 23),
    **dict.fromkeys(("AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"), 24),
    **dict.fromkeys(("PT", "ST"), 25),
    **dict.fromkeys(("IS", "TR"), 26),
    **dict.fromkeys(("FR", "GR", "IT", "MC", "MR", "SM"), 27),
    **dict.fromkeys(("AL", "AZ", "BY", "CY", "DO", "GT", "HU", "LB", "PL", "SV"), 28),
    **dict.fromkeys(("BR", "EG", "PS", "QA", "UA"), 29),
    **dict.fromkeys(("JO", "KW", "MU"), 30),
    **dict.fromkeys(("MT", "SC"), 31),
    **dict.fromkeys(("LC",), 32),
}
_LOOKS_LIKE = {
    "email": "look like e-mail addresses",
    "phone": "look like phone numbers",
    "ip": "contain IP addresses",
    "iban": "contain IBANs (valid mod-97 check)",
    "card": "contain card numbers (valid Luhn check)",
}


@dataclass
class Finding:
    table: str  # "public.users"
    column: str
    reasons: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # "email", "name", "ip"... for drafts
    json_keys: list[str] = field(default_factory=list)  # suspect keys inside json values

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "column": self.column,
            "reasons": list(self.reasons),
            "kinds": list(self.kinds),
            "json_keys": list(self.json_keys),
        }


# --- detectors ---------------------------------------------------------------------------


def name_words(name: str) -> list[str]:
    """Words of an identifier: 'firstName' and 'first_name' -> ['first', 'name']."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [word for word in re.split(r"[^a-z0-9]+", spaced.lower()) if word]


def _singular(word: str) -> str:
    base = word.rstrip("0123456789") or word
    if base not in NAME_WORDS and base.endswith("s") and base[:-1] in NAME_WORDS:
        return base[:-1]
    return base


def name_kinds(name: str) -> list[tuple[str, str]]:
    """(word, kind) for every personal-data word of a column or JSON key name."""
    words = [_singular(word) for word in name_words(name)]
    qualifier = next((word for word in words if word in _QUALIFIERS), None)
    hits: list[tuple[str, str]] = []
    for word in words:
        kind = NAME_WORDS.get(word)
        if kind is None or word in _QUALIFIERS:
            continue
        if word == "name" and qualifier:
            kind = NAME_WORDS[qualifier]
        if (word, kind) not in hits:
            hits.append((word, kind))
    return hits


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    iban = candidate.replace(" ", "").upper()
    expected = IBAN_LENGTHS.get(iban[:2])
    if not 15 <= len(iban) <= 34 or (expected is not None and len(iban) != expected):
        return False
    if not iban.isalnum() or not iban[2:4].isdigit():
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _has_iban(candidate: str) -> bool:
    # The pattern may have swallowed a following group ("... 3000 USD1"): the registered
    # length of the country says where the IBAN really ends.
    compact = candidate.replace(" ", "")
    return iban_valid(compact[: IBAN_LENGTHS.get(compact[:2], len(compact))])


def _phone_like(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    if not 8 <= len(digits) <= 15 or _DATE.search(match) or _IPV4.fullmatch(match.strip()):
        return False
    separators = len(re.findall(r"[\s().-]+", match.strip()))
    # A bare run of digits is an id, not a phone, unless it has a phone's prefix.
    return (
        match.startswith(("+", "(")) or separators >= 2 or (digits[0] == "0" and len(digits) == 10)
    )


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    for start, end in spans:
        text = text[:start] + " " * (end - start) + text[end:]
    return text


def detect(text: str) -> set[str]:
    """The detectors a single text value triggers.

    What one detector recognized is blanked before the next looks: the digits of an
    IBAN or an e-mail address are not also a card or a phone number.
    """
    found = set()
    checks = (
        ("email", _EMAIL, lambda m: True),
        ("iban", _IBAN, lambda m: _has_iban(m.group())),
        ("ip", _IPV4, lambda m: True),
        ("ip", _IPV6, lambda m: m.group().count(":") >= 2 and _ipv6(m.group())),
        ("card", _CARD, lambda m: _card(m.group())),
        ("phone", _PHONE, lambda m: _phone_like(m.group())),
    )
    for kind, pattern, valid in checks:
        spans = [m.span() for m in pattern.finditer(text) if valid(m)]
        if spans:
            found.add(kind)
            text = _blank(text, spans)
    return found


def _card(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    return 13 <= len(digits) <= 19 and digits[0] in "3456" and luhn_valid(digits)


def _ipv6(candidate: str) -> bool:
    if not re.search(r"[0-9A-Fa-f]", candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _json_leaves(value: Any, keys: set[str]) -> list[str]:
    """Every scalar of a JSON document as text; its keys go into `keys`."""
    if isinstance(value, dict):
        leaves = []
        for key, item in value.items():
            keys.add(str(key))
            leaves.extend(_json_leaves(item, keys))
        return leaves
    if isinstance(value, list):
        return [leaf for item in value for leaf in _json_leaves(item, keys)]
    if value is None or isinstance(value, bool):
        return []
    return [str(value)]


# --- sampling ----------------------------------------------------------------------------


def _scanned(column: ColumnInfo) -> bool:
    return column.category in ("text", "json", "inet") or column.array_category in ("text", "json")


def _sample(
    conn: psycopg.Connection, *, table: TableInfo, columns: list[ColumnInfo], sample_size: int
) -> list[tuple[str | None, ...]]:
    cols = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(column.name)) for column in columns
    )
    head = sql.SQL("SELECT {} FROM {} LIMIT {}").format(
        cols, table.identifier, sql.Literal(sample_size)
    )
    with conn.cursor() as cur:
        if table.estimated_rows > BIG_TABLE_ROWS * sample_size:
            # SYSTEM sampling reads whole random pages: cheap on any size, and not
            # biased towards the oldest rows the way the table's head would be.
            percent = min(100.0, 100.0 * 4 * sample_size / table.estimated_rows)
            rows = cur.execute(
                sql.SQL("SELECT {} FROM {} TABLESAMPLE SYSTEM ({}) LIMIT {}").format(
                    cols, table.identifier, sql.Literal(percent), sql.Literal(sample_size)
                )
            ).fetchall()
            if len(rows) >= sample_size // 2:
                return rows
        return cur.execute(head).fetchall()


def _judge_column(
    column: ColumnInfo, values: list[str | None]
) -> tuple[list[str], list[str], list[str]]:
    """(reasons, kinds, suspect json keys) from the sampled values of one column."""
    present = [value for value in values if value is not None]
    if not present:
        return [], [], []
    hits: Counter[str] = Counter()
    key_counts: Counter[str] = Counter()
    for value in present:
        texts = [value]
        if column.category == "json" or column.array_category == "json":
            keys: set[str] = set()
            try:
                texts = _json_leaves(json.loads(value), keys)
            except ValueError:
                pass
            texts.extend(keys)  # documents keyed by e-mail address are common
            key_counts.update(key for key in keys if name_kinds(key))
        found: set[str] = set()
        for text in texts:
            found |= detect(text)
        hits.update(found)
    reasons, kinds = [], []
    for detector in DETECTORS:
        count = hits[detector]
        if count and (count >= SUSPECT_COUNT or count / len(present) >= SUSPECT_SHARE):
            reasons.append(f"{count} of {len(present)} sampled values {_LOOKS_LIKE[detector]}")
            kinds.append(detector)
    suspect_keys = sorted(key_counts)
    if suspect_keys:
        reasons.append(
            "sampled JSON holds keys that name personal data: " + ", ".join(suspect_keys)
        )
    return reasons, kinds, suspect_keys


def scan(
    conn: psycopg.Connection, *, schema: Schema, policy: Policy, sample_size: int = 500
) -> list[Finding]:
    """Columns the policy does not cover that look like personal data."""
    findings: list[Finding] = []
    for table in schema.tables.values():
        uncovered = [
            column
            for column in table.columns
            if not policy.covers(table.schema, table.name, column.name)
        ]
        if not uncovered:
            continue
        by_name: dict[str, Finding] = {}
        for column in uncovered:
            hits = name_kinds(column.name)
            if hits:
                finding = Finding(table=table.qualified, column=column.name)
                for word, kind in hits:
                    finding.reasons.append(f"name contains '{word}'")
                    if kind not in finding.kinds:
                        finding.kinds.append(kind)
                by_name[column.name] = finding
        sampled = [column for column in uncovered if _scanned(column)]
        if sampled:
            rows = _sample(conn, table=table, columns=sampled, sample_size=sample_size)
            for i, column in enumerate(sampled):
                reasons, kinds, keys = _judge_column(column, [row[i] for row in rows])
                if not reasons:
                    continue
                finding = by_name.setdefault(
                    column.name, Finding(table=table.qualified, column=column.name)
                )
                finding.reasons.extend(reasons)
                finding.kinds.extend(kind for kind in kinds if kind not in finding.kinds)
                finding.json_keys.extend(keys)
        findings.extend(by_name[name] for name in sorted(by_name))
    return sorted(findings, key=lambda f: (f.table, f.column))


def report(findings: list[Finding]) -> str:
    """One line per suspect column: `public.users.email: why; why`."""
    if not findings:
        return "No column outside the policy looks like personal data."
    return "\n".join(
        f"{finding.table}.{finding.column}: {'; '.join(finding.reasons)}" for finding in findings
    )


# --- drafting a policy ---------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# YAML 1.1 reads these as booleans or null when unquoted.
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def _yaml_key(key: str) -> str:
    if _PLAIN_KEY.fullmatch(key) and key.lower() not in _YAML_WORDS:
        return key
    return json.dumps(key)  # a JSON string is a valid double-quoted YAML scalar


def _yaml_flow(data: Any) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool):
        return "true" if data else "false"
    if isinstance(data, int | float):
        return str(data)
    if isinstance(data, str):
        return data if data in ("hash",) else json.dumps(data)
    if isinstance(data, list):
        return "[" + ", ".join(_yaml_flow(item) for item in data) + "]"
    return "{" + ", ".join(f"{_yaml_key(k)}: {_yaml_flow(v)}" for k, v in data.items()) + "}"


# Values whose shape is their meaning: a fake would be wrong, a hash keeps joins.
_SENSITIVE = {"finance", "secret", "identity", "card", "iban"}


def _fits(column: ColumnInfo, needed: int) -> bool:
    return column.max_length is None or column.max_length >= needed


def _text_suggestion(kinds: list[str], *, column: ColumnInfo, table: TableInfo) -> Any:
    unique = table.in_any_unique(column.name)
    for kind, fake in (
        ("email", "email"),
        ("phone", "phone"),
        ("ip", "ip"),
        ("first_name", "first_name"),
        ("last_name", "last_name"),
        ("name", "name"),
        ("address", "address"),
    ):
        needed = MIN_LENGTH.get(fake, MIN_LENGTH["unique_dictionary"] if unique else 1)
        if kind in kinds and _fits(column, needed):
            return {"fake": fake}
    if _fits(column, MIN_LENGTH["hash"]) and (
        unique or {*_SENSITIVE, "email", "phone", "ip"} & set(kinds)
    ):
        return "hash"
    if not column.not_null:
        return None
    if not unique and _fits(column, 1) and not (_SENSITIVE & set(kinds)):
        return {"fake": "text"}
    return {"mask": {"first": 0, "last": 0}}


def _json_key_suggestion(key: str) -> Any:
    kinds = [kind for _, kind in name_kinds(key)]
    for kind in ("email", "phone", "ip", "first_name", "last_name", "name", "address"):
        if kind in kinds:
            return {"fake": kind}
    return "hash"


def _suggestion(finding: Finding, *, column: ColumnInfo, table: TableInfo) -> Any:
    kinds = finding.kinds
    if column.category == "json":
        if finding.json_keys:
            return {"json_mask": {key: _json_key_suggestion(key) for key in finding.json_keys}}
        return None if not column.not_null else {"constant": {}}
    if column.category == "inet":
        return {"fake": "ip"}
    if column.category == "text":
        return _text_suggestion(kinds, column=column, table=table)
    if column.category == "date" and table.primary_key:
        return {"date_shift": 365}
    if column.base_type in ("int8", "uuid") and not column.generated:
        return "hash"
    if not column.not_null:
        return None
    return {"keep": "TODO: review, looks personal but no strategy fits this type"}


def draft_policy(conn: psycopg.Connection, *, schema: Schema) -> str:
    """A starter policy listing every column: a strategy for suspect ones, with the reason
    as a comment, and `keep: "TODO: review"` for the others. strict: true, so that a column
    added later is refused until someone decides about it."""
    findings = {
        (finding.table, finding.column): finding
        for finding in scan(conn, schema=schema, policy=Policy())
    }
    lines = [
        "# Drafted by Fixproof from the database's columns and a sample of their values.",
        "# Review every line: 'TODO: review' keeps a column exactly as it is.",
        "strict: true",
        "tables:",
    ]
    for table in schema.tables.values():
        lines.append(f"  {_yaml_key(table.qualified)}:")
        for column in table.columns:
            finding = findings.get((table.qualified, column.name))
            if finding is None:
                suggestion: Any = {"keep": "TODO: review"}
            else:
                lines.append(f"    # {'; '.join(finding.reasons)}")
                suggestion = _suggestion(finding, column=column, table=table)
            lines.append(f"    {_yaml_key(column.name)}: {_yaml_flow(suggestion)}")
    return "\n".join(lines) + "\n"
