/* fuzz_msg_wire.c: libFuzzer target for sender/msg.c msg_wire_prepare, which
 * turns a job's message bytes (whatever the application queued) into what
 * goes after DATA or in BDAT chunks. Not built by default: `make fuzz` builds
 * and runs it (build/fuzz/fuzz_msg_wire, corpus build/fuzz/corpus/msg_wire
 * seeded from tests/fuzz/seeds/msg_wire/); `make test` replays the seeds
 * (replay.c).
 *
 * Input: one option byte (bit 0: dot_stuff, as for DATA), then the message.
 * The promise (msg.h, msg.c): a line ends at CRLF, a bare LF or a bare CR, and
 * each becomes CRLF; a last line without a line end gets CRLF; empty stays
 * empty; with dot_stuff a line starting with "." gets one more, so no line of
 * the output starts with a lone "." and removing one leading dot per line
 * gives the unstuffed form back. The flags and longest_line are checked
 * against a byte-at-a-time model written from that text; the target aborts
 * if the output differs. Independently of the model, the output is checked for
 * the no-smuggling invariant: no CR without LF after it, no LF without CR
 * before it, and (DATA) no line that is "." alone. And job_data_check
 * (queue/job.c), which refuses a message before it gets here, must agree with
 * the model: refused exactly when the input holds a NUL or a wire line over
 * 998 octets. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "queue/job.h"
#include "sender/msg.h"
#include "tests/fuzz/fuzz.h"

struct model {
	char *out; /* the unstuffed wire form */
	size_t len, longest;
	bool has_8bit, hdr_utf8;
};

/* The wire form byte by byte, without dot stuffing. */
static void model_build(struct model *m, const unsigned char *in, size_t n)
{
	m->out = malloc(2 * n + 3);
	FUZZ_NEED(m->out != NULL);
	m->len = m->longest = 0;
	m->has_8bit = m->hdr_utf8 = false;
	bool in_hdr = true;
	size_t line = 0; /* octets of the current line, CRLF excluded */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = in[i];
		if (c >= 0x80) {
			m->has_8bit = true;
			m->hdr_utf8 |= in_hdr;
		}
		if (c == '\n' || c == '\r') {
			if (c == '\r' && i + 1 < n && in[i + 1] == '\n')
				i++; /* CRLF */
			m->out[m->len++] = '\r';
			m->out[m->len++] = '\n';
			if (line > m->longest)
				m->longest = line;
			if (line == 0)
				in_hdr = false; /* the empty line ends the header section */
			line = 0;
			continue;
		}
		m->out[m->len++] = (char)c;
		line++;
	}
	if (n > 0 && in[n - 1] != '\n' && in[n - 1] != '\r') {
		m->out[m->len++] = '\r';
		m->out[m->len++] = '\n';
		if (line > m->longest)
			m->longest = line;
	}
}

/* No bare CR, no bare LF; with dot_stuff, no line that is "." alone (it
 * would end the DATA early at the receiver). */
static void check_invariant(const char *w, size_t n, bool stuff)
{
	for (size_t i = 0; i < n; i++) {
		if (w[i] == '\r')
			FUZZ_NEED(i + 1 < n && w[i + 1] == '\n');
		if (w[i] == '\n')
			FUZZ_NEED(i > 0 && w[i - 1] == '\r');
		if (stuff && w[i] == '.' && (i == 0 || w[i - 1] == '\n'))
			FUZZ_NEED(!(i + 2 < n && w[i + 1] == '\r' && w[i + 2] == '\n'));
	}
}

/* Remove one leading dot from every line of the stuffed output, checking that
 * every line that starts with a dot has two. */
static size_t unstuff(const char *w, size_t n, char *out)
{
	size_t o = 0;
	bool bol = true;
	for (size_t i = 0; i < n; i++) {
		if (bol && w[i] == '.') {
			FUZZ_NEED(i + 1 < n && w[i + 1] == '.');
			i++;
		}
		out[o++] = w[i];
		bol = w[i] == '\n';
	}
	return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	bool stuff = data[0] & 1;
	size_t n = size - 1;
	/* an exact copy (no NUL after it): a read past the end is an ASan report */
	char *raw = malloc(n ? n : 1);
	FUZZ_NEED(raw != NULL);
	if (n > 0)
		memcpy(raw, data + 1, n);

	struct msg_wire w;
	FUZZ_NEED(msg_wire_prepare(raw, n, stuff, &w) == 0);
	struct model m;
	model_build(&m, (const unsigned char *)raw, n);
	FUZZ_NEED(w.has_8bit == m.has_8bit && w.hdr_utf8 == m.hdr_utf8);
	FUZZ_NEED(w.longest_line == m.longest);
	FUZZ_NEED(n > 0 || w.len == 0);
	FUZZ_NEED(w.len == 0 || (w.len >= 2 && w.data[w.len - 2] == '\r' && w.data[w.len - 1] == '\n'));
	check_invariant(w.data, w.len, stuff);
	char why[64];
	bool refused = job_data_check(raw, n, why, sizeof(why)) != 0;
	FUZZ_NEED(refused == ((n > 0 && memchr(raw, '\0', n) != NULL) || m.longest > JOB_LINE_MAX));
	if (w.borrowed) /* already the wire form: nothing may change */
		FUZZ_NEED(w.data == raw && w.len == n && m.len == n && memcmp(m.out, raw, n) == 0);
	else if (w.len > 0)
		FUZZ_NEED(w.data[w.len] == '\0');
	if (stuff) {
		char *u = malloc(w.len + 1);
		FUZZ_NEED(u != NULL);
		size_t ul = unstuff(w.data, w.len, u);
		FUZZ_NEED(ul == m.len && memcmp(u, m.out, ul) == 0);
		free(u);
	} else {
		FUZZ_NEED(w.len == m.len && memcmp(w.data, m.out, m.len) == 0);
	}
	msg_wire_fini(&w);
	msg_wire_fini(&w); /* fini leaves it empty: safe twice */
	free(m.out);
	free(raw);
	return 0;
}
