/* config_int.h: shared by config.c (the parser) and config_shape.c (the
 * [provider NAME] and [response NAME] sections). Never included elsewhere. */
#ifndef SENDER_CONFIG_INT_H
#define SENDER_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sender/config.h"

/* A [provider NAME] or [response NAME] header (kind "provider"/"response",
 * name NULL when missing) at file:line (file borrowed for the config's
 * life). in_providers: the providers file, where a section the main file
 * already has is skipped (*skip set; its keys are ignored). Returns the
 * section's index, or -1 with why filled. */
int config_shape_begin(struct config *c, const char *kind, const char *name, const char *file,
		       int line, bool in_providers, bool *skip, char *why, size_t whylen);
/* One key of section idx (kind as above). 0, or -1 with why filled. */
int config_shape_key(struct config *c, bool provider, int idx, const char *name,
		     const char *value, char *why, size_t whylen);
/* The section ended: check what it must hold (provider: mx; response: match,
 * and action or class; the regex compiles). 0, or -1 with why filled. */
int config_shape_end(struct config *c, bool provider, int idx, char *why, size_t whylen);
void config_shape_fini(struct config *c);
/* [source] warmup = "200 500 1000" into out[32], *n. 0, or -1 (bad). */
int config_shape_warmup(const char *v, uint32_t *out, int *n);

#endif
