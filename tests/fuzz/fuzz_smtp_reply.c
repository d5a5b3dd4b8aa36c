/* fuzz_smtp_reply.c: libFuzzer target for sender/smtp_reply.c. Not built by
 * default: `make fuzz` builds and runs it (build/fuzz/fuzz_smtp_reply, corpus
 * build/fuzz/corpus/smtp_reply seeded from tests/fuzz/seeds/smtp_reply/; add
 * FUZZ_FLAGS=-max_len=20000 to reach the 8 KiB reply cap); `make test` replays
 * the seeds (replay.c).
 *
 * The input is treated as a receive buffer: replies are parsed one after the
 * other, as the SMTP client does with pipelined replies (RFC 2920), and each
 * complete one also goes through the EHLO parser. Besides the sanitizers, the
 * target checks the parser's promises and aborts if one is broken. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sender/smtp_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct smtp_reply rep;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	size_t off = 0;

	while (off < size) {
		size_t used = 12345;
		const char *err = NULL;
		enum smtp_parse_rc rc = smtp_reply_parse(buf + off, size - off, &rep, &used, &err);
		if (rc != SMTP_PARSE_OK) {
			if (used != 0)
				abort();
			if (rc == SMTP_PARSE_ERR && err == NULL)
				abort();
			/* AGAIN is only allowed while under both limits. */
			if (rc == SMTP_PARSE_AGAIN && size - off >= SMTP_REPLY_MAX)
				abort();
			break;
		}
		if (used == 0 || used > size - off || used > SMTP_REPLY_MAX)
			abort();
		if (rep.code < 200 || rep.code > 599 || rep.nlines < 1)
			abort();
		if (rep.text_len >= sizeof(rep.text) || strlen(rep.text) != rep.text_len)
			abort();
		if (strlen(rep.esc) >= sizeof(rep.esc))
			abort();
		if (buf[off + used - 1] != '\n')
			abort();

		struct smtp_ehlo e;
		smtp_ehlo_parse(&rep, &e);
		if ((e.auth & ~(SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN)) != 0)
			abort();
		if (e.auth != 0 && !(e.ext & SMTP_EXT_AUTH))
			abort();
		if (e.size_max != 0 && !(e.ext & SMTP_EXT_SIZE))
			abort();
		off += used;
	}
	return 0;
}
