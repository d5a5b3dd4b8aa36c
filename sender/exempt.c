/* exempt.c: the MAC that lets `mxsend tlsrpt`'s report jobs, and no others,
 * skip MTA-STS (see exempt.h for the design).
 *
 * Encoding under the HMAC: "mxsend-exempt-v1", kind, from, the recipient
 * count, each recipient (sorted by strcmp), expires ("-" when absent), the
 * data length, each followed by a NUL (none of them can hold one: job.c
 * rejects NULs outside data), then the data bytes. A field boundary cannot be
 * moved without changing a count or a NUL position. */
#include "sender/exempt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "sender/util.h"

#define KEY_LABEL "mxsend exempt_mac key v1"

int exempt_key_load(const char *path, unsigned char key[EXEMPT_KEY_LEN], char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	unsigned char *der = NULL;
	int n = pkey ? i2d_PrivateKey(pkey, &der) : -1;
	EVP_PKEY_free(pkey);
	if (n <= 0) {
		snprintf(err, errlen, "%s: not a PEM private key", path);
		return -1;
	}
	unsigned len = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
		 EVP_DigestUpdate(md, KEY_LABEL, sizeof(KEY_LABEL)) == 1 &&
		 EVP_DigestUpdate(md, der, (size_t)n) == 1 && EVP_DigestFinal_ex(md, key, &len) == 1 &&
		 len == EXEMPT_KEY_LEN;
	EVP_MD_CTX_free(md);
	OPENSSL_clear_free(der, (size_t)n);
	if (!ok) {
		snprintf(err, errlen, "%s: SHA-256 failed", path);
		return -1;
	}
	return 0;
}

static int by_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool put(EVP_MAC_CTX *c, const char *s)
{
	return EVP_MAC_update(c, (const unsigned char *)s, strlen(s) + 1) == 1;
}

/* The raw MAC into out (32 bytes). false if OpenSSL failed. */
static bool mac_raw(const unsigned char key[EXEMPT_KEY_LEN], const struct exempt_msg *m,
		    unsigned char out[32])
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *c = mac ? EVP_MAC_CTX_new(mac) : NULL;
	char digest[] = "SHA256", num[32];
	OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
				OSSL_PARAM_construct_end() };
	const char **sorted = xcalloc((size_t)(m->nrcpt > 0 ? m->nrcpt : 1), sizeof(*sorted));
	for (int i = 0; i < m->nrcpt; i++)
		sorted[i] = m->rcpts[i];
	if (m->nrcpt > 1)
		qsort(sorted, (size_t)m->nrcpt, sizeof(*sorted), by_str);
	bool ok = c != NULL && EVP_MAC_init(c, key, EXEMPT_KEY_LEN, params) == 1 &&
		  put(c, "mxsend-exempt-v1") && put(c, m->kind) && put(c, m->from);
	snprintf(num, sizeof(num), "%d", m->nrcpt);
	ok = ok && put(c, num);
	for (int i = 0; ok && i < m->nrcpt; i++)
		ok = put(c, sorted[i]);
	if (m->has_expires)
		snprintf(num, sizeof(num), "%u", (unsigned)m->expires_s);
	else
		snprintf(num, sizeof(num), "-");
	ok = ok && put(c, num);
	snprintf(num, sizeof(num), "%zu", m->len);
	ok = ok && put(c, num) && EVP_MAC_update(c, (const unsigned char *)m->data, m->len) == 1;
	size_t outl = 0;
	ok = ok && EVP_MAC_final(c, out, &outl, 32) == 1 && outl == 32;
	free(sorted);
	EVP_MAC_CTX_free(c);
	EVP_MAC_free(mac);
	return ok;
}

void exempt_mac(const unsigned char key[EXEMPT_KEY_LEN], const struct exempt_msg *m,
		char hex[EXEMPT_MAC_HEX + 1])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char raw[32];
	if (!mac_raw(key, m, raw)) {
		hex[0] = '\0'; /* verifies against nothing */
		return;
	}
	for (int i = 0; i < 32; i++) {
		hex[2 * i] = digits[raw[i] >> 4];
		hex[2 * i + 1] = digits[raw[i] & 15];
	}
	hex[EXEMPT_MAC_HEX] = '\0';
}

bool exempt_mac_ok(const unsigned char key[EXEMPT_KEY_LEN], const struct exempt_msg *m,
		   const char *hex)
{
	char want[EXEMPT_MAC_HEX + 1];
	if (hex == NULL || strlen(hex) != EXEMPT_MAC_HEX)
		return false;
	exempt_mac(key, m, want);
	return want[0] != '\0' && CRYPTO_memcmp(want, hex, EXEMPT_MAC_HEX) == 0;
}
