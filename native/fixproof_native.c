/*
 * fixproof_native: the two costliest helpers of the masking of a scratch copy in C.
 * HMAC-SHA256 without the per-call cost of PostgreSQL's sha256() (which sets up an
 * OpenSSL digest from scratch at every call: most of its time for short values), and
 * the hex groups of a fake IP (three bytea overlays in SQL).
 *
 *   fixproof_hmac_sha256(key bytea, message bytea) RETURNS bytea  -- RFC 2104
 *   fixproof_hmac_sha256(key bytea, message text) RETURNS bytea   -- its bytes
 *   fixproof_hex_groups(h bytea, start int, groups int) RETURNS text
 *       -- "8f3a:0c1d:...": `groups` pairs of bytes from byte `start`, as the fake IPs show
 *   fixproof_ip4(h bytea, start int) RETURNS text
 *       -- "247.12.0.201": the fake IPv4 address of bytes `start` to `start` + 3, in 240/4
 *   fixproof_shape(key bytea, v text, domain text, keep int, lead bool) RETURNS text
 *       -- the shape-keeping fake (phones, postcodes, codes), as the SQL helper `shape`
 *   fixproof_mapped(map regclass, grp text, v text) RETURNS text
 *       -- the fake the map holds for v in its group, as the SQL helper `mapped`
 *
 * The key's inner and outer digest states are computed once per query (cached in
 * fn_extra while the key stays the same); each call copies them, hashes the message and
 * finishes. The SQL-only helpers of perfruns/masking/sql.py compute the same values and
 * are used where this extension is not installed (tests/test_masking_sql.py compares).
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

PG_MODULE_MAGIC;

#define BLOCK 64
#define DIGEST 32

typedef struct HmacState
{
	int			key_len;
	unsigned char key[BLOCK * 4];	/* longer keys are not cached */
	EVP_MD_CTX *inner;
	EVP_MD_CTX *outer;
	EVP_MD_CTX *work;
} HmacState;

static EVP_MD *sha256_md = NULL;
static const char hex_digits[] = "0123456789abcdef";

static void
release_state(void *arg)
{
	HmacState  *state = (HmacState *) arg;

	EVP_MD_CTX_free(state->inner);
	EVP_MD_CTX_free(state->outer);
	EVP_MD_CTX_free(state->work);
}

static void
check(int ok, const char *what)
{
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("fixproof_hmac_sha256: %s failed", what)));
}

static void
prepare(HmacState *state, const unsigned char *key, int key_len)
{
	unsigned char block[BLOCK];
	unsigned char pad[BLOCK];
	unsigned int len;
	int			i;

	memset(block, 0, BLOCK);
	if (key_len > BLOCK)
	{
		check(EVP_DigestInit_ex(state->work, sha256_md, NULL), "digest init");
		check(EVP_DigestUpdate(state->work, key, key_len), "digest update");
		check(EVP_DigestFinal_ex(state->work, block, &len), "digest final");
	}
	else
		memcpy(block, key, key_len);
	for (i = 0; i < BLOCK; i++)
		pad[i] = block[i] ^ 0x36;
	check(EVP_DigestInit_ex(state->inner, sha256_md, NULL), "digest init");
	check(EVP_DigestUpdate(state->inner, pad, BLOCK), "digest update");
	for (i = 0; i < BLOCK; i++)
		pad[i] = block[i] ^ 0x5c;
	check(EVP_DigestInit_ex(state->outer, sha256_md, NULL), "digest init");
	check(EVP_DigestUpdate(state->outer, pad, BLOCK), "digest update");
	explicit_bzero(block, BLOCK);
	explicit_bzero(pad, BLOCK);
}

/* The digest states of `key` for this call site: made once per query, kept in fn_extra. */
static HmacState *
keyed_state(FunctionCallInfo fcinfo, bytea *key)
{
	int			key_len = VARSIZE_ANY_EXHDR(key);
	HmacState  *state = (HmacState *) fcinfo->flinfo->fn_extra;

	if (sha256_md == NULL)
	{
		sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
		check(sha256_md != NULL, "fetching SHA256");
	}
	if (state == NULL)
	{
		MemoryContextCallback *callback;

		state = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(HmacState));
		state->key_len = -1;
		state->inner = EVP_MD_CTX_new();
		state->outer = EVP_MD_CTX_new();
		state->work = EVP_MD_CTX_new();
		callback = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(*callback));
		callback->func = release_state;
		callback->arg = state;
		MemoryContextRegisterResetCallback(fcinfo->flinfo->fn_mcxt, callback);
		check(state->inner && state->outer && state->work, "allocating a digest");
		fcinfo->flinfo->fn_extra = state;
	}
	if (state->key_len != key_len || key_len > (int) sizeof(state->key) ||
		memcmp(state->key, VARDATA_ANY(key), key_len) != 0)
	{
		prepare(state, (unsigned char *) VARDATA_ANY(key), key_len);
		if (key_len <= (int) sizeof(state->key))
		{
			memcpy(state->key, VARDATA_ANY(key), key_len);
			state->key_len = key_len;
		}
		else
			state->key_len = -1;
	}
	return state;
}

/* HMAC-SHA256 of `message` with the state's key, into `out` (DIGEST bytes). */
static void
keyed_digest(HmacState *state, const char *message, int len, unsigned char *out)
{
	unsigned char inner[DIGEST];
	unsigned int out_len;

	check(EVP_MD_CTX_copy_ex(state->work, state->inner), "digest copy");
	check(EVP_DigestUpdate(state->work, message, len), "digest update");
	check(EVP_DigestFinal_ex(state->work, inner, &out_len), "digest final");
	check(EVP_MD_CTX_copy_ex(state->work, state->outer), "digest copy");
	check(EVP_DigestUpdate(state->work, inner, DIGEST), "digest update");
	check(EVP_DigestFinal_ex(state->work, out, &out_len), "digest final");
}

PG_FUNCTION_INFO_V1(fixproof_hmac_sha256);

Datum
fixproof_hmac_sha256(PG_FUNCTION_ARGS)
{
	bytea	   *key = PG_GETARG_BYTEA_PP(0);
	bytea	   *message = PG_GETARG_BYTEA_PP(1);	/* bytea or text */
	HmacState  *state = keyed_state(fcinfo, key);
	bytea	   *result = palloc(VARHDRSZ + DIGEST);

	keyed_digest(state, VARDATA_ANY(message), VARSIZE_ANY_EXHDR(message),
				 (unsigned char *) VARDATA(result));
	SET_VARSIZE(result, VARHDRSZ + DIGEST);
	PG_RETURN_BYTEA_P(result);
}

PG_FUNCTION_INFO_V1(fixproof_ip4);

Datum
fixproof_ip4(PG_FUNCTION_ARGS)
{
	bytea	   *h = PG_GETARG_BYTEA_PP(0);
	int32		start = PG_GETARG_INT32(1);
	const unsigned char *bytes = (const unsigned char *) VARDATA_ANY(h);
	char		out[16];

	if (start < 0 || start + 4 > VARSIZE_ANY_EXHDR(h))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("fixproof_ip4: bytes %d to %d are out of the digest", start, start + 3)));
	snprintf(out, sizeof(out), "%d.%d.%d.%d", 240 + bytes[start] % 16, bytes[start + 1],
			 bytes[start + 2], bytes[start + 3]);
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

PG_FUNCTION_INFO_V1(fixproof_hex_groups);

Datum
fixproof_hex_groups(PG_FUNCTION_ARGS)
{
	bytea	   *h = PG_GETARG_BYTEA_PP(0);
	int32		start = PG_GETARG_INT32(1);
	int32		groups = PG_GETARG_INT32(2);
	const unsigned char *bytes = (const unsigned char *) VARDATA_ANY(h);
	text	   *result;
	char	   *out;
	int			i;

	if (start < 0 || groups < 1 || groups > 64 ||
		start + 2 * groups > VARSIZE_ANY_EXHDR(h))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("fixproof_hex_groups: bytes %d to %d are out of range",
						start, start + 2 * groups - 1)));
	result = palloc(VARHDRSZ + 5 * groups - 1);
	out = VARDATA(result);
	for (i = 0; i < 2 * groups; i++)
	{
		if (i > 0 && i % 2 == 0)
			*out++ = ':';
		*out++ = hex_digits[bytes[start + i] >> 4];
		*out++ = hex_digits[bytes[start + i] & 0x0f];
	}
	SET_VARSIZE(result, VARHDRSZ + 5 * groups - 1);
	PG_RETURN_TEXT_P(result);
}

/*
 * fixproof_shape(key, v, domain, keep, lead): the SQL helper `shape` of
 * perfruns/masking/functions.py, value for value. Each ASCII digit and letter is replaced
 * by one of its class (the first `keep` of them kept; with `lead`, leading zeros kept and
 * the first other digit non-zero), the others kept; the classes' values are permuted by
 * blocks of SHAPE_BLOCK through the keyed Feistel network `fpe` (ROUNDS rounds, each an
 * HMAC of "fpe:<tweak>:<round>:<half>"), tweaked by the value's shape. A block's value is
 * below 26^16, so 128-bit integers hold it; its halves stay below 26^8.
 */
#define SHAPE_BLOCK 16
#define ROUNDS 4

typedef unsigned __int128 u128;

static uint64
digest_mod(const unsigned char *h, uint64 modulus)
{
	/* The first 14 bytes as two 56-bit numbers, the first times 2^56, modulo `modulus`. */
	u128		high = 0;
	u128		low = 0;
	int			i;

	for (i = 0; i < 7; i++)
		high = (high << 8) | h[i];
	for (i = 7; i < 14; i++)
		low = (low << 8) | h[i];
	return (uint64) (((high << 56) + low) % modulus);
}

PG_FUNCTION_INFO_V1(fixproof_shape);

Datum
fixproof_shape(PG_FUNCTION_ARGS)
{
	bytea	   *key = PG_GETARG_BYTEA_PP(0);
	text	   *value = PG_GETARG_TEXT_PP(1);
	text	   *domain_text = PG_GETARG_TEXT_PP(2);
	int32		keep = PG_GETARG_INT32(3);
	bool		lead = PG_GETARG_BOOL(4);
	int			len = VARSIZE_ANY_EXHDR(value);
	const char *in = VARDATA_ANY(value);
	char	   *domain = text_to_cstring(domain_text);
	text	   *result;
	char	   *out;
	int		   *pos;
	int		   *rad;
	int		   *val;
	char	   *sig;
	int			n = 0;
	int			seen = 0;
	int			first;
	int			block = 0;
	HmacState  *state;
	StringInfoData message;

	if (len <= 0)
		PG_RETURN_TEXT_P(value);
	pos = palloc(sizeof(int) * len);
	rad = palloc(sizeof(int) * len);
	val = palloc(sizeof(int) * len);
	sig = palloc(len + 1);
	/* Bytes: in UTF-8 (and any server encoding) an ASCII byte is an ASCII character. */
	for (int i = 0; i < len; i++)
	{
		unsigned char code = (unsigned char) in[i];

		if (!((code >= '0' && code <= '9') || (code >= 'A' && code <= 'Z') ||
			  (code >= 'a' && code <= 'z')))
			continue;
		seen++;
		if (seen <= keep)
			continue;
		if (code <= '9' && lead && n == 0)
		{
			if (code == '0')
				continue;
			rad[n] = 9, val[n] = code - '1', sig[n] = 'N';
		}
		else if (code <= '9')
			rad[n] = 10, val[n] = code - '0', sig[n] = 'D';
		else if (code <= 'Z')
			rad[n] = 26, val[n] = code - 'A', sig[n] = 'U';
		else
			rad[n] = 26, val[n] = code - 'a', sig[n] = 'L';
		pos[n++] = i;
	}
	sig[n] = '\0';
	result = (text *) palloc(VARHDRSZ + len);
	SET_VARSIZE(result, VARHDRSZ + len);
	out = VARDATA(result);
	memcpy(out, in, len);
	if (n == 0)
		PG_RETURN_TEXT_P(result);
	state = keyed_state(fcinfo, key);
	initStringInfo(&message);
	for (first = 0; first < n; first += SHAPE_BLOCK, block++)
	{
		int			last = Min(first + SHAPE_BLOCK, n) - 1;
		int			half = (last - first + 1) / 2;
		u128		x = 0;
		uint64		a = 1;
		uint64		b = 1;
		uint64		l;
		uint64		r;

		for (int j = first; j <= last; j++)
		{
			x = x * rad[j] + val[j];
			if (j < first + half)
				a *= rad[j];
			else
				b *= rad[j];
		}
		l = (uint64) (x / b);
		r = (uint64) (x % b);
		for (int i = 0; i < ROUNDS; i++)
		{
			unsigned char h[DIGEST];

			resetStringInfo(&message);
			appendStringInfo(&message, "fpe:%s:%s:%d:%d:%d:" UINT64_FORMAT,
							 domain, sig, keep, block, i, i % 2 == 0 ? r : l);
			keyed_digest(state, message.data, message.len, h);
			if (i % 2 == 0)
				l = (uint64) (((u128) l + digest_mod(h, a)) % a);
			else
				r = (uint64) (((u128) r + digest_mod(h, b)) % b);
		}
		x = (u128) l * b + r;
		for (int j = last; j >= first; j--)
		{
			val[j] = (int) (x % (u128) rad[j]);
			x /= rad[j];
		}
	}
	for (int j = 0; j < n; j++)
	{
		unsigned char original = (unsigned char) in[pos[j]];
		int			base = rad[j] == 9 ? '1' : rad[j] == 10 ? '0' : original <= 'Z' ? 'A' : 'a';

		out[pos[j]] = (char) (base + val[j]);
	}
	PG_RETURN_TEXT_P(result);
}

/*
 * The map of the mapped fakes, read once per transaction and group.
 *
 * The SQL `mapped` looks each value up with a query of its own: about 10 us a row, most
 * of the rewrite of a table with two name columns. Here a group's (original, fake) pairs
 * are read once, sorted, and each row is a binary search. The pairs live in the
 * transaction's memory and are forgotten when it ends (a callback) or when a command of
 * the same transaction may have changed the map (its command id moved on); the masking
 * builds the map in transactions of its own before any table reads it.
 */
typedef struct MapPair
{
	const char *orig;
	int			orig_len;
	text	   *fake;			/* NULL: the map holds no fake for it */
} MapPair;

typedef struct MapGroup
{
	Oid			relid;
	CommandId	cid;
	char	   *grp;
	int			grp_len;
	int64		n;
	MapPair    *pairs;
	struct MapGroup *next;
} MapGroup;

static MapGroup *map_groups = NULL;
static bool map_callback_registered = false;

static void
forget_map_groups(XactEvent event, void *arg)
{
	map_groups = NULL;
}

static int
compare_bytes(const char *a, int a_len, const char *b, int b_len)
{
	int			c = memcmp(a, b, Min(a_len, b_len));

	if (c != 0)
		return c;
	return (a_len > b_len) - (a_len < b_len);
}

static int
compare_pairs(const void *a, const void *b)
{
	const MapPair *x = (const MapPair *) a;
	const MapPair *y = (const MapPair *) b;

	return compare_bytes(x->orig, x->orig_len, y->orig, y->orig_len);
}

static MapGroup *
load_map_group(Oid relid, text *grp)
{
	char	   *relname = get_rel_name(relid);
	char	   *nspname;
	char	   *query;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	MemoryContext old;
	MapGroup   *group;
	uint64		rows;

	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("fixproof_mapped: no relation with OID %u", relid)));
	nspname = get_namespace_name(get_rel_namespace(relid));
	query = psprintf("SELECT orig, fake FROM %s WHERE grp = $1",
					 quote_qualified_identifier(nspname, relname));
	values[0] = PointerGetDatum(grp);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "fixproof_mapped: SPI_connect failed");
	if (SPI_execute_with_args(query, 1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "fixproof_mapped: reading the map failed");
	rows = SPI_processed;
	old = MemoryContextSwitchTo(TopTransactionContext);
	group = palloc0(sizeof(MapGroup));
	group->relid = relid;
	group->cid = GetCurrentCommandId(false);
	group->grp_len = VARSIZE_ANY_EXHDR(grp);
	group->grp = palloc(group->grp_len + 1);
	memcpy(group->grp, VARDATA_ANY(grp), group->grp_len);
	group->n = (int64) rows;
	group->pairs = palloc_extended(sizeof(MapPair) * Max(rows, 1), MCXT_ALLOC_HUGE);
	for (uint64 i = 0; i < rows; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		orig = SPI_getbinval(tuple, desc, 1, &isnull);
		Datum		fake;
		text	   *copy;

		/* orig is NOT NULL in the map. Copies: SPI's rows go with SPI_finish. */
		copy = (text *) PG_DETOAST_DATUM_COPY(orig);
		group->pairs[i].orig = VARDATA_ANY(copy);
		group->pairs[i].orig_len = VARSIZE_ANY_EXHDR(copy);
		fake = SPI_getbinval(tuple, desc, 2, &isnull);
		group->pairs[i].fake = isnull ? NULL : (text *) PG_DETOAST_DATUM_COPY(fake);
	}
	MemoryContextSwitchTo(old);
	SPI_finish();
	qsort(group->pairs, rows, sizeof(MapPair), compare_pairs);
	return group;
}

PG_FUNCTION_INFO_V1(fixproof_mapped);

Datum
fixproof_mapped(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	text	   *grp = PG_GETARG_TEXT_PP(1);
	text	   *value = PG_GETARG_TEXT_PP(2);
	const char *v = VARDATA_ANY(value);
	int			v_len = VARSIZE_ANY_EXHDR(value);
	int			grp_len = VARSIZE_ANY_EXHDR(grp);
	CommandId	cid = GetCurrentCommandId(false);
	MapGroup   *group;
	int64		low = 0;
	int64		high;

	if (!map_callback_registered)
	{
		RegisterXactCallback(forget_map_groups, NULL);
		map_callback_registered = true;
	}
	for (group = map_groups; group != NULL; group = group->next)
		if (group->relid == relid && group->grp_len == grp_len &&
			memcmp(group->grp, VARDATA_ANY(grp), grp_len) == 0)
			break;
	if (group != NULL && group->cid != cid)
		map_groups = group = NULL;	/* the map may have changed: read every group again */
	if (group == NULL)
	{
		group = load_map_group(relid, grp);
		group->next = map_groups;
		map_groups = group;
	}
	high = group->n - 1;
	while (low <= high)
	{
		int64		mid = low + (high - low) / 2;
		MapPair    *pair = &group->pairs[mid];
		int			c = compare_bytes(pair->orig, pair->orig_len, v, v_len);

		if (c == 0)
		{
			if (pair->fake == NULL)
				PG_RETURN_NULL();
			PG_RETURN_TEXT_P(pg_detoast_datum_copy((struct varlena *) pair->fake));
		}
		if (c < 0)
			low = mid + 1;
		else
			high = mid - 1;
	}
	PG_RETURN_NULL();
}
