-- Created in Fixproof's helper schema of a scratch copy, dropped with it before dumping.
CREATE FUNCTION fixproof_hmac_sha256(key bytea, message bytea) RETURNS bytea
AS 'MODULE_PATHNAME', 'fixproof_hmac_sha256'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- The same over a text's bytes in the server encoding (what the SQL helpers hash).
CREATE FUNCTION fixproof_hmac_sha256(key bytea, message text) RETURNS bytea
AS 'MODULE_PATHNAME', 'fixproof_hmac_sha256'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Pairs of bytes as hex groups separated by colons (the fake IPs' last groups).
CREATE FUNCTION fixproof_hex_groups(h bytea, start integer, groups integer) RETURNS text
AS 'MODULE_PATHNAME', 'fixproof_hex_groups'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Four bytes from `start` as an IPv4 address in 240.0.0.0/4 (reserved: never a real host).
CREATE FUNCTION fixproof_ip4(h bytea, start integer) RETURNS text
AS 'MODULE_PATHNAME', 'fixproof_ip4'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- The shape-keeping fake of a value (perfruns/masking/functions.py's `shape`), keyed.
CREATE FUNCTION fixproof_shape(key bytea, v text, domain text, keep integer, lead boolean)
RETURNS text
AS 'MODULE_PATHNAME', 'fixproof_shape'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- The fake the map (a table of grp, orig, fake) holds for v in group grp; NULL if none.
-- Reads the group once per transaction (perfruns/masking/functions.py's `mapped`).
CREATE FUNCTION fixproof_mapped(map regclass, grp text, v text) RETURNS text
AS 'MODULE_PATHNAME', 'fixproof_mapped'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
