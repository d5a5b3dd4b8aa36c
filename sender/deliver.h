/* deliver.h: the delivery engine. Given one message for recipients of ONE
 * domain, it resolves the MX hosts, applies the domain's TLS policy, walks the MX
 * hosts/addresses in order, runs SMTP sessions, and reports one outcome per
 * recipient. Everything runs on one loop; nothing blocks.
 *
 * Ownership: deliver_submit() borrows req and everything it points to (strings,
 * message bytes) until req->done has been called. Callbacks never run before
 * deliver_submit() returns. For each recipient req->rcpt_done runs exactly once,
 * then req->done runs once; after done the engine no longer touches req. */
#ifndef SENDER_DELIVER_H
#define SENDER_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sender/config.h"

struct loop;
struct deliver;

enum deliver_status { DELIVER_DELIVERED, DELIVER_BOUNCED, DELIVER_DEFERRED, DELIVER_HELD };
const char *deliver_status_name(enum deliver_status s); /* "delivered","bounced","deferred","held" */

struct deliver_result {
	enum deliver_status status;
	int code;           /* SMTP reply code, or a synthesized one (DNS: 550/451, TLS: 451...) */
	char dsn[16];       /* "2.0.0", "5.1.10", ... */
	char reply[512];    /* reply text (one line; multi-line replies joined with ' ') */
	char mx[256];       /* MX host last tried, "" if none */
	char ip[64];        /* its address, "" if none */
	int port;
	char tls[16];       /* "none", "TLSv1.2", "TLSv1.3" */
	char cipher[64];    /* "" if none */
	bool verified;
	char policy[16];    /* "none","may","encrypt","verify","sts-enforce","sts-testing" */
	bool resumed;       /* TLS session resumed */
	bool reused;        /* SMTP connection reused from the pool */
	uint32_t elapsed_ms;
};

typedef void deliver_rcpt_fn(void *arg, int idx, const struct deliver_result *r);
typedef void deliver_done_fn(void *arg);

struct deliver_req {
	const char *from;       /* envelope sender, "" for <> */
	const char *domain;     /* recipient domain (lowercase) */
	const char *const *rcpts; /* nrcpt full addresses, all @domain */
	int nrcpt;
	const char *data;       /* raw message bytes (LF or CRLF) */
	size_t len;
	int tls_min_level;      /* a stricter TLS level for this message (enum tls_level), -1 = none */
	deliver_rcpt_fn *rcpt_done;
	deliver_done_fn *done;
	void *arg;
};

struct deliver_opts {
	const char *ca_file;    /* overrides config ca_file when not NULL */
	const char *dns;        /* overrides config dns when not NULL */
	int port;               /* > 0: overrides every rule's port */
	int tls_level;          /* >= 0: overrides the effective tls level (send --tls) */
	bool no_resumption;     /* benchmarks: never resume TLS sessions */
};

struct deliver_stats {
	unsigned long opened;  /* new SMTP connections */
	unsigned long reused;  /* transactions on a pooled connection */
};

/* Create an engine on loop with config c (borrowed for the engine's life).
 * NULL with err filled on failure (bad CA file, bad DNS servers). */
struct deliver *deliver_new(struct loop *l, const struct config *c, const struct deliver_opts *o,
			    char *err, size_t errlen);
/* Free the engine. Requests still running are abandoned without callbacks
 * (call only when idle or at exit). */
void deliver_free(struct deliver *d);
/* Start delivering. Returns 0, or -EINVAL if req is malformed (no callbacks then). */
int deliver_submit(struct deliver *d, struct deliver_req *req);
/* Requests submitted and not yet done. */
unsigned deliver_active(const struct deliver *d);
/* SMTP sessions still alive (including ones finishing QUIT after their request). */
unsigned deliver_sessions(const struct deliver *d);
/* QUIT every idle pooled connection (shutdown; `send` before exit). */
void deliver_flush_pool(struct deliver *d);
void deliver_get_stats(const struct deliver *d, struct deliver_stats *st);

#endif
