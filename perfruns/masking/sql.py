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

Every masking function is an IMMUTABLE SQL-language function with a single-expression
body, so that the planner can inline it into the ALTER's expression instead of calling
a function per row. PostgreSQL has no common-subexpression elimination: once inlined,
every use of the HMAC digest computes it again, so each fake looks into it two to
four times only (a word run instead of ten word picks, a postcode tied to its town).
Same input, same output, in every table: joins survive masking.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from perfruns.masking.policy import Policy, Strategy, TablePolicy
from perfruns.masking.schema import HELPER_SCHEMA, ColumnInfo, ForeignKey, Schema, TableInfo

DROP_FUNCTIONS = sql.SQL("DROP SCHEMA IF EXISTS fixproof_mask CASCADE")

MIN_KEY_BYTES = 16
UNBOUNDED = 10485760  # the longest varchar PostgreSQL allows: "no limit" for fit()
_BLOCK = 64  # SHA-256 block size, for HMAC's key padding

FIRST_NAMES = (
    "Adam Agnes Alice Amir Anton Beatrice Bianca Brigitte Bruno Camille Carlos Cedric Chloe "
    "David Denis Diane Dora Elena Elias Emil Emma Fatima Felix Flora Frank Gabriel Gaspard "
    "Gina Grace Hana Helena Henri Hugo Igor Ines Irene Ivan Jade Jonas Jules Julia Kenji "
    "Karim Kevin Klara Laura Lea Lina Louis Marc Mateo Maya Mehdi Nadia Nils Nina Nora Olga "
    "Olivier Omar Oscar Paula Petra Pierre Priya Quentin Raphael Remi Rita Rosa Samir Sara "
    "Simon Sofia Tara Theo Thomas Tina Ugo Ulla Umberto Ursula Valentin Vera Victor Viola "
    "Walter Wanda Wendy William Xavier Yann Yasmin Yusuf Yvonne Zeno Zoe Zora"
).split()
LAST_NAMES = (
    "Adams Allen Anderson Andre Baker Becker Bernard Bertrand Bianchi Blanc Bonnet Brown "
    "Campbell Carter Chevalier Clark Clement Collins Davis Dubois Dumont Dupont Durand "
    "Edwards Esposito Evans Faure Ferrari Fischer Fontaine Fournier Garcia Garnier Gauthier "
    "Girard Green Guerin Haddad Hall Harris Henry Hill Hoffmann Jackson Johnson Jones King "
    "Koch Kowalski Lambert Laurent Lefebvre Legrand Leroy Lewis Lopez Martin Martinez Masson "
    "Mathieu Mercier Meyer Michel Miller Mitchell Moore Morel Moreau Morin Muller Nelson "
    "Nicolas Nowak Parker Perrin Petit Phillips Richard Robert Roberts Robin Romano Rossi "
    "Rousseau Roux Russo Schmidt Schneider Schulz Scott Simon Smith Stewart Tanaka Taylor "
    "Thomas Torres Turner Vincent Wagner Walker Weber White Williams Wilson Wright Young"
).split()
COMPANY_STEMS = (
    "Acme Alder Alpine Amber Apex Arbor Atlas Aurora Beacon Birch Blue Bright Cascade Cedar "
    "Cobalt Comet Copper Crest Delta Echo Ember Falcon Fern Fjord Granite Harbor Helix "
    "Horizon Indigo Iris Juniper Keystone Lark Linden Lumen Maple Meridian Nimbus North "
    "Oak Onyx Orbit Pine Prairie Quartz Raven Ridge River Sage Silver Solstice Spruce "
    "Summit Tide Timber Topaz Vale Vertex Willow Zenith"
).split()
COMPANY_KINDS = (
    "Analytics Bakery Builders Capital Consulting Dynamics Energy Foods Freight Group "
    "Health Holdings Industries Insurance Labs Logistics Media Motors Networks Partners "
    "Pharma Retail Robotics Security Software Studio Systems Textiles Travel Ventures"
).split()
STREET_NAMES = (
    "Acacia Ash Bay Beech Bridge Brook Castle Chapel Cherry Church Cliff College Elm Field "
    "Forest Garden Glen Grove Hawthorn Hazel Heather High Highland Hill Holly Ivy Jasmine "
    "Kings Lake Laurel Lilac Lime Main Manor Market Meadow Mill Orchard Park Poplar Primrose "
    "Queens Rose School Spring Station Sunset Tower Valley Victoria Water West Windsor"
).split()
STREET_KINDS = "Avenue Boulevard Close Court Drive Lane Place Road Square Street Way".split()
CITIES = (
    "Aberdeen Amiens Antwerp Arles Avignon Bergen Bilbao Bologna Bordeaux Bremen Brest Bristol "
    "Bruges Caen Cardiff Coimbra Cork Dijon Dresden Dundee Exeter Faro Florence Galway Geneva "
    "Genoa Ghent Girona Graz Grenoble Groningen Hamburg Hanover Innsbruck Kassel Kiel Krakow "
    "Lausanne Leeds Leipzig Lille Limerick Linz Lisbon Liverpool Ljubljana Lorient Lucerne "
    "Lyon Maastricht Malaga Mannheim Marseille Metz Milan Montpellier Munich Murcia Nancy "
    "Nantes Naples Nice Nimes Norwich Nuremberg Odense Orleans Oslo Oxford Padua Palermo "
    "Parma Perth Pisa Porto Poznan Reims Rennes Riga Rouen Salzburg Seville Siena Sligo "
    "Split Stuttgart Tallinn Tartu Toulon Toulouse Tours Trieste Turin Utrecht Valencia "
    "Verona Vigo Vilnius Wroclaw York Zagreb Zurich"
).split()
WORDS = (
    "account action address agenda answer approach area article balance basis batch board "
    "budget change channel check client column comment content contract control copy cost "
    "course credit customer data date deadline delivery design detail device document draft "
    "effort entry event feature field figure file focus form format goal group guide issue "
    "item label level limit list market matter measure meeting method model month network "
    "note notice number offer option order outcome page payment period plan point policy "
    "price process product project purpose quality question range rate record report "
    "request result review route sample schedule section service session setting share "
    "signal source stage status step store subject summary support system table target task "
    "team term test ticket time topic total track update usage value version volume week "
    "window work"
).split()
STARTERS = "A Another Each Every Her His Its My No One Our Some That The Their This Your".split()
TEXT_RUN = 5
# Built once from the lists above. A fixed postcode per town keeps an address to one
# number and two dictionary picks.
STREETS = [
    f"{name} {STREET_KINDS[(i * 7) % len(STREET_KINDS)]}"
    for i, name in enumerate(STREET_NAMES + STREET_NAMES[::-1])
]
TOWNS = [f"{10000 + (i * 7919) % 89990:05d} {city}" for i, city in enumerate(CITIES)]

FAKE_FUNCTIONS = {
    "email": "fake_email",
    "name": "fake_name",
    "first_name": "fake_first_name",
    "last_name": "fake_last_name",
    "phone": "fake_phone",
    "address": "fake_address",
    "company": "fake_company",
    "text": "fake_text",
    "ip": "fake_ip",
}
# What each fake normalizes before hashing, so that ' Alice@Example.COM ' and
# 'alice@example.com' give the same fake (and the same join key) everywhere.
_NORMALIZER = {
    "email": "norm_email",
    "phone": "norm_phone",
    "ip": "norm_ip",
}
# The fakes whose mk_<kind> looks into its digest once: inlined into fake_<kind>, the
# HMAC is computed once per value. The others look two to five times.
_SINGLE_LOOK = frozenset({"ip"})


def _f(name: str) -> sql.Identifier:
    return sql.Identifier(HELPER_SCHEMA, name)


def _hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """K xor ipad and K xor opad (RFC 2104), computed here so SQL only concatenates."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


_MK = "h bytea, n integer, uniq boolean"

# (name, arguments, result, body). In a body, {hmac} stands for fixproof_mask.hmac and
# so on for every helper, {first_names} etc. for the dictionaries, {opad}/{ipad} for the
# padded key. Bytes of a digest h: 0-7 pick words, 8-15 are the unique part of an
# email/phone/ip, 16-19 more words, 24-31 the suffix of unique dictionary fakes.
_DEFINITIONS: tuple[tuple[str, str, str, str], ...] = (
    # text -> its bytes in the server encoding (UTF-8), immutably: convert_to() and
    # textsend() are only STABLE, and one STABLE call stops the inlining.
    ("bytes", "v text", "bytea", "decode(replace(v, {backslash}, {two_backslashes}), 'escape')"),
    # RFC 2104 with the built-in sha256(); `functions_sql(native=True)` swaps in the
    # fixproof_native extension's C function, same values (native/fixproof_native.c).
    ("hmac", "m bytea", "bytea", "sha256({opad} || sha256({ipad} || m))"),
    # The domain ("email", "hash", "row"...) keeps the outputs of two strategies for the
    # same value unrelated: one cannot be used to confirm a guess about the other.
    ("hmac_text", "domain text, v text", "bytea", "{hmac}({bytes}(domain || ':' || v))"),
    ("u16", "h bytea, i integer", "integer", "get_byte(h, i) * 256 + get_byte(h, i + 1)"),
    (
        "hexpart",
        "h bytea, i integer, n integer",
        "text",
        "encode(substring(h FROM i + 1 FOR n), 'hex')",
    ),
    (
        "pick",
        "words text[], h bytea, i integer",
        "text",
        "words[1 + {u16}(h, i) % cardinality(words)]",
    ),
    # TEXT_RUN consecutive words from a list holding its first TEXT_RUN words twice.
    (
        "run",
        "words text[], h bytea, i integer",
        "text[]",
        "(words[1 + {u16}(h, i) % (cardinality(words) - {text_run}):])[1:{text_run}]",
    ),
    # Cut the readable part, never the suffix that carries the HMAC bits.
    (
        "fit",
        "base text, suffix text, n integer",
        "text",
        "left(base, greatest(n - length(suffix), 0)) || suffix",
    ),
    (
        "unique_suffix",
        "h bytea, uniq boolean",
        "text",
        "CASE WHEN uniq THEN ' ' || {hexpart}(h, 24, 8) ELSE '' END",
    ),
    ("first_name_of", "h bytea, i integer", "text", "{pick}({first_names}, h, i)"),
    ("last_name_of", "h bytea, i integer", "text", "{pick}({last_names}, h, i)"),
    ("norm_name", "v text", "text", r"lower(btrim(regexp_replace(v, '\s+', ' ', 'g')))"),
    ("norm_email", "v text", "text", r"lower(regexp_replace(v, '\s+', '', 'g'))"),
    ("norm_phone", "v text", "text", "regexp_replace(v, '[^0-9+]', '', 'g')"),
    ("norm_ip", "v text", "text", "lower(btrim(v))"),
    (
        "mk_email",
        _MK,
        "text",
        "rtrim(left(lower({first_name_of}(h, 0) || '.' || {last_name_of}(h, 2)),"
        " greatest(n - 33, 1)), '.') || '.' || {hexpart}(h, 8, 8) || '@example.invalid'",
    ),
    (
        # 63 bits as 19 digits plus a 20th digit from other bits (66 bits in all); the
        # fictional "+1-555-" prefix only when the column has room. No numeric: faster.
        "mk_phone",
        _MK,
        "text",
        "CASE WHEN n >= 27 THEN '+1-555-' WHEN n >= 21 THEN '+' ELSE '' END"
        " || lpad((('x' || {hexpart}(h, 8, 8))::bit(64)::bigint & 9223372036854775807)::text,"
        " 19, '0') || (get_byte(h, 16) % 10)::text",
    ),
    (
        # Bytes 8-15 of a digest as four groups of four hex digits. One look into the
        # digest: inlined, each look would compute the HMAC again. The colons go in as
        # bytes, since a bytea overlay does not count characters and a text one does
        # (regexp_replace took three times as long).
        "ip_groups",
        "h bytea",
        "text",
        "encode(overlay(overlay(overlay(decode(encode(substring(h FROM 9 FOR 8), 'hex'),"
        " 'escape') PLACING {colon} FROM 13 FOR 0) PLACING {colon} FROM 9 FOR 0)"
        " PLACING {colon} FROM 5 FOR 0), 'escape')",
    ),
    (
        # 2001:db8::/32 is the documentation prefix: never a real host.
        "mk_ip",
        _MK,
        "text",
        "'2001:db8::' || {ip_groups}(h)",
    ),
    (
        "mk_name",
        _MK,
        "text",
        "{fit}({first_name_of}(h, 0) || ' ' || {last_name_of}(h, 2), {unique_suffix}(h, uniq), n)",
    ),
    ("mk_first_name", _MK, "text", "{fit}({first_name_of}(h, 0), {unique_suffix}(h, uniq), n)"),
    ("mk_last_name", _MK, "text", "{fit}({last_name_of}(h, 2), {unique_suffix}(h, uniq), n)"),
    (
        "mk_company",
        _MK,
        "text",
        "{fit}({pick}({company_stems}, h, 0) || ' ' || {pick}({company_kinds}, h, 2),"
        " {unique_suffix}(h, uniq), n)",
    ),
    (
        "mk_address",
        _MK,
        "text",
        "{fit}((1 + {u16}(h, 4) % 250)::text || ' ' || {pick}({streets}, h, 0) || ', '"
        " || {pick}({cities}, h, 2), {unique_suffix}(h, uniq), n)",
    ),
    (
        # A starter word and two runs of consecutive words: three looks into the digest
        # instead of ten, because once inlined every look computes the HMAC again.
        "mk_text",
        _MK,
        "text",
        "{fit}({pick}({starters}, h, 0) || ' ' || array_to_string({run}({words}, h, 2)"
        " || {run}({words}, h, 4), ' ') || '.', {unique_suffix}(h, uniq), n)",
    ),
    *(
        (
            FAKE_FUNCTIONS[kind],
            "v text, n integer, uniq boolean",
            "text",
            f"{{mk_{kind}}}({{hmac_text}}('{kind}', {{{_NORMALIZER.get(kind, 'norm_name')}}}(v)),"
            " n, uniq)",
        )
        for kind in FAKE_FUNCTIONS
    ),
    ("hash_text", "v text, n integer", "text", "left(encode({hmac_text}('hash', v), 'hex'), n)"),
    (
        # 63 bits, not 64: a negative id would break applications that route on \d+.
        "hash_bigint",
        "v bigint",
        "bigint",
        "('x' || {hexpart}({hmac_text}('hash', v::text), 0, 8))::bit(64)::bigint"
        " & 9223372036854775807",
    ),
    (
        "hash_uuid",
        "v uuid",
        "uuid",
        "encode(substring({hmac_text}('hash', v::text) FROM 1 FOR 16), 'hex')::uuid",
    ),
    (
        # A value no longer than first + last would be shown whole: mask all of it.
        "mask",
        "v text, f integer, l integer",
        "text",
        "CASE WHEN char_length(v) > f + l"
        " THEN left(v, f) || repeat('*', char_length(v) - f - l) || right(v, l)"
        " ELSE repeat('*', char_length(v)) END",
    ),
    (
        # 56 bits modulo 2d + 1: the bias is below 2^-40 for any d we accept.
        "shift_of",
        "h bytea, d integer",
        "integer",
        "(('x' || {hexpart}(h, 0, 7))::bit(56)::bigint % (2 * d + 1))::integer - d",
    ),
    ("shift_days", "k text, d integer", "integer", "{shift_of}({hmac_text}('row', k), d)"),
    (
        # jsonb_set() with a NULL value returns NULL for the whole document: a masked JSON
        # null must stay a JSON null. create_if_missing false: a key the document does not
        # have stays absent.
        "jset",
        "v jsonb, k text, x jsonb",
        "jsonb",
        "jsonb_set(v, ARRAY[k], coalesce(x, 'null'::jsonb), false)",
    ),
    (
        # A JSON string, like to_jsonb(x), but immutable (to_jsonb is only stable: it
        # serves every type), so that a generated column may call it. NULL gives JSON null.
        "jstr",
        "x text",
        "jsonb",
        "jsonb_object(ARRAY['s', x]) -> 's'",
    ),
)


NATIVE_EXTENSION = "fixproof_native"
# The native bodies of the helpers the extension speeds up: the two that hash (the text
# one hashes the text's bytes directly, without the SQL conversion to bytea) and the hex
# groups of a fake IP, the costliest formatting of all in SQL.
_NATIVE_BODIES = {
    "hmac": "{native}({key}, m)",
    "hmac_text": "{native}({key}, domain || ':' || v)",
    "ip_groups": "{native_groups}(h, 8, 4)",
}

NATIVE_AVAILABLE = sql.SQL(
    "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = {} AND installed_version"
    " IS NULL)"
).format(sql.Literal(NATIVE_EXTENSION))


def functions_sql(*, key: bytes, native: bool = False) -> sql.Composed:
    """CREATE SCHEMA fixproof_mask and its functions, keyed with `key` (>= 16 bytes).

    `native`: the HMAC and the fake IP's hex groups are C functions of the fixproof_native
    extension (built by `make native`), created inside the helper schema and dropped with
    it. Its HMAC is about ten times as fast as two calls of sha256() for short values.
    Same results either way. Ask NATIVE_AVAILABLE first."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the masking key must be at least {MIN_KEY_BYTES} bytes")
    ipad, opad = _hmac_pads(key)
    parts: dict[str, sql.Composable] = {name: _f(name) for name, _, _, _ in _DEFINITIONS}
    parts.update(
        native=sql.Identifier(HELPER_SCHEMA, "fixproof_hmac_sha256"),
        native_groups=sql.Identifier(HELPER_SCHEMA, "fixproof_hex_groups"),
        key=sql.Literal(key),
        opad=sql.Literal(opad),
        ipad=sql.Literal(ipad),
        backslash=sql.Literal("\\"),
        two_backslashes=sql.Literal("\\\\"),
        colon=sql.Literal(b":"),
        first_names=_words(FIRST_NAMES),
        last_names=_words(LAST_NAMES),
        company_stems=_words(COMPANY_STEMS),
        company_kinds=_words(COMPANY_KINDS),
        streets=_words(STREETS),
        cities=_words(TOWNS),
        starters=_words(STARTERS),
        words=_words([*WORDS, *WORDS[:TEXT_RUN]]),
        text_run=sql.Literal(TEXT_RUN),
    )
    statements: list[sql.Composable] = [
        sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(HELPER_SCHEMA))
    ]
    if native:
        statements.append(
            sql.SQL("CREATE EXTENSION {} SCHEMA {}").format(
                sql.Identifier(NATIVE_EXTENSION), sql.Identifier(HELPER_SCHEMA)
            )
        )
    for name, args, result, body in _DEFINITIONS:
        if native:
            body = _NATIVE_BODIES.get(name, body)
        used = {k: v for k, v in parts.items() if "{" + k + "}" in body}
        # A SQL-standard body (RETURN ...) is parsed once, at CREATE time; a single
        # expression of immutable functions is then inlined by the planner at each call.
        statements.append(
            sql.SQL(
                "CREATE FUNCTION {name}("
                + args
                + ") RETURNS "
                + result
                + " LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN "
                + body
            ).format(name=_f(name), **used)
        )
    return sql.SQL(";\n").join(statements)


def _words(words: Iterable[str]) -> sql.Composed:
    return sql.SQL("{}::text[]").format(sql.Literal(list(words)))


# --- per-column expressions ----------------------------------------------------------------

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


class _Loaded:
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


def _fake(
    kind: str,
    value: sql.Composable,
    *,
    length: sql.Composable,
    unique: sql.Composable,
    loaded: _Loaded | None,
) -> sql.Composable:
    if loaded is None:
        return sql.SQL("{}({}, {}, {})").format(_f(FAKE_FUNCTIONS[kind]), value, length, unique)
    # The same text as fake_<kind>(value): mk_<kind> of the digest fake_<kind> computes.
    digest = loaded.add(
        sql.SQL("{}({}, {}({}))").format(
            _f("hmac_text"), sql.Literal(kind), _f(_NORMALIZER.get(kind, "norm_name")), value
        ),
        type_=sql.SQL("bytea"),
    )
    return sql.SQL("{}({}, {}, {})").format(_f(f"mk_{kind}"), digest, length, unique)


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
    """Whether every fake inside computes its HMAC once without help."""
    if isinstance(rule, _JsonTree):
        return all(_json_single_look(sub) for sub in rule.fields.values())
    return rule.kind != "fake" or rule.fake in _SINGLE_LOOK


def _json_value(
    value: sql.Composable,
    text: sql.Composable,
    rule: Strategy | _JsonTree,
    loaded: _Loaded | None,
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
            hashed: sql.Composable = sql.SQL("{}({}, 64)").format(_f("hash_text"), text)
            if loaded is not None:
                hashed = loaded.add(hashed, type_=sql.SQL("text"))
            return sql.SQL("{}({})").format(_f("jstr"), hashed)
        case "mask":
            return sql.SQL("{}({}({}, {}, {}))").format(
                _f("jstr"), _f("mask"), text, sql.Literal(rule.first), sql.Literal(rule.last)
            )
        case "fake":
            fake = _fake(
                rule.fake,
                text,
                length=sql.Literal(UNBOUNDED),
                unique=sql.Literal(False),
                loaded=loaded,
            )
            return sql.SQL("{}({})").format(_f("jstr"), fake)
    raise ValueError(f"{rule.kind} is not supported inside json_mask")


def _json_object(value: sql.Composable, tree: _JsonTree, loaded: _Loaded | None) -> sql.Composable:
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
            _f("jset"), expr, sql.Literal(key), _json_value(inner, text, rule, loaded)
        )
    # One jsonb_typeof per row; a SQL NULL matches no WHEN and stays NULL.
    return sql.SQL(
        "CASE jsonb_typeof({v}) WHEN 'object' THEN {e} WHEN 'null' THEN {v}"
        " ELSE CASE WHEN {v} IS NULL THEN {v} ELSE 'null'::jsonb END END"
    ).format(v=value, e=expr)


def _type(column: ColumnInfo) -> sql.SQL:
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
    *, rule: Strategy, column: ColumnInfo, info: TableInfo, loaded: _Loaded | None = None
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
                c=col, v=sql.Literal(_constant_text(rule.value, column=column)), t=_type(column)
            )
        case "fake":
            expr = _fake(
                rule.fake,
                sql.SQL("{}::text").format(col),
                length=length,
                unique=unique,
                loaded=loaded if _text_is_immutable(column) else None,
            )
            if column.category == "inet":
                return sql.SQL("CAST({} AS {})").format(expr, _type(column))
            return expr
        case "hash":
            if column.base_type == "int8":
                return sql.SQL("{}({}::bigint)").format(_f("hash_bigint"), col)
            if column.base_type == "uuid":
                return sql.SQL("{}({}::uuid)").format(_f("hash_uuid"), col)
            return sql.SQL("{}({}::text, {})").format(
                _f("hash_text"), col, sql.Literal(min(column.max_length or 64, 64))
            )
        case "mask":
            return sql.SQL("{}({}::text, {}, {})").format(
                _f("mask"), col, sql.Literal(rule.first), sql.Literal(rule.last)
            )
        case "date_shift":
            if not info.primary_key:
                raise ValueError(f"{info.qualified} has no primary key for date_shift")
            days: sql.Composable = sql.SQL("{}({}, {})").format(
                _f("shift_days"), _row_key(info=info), sql.Literal(rule.days)
            )
            if loaded is not None and _row_key_is_immutable(info):
                # One digest of the row for all its shifted columns.
                digest = loaded.add(
                    sql.SQL("{}('row', {})").format(_f("hmac_text"), _row_key(info=info)),
                    type_=sql.SQL("bytea"),
                )
                days = sql.SQL("{}({}, {})").format(_f("shift_of"), digest, sql.Literal(rule.days))
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


def _whole_is_immutable(rule: Strategy, column: ColumnInfo) -> bool:
    """Whether the whole masked value can be a generated column: an immutable expression
    that computes each HMAC once. (A date_shift loads the row's digest instead, one for
    all the shifted columns of the row; null and constant cost nothing.)"""
    match rule.kind:
        case "fake":
            return rule.fake in _SINGLE_LOOK and _text_is_immutable(column)
        case "hash" | "mask":
            return _text_is_immutable(column)
        case "json_drop" | "json_mask":
            return _json_single_look(_json_tree(rule))
    return False


_STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}
_COMPRESSION = {"p": "pglz", "l": "lz4"}


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
        if rule is None or rule.kind == "keep":
            continue
        clause = sql.SQL("ALTER COLUMN {c} TYPE {t}").format(
            c=sql.Identifier(column.name), t=_type(column)
        )
        # ALTER ... TYPE resets collation, storage and compression to the type's
        # defaults: set back what the restored table had.
        if column.collation:
            clause += sql.SQL(" COLLATE {}").format(sql.Identifier(*column.collation))
        clause += sql.SQL(" USING {}").format(using(rule, column))
        clauses.append(clause)
        if column.storage in _STORAGE:
            clauses.append(
                sql.SQL("ALTER COLUMN {} SET STORAGE " + _STORAGE[column.storage]).format(
                    sql.Identifier(column.name)
                )
            )
        if column.compression in _COMPRESSION:
            clauses.append(
                sql.SQL("ALTER COLUMN {} SET COMPRESSION {}").format(
                    sql.Identifier(column.name),
                    sql.Identifier(_COMPRESSION[column.compression]),
                )
            )
    return clauses


def _alter(info: TableInfo, clauses: list[sql.Composable]) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} ").format(info.identifier) + sql.SQL(",\n  ").join(clauses)


def table_masking_sql(*, table: TablePolicy, info: TableInfo) -> sql.Composed | None:
    """One ALTER TABLE rewriting every masked column of the table (None: nothing to mask).

    A USING clause that is not the column itself makes PostgreSQL write the table into
    a new relfilenode from the old tuples: no dead tuples, one pass over the data, and
    every USING expression sees the row's original values (so date_shift can read a
    primary key that is itself being hashed).
    """
    clauses = _rewrite_clauses(
        table=table,
        info=info,
        using=lambda rule, column: column_expression(rule=rule, column=column, info=info),
    )
    return _alter(info, clauses) if clauses else None


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
    loaded = _Loaded(taken=[column.name for column in info.columns])

    def using(rule: Strategy, column: ColumnInfo) -> sql.Composable:
        if _whole_is_immutable(rule, column):
            expression = column_expression(rule=rule, column=column, info=info)
            return loaded.add(expression, type_=_type(column))
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
        prepare=_alter(info, [sql.SQL("SET UNLOGGED"), *adds]), rewrite=_alter(info, clauses)
    )


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
    return rule.kind in ("null", "constant") or _whole_is_immutable(rule, column)


def _column_settings(name: sql.Identifier, column: RestoredColumn) -> list[sql.Composable]:
    settings: list[sql.Composable] = []
    if column.storage in _STORAGE:
        settings.append(
            sql.SQL("ALTER COLUMN {} SET STORAGE " + _STORAGE[column.storage]).format(name)
        )
    if column.compression in _COMPRESSION:
        settings.append(
            sql.SQL("ALTER COLUMN {} SET COMPRESSION {}").format(
                name, sql.Identifier(_COMPRESSION[column.compression])
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
    for name, rule in masked.items():
        source = info.column(name)
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
        definition = sql.SQL(column.type)
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
            target = twin
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
    prepare = [_alter(info, drops)] if drops else []
    prepare.append(_alter(info, adds))
    if settings:
        prepare.append(_alter(info, settings))
    prepare += comments
    # The expressions go first: a generated column depends on the column it reads, and
    # dropping that one would drop the twin with it.
    finish = [_alter(info, expressions_dropped), _alter(info, raws_dropped), *renames]
    if defaults:
        finish.append(_alter(info, defaults))
    return TwinMasking(prepare=prepare, finish=finish)


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
    for rules, info in present:
        statement = table_masking_sql(table=rules, info=info)
        if statement is not None:
            plan.append(statement)
    return plan
