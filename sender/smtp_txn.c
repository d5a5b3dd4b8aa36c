/* smtp_txn.c: one transaction on an SMTP session (the session's life is in
 * smtp.c; shared state in smtp_int.h).
 *
 * Pipelining (RFC 2920): a transaction is a list of expected replies (MAIL,
 * one per RCPT, DATA and the end of data, or BDAT; then the RSET or QUIT that
 * checks the replies were in step: see "Replies in step"). With PIPELINING
 * they are written in as few groups as RFC 2920 allows and the FIFO matches
 * replies to commands; without it, the next command goes out when the
 * previous reply arrives. Either way the send cursor (`issued`) and the
 * receive cursor (`head`) are separate, as in Postfix's smtp_loop. The
 * session waits only after DATA and after the end of the message.
 *
 * Per-recipient outcomes of a transaction are data (smtp_result, `final` when
 * this attempt decided them). */
#include "sender/smtp_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sender/conn.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/msg.h"
#include "sender/util.h"

#define BODY_HIGH (256 * 1024) /* stream the body up to this much unsent output */
#define BODY_CHUNK (64 * 1024)

const struct smtp_exp_info smtp_exp_info[] = {
	[E_RSET] = { "RSET", offsetof(struct smtp_timeouts, rset) },
	[E_MAIL] = { "MAIL FROM", offsetof(struct smtp_timeouts, mail) },
	[E_RCPT] = { "RCPT TO", offsetof(struct smtp_timeouts, rcpt) },
	[E_DATA] = { "DATA", offsetof(struct smtp_timeouts, data) },
	[E_DOT] = { "the end of data", offsetof(struct smtp_timeouts, dot) },
	[E_BDAT] = { "BDAT", offsetof(struct smtp_timeouts, dot) },
	[E_QUIT] = { "QUIT", offsetof(struct smtp_timeouts, quit) },
};

enum smtp_class smtp_classify(int code)
{
	if (code >= 200 && code < 400)
		return SMTP_OK;
	if (code >= 400 && code < 500)
		return SMTP_TEMP;
	return SMTP_PERM;
}

void smtp_set_result(struct smtp_result *r, enum smtp_class cls, int code, const char *esc,
		     const char *text, bool final)
{
	r->cls = cls;
	r->code = code;
	strlcpy_x(r->esc, esc ? esc : "", sizeof(r->esc));
	/* one line: multi-line reply text is joined with single spaces, and
	 * leading or repeated blanks go (Exim answers BDAT with "250- 75 byte
	 * chunk, ..."): the result line is read by people and split by scripts */
	size_t o = 0;
	for (size_t i = 0; text && text[i] && o < sizeof(r->text) - 1; i++) {
		char c = (text[i] == '\n' || text[i] == '\r' || text[i] == '\t') ? ' ' : text[i];
		if (c == ' ' && (o == 0 || r->text[o - 1] == ' '))
			continue;
		r->text[o++] = c;
	}
	while (o > 0 && r->text[o - 1] == ' ')
		o--;
	r->text[o] = '\0';
	r->final = final;
	r->bclass = 0;
}

static void result_from_reply(struct smtp_result *r, const struct smtp_reply *rep, bool final)
{
	char esc[16];
	strlcpy_x(esc, rep->esc, sizeof(esc));
	if (esc[0] == '\0') /* synthesize a DSN code from the reply class */
		snprintf(esc, sizeof(esc), "%d.0.0", rep->code / 100);
	smtp_set_result(r, smtp_classify(rep->code), rep->code, esc, rep->text, final);
}

/* ---- transactions ---- */

static bool ascii(const char *p)
{
	for (; *p; p++)
		if ((unsigned char)*p >= 0x80)
			return false;
	return true;
}

static void issue_one(struct smtp_session *s)
{
	struct expect *e = &s->exp[s->issued++];
	struct smtp_txn *t = s->txn;
	switch (e->kind) {
	case E_RSET:
		smtp_cmd(s, "RSET");
		break;
	case E_QUIT:
		smtp_cmd(s, "QUIT");
		s->quit_sent = true;
		break;
	case E_DOT: /* written by smtp_body_pump, never issued here */
		log_panic("evt=smtp_issue_dot id=%016llx", (unsigned long long)s->p.id);
	case E_MAIL: {
		char params[128] = "";
		size_t pl = 0;
		if (s->ehlo.ext & SMTP_EXT_SIZE)
			pl += (size_t)snprintf(params + pl, sizeof(params) - pl, " SIZE=%zu", msg_wire_len(t->wire));
		if (t->wire->has_8bit && (s->ehlo.ext & SMTP_EXT_8BITMIME))
			pl += (size_t)snprintf(params + pl, sizeof(params) - pl, " BODY=8BITMIME");
		if ((s->ehlo.ext & SMTP_EXT_SMTPUTF8) &&
		    (t->smtputf8_needed || t->wire->hdr_utf8 || !ascii(t->from)))
			snprintf(params + pl, sizeof(params) - pl, " SMTPUTF8");
		smtp_cmd(s, "MAIL FROM:<%s>%s", t->from, params);
		break;
	}
	case E_RCPT:
		smtp_cmd(s, "RCPT TO:<%s>", t->rcpts[e->rcpt]);
		break;
	case E_DATA:
		smtp_cmd(s, "DATA");
		break;
	case E_BDAT:
		/* RFC 3030: the whole message as one chunk, streamed right behind
		 * the command; its reply is the message's outcome. */
		smtp_cmd(s, "BDAT %zu LAST", msg_wire_len(t->wire));
		s->body_on = true;
		smtp_body_pump(s);
		break;
	}
}

static void issue(struct smtp_session *s)
{
	bool pipe = (s->ehlo.ext & SMTP_EXT_PIPELINING) != 0;
	while (s->issued < s->nexp && (pipe || s->issued == s->head)) {
		enum exp_kind k = s->exp[s->issued].kind;
		if (k == E_DOT)
			break; /* smtp_body_pump writes it, after the 354 and the body */
		if ((k == E_RSET || k == E_QUIT) && !s->body_done)
			break; /* the check goes behind the message (DATA ends a group, RFC 2920 3.1) */
		if (!pipe && k != E_RSET && k != E_QUIT &&
		    (s->mail_failed || ((k == E_DATA || k == E_BDAT) && s->accepted == 0))) {
			/* Without pipelining, once the outcome makes the rest moot
			 * nothing more of the message goes out: straight to the check. */
			s->issued = s->head = s->nexp - 1;
			s->body_done = true;
			continue;
		}
		issue_one(s);
	}
}

/* ---- Replies in step ----
 * A server that sends one reply too many (a second 250 after the end of data,
 * arriving late, once the next transaction is on the wire) would shift every
 * later reply onto the command after the one it answers: the RCPT's 250 read
 * as the BDAT reply, the real BDAT 550 read afterwards as something else, and
 * a refused message reported delivered. These rules keep each reply with its
 * command, or drop the connection:
 *  - a reply that no command of its kind gets (2xx to DATA, 3xx to anything
 *    but DATA), or one that arrives while no command is outstanding (idle in
 *    the pool, in the body, after the transaction's last reply in the same
 *    read), puts the replies out of step;
 *  - every transaction ends with a check: RSET (QUIT when nothing follows)
 *    pipelined behind the message, answered 2xx. Where replies shifted, the
 *    message's real final reply lands on the check; a 4xx/5xx there puts the
 *    replies out of step. The RSET replaces the one the next transaction
 *    would have started with: no command more than before;
 *  - the transaction's results are reported only once the check is answered;
 *  - where the server gives enhanced status codes, the message's 2xx must
 *    not carry the one RCPT gets (2.1.5).
 * Out of step: nothing the transaction decided stands (results not final),
 * the connection is closed, never reused, and every recipient is retried. */
void smtp_out_of_step(struct smtp_session *s, const char *what, int code, const char *text)
{
	if (s->txn)
		for (int i = 0; i < s->txn->nrcpt; i++)
			s->txn->res[i].final = false;
	if (code == 0) /* no reply to quote (stray bytes): not "...: 0 " */
		smtp_sess_fail(s, SMTP_FAIL_LOST, SMTP_TEMP, 451, "4.5.0", "replies out of step: %s",
			       what);
	else
		smtp_sess_fail(s, SMTP_FAIL_LOST, SMTP_TEMP, 451, "4.5.0",
			       "replies out of step: %s: %d %s", what, code, text);
}

static void txn_done(struct smtp_session *s)
{
	if (s->rx_more) { /* in the same read as the check's reply: nobody asked */
		smtp_out_of_step(s, "bytes after the last reply of the transaction", 0, "");
		return;
	}
	s->txn = NULL;
	free(s->exp);
	s->exp = NULL;
	s->nexp = s->head = s->issued = 0;
	s->ntxn++;
	enter(s, S_READY);
	emit(s, SMTP_EV_TXN_DONE);
}

/* Recipients accepted so far get the outcome of DATA or the final dot. */
static void settle_accepted(struct smtp_session *s, const struct smtp_reply *r)
{
	struct smtp_txn *t = s->txn;
	for (int i = 0; i < t->nrcpt; i++)
		if (!t->res[i].final && t->res[i].cls == SMTP_OK && t->res[i].code != 0)
			result_from_reply(&t->res[i], r, true);
}

/* Stream the body, keeping at most BODY_HIGH bytes unsent; on_drain resumes.
 * The wire form is CRLF-normalised but not dot-stuffed, so one prepared copy
 * serves BDAT as is and DATA with dots doubled here (RFC 5321 4.5.2): every
 * LF in the normalised form ends a line. The message is two pieces, pre (the
 * signatures) then data; body_off counts over both. */
void smtp_body_pump(struct smtp_session *s)
{
	const struct msg_wire *w = s->txn->wire;
	size_t total = msg_wire_len(w);
	while (s->body_off < total && conn_out_pending(s->conn) < BODY_HIGH) {
		bool in_pre = s->body_off < w->pre_len;
		const char *d = in_pre ? w->pre : w->data;
		size_t base = in_pre ? 0 : w->pre_len, lim = in_pre ? w->pre_len : w->len;
		size_t off = s->body_off - base, end = off + BODY_CHUNK;
		if (end > lim)
			end = lim;
		if (s->bdat) {
			conn_write(s->conn, d + off, end - off);
			s->body_off = base + end;
			continue;
		}
		size_t start = off;
		while (off < end) {
			if (s->at_bol) {
				s->at_bol = false;
				if (d[off] == '.') {
					conn_write(s->conn, d + start, off - start);
					conn_write(s->conn, ".", 1);
					start = off;
				}
			}
			const char *nl = memchr(d + off, '\n', end - off);
			if (nl == NULL) {
				off = end;
				break;
			}
			off = (size_t)(nl - d) + 1;
			s->at_bol = true;
		}
		conn_write(s->conn, d + start, off - start);
		s->body_off = base + off;
	}
	if (s->body_off < total) {
		if (!s->bdat)
			arm(s, smtp_states[S_BODY].timeout); /* progress: a fresh block deadline */
		return;
	}
	s->body_on = false;
	s->body_done = true;
	if (!s->bdat) {
		conn_write(s->conn, ".\r\n", 3);
		s->issued++; /* E_DOT */
		enter(s, S_DOT);
	} /* else the BDAT reply is in the expectation FIFO */
	/* With PIPELINING the check (RSET, or QUIT: RFC 2920 3.1 lets it end a
	 * group) follows the message in the same packet: no round trip more. */
	issue(s);
}

void smtp_session_send(struct smtp_session *s, struct smtp_txn *t)
{
	if (s->st != S_READY || s->txn != NULL || s->quit_sent)
		log_panic("evt=smtp_send_not_ready id=%016llx state=%s", (unsigned long long)s->p.id,
			  smtp_states[s->st].name);
	s->txn = t;
	s->accepted = 0;
	s->mail_failed = false;
	s->body_off = 0;
	s->body_on = false;
	s->at_bol = true;
	s->body_done = false;
	s->bdat = (s->ehlo.ext & SMTP_EXT_CHUNKING) != 0 && !t->no_bdat;
	for (int i = 0; i < t->nrcpt; i++)
		memset(&t->res[i], 0, sizeof(t->res[i]));
	/* What the server lacks and the message needs is a permanent failure:
	 * RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8. No RSET needed:
	 * nothing was sent. */
	const char *esc = NULL, *why = NULL;
	int code = 0;
	char text[160];
	if (s->ehlo.size_max && msg_wire_len(t->wire) > s->ehlo.size_max) {
		code = 552, esc = "5.3.4";
		snprintf(text, sizeof(text), "message size %zu exceeds the server's SIZE limit %llu",
			 msg_wire_len(t->wire), (unsigned long long)s->ehlo.size_max);
		why = text;
	} else if (t->wire->has_8bit && !(s->ehlo.ext & SMTP_EXT_8BITMIME)) {
		code = 554, esc = "5.6.3", why = "message has 8-bit content and the server lacks 8BITMIME";
	} else if (t->smtputf8_needed && !(s->ehlo.ext & SMTP_EXT_SMTPUTF8)) {
		code = 553, esc = "5.6.7", why = "an envelope address of the transaction is non-ASCII and the server lacks SMTPUTF8";
	}
	if (why) {
		for (int i = 0; i < t->nrcpt; i++)
			smtp_set_result(&t->res[i], SMTP_PERM, code, esc, why, true);
		s->txn = t;
		s->exp = NULL;
		/* report from a completion context, never inside our caller */
		loop_defer(s->l, &s->task);
		return;
	}
	s->nexp = t->nrcpt + (s->bdat ? 3 : 4);
	s->exp = xcalloc((size_t)s->nexp, sizeof(*s->exp));
	int k = 0;
	s->exp[k++] = (struct expect){ E_MAIL, -1 };
	for (int i = 0; i < t->nrcpt; i++)
		s->exp[k++] = (struct expect){ E_RCPT, i };
	if (s->bdat) {
		s->exp[k++] = (struct expect){ E_BDAT, -1 };
	} else {
		s->exp[k++] = (struct expect){ E_DATA, -1 };
		s->exp[k++] = (struct expect){ E_DOT, -1 };
	}
	/* the check that the replies were in step; it also resets the
	 * transaction state for the next message (no RSET before it) */
	s->exp[k++] = (struct expect){ t->last ? E_QUIT : E_RSET, -1 };
	s->head = s->issued = 0;
	enter(s, S_TXN);
	arm(s, smtp_exp_info[s->exp[0].kind].timeout);
	issue(s);
}

void smtp_txn_reply(struct smtp_session *s, const struct smtp_reply *r)
{
	struct smtp_txn *t = s->txn;
	if (s->head >= s->issued) {
		smtp_out_of_step(s, "a reply with no command outstanding", r->code, r->text);
		return;
	}
	struct expect *e = &s->exp[s->head++];
	int cls = r->code / 100;
	/* DATA alone gets 354 and never 2xx (RFC 5321 4.3.2); the check, only 2xx */
	bool fits = e->kind == E_DATA		       ? r->code == 354 || cls == 4 || cls == 5
		    : e->kind == E_RSET || e->kind == E_QUIT ? cls == 2
							     : cls == 2 || cls == 4 || cls == 5;
	/* RFC 3463 X.1.5 "destination address valid" is what RCPT gets: on the
	 * message's 2xx (end of data, BDAT) it is a RCPT reply one place late,
	 * the case the check cannot see (the real final reply a 2xx too, but
	 * the recipients' replies shifted: RCPT 2's 550 read as RCPT 3's). */
	if (fits && cls == 2 && (e->kind == E_DOT || e->kind == E_BDAT) &&
	    (s->ehlo.ext & SMTP_EXT_ENHANCEDSTATUSCODES) && strcmp(r->esc, "2.1.5") == 0)
		fits = false;
	if (!fits) {
		char what[64];
		snprintf(what, sizeof(what), "%s answered", smtp_exp_info[e->kind].verb);
		smtp_out_of_step(s, what, r->code, r->text);
		return;
	}
	switch (e->kind) {
	case E_RSET:
		break;
	case E_QUIT:
		s->quit_acked = true;
		break;
	case E_MAIL:
		if (smtp_classify(r->code) != SMTP_OK) {
			s->mail_failed = true;
			for (int i = 0; i < t->nrcpt; i++) {
				result_from_reply(&t->res[i], r, true);
				if (r->code == 530) {
					/* RFC 4954 530: authentication required. Our
					 * configuration lacks it: defer, never bounce. */
					char txt[400];
					snprintf(txt, sizeof(txt), "530 %.300s (configure auth_user for this relay)",
						 r->text);
					smtp_set_result(&t->res[i], SMTP_TEMP, 451, "4.7.0", txt, true);
				}
			}
		}
		break;
	case E_RCPT:
		if (s->mail_failed)
			break;
		/* 2xx: accepted, decided by DATA/dot; 4xx/5xx: decided now */
		result_from_reply(&t->res[e->rcpt], r, smtp_classify(r->code) != SMTP_OK);
		if (smtp_classify(r->code) == SMTP_OK)
			s->accepted++;
		break;
	case E_DATA:
		if (r->code == 354 && (s->mail_failed || s->accepted == 0)) {
			/* RFC 2920 3.1: a 354 with no valid recipient; end the empty
			 * message and ignore the reply to it. */
			conn_write(s->conn, ".\r\n", 3);
			s->body_off = msg_wire_len(s->txn->wire);
			s->accepted = -1;
			s->issued++; /* E_DOT */
			s->body_done = true;
			enter(s, S_DOT);
			issue(s);
			return;
		}
		if (r->code == 354) {
			enter(s, S_BODY);
			smtp_body_pump(s);
			return;
		}
		if (!s->mail_failed)
			settle_accepted(s, r);
		s->issued++; /* DATA refused: no end of data, no reply to it */
		s->head++;
		s->body_done = true;
		break;
	case E_DOT:
		if (s->accepted >= 0)
			settle_accepted(s, r);
		break;
	case E_BDAT:
		if (s->body_on) {
			/* A reply before the chunk was fully sent: the server gave up
			 * on it; the connection's framing is now uncertain. */
			smtp_sess_fail(s, SMTP_FAIL_LOST, SMTP_TEMP, r->code, r->esc[0] ? r->esc : "4.0.0",
				       "BDAT answered before the chunk was sent: %d %s", r->code, r->text);
			return;
		}
		if (r->code == 500 || r->code == 502 || r->code == 504) {
			/* CHUNKING offered, BDAT not understood (RFC 5321 4.2.4):
			 * the chunk was read as command lines, so nothing after
			 * it can be trusted. The owner resends with DATA on a
			 * new connection. */
			s->status.bdat_refused = true;
			smtp_out_of_step(s, "BDAT refused although CHUNKING was offered", r->code, r->text);
			return;
		}
		if (!s->mail_failed && s->accepted > 0)
			settle_accepted(s, r);
		break;
	}
	if (s->head < s->nexp) {
		issue(s);
		if (s->head < s->issued) {
			if (s->st != S_TXN)
				enter(s, S_TXN); /* after the dot: waiting for the check */
			arm(s, smtp_exp_info[s->exp[s->head].kind].timeout);
			return;
		}
	}
	/* Nothing more is expected: the transaction is decided. */
	txn_done(s);
}
