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

from perfruns.masking.policy import SHAPE_FAKES
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
COMPANY_KINDS = (
    "Analytics Bakery Builders Capital Consulting Dynamics Energy Foods Freight Group "
    "Health Holdings Industries Insurance Labs Logistics Media Motors Networks Partners "
    "Pharma Retail Robotics Security Software Studio Systems Textiles Travel Ventures"
).split()
STREET_KINDS = "Avenue Boulevard Close Court Drive Lane Place Road Square Street Way".split()
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
# The map's candidates are built from syllables and endings: far more of them than of any
# dictionary (a column of 100,000 distinct surnames needs 100,000 fakes), rarely a real name.
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + [
    c + v for c in ("ch", "sh", "th", "br", "dr", "tr", "gr") for v in "aeio"
]
FIRST_ENDINGS = "- a o e ia io el en in on is us ine ette ana ena ina ora ric ard".split()
LAST_ENDINGS = (
    "- n r s l son sen ez ov ova ini elli er ton ley ard ic os mann berg wood court ski ier "
    "ot as ero ak and"
).split()
CITY_ENDINGS = (
    "ville bourg ton stad heim ford burg mont court dale ica ano era haven field bridge port ham"
).split()
STREET_ENDINGS = "- n r s ley wood field brook".split()

# The digest fakes: fake_<kind>(value, length, unique).
FAKE_FUNCTIONS = {
    "email": "fake_email",
    "text": "fake_text",
    "ip": "fake_ip",
}
# What each fake normalizes before hashing, so that ' Alice@Example.COM ' and
# 'alice@example.com' give the same fake (and the same join key) everywhere.
NORMALIZER = {
    "email": "norm_email",
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
    ("norm_ip", "v text", "text", "lower(btrim(v))"),
    (
        "mk_email",
        _MK,
        "text",
        "rtrim(left(lower({first_name_of}(h, 0) || '.' || {last_name_of}(h, 2)),"
        " greatest(n - 33, 1)), '.') || '.' || {hexpart}(h, 8, 8) || '@example.invalid'",
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
    # An IPv4 address (a cidr prints its /n) keeps its family: an IPv4 fake, in 240.0.0.0/4
    # (reserved, never a host), fits a varchar(15) or a CHECK (family(ip) = 4). 2^28 fakes
    # only: a unique column keeps the IPv6 fake, whose 2^64 keep distinct values distinct.
    # An IPv6 address always holds a colon, an IPv4 one never (strpos: a regex costs more).
    ("is_ip4", "v text", "boolean", "strpos(v, ':') = 0"),
    (
        # Bytes 8-11 as 240.0.0.0 plus their low 28 bits: h is read once, so the planner
        # inlines it (a parameter read four times, with an HMAC for argument, is not).
        "ip4_of",
        "h bytea",
        "text",
        "host('240.0.0.0'::inet + (('x' || encode(substring(h FROM 9 FOR 4), 'hex'))::bit(32)"
        "::bigint & 268435455))",
    ),
    (
        "mk_ip_of",
        "v text, h bytea, n integer, uniq boolean",
        "text",
        "CASE WHEN {is_ip4}(v) AND NOT uniq THEN {ip4_of}(h) ELSE {mk_ip}(h, n, uniq) END",
    ),
    (
        # A starter word and two runs of consecutive words: three looks into the digest
        # instead of ten, because once inlined every look computes the HMAC again. The
        # sentence is repeated up to n characters: the caller gives the original's length,
        # so that a long text stays long (its size, its TOAST) and a short one short.
        "mk_text",
        _MK,
        "text",
        "{fit}(rtrim(repeat({pick}({starters}, h, 0) || ' ' || array_to_string({run}({words}, h, 2)"
        " || {run}({words}, h, 4), ' ') || '. ', 1 + n / 40)), {unique_suffix}(h, uniq), n)",
    ),
    *(
        (
            FAKE_FUNCTIONS[kind],
            "v text, n integer, uniq boolean",
            "text",
            ("{mk_ip_of}(v, " if kind == "ip" else f"{{mk_{kind}}}(")
            + f"{{hmac_text}}('{kind}', {{{NORMALIZER.get(kind, 'norm_name')}}}(v)), n, uniq)",
        )
        for kind in FAKE_FUNCTIONS
    ),
    *(
        # Shapes: a keyed permutation of the digits and letters (PL/pgSQL, below). A phone
        # keeps its first two digits after a leading + or 0: its country or trunk prefix.
        (
            f"fake_{kind}",
            "v text",
            "text",
            f"{{shape}}(v, '{kind}', "
            + ("CASE WHEN v ~ '^\\s*[+0]' THEN 2 ELSE 0 END" if kind == "phone" else "0")
            + ", false)",
        )
        for kind in SHAPE_FAKES
    ),
    # The map's candidates: a syllable pair and an ending from `endings`, capitalized.
    (
        "syllabic",
        "h bytea, i integer, endings text[]",
        "text",
        "initcap({pick}({syllables}, h, i) || {pick}({syllables}, h, i + 2)"
        " || {pick}(endings, h, i + 4))",
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
        # offset: a keyed amount per row in [-d, d] (integers) or (-d, d) (other numbers).
        "offset_int",
        "k text, d bigint",
        "bigint",
        "('x' || {hexpart}({hmac_text}('offset', k), 0, 7))::bit(56)::bigint % (2 * d + 1) - d",
    ),
    (
        "offset_real",
        "k text, d numeric",
        "numeric",
        "(('x' || {hexpart}({hmac_text}('offset', k), 0, 7))::bit(56)::bigint::numeric"
        " / 72057594037927936 * 2 - 1) * d",
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


ROUNDS = 4  # of the Feistel network of `fpe`: each is one HMAC
SHAPE_BLOCK = 16  # characters permuted together: 26^16 stays far below the round's 2^112
MAP_ATTEMPTS = 12  # candidates tried for a value before a hex suffix makes it distinct

# The map of the mapped fakes: original -> fake per group ("kind:width"), keyed by md5 so
# that a long value fits the index. Unlogged, in the helper schema: dropped with it, never
# dumped, and it holds originals.
_MAP_TABLE = """CREATE UNLOGGED TABLE {map} (grp text NOT NULL, orig text NOT NULL, fake text);
CREATE UNIQUE INDEX ON {map} (grp, md5(orig));
CREATE INDEX ON {map} (grp, md5(lower(orig)))"""

_IMMUTABLE = "LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE"

# (name, arguments, result, attributes, body): PL/pgSQL, for what needs variables or loops.
# Placeholders as in _DEFINITIONS; no literal brace may appear in a body.
_PROCEDURES: tuple[tuple[str, str, str, str, str], ...] = (
    (
        # A keyed permutation of [0, a*b): x = l*b + r, and rounds that add a keyed value of
        # one half to the other, modulo its size (an alternating Feistel network on Z_a x Z_b,
        # which needs no balanced halves). `inverse` undoes it.
        "fpe",
        "x numeric, a numeric, b numeric, tweak text, inverse boolean",
        "numeric",
        _IMMUTABLE,
        """
DECLARE
  l numeric := div(x, b);
  r numeric := mod(x, b);
  h bytea;
  f numeric;
  i integer;
BEGIN
  FOR k IN 0..{rounds} - 1 LOOP
    i := CASE WHEN inverse THEN {rounds} - 1 - k ELSE k END;
    h := {hmac_text}('fpe', tweak || ':' || i || ':'
                     || (CASE WHEN i % 2 = 0 THEN r ELSE l END)::text);
    f := ('x' || encode(substring(h FROM 1 FOR 7), 'hex'))::bit(56)::bigint::numeric
         * 72057594037927936
         + ('x' || encode(substring(h FROM 8 FOR 7), 'hex'))::bit(56)::bigint;
    IF i % 2 = 0 THEN
      l := CASE WHEN inverse THEN mod(mod(l - f, a) + a, a) ELSE mod(l + f, a) END;
    ELSE
      r := CASE WHEN inverse THEN mod(mod(r - f, b) + b, b) ELSE mod(r + f, b) END;
    END IF;
  END LOOP;
  RETURN l * b + r;
END
""",
    ),
    (
        # One cycle through all of [0, a*b): the permutation's conjugate of x -> x + 1. A
        # bijection (distinct values stay distinct) with no fixed point (nothing kept).
        "fpe_cycle",
        "x numeric, a numeric, b numeric, tweak text",
        "numeric",
        _IMMUTABLE,
        """
BEGIN
  IF a * b <= 1 THEN
    RETURN x;
  END IF;
  RETURN {fpe}(mod({fpe}(x, a, b, tweak, true) + 1, a * b), a, b, tweak, false);
END
""",
    ),
    (
        # The value with each ASCII digit and letter replaced, the same class in the same
        # place (a digit, an upper or a lower case letter), everything else kept; the
        # first `keep` of them kept too. `lead`: a number's leading digit stays non-zero
        # and a leading zero stays (numeric hash). The characters are permuted by blocks,
        # each through fpe, tweaked by the value's shape: a bijection on values of
        # one shape, and same digits give same digits whatever the separators.
        "shape",
        "v text, domain text, keep integer, lead boolean",
        "text",
        _IMMUTABLE,
        """
DECLARE
  chars text[];
  pos integer[] := ARRAY[]::integer[];
  rad integer[] := ARRAY[]::integer[];
  val integer[] := ARRAY[]::integer[];
  sig text := '';
  code integer;
  seen integer := 0;
  n integer;
  first integer := 1;
  last integer;
  half integer;
  block integer := 0;
  x numeric;
  a numeric;
  b numeric;
BEGIN
  IF v IS NULL OR v = '' THEN
    RETURN v;
  END IF;
  chars := string_to_array(v, NULL);
  FOR i IN 1..cardinality(chars) LOOP
    code := ascii(chars[i]);
    CONTINUE WHEN NOT (code BETWEEN 48 AND 57 OR code BETWEEN 65 AND 90
                       OR code BETWEEN 97 AND 122);
    seen := seen + 1;
    CONTINUE WHEN seen <= keep;
    IF code <= 57 AND lead AND cardinality(pos) = 0 THEN
      CONTINUE WHEN code = 48;
      pos := pos || i; rad := rad || 9; val := val || (code - 49); sig := sig || 'N';
    ELSIF code <= 57 THEN
      pos := pos || i; rad := rad || 10; val := val || (code - 48); sig := sig || 'D';
    ELSIF code <= 90 THEN
      pos := pos || i; rad := rad || 26; val := val || (code - 65); sig := sig || 'U';
    ELSE
      pos := pos || i; rad := rad || 26; val := val || (code - 97); sig := sig || 'L';
    END IF;
  END LOOP;
  n := cardinality(pos);
  IF n = 0 THEN
    RETURN v;
  END IF;
  WHILE first <= n LOOP
    last := least(first + {block} - 1, n);
    half := (last - first + 1) / 2;
    x := 0; a := 1; b := 1;
    FOR j IN first..last LOOP
      x := x * rad[j] + val[j];
      IF j < first + half THEN a := a * rad[j]; ELSE b := b * rad[j]; END IF;
    END LOOP;
    x := {fpe}(x, a, b, domain || ':' || sig || ':' || keep || ':' || block, false);
    FOR j IN REVERSE last..first LOOP
      val[j] := mod(x, rad[j])::integer;
      x := div(x, rad[j]);
    END LOOP;
    block := block + 1;
    first := last + 1;
  END LOOP;
  FOR j IN 1..n LOOP
    chars[pos[j]] := chr(val[j] + CASE
      WHEN rad[j] = 9 THEN 49 WHEN rad[j] = 10 THEN 48
      WHEN ascii(chars[pos[j]]) <= 90 THEN 65 ELSE 97 END);
  END LOOP;
  RETURN array_to_string(chars, '');
END
""",
    ),
    (
        # An integer of `bits` bits (15: int2, 31: int4) to another of the same range and
        # sign: keys stay distinct, joins keep matching, nothing overflows.
        "hash_int",
        "v bigint, bits integer",
        "bigint",
        _IMMUTABLE,
        """
DECLARE
  a numeric := (1::bigint << (bits / 2))::numeric;
  b numeric := (1::bigint << (bits - bits / 2))::numeric;
BEGIN
  IF v IS NULL THEN
    RETURN NULL;
  ELSIF v >= 0 THEN
    RETURN {fpe_cycle}(v, a, b, 'int:' || bits)::bigint;
  END IF;
  RETURN -{fpe_cycle}(-(v + 1), a, b, 'int:' || bits)::bigint - 1;
END
""",
    ),
    (
        # A candidate fake of a mapped kind from a digest (h once: a variable).
        "mk_mapped",
        "kind text, h bytea",
        "text",
        _IMMUTABLE,
        """
BEGIN
  RETURN CASE kind
    WHEN 'first_name' THEN {syllabic}(h, 0, {first_endings})
    WHEN 'last_name' THEN {syllabic}(h, 6, {last_endings})
    WHEN 'name' THEN {syllabic}(h, 0, {first_endings}) || ' ' || {syllabic}(h, 6, {last_endings})
    WHEN 'city' THEN {syllabic}(h, 0, {city_endings})
    WHEN 'company' THEN {syllabic}(h, 0, {last_endings}) || ' ' || {pick}({company_kinds}, h, 6)
    WHEN 'address' THEN (1 + {u16}(h, 12) % 250)::text || ' '
      || {syllabic}(h, 0, {street_endings}) || ' ' || {pick}({street_kinds}, h, 6)
  END;
END
""",
    ),
    (
        # Give every original of group g a fake of its own that is no original of g
        # (case aside), at most n characters, in the original's case when it is all upper
        # or all lower case. Conflicts are settled by the HMAC order of the originals, so
        # the same originals give the same map.
        "build_map",
        "g text, kind text, n integer",
        "void",
        "LANGUAGE plpgsql",
        """
DECLARE
  changed bigint;
  attempt integer := 0;
BEGIN
  UPDATE {map} SET fake = CASE WHEN btrim(orig) = '' THEN orig
    ELSE left({mk_mapped}(kind, {hmac_text}(kind || ':0', orig)), n) END
  WHERE grp = g;
  LOOP
    attempt := attempt + 1;
    WITH ranked AS (
      SELECT m.orig,
             row_number() OVER (PARTITION BY lower(m.fake)
                                ORDER BY {hmac_text}('order', m.orig)) AS rank,
             EXISTS (SELECT 1 FROM {map} o
                     WHERE o.grp = g AND md5(lower(o.orig)) = md5(lower(m.fake))
                       AND lower(o.orig) = lower(m.fake)) AS original
      FROM {map} m
      WHERE m.grp = g AND btrim(m.orig) <> ''
    )
    UPDATE {map} m
    SET fake = CASE
      WHEN attempt <= {attempts}
        THEN left({mk_mapped}(kind, {hmac_text}(kind || ':' || attempt, m.orig)), n)
      WHEN n >= 14
        THEN {fit}({mk_mapped}(kind, {hmac_text}(kind || ':' || attempt, m.orig)),
                   ' ' || {hexpart}({hmac_text}('map:' || attempt, m.orig), 0, 6), n)
      ELSE left({hexpart}({hmac_text}('map:' || attempt, m.orig), 0, 8), n) END
    FROM ranked r
    WHERE m.grp = g AND m.orig = r.orig AND (r.rank > 1 OR r.original);
    GET DIAGNOSTICS changed = ROW_COUNT;
    EXIT WHEN changed = 0;
    IF attempt >= {attempts} + 8 THEN
      RAISE EXCEPTION 'no distinct fake found for every value of % (% characters)', kind, n;
    END IF;
  END LOOP;
  UPDATE {map} SET fake = CASE
    WHEN orig = upper(orig) AND orig <> lower(orig) THEN upper(fake)
    WHEN orig = lower(orig) AND orig <> upper(orig) THEN lower(fake)
    ELSE fake END
  WHERE grp = g;
END
""",
    ),
    (
        # A text rule applied to every element of an array (one dimension: a
        # multidimensional array comes out flat), blank elements kept as they are.
        "each",
        "v text[], how text, arg text",
        "text[]",
        "LANGUAGE plpgsql STABLE PARALLEL SAFE",
        r"""
DECLARE
  masked text[];
BEGIN
  IF v IS NULL THEN
    RETURN NULL;
  END IF;
  SELECT array_agg(CASE
    WHEN x IS NULL OR btrim(x) = '' THEN x
    WHEN how = 'hash' THEN {hash_text}(x, arg::integer)
    WHEN how = 'mask' THEN {mask}(x, split_part(arg, ':', 1)::integer,
                                  split_part(arg, ':', 2)::integer)
    WHEN how = 'mapped' THEN {mapped}(arg, x)
    WHEN how = 'shape' THEN {shape}(x, arg,
      CASE WHEN arg = 'phone' AND x ~ '^\s*[+0]' THEN 2 ELSE 0 END, false)
    WHEN arg = 'email' THEN {fake_email}(x, 254, false)
    WHEN arg = 'ip' THEN {fake_ip}(x, 64, false)
    ELSE {fake_text}(x, char_length(x), false) END ORDER BY i)
  INTO masked
  FROM unnest(v) WITH ORDINALITY AS u(x, i);
  RETURN coalesce(masked, v);
END
""",
    ),
    (
        "mapped",
        "g text, v text",
        "text",
        "LANGUAGE sql STABLE PARALLEL SAFE",
        """
SELECT fake FROM {map} WHERE grp = g AND md5(orig) = md5(v) AND orig = v
""",
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
    "ip4_of": "{native_ip4}(h, 8)",
    # The PL/pgSQL `shape` spends about 11 µs a value in its loops; the C one, value for
    # value the same, a fraction of that (bench/restore_anonymize.py masks phones with it).
    "shape": "{native_shape}({key}, v, domain, keep, lead)",
    # The SQL `mapped` queries the map once a value (about 10 µs); the C one reads a group
    # once per transaction and searches it, which takes a table's rewrite with two name
    # columns from seconds to a small fraction of that (bench/restore_anonymize.py).
    "mapped": "{native_mapped}({map_table}::regclass, g, v)",
}
# Native bodies that read a table: STABLE, never IMMUTABLE (nor folded at plan time).
_NATIVE_STABLE = frozenset({"mapped"})

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
    parts: dict[str, sql.Composable] = {
        name: helper(name) for name, *_ in (*_DEFINITIONS, *_PROCEDURES)
    }
    parts.update(
        native=sql.Identifier(HELPER_SCHEMA, "fixproof_hmac_sha256"),
        native_groups=sql.Identifier(HELPER_SCHEMA, "fixproof_hex_groups"),
        native_shape=sql.Identifier(HELPER_SCHEMA, "fixproof_shape"),
        native_mapped=sql.Identifier(HELPER_SCHEMA, "fixproof_mapped"),
        native_ip4=sql.Identifier(HELPER_SCHEMA, "fixproof_ip4"),
        map_table=sql.Literal(f"{HELPER_SCHEMA}.map"),
        key=sql.Literal(key),
        opad=sql.Literal(opad),
        ipad=sql.Literal(ipad),
        backslash=sql.Literal("\\"),
        two_backslashes=sql.Literal("\\\\"),
        colon=sql.Literal(b":"),
        first_names=_words(FIRST_NAMES),
        last_names=_words(LAST_NAMES),
        company_kinds=_words(COMPANY_KINDS),
        street_kinds=_words(STREET_KINDS),
        syllables=_words(SYLLABLES),
        first_endings=_words(FIRST_ENDINGS),
        last_endings=_words(LAST_ENDINGS),
        city_endings=_words(CITY_ENDINGS),
        street_endings=_words(STREET_ENDINGS),
        map=helper("map"),
        rounds=sql.Literal(ROUNDS),
        block=sql.Literal(SHAPE_BLOCK),
        attempts=sql.Literal(MAP_ATTEMPTS),
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
    statements.append(sql.SQL(_MAP_TABLE).format(map=helper("map")))
    # PL/pgSQL bodies are resolved when called: these go first, since the SQL bodies below,
    # parsed at CREATE time, call some of them. A SQL-standard body (RETURN ...) is parsed
    # once, at CREATE time; a single expression of immutable functions is then inlined by
    # the planner at each call.
    definitions = [
        (name, args, result, f"{attributes} AS $fixproof${body}$fixproof$")
        if not (native and name in _NATIVE_BODIES)
        else (
            name,
            args,
            result,
            f"LANGUAGE sql {'STABLE' if name in _NATIVE_STABLE else 'IMMUTABLE'} PARALLEL SAFE"
            " RETURN " + _NATIVE_BODIES[name],
        )
        for name, args, result, attributes, body in _PROCEDURES
    ] + [
        (name, args, result, "LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN " + body)
        for name, args, result, body in (
            (n, a, r, _NATIVE_BODIES.get(n, b) if native else b) for n, a, r, b in _DEFINITIONS
        )
    ]
    for name, args, result, rest in definitions:
        used = {k: v for k, v in parts.items() if "{" + k + "}" in rest}
        statements.append(
            sql.SQL("CREATE FUNCTION {name}(" + args + ") RETURNS " + result + " " + rest).format(
                name=helper(name), **used
            )
        )
    return sql.SQL(";\n").join(statements)


def _words(words: Iterable[str]) -> sql.Composed:
    # "-" stands for the empty ending in the lists above.
    return sql.SQL("{}::text[]").format(sql.Literal(["" if w == "-" else w for w in words]))
