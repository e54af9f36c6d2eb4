"""Fail closed: find columns the policy does not cover that look like personal data.

Every column whose values can carry text is read, whatever its type: strings of any kind
(citext, domains), json, arrays, composite types, hstore, xml, tsvector, and the text form
of any other type; bytea is decoded (UTF-8 or UTF-16, gzip or zlib), and so are base64
and percent-encoded strings. A column is judged by its name (whole words, so `first_name`
and `username` hit while `domain` and `pipeline` do not, and `address_id` is a key, not an
address) and by a sample of its values (e-mail addresses, phone numbers, IP addresses,
IBANs passing mod-97, card numbers passing Luhn, keys of documents that name personal
data). Numbers, dates, uuids and booleans are flagged only on evidence: a value that is
a card number, or a phone-length number in a column named for phones, or a date named for
births. What the scan cannot read (binary data that does not decode, a tsvector nothing
recomputes) is a finding too: the policy must say what to do with it.

A finding never quotes a sampled value: the report must not leak what it warns about.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import unicodedata
import urllib.parse
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from perfruns.masking.derived import recomputed, table_changes
from perfruns.masking.policy import Policy
from perfruns.masking.schema import NO_TEXT_CLASSES, ColumnInfo, Schema, TableInfo

SUSPECT_SHARE = 0.10  # of the non-null sampled values
SUSPECT_COUNT = 3  # or this many values, whatever the share
EVIDENCE_SHARE = 0.5  # numbers: a phone or an id only when most values have its shape
CARD_SHARE = 0.9  # a random 16-digit number passes Luhn one time in ten
OPAQUE_SHARE = 0.5  # of the non-null sampled values: the column cannot be judged
BIG_TABLE_ROWS = 20  # x sample_size: above this, sample pages instead of reading the head
MAX_VALUE = 65536  # characters or bytes of a value read by the scan
MAX_INFLATED = 1 << 20  # bytes a compressed value may inflate to

# Whole words of a column name -> the kind of data they suggest. English and French.
NAME_WORDS: dict[str, str] = {
    **dict.fromkeys(("email", "mail", "emailaddress", "mailaddress", "courriel", "mel"), "email"),
    **dict.fromkeys(
        ("phone", "tel", "telephone", "mobile", "cell", "fax", "msisdn", "portable"), "phone"
    ),
    **dict.fromkeys(
        ("first", "firstname", "given", "givenname", "forename", "prenom"), "first_name"
    ),
    **dict.fromkeys(("last", "lastname", "surname", "family", "familyname", "nom"), "last_name"),
    **dict.fromkeys(
        ("name", "fullname", "nickname", "displayname", "maidenname", "nomcomplet"), "name"
    ),
    **dict.fromkeys(("username", "login", "userlogin", "screenname", "pseudo"), "username"),
    **dict.fromkeys(("address", "addr", "street", "adresse", "rue", "voie"), "address"),
    **dict.fromkeys(("city", "town", "ville", "commune"), "city"),
    **dict.fromkeys(
        ("zip", "zipcode", "postcode", "postal", "postalcode", "codepostal", "cp"), "postcode"
    ),
    **dict.fromkeys(("birth", "birthday", "birthdate", "dob", "born", "naissance"), "birth"),
    **dict.fromkeys(("ip", "ipaddr", "ipaddress", "ipv4", "ipv6"), "ip"),
    **dict.fromkeys(
        ("iban", "bic", "swift", "card", "creditcard", "ccnumber", "cvv", "rib"), "finance"
    ),
    **dict.fromkeys(
        (
            "token",
            "password",
            "passwd",
            "pwd",
            "secret",
            "apikey",
            "otp",
            "salt",
            "privatekey",
            "secretkey",
            "accesskey",
            "mdp",
            "motdepasse",
        ),
        "secret",
    ),  # fmt: skip
    **dict.fromkeys(
        ("ssn", "passport", "nationalid", "taxid", "license", "licence", "nin", "nir", "secu"),
        "identity",
    ),
    **dict.fromkeys(("latitude", "longitude", "lat", "lng", "geo", "gps"), "location"),
    **dict.fromkeys(
        ("photo", "picture", "avatar", "selfie", "portrait", "signature", "fingerprint"), "image"
    ),
}
# "first" and "last" alone are common (first_seen, last_login): they count only next
# to "name" ("first_name"), which then reads as a first name rather than a name.
_QUALIFIERS = {"first", "given", "last", "family"}
# A last word that makes the column about the data, not the data: address_id is a key,
# email_verified a flag, phone_type a label, email_sent_at a time.
_NOT_THE_DATA = {
    "id", "ids", "fk", "uuid", "guid", "count", "type", "kind", "status", "flag", "verified",
    "confirmed", "enabled", "valid", "at", "on", "sent", "opened", "bounced", "optin",
    "consent", "format", "length", "size", "seq", "version", "template", "domain",
}  # fmt: skip
# Words of a table (or of the word before "name") that say its rows are people: only
# there does a bare `name` column hold a person's name. category.name, language.name and
# film.title name other things.
PERSON_WORDS = {
    "user", "customer", "client", "person", "people", "employee", "staff", "member",
    "contact", "patient", "student", "author", "actor", "profile", "driver", "guest",
    "owner", "subscriber", "applicant", "candidate", "recipient", "sender", "buyer",
    "seller", "tenant", "visitor", "passenger", "volunteer", "teacher", "doctor", "agent",
    "lead", "beneficiary", "player", "worker", "manager", "participant", "attendee",
    "traveler", "traveller", "donor", "resident", "citizen", "individual", "holder",
    "signatory", "full", "display", "nick", "maiden", "legal", "real", "utilisateur",
    "personne", "employe", "salarie", "adherent", "membre", "eleve", "auteur", "acteur",
}  # fmt: skip
_USERNAME_BEFORE_NAME = {"user", "login", "account", "screen"}
_KIND_BEFORE_NAME = {
    "company": "company", "business": "company", "employer": "company",
    "organisation": "company", "organization": "company",
    "city": "city", "town": "city", "street": "address",
}  # fmt: skip

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


_LOOKS_LIKE_NUMBER = {
    "phone": "are phone-length numbers in a column named for phones",
    "identity": "are identifier-length numbers in a column named for identity documents",
    "finance": "are account-length numbers in a column named for bank details",
    "card": "are card numbers (valid Luhn check)",
}


@dataclass
class Finding:
    table: str  # "public.users"
    column: str
    reasons: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # "email", "name", "ip"... for drafts
    json_keys: list[str] = field(default_factory=list)  # suspect keys inside json values
    # Where those keys are, from the top of each document through objects: what a json_mask
    # can name. `json_out_of_reach`: personal data a json_mask of those paths would leave
    # (a suspect key inside an array, a detected value or key under no suspect key).
    json_paths: list[list[str]] = field(default_factory=list)
    json_out_of_reach: bool = False
    undecided: bool = False  # the scan cannot read the values: the policy must decide

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "column": self.column,
            "reasons": list(self.reasons),
            "kinds": list(self.kinds),
            "json_keys": list(self.json_keys),
            "json_paths": [list(path) for path in self.json_paths],
            "json_out_of_reach": self.json_out_of_reach,
            "undecided": self.undecided,
        }


# --- names ---------------------------------------------------------------------------------


def name_words(name: str) -> list[str]:
    """Words of an identifier: 'firstName' and 'first_name' -> ['first', 'name'];
    'Prénom' -> ['prenom'] (accents go: 'pr' and 'nom' would read as a family name)."""
    name = "".join(
        char for char in unicodedata.normalize("NFKD", name) if not unicodedata.combining(char)
    )
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [word for word in re.split(r"[^a-z0-9]+", spaced.lower()) if word]


def _singular(word: str) -> str:
    base = word.rstrip("0123456789") or word
    for known in (NAME_WORDS, PERSON_WORDS):
        if base not in known and base.endswith("s") and base[:-1] in known:
            return base[:-1]
    return base


def person_table(table: str) -> bool:
    """Whether a table's name says its rows are people (customer, staff, users...)."""
    return any(_singular(word) in PERSON_WORDS for word in name_words(table.split(".")[-1]))


def _name_kind(previous: str | None, *, table: str | None) -> str | None:
    """What a `name` word means after `previous` (None: it comes first)."""
    if previous in ("first", "given", "middle", "prenom"):
        return "first_name"
    if previous in ("last", "family", "sur", "maiden"):
        return "last_name"
    if previous in _USERNAME_BEFORE_NAME:
        return "username"
    if previous in _KIND_BEFORE_NAME:
        return _KIND_BEFORE_NAME[previous]
    if previous is not None:
        return "name" if previous in PERSON_WORDS else None
    # A bare `name`: a person's where the rows are people (or where nothing is known).
    return "name" if table is None or person_table(table) else None


def name_kinds(name: str, *, table: str | None = None) -> list[tuple[str, str]]:
    """(word, kind) for every personal-data word of a column or JSON key name.

    `table` (the column's table) decides what a bare `name` is; without it, a person's."""
    words = [_singular(word) for word in name_words(name)]
    if len(words) > 1 and words[-1] in _NOT_THE_DATA:
        return []
    # Two words that make one: api_key, zip_code, post_code, user_name.
    joined = {a + b for a, b in zip(words, words[1:], strict=False)}
    hits: list[tuple[str, str]] = []
    for word in sorted(joined):
        kind = NAME_WORDS.get(word)
        if kind is not None and kind not in ("first_name", "last_name", "name", "username"):
            hits.append((word, kind))
    for i, word in enumerate(words):
        previous = words[i - 1] if i else None
        following = words[i + 1] if i + 1 < len(words) else None
        if word in ("name", "nom"):
            if previous in _QUALIFIERS:
                continue  # counted with its qualifier: first_name
            if previous is None and following in PERSON_WORDS:
                previous = following  # nom_client, name_of_customer reads the other way
            kind = _name_kind(previous, table=table)
            if word == "nom" and kind == "name":
                kind = "last_name"  # the French nom is the family name
        elif word in _QUALIFIERS:
            if following not in ("name", "nom"):
                continue  # first_seen, last_login
            kind, word = NAME_WORDS[word], f"{word}_name"
        elif word == "login" and previous in _QUALIFIERS:
            continue
        else:
            kind = NAME_WORDS.get(word)
        if kind is not None and all(kind != known for _, known in hits):
            hits.append((word, kind))
    return hits


# --- detectors ---------------------------------------------------------------------------


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
    return _detect(text)[0]


# Words left once what the detectors found is blanked: a value with this many is free
# text with personal data inside (a ticket's body), not the data itself.
_WORD = re.compile(r"[^\W\d_]{2,}")
PROSE_WORDS = 3


def _detect(text: str) -> tuple[set[str], str]:
    """detect(), and the text with what it found blanked."""
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
    return found, text


def pii_tokens(text: str) -> set[str]:
    """The e-mail addresses, IBANs and card numbers inside a text, lowercased: what must
    not be found anywhere in a masked column whose masking keeps part of each value (a
    document, an array). Not phones or IP addresses: a shape fake permutes phones among
    themselves, so another row's original legitimately comes out."""
    found: set[str] = set()
    checks = (
        (_EMAIL, lambda m: True),
        (_IBAN, lambda m: _has_iban(m.group())),
        (_CARD, lambda m: _card(m.group())),
    )
    for pattern, valid in checks:
        matches = [m for m in pattern.finditer(text) if valid(m)]
        found.update(m.group().lower() for m in matches)
        text = _blank(text, [m.span() for m in matches])
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


def json_reach(value: Any) -> tuple[set[tuple[str, ...]], bool]:
    """(paths of the keys that name personal data, reached from the top through objects
    only; whether the document holds personal data a json_mask of those paths leaves:
    a suspect key inside an array, or a value or key the detectors flag under no suspect
    key). A suspect key's whole value is what the path masks: nothing under it is looked
    at."""
    paths: set[tuple[str, ...]] = set()
    outside: list[str] = []
    out_of_reach = False

    def walk(node: Any, path: tuple[str, ...], in_array: bool) -> None:
        nonlocal out_of_reach
        if isinstance(node, dict):
            for key, item in node.items():
                key = str(key)
                if name_kinds(key):
                    if in_array:
                        out_of_reach = True
                    else:
                        paths.add((*path, key))
                        continue
                outside.append(key)
                walk(item, (*path, key), in_array)
        elif isinstance(node, list):
            for item in node:
                walk(item, path, True)
        elif node is not None and not isinstance(node, bool):
            outside.append(str(node))

    walk(value, (), False)
    return paths, out_of_reach or any(detect(text) for text in outside)


# --- decoding ------------------------------------------------------------------------------

_BASE64 = re.compile(r"[A-Za-z0-9+/]{20,}={0,2}|[A-Za-z0-9_-]{20,}={0,2}")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_XML_NAMES = re.compile(r"<\s*([A-Za-z_][\w.:-]*)|\s([A-Za-z_][\w.:-]*)\s*=\s*[\"']")
_XML_TAGS = re.compile(r"<[^>]*>")
_HSTORE_KEYS = re.compile(r'"((?:[^"\\]|\\.)*)"\s*=>')
_HEX_BLOB = re.compile(r"(?:\\x)?[0-9A-Fa-f]{40,}")


def _readable(text: str) -> bool:
    if not text:
        return True
    shown = sum(char.isprintable() or char in "\t\r\n" for char in text)
    return shown / len(text) >= 0.9


def decode_bytes(raw: bytes) -> str | None:
    """The text a binary value holds, or None when it holds no readable text."""
    data = bytes(raw)
    if data[:2] == b"\x1f\x8b" or (
        data[:1] == b"\x78" and data[1:2] in (b"\x01", b"\x5e", b"\x9c", b"\xda")
    ):
        try:
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
            data = inflater.decompress(data, MAX_INFLATED)
        except zlib.error:
            return None
    for bom, encoding in ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            try:
                text = data[2:].decode(encoding)
            except UnicodeDecodeError:
                return None
            return text if _readable(text) else None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if _readable(text) else None


def _unwrapped(text: str) -> list[str]:
    """What a string may hide: base64 of text, percent-encoded text."""
    found = []
    stripped = text.strip()
    if len(stripped) >= 20 and _BASE64.fullmatch(stripped):
        padded = stripped + "=" * (-len(stripped) % 4)
        try:
            decoded = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        inner = decode_bytes(decoded) if decoded else None
        if inner:
            found.append(inner)
    if _PERCENT.search(text):
        found.append(urllib.parse.unquote(text))
    return found


def _markup(text: str, keys: set[str]) -> list[str]:
    for match in _XML_NAMES.finditer(text):
        keys.add((match.group(1) or match.group(2)).split(":")[-1])
    return [_XML_TAGS.sub(" ", text)]


def _json_texts(text: str, keys: set[str]) -> list[str] | None:
    try:
        return _json_leaves(json.loads(text), keys)
    except (ValueError, RecursionError):
        return None


def value_texts(value: str | bytes, column: ColumnInfo, keys: set[str]) -> list[str] | None:
    """The texts of one sampled value the detectors read (its keys go into `keys`), or
    None when the value cannot be read."""
    kind = column.element_class if column.type_class == "array" else column.type_class
    if isinstance(value, bytes | bytearray | memoryview):
        text = decode_bytes(bytes(value))
        if text is None:
            return None
    else:
        text = value
    if kind == "other" and _HEX_BLOB.fullmatch(text.strip()):
        return None  # a type of an extension printed as hex (PostGIS' geometry...)
    texts = [text]
    if kind == "json" or (text[:1] in "{[" and kind in ("text", "binary")):
        leaves = _json_texts(text, keys)
        if leaves is not None:
            texts = [*leaves, *keys]  # documents keyed by e-mail address are common
    if kind == "xml" or (text.lstrip()[:1] == "<" and kind in ("text", "binary")):
        texts += _markup(text, keys)
    if kind == "hstore":
        keys.update(match.group(1) for match in _HSTORE_KEYS.finditer(text))
    if kind in ("text", "binary", "other"):
        for inner in _unwrapped(text):
            texts.append(inner)
            leaves = _json_texts(inner, keys) if inner[:1] in "{[" else None
            texts.extend(leaves or [])
    return texts


# --- sampling ----------------------------------------------------------------------------


def _read_class(column: ColumnInfo) -> bool:
    """Whether the scan samples the column's values."""
    return column.type_class not in NO_TEXT_CLASSES and not (
        column.type_class == "array" and column.element_class in NO_TEXT_CLASSES
    )


def _sampled_value(column: ColumnInfo) -> sql.Composable:
    name = sql.Identifier(column.name)
    if column.type_class == "binary":
        return sql.SQL("substring({} FROM 1 FOR {})").format(name, sql.Literal(MAX_VALUE))
    return sql.SQL("left({}::text, {})").format(name, sql.Literal(MAX_VALUE))


def _sample(
    conn: psycopg.Connection, *, table: TableInfo, columns: list[ColumnInfo], sample_size: int
) -> list[tuple[Any, ...]]:
    cols = sql.SQL(", ").join(_sampled_value(column) for column in columns)
    head = sql.SQL("SELECT {} FROM {}{} LIMIT {}").format(
        cols, table.only, table.identifier, sql.Literal(sample_size)
    )
    with conn.cursor() as cur:
        if table.estimated_rows > BIG_TABLE_ROWS * sample_size:
            # SYSTEM sampling reads whole random pages: cheap on any size, and not
            # biased towards the oldest rows the way the table's head would be.
            percent = min(100.0, 100.0 * 4 * sample_size / table.estimated_rows)
            rows = cur.execute(
                sql.SQL("SELECT {} FROM {}{} TABLESAMPLE SYSTEM ({}) LIMIT {}").format(
                    cols,
                    table.only,
                    table.identifier,
                    sql.Literal(percent),
                    sql.Literal(sample_size),
                )
            ).fetchall()
            if len(rows) >= sample_size // 2:
                return rows
        return cur.execute(head).fetchall()


# --- judging -------------------------------------------------------------------------------


def _enough(count: int, total: int) -> bool:
    return bool(count) and (count >= SUSPECT_COUNT or count / total >= SUSPECT_SHARE)


def _judge_numbers(
    column: ColumnInfo, present: list[Any], name_hits: set[str]
) -> tuple[list[str], list[str]]:
    """Numbers are personal data only on evidence: their shape, and for most, the name."""
    digits = [re.sub(r"\.0*$", "", str(value).strip().lstrip("-+")) for value in present]
    digits = [d for d in digits if d.isdigit()]
    total = len(present)
    lengths = {
        "phone": (8, 15, EVIDENCE_SHARE),
        "identity": (6, 20, EVIDENCE_SHARE),
        "finance": (8, 34, EVIDENCE_SHARE),
    }
    reasons, kinds = [], []
    for kind, (low, high, share) in lengths.items():
        count = sum(low <= len(d) <= high for d in digits)
        if kind in name_hits and count / total >= share:
            reasons.append(f"{count} of {total} sampled values {_LOOKS_LIKE_NUMBER[kind]}")
            kinds.append(kind)
    cards = sum(13 <= len(d) <= 19 and d[0] in "3456" and luhn_valid(d) for d in digits)
    if cards / total >= CARD_SHARE:
        reasons.append(f"{cards} of {total} sampled values {_LOOKS_LIKE_NUMBER['card']}")
        kinds.append("card")
    return reasons, kinds


def _json_reach_of(values: list[Any]) -> tuple[list[list[str]], bool]:
    """json_reach over the sampled documents of a json column."""
    paths: set[tuple[str, ...]] = set()
    out_of_reach = False
    for value in values:
        try:
            document = json.loads(value) if isinstance(value, str) else None
        except (ValueError, RecursionError):
            continue
        found, outside = json_reach(document)
        paths |= found
        out_of_reach = out_of_reach or outside
    return [list(path) for path in sorted(paths)], out_of_reach


def _judge_column(
    column: ColumnInfo, values: list[Any], *, name_hits: set[str]
) -> tuple[list[str], list[str], list[str], bool]:
    """(reasons, kinds, suspect keys, undecided) from the sampled values of one column."""
    present = [value for value in values if value is not None]
    if not present:
        return [], [], [], False
    if column.type_class in ("int", "number"):
        reasons, kinds = _judge_numbers(column, present, name_hits)
        return reasons, kinds, [], False
    hits: Counter[str] = Counter()
    key_counts: Counter[str] = Counter()
    unreadable = flagged = prose = 0
    for value in present:
        keys: set[str] = set()
        texts = value_texts(value, column, keys)
        if texts is None:
            unreadable += 1
            continue
        key_counts.update(key for key in keys if name_kinds(key))
        found: set[str] = set()
        for i, text in enumerate(texts):
            kinds_found, rest = _detect(text)
            found |= kinds_found
            if i == 0 and kinds_found and column.type_class == "text":
                flagged += 1
                prose += len(_WORD.findall(rest)) >= PROSE_WORDS
        hits.update(found)
    reasons, kinds = [], []
    for detector in DETECTORS:
        count = hits[detector]
        if _enough(count, len(present)):
            reasons.append(f"{count} of {len(present)} sampled values {_LOOKS_LIKE[detector]}")
            kinds.append(detector)
    if kinds and flagged and prose * 2 >= flagged:
        # For a draft: a fake of the whole value's kind would not keep its shape.
        kinds.insert(0, "prose")
    suspect_keys = sorted(key_counts)
    if suspect_keys:
        where = {"json": "JSON", "xml": "XML", "hstore": "hstore"}.get(column.type_class, "")
        reasons.append(
            f"sampled {where or 'structured'} values hold keys that name personal data: "
            + ", ".join(suspect_keys)
        )
    undecided = unreadable / len(present) >= OPAQUE_SHARE
    if undecided:
        what = "binary data" if column.type_class == "binary" else "encoded data"
        reasons.append(
            f"{unreadable} of {len(present)} sampled values are {what} that the scan cannot "
            "read: say what to do with it (null, constant, hash, or keep with a reason)"
        )
    return reasons, kinds, suspect_keys, undecided


def _name_counts(column: ColumnInfo) -> bool:
    """Whether a personal-data word in the column's name is a finding on its own."""
    if column.type_class in ("int", "number", "uuid", "bool", "enum"):
        return False
    if column.type_class == "array":
        return column.element_class not in ("int", "number", "uuid", "bool", "enum", "date")
    return True


def _name_finding(table: TableInfo, column: ColumnInfo) -> tuple[Finding | None, set[str]]:
    hits = name_kinds(column.name, table=table.name)
    kinds = {kind for _, kind in hits}
    if column.type_class == "date":
        hits = [(word, kind) for word, kind in hits if kind == "birth"]
    elif not _name_counts(column):
        hits = []
    # A composite value prints without its fields' names: ("1 rue X",Paris,75001).
    fields = [(name, name_kinds(name, table=table.name)) for name in column.fields]
    fields = [(name, found) for name, found in fields if found]
    if not hits and not fields:
        return None, kinds
    finding = Finding(table=table.qualified, column=column.name)
    for word, kind in hits:
        finding.reasons.append(f"name contains '{word}'")
        if kind not in finding.kinds:
            finding.kinds.append(kind)
    if fields:
        finding.reasons.append(
            "its type's fields name personal data: " + ", ".join(name for name, _ in fields)
        )
        for _, found in fields:
            finding.kinds.extend(kind for _, kind in found if kind not in finding.kinds)
    return finding, kinds


def _copied_derivation(policy: Policy, table: TableInfo, column: ColumnInfo) -> Finding | None:
    """A tsvector nothing computes again, in a table whose other columns are masked: it
    was computed from the originals, and would be copied as it is."""
    if column.type_class != "tsvector" or column.derived or not table_changes(policy, table):
        return None
    return Finding(
        table=table.qualified,
        column=column.name,
        reasons=[
            "a tsvector that no trigger or generation of the table computes: it holds the "
            "words of the original values and would be copied as it is; recompute it with "
            "an expression, null it, or keep it with a reason"
        ],
        undecided=True,
    )


def scan(
    conn: psycopg.Connection, *, schema: Schema, policy: Policy, sample_size: int = 500
) -> list[Finding]:
    """Columns the policy does not cover that look like personal data, or that the scan
    cannot judge. A derived column computed again from masked values is covered."""
    findings: list[Finding] = []
    for table in schema.tables.values():
        uncovered = [
            column
            for column in table.columns
            if not policy.covers(table.schema, table.name, column.name)
            and recomputed(policy, table, column) is None
        ]
        if not uncovered:
            continue
        found: dict[str, Finding] = {}
        name_hits: dict[str, set[str]] = {}
        for column in uncovered:
            finding, name_hits[column.name] = _name_finding(table, column)
            if finding is not None:
                found[column.name] = finding
            copied = _copied_derivation(policy, table, column)
            if copied is not None:
                found.setdefault(column.name, copied)
        sampled = [column for column in uncovered if _read_class(column)]
        if sampled:
            rows = _sample(conn, table=table, columns=sampled, sample_size=sample_size)
            for i, column in enumerate(sampled):
                reasons, kinds, keys, undecided = _judge_column(
                    column, [row[i] for row in rows], name_hits=name_hits[column.name]
                )
                if not reasons:
                    continue
                finding = found.setdefault(
                    column.name, Finding(table=table.qualified, column=column.name)
                )
                finding.reasons.extend(r for r in reasons if r not in finding.reasons)
                finding.kinds.extend(kind for kind in kinds if kind not in finding.kinds)
                finding.json_keys.extend(keys)
                finding.undecided = finding.undecided or undecided
                if column.type_class == "json":
                    finding.json_paths, finding.json_out_of_reach = _json_reach_of(
                        [row[i] for row in rows]
                    )
        findings.extend(found[name] for name in sorted(found))
    return sorted(findings, key=lambda f: (f.table, f.column))


def report(findings: list[Finding]) -> str:
    """One line per suspect column: `public.users.email: why; why`."""
    if not findings:
        return "No column outside the policy looks like personal data."
    return "\n".join(
        f"{finding.table}.{finding.column}: {'; '.join(finding.reasons)}" for finding in findings
    )
