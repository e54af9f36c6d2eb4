"""The `fixproof_mask` helper functions the masking SQL calls, and their dictionaries.

`functions_sql(key=...)` creates them, keyed (`native=True`: with the C functions of the
fixproof_native extension, same values); `DROP_FUNCTIONS` removes them, and the derived
key in their bodies, before the masked copy is dumped.

Every masking function is an IMMUTABLE SQL-language function with a single-expression
body, so that the planner can inline it into the ALTER's expression instead of calling
a function per row. PostgreSQL has no common-subexpression elimination: once inlined,
every use of the HMAC digest computes it again, so each fake looks into it two to
four times only (a word run instead of ten word picks, a postcode tied to its town).
Same input, same output, in every table: joins survive masking.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from psycopg import sql

from perfruns.masking.schema import HELPER_SCHEMA

DROP_FUNCTIONS = sql.SQL("DROP SCHEMA IF EXISTS fixproof_mask CASCADE")

MIN_KEY_BYTES = 16
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
NORMALIZER = {
    "email": "norm_email",
    "phone": "norm_phone",
    "ip": "norm_ip",
}
# The fakes whose mk_<kind> looks into its digest once: inlined into fake_<kind>, the
# HMAC is computed once per value. The others look two to five times.
SINGLE_LOOK = frozenset({"ip"})


def helper(name: str) -> sql.Identifier:
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
            f"{{mk_{kind}}}({{hmac_text}}('{kind}', {{{NORMALIZER.get(kind, 'norm_name')}}}(v)),"
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
    parts: dict[str, sql.Composable] = {name: helper(name) for name, _, _, _ in _DEFINITIONS}
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
            ).format(name=helper(name), **used)
        )
    return sql.SQL(";\n").join(statements)


def _words(words: Iterable[str]) -> sql.Composed:
    return sql.SQL("{}::text[]").format(sql.Literal(list(words)))
