/* dns_int.h: private to the dns module (sender/dns.c, sender/dns_cache.c).
 * Never include it from outside the module (STYLE §2); the public contract is
 * sender/dns.h.  It holds the shared state (entries, reqs, struct dns) and the
 * functions one file calls in the other:
 *   dns.c        c-ares glue (channel, sockets, timer, queries, answer parsing),
 *                the delivery task and the public API;
 *   dns_cache.c  entries (hash, LRU, FIFO), reqs, and building results from
 *                entries.
 * Only dns.c includes the c-ares header (STYLE §1): the channel is held here
 * by its struct tag. */
#ifndef SENDER_DNS_INT_H
#define SENDER_DNS_INT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "sender/dns.h"
#include "sender/loop.h"

struct ares_channeldata; /* ares_channel is a pointer to it (c-ares 1.18) */

enum { QT_A = 1, QT_SOA = 6, QT_CNAME = 5, QT_MX = 15, QT_TXT = 16, QT_AAAA = 28, QT_TLSA = 52 };

#define MX_STORE_MAX 64      /* MX records kept per answer */

struct mx_rr {
	int pref;
	char *host; /* lowercase, no trailing dot; "" for the root (null MX) */
};

enum entry_state { E_QUEUED, E_INFLIGHT, E_CACHED, E_DONE };

struct waiter {
	struct waiter *next;
	struct req *r;
	int slot; /* -1: the req's own MX/TXT query; else the host index */
};

struct entry {
	struct entry *hnext;              /* hash chain (while in the hash) */
	struct entry *lprev, *lnext;      /* LRU list (E_CACHED) or FIFO (E_QUEUED) */
	struct dns *d;
	int type;
	enum entry_state state;
	enum dns_status status;
	const char *reason;               /* static text for non-OK answers */
	bool secure;                      /* AD set (only when d->dnssec) */
	char *cname;                      /* A/AAAA: the end of the CNAME chain, NULL: none */
	uint64_t expires;                 /* loop_now() ms */
	struct waiter *waiters;
	int n;                            /* items below */
	union {
		struct mx_rr *mx;
		struct in_addr *a;
		struct in6_addr *aaaa;
		char **txt;
		struct dns_tlsa_rr *tlsa;
	} u;
	char name[];                      /* lowercase, no trailing dot */
};

enum req_kind { REQ_MX, REQ_TXT, REQ_TLSA };

struct host_work {
	struct in_addr v4[DNS_MAX_ADDRS];
	struct in6_addr v6[DNS_MAX_ADDRS];
	int n4, n6;
	enum dns_status st4, st6;
	const char *why4, *why6;
	bool sec4, sec6;          /* those answers were secure */
};

struct req {
	struct req *prev, *next; /* d->reqs: every live req */
	struct req *rnext;       /* ready list */
	struct dns *d;
	int refs;
	enum req_kind kind;
	bool hosts_stage;        /* MX answer applied, host lookups started */
	dns_mx_fn *mx_cb;
	dns_txt_fn *txt_cb;
	dns_tlsa_fn *tlsa_cb;
	void *arg;
	char name[256];
	union {
		struct {
			/* sized to the answer (dns_mx_hosts): a pending lookup
			 * holds ~150 bytes, not room for DNS_MAX_MX hosts */
			struct dns_mx *res;
			struct host_work *hw;
		} mx;
		struct dns_txt txt;
		struct dns_tlsa tlsa;
	} u;
};

struct dns {
	struct loop *loop;
	struct ares_channeldata *chan; /* ares_channel */
	struct loop_timer timer;
	struct pump *pump;
	unsigned max_inflight, cache_max;
	bool destroying;                    /* inside ares_destroy: no deliveries */
	bool dnssec;                        /* AD asked for and believed */
	bool in_pump, dying;                /* dns_free called from a user callback */
	struct entry **hash;
	unsigned nbuckets;
	struct entry *lru_head, *lru_tail;  /* most recent first */
	struct entry *fifo_head, *fifo_tail;
	unsigned ncached, nqueued, ninflight;
	struct req *reqs;                   /* every live req */
	unsigned nreqs;
	struct req *ready_head, *ready_tail;
	struct sock *socks;
	unsigned nsocks, capsocks;
	struct loop_watch **dead_w;         /* disarmed, to free from the task */
	unsigned ndead_w, capdead_w;
	struct dns_stats stats;
};

/* dns_cache.c: make room for n hosts in r's MX result (n <= DNS_MAX_MX);
 * sets nhosts = n and clears the new hosts' work. */
void dns_mx_hosts(struct req *r, int n);

/* dns.c */
const char *dns_type_name(int type);
/* Queue the delivery task (idempotent while it is queued). */
void dns_pump_schedule(struct dns *d);
/* What c-ares answered for e (its type set, no items yet): status (an
 * ARES_* code) and the raw answer abuf/alen (NULL/0 allowed) become e's
 * items, status and reason. Returns how long to cache it, seconds (0: not).
 * Pure: no loop, no channel (tests/fuzz/fuzz_dns_answer.c feeds it). */
long dns_answer_apply(struct entry *e, int status, const unsigned char *abuf, int alen);

/* dns_cache.c: entries */
void dns_hash_remove(struct dns *d, struct entry *e);
void dns_list_unlink(struct entry **head, struct entry **tail, struct entry *e);
void dns_list_push_head(struct entry **head, struct entry **tail, struct entry *e);
/* Free the parsed items only (a failed parse); the entry stays. */
void dns_entry_free_items(struct entry *e);
/* Unlink from every structure and free, waiters included (their reqs untouched). */
void dns_entry_free(struct entry *e);

/* dns_cache.c: requests */
/* A req with one reference (the caller's), on d->reqs. */
struct req *dns_req_new(struct dns *d, enum req_kind kind, void *arg);
void dns_req_free(struct req *r);
/* Drop one reference; the last one builds the result and queues delivery. */
void dns_req_unref(struct req *r);
/* Ask for (type, name) for r (slot -1: its own query, else a host index); a
 * cache hit is applied at once, otherwise r gains a reference until the answer. */
void dns_lookup(struct dns *d, int type, const char *name, struct req *r, int slot);
/* A+AAAA lookups for every host of r's MX result. */
void dns_start_host_lookups(struct req *r);
/* Fold the answer in e into r (slot as for dns_lookup). */
void dns_apply(struct req *r, int slot, const struct entry *e);

#endif
