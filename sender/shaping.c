/* shaping.c: providers, response rules and the per-(source, provider) state
 * (shaping.h says what and why). Every field a worker touches is an atomic;
 * the feeder alone writes the measured rate and applies Redis's state.
 *
 * The rate limiter is GCRA (the generic cell rate algorithm, ATM's "virtual
 * scheduling"): tat is the earliest time the next message of the pair may go.
 * A sender takes the slot max(tat, now) and moves tat one interval on, by
 * compare-and-swap. A slot at most HORIZON_US ahead is booked (the message
 * goes then without asking again); past that nothing is booked and the
 * message asks again later, so a rate cut reaches the wire within HORIZON_US
 * instead of after every booking made at the old rate. No burst is allowed:
 * the receiver sees messages paced at the rate, never a second's worth at
 * once. */
#include "sender/shaping.h"

#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "sender/limits.h"
#include "sender/util.h"

#define HORIZON_US 500000ull  /* book send times at most this far ahead */
#define MIN_RATE 0.05         /* a throttle never cuts below one message per 20 s */
#define SEEN_ALPHA 0.5        /* smoothing of the measured rate, per sync */
#define FIRST_BASE 10.0       /* a first cut with no rate and nothing measured cuts from this */
#define FAR_ABOVE 1.5         /* a rate this many times what the receiver accepted lately */

struct pair {
	_Atomic uint64_t tat_us;     /* GCRA: next free send time (monotonic us) */
	_Atomic uint64_t rate_milli; /* all processes' rate x 1000; 0: none */
	_Atomic uint64_t conn_milli; /* all processes' connection budget x 1000; 0: provider's */
	_Atomic uint64_t until;      /* suspended until (wall ms) */
	_Atomic uint64_t hold_us;    /* no local cut before (monotonic us) */
	_Atomic uint64_t last_cut_us; /* the last local cut (monotonic us) */
	_Atomic uint64_t step_milli, cstep_milli; /* the last local cut's steps x 1000 */
	_Atomic uint64_t seen_milli; /* messages/s this process had accepted lately x 1000 (feeder) */
	_Atomic uint64_t sent_milli; /* ... and sent (admitted) */
	_Atomic uint32_t ok, sent, cuts;
	_Atomic int32_t waiting;     /* messages of this process waiting unbooked */
	_Atomic uint64_t susp_until; /* asked for since the last sync (wall ms) */
	_Atomic int cut_rule, susp_rule; /* rule index + 1 of those reports */
	_Atomic int state_rule;      /* rule index + 1 that set the state, 0 none */
	/* warm-up: today's limit (0: none), today's count in Redis at the last
	 * sync (all processes), sent since then (local), sent to Redis and not
	 * answered yet (pending), the day since first use (-1: not known) */
	_Atomic uint32_t warm_limit;
	_Atomic uint64_t warm_count;
	_Atomic uint32_t warm_local, warm_pending;
	_Atomic int warm_day;        /* -2: not known yet (no answer from Redis) */
	uint64_t last_take;          /* feeder: wall ms of the last take */
	int src, prov;
	char slot[160];
} __attribute__((aligned(64)));

struct shaping {
	const struct config *c;
	const struct limits_peers *peers;
	int nsrc; /* config sources + 1 (the last: no source) */
	struct pair *pairs;
	regex_t *re;
	int *rule_prov; /* provider index of each rule, -1 any */
};

static uint64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int npeers(const struct shaping *sh)
{
	uint32_t v = sh->peers ? atomic_load_explicit(&sh->peers->word, memory_order_relaxed) : 0;
	int n = (int)(v >> 16);
	return n > 1 ? n : 1;
}

struct shaping *shaping_new(const struct config *c, const struct limits_peers *peers, char *err,
			    size_t errlen)
{
	struct shaping *sh = xcalloc(1, sizeof(*sh));
	sh->c = c;
	sh->peers = peers;
	sh->nsrc = c->n_sources + 1;
	size_t np = (size_t)sh->nsrc * (size_t)(c->n_providers > 0 ? c->n_providers : 1);
	sh->pairs = aligned_alloc(64, np * sizeof(struct pair));
	if (sh->pairs == NULL)
		abort();
	memset(sh->pairs, 0, np * sizeof(struct pair));
	for (int s = 0; s < sh->nsrc; s++)
		for (int p = 0; p < c->n_providers; p++) {
			struct pair *pr = &sh->pairs[s * c->n_providers + p];
			pr->src = s < c->n_sources ? s : -1;
			pr->prov = p;
			pr->warm_day = -2;
			if (pr->src >= 0 && c->sources[s].n_warmup > 0)
				pr->warm_limit = c->sources[s].warmup[0]; /* day 0 until Redis says */
			snprintf(pr->slot, sizeof(pr->slot), "provider:%s@%s", c->providers[p].name,
				 s < c->n_sources ? c->sources[s].name : "-");
		}
	sh->re = xcalloc((size_t)(c->n_responses > 0 ? c->n_responses : 1), sizeof(regex_t));
	sh->rule_prov = xcalloc((size_t)(c->n_responses > 0 ? c->n_responses : 1), sizeof(int));
	for (int i = 0; i < c->n_responses; i++) {
		const struct shape_response *r = &c->responses[i];
		int e = regcomp(&sh->re[i], r->match, REG_EXTENDED | REG_ICASE | REG_NOSUB);
		if (e != 0) {
			snprintf(err, errlen, "[response %s]: bad match", r->name);
			for (int k = 0; k < i; k++)
				regfree(&sh->re[k]);
			free(sh->re);
			free(sh->rule_prov);
			free(sh->pairs);
			free(sh);
			return NULL;
		}
		sh->rule_prov[i] = r->provider ? config_provider_find(c, r->provider) : -1;
	}
	return sh;
}

void shaping_free(struct shaping *sh)
{
	if (sh == NULL)
		return;
	for (int i = 0; i < sh->c->n_responses; i++)
		regfree(&sh->re[i]);
	free(sh->re);
	free(sh->rule_prov);
	free(sh->pairs);
	free(sh);
}

int shaping_provider(const struct shaping *sh, const char *host)
{
	if (sh == NULL || host == NULL)
		return -1;
	size_t hl = strlen(host);
	if (hl > 0 && host[hl - 1] == '.')
		hl--;
	int best = -1;
	size_t best_len = 0;
	for (int p = 0; p < sh->c->n_providers; p++) {
		const struct shape_provider *pv = &sh->c->providers[p];
		for (int k = 0; k < pv->n_mx; k++) {
			const char *m = pv->mx[k];
			size_t ml = strlen(m);
			if (m[0] == '.') {
				if (hl > ml && ml > best_len && strncasecmp(host + hl - ml, m, ml) == 0) {
					best = p;
					best_len = ml;
				}
			} else if (hl == ml && strncasecmp(host, m, ml) == 0) {
				return p;
			}
		}
	}
	return best;
}

const char *shaping_provider_name(const struct shaping *sh, int prov)
{
	return prov >= 0 && prov < sh->c->n_providers ? sh->c->providers[prov].name : "-";
}

int shaping_providers(const struct shaping *sh)
{
	return sh ? sh->c->n_providers : 0;
}

int shaping_pair(const struct shaping *sh, int src, int prov)
{
	if (sh == NULL || prov < 0 || prov >= sh->c->n_providers)
		return -1;
	int s = src >= 0 && src < sh->c->n_sources ? src : sh->nsrc - 1;
	return s * sh->c->n_providers + prov;
}

int shaping_npairs(const struct shaping *sh)
{
	return sh ? sh->nsrc * sh->c->n_providers : 0;
}

const char *shaping_pair_source(const struct shaping *sh, int pair)
{
	int s = sh->pairs[pair].src;
	return s >= 0 ? sh->c->sources[s].name : "-";
}

const char *shaping_pair_provider(const struct shaping *sh, int pair)
{
	return sh->c->providers[sh->pairs[pair].prov].name;
}

int shaping_pair_prov(const struct shaping *sh, int pair)
{
	return sh != NULL && pair >= 0 ? sh->pairs[pair].prov : -1;
}

int shaping_pair_src(const struct shaping *sh, int pair)
{
	return sh != NULL && pair >= 0 ? sh->pairs[pair].src : -1;
}

static const struct shape_provider *prov_of(const struct shaping *sh, int pair)
{
	return &sh->c->providers[sh->pairs[pair].prov];
}

/* The pair's connection budget, all processes (0: the provider sets none). */
static int budget(const struct shaping *sh, int pair)
{
	const struct shape_provider *pv = prov_of(sh, pair);
	if (pv->max_connections <= 0)
		return 0;
	uint64_t cm = atomic_load_explicit(&sh->pairs[pair].conn_milli, memory_order_relaxed);
	int b = cm > 0 ? (int)(cm / 1000) : pv->max_connections;
	if (b > pv->max_connections)
		b = pv->max_connections;
	return b < 1 ? 1 : b;
}

int shaping_slot(struct shaping *sh, int pair, char *buf, size_t len)
{
	if (sh == NULL || pair < 0)
		return 0;
	int b = budget(sh, pair);
	if (b == 0)
		return 0;
	strlcpy_x(buf, sh->pairs[pair].slot, len);
	int share = limits_peers_share(sh->peers, b);
	return share < 1 ? 1 : share; /* every process keeps one connection */
}

int shaping_max_messages(const struct shaping *sh, int pair)
{
	return sh && pair >= 0 ? prov_of(sh, pair)->max_messages : 0;
}

/* All processes' rate of pair now, messages/s (0: none). */
static double rate_of(const struct shaping *sh, int pair)
{
	uint64_t rm = atomic_load_explicit(&sh->pairs[pair].rate_milli, memory_order_relaxed);
	double r = rm > 0 ? (double)rm / 1000.0 : prov_of(sh, pair)->max_rate;
	double mx = prov_of(sh, pair)->max_rate;
	return mx > 0 && r > mx ? mx : r;
}

double shaping_rate(const struct shaping *sh, int pair)
{
	return sh != NULL && pair >= 0 ? rate_of(sh, pair) / npeers(sh) : 0;
}

static const char *rule_name(const struct shaping *sh, int idx1)
{
	return idx1 > 0 && idx1 <= sh->c->n_responses ? sh->c->responses[idx1 - 1].name : NULL;
}

/* "RULE:ACTION rate=R/s conns=N" or "PROVIDER:rate rate=R/s" */
static void describe(const struct shaping *sh, int pair, const char *what, char *why, size_t len)
{
	int r1 = atomic_load_explicit(&sh->pairs[pair].state_rule, memory_order_relaxed);
	const char *rn = rule_name(sh, r1);
	double rate = rate_of(sh, pair);
	int n = npeers(sh), b = budget(sh, pair);
	char rb[48] = "", cb[32] = "";
	if (rate > 0)
		snprintf(rb, sizeof(rb), " rate=%.2f/s", rate / n);
	if (b > 0)
		snprintf(cb, sizeof(cb), " conns=%d", limits_peers_share(sh->peers, b));
	snprintf(why, len, "%s:%s%s%s", rn ? rn : shaping_provider_name(sh, sh->pairs[pair].prov),
		 rn && r1 > 0 && sh->c->responses[r1 - 1].action == SHAPE_ACT_THROTTLE ? "throttle" : what,
		 rb, cb);
}

void shaping_unwait(struct shaping *sh, int pair, bool *waiting)
{
	if (sh != NULL && pair >= 0 && *waiting)
		atomic_fetch_sub(&sh->pairs[pair].waiting, 1);
	*waiting = false;
}

enum shape_admit shaping_admit(struct shaping *sh, int pair, bool *waiting, uint64_t *wait_ms,
			       bool *booked, uint64_t *until_wall, char *why, size_t whylen)
{
	*wait_ms = 0;
	*booked = false;
	if (sh == NULL || pair < 0)
		return SHAPE_GO;
	struct pair *p = &sh->pairs[pair];
	uint64_t until = atomic_load_explicit(&p->until, memory_order_relaxed);
	if (until > 0) {
		uint64_t now = wall_ms();
		if (until > now) {
			char ub[32];
			util_utc_time(ub, sizeof(ub), until);
			int r1 = atomic_load_explicit(&p->state_rule, memory_order_relaxed);
			const char *rn = rule_name(sh, r1);
			snprintf(why, whylen, "%s:suspend until=%s", rn ? rn : shaping_provider_name(sh, p->prov),
				 ub);
			*until_wall = until;
			shaping_unwait(sh, pair, waiting);
			return SHAPE_SUSPENDED;
		}
	}
	double rate = rate_of(sh, pair) / npeers(sh);
	if (rate <= 0) {
		shaping_unwait(sh, pair, waiting);
		atomic_fetch_add_explicit(&p->sent, 1, memory_order_relaxed);
		return SHAPE_GO;
	}
	if (!*waiting) {
		/* a newcomer: behind every message already waiting. Past max_wait
		 * it goes back to the queue, due about when those are gone, so
		 * claimed mail never sits in memory for long (other providers'
		 * mail gets the room) and comes back as the backlog drains. */
		double est = (double)(atomic_load(&p->waiting) + 1) / rate * 1000.0;
		if (est > (double)sh->c->shape_max_wait_ms) {
			describe(sh, pair, "rate", why, whylen);
			size_t l = strlen(why);
			snprintf(why + l, whylen - l, " queued=%d", (int)atomic_load(&p->waiting));
			*until_wall = wall_ms() + (uint64_t)est;
			return SHAPE_DEFER;
		}
	}
	uint64_t interval = (uint64_t)(1e6 / rate);
	uint64_t now = mono_us(), tat = atomic_load(&p->tat_us);
	for (;;) {
		uint64_t t0 = tat > now ? tat : now;
		if (t0 - now > HORIZON_US) {
			/* not booked: ask again when a booking may be had, spread out */
			*wait_ms = (t0 - now - HORIZON_US) / 1000 + 1 + (uint64_t)(now % 97);
			describe(sh, pair, "rate", why, whylen);
			if (!*waiting) {
				*waiting = true;
				atomic_fetch_add(&p->waiting, 1);
			}
			return SHAPE_WAIT;
		}
		if (atomic_compare_exchange_weak(&p->tat_us, &tat, t0 + interval)) {
			shaping_unwait(sh, pair, waiting);
			atomic_fetch_add_explicit(&p->sent, 1, memory_order_relaxed);
			if (t0 == now)
				return SHAPE_GO;
			*wait_ms = (t0 - now + 999) / 1000;
			*booked = true;
			describe(sh, pair, "rate", why, whylen);
			return SHAPE_WAIT;
		}
	}
}

bool shaping_match(const struct shaping *sh, int pair, int code, const char *esc, const char *text,
		   struct shape_match *m)
{
	m->rule = -1;
	m->action = SHAPE_ACT_NONE;
	m->name = m->class_name = NULL;
	if (sh == NULL || code < 400 || sh->c->n_responses == 0)
		return false;
	char line[700];
	snprintf(line, sizeof(line), "%d %s%s%s", code, esc ? esc : "", esc && esc[0] ? " " : "",
		 text ? text : "");
	int prov = pair >= 0 ? sh->pairs[pair].prov : -1;
	for (int i = 0; i < sh->c->n_responses; i++) {
		if (sh->rule_prov[i] >= 0 && sh->rule_prov[i] != prov)
			continue;
		if (regexec(&sh->re[i], line, 0, NULL, 0) != 0)
			continue;
		const struct shape_response *r = &sh->c->responses[i];
		m->rule = i;
		m->action = r->action;
		m->name = r->name;
		m->class_name = r->class_name;
		return true;
	}
	return false;
}

static void store_max(_Atomic uint64_t *a, uint64_t v)
{
	uint64_t cur = atomic_load(a);
	while (cur < v && !atomic_compare_exchange_weak(a, &cur, v))
		;
}

/* Cut the local state now (the next sync makes Redis agree). */
static void cut(struct shaping *sh, int pair)
{
	struct pair *p = &sh->pairs[pair];
	const struct shape_provider *pv = prov_of(sh, pair);
	uint64_t now = mono_us(), h = atomic_load(&p->hold_us);
	if (now < h || !atomic_compare_exchange_strong(&p->hold_us, &h, now + sh->c->shape_hold_ms * 1000))
		return; /* cut once per hold */
	/* from the rate in force; with none (no max_rate, no cut yet), from
	 * the rate sent (or accepted) lately, all processes */
	double base = rate_of(sh, pair);
	if (base <= 0) {
		double ok = (double)atomic_load(&p->seen_milli) / 1000.0;
		double sent = (double)atomic_load(&p->sent_milli) / 1000.0;
		base = (ok > sent ? ok : sent) * npeers(sh);
		if (base <= 0)
			base = FIRST_BASE;
	}
	/* still refused right after the last cut's hold while sending far
	 * above what the receiver accepted lately (the first minute, from a
	 * max_rate well above it): cut twice as deep. Near the receiver's
	 * limit one cut: a smoothed limiter (Exim's ratelimit) refuses a few
	 * in a row past one hold, and a deep cut there costs a minute at half
	 * the rate. */
	double dec = sh->c->shape_decrease;
	uint64_t last = atomic_exchange(&p->last_cut_us, now);
	double took = (double)atomic_load(&p->seen_milli) / 1000.0 * npeers(sh);
	if (last > 0 && now - last < 3 * sh->c->shape_hold_ms * 1000 && base > FAR_ABOVE * took)
		dec *= sh->c->shape_decrease;
	atomic_store(&p->step_milli, (uint64_t)(base * sh->c->shape_increase * 1000.0));
	double r = base * dec;
	atomic_store(&p->rate_milli, (uint64_t)((r < MIN_RATE ? MIN_RATE : r) * 1000.0));
	if (pv->max_connections > 0) {
		double b = (double)budget(sh, pair) * dec;
		atomic_store(&p->cstep_milli,
			     (uint64_t)((double)budget(sh, pair) * sh->c->shape_increase * 1000.0));
		atomic_store(&p->conn_milli, (uint64_t)((b < 1 ? 1 : b) * 1000.0));
	}
	/* a fresh schedule at the new rate: the bookings made at the old one stand */
}

void shaping_act(struct shaping *sh, int pair, const struct shape_match *m, char *why,
		 size_t whylen)
{
	if (sh == NULL || pair < 0 || m->rule < 0)
		return;
	struct pair *p = &sh->pairs[pair];
	if (m->action == SHAPE_ACT_THROTTLE) {
		cut(sh, pair);
		atomic_store(&p->cut_rule, m->rule + 1);
		atomic_store(&p->state_rule, m->rule + 1);
		atomic_fetch_add(&p->cuts, 1);
		describe(sh, pair, "throttle", why, whylen);
	} else if (m->action == SHAPE_ACT_SUSPEND) {
		uint64_t until = wall_ms() + sh->c->responses[m->rule].duration_ms;
		store_max(&p->until, until);
		store_max(&p->susp_until, until);
		atomic_store(&p->susp_rule, m->rule + 1);
		atomic_store(&p->state_rule, m->rule + 1);
		char ub[32];
		util_utc_time(ub, sizeof(ub), until);
		snprintf(why, whylen, "%s:suspend until=%s", m->name, ub);
	}
}

void shaping_ok(struct shaping *sh, int pair)
{
	if (sh != NULL && pair >= 0)
		atomic_fetch_add_explicit(&sh->pairs[pair].ok, 1, memory_order_relaxed);
}

static const struct source *warm_src(const struct shaping *sh, int pair)
{
	if (sh == NULL || pair < 0 || sh->pairs[pair].src < 0)
		return NULL;
	const struct source *s = &sh->c->sources[sh->pairs[pair].src];
	return s->n_warmup > 0 ? s : NULL;
}

bool shaping_warm_any(const struct shaping *sh)
{
	for (int i = 0; sh && i < sh->c->n_sources; i++)
		if (sh->c->sources[i].n_warmup > 0)
			return true;
	return false;
}

void shaping_warm_assume(struct shaping *sh)
{
	for (int i = 0; sh && i < shaping_npairs(sh); i++)
		atomic_store(&sh->pairs[i].warm_day, 0);
}

enum shape_warm shaping_warm_take(struct shaping *sh, int pair)
{
	if (warm_src(sh, pair) == NULL)
		return SHAPE_WARM_OK;
	struct pair *p = &sh->pairs[pair];
	if (atomic_load(&p->warm_day) == -2)
		return SHAPE_WARM_LATER;
	uint32_t limit = atomic_load(&p->warm_limit);
	if (limit == 0)
		return SHAPE_WARM_OK; /* past the schedule */
	uint64_t used = atomic_load(&p->warm_count) + atomic_load(&p->warm_pending);
	uint64_t left = limit > used ? limit - used : 0;
	int n = npeers(sh);
	uint64_t share = (left + (uint64_t)n - 1) / (uint64_t)n; /* this process's, until the next sync */
	uint32_t local = atomic_load(&p->warm_local);
	do {
		if (local >= share)
			return left > local ? SHAPE_WARM_LATER : SHAPE_WARM_SPENT;
	} while (!atomic_compare_exchange_weak(&p->warm_local, &local, local + 1));
	return SHAPE_WARM_OK;
}

void shaping_warm_why(const struct shaping *sh, int pair, char *why, size_t whylen)
{
	const struct pair *p = &sh->pairs[pair];
	int day = atomic_load(&((struct pair *)p)->warm_day);
	snprintf(why, whylen, "warmup:%s/%s day=%d limit=%u", shaping_pair_source(sh, pair),
		 shaping_pair_provider(sh, pair), day < 0 ? 0 : day,
		 (unsigned)atomic_load(&((struct pair *)p)->warm_limit));
}

bool shaping_warm_sync_take(struct shaping *sh, int pair, uint32_t *delta)
{
	*delta = 0;
	if (warm_src(sh, pair) == NULL)
		return false;
	struct pair *p = &sh->pairs[pair];
	*delta = atomic_exchange(&p->warm_local, 0);
	atomic_fetch_add(&p->warm_pending, *delta);
	return true;
}

void shaping_warm_apply(struct shaping *sh, int pair, bool ok, int day, uint64_t count,
			uint32_t delta)
{
	const struct source *s = warm_src(sh, pair);
	if (s == NULL)
		return;
	struct pair *p = &sh->pairs[pair];
	if (!ok) { /* not counted in Redis: counts again at the next sync */
		atomic_fetch_add(&p->warm_local, delta);
		atomic_fetch_sub(&p->warm_pending, delta);
		return;
	}
	int d = day < 0 ? 0 : day;
	atomic_store(&p->warm_day, day);
	atomic_store(&p->warm_limit, d < s->n_warmup ? s->warmup[d] : 0);
	atomic_store(&p->warm_count, count); /* holds delta now: then it leaves pending */
	atomic_fetch_sub(&p->warm_pending, delta);
}

void shaping_sync_take(struct shaping *sh, int pair, uint64_t now_wall, struct shape_report *r)
{
	struct pair *p = &sh->pairs[pair];
	const struct shape_provider *pv = prov_of(sh, pair);
	memset(r, 0, sizeof(*r));
	r->ok = atomic_exchange(&p->ok, 0);
	r->sent = atomic_exchange(&p->sent, 0);
	r->cuts = atomic_exchange(&p->cuts, 0);
	r->susp_until = atomic_exchange(&p->susp_until, 0);
	if (r->cuts > 0) {
		r->cut_rate = (double)atomic_load(&p->rate_milli) / 1000.0;
		r->cut_conn = (double)atomic_load(&p->conn_milli) / 1000.0;
		r->step = (double)atomic_load(&p->step_milli) / 1000.0;
		r->cstep = (double)atomic_load(&p->cstep_milli) / 1000.0;
	}
	const char *cr = rule_name(sh, atomic_load(&p->cut_rule));
	const char *sr = rule_name(sh, atomic_load(&p->susp_rule));
	strlcpy_x(r->cut_rule, cr ? cr : "", sizeof(r->cut_rule));
	strlcpy_x(r->susp_rule, sr ? sr : "", sizeof(r->susp_rule));
	double dt = p->last_take > 0 && now_wall > p->last_take ? (double)(now_wall - p->last_take) / 1000.0
								 : 0;
	p->last_take = now_wall;
	double seen = (double)atomic_load(&p->seen_milli) / 1000.0;
	if (dt > 0) {
		seen = SEEN_ALPHA * ((double)r->ok / dt) + (1 - SEEN_ALPHA) * seen;
		atomic_store(&p->seen_milli, (uint64_t)(seen * 1000.0));
		double sent = (double)atomic_load(&p->sent_milli) / 1000.0;
		sent = SEEN_ALPHA * ((double)r->sent / dt) + (1 - SEEN_ALPHA) * sent;
		atomic_store(&p->sent_milli, (uint64_t)(sent * 1000.0));
	}
	r->max_rate = pv->max_rate;
	r->max_conn = pv->max_connections;
}

static int rule_index(const struct shaping *sh, const char *name)
{
	for (int i = 0; name && *name && i < sh->c->n_responses; i++)
		if (strcmp(sh->c->responses[i].name, name) == 0)
			return i + 1;
	return 0;
}

void shaping_sync_apply(struct shaping *sh, int pair, double rate, double conn, uint64_t until,
			const char *rule)
{
	struct pair *p = &sh->pairs[pair];
	uint64_t rm = rate > 0 ? (uint64_t)(rate * 1000.0) : 0;
	uint64_t cm = conn > 0 ? (uint64_t)(conn * 1000.0) : 0;
	if (atomic_load(&p->cuts) > 0) { /* a local cut Redis has not seen yet: keep the lower */
		uint64_t lr = atomic_load(&p->rate_milli), lc = atomic_load(&p->conn_milli);
		if (lr > 0 && (rm == 0 || lr < rm))
			rm = lr;
		if (lc > 0 && (cm == 0 || lc < cm))
			cm = lc;
	}
	atomic_store(&p->rate_milli, rm);
	atomic_store(&p->conn_milli, cm);
	uint64_t lu = atomic_load(&p->susp_until); /* a local suspension not yet sent */
	atomic_store(&p->until, until > lu ? until : lu);
	int r1 = rule_index(sh, rule);
	if (rm == 0 && cm == 0 && until <= wall_ms() && lu == 0)
		r1 = 0; /* back to the provider's limits */
	atomic_store(&p->state_rule, r1);
}
