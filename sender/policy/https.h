/* https.h: a small HTTPS/1.1 client on the loop, for MTA-STS policy fetches
 * (RFC 8461 3.3: GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt) and
 * TLSRPT https: reports (RFC 8460 3: POST).
 *
 * One request per connection ("Connection: close"). The host name is resolved
 * with dns.h, sent as SNI and Host, and the server certificate must verify for
 * it (WebPKI: chain to the CA file of the tlscache, name match); redirects are
 * never followed (3xx is a failure); the response body is read incrementally
 * and capped; Content-Length, chunked and close-delimited bodies are
 * understood. One deadline covers everything from DNS to the last byte.
 *
 * Callbacks: cb runs exactly once, on the loop, never before https_request
 * returns, unless https_cancel() is called first (then never). The result and
 * the body it points to are borrowed for the duration of the callback. */
#ifndef SENDER_POLICY_HTTPS_H
#define SENDER_POLICY_HTTPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct loop;
struct dns;
struct tlscache;
struct https_req;

enum https_fail {
	HTTPS_OK,
	HTTPS_E_DNS,     /* no address for the host */
	HTTPS_E_CONNECT, /* no address accepted the connection */
	HTTPS_E_TLS,     /* TLS handshake or record failure (not the certificate) */
	HTTPS_E_CERT,    /* certificate chain or name did not verify (WebPKI) */
	HTTPS_E_TIMEOUT, /* the request's deadline passed */
	HTTPS_E_PROTO,   /* malformed or truncated HTTP response */
	HTTPS_E_STATUS,  /* status not accepted (3xx redirects included) */
	HTTPS_E_TYPE,    /* Content-Type is not the one required */
	HTTPS_E_TOO_BIG, /* body larger than max_body */
};
/* "ok","dns","connect","tls","certificate","timeout","protocol","status",
 * "content-type","too-big" */
const char *https_fail_name(enum https_fail f);
/* The RFC 8460 4.3 result type a policy fetch failure is reported as:
 * "sts-webpki-invalid" for HTTPS_E_CERT, "sts-policy-fetch-error" for the
 * other failures, NULL for HTTPS_OK. (A body that does not parse as a policy
 * is "sts-policy-invalid"; that is the caller's finding.) */
const char *https_fail_tlsrpt(enum https_fail f);

#define HTTPS_BODY_MAX_DEFAULT (64 * 1024) /* RFC 8461 3.3 policy size limit */
#define HTTPS_TIMEOUT_DEFAULT 30000

struct https_params {
	const char *method;       /* "GET", "POST"; NULL = "GET" */
	const char *host;         /* DNS name: resolved, SNI, Host header, verified */
	int port;                 /* 0 = 443 */
	const char *path;         /* "/.well-known/mta-sts.txt" */
	const char *content_type; /* of the request body; NULL when there is none */
	const void *body;         /* request body (copied), NULL/0 for none */
	size_t len;
	uint32_t timeout_ms;      /* whole request; 0 = HTTPS_TIMEOUT_DEFAULT */
	size_t max_body;          /* response body cap; 0 = HTTPS_BODY_MAX_DEFAULT */
	const char *want_type;    /* required response media type ("text/plain";
				   * parameters like charset allowed); NULL = any */
	bool any_2xx;             /* accept 200-299 (report POST); false = 200 only */
	/* Optional: connect here instead of resolving host (copied; the port
	 * field of addr is replaced by `port`). */
	const struct sockaddr *addr;
	socklen_t addrlen;
};

struct https_result {
	enum https_fail fail;
	int status;               /* HTTP status, 0 if none was read */
	const char *body;         /* response body ("" if none), NUL-terminated */
	size_t len;
	char content_type[128];   /* as received, "" if none */
	char why[320];            /* for failures: "HTTP 404 Not Found", "redirect (HTTP 301)
				   * not followed: Location https://...", "certificate verify
				   * failed: ...", "body larger than 65536 bytes" */
	char peer[64];            /* "IP:PORT" of the last connection, "" if none */
};

typedef void https_done_fn(void *arg, const struct https_result *r);

/* Start a request. p and everything it points to are copied. dns and tc are
 * borrowed for the request's life (tc: tlscache_ctx(tc, true) is used, no
 * session resumption). Never returns NULL.
 * The address comes from dns_resolve_addr(host). XXX(lead): dns_free() while
 * a request waits for DNS leaks the request. */
struct https_req *https_request(struct loop *l, struct dns *d, struct tlscache *tc,
				const struct https_params *p, https_done_fn *cb, void *arg);
/* Abandon a request: no callback follows; memory is released once nothing is
 * in flight. Not to be called from inside its own callback (the request is
 * already finished then). NULL is a no-op. */
void https_cancel(struct https_req *r);

/* ---- the response parser https_request uses (pure: no I/O, no loop) ----
 * Status line, headers (16 KiB in all), interim 1xx replies (skipped), and
 * the body by Content-Length, chunked coding or until close, capped at
 * max_body. Bytes may arrive in pieces of any size: the result does not
 * depend on how the response was split. */
struct https_resp;

/* A parser for one response. max_body: 0 = HTTPS_BODY_MAX_DEFAULT; want_type
 * (copied), any_2xx: as in struct https_params; head_request: the request was
 * HEAD (no body follows). Never returns NULL. */
struct https_resp *https_resp_new(size_t max_body, const char *want_type, bool any_2xx,
				  bool head_request);
void https_resp_free(struct https_resp *p); /* NULL is a no-op */
/* Feed n received bytes. Returns true once the response is complete or has
 * failed (https_resp_result is then final; later input is ignored), false
 * while more is needed. */
bool https_resp_input(struct https_resp *p, const char *data, size_t n);
/* The server closed the connection cleanly. True if that ends a body
 * delimited by the close (the result is then final, HTTPS_OK); false if the
 * response is not complete (the caller reports the truncation). */
bool https_resp_eof(struct https_resp *p);
/* Have the status line and headers been accepted (the body is being read)? */
bool https_resp_head_done(const struct https_resp *p);
/* The result so far: fail and why (final once input or eof returned true),
 * status, content_type, body (NUL-terminated, "" if none) and len; peer is
 * "". Borrowed until https_resp_free. */
const struct https_result *https_resp_result(const struct https_resp *p);

#endif
