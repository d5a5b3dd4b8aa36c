/* sentinel.c: which host:port is the Redis master now, when Redis Sentinel
 * says (README "Sentinel"; the protocol is Redis's "Sentinel client spec").
 *
 * - Asking: SENTINEL get-master-addr-by-name NAME, to one sentinel after the
 *   other (the last one that answered first), each within QS_ASK_MS; the
 *   first valid answer wins. An answer is hostile input: the host must be an
 *   IP address or a host name, the port 1..65535, else the next sentinel is
 *   asked. A connection to the master it names sends ROLE first and is
 *   dropped (and the sentinels asked again) unless that says "master".
 * - When: before a connection connects, when the last answer is stale: at
 *   start, and after any failure of a connection to the master (lost,
 *   refused, READONLY, ROLE not master: qsent_stale). A connection waiting
 *   for the answer is connected when it comes, or retried after its back-off
 *   when no sentinel gave one.
 * - Failover at once: one more connection, to one sentinel, is subscribed to
 *   +switch-master; a message for our master name drops both connections
 *   and asks again at once (the message itself only triggers the ask).
 * - When the master changed, our consumer's pending entries are read again
 *   (on_own): a commit the old master acknowledged but did not replicate left
 *   its job pending on the new one, and it is delivered again rather than
 *   waiting for the visibility timeout.
 * XXX(sentinel): hiredis resolves a host name with a blocking getaddrinfo in
 * redisAsyncConnect (as for the url's host); IP addresses do not block.
 * Lifetimes: every hiredis context here is this module's; s->ac and s->sub
 * are cleared before redisAsyncFree, and callbacks for a context that is no
 * longer current do nothing. Continuations run from timers, never inside a
 * hiredis callback. Everything runs on the host's loop thread. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "queue/queue_int.h"

#define QS_ASK_MS 1000       /* one sentinel: connect and answer */
#define QS_SUB_RETRY_MS 1000 /* the subscription lost: again, at the next sentinel */

/* ---- pure: lists, names, answers ---- */

bool queue_host_ok(const char *host, size_t n)
{
	char buf[256];
	unsigned char addr[16];
	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, host, n);
	buf[n] = '\0';
	if (strlen(buf) != n)
		return false; /* a NUL inside */
	if (inet_pton(AF_INET, buf, addr) == 1 || inet_pton(AF_INET6, buf, addr) == 1)
		return true;
	if (n > 253)
		return false;
	for (size_t i = 0, from = 0; i <= n; i++) {
		char ch = i < n ? buf[i] : '.';
		if (ch == '.') { /* a label ends: 1..63 bytes, no '-' at either end */
			size_t len = i - from;
			if (len == 0 || len > 63 || buf[from] == '-' || buf[i - 1] == '-')
				return false;
			from = i + 1;
		} else if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			     (ch >= '0' && ch <= '9') || ch == '-' || ch == '_')) {
			return false;
		}
	}
	return true;
}

static int port_parse(const char *s, size_t n, int *port)
{
	int v = 0;
	if (n == 0 || n > 5)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1 || v > 65535)
		return -1;
	*port = v;
	return 0;
}

int queue_master_addr_check(const char *host, size_t hlen, const char *port, size_t plen,
			    struct queue_hostport *out)
{
	int p;
	if (host == NULL || port == NULL || !queue_host_ok(host, hlen) ||
	    port_parse(port, plen, &p) != 0)
		return -1;
	memcpy(out->host, host, hlen);
	out->host[hlen] = '\0';
	out->port = p;
	return 0;
}

int queue_sentinels_parse(const char *s, struct queue_hostport *out, int max, char *err,
			  size_t errlen)
{
	int n = 0;
	if (s == NULL)
		s = "";
	for (const char *p = s;;) {
		p += strspn(p, " \t");
		size_t len = strcspn(p, ",");
		size_t tl = len;
		while (tl > 0 && (p[tl - 1] == ' ' || p[tl - 1] == '\t'))
			tl--;
		const char *host = p, *colon = NULL;
		size_t hl = tl;
		if (tl > 0 && p[0] == '[') { /* [v6]:port */
			const char *rb = memchr(p, ']', tl);
			if (rb == NULL || (rb + 1 < p + tl && rb[1] != ':'))
				goto bad;
			host = p + 1;
			hl = (size_t)(rb - host);
			colon = rb + 1 < p + tl ? rb + 1 : NULL;
			if (memchr(host, ':', hl) == NULL)
				goto bad; /* brackets are for IPv6 addresses */
		} else {
			colon = memchr(p, ':', tl);
			if (colon != NULL && memchr(colon + 1, ':', (size_t)(p + tl - colon - 1)) != NULL)
				goto bad; /* a bare IPv6 address: write [ADDR]:PORT */
			if (colon != NULL)
				hl = (size_t)(colon - p);
		}
		if (n == max) {
			snprintf(err, errlen, "more than %d sentinels", max);
			return -1;
		}
		if (!queue_host_ok(host, hl))
			goto bad;
		memcpy(out[n].host, host, hl);
		out[n].host[hl] = '\0';
		out[n].port = QUEUE_SENTINEL_PORT;
		if (colon != NULL && port_parse(colon + 1, (size_t)(p + tl - colon - 1), &out[n].port) != 0)
			goto bad;
		n++;
		if (p[len] == '\0')
			return n;
		p += len + 1;
		continue;
	bad:
		snprintf(err, errlen, "bad sentinel \"%.*s\": expected HOST:PORT or [IPV6]:PORT",
			 (int)(tl > 200 ? 200 : tl), p);
		return -1;
	}
}

/* ---- synchronous ask (commands, start-up) ---- */

int qsent_ask_sync(const struct queue_config *cfg, int from, struct queue_addr *a, char *err,
		   size_t errlen)
{
	struct queue_hostport s[QUEUE_SENTINELS_MAX], m;
	struct timeval tv = { 1, 0 };
	char why[256];
	int n = queue_sentinels_parse(cfg->sentinels, s, QUEUE_SENTINELS_MAX, why, sizeof(why));
	if (n < 0) {
		snprintf(err, errlen, "%s", why);
		return -1;
	}
	if (from >= n)
		return -1; /* err says what went wrong with the last */
	if (from == 0)
		snprintf(err, errlen, "redis: no sentinel named master \"%s\"", cfg->master_name);
	for (int i = from; i < n; i++) {
		redisContext *c = redisConnectWithTimeout(s[i].host, s[i].port, tv);
		if (c == NULL || c->err) {
			snprintf(err, errlen, "redis: sentinel %s:%d: %s", s[i].host, s[i].port,
				 c ? c->errstr : "out of memory");
			redisFree(c);
			continue;
		}
		redisSetTimeout(c, tv);
		redisReply *r;
		if (cfg->sentinel_password && cfg->sentinel_password[0]) {
			const char *av[] = { "AUTH", cfg->sentinel_password };
			r = redisCommandArgv(c, 2, av, NULL);
			if (r != NULL)
				freeReplyObject(r); /* a refusal shows in the next reply */
		}
		const char *av[] = { "SENTINEL", "get-master-addr-by-name", cfg->master_name };
		r = redisCommandArgv(c, 3, av, NULL);
		if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
		    r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING &&
		    queue_master_addr_check(r->element[0]->str, r->element[0]->len, r->element[1]->str,
					    r->element[1]->len, &m) == 0) {
			freeReplyObject(r);
			redisFree(c);
			snprintf(a->host, sizeof(a->host), "%s", m.host);
			a->port = m.port;
			a->path[0] = '\0';
			return i;
		}
		snprintf(err, errlen, "redis: sentinel %s:%d: %s", s[i].host, s[i].port,
			 r == NULL			      ? (c->errstr[0] ? c->errstr : "no reply")
			 : r->type == REDIS_REPLY_ERROR ? r->str
			 : r->type == REDIS_REPLY_NIL   ? "no such master"
							: "bad answer");
		if (r != NULL)
			freeReplyObject(r);
		redisFree(c);
	}
	return -1;
}

/* ---- asynchronous ask ---- */

enum qs_phase { QS_IDLE, QS_WAIT, QS_NEXT, QS_DONE };

struct qsent {
	struct queue *q;
	struct queue_hostport s[QUEUE_SENTINELS_MAX];
	int n;
	int first;   /* asked first: the last that answered */
	bool known;  /* q->addr holds an answer, and no connection failed since */
	bool rotated; /* first moved on since that answer (qsent_stale) */
	bool have;   /* master holds an earlier answer */
	struct queue_hostport master, answer;
	/* the ask */
	enum qs_phase phase;
	int tried, cur;
	redisAsyncContext *ac;
	struct queue_timer *ask_t;
	char why[200]; /* what the last sentinel did wrong */
	/* the subscription */
	redisAsyncContext *sub;
	int sub_idx;
	bool switch_pending, sub_started;
	struct queue_timer *sub_t;
};

static void ask_next(struct qsent *s);
static void sub_connect(struct qsent *s);

static void ask_drop(struct qsent *s)
{
	redisAsyncContext *ac = s->ac;
	s->ac = NULL;
	if (ac != NULL)
		redisAsyncFree(ac); /* deferred by hiredis inside its callbacks */
}

/* From a callback: go on from the timer, outside hiredis. */
static void ask_then(struct qsent *s, enum qs_phase ph)
{
	s->phase = ph;
	s->q->h.timer_arm(s->ask_t, 0);
}

static void on_ask_connect(const redisAsyncContext *ac, int status)
{
	struct qsent *s = ac->data;
	if (status != REDIS_OK && ac == s->ac) {
		snprintf(s->why, sizeof(s->why), "%s", ac->errstr[0] ? ac->errstr : "connect failed");
		s->ac = NULL; /* hiredis frees it */
		ask_then(s, QS_NEXT);
	}
}

static void on_ask_disconnect(const redisAsyncContext *ac, int status)
{
	struct qsent *s = ac->data;
	(void)status;
	if (ac == s->ac) {
		snprintf(s->why, sizeof(s->why), "%s", ac->errstr[0] ? ac->errstr : "closed");
		s->ac = NULL;
		ask_then(s, QS_NEXT);
	}
}

static void on_answer(redisAsyncContext *ac, void *r, void *priv)
{
	struct qsent *s = ac->data;
	redisReply *reply = r;
	(void)priv;
	if (ac != s->ac || s->q->freeing)
		return;
	if (reply == NULL) {
		snprintf(s->why, sizeof(s->why), "%s", ac->errstr[0] ? ac->errstr : "no reply");
		s->ac = NULL; /* being freed by hiredis */
		ask_then(s, QS_NEXT);
		return;
	}
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
	    reply->element[0]->type == REDIS_REPLY_STRING &&
	    reply->element[1]->type == REDIS_REPLY_STRING &&
	    queue_master_addr_check(reply->element[0]->str, reply->element[0]->len,
				    reply->element[1]->str, reply->element[1]->len, &s->answer) == 0) {
		s->first = s->cur;
		ask_drop(s);
		ask_then(s, QS_DONE);
		return;
	}
	char buf[120];
	if (reply->type == REDIS_REPLY_ERROR)
		job_escape(buf, sizeof(buf), reply->str, reply->len, JOB_ESC_QUOTED);
	snprintf(s->why, sizeof(s->why), "%s",
		 reply->type == REDIS_REPLY_ERROR ? buf
		 : reply->type == REDIS_REPLY_NIL ? "no such master"
						  : "bad answer (not an IP or name and a port)");
	ask_drop(s);
	ask_then(s, QS_NEXT);
}

static redisAsyncContext *sentinel_connect(struct qsent *s, int i, void (*conn_cb)(const redisAsyncContext *, int),
					   void (*disc_cb)(const redisAsyncContext *, int))
{
	struct queue *q = s->q;
	redisAsyncContext *ac = redisAsyncConnect(s->s[i].host, s->s[i].port);
	if (ac == NULL || ac->err) {
		snprintf(s->why, sizeof(s->why), "%s", ac ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		return NULL;
	}
	ac->data = s;
	if (q->h.attach(q->h.ctx, ac) != 0) {
		snprintf(s->why, sizeof(s->why), "cannot attach to the loop");
		redisAsyncFree(ac);
		return NULL;
	}
	redisAsyncSetConnectCallback(ac, conn_cb);
	redisAsyncSetDisconnectCallback(ac, disc_cb);
	const char *pw = q->cfg.sentinel_password;
	if (pw != NULL && pw[0] != '\0') {
		const char *av[] = { "AUTH", pw };
		redisAsyncCommandArgv(ac, NULL, NULL, 2, av, NULL); /* a refusal shows next */
	}
	return ac;
}

static void ask_failed(struct qsent *s)
{
	struct queue *q = s->q;
	s->phase = QS_IDLE;
	char why[300];
	snprintf(why, sizeof(why), "sentinels: no master %s: %s", q->cfg.master_name, s->why);
	struct qconn *conns[] = { &q->cmd, &q->clm };
	for (int i = 0; i < 2; i++) {
		if (conns[i]->want_addr) {
			conns[i]->want_addr = false;
			qconn_retry(conns[i], false, why);
		}
	}
}

/* The current sentinel gave no usable answer (s->why): said, at info. */
static void ask_skip(struct qsent *s)
{
	qlog(s->q, QUEUE_LOG_INFO, "evt=sentinel_skipped sentinel=%s:%d err=\"%s\"", s->s[s->cur].host,
	     s->s[s->cur].port, s->why);
}

static void ask_next(struct qsent *s)
{
	struct queue *q = s->q;
	while (s->tried < s->n) {
		s->cur = (s->first + s->tried++) % s->n;
		s->ac = sentinel_connect(s, s->cur, on_ask_connect, on_ask_disconnect);
		if (s->ac == NULL) {
			ask_skip(s);
			continue;
		}
		const char *av[] = { "SENTINEL", "get-master-addr-by-name", q->cfg.master_name };
		if (redisAsyncCommandArgv(s->ac, on_answer, NULL, 3, av, NULL) != REDIS_OK) {
			ask_drop(s);
			continue;
		}
		s->phase = QS_WAIT;
		q->h.timer_arm(s->ask_t, QS_ASK_MS);
		return;
	}
	ask_failed(s);
}

/* The sentinels named s->answer: use it; connect whatever waits. */
static void ask_done(struct qsent *s)
{
	struct queue *q = s->q;
	bool changed = s->have && (strcmp(s->master.host, s->answer.host) != 0 ||
				   s->master.port != s->answer.port);
	s->phase = QS_IDLE;
	if (changed) {
		qlog(q, QUEUE_LOG_WARN, "evt=redis_master_changed from=%s:%d to=%s:%d", s->master.host,
		     s->master.port, s->answer.host, s->answer.port);
		/* connections still open were made to the old master (their
		 * loss says nothing of the sentinel that answered) */
		s->rotated = true;
		qconn_drop(&q->cmd);
		qconn_drop(&q->clm);
		q->own_done = false; /* see the top of this file */
		q->own_lane = 0;     /* every lane again, from the first */
		strcpy(q->own_cursor, "0-0");
		q->commit_backoff = 0; /* errors of the old master say nothing of the new */
		q->commit_hold_until = 0;
	} else if (!s->have) {
		qlog(q, QUEUE_LOG_INFO, "evt=redis_master addr=%s:%d name=%s", s->answer.host,
		     s->answer.port, q->cfg.master_name);
	}
	s->master = s->answer;
	s->have = true;
	s->known = true;
	s->rotated = false;
	if (!s->sub_started) { /* subscribe where the answer came from */
		s->sub_started = true;
		s->sub_idx = s->first;
		sub_connect(s);
	}
	snprintf(q->addr.host, sizeof(q->addr.host), "%s", s->master.host);
	q->addr.port = s->master.port;
	q->addr.path[0] = '\0';
	struct qconn *conns[] = { &q->cmd, &q->clm };
	for (int i = 0; i < 2; i++) {
		conns[i]->want_addr = false;
		if (conns[i]->ac == NULL)
			qconn_connect(conns[i]); /* a connection in back-off too: the master is new */
	}
}

static void on_ask_timer(void *arg)
{
	struct qsent *s = arg;
	switch (s->phase) {
	case QS_WAIT:
		snprintf(s->why, sizeof(s->why), "no answer in %d ms", QS_ASK_MS);
		ask_drop(s);
		ask_skip(s);
		ask_next(s);
		break;
	case QS_NEXT:
		ask_skip(s);
		ask_next(s);
		break;
	case QS_DONE:
		ask_done(s);
		break;
	case QS_IDLE:
		break;
	}
}

bool qsent_addr(struct qsent *s, struct qconn *c)
{
	struct queue *q = s->q;
	if (s->known) {
		snprintf(q->addr.host, sizeof(q->addr.host), "%s", s->master.host);
		q->addr.port = s->master.port;
		q->addr.path[0] = '\0';
		return true;
	}
	c->want_addr = true;
	if (s->phase == QS_IDLE) {
		s->tried = 0;
		ask_next(s);
	}
	return false;
}

void qsent_stale(struct qsent *s, bool rotate)
{
	s->known = false;
	if (rotate && !s->rotated) { /* an answer that does not work: its sentinel is not
				      * asked first again (once per answer, whatever fails) */
		s->rotated = true;
		s->first = (s->first + 1) % s->n;
	}
}

bool qsent_role_ok(struct queue *q, const struct qconn *c, const redisReply *r)
{
	if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOPERM", 6) == 0) {
		qlog(q, QUEUE_LOG_INFO, "evt=redis_role_unchecked conn=%s (ROLE refused to this user)",
		     c->name);
		return true;
	}
	if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
	    r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0)
		return true;
	char role[64] = "?";
	if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_STRING)
		job_escape(role, sizeof(role), r->element[0]->str, r->element[0]->len, JOB_ESC_QUOTED);
	qlog(q, QUEUE_LOG_WARN, "evt=redis_not_master conn=%s addr=%s:%d role=\"%s\" (asking the sentinels again)",
	     c->name, q->addr.host, q->addr.port, role);
	qsent_stale(q->sent, true); /* that sentinel is behind: another first */
	return false;
}

/* ---- the +switch-master subscription ---- */

static void sub_lost(struct qsent *s, const char *why)
{
	qlog(s->q, QUEUE_LOG_INFO, "evt=sentinel_sub_down sentinel=%s:%d err=\"%s\" retry_ms=%d",
	     s->s[s->sub_idx].host, s->s[s->sub_idx].port, why, QS_SUB_RETRY_MS);
	s->sub_idx = (s->sub_idx + 1) % s->n;
	s->q->h.timer_arm(s->sub_t, QS_SUB_RETRY_MS);
}

static void on_sub_connect(const redisAsyncContext *ac, int status)
{
	struct qsent *s = ac->data;
	if (status != REDIS_OK && ac == s->sub && !s->q->freeing) {
		s->sub = NULL;
		sub_lost(s, ac->errstr[0] ? ac->errstr : "connect failed");
	}
}

static void on_sub_disconnect(const redisAsyncContext *ac, int status)
{
	struct qsent *s = ac->data;
	(void)status;
	if (ac == s->sub && !s->q->freeing) {
		s->sub = NULL;
		sub_lost(s, ac->errstr[0] ? ac->errstr : "closed");
	}
}

static const char *last_space(const char *p, size_t n)
{
	while (n > 0)
		if (p[--n] == ' ')
			return p + n;
	return NULL;
}

/* "+switch-master" payload: NAME OLDIP OLDPORT NEWIP NEWPORT. */
static void on_sub_msg(redisAsyncContext *ac, void *r, void *priv)
{
	struct qsent *s = ac->data;
	struct queue *q = s->q;
	redisReply *reply = r;
	(void)priv;
	if (ac != s->sub || q->freeing || reply == NULL)
		return; /* a loss: the disconnect callback says */
	if (reply->type == REDIS_REPLY_ERROR) {
		char buf[120];
		job_escape(buf, sizeof(buf), reply->str, reply->len, JOB_ESC_QUOTED);
		s->sub = NULL;
		redisAsyncFree(ac);
		sub_lost(s, buf);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(reply->element[0]->str, "message") != 0 ||
	    reply->element[2]->type != REDIS_REPLY_STRING)
		return; /* the subscribe confirmation */
	const char *p = reply->element[2]->str;
	size_t nl = strlen(q->cfg.master_name), len = reply->element[2]->len;
	if (len <= nl || strncmp(p, q->cfg.master_name, nl) != 0 || p[nl] != ' ')
		return; /* another master's */
	const char *sp2 = last_space(p, len), *sp1 = sp2 ? last_space(p, (size_t)(sp2 - p)) : NULL;
	struct queue_hostport to;
	if (sp1 != NULL && s->known &&
	    queue_master_addr_check(sp1 + 1, (size_t)(sp2 - sp1 - 1), sp2 + 1, len - (size_t)(sp2 + 1 - p),
				    &to) == 0 &&
	    strcmp(to.host, s->master.host) == 0 && to.port == s->master.port)
		return; /* there already (a READONLY got us there first) */
	qlog(q, QUEUE_LOG_WARN, "evt=redis_switch_master name=%s (asking the sentinels)",
	     q->cfg.master_name);
	s->switch_pending = true;
	q->h.timer_arm(s->sub_t, 0);
}

static void sub_connect(struct qsent *s)
{
	struct queue *q = s->q;
	redisAsyncContext *ac = sentinel_connect(s, s->sub_idx, on_sub_connect, on_sub_disconnect);
	if (ac == NULL) {
		sub_lost(s, s->why);
		return;
	}
	const char *av[] = { "SUBSCRIBE", "+switch-master" };
	if (redisAsyncCommandArgv(ac, on_sub_msg, NULL, 2, av, NULL) != REDIS_OK) {
		redisAsyncFree(ac);
		sub_lost(s, "cannot subscribe");
		return;
	}
	s->sub = ac;
	(void)q;
}

static void on_sub_timer(void *arg)
{
	struct qsent *s = arg;
	struct queue *q = s->q;
	if (s->switch_pending) {
		/* The sentinels failed over: what we are connected to is the old
		 * master. Drop, and ask again now rather than after a back-off. */
		s->switch_pending = false;
		qsent_stale(s, false);
		qconn_drop(&q->cmd);
		qconn_drop(&q->clm);
		qconn_connect(&q->cmd);
		qconn_connect(&q->clm);
	}
	if (s->sub == NULL && !q->freeing)
		sub_connect(s);
}

/* ---- life ---- */

struct qsent *qsent_new(struct queue *q, char *err, size_t errlen)
{
	struct qsent *s = qalloc(sizeof(*s));
	s->q = q;
	s->n = queue_sentinels_parse(q->cfg.sentinels, s->s, QUEUE_SENTINELS_MAX, err, errlen);
	if (s->n < 0) {
		free(s);
		return NULL;
	}
	if (q->cfg.master_name == NULL || q->cfg.master_name[0] == '\0' ||
	    strpbrk(q->cfg.master_name, " \t\r\n") != NULL) {
		snprintf(err, errlen, "sentinels need a master name (one word)");
		free(s);
		return NULL;
	}
	s->ask_t = q->h.timer_new(q->h.ctx, on_ask_timer, s);
	s->sub_t = q->h.timer_new(q->h.ctx, on_sub_timer, s);
	return s;
}

void qsent_free(struct qsent *s)
{
	if (s == NULL)
		return;
	ask_drop(s);
	redisAsyncContext *sub = s->sub;
	s->sub = NULL;
	if (sub != NULL)
		redisAsyncFree(sub);
	s->q->h.timer_free(s->ask_t);
	s->q->h.timer_free(s->sub_t);
	free(s);
}
