/* config_shape.c: [provider NAME] and [response NAME] sections (config.h
 * says what they mean; sender/shaping.c uses them). The parser (config.c)
 * hands each header and key over; this file owns the arrays in struct config.
 * Regular expressions are compiled here once, to check them at start-up
 * (bad input is an error naming file:line), and again by shaping.c, which
 * keeps its own compiled copies. */
#include "sender/config_int.h"

#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sender/bclass.h"
#include "sender/util.h"

#define MAX_SUFFIXES 64

static int find(const struct config *c, bool provider, const char *name)
{
	int n = provider ? c->n_providers : c->n_responses;
	for (int i = 0; i < n; i++) {
		const char *nm = provider ? c->providers[i].name : c->responses[i].name;
		if (strcasecmp(nm, name) == 0)
			return i;
	}
	return -1;
}

int config_provider_find(const struct config *c, const char *name)
{
	return find(c, true, name);
}

static bool good_name(const char *s)
{
	if (*s == '\0' || strlen(s) > 63)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
			return false;
	return true;
}

int config_shape_begin(struct config *c, const char *kind, const char *name, const char *file,
		       int line, bool in_providers, bool *skip, char *why, size_t whylen)
{
	bool provider = strcmp(kind, "provider") == 0;
	*skip = false;
	if (name == NULL) {
		snprintf(why, whylen, "section [%s] needs one name, as in [%s %s]", kind, kind,
			 provider ? "google" : "gmail-rate");
		return -1;
	}
	if (!good_name(name)) {
		snprintf(why, whylen, "bad name in [%s %s]: letters, digits, '-', '_' and '.', "
			 "at most 63", kind, name);
		return -1;
	}
	int k = find(c, provider, name);
	if (k >= 0) {
		const char *f = provider ? c->providers[k].file : c->responses[k].file;
		if (in_providers && f != file) { /* the main file overrides the shipped one */
			*skip = true;
			return k;
		}
		snprintf(why, whylen, "duplicate section [%s %s] (first at line %d)", kind, name,
			 provider ? c->providers[k].line : c->responses[k].line);
		return -1;
	}
	if (provider) {
		c->providers = xrealloc(c->providers, (size_t)(c->n_providers + 1) * sizeof(*c->providers));
		struct shape_provider *p = &c->providers[c->n_providers];
		memset(p, 0, sizeof(*p));
		p->name = xstrdup(name);
		p->file = file;
		p->line = line;
		return c->n_providers++;
	}
	c->responses = xrealloc(c->responses, (size_t)(c->n_responses + 1) * sizeof(*c->responses));
	struct shape_response *r = &c->responses[c->n_responses];
	memset(r, 0, sizeof(*r));
	r->name = xstrdup(name);
	r->file = file;
	r->line = line;
	return c->n_responses++;
}

static int get_int(const char *v, long lo, long hi, int *out)
{
	char *e;
	long x = strtol(v, &e, 10);
	if (e == v || *e != '\0' || x < lo || x > hi)
		return -1;
	*out = (int)x;
	return 0;
}

static int provider_key(struct shape_provider *p, const char *name, const char *value, char *why,
			size_t whylen)
{
	if (strcmp(name, "mx") == 0) {
		if (p->n_mx > 0) {
			snprintf(why, whylen, "duplicate key \"mx\" in [provider %s]", p->name);
			return -1;
		}
		char buf[1024];
		strlcpy_x(buf, value, sizeof(buf));
		for (char *save = NULL, *t = strtok_r(buf, " \t,", &save); t;
		     t = strtok_r(NULL, " \t,", &save)) {
			size_t l = strlen(t);
			bool ok = l >= 2 && l < 254 && p->n_mx < MAX_SUFFIXES;
			for (size_t i = 0; ok && i < l; i++)
				ok = isalnum((unsigned char)t[i]) || t[i] == '-' || t[i] == '.';
			if (!ok || strstr(t, "..") || t[l - 1] == '.') {
				snprintf(why, whylen, "bad value \"%s\" for mx in [provider %s] (MX host "
					 "name suffixes like .google.com, or exact names; at most %d)",
					 t, p->name, MAX_SUFFIXES);
				return -1;
			}
			p->mx = xrealloc(p->mx, (size_t)(p->n_mx + 1) * sizeof(char *));
			p->mx[p->n_mx] = xstrdup(t);
			for (char *q = p->mx[p->n_mx]; *q; q++)
				*q = (char)tolower((unsigned char)*q);
			p->n_mx++;
		}
		return 0;
	}
	if (strcmp(name, "max_connections") == 0) {
		if (get_int(value, 1, 100000, &p->max_connections) == 0)
			return 0;
		snprintf(why, whylen, "bad value \"%s\" for max_connections (integer 1..100000)", value);
		return -1;
	}
	if (strcmp(name, "max_messages") == 0) {
		if (get_int(value, 0, 1000000, &p->max_messages) == 0)
			return 0;
		snprintf(why, whylen, "bad value \"%s\" for max_messages (integer 0..1000000)", value);
		return -1;
	}
	if (strcmp(name, "max_rate") == 0) {
		char *e;
		double d = strtod(value, &e);
		if (e != value && *e == '\0' && d >= 0 && d <= 1e6) {
			p->max_rate = d;
			return 0;
		}
		snprintf(why, whylen, "bad value \"%s\" for max_rate (messages per second, 0..1000000)", value);
		return -1;
	}
	snprintf(why, whylen, "unknown key \"%s\" in [provider %s] (mx, max_connections, max_rate, "
		 "max_messages)", name, p->name);
	return -1;
}

static int response_key(struct shape_response *r, const char *name, const char *value, char *why,
			size_t whylen)
{
	if (strcmp(name, "match") == 0) {
		free(r->match);
		r->match = xstrdup(value);
		return 0;
	}
	if (strcmp(name, "provider") == 0) {
		free(r->provider);
		r->provider = xstrdup(value);
		return 0;
	}
	if (strcmp(name, "class") == 0) {
		if (bclass_parse(value) < 0) {
			snprintf(why, whylen,
				 "unknown bounce class \"%s\" for class (a name from sender/classes.conf, like rate-limited)",
				 value);
			return -1;
		}
		free(r->class_name);
		r->class_name = xstrdup(value);
		return 0;
	}
	if (strcmp(name, "action") == 0) {
		char a[32] = "", b[64] = "", x[2];
		int n = sscanf(value, "%31s %63s %1s", a, b, x);
		if (n == 1 && strcmp(a, "throttle") == 0) {
			r->action = SHAPE_ACT_THROTTLE;
			return 0;
		}
		if (n == 1 && strcmp(a, "none") == 0) {
			r->action = SHAPE_ACT_NONE;
			return 0;
		}
		if (n == 2 && strcmp(a, "suspend") == 0 &&
		    config_parse_duration(b, &r->duration_ms) == 0 && r->duration_ms >= 1000 &&
		    r->duration_ms <= 7ull * 86400000) {
			r->action = SHAPE_ACT_SUSPEND;
			return 0;
		}
		if (n == 2 && strcmp(a, "reclassify") == 0 &&
		    (strcmp(b, "temporary") == 0 || strcmp(b, "permanent") == 0)) {
			r->action = b[0] == 't' ? SHAPE_ACT_TEMP : SHAPE_ACT_PERM;
			return 0;
		}
		snprintf(why, whylen, "bad value \"%s\" for action (throttle, suspend DURATION (1s..7d), "
			 "reclassify temporary, reclassify permanent, none)", value);
		return -1;
	}
	snprintf(why, whylen, "unknown key \"%s\" in [response %s] (match, action, provider, class)",
		 name, r->name);
	return -1;
}

int config_shape_key(struct config *c, bool provider, int idx, const char *name,
		     const char *value, char *why, size_t whylen)
{
	if (provider)
		return provider_key(&c->providers[idx], name, value, why, whylen);
	return response_key(&c->responses[idx], name, value, why, whylen);
}

int config_shape_end(struct config *c, bool provider, int idx, char *why, size_t whylen)
{
	if (provider) {
		const struct shape_provider *p = &c->providers[idx];
		if (p->n_mx == 0) {
			snprintf(why, whylen, "[provider %s] needs mx = (MX host name suffixes)", p->name);
			return -1;
		}
		return 0;
	}
	const struct shape_response *r = &c->responses[idx];
	if (r->match == NULL) {
		snprintf(why, whylen, "[response %s] needs match = (a regular expression)", r->name);
		return -1;
	}
	regex_t re;
	int e = regcomp(&re, r->match, REG_EXTENDED | REG_ICASE | REG_NOSUB);
	if (e != 0) {
		char msg[128];
		regerror(e, &re, msg, sizeof(msg));
		snprintf(why, whylen, "bad match in [response %s]: %s", r->name, msg);
		return -1;
	}
	regfree(&re);
	return 0;
}

int config_shape_warmup(const char *v, uint32_t *out, int *n)
{
	*n = 0;
	while (*v) {
		while (*v == ' ' || *v == '\t')
			v++;
		if (*v == '\0')
			break;
		char *e;
		unsigned long x = strtoul(v, &e, 10);
		if (e == v || (*e && *e != ' ' && *e != '\t') || x < 1 || x > 100000000 || *n >= 32)
			return -1;
		out[(*n)++] = (uint32_t)x;
		v = e;
	}
	return *n > 0 ? 0 : -1;
}

void config_shape_fini(struct config *c)
{
	for (int i = 0; i < c->n_providers; i++) {
		for (int k = 0; k < c->providers[i].n_mx; k++)
			free(c->providers[i].mx[k]);
		free(c->providers[i].mx);
		free(c->providers[i].name);
	}
	free(c->providers);
	for (int i = 0; i < c->n_responses; i++) {
		free(c->responses[i].name);
		free(c->responses[i].match);
		free(c->responses[i].provider);
		free(c->responses[i].class_name);
	}
	free(c->responses);
	free(c->providers_file);
	free(c->providers_path);
}
