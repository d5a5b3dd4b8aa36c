/* queue_admin.c: the Redis URL, and the synchronous side of the queue used by
 * short-lived commands (mxsend enqueue, held, release). These block on Redis
 * (hiredis's synchronous API, 5 s timeouts) and must never run on a loop. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "queue/queue_int.h"

/* ---- URL ---- */

static int parse_int(const char *s, size_t n, int lo, int hi, int *out)
{
	long v = 0;
	if (n == 0 || n > 9)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

static int copy_part(char *dst, size_t cap, const char *s, size_t n)
{
	if (n >= cap)
		return -1;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

int queue_url_parse(const char *url, struct queue_addr *a, char *err, size_t errlen)
{
	char shown[512]; /* the URL in messages, password redacted */
	memset(a, 0, sizeof(*a));
	a->port = 6379;
	if (url == NULL)
		url = "redis://127.0.0.1:6379/0";
	if (strncmp(url, "unix:", 5) == 0) {
		const char *p = url + 5;
		while (p[0] == '/' && p[1] == '/')
			p++; /* unix:///path */
		const char *q = strchr(p, '?');
		size_t n = q ? (size_t)(q - p) : strlen(p);
		if (n == 0 || p[0] != '/' || copy_part(a->path, sizeof(a->path), p, n) != 0) {
			snprintf(err, errlen, "bad redis url \"%s\": expected unix:/PATH",
				 queue_url_redact(url, shown, sizeof(shown)));
			return -1;
		}
		if (q != NULL && (strncmp(q, "?db=", 4) != 0 ||
				  parse_int(q + 4, strlen(q + 4), 0, 100000, &a->db) != 0)) {
			snprintf(err, errlen, "bad redis url \"%s\": expected ?db=N",
				 queue_url_redact(url, shown, sizeof(shown)));
			return -1;
		}
		return 0;
	}
	a->tls = strncmp(url, "rediss://", 9) == 0;
	if (strncmp(url, "redis://", 8) != 0 && !a->tls) {
		snprintf(err, errlen, "bad redis url \"%s\": expected redis://, rediss:// or unix:",
			 queue_url_redact(url, shown, sizeof(shown)));
		return -1;
	}
	const char *p = url + (a->tls ? 9 : 8), *end = p + strlen(p);
	const char *slash = strchr(p, '/');
	const char *hostend = slash ? slash : end;
	const char *at = NULL;
	for (const char *s = p; s < hostend; s++)
		if (*s == '@')
			at = s;
	if (at != NULL) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		const char *pw = colon ? colon + 1 : p; /* [[user]:]password */
		if (copy_part(a->password, sizeof(a->password), pw, (size_t)(at - pw)) != 0 ||
		    (colon != NULL && copy_part(a->username, sizeof(a->username), p, (size_t)(colon - p)) != 0))
			goto bad;
		p = at + 1;
	}
	const char *portsep = NULL;
	if (*p == '[') { /* [v6]:port */
		const char *rb = memchr(p, ']', (size_t)(hostend - p));
		if (rb == NULL || copy_part(a->host, sizeof(a->host), p + 1, (size_t)(rb - p - 1)) != 0)
			goto bad;
		if (rb + 1 < hostend) {
			if (rb[1] != ':')
				goto bad;
			portsep = rb + 1;
		}
	} else {
		portsep = memchr(p, ':', (size_t)(hostend - p));
		const char *he = portsep ? portsep : hostend;
		if (copy_part(a->host, sizeof(a->host), p, (size_t)(he - p)) != 0)
			goto bad;
	}
	if (a->host[0] == '\0')
		goto bad;
	if (portsep != NULL &&
	    parse_int(portsep + 1, (size_t)(hostend - portsep - 1), 1, 65535, &a->port) != 0)
		goto bad;
	if (slash != NULL && slash + 1 < end && parse_int(slash + 1, strlen(slash + 1), 0, 100000, &a->db) != 0)
		goto bad;
	return 0;
bad:
	snprintf(err, errlen, "bad redis url \"%s\": expected redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]",
		 queue_url_redact(url, shown, sizeof(shown)));
	return -1;
}

const char *queue_url_redact(const char *url, char *out, size_t n)
{
	if (n == 0)
		return out;
	if (url == NULL) {
		snprintf(out, n, "(default)");
		return out;
	}
	/* userinfo: from after "://" (or the start) to the last '@' anywhere (a
	 * password may hold '/' or '@', and a URL that does not parse is shown
	 * too); the parser takes "[user:]password" there */
	const char *sch = strstr(url, "://");
	const char *auth = sch ? sch + 3 : url;
	const char *at = strrchr(url, '@');
	if (at == NULL || at < auth) {
		snprintf(out, n, "%s", url);
		return out;
	}
	const char *colon = memchr(auth, ':', (size_t)(at - auth));
	int keep = colon ? (int)(colon + 1 - url) : (int)(auth - url); /* scheme and user */
	snprintf(out, n, "%.*s***%s", keep, url, at);
	return out;
}

/* ---- synchronous connection ---- */

static const char *ctx_err(const redisContext *c)
{
	/* hiredis reports a socket timeout as EAGAIN */
	if (c->err == REDIS_ERR_IO && strstr(c->errstr, "temporarily unavailable") != NULL)
		return "timed out (5 s)";
	return c->errstr[0] ? c->errstr : "no reply";
}

int qsync_reply_err(redisContext *c, redisReply *r, const char *what, char *err, size_t errlen)
{
	if (r == NULL) {
		snprintf(err, errlen, "redis: %s: %s", what, ctx_err(c));
		return -1;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "redis: %s: %s", what, r->str);
		freeReplyObject(r);
		return -1;
	}
	return 0;
}

/* Redis never echoes a password in its errors today; should one ever do, it
 * is cut from the message here. */
static void scrub(char *err, const char *pw)
{
	size_t n = strlen(pw), k = n < 3 ? n : 3;
	char *p, *from = err;
	while (n > 0 && (p = strstr(from, pw)) != NULL) {
		memset(p, '*', k);
		memmove(p + k, p + n, strlen(p + n) + 1);
		from = p + k;
	}
}

/* A connected context with 5 s timeouts, or NULL with why set. */
static redisContext *timeouts_or_why(redisContext *c, char *why, size_t n)
{
	struct timeval tv = { 5, 0 };
	if (c != NULL && c->err == 0) {
		redisSetTimeout(c, tv);
		return c;
	}
	snprintf(why, n, "%s", c ? ctx_err(c) : "out of memory");
	if (c != NULL)
		redisFree(c);
	return NULL;
}

redisContext *qsync_dial(const struct queue_tls *tls, bool use_tls, const char *host, int port,
			 char *why, size_t n)
{
	struct timeval tv = { 5, 0 };
	if (!use_tls)
		return timeouts_or_why(redisConnectWithTimeout(host, port, tv), why, n);
	if (tls == NULL || tls->connect == NULL) {
		snprintf(why, n, "rediss:// (TLS) is not available here");
		return NULL;
	}
	return tls->connect(tls, host, port, why, n);
}

/* qsync_connect; *refused = true when Redis answered AUTH or SELECT with an
 * error (wrong credentials or database: configuration, not a passing fault). */
static redisContext *connect_sync(const struct queue_config *cfg, const struct queue_node *at,
				  bool *refused, char *err, size_t errlen)
{
	struct queue_addr a;
	struct timeval tv = { 5, 0 };
	const char *url = cfg->url, *username = cfg->username, *password = cfg->password;
	char why[512];
	bool sentinel = cfg->sentinels != NULL && cfg->sentinels[0] != '\0';
	int from = 0; /* Sentinel: the next sentinel to ask */
	if (queue_url_parse(url, &a, err, errlen) != 0)
		return NULL;
	if (at != NULL) { /* a cluster node (cluster.c): the URL's credentials */
		snprintf(a.host, sizeof(a.host), "%s", at->host);
		a.port = at->port;
	}
again:
	if (sentinel && (from = qsent_ask_sync(cfg, from, &a, err, errlen)) < 0) {
		explicit_bzero(a.password, sizeof(a.password));
		return NULL;
	}
	redisContext *c = a.path[0] ? timeouts_or_why(redisConnectUnixWithTimeout(a.path, tv), why, sizeof(why))
				    : qsync_dial(&cfg->tls, a.tls, a.host, a.port, why, sizeof(why));
	if (c == NULL) {
		char shown[512];
		if (sentinel)
			snprintf(shown, sizeof(shown), "%s:%d (master %s)", a.host, a.port, cfg->master_name);
		snprintf(err, errlen, "redis: connect to %s: %s",
			 sentinel ? shown : queue_url_redact(url, shown, sizeof(shown)), why);
		if (sentinel) { /* that sentinel is behind: ask the next */
			from++;
			goto again;
		}
		explicit_bzero(a.password, sizeof(a.password));
		return NULL;
	}
	const char *pw = (password && password[0]) ? password : a.password;
	const char *user = (username && username[0]) ? username : a.username;
	redisReply *r;
	if (pw[0] != '\0' || user[0] != '\0') {
		/* Redis 6 ACL: AUTH USER PASSWORD; else the default user's AUTH PASSWORD */
		const char *av[] = { "AUTH", user[0] ? user : pw, pw };
		r = redisCommandArgv(c, user[0] ? 3 : 2, av, NULL);
		*refused = r != NULL && r->type == REDIS_REPLY_ERROR;
		if (qsync_reply_err(c, r, "AUTH", err, errlen) != 0)
			goto fail;
		freeReplyObject(r);
	}
	if (a.db != 0) {
		char db[16];
		snprintf(db, sizeof(db), "%d", a.db);
		const char *av[] = { "SELECT", db };
		r = redisCommandArgv(c, 2, av, NULL);
		*refused = r != NULL && r->type == REDIS_REPLY_ERROR;
		if (qsync_reply_err(c, r, "SELECT", err, errlen) != 0)
			goto fail;
		freeReplyObject(r);
	}
	if (sentinel) { /* the sentinels' answer may be stale: is it the master? */
		const char *av[] = { "ROLE" };
		r = redisCommandArgv(c, 1, av, NULL);
		bool master = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
			      r->element[0]->type == REDIS_REPLY_STRING &&
			      strcmp(r->element[0]->str, "master") == 0;
		bool noperm = r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOPERM", 6) == 0;
		if (r != NULL)
			freeReplyObject(r);
		if (!master && !noperm) {
			snprintf(err, errlen, "redis: %s:%d, named master %s by a sentinel, is not a master "
				 "(a failover under way?)", a.host, a.port, cfg->master_name);
			redisFree(c);
			from++;
			goto again;
		}
	}
	explicit_bzero(a.password, sizeof(a.password));
	return c;
fail:
	if (errlen > 0)
		scrub(err, pw);
	explicit_bzero(a.password, sizeof(a.password));
	redisFree(c);
	return NULL;
}

redisContext *qsync_connect(const struct queue_config *cfg, char *err, size_t errlen)
{
	bool refused = false;
	return connect_sync(cfg, NULL, &refused, err, errlen);
}

redisContext *qsync_connect_at(const struct queue_config *cfg, const struct queue_node *at, char *err,
			       size_t errlen)
{
	bool refused = false;
	return connect_sync(cfg, at, &refused, err, errlen);
}

int queue_sync_check(const struct queue_config *cfg, char *err, size_t errlen)
{
	bool refused = false;
	redisContext *c = connect_sync(cfg, NULL, &refused, err, errlen);
	struct queue_node more[QUEUE_CLUSTER_NODES / 2];
	char why[300];
	int n = c == NULL && !refused && cfg->cluster && cfg->cluster_nodes
			? queue_cluster_nodes(cfg->cluster_nodes, more, QUEUE_CLUSTER_NODES / 2, why, sizeof(why))
			: 0;
	for (int i = 0; i < n && c == NULL && !refused; i++) /* the URL's node is down: the others */
		c = connect_sync(cfg, &more[i], &refused, err, errlen);
	if (c == NULL)
		return refused ? -2 : -1;
	redisFree(c);
	return 0;
}

struct queue_sync *queue_sync_open(const struct queue_config *cfg, char *err, size_t errlen)
{
	redisContext *c = cfg->cluster ? qcluster_sync_open(cfg, cfg->jobs, err, errlen)
				       : qsync_connect(cfg, err, errlen);
	if (c == NULL)
		return NULL;
	struct queue_sync *s = qalloc(sizeof(*s));
	s->c = c;
	s->cfg = cfg;
	s->nlanes = qlanes_init(cfg, s->lanes);
	return s;
}

void queue_sync_close(struct queue_sync *s)
{
	if (s == NULL)
		return;
	redisFree(s->c);
	qlanes_fini(s->lanes, s->nlanes);
	free(s);
}

int queue_sync_config_get(struct queue_sync *s, const char *name, char *value, size_t n, char *err,
			  size_t errlen)
{
	const char *av[] = { "CONFIG", "GET", name };
	redisReply *r = redisCommandArgv(s->c, 3, av, NULL);
	if (qsync_reply_err(s->c, r, "CONFIG GET", err, errlen) != 0)
		return -1;
	/* [name, value]; an empty array when the server does not know it */
	int rc = -1;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING) {
		snprintf(value, n, "%s", r->element[1]->str);
		rc = 0;
	} else {
		snprintf(err, errlen, "redis: CONFIG GET %s: no such parameter", name);
	}
	freeReplyObject(r);
	return rc;
}

int queue_sync_enqueue(struct queue_sync *s, const struct queue_fields *f, long count,
		       void (*id_fn)(void *arg, const char *id), void *arg, char *err,
		       size_t errlen)
{
	int lane = queue_lane_find(s->cfg, f->lane ? f->lane : "default");
	if (lane < 0) {
		snprintf(err, errlen, "unknown lane \"%s\"", f->lane);
		return -1;
	}
	int argc = 3 + 2 * f->n;
	const char **av = qalloc((size_t)argc * sizeof(*av));
	size_t *al = qalloc((size_t)argc * sizeof(*al));
	av[0] = "XADD";
	av[1] = s->lanes[lane].stream;
	av[2] = "*";
	for (int i = 0; i < 3; i++)
		al[i] = strlen(av[i]);
	for (int i = 0; i < f->n; i++) {
		av[3 + 2 * i] = f->name[i];
		al[3 + 2 * i] = strlen(f->name[i]);
		av[4 + 2 * i] = f->value[i];
		al[4 + 2 * i] = f->vlen ? f->vlen[i] : strlen(f->value[i]);
	}
	/* Pipelined in windows so neither side buffers without bound. */
	const long window = 1000;
	long sent = 0, done = 0;
	int rc = 0;
	while (done < count) {
		while (sent < count && sent - done < window) {
			if (redisAppendCommandArgv(s->c, argc, av, al) != REDIS_OK) {
				snprintf(err, errlen, "redis: XADD: %s", ctx_err(s->c));
				rc = -1;
				goto out;
			}
			sent++;
		}
		redisReply *r = NULL;
		if (redisGetReply(s->c, (void **)&r) != REDIS_OK) {
			snprintf(err, errlen, "redis: XADD: %s", ctx_err(s->c));
			rc = -1;
			goto out;
		}
		if (qsync_reply_err(s->c, r, "XADD", err, errlen) != 0) {
			rc = -1;
			goto out;
		}
		if (id_fn != NULL && r->type == REDIS_REPLY_STRING)
			id_fn(arg, r->str);
		freeReplyObject(r);
		done++;
	}
out:
	free(av);
	free(al);
	return rc == 0 ? (int)(done > 0x7fffffff ? 0x7fffffff : done) : -1;
}

static int held_lane(struct queue_sync *s, const struct qlane *lane,
		     void (*fn)(void *arg, const struct queue_held *h), void *arg, char *err,
		     size_t errlen)
{
	const char *av[] = { "ZRANGE", lane->held, "0", "-1", "WITHSCORES" };
	redisReply *list = redisCommandArgv(s->c, 5, av, NULL);
	if (qsync_reply_err(s->c, list, "ZRANGE", err, errlen) != 0)
		return -1;
	int count = 0, rc = 0;
	size_t n = list->type == REDIS_REPLY_ARRAY ? list->elements / 2 : 0;
	for (size_t i = 0; i < n; i++) {
		const redisReply *m = list->element[2 * i];
		size_t kl = strlen(lane->held);
		char *key = qalloc(kl + 1 + m->len + 1);
		memcpy(key, lane->held, kl);
		key[kl] = ':';
		memcpy(key + kl + 1, m->str, m->len);
		const char *hv[] = { "HMGET", key, "id", "job", "domain", "reason", "to", "held_at", "since" };
		redisReply *r = redisCommandArgv(s->c, 9, hv, NULL);
		free(key);
		if (qsync_reply_err(s->c, r, "HMGET", err, errlen) != 0) {
			rc = -1;
			break;
		}
		const char *v[7];
		for (int k = 0; k < 7; k++) {
			const redisReply *e = (r->type == REDIS_REPLY_ARRAY && r->elements == 7) ? r->element[k] : NULL;
			v[k] = (e != NULL && e->type == REDIS_REPLY_STRING) ? e->str : "";
		}
		struct queue_held h = { .member = m->str, .lane = lane->name, .id = v[0], .job = v[1],
					.domain = v[2], .reason = v[3], .to = v[4] };
		h.held_at_ms = strtoull(v[5], NULL, 10);
		h.since_ms = strtoull(v[6], NULL, 10);
		fn(arg, &h);
		freeReplyObject(r);
		count++;
	}
	freeReplyObject(list);
	return rc == 0 ? count : -1;
}

int queue_sync_held(struct queue_sync *s, void (*fn)(void *arg, const struct queue_held *h),
		    void *arg, char *err, size_t errlen)
{
	int count = 0;
	for (int i = 0; i < s->nlanes; i++) {
		int n = held_lane(s, &s->lanes[i], fn, arg, err, errlen);
		if (n < 0)
			return -1;
		count += n;
	}
	return count;
}

static char *held_hash(const struct qlane *lane, const char *m, size_t ml)
{
	size_t kl = strlen(lane->held);
	char *key = qalloc(kl + 1 + ml + 1);
	memcpy(key, lane->held, kl);
	key[kl] = ':';
	memcpy(key + kl + 1, m, ml);
	return key;
}

#define RELEASE_CHUNK 256 /* members per release script call */

/* Release members m[0..n) of lane (one script call, every key declared).
 * Adds the count released to *moved; 0 or -1. */
static int release_some(struct queue_sync *s, const struct qlane *lane, const redisReply *const *m,
			int n, int *moved, char *err, size_t errlen)
{
	const char **av = qalloc((size_t)(5 + 2 * n) * sizeof(*av));
	size_t *al = qalloc((size_t)(5 + 2 * n) * sizeof(*al));
	char nk[16];
	snprintf(nk, sizeof(nk), "%d", n + 2);
	av[0] = "EVAL", av[1] = qscript_release, av[2] = nk, av[3] = lane->held, av[4] = lane->stream;
	for (int i = 0; i < 5; i++)
		al[i] = strlen(av[i]);
	for (int i = 0; i < n; i++) {
		av[5 + i] = held_hash(lane, m[i]->str, m[i]->len);
		al[5 + i] = strlen(av[5 + i]);
		av[5 + n + i] = m[i]->str;
		al[5 + n + i] = m[i]->len;
	}
	redisReply *r = redisCommandArgv(s->c, 5 + 2 * n, av, al);
	for (int i = 0; i < n; i++)
		free((char *)av[5 + i]);
	free(av);
	free(al);
	if (qsync_reply_err(s->c, r, "release", err, errlen) != 0)
		return -1;
	*moved += r->type == REDIS_REPLY_ARRAY ? (int)r->elements : 0;
	freeReplyObject(r);
	return 0;
}

/* Release the held jobs of lane that match (domain, or ids); how many, or -1. */
static int release_lane(struct queue_sync *s, const struct qlane *lane, const char *domain,
			const char *const *ids, int nids, char *err, size_t errlen)
{
	/* Which members: read here (ZRANGE, then each one's domain and id), so
	 * the script is handed every key it touches. */
	const char *zv[] = { "ZRANGE", lane->held, "0", "-1" };
	redisReply *all = redisCommandArgv(s->c, 4, zv, NULL);
	if (qsync_reply_err(s->c, all, "ZRANGE", err, errlen) != 0)
		return -1;
	size_t n = all->type == REDIS_REPLY_ARRAY ? all->elements : 0;
	for (size_t i = 0; i < n; i++) {
		const redisReply *m = all->element[i];
		if (m->type != REDIS_REPLY_STRING) {
			freeReplyObject(all);
			snprintf(err, errlen, "redis: ZRANGE: unexpected reply");
			return -1;
		}
		char *key = held_hash(lane, m->str, m->len);
		const char *hv[] = { "HMGET", key, "domain", "id" };
		int rc = redisAppendCommandArgv(s->c, 4, hv, NULL);
		free(key);
		if (rc != REDIS_OK) {
			freeReplyObject(all);
			snprintf(err, errlen, "redis: HMGET: out of memory");
			return -1;
		}
	}
	const redisReply **pick = qalloc((n + 1) * sizeof(*pick));
	int npick = 0, moved = 0, rc = 0;
	for (size_t i = 0; i < n; i++) {
		redisReply *r = NULL;
		if (redisGetReply(s->c, (void **)&r) != REDIS_OK)
			r = NULL;
		if (qsync_reply_err(s->c, r, "HMGET", err, errlen) != 0) {
			rc = -1; /* r is freed; the connection is closed by the caller */
			break;
		}
		const redisReply *m = all->element[i];
		const redisReply *d = r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[0] : NULL;
		const redisReply *id = d != NULL ? r->element[1] : NULL;
		bool want = false;
		if (domain != NULL)
			want = d != NULL && d->type == REDIS_REPLY_STRING && strcmp(d->str, domain) == 0;
		for (int k = 0; domain == NULL && k < nids && !want; k++)
			want = strcmp(ids[k], m->str) == 0 ||
			       (id != NULL && id->type == REDIS_REPLY_STRING && strcmp(ids[k], id->str) == 0);
		freeReplyObject(r);
		if (want)
			pick[npick++] = m;
	}
	for (int i = 0; rc == 0 && i < npick; i += RELEASE_CHUNK)
		rc = release_some(s, lane, pick + i, npick - i < RELEASE_CHUNK ? npick - i : RELEASE_CHUNK,
				  &moved, err, errlen);
	free(pick);
	freeReplyObject(all);
	return rc == 0 ? moved : -1;
}

int queue_sync_release(struct queue_sync *s, const char *domain, const char *const *ids, int nids,
		       char *err, size_t errlen)
{
	int count = 0;
	for (int i = 0; i < s->nlanes; i++) { /* each back to its own lane */
		int n = release_lane(s, &s->lanes[i], domain, ids, nids, err, errlen);
		if (n < 0)
			return -1;
		count += n;
	}
	return count;
}

/* ---- small generic helpers (MTA-STS policy persistence) ---- */

int qsync_scan_keys(struct queue_sync *s, const char *pattern, const char *cmd,
		    void (*fn)(void *arg, const char *key, const struct redisReply *value),
		    void *arg, char *err, size_t errlen)
{
	char cursor[32] = "0";
	int n = 0;
	do {
		const char *av[] = { "SCAN", cursor, "MATCH", pattern, "COUNT", "1000" };
		redisReply *r = redisCommandArgv(s->c, 6, av, NULL);
		if (qsync_reply_err(s->c, r, "SCAN", err, errlen) != 0)
			return -1;
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
			freeReplyObject(r);
			snprintf(err, errlen, "redis: SCAN: unexpected reply");
			return -1;
		}
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		redisReply *keys = r->element[1];
		for (size_t i = 0; i < keys->elements; i++) {
			const char *gv[] = { cmd, keys->element[i]->str };
			redisReply *g = redisCommandArgv(s->c, 2, gv, NULL);
			if (qsync_reply_err(s->c, g, cmd, err, errlen) != 0) {
				freeReplyObject(r);
				return -1;
			}
			if (g->type == REDIS_REPLY_STRING ||
			    (g->type == REDIS_REPLY_ARRAY && g->elements > 0)) {
				fn(arg, keys->element[i]->str, g);
				n++;
			}
			freeReplyObject(g);
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
	return n;
}

struct scan_get {
	void (*fn)(void *arg, const char *key, const char *value);
	void *arg;
};

static void scan_got(void *arg, const char *key, const redisReply *value)
{
	struct scan_get *sg = arg;
	if (value->type == REDIS_REPLY_STRING)
		sg->fn(sg->arg, key, value->str);
}

int queue_sync_scan(struct queue_sync *s, const char *pattern,
		    void (*fn)(void *arg, const char *key, const char *value), void *arg,
		    char *err, size_t errlen)
{
	struct scan_get sg = { fn, arg };
	return qsync_scan_keys(s, pattern, "GET", scan_got, &sg, err, errlen);
}

static void on_fire_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct qconn *c = qconn_reply(ac, r);
	redisReply *reply = r;
	(void)priv;
	if (reply != NULL && !c->q->freeing && reply->type == REDIS_REPLY_ERROR)
		qlog(c->q, QUEUE_LOG_WARN, "evt=redis_command_failed err=\"%s\"", reply->str);
}

int queue_command(struct queue *q, int argc, const char **argv)
{
	struct qconn *c = &q->cmd;
	if (c->state != QC_READY)
		return -ENOTCONN;
	return qconn_send(c, on_fire_reply, NULL, argc, argv, NULL) == 0 ? 0 : -ENOTCONN;
}
