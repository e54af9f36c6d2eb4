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
 *
 * The key's inner and outer digest states are computed once per query (cached in
 * fn_extra while the key stays the same); each call copies them, hashes the message and
 * finishes. The SQL-only helpers of perfruns/masking/sql.py compute the same values and
 * are used where this extension is not installed (tests/test_masking_sql.py compares).
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "fmgr.h"
#include "utils/builtins.h"
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

PG_FUNCTION_INFO_V1(fixproof_hmac_sha256);

Datum
fixproof_hmac_sha256(PG_FUNCTION_ARGS)
{
	bytea	   *key = PG_GETARG_BYTEA_PP(0);
	bytea	   *message = PG_GETARG_BYTEA_PP(1);	/* bytea or text */
	int			key_len = VARSIZE_ANY_EXHDR(key);
	HmacState  *state = (HmacState *) fcinfo->flinfo->fn_extra;
	unsigned char inner[DIGEST];
	unsigned int len;
	bytea	   *result;

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
	check(EVP_MD_CTX_copy_ex(state->work, state->inner), "digest copy");
	check(EVP_DigestUpdate(state->work, VARDATA_ANY(message), VARSIZE_ANY_EXHDR(message)),
		  "digest update");
	check(EVP_DigestFinal_ex(state->work, inner, &len), "digest final");
	check(EVP_MD_CTX_copy_ex(state->work, state->outer), "digest copy");
	check(EVP_DigestUpdate(state->work, inner, DIGEST), "digest update");
	result = palloc(VARHDRSZ + DIGEST);
	check(EVP_DigestFinal_ex(state->work, (unsigned char *) VARDATA(result), &len),
		  "digest final");
	SET_VARSIZE(result, VARHDRSZ + DIGEST);
	PG_RETURN_BYTEA_P(result);
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
