/* stspol.c: MTA-STS discovery on the loop: TXT -> cache decision -> (fetch).
 *
 * A lookup lives only until its TXT answer: then it either answers at once
 * (cached policy, or none) or joins the domain's fetch. A fetch serves every
 * lookup that waits on it and is freed after answering them. Background
 * refreshes are fetches without waiters. Policies handed to callbacks are
 * borrowed for the callback only (the cache may replace them right after).
 * Ownership: lookups and fetches are listed in the stspol so stspol_free can
 * cancel what is still running; callbacks never run after stspol_free. */
#include "sender/policy/stspol.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sender/dns.h"
#include "sender/policy/https.h"
#include "sender/log.h"
#include "sender/metrics.h"
#include "sender/util.h"
#include "tlscache/sts.h"

struct waiter {
	struct waiter *next;
	stspol_fn *cb;
	void *arg;
};

struct lookup {
	struct lookup *next, **pprev;
	struct stspol *sp;
	char domain[256];
	stspol_fn *cb;
	void *arg;
};

struct fetch {
	struct fetch *next, **pprev;
	struct stspol *sp;
	char domain[256];
	char id[STS_ID_MAX + 1];
	struct https_req *req;
	struct waiter *waiters;
	struct sts_policy fallback;
	bool has_fallback;
};

struct stspol {
	struct loop *l;
	struct dns *dns;
	struct tlscache *tc;
	struct stspol_opts o;
	struct sts_cache *cache;
	struct lookup *lookups;
	struct fetch *fetches;
};

static int64_t now_s(void)
{
	return (int64_t)(wall_ms() / 1000);
}

#define LINK(head, e)                               \
	do {                                        \
		(e)->next = (head);                 \
		if (head)                           \
			(head)->pprev = &(e)->next; \
		(e)->pprev = &(head);               \
		(head) = (e);                       \
	} while (0)
#define UNLINK(e)                                     \
	do {                                          \
		*(e)->pprev = (e)->next;              \
		if ((e)->next)                        \
			(e)->next->pprev = (e)->pprev; \
	} while (0)

struct stspol *stspol_new(struct loop *l, struct dns *d, struct tlscache *tc,
			  const struct stspol_opts *o)
{
	struct stspol *sp = xcalloc(1, sizeof(*sp));
	sp->l = l;
	sp->dns = d;
	sp->tc = tc;
	if (o)
		sp->o = *o;
	if (sp->o.timeout_ms == 0)
		sp->o.timeout_ms = 20000;
	sp->cache = sts_cache_new(sp->o.cache_max);
	return sp;
}

static void fetch_free(struct fetch *f)
{
	UNLINK(f);
	while (f->waiters) {
		struct waiter *w = f->waiters;
		f->waiters = w->next;
		free(w);
	}
	if (f->has_fallback)
		sts_policy_fini(&f->fallback);
	free(f);
}

void stspol_free(struct stspol *sp)
{
	if (sp == NULL)
		return;
	/* Lookups wait on DNS: the caller frees the dns (which drops their
	 * callbacks) after us; forget them here. */
	while (sp->lookups) {
		struct lookup *k = sp->lookups;
		UNLINK(k);
		free(k);
	}
	while (sp->fetches) {
		https_cancel(sp->fetches->req);
		fetch_free(sp->fetches);
	}
	sts_cache_free(sp->cache);
	free(sp);
}

void stspol_load(struct stspol *sp, const char *domain, const char *encoded)
{
	struct sts_policy p;
	int64_t at = 0;
	const char *err = NULL;
	if (sts_policy_decode(encoded, &p, &at, &err) != 0) {
		char qerr[512];
		log_warn("evt=sts_load_bad domain=%s err=\"%s\"", domain,
			 log_q(qerr, sizeof(qerr), err ? err : "?"));
		return;
	}
	sts_cache_load(sp->cache, domain, &p, at, now_s());
	sts_policy_fini(&p);
}

static void answer(stspol_fn *cb, void *arg, const struct sts_policy *pol, const char *fail,
		   const char *detail)
{
	struct stspol_answer a = { .pol = (pol && pol->mode != STS_MODE_NONE) ? pol : NULL,
				   .fail = fail,
				   .detail = detail };
	cb(arg, &a);
}

static void fetch_done(void *arg, const struct https_result *r)
{
	struct fetch *f = arg;
	struct stspol *sp = f->sp;
	const char *fail = NULL;
	char detail[640] = "";
	struct sts_policy p;
	const struct sts_policy *use = f->has_fallback ? &f->fallback : NULL;
	bool parsed = false;
	if (r->fail != HTTPS_OK) {
		fail = https_fail_tlsrpt(r->fail);
		snprintf(detail, sizeof(detail), "policy fetch for %s failed: %s", f->domain, r->why);
	} else {
		const char *err = NULL;
		if (sts_policy_parse(r->body, r->len, &p, &err) != 0) {
			fail = "sts-policy-invalid";
			snprintf(detail, sizeof(detail), "invalid policy for %s: %s", f->domain, err);
		} else {
			parsed = true;
		}
	}
	int64_t now = now_s();
	metrics_sts_fetch(sp->o.metrics, parsed); /* mxsend_sts_policy_fetches_total */
	if (parsed) {
		sts_cache_store(sp->cache, f->domain, f->id, &p, now);
		int64_t at;
		use = sts_cache_peek(sp->cache, f->domain, &at);
		log_info("evt=sts_policy domain=%s id=%s mode=%s max_age=%u mx=%d", f->domain, f->id,
			 sts_mode_name(p.mode), p.max_age, p.n_mx);
		if (sp->o.on_store && use) {
			char enc[4096];
			if (sts_policy_encode(use, at, enc, sizeof(enc)) < sizeof(enc))
				sp->o.on_store(sp->o.store_arg, f->domain, enc);
		}
		sts_policy_fini(&p);
	} else {
		sts_cache_fetch_failed(sp->cache, f->domain, f->id, now);
		char qdetail[sizeof(detail) * 2]; /* holds the server's words: escaped (log.h) */
		log_info("evt=sts_fetch_failed domain=%s id=%s type=%s why=\"%s\" fallback=%s", f->domain,
			 f->id, fail, log_q(qdetail, sizeof(qdetail), detail), use ? "cached" : "none");
	}
	f->req = NULL;
	while (f->waiters) {
		struct waiter *w = f->waiters;
		f->waiters = w->next;
		answer(w->cb, w->arg, use, fail, detail);
		free(w);
	}
	fetch_free(f);
}

struct https_req *stspol_fetch(struct loop *l, struct dns *d, struct tlscache *tc,
			      const char *domain, int https_port, uint32_t timeout_ms,
			      https_done_fn *cb, void *arg)
{
	char host[300];
	snprintf(host, sizeof(host), "mta-sts.%s", domain);
	struct https_params p = { .method = "GET",
				  .host = host,
				  .port = https_port,
				  .path = "/.well-known/mta-sts.txt",
				  .timeout_ms = timeout_ms,
				  .max_body = STS_POLICY_MAX,
				  .want_type = "text/plain" };
	return https_request(l, d, tc, &p, cb, arg);
}

static struct fetch *fetch_start(struct stspol *sp, const char *domain, const char *id)
{
	for (struct fetch *f = sp->fetches; f; f = f->next)
		if (strcmp(f->domain, domain) == 0)
			return f;
	struct fetch *f = xcalloc(1, sizeof(*f));
	f->sp = sp;
	strlcpy_x(f->domain, domain, sizeof(f->domain));
	strlcpy_x(f->id, id, sizeof(f->id));
	LINK(sp->fetches, f);
	f->req = stspol_fetch(sp->l, sp->dns, sp->tc, domain, sp->o.https_port, sp->o.timeout_ms,
			      fetch_done, f);
	return f;
}

static void txt_done(void *arg, const struct dns_txt *txt)
{
	struct lookup *k = arg;
	struct stspol *sp = k->sp;
	UNLINK(k);
	char idbuf[STS_ID_MAX + 1] = "", fetch_id[STS_ID_MAX + 1], why[STS_WHY_LEN] = "";
	const char *id = NULL, *err = NULL;
	if (txt->status == DNS_OK &&
	    sts_txt_parse((const char *const *)txt->rr, txt->n, idbuf, &err) == STS_TXT_OK)
		id = idbuf;
	const struct sts_policy *pol = NULL;
	enum sts_decision dec = sts_cache_decide(sp->cache, k->domain, id, now_s(), &pol, fetch_id, why);
	log_debug("evt=sts_decide domain=%s txt=%s id=%s decision=%s why=\"%s\"", k->domain,
		  dns_status_name(txt->status), id ? id : "-", sts_decision_name(dec), why);
	switch (dec) {
	case STS_D_NONE:
		answer(k->cb, k->arg, NULL, NULL, why);
		break;
	case STS_D_USE:
		answer(k->cb, k->arg, pol, NULL, why);
		break;
	case STS_D_USE_REFRESH: {
		/* copy before fetch_start: nothing changes the cache until the
		 * fetch completes, but keep the order obvious */
		answer(k->cb, k->arg, pol, NULL, why);
		fetch_start(sp, k->domain, fetch_id);
		break;
	}
	case STS_D_FETCH: {
		struct fetch *f = fetch_start(sp, k->domain, fetch_id);
		if (pol && !f->has_fallback) {
			sts_policy_copy(&f->fallback, pol);
			f->has_fallback = true;
		}
		struct waiter *w = xcalloc(1, sizeof(*w));
		w->cb = k->cb;
		w->arg = k->arg;
		w->next = f->waiters;
		f->waiters = w;
		break;
	}
	}
	free(k);
}

void stspol_lookup(struct stspol *sp, const char *domain, stspol_fn *cb, void *arg)
{
	struct lookup *k = xcalloc(1, sizeof(*k));
	k->sp = sp;
	k->cb = cb;
	k->arg = arg;
	strlcpy_x(k->domain, domain, sizeof(k->domain));
	LINK(sp->lookups, k);
	char name[300];
	snprintf(name, sizeof(name), "_mta-sts.%s", domain);
	dns_resolve_txt(sp->dns, name, txt_done, k);
}
