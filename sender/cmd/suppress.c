/* sender/cmd/suppress.c: `mxsend suppress add|del|list|check`: the
 * suppression list (queue/suppress.h: J:suppress and J:suppress:exp), through
 * the synchronous queue (no loop here). Every entry is checked (supp_key)
 * before anything is written, so a bad line in a list of a million writes
 * nothing and names itself; values read back are escaped for the terminal. */
#include "sender/cmd/suppress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "queue/job.h"
#include "queue/queue.h"
#include "queue/suppress.h"
#include "sender/cmd/queue.h"
#include "sender/config.h"
#include "sender/util.h"

static int supp_flag(void *opts, int ch, const char *arg, const char **why)
{
	struct cmd_suppress_opts *o = opts;
	switch (ch) {
	case 'D':
		o->domain = true;
		return 0;
	case 'r':
		if (strlen(arg) > SUPP_REASON_MAX) {
			*why = "--reason longer than 256 bytes";
			return -1;
		}
		o->reason = arg;
		return 0;
	case 'C': {
		struct supp_entry e = { .code = arg, .code_len = strlen(arg) };
		int code;
		char dsn[16];
		supp_code(&e, &code, dsn, sizeof(dsn));
		if (code == 0 || e.code_len > 24 || (e.code_len > 3 && dsn[0] == '\0')) {
			*why = "bad --code (like 550 or \"550 5.1.1\")";
			return -1;
		}
		o->code = arg;
		return 0;
	}
	case 'e':
		if (config_parse_duration(arg, &o->expires_ms) != 0 || o->expires_ms == 0 ||
		    o->expires_ms > 3650ull * 86400 * 1000) {
			*why = "bad --expires (a duration like 30d, 12h; up to 3650d)";
			return -1;
		}
		return 0;
	default:
		return -1;
	}
}

int cmd_suppress_parse(int argc, char **argv, struct cmd_suppress_opts *o)
{
	static const struct option longs[] = {
		CMD_OPT_CONFIG, CMD_OPT_HELP,
		{ "domain", no_argument, NULL, 'D' },	{ "reason", required_argument, NULL, 'r' },
		{ "code", required_argument, NULL, 'C' }, { "expires", required_argument, NULL, 'e' },
		CMD_OPT_END,
	};
	memset(o, 0, sizeof(*o));
	if (argc < 2) {
		o->c.why = "add, del, list or check";
		return EX_USAGE;
	}
	const char *a = argv[1];
	o->action = strcmp(a, "add") == 0 ? 'a' : strcmp(a, "del") == 0 ? 'd'
		    : strcmp(a, "list") == 0 ? 'l' : strcmp(a, "check") == 0 ? 'c' : 0;
	if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
		return CMD_HELP;
	if (o->action == 0) {
		o->c.why = "the first operand is add, del, list or check";
		return EX_USAGE;
	}
	int first, rc = cmd_parse(argc - 1, argv + 1, "c:h", longs, &o->c, supp_flag, o, &first);
	if (rc != 0)
		return rc;
	o->items = (const char *const *)argv + 1 + first;
	o->nitems = argc - 1 - first;
	if (o->action != 'a' && (o->reason || o->code || o->expires_ms))
		o->c.why = "--reason, --code and --expires are for add";
	else if (o->action == 'l' && (o->nitems > 0 || o->domain))
		o->c.why = "list takes no operands";
	else if (o->action != 'l' && o->nitems == 0)
		o->c.why = o->domain ? "DOMAIN... (or - for a list on stdin)"
				     : "ADDRESS... (or - for a list on stdin)";
	else if (o->nitems > SUPP_CLI_MAX)
		o->c.why = "more than 1000000 operands: give the list on stdin (-)";
	return o->c.why ? EX_USAGE : 0;
}

/* The entries as fields (supp_key), free_keys frees them. */
struct keys {
	char **v;
	int n, cap;
};

static void free_keys(struct keys *k)
{
	for (int i = 0; i < k->n; i++)
		free(k->v[i]);
	free(k->v);
}

static int add_key(struct keys *k, char kind, const char *s, size_t len, const char *where)
{
	char field[SUPP_KEY_MAX];
	const char *why;
	if (supp_key(kind, s, len, field, sizeof(field), &why) < 0) {
		char *shown = xmalloc(len + 1);
		memcpy(shown, s, len);
		shown[len] = '\0';
		char *q = cmd_esc_dup(shown);
		fprintf(stderr, "mxsend suppress: %s \"%s\": %s\n", where, q, why);
		free(q);
		free(shown);
		return EX_DATAERR;
	}
	if (k->n == SUPP_CLI_MAX) {
		fprintf(stderr, "mxsend suppress: more than %d entries: split the list\n", SUPP_CLI_MAX);
		return EX_DATAERR;
	}
	if (k->n == k->cap) {
		k->cap = k->cap ? 2 * k->cap : 64;
		k->v = xrealloc(k->v, (size_t)k->cap * sizeof(*k->v));
	}
	k->v[k->n++] = xstrdup(field);
	return 0;
}

/* Fill k from the operands or, for "-", stdin (one per line; blank lines
 * skipped). 0, or EX_DATAERR (EX_IOERR) after saying which one is bad. */
static int read_keys(const struct cmd_suppress_opts *o, char kind, struct keys *k)
{
	char where[48];
	for (int i = 0; i < o->nitems; i++) {
		if (strcmp(o->items[i], "-") != 0) {
			snprintf(where, sizeof(where), "operand %d", i + 1);
			int rc = add_key(k, kind, o->items[i], strlen(o->items[i]), where);
			if (rc != 0)
				return rc;
			continue;
		}
		char line[SUPP_KEY_MAX + 2];
		long no = 0;
		bool cut = false;
		while (fgets(line, sizeof(line), stdin) != NULL) {
			size_t len = strlen(line);
			bool nl = len > 0 && line[len - 1] == '\n';
			if (cut) { /* the rest of an overlong line */
				cut = !nl;
				continue;
			}
			no++;
			if (!nl && !feof(stdin)) {
				fprintf(stderr, "mxsend suppress: line %ld: longer than %d bytes\n", no,
					SUPP_KEY_MAX - 2);
				return EX_DATAERR;
			}
			if (nl)
				line[--len] = '\0';
			if (len > 0 && line[len - 1] == '\r')
				line[--len] = '\0';
			if (len != strlen(line)) {
				fprintf(stderr, "mxsend suppress: line %ld: a NUL byte in it\n", no);
				return EX_DATAERR;
			}
			if (len == 0)
				continue;
			snprintf(where, sizeof(where), "line %ld", no);
			int rc = add_key(k, kind, line, len, where);
			if (rc != 0)
				return rc;
		}
		if (ferror(stdin)) {
			fprintf(stderr, "mxsend suppress: reading stdin failed\n");
			return EX_IOERR;
		}
	}
	return 0;
}

/* One entry, escaped: FIELD expires=... added=... code="..." reason="...". */
static void print_entry(const char *field, const char *value, size_t len, uint64_t now)
{
	struct supp_entry e;
	supp_parse(value, len, &e);
	char exp[32], added[32], *code = xmalloc(e.code_len + 1), *reason = xmalloc(e.reason_len + 1);
	memcpy(code, e.code, e.code_len);
	code[e.code_len] = '\0';
	memcpy(reason, e.reason, e.reason_len);
	reason[e.reason_len] = '\0';
	if (e.expires == 0)
		snprintf(exp, sizeof(exp), "never");
	else
		cmd_fmt_time(exp, sizeof(exp), e.expires * 1000);
	cmd_fmt_time(added, sizeof(added), e.added * 1000);
	char *f = cmd_esc_dup(field), *c = cmd_esc_dup(code), *r = cmd_esc_dup(reason);
	printf("%s%s expires=%s added=%s code=\"%s\" reason=\"%s\"\n", f,
	       supp_active(&e, now) ? "" : " (expired)", exp, added, c, r);
	free(f);
	free(c);
	free(r);
	free(code);
	free(reason);
}

static void on_list(void *arg, const char *field, const char *value, size_t len)
{
	print_entry(field, value, len, *(const uint64_t *)arg);
}

struct check {
	const struct keys *k;
	bool domain;
	char **val;    /* 2n values (address, @domain), NULL when absent */
	size_t *len;
};

static void on_get(void *arg, int i, const char *value, size_t len)
{
	struct check *c = arg;
	if (value != NULL) {
		c->val[i] = xmalloc(len + 1);
		memcpy(c->val[i], value, len);
		c->val[i][len] = '\0';
		c->len[i] = len;
	}
}

/* check: for each address its entry, else its domain's. Exit 0 when all are
 * suppressed, 1 when one is not. */
static int check_run(struct queue_sync *s, const struct keys *k, bool domain, char *err,
		     size_t errlen, int *n)
{
	int m = domain ? k->n : 2 * k->n;
	const char **f = xcalloc((size_t)m, sizeof(*f));
	char **doms = xcalloc((size_t)k->n, sizeof(*doms));
	for (int i = 0; i < k->n; i++) {
		f[i] = k->v[i];
		if (!domain) {
			const char *at = strrchr(k->v[i], '@');
			doms[i] = xstrdup(at); /* "@domain": a field already */
			f[k->n + i] = doms[i];
		}
	}
	struct check c = { .k = k, .domain = domain, .val = xcalloc((size_t)m, sizeof(char *)),
			   .len = xcalloc((size_t)m, sizeof(size_t)) };
	*n = queue_sync_suppress_get(s, f, m, on_get, &c, err, errlen);
	int missing = 0;
	uint64_t now = (uint64_t)time(NULL);
	for (int i = 0; i < k->n && *n >= 0; i++) {
		int hit = -1;
		struct supp_entry e;
		for (int w = 0; w < (domain ? 1 : 2) && hit < 0; w++) {
			int idx = w == 0 ? i : k->n + i;
			if (c.val[idx] != NULL) {
				supp_parse(c.val[idx], c.len[idx], &e);
				if (supp_active(&e, now))
					hit = idx;
			}
		}
		char *q = cmd_esc_dup(k->v[i]);
		if (hit < 0) {
			printf("%s not-suppressed\n", q);
			missing++;
		} else {
			printf("%s suppressed by ", q);
			print_entry(f[hit], c.val[hit], c.len[hit], now);
		}
		free(q);
	}
	for (int i = 0; i < m; i++)
		free(c.val[i]);
	for (int i = 0; i < k->n; i++)
		free(doms[i]);
	free(c.val);
	free(c.len);
	free(doms);
	free(f);
	return missing ? 1 : 0;
}

int cmd_suppress_run(const struct cmd_suppress_opts *o)
{
	struct keys k = { 0 };
	int rc = read_keys(o, o->domain ? 'd' : 'a', &k);
	if (rc != 0) {
		free_keys(&k);
		return rc;
	}
	struct config cfg;
	struct queue_config qc;
	struct queue_sync *s;
	rc = cmd_admin_open(&o->c, &cfg, &qc, &s);
	if (rc != 0) {
		free_keys(&k);
		return rc;
	}
	char err[512] = "";
	int n = 0, status = 0;
	uint64_t now = (uint64_t)time(NULL);
	switch (o->action) {
	case 'a': {
		char value[SUPP_VALUE_MAX];
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
		uint64_t exp = o->expires_ms ? (ms + o->expires_ms + 999) / 1000 : 0; /* never early */
		supp_format(value, sizeof(value), exp, now, o->code ? o->code : "",
			    o->reason ? o->reason : "manual");
		n = queue_sync_suppress_add(s, (const char *const *)k.v, k.n, value, exp, err, sizeof(err));
		if (n >= 0)
			printf("added %d\n", n);
		break;
	}
	case 'd':
		n = queue_sync_suppress_del(s, (const char *const *)k.v, k.n, err, sizeof(err));
		if (n >= 0)
			printf("deleted %d\n", n);
		break;
	case 'l':
		n = queue_sync_suppress_list(s, on_list, &now, err, sizeof(err));
		break;
	default:
		status = check_run(s, &k, o->domain, err, sizeof(err), &n);
		break;
	}
	free_keys(&k);
	rc = cmd_admin_close(n, err, s, &cfg);
	return rc != 0 ? rc : status;
}

static int cmd_suppress(int argc, char **argv)
{
	struct cmd_suppress_opts o;
	int rc = cmd_suppress_parse(argc, argv, &o);
	return rc != 0 ? cmd_usage(&cmd_suppress_def, rc, o.c.why) : cmd_suppress_run(&o);
}

const struct cmd_def cmd_suppress_def = {
	"suppress", cmd_suppress,
	"suppress add [-c FILE] [--domain] [--reason R] [--code \"550 5.1.1\"] [--expires DUR] ITEM...|-\n"
	"suppress del|check [-c FILE] [--domain] ITEM...|-\n"
	"suppress list [-c FILE]",
};
