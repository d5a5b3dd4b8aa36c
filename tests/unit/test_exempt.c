/* test_exempt.c: the exempt_mac proof (sender/exempt.c) and how queue/job.c
 * reads the exempt and exempt_mac fields: only `mxsend tlsrpt`, holding the
 * config's DKIM key, can make a job that `mxsend run` delivers exempt. */
#include "sender/exempt.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "queue/job.h"
#include "sender/msg.h"
#include "tests/t.h"

static const struct job_limits lim = { .max_size = 100000, .addr_ok = msg_addr_norm,
				       .split = msg_split_list };

/* A fresh PEM private key of type alg ("ED25519", "RSA") in a temp file. */
static void make_key(const char *alg, char path[64])
{
	strcpy(path, "/tmp/test_exempt.XXXXXX");
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	FILE *f = fdopen(fd, "w");
	EVP_PKEY *k = strcmp(alg, "RSA") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024)
					      : EVP_PKEY_Q_keygen(NULL, NULL, alg);
	CHECK(k != NULL && f != NULL);
	CHECK(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1);
	EVP_PKEY_free(k);
	fclose(f);
}

static const char *const rcpts2[] = { "b@two.test", "a@one.test" };
static const char *const rcpts2r[] = { "a@one.test", "b@two.test" };

static struct exempt_msg base(void)
{
	return (struct exempt_msg){ .kind = "tlsrpt", .from = "tlsrpt-noreply@client.test",
				    .rcpts = rcpts2, .nrcpt = 2, .data = "Subject: r\r\n\r\nx\r\n",
				    .len = 17, .has_expires = true, .expires_s = 86400 };
}

static void t_key(void)
{
	char ed[64], rsa[64], err[256];
	unsigned char k1[EXEMPT_KEY_LEN], k2[EXEMPT_KEY_LEN], k3[EXEMPT_KEY_LEN];
	make_key("ED25519", ed);
	make_key("RSA", rsa);
	CHECK_INT(exempt_key_load(ed, k1, err, sizeof(err)), 0);
	CHECK_INT(exempt_key_load(ed, k2, err, sizeof(err)), 0);
	CHECK(memcmp(k1, k2, sizeof(k1)) == 0); /* the same file, the same key */
	CHECK_INT(exempt_key_load(rsa, k3, err, sizeof(err)), 0);
	CHECK(memcmp(k1, k3, sizeof(k1)) != 0);
	CHECK_INT(exempt_key_load("/nonexistent/k.pem", k3, err, sizeof(err)), -1);
	CHECK(strstr(err, "No such file") != NULL);
	FILE *f = fopen(rsa, "w");
	fputs("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", f);
	fclose(f);
	CHECK_INT(exempt_key_load(rsa, k3, err, sizeof(err)), -1);
	CHECK(strstr(err, "not a PEM private key") != NULL);
	unlink(ed);
	unlink(rsa);
}

static void t_mac(void)
{
	unsigned char key[EXEMPT_KEY_LEN], other[EXEMPT_KEY_LEN];
	memset(key, 7, sizeof(key));
	memset(other, 8, sizeof(other));
	char a[EXEMPT_MAC_HEX + 1], b[EXEMPT_MAC_HEX + 1];
	struct exempt_msg m = base();
	exempt_mac(key, &m, a);
	CHECK_INT(strlen(a), EXEMPT_MAC_HEX);
	CHECK_INT(strspn(a, "0123456789abcdef"), EXEMPT_MAC_HEX);
	CHECK(exempt_mac_ok(key, &m, a));
	m.rcpts = rcpts2r; /* recipient order does not matter */
	exempt_mac(key, &m, b);
	CHECK_STR(a, b);
	CHECK(!exempt_mac_ok(other, &m, a)); /* another key */
	/* every covered field changes it */
	struct exempt_msg v[9];
	for (int i = 0; i < 9; i++)
		v[i] = base();
	static const char *const one[] = { "a@one.test" }, *const evil[] = { "evil@one.test", "b@two.test" };
	v[0].kind = "tlsrpu";
	v[1].from = "x@client.test";
	v[2].rcpts = one, v[2].nrcpt = 1;
	v[3].rcpts = evil;
	v[4].data = "Subject: r\r\n\r\ny\r\n";
	v[5].len = 16;
	v[6].has_expires = false;
	v[7].expires_s = 86401;
	v[8].from = "tlsrpt-noreply@client.tes", v[8].rcpts = (const char *const[]){ "ta@one.test", "b@two.test" };
	for (int i = 0; i < 9; i++) {
		CHECK(!exempt_mac_ok(key, &v[i], a));
		exempt_mac(key, &v[i], b);
		CHECK(strcmp(a, b) != 0);
	}
	/* malformed proofs */
	CHECK(!exempt_mac_ok(key, &m, NULL));
	CHECK(!exempt_mac_ok(key, &m, ""));
	char up[EXEMPT_MAC_HEX + 2];
	strcpy(up, a);
	for (char *p = up; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 32);
	CHECK(strcmp(up, a) == 0 || !exempt_mac_ok(key, &m, up));
	strcpy(up, a);
	up[EXEMPT_MAC_HEX - 1] = '\0';
	CHECK(!exempt_mac_ok(key, &m, up));
	strcpy(up, a);
	strcat(up, "0");
	CHECK(!exempt_mac_ok(key, &m, up));
}

static int decode(struct job *j, const char *const *kv, const size_t *lens)
{
	size_t n = 0, len[32];
	while (kv[n] != NULL) {
		len[n] = lens && lens[n] ? lens[n] : strlen(kv[n]);
		n++;
	}
	return job_decode(j, "1700000000123-7", n, kv, len, &lim);
}

/* What tlsrpt computes from the raw values and what run computes from the
 * decoded job agree (addresses normalized the same way). */
static void t_job_roundtrip(void)
{
	unsigned char key[EXEMPT_KEY_LEN];
	memset(key, 3, sizeof(key));
	char nfrom[300], nto[300], mac[EXEMPT_MAC_HEX + 1];
	const char *err = NULL, *data = "Subject: r\r\n\r\nreport\r\n";
	CHECK_INT(msg_addr_norm("TLSRPT-noreply@Client.TEST", nfrom, sizeof(nfrom), &err), 0);
	CHECK_INT(msg_addr_norm("Rua@Rpt.TEST", nto, sizeof(nto), &err), 0);
	const char *nr[] = { nto };
	struct exempt_msg em = { .kind = "tlsrpt", .from = nfrom, .rcpts = nr, .nrcpt = 1, .data = data,
				 .len = strlen(data), .has_expires = true, .expires_s = 86400 };
	exempt_mac(key, &em, mac);
	struct job j;
	const char *kv[] = { "from", "TLSRPT-noreply@Client.TEST", "to", " Rua@Rpt.TEST ", "data", data,
			     "exempt", "tlsrpt", "expires", "86400", "exempt_mac", mac, NULL };
	CHECK_INT(decode(&j, kv, NULL), 0);
	CHECK(j.exempt_tlsrpt);
	CHECK_STR(j.exempt_mac, mac);
	struct exempt_msg jm = { .kind = "tlsrpt", .from = j.from, .rcpts = j.norm, .nrcpt = j.nrcpt,
				 .data = j.data, .len = j.len, .has_expires = j.has_expires,
				 .expires_s = j.expires_s };
	CHECK(exempt_mac_ok(key, &jm, j.exempt_mac));
	job_fini(&j);
}

/* A bad or absent proof is never a rejection: the job keeps the normal policy. */
static void t_job_fields(void)
{
	struct job j;
	const char *base_kv[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "exempt", "tlsrpt", NULL };
	CHECK_INT(decode(&j, base_kv, NULL), 0);
	CHECK(j.exempt_tlsrpt);
	CHECK_STR(j.exempt_mac, "");
	job_fini(&j);
	static const char *const bad[] = {
		"ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789", /* uppercase */
		"0123", "zz", "",
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0", /* 65 */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *kv[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "exempt", "tlsrpt",
				     "exempt_mac", bad[i], NULL };
		CHECK_INT(decode(&j, kv, NULL), 0);
		CHECK_STR(j.reason, "");
		CHECK_STR(j.exempt_mac, "");
		job_fini(&j);
	}
	/* a NUL inside exempt_mac: not a rejection either */
	const char *kvn[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "exempt", "tlsrpt",
			      "exempt_mac", "ab\0cd", NULL };
	const size_t ln[] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 5 };
	CHECK_INT(decode(&j, kvn, ln), 0);
	CHECK_STR(j.exempt_mac, "");
	job_fini(&j);
	/* exempt_mac without exempt: ignored */
	const char *kvm[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "exempt_mac",
			      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", NULL };
	CHECK_INT(decode(&j, kvm, NULL), 0);
	CHECK(!j.exempt_tlsrpt);
	CHECK_STR(j.exempt_mac, "");
	job_fini(&j);
	/* another exempt value is still a rejection (a bad job, as before) */
	const char *kvx[] = { "from", "a@b.test", "to", "x@y.test", "data", "d", "exempt", "sts", NULL };
	CHECK_INT(decode(&j, kvx, NULL), -1);
	CHECK_STR(j.reason, "bad exempt value \"sts\"");
	job_fini(&j);
}

static const struct t_case cases[] = {
	{ "key", t_key },
	{ "mac", t_mac },
	{ "job_roundtrip", t_job_roundtrip },
	{ "job_fields", t_job_fields },
};

T_MAIN(cases)
