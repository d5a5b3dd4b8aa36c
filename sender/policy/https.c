/* https.c: one HTTPS/1.1 request per connection, on the loop.
 *
 * Steps: resolve (dns.h) -> connect to each address in turn until one accepts
 * (conn.h) -> TLS with a verifying context and the host as SNI and verify name
 * (tls.h; a verification failure aborts the handshake and is reported as
 * HTTPS_E_CERT) -> write the request -> parse the response incrementally:
 * status line and headers (capped at HEAD_MAX), then the body by
 * Content-Length, chunked coding, or until close, never holding more than
 * max_body bytes (RFC 8461 3.3: policies are at most 64 KiB; "the sender MUST
 * NOT ... follow redirects", so 3xx fails). The response parser (struct
 * https_resp) is pure and knows nothing of the request, so tests/fuzz can drive
 * it with a hostile server's bytes; the request copies its result in finish().
 *
 * Lifetime (STYLE 5): the request never frees itself inside a conn or dns
 * callback. finish() records the result, closes the connection (conn.c frees
 * it once the kernel is done) and defers `task`, which runs the user callback
 * and frees the request, unless a DNS answer is still due: the DNS callback
 * (which cannot be cancelled) then frees it. */
#include "sender/policy/https.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sender/conn.h"
#include "sender/dns.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/tls.h"
#include "sender/util.h"

#define HEAD_MAX (16 * 1024) /* status line + headers */
#define LINE_MAX_CHUNK 256   /* chunk-size line, chunk CRLF, trailer line */

enum rstate {
	R_HEAD,       /* status line and headers */
	R_BODY_LEN,   /* Content-Length bytes left in `left` */
	R_BODY_EOF,   /* until the server closes */
	R_CHUNK_SIZE, /* chunk-size [; ext] line */
	R_CHUNK_DATA, /* `left` bytes of chunk data */
	R_CHUNK_END,  /* the CRLF after chunk data */
	R_TRAILER,    /* trailer lines until an empty one */
	R_DONE,
};

struct https_req {
	struct loop *l;
	struct dns *dns;
	struct tlscache *tc;
	https_done_fn *cb;
	void *arg;
	/* copied parameters */
	char *method, *host, *path, *ctype, *reqbody;
	size_t reqlen;
	int port;
	uint32_t timeout_ms;
	/* addresses */
	struct sockaddr_storage addrs[DNS_MAX_ADDRS];
	int naddrs, next_addr;
	/* progress */
	struct conn *conn;
	struct loop_timer timer;
	struct loop_task task;
	bool dns_pending, finished, cancelled, delivered, tls_up;
	struct https_resp *resp;
	struct https_result res; /* fail, why, peer; the rest comes from resp */
};

static const char *const fail_names[] = {
	"ok", "dns", "connect", "tls", "certificate", "timeout", "protocol", "status",
	"content-type", "too-big",
};

const char *https_fail_name(enum https_fail f)
{
	return (unsigned)f < ARRAY_LEN(fail_names) ? fail_names[f] : "?";
}

const char *https_fail_tlsrpt(enum https_fail f)
{
	if (f == HTTPS_OK)
		return NULL;
	return f == HTTPS_E_CERT ? "sts-webpki-invalid" : "sts-policy-fetch-error";
}

static void req_free(struct https_req *r)
{
	free(r->method);
	free(r->host);
	free(r->path);
	free(r->ctype);
	free(r->reqbody);
	https_resp_free(r->resp);
	free(r);
}

static void task_fn(struct loop_task *t)
{
	struct https_req *r = container_of(t, struct https_req, task);
	if (!r->cancelled && !r->delivered) {
		r->delivered = true;
		const struct https_result *pr = https_resp_result(r->resp);
		r->res.body = pr->body;
		r->res.len = pr->len;
		r->cb(r->arg, &r->res);
	}
	if (!r->dns_pending)
		req_free(r);
}

/* Set res's failure and, unless fmt is NULL, its why (printf-style). */
static void __attribute__((format(printf, 3, 0)))
set_fail(struct https_result *res, enum https_fail f, const char *fmt, va_list ap)
{
	res->fail = f;
	if (fmt)
		vsnprintf(res->why, sizeof(res->why), fmt, ap);
}

static void __attribute__((format(printf, 3, 4)))
finish(struct https_req *r, enum https_fail f, const char *fmt, ...)
{
	if (r->finished)
		return;
	r->finished = true;
	loop_timer_stop(r->l, &r->timer);
	if (r->conn) {
		strlcpy_x(r->res.peer, conn_peer(r->conn), sizeof(r->res.peer));
		conn_close(r->conn);
		r->conn = NULL;
	}
	const struct https_result *pr = https_resp_result(r->resp);
	r->res.status = pr->status;
	strlcpy_x(r->res.content_type, pr->content_type, sizeof(r->res.content_type));
	va_list ap;
	va_start(ap, fmt);
	set_fail(&r->res, f, fmt, ap);
	va_end(ap);
	if (f != HTTPS_OK)
		log_debug("evt=https_fail host=%s port=%d path=%s fail=%s why=\"%s\"", r->host, r->port,
			  r->path, https_fail_name(f), r->res.why);
	loop_defer(r->l, &r->task);
}

/* ---- the response parser (pure; https.h) ---- */

struct https_resp {
	enum rstate st;
	size_t max_body;
	char *want_type; /* NULL: any */
	bool any_2xx, head_req;
	char *head;      /* HEAD_MAX + 1, allocated on the first byte */
	size_t hlen;
	char line[LINE_MAX_CHUNK];
	size_t llen;
	uint64_t left;
	char *body;      /* max_body + 1, allocated when the head is accepted */
	size_t blen;
	struct https_result res; /* body/len track body/blen; peer stays "" */
};

struct https_resp *https_resp_new(size_t max_body, const char *want_type, bool any_2xx,
				  bool head_request)
{
	struct https_resp *p = xcalloc(1, sizeof(*p));
	p->st = R_HEAD;
	p->max_body = max_body ? max_body : HTTPS_BODY_MAX_DEFAULT;
	p->want_type = want_type ? xstrdup(want_type) : NULL;
	p->any_2xx = any_2xx;
	p->head_req = head_request;
	p->res.body = "";
	return p;
}

void https_resp_free(struct https_resp *p)
{
	if (p == NULL)
		return;
	free(p->want_type);
	free(p->head);
	free(p->body);
	free(p);
}

const struct https_result *https_resp_result(const struct https_resp *p)
{
	return &p->res;
}

bool https_resp_head_done(const struct https_resp *p)
{
	return p->body != NULL; /* allocated when the head is accepted */
}

/* The response ended: with HTTPS_OK, or with failure f and its reason. The
 * first call wins. */
static void __attribute__((format(printf, 3, 4)))
resp_end(struct https_resp *p, enum https_fail f, const char *fmt, ...)
{
	if (p->st == R_DONE)
		return;
	p->st = R_DONE;
	va_list ap;
	va_start(ap, fmt);
	set_fail(&p->res, f, fmt, ap);
	va_end(ap);
}

/* ---- body ---- */

/* Append body bytes; false (and the response ended) past the cap. What fits
 * is kept either way, so a body over the cap always reports max_body bytes
 * read, however the reads were cut. */
static bool body_add(struct https_resp *p, const char *b, size_t n)
{
	size_t room = p->max_body - p->blen, k = n < room ? n : room;
	memcpy(p->body + p->blen, b, k);
	p->blen += k;
	p->body[p->blen] = '\0';
	p->res.len = p->blen;
	if (n > room) {
		resp_end(p, HTTPS_E_TOO_BIG, "body larger than %zu bytes", p->max_body);
		return false;
	}
	return true;
}

/* Collect one line (up to LF) into p->line; returns bytes used, and sets *done
 * when the line is complete (CR/LF stripped). */
static size_t take_line(struct https_resp *p, const char *b, size_t n, bool *done)
{
	const char *nl = memchr(b, '\n', n);
	size_t use = nl ? (size_t)(nl - b) + 1 : n;
	size_t copy = nl ? use - 1 : use;
	*done = false;
	if (p->llen + copy >= sizeof(p->line)) {
		resp_end(p, HTTPS_E_PROTO, "chunked coding line too long");
		return n;
	}
	memcpy(p->line + p->llen, b, copy);
	p->llen += copy;
	if (nl) {
		if (p->llen > 0 && p->line[p->llen - 1] == '\r')
			p->llen--;
		p->line[p->llen] = '\0';
		p->llen = 0;
		*done = true;
	}
	return use;
}

static void body_done(struct https_resp *p)
{
	resp_end(p, HTTPS_OK, NULL);
}

/* Feed response body bytes (everything after the headers). */
static void body_input(struct https_resp *p, const char *b, size_t n)
{
	while (n > 0 && p->st != R_DONE) {
		size_t use;
		bool done;
		switch (p->st) {
		case R_BODY_LEN:
			use = n < p->left ? n : (size_t)p->left;
			if (!body_add(p, b, use))
				return;
			p->left -= use;
			if (p->left == 0)
				body_done(p);
			return; /* anything after the declared length is ignored */
		case R_BODY_EOF:
			body_add(p, b, n);
			return;
		case R_CHUNK_SIZE: {
			use = take_line(p, b, n, &done);
			if (done && p->st != R_DONE) {
				char *end;
				unsigned long long sz = strtoull(p->line, &end, 16);
				while (*end == ' ' || *end == '\t')
					end++;
				if (end == p->line || (*end != '\0' && *end != ';') || p->line[0] == '-') {
					resp_end(p, HTTPS_E_PROTO, "bad chunk size line");
					return;
				}
				if (sz > p->max_body - p->blen) {
					resp_end(p, HTTPS_E_TOO_BIG, "body larger than %zu bytes", p->max_body);
					return;
				}
				p->left = sz;
				p->st = sz == 0 ? R_TRAILER : R_CHUNK_DATA;
			}
			break;
		}
		case R_CHUNK_DATA:
			use = n < p->left ? n : (size_t)p->left;
			if (!body_add(p, b, use))
				return;
			p->left -= use;
			if (p->left == 0)
				p->st = R_CHUNK_END;
			break;
		case R_CHUNK_END:
			use = take_line(p, b, n, &done);
			if (done && p->st != R_DONE) {
				if (p->line[0] != '\0') {
					resp_end(p, HTTPS_E_PROTO, "chunk data longer than its size");
					return;
				}
				p->st = R_CHUNK_SIZE;
			}
			break;
		case R_TRAILER:
			use = take_line(p, b, n, &done);
			if (done && p->st != R_DONE && p->line[0] == '\0') {
				body_done(p);
				return;
			}
			break;
		default:
			return;
		}
		b += use;
		n -= use;
	}
}

/* ---- head ---- */

static bool status_ok(const struct https_resp *p, int status)
{
	return p->any_2xx ? status >= 200 && status <= 299 : status == 200;
}

/* Does the Content-Type value name media type want (parameters ignored)? */
static bool type_is(const char *v, const char *want)
{
	while (*v == ' ' || *v == '\t')
		v++;
	size_t n = strcspn(v, ";");
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	return n == strlen(want) && strncasecmp(v, want, n) == 0;
}

/* Parse a complete head (hlen bytes, ends with an empty line). Returns false
 * when the response ended (error), or when it was an interim 1xx reply
 * (*interim set) that the caller drops. */
static bool parse_head(struct https_resp *p, char *h, bool *interim)
{
	*interim = false;
	char *save = NULL;
	char *line = strtok_r(h, "\n", &save);
	if (line == NULL || strncmp(line, "HTTP/1.", 7) != 0 || strlen(line) < 12 || line[8] != ' ') {
		resp_end(p, HTTPS_E_PROTO, "not an HTTP/1.x response");
		return false;
	}
	line[strcspn(line, "\r")] = '\0';
	char *end;
	long status = strtol(line + 9, &end, 10);
	if (end != line + 12 || status < 100 || status > 599 || (*end != ' ' && *end != '\0')) {
		resp_end(p, HTTPS_E_PROTO, "bad status line \"%.60s\"", line);
		return false;
	}
	p->res.status = (int)status;
	if (status < 200) {
		*interim = true;
		return false;
	}
	const char *reason = *end ? end + 1 : "";
	bool chunked = false, have_len = false;
	uint64_t clen = 0;
	char location[200] = "";
	while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
		line[strcspn(line, "\r")] = '\0';
		char *colon = strchr(line, ':');
		if (colon == NULL || colon == line)
			continue; /* the final empty line, or junk: ignored */
		*colon = '\0';
		char *v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		size_t vl = strlen(v);
		while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
			v[--vl] = '\0';
		if (strcasecmp(line, "Content-Type") == 0) {
			strlcpy_x(p->res.content_type, v, sizeof(p->res.content_type));
		} else if (strcasecmp(line, "Content-Length") == 0) {
			char *e2;
			unsigned long long x = strtoull(v, &e2, 10);
			if (e2 == v || *e2 != '\0' || v[0] == '-' || (have_len && x != clen)) {
				resp_end(p, HTTPS_E_PROTO, "bad Content-Length \"%.40s\"", v);
				return false;
			}
			clen = x;
			have_len = true;
		} else if (strcasecmp(line, "Transfer-Encoding") == 0) {
			if (strcasecmp(v, "chunked") != 0) {
				resp_end(p, HTTPS_E_PROTO, "unsupported Transfer-Encoding \"%.40s\"", v);
				return false;
			}
			chunked = true;
		} else if (strcasecmp(line, "Location") == 0) {
			strlcpy_x(location, v, sizeof(location));
		}
	}
	if (status >= 300 && status <= 399) {
		resp_end(p, HTTPS_E_STATUS, "redirect (HTTP %ld) not followed%s%s", status,
			 location[0] ? ": Location " : "", location);
		return false;
	}
	if (!status_ok(p, (int)status)) {
		resp_end(p, HTTPS_E_STATUS, "HTTP %ld %.60s", status, reason);
		return false;
	}
	if (p->want_type && !type_is(p->res.content_type, p->want_type)) {
		resp_end(p, HTTPS_E_TYPE, "Content-Type is \"%.80s\", not %s",
			 p->res.content_type[0] ? p->res.content_type : "(none)", p->want_type);
		return false;
	}
	p->body = xmalloc(p->max_body + 1);
	p->body[0] = '\0';
	p->res.body = p->body;
	if (status == 204 || status == 304 || p->head_req) {
		body_done(p);
	} else if (chunked) { /* RFC 9112 6.3: chunked wins over Content-Length */
		p->st = R_CHUNK_SIZE;
	} else if (have_len) {
		if (clen > p->max_body) {
			resp_end(p, HTTPS_E_TOO_BIG, "body larger than %zu bytes (Content-Length %llu)",
				 p->max_body, (unsigned long long)clen);
			return false;
		}
		p->left = clen;
		p->st = R_BODY_LEN;
		if (clen == 0)
			body_done(p);
	} else {
		p->st = R_BODY_EOF;
	}
	return p->st != R_DONE;
}

/* Find the end of the head: "\r\n\r\n" or "\n\n"; returns its length or 0. */
static size_t head_end(const char *h, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if (h[i] != '\n')
			continue;
		if (h[i + 1] == '\n')
			return i + 2;
		if (h[i + 1] == '\r' && i + 2 < n && h[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

bool https_resp_input(struct https_resp *p, const char *data, size_t n)
{
	while (n > 0 && p->st == R_HEAD) {
		if (p->head == NULL)
			p->head = xmalloc(HEAD_MAX + 1);
		size_t room = HEAD_MAX - p->hlen;
		size_t take = n < room ? n : room;
		size_t scan_from = p->hlen > 3 ? p->hlen - 3 : 0;
		memcpy(p->head + p->hlen, data, take);
		p->hlen += take;
		size_t he = head_end(p->head + scan_from, p->hlen - scan_from);
		if (he == 0) {
			if (p->hlen == HEAD_MAX)
				resp_end(p, HTTPS_E_PROTO, "response headers longer than %d bytes", HEAD_MAX);
			return p->st == R_DONE;
		}
		he += scan_from;
		/* bytes of this read past the head: the body (or the next head) */
		size_t used = take - (p->hlen - he);
		p->head[he] = '\0';
		bool interim;
		bool go = parse_head(p, p->head, &interim);
		data += used;
		n -= used;
		p->hlen = 0;
		if (interim)
			continue; /* 100 Continue and friends: read the next head */
		if (!go)
			return true;
	}
	if (n > 0 && p->st != R_DONE)
		body_input(p, data, n);
	return p->st == R_DONE;
}

bool https_resp_eof(struct https_resp *p)
{
	if (p->st != R_BODY_EOF)
		return false;
	body_done(p);
	return true;
}

/* ---- the request ---- */

static void resp_done(struct https_req *r)
{
	const struct https_result *pr = https_resp_result(r->resp);
	if (pr->fail == HTTPS_OK)
		finish(r, HTTPS_OK, NULL);
	else
		finish(r, pr->fail, "%s", pr->why);
}

static void on_read(void *arg, const char *data, size_t n)
{
	struct https_req *r = arg;
	if (!r->finished && https_resp_input(r->resp, data, n))
		resp_done(r);
}

/* ---- connection ---- */

static void try_connect(struct https_req *r);

static void on_connect(void *arg, int err)
{
	struct https_req *r = arg;
	if (err < 0) {
		strlcpy_x(r->res.peer, conn_peer(r->conn), sizeof(r->res.peer));
		snprintf(r->res.why, sizeof(r->res.why), "connect to %s failed: %s", r->res.peer,
			 strerror(-err));
		conn_close(r->conn);
		r->conn = NULL;
		try_connect(r);
		return;
	}
	conn_starttls(r->conn, tls_new(r->tc, r->host, r->host, true, NULL));
}

static void on_tls(void *arg, int err)
{
	struct https_req *r = arg;
	struct tls *t = conn_tls(r->conn);
	if (err < 0) {
		if (tls_failed_verify(t))
			finish(r, HTTPS_E_CERT, "%s", tls_error(t));
		else
			finish(r, HTTPS_E_TLS, "%s", tls_error(t));
		return;
	}
	r->tls_up = true;
	char req[1024];
	char hostport[300];
	if (r->port == 443)
		strlcpy_x(hostport, r->host, sizeof(hostport));
	else
		snprintf(hostport, sizeof(hostport), "%s:%d", r->host, r->port);
	int k = snprintf(req, sizeof(req),
			 "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mxsend\r\nAccept: */*\r\n"
			 "Connection: close\r\n",
			 r->method, r->path, hostport);
	if (r->ctype)
		k += snprintf(req + k, sizeof(req) - (size_t)k, "Content-Type: %s\r\nContent-Length: %zu\r\n",
			      r->ctype, r->reqlen);
	else if (r->reqlen > 0 || strcmp(r->method, "POST") == 0)
		k += snprintf(req + k, sizeof(req) - (size_t)k, "Content-Length: %zu\r\n", r->reqlen);
	k += snprintf(req + k, sizeof(req) - (size_t)k, "\r\n");
	if (k >= (int)sizeof(req)) {
		finish(r, HTTPS_E_PROTO, "request head too long");
		return;
	}
	conn_write(r->conn, req, (size_t)k);
	if (r->reqlen > 0)
		conn_write(r->conn, r->reqbody, r->reqlen);
}

static void on_error(void *arg, int err)
{
	struct https_req *r = arg;
	if (err == 0 && https_resp_eof(r->resp)) {
		resp_done(r);
		return;
	}
	if (!r->tls_up) {
		finish(r, HTTPS_E_TLS, "connection %s in the TLS handshake",
		       err == 0 ? "closed" : strerror(-err));
		return;
	}
	if (err == -EPROTO) {
		struct tls *t = conn_tls(r->conn);
		finish(r, HTTPS_E_TLS, "%s", t ? tls_error(t) : "TLS error");
		return;
	}
	finish(r, HTTPS_E_PROTO, "connection %s %s", err == 0 ? "closed" : strerror(-err),
	       https_resp_head_done(r->resp) ? "before the end of the body"
					     : "before the end of the response headers");
}

static void on_drain(void *arg)
{
	(void)arg;
}

static const struct conn_cb cbs = {
	.on_connect = on_connect,
	.on_read = on_read,
	.on_tls = on_tls,
	.on_error = on_error,
	.on_drain = on_drain,
};

static void try_connect(struct https_req *r)
{
	while (r->next_addr < r->naddrs) {
		struct sockaddr_storage *ss = &r->addrs[r->next_addr++];
		socklen_t len;
		if (ss->ss_family == AF_INET6) {
			((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)r->port);
			len = sizeof(struct sockaddr_in6);
		} else {
			((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)r->port);
			len = sizeof(struct sockaddr_in);
		}
		r->conn = conn_new(r->l, &cbs, r);
		int e = conn_connect(r->conn, (struct sockaddr *)ss, len);
		if (e == 0)
			return;
		snprintf(r->res.why, sizeof(r->res.why), "socket: %s", strerror(-e));
		conn_close(r->conn);
		r->conn = NULL;
	}
	finish(r, HTTPS_E_CONNECT, NULL); /* why: the last connect error */
}

static void on_dns(void *arg, const struct dns_mx *mx)
{
	struct https_req *r = arg;
	r->dns_pending = false;
	if (r->finished) {
		if (!r->task.queued)
			req_free(r); /* the task ran and left the request to us */
		return;
	}
	if (mx->status != DNS_OK || mx->nhosts == 0) {
		finish(r, HTTPS_E_DNS, "%s: %s", r->host, mx->why[0] ? mx->why : dns_status_name(mx->status));
		return;
	}
	const struct dns_host *h = &mx->hosts[0];
	r->naddrs = h->naddrs < DNS_MAX_ADDRS ? h->naddrs : DNS_MAX_ADDRS;
	memcpy(r->addrs, h->addrs, (size_t)r->naddrs * sizeof(r->addrs[0]));
	try_connect(r);
}

static void on_timeout(struct loop_timer *t)
{
	struct https_req *r = container_of(t, struct https_req, timer);
	const char *w = r->dns_pending ? "resolving the host"
			: r->conn == NULL ? "connecting"
			: !r->tls_up ? "connecting or in the TLS handshake"
			: https_resp_head_done(r->resp) ? "reading the body"
							: "waiting for the response";
	finish(r, HTTPS_E_TIMEOUT, "timeout after %u ms %s", r->timeout_ms, w);
}

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

struct https_req *https_request(struct loop *l, struct dns *d, struct tlscache *tc,
				const struct https_params *p, https_done_fn *cb, void *arg)
{
	struct https_req *r = xcalloc(1, sizeof(*r));
	r->l = l;
	r->dns = d;
	r->tc = tc;
	r->cb = cb;
	r->arg = arg;
	r->method = xstrdup(p->method ? p->method : "GET");
	r->host = xstrdup(p->host ? p->host : "");
	r->path = xstrdup(p->path && p->path[0] ? p->path : "/");
	r->ctype = dup_or_null(p->content_type);
	if (p->body && p->len > 0) {
		r->reqbody = xmalloc(p->len);
		memcpy(r->reqbody, p->body, p->len);
		r->reqlen = p->len;
	}
	r->port = p->port > 0 ? p->port : 443;
	r->timeout_ms = p->timeout_ms ? p->timeout_ms : HTTPS_TIMEOUT_DEFAULT;
	r->resp = https_resp_new(p->max_body, p->want_type, p->any_2xx, strcmp(r->method, "HEAD") == 0);
	loop_timer_init(&r->timer, on_timeout);
	loop_task_init(&r->task, task_fn);
	loop_timer_arm(l, &r->timer, r->timeout_ms);
	/* Reject what cannot go on the request line or into a Host header. */
	if (strpbrk(r->path, " \r\n") || strpbrk(r->host, " \r\n/:") || r->host[0] == '\0' ||
	    strpbrk(r->method, " \r\n") || (r->ctype && strpbrk(r->ctype, "\r\n"))) {
		finish(r, HTTPS_E_PROTO, "bad request parameters");
		return r;
	}
	if (p->addr && p->addrlen <= sizeof(r->addrs[0])) {
		memcpy(&r->addrs[0], p->addr, p->addrlen);
		r->naddrs = 1;
		try_connect(r); /* conn callbacks come from completions: never before we return */
		return r;
	}
	r->dns_pending = true;
	dns_resolve_addr(d, r->host, on_dns, r);
	return r;
}

void https_cancel(struct https_req *r)
{
	if (r == NULL || r->cancelled)
		return;
	r->cancelled = true;
	if (!r->finished) {
		r->finished = true;
		loop_timer_stop(r->l, &r->timer);
		conn_close(r->conn);
		r->conn = NULL;
		loop_defer(r->l, &r->task);
	}
	/* finished: the queued task sees `cancelled` and only frees */
}
