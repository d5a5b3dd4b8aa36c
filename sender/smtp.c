/* smtp.c: the SMTP client session state machine.
 *
 * Three jobs, kept apart (OpenSMTPD mta_session): on_read() frames bytes into
 * replies (smtp_reply_parse enforces the line and reply limits), on_reply()
 * decides what a reply means for the command it answers, and enter() runs a
 * state's entry action and arms its deadline (RFC 5321 4.5.3.2 timeouts from
 * the config, indexed by state in a table).
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
 * Failure meaning: per-recipient outcomes of a transaction are data
 * (smtp_result, `final` when this attempt decided them); anything that breaks
 * the session (timeout, disconnect, 421, malformed reply) is SMTP_EV_FAIL and
 * the owner decides what to try next. A reply in a state that expects none is
 * a peer error, not ours: it fails the session. */
#include "sender/smtp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "sender/conn.h"
#include "sender/log.h"
#include "sender/loop.h"
#include "sender/metrics.h"
#include "sender/msg.h"
#include "sender/smtp_reply.h"
#include "sender/util.h"

#define BODY_HIGH (256 * 1024) /* stream the body up to this much unsent output */
#define BODY_CHUNK (64 * 1024)
#define IBUF_CAP (SMTP_REPLY_MAX + SMTP_LINE_MAX)

enum state {
	S_CONNECTING,
	S_BANNER,
	S_EHLO,
	S_HELO,
	S_STARTTLS,
	S_TLS,
	S_EHLO_TLS,
	S_AUTH,      /* AUTH PLAIN sent, or AUTH LOGIN password sent */
	S_AUTH_USER, /* AUTH LOGIN: waiting for the user name prompt */
	S_AUTH_PASS, /* AUTH LOGIN: waiting for the password prompt */
	S_READY,
	S_TXN, /* waiting for RSET/MAIL/RCPT/DATA replies (see expect FIFO) */
	S_BODY,
	S_DOT,
	S_QUIT,
	S_DEAD,
};

static const struct {
	const char *name;
	const char *action;
	size_t timeout; /* offset in struct smtp_timeouts */
} states[] = {
	[S_CONNECTING] = { "CONNECTING", "connecting", offsetof(struct smtp_timeouts, connect) },
	[S_BANNER] = { "BANNER", "waiting for the greeting", offsetof(struct smtp_timeouts, banner) },
	[S_EHLO] = { "EHLO", "sending EHLO", offsetof(struct smtp_timeouts, helo) },
	[S_HELO] = { "HELO", "sending HELO", offsetof(struct smtp_timeouts, helo) },
	[S_STARTTLS] = { "STARTTLS", "sending STARTTLS", offsetof(struct smtp_timeouts, starttls) },
	[S_TLS] = { "TLS_HANDSHAKE", "in the TLS handshake", offsetof(struct smtp_timeouts, starttls) },
	[S_EHLO_TLS] = { "EHLO_TLS", "sending EHLO after STARTTLS", offsetof(struct smtp_timeouts, helo) },
	[S_AUTH] = { "AUTH", "authenticating", offsetof(struct smtp_timeouts, helo) },
	[S_AUTH_USER] = { "AUTH_USER", "authenticating", offsetof(struct smtp_timeouts, helo) },
	[S_AUTH_PASS] = { "AUTH_PASS", "authenticating", offsetof(struct smtp_timeouts, helo) },
	[S_READY] = { "READY", "idle", 0 },
	[S_TXN] = { "TXN", "sending MAIL/RCPT/DATA", offsetof(struct smtp_timeouts, mail) },
	[S_BODY] = { "BODY", "sending the message body", offsetof(struct smtp_timeouts, block) },
	[S_DOT] = { "DOT", "waiting for the reply to the end of data", offsetof(struct smtp_timeouts, dot) },
	[S_QUIT] = { "QUIT", "sending QUIT", offsetof(struct smtp_timeouts, quit) },
	[S_DEAD] = { "CLOSED", "closed", 0 },
};

/* A transaction's expected replies, in order: MAIL, one per RCPT, DATA and the
 * end of data (DOT), or BDAT; then RSET, or QUIT when nothing follows on the
 * session. That last command is the check that the replies were in step: see
 * "Replies in step" below. */
enum exp_kind { E_RSET, E_MAIL, E_RCPT, E_DATA, E_DOT, E_BDAT, E_QUIT };
static const struct {
	const char *verb;
	size_t timeout;
} exp_info[] = {
	[E_RSET] = { "RSET", offsetof(struct smtp_timeouts, rset) },
	[E_MAIL] = { "MAIL FROM", offsetof(struct smtp_timeouts, mail) },
	[E_RCPT] = { "RCPT TO", offsetof(struct smtp_timeouts, rcpt) },
	[E_DATA] = { "DATA", offsetof(struct smtp_timeouts, data) },
	[E_DOT] = { "the end of data", offsetof(struct smtp_timeouts, dot) },
	[E_BDAT] = { "BDAT", offsetof(struct smtp_timeouts, dot) },
	[E_QUIT] = { "QUIT", offsetof(struct smtp_timeouts, quit) },
};

struct expect {
	enum exp_kind kind;
	int rcpt;
};

struct smtp_session {
	struct loop *l;
	struct smtp_params p;
	/* copies, in one allocation (strs); auth_pass is wiped before free */
	char *strs, *mx_host, *helo, *auth_user, *auth_pass;
	void (*gone)(void *, const char *); /* smtp_session_quit_notify */
	void *gone_arg;
	bool authed;
	smtp_event_fn *cb;
	void *arg;
	struct conn *conn;
	struct loop_timer timer;
	struct loop_task task; /* deferred events (connect failure, self-free) */
	enum state st;
	bool dead, quitting, in_cb, free_pending;
	bool quit_sent; /* QUIT already went out behind the last message */
	struct smtp_status status;
	struct smtp_ehlo ehlo;
	/* input framing */
	char *ibuf;
	size_t ilen;
	/* transaction */
	struct smtp_txn *txn;
	struct expect *exp;
	int nexp, head, issued;
	int accepted;
	bool mail_failed;
	unsigned ntxn;
	uint64_t born;
	size_t body_off;
	bool bdat;       /* CHUNKING: the body goes out as one BDAT LAST chunk */
	bool body_on;    /* body streaming in progress */
	bool body_done;  /* the body and its end (dot, or the BDAT chunk) are written */
	bool rx_more;    /* c_read: bytes follow the reply being handled */
	bool quit_acked; /* the QUIT that ended the last transaction was answered */
	bool at_bol;     /* dot-stuffing state: next byte starts a line */
	/* the handshake gate (hs_gate_*) */
	bool hs_holding, hs_waiting;
	bool m_opened, m_tls; /* counted in p.metrics: the connection, its TLS outcome */
	TAILQ_ENTRY(smtp_session) hs_link; /* while hs_waiting */
	struct loop_task hs_task;
};

/* ---- the handshake gate ----
 * A TLS handshake in progress holds ~40-60 KiB (record and handshake buffers,
 * key shares, the peer's chain) against ~20 KiB for an established session,
 * and costs CPU, not waiting: thousands at once only queue for the core and
 * raise the memory high-water mark (10,000 sessions whose STARTTLS replies
 * arrive together). So each thread runs at most max_handshakes at once; the
 * others wait in FIFO order in S_TLS (its timeout covers the wait), having
 * sent nothing: the server is waiting for our ClientHello. */
static _Thread_local struct {
	unsigned active;
	TAILQ_HEAD(, smtp_session) waiting;
	bool ready; /* waiting initialised (per thread, on first use) */
} hs_gate;

static void begin_tls(struct smtp_session *s);

static void hs_gate_leave(struct smtp_session *s)
{
	if (s->hs_waiting) {
		TAILQ_REMOVE(&hs_gate.waiting, s, hs_link);
		s->hs_waiting = false;
	}
	loop_task_cancel(s->l, &s->hs_task);
	if (!s->hs_holding)
		return;
	s->hs_holding = false;
	hs_gate.active--;
	struct smtp_session *w = TAILQ_FIRST(&hs_gate.waiting);
	if (w == NULL)
		return;
	TAILQ_REMOVE(&hs_gate.waiting, w, hs_link);
	w->hs_waiting = false;
	w->hs_holding = true;
	hs_gate.active++;
	loop_defer(w->l, &w->hs_task); /* never inside the leaving session's call */
}

static void hs_task_fn(struct loop_task *t)
{
	struct smtp_session *s = container_of(t, struct smtp_session, hs_task);
	if (s->hs_holding && s->st == S_TLS && !s->dead)
		begin_tls(s);
}

/* True when s may handshake now; else it is queued and begin_tls runs later. */
static bool hs_gate_enter(struct smtp_session *s)
{
	if (s->p.max_handshakes == 0 || hs_gate.active < s->p.max_handshakes) {
		s->hs_holding = true;
		hs_gate.active++;
		return true;
	}
	if (!hs_gate.ready) {
		TAILQ_INIT(&hs_gate.waiting);
		hs_gate.ready = true;
	}
	s->hs_waiting = true;
	TAILQ_INSERT_TAIL(&hs_gate.waiting, s, hs_link);
	return false;
}

enum smtp_class smtp_classify(int code)
{
	if (code >= 200 && code < 400)
		return SMTP_OK;
	if (code >= 400 && code < 500)
		return SMTP_TEMP;
	return SMTP_PERM;
}

const char *smtp_session_state(const struct smtp_session *s)
{
	return states[s->st].name;
}

static uint32_t timeout_of(const struct smtp_session *s, size_t off)
{
	return *(const uint32_t *)(const void *)((const char *)s->p.to + off);
}

static void set_result(struct smtp_result *r, enum smtp_class cls, int code, const char *esc,
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
}

static void result_from_reply(struct smtp_result *r, const struct smtp_reply *rep, bool final)
{
	char esc[16];
	strlcpy_x(esc, rep->esc, sizeof(esc));
	if (esc[0] == '\0') /* synthesize a DSN code from the reply class */
		snprintf(esc, sizeof(esc), "%d.0.0", rep->code / 100);
	set_result(r, smtp_classify(rep->code), rep->code, esc, rep->text, final);
}

static void arm(struct smtp_session *s, size_t off)
{
	loop_timer_arm(s->l, &s->timer, timeout_of(s, off));
}

static void enter(struct smtp_session *s, enum state st)
{
	if (s->st == S_TLS && st != S_TLS)
		hs_gate_leave(s);
	if (s->st != st)
		log_trace("smtp %016llx: %s -> %s", (unsigned long long)s->p.id, states[s->st].name,
			  states[st].name);
	s->st = st;
	if (st == S_READY || st == S_DEAD)
		loop_timer_stop(s->l, &s->timer);
	else
		arm(s, states[st].timeout);
}

static void emit(struct smtp_session *s, enum smtp_event ev)
{
	s->in_cb = true;
	s->cb(s->arg, s, ev, &s->status);
	s->in_cb = false;
}

/* The session cannot go on: stop I/O and tell the owner once. */
static void fail(struct smtp_session *s, enum smtp_fail why, enum smtp_class cls, int code,
		 const char *esc, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void fail(struct smtp_session *s, enum smtp_fail why, enum smtp_class cls, int code,
		 const char *esc, const char *fmt, ...)
{
	if (s->dead)
		return;
	char text[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	char qtext[sizeof(text) * 2]; /* the server's words: escaped (log.h) */
	log_info("evt=smtp_fail id=%016llx peer=%s[%s] state=%s code=%d esc=%s text=\"%s\"",
		 (unsigned long long)s->p.id, s->mx_host, s->conn ? conn_peer(s->conn) : "-",
		 states[s->st].name, code, esc, log_q(qtext, sizeof(qtext), text));
	s->dead = true;
	enter(s, S_DEAD);
	conn_close(s->conn);
	s->conn = NULL;
	s->status.fail = why;
	set_result(&s->status.why, cls, code, esc, text, false);
	if (s->quitting) { /* the owner already let go: nobody to tell */
		loop_defer(s->l, &s->task);
		return;
	}
	emit(s, SMTP_EV_FAIL);
}

static void vcmd(struct smtp_session *s, bool secret, const char *fmt, va_list ap)
{
	char line[SMTP_LINE_MAX];
	int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 2)
		log_panic("evt=smtp_command_too_long id=%016llx", (unsigned long long)s->p.id);
	/* AUTH data is never logged, not even at trace (STYLE 10) */
	log_trace("smtp %016llx: >>> %s", (unsigned long long)s->p.id, secret ? "(credentials)" : line);
	line[n++] = '\r';
	line[n++] = '\n';
	conn_write(s->conn, line, (size_t)n);
	memset(line, 0, sizeof(line));
}

static void cmd(struct smtp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cmd(struct smtp_session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vcmd(s, false, fmt, ap);
	va_end(ap);
}

static void cmd_secret(struct smtp_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void cmd_secret(struct smtp_session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vcmd(s, true, fmt, ap);
	va_end(ap);
}

/* ---- transactions ---- */

static bool ascii(const char *p)
{
	for (; *p; p++)
		if ((unsigned char)*p >= 0x80)
			return false;
	return true;
}

static void body_pump(struct smtp_session *s);

static void issue_one(struct smtp_session *s)
{
	struct expect *e = &s->exp[s->issued++];
	struct smtp_txn *t = s->txn;
	switch (e->kind) {
	case E_RSET:
		cmd(s, "RSET");
		break;
	case E_QUIT:
		cmd(s, "QUIT");
		s->quit_sent = true;
		break;
	case E_DOT: /* written by body_pump, never issued here */
		log_panic("evt=smtp_issue_dot id=%016llx", (unsigned long long)s->p.id);
	case E_MAIL: {
		char params[128] = "";
		size_t pl = 0;
		if (s->ehlo.ext & SMTP_EXT_SIZE)
			pl += (size_t)snprintf(params + pl, sizeof(params) - pl, " SIZE=%zu", t->wire->len);
		if (t->wire->has_8bit && (s->ehlo.ext & SMTP_EXT_8BITMIME))
			pl += (size_t)snprintf(params + pl, sizeof(params) - pl, " BODY=8BITMIME");
		if ((s->ehlo.ext & SMTP_EXT_SMTPUTF8) &&
		    (t->smtputf8_needed || t->wire->hdr_utf8 || !ascii(t->from)))
			snprintf(params + pl, sizeof(params) - pl, " SMTPUTF8");
		cmd(s, "MAIL FROM:<%s>%s", t->from, params);
		break;
	}
	case E_RCPT:
		cmd(s, "RCPT TO:<%s>", t->rcpts[e->rcpt]);
		break;
	case E_DATA:
		cmd(s, "DATA");
		break;
	case E_BDAT:
		/* RFC 3030: the whole message as one chunk, streamed right behind
		 * the command; its reply is the message's outcome. */
		cmd(s, "BDAT %zu LAST", t->wire->len);
		s->body_on = true;
		body_pump(s);
		break;
	}
}

static void issue(struct smtp_session *s)
{
	bool pipe = (s->ehlo.ext & SMTP_EXT_PIPELINING) != 0;
	while (s->issued < s->nexp && (pipe || s->issued == s->head)) {
		enum exp_kind k = s->exp[s->issued].kind;
		if (k == E_DOT)
			break; /* body_pump writes it, after the 354 and the body */
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
static void out_of_step(struct smtp_session *s, const char *what, int code, const char *text)
{
	if (s->txn)
		for (int i = 0; i < s->txn->nrcpt; i++)
			s->txn->res[i].final = false;
	fail(s, SMTP_FAIL_LOST, SMTP_TEMP, 451, "4.5.0", "replies out of step: %s: %d %s", what, code,
	     text);
}

static void txn_done(struct smtp_session *s)
{
	if (s->rx_more) { /* in the same read as the check's reply: nobody asked */
		out_of_step(s, "bytes after the last reply of the transaction", 0, "");
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
 * LF in the normalised form ends a line. */
static void body_pump(struct smtp_session *s)
{
	const struct msg_wire *w = s->txn->wire;
	const char *d = w->data;
	while (s->body_off < w->len && conn_out_pending(s->conn) < BODY_HIGH) {
		size_t off = s->body_off, end = off + BODY_CHUNK;
		if (end > w->len)
			end = w->len;
		if (s->bdat) {
			conn_write(s->conn, d + off, end - off);
			s->body_off = end;
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
		s->body_off = off;
	}
	if (s->body_off < w->len) {
		if (!s->bdat)
			arm(s, states[S_BODY].timeout); /* progress: a fresh block deadline */
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
			  states[s->st].name);
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
	if (s->ehlo.size_max && t->wire->len > s->ehlo.size_max) {
		code = 552, esc = "5.3.4";
		snprintf(text, sizeof(text), "message size %zu exceeds the server's SIZE limit %llu",
			 t->wire->len, (unsigned long long)s->ehlo.size_max);
		why = text;
	} else if (t->wire->has_8bit && !(s->ehlo.ext & SMTP_EXT_8BITMIME)) {
		code = 554, esc = "5.6.3", why = "message has 8-bit content and the server lacks 8BITMIME";
	} else if (t->smtputf8_needed && !(s->ehlo.ext & SMTP_EXT_SMTPUTF8)) {
		code = 553, esc = "5.6.7", why = "an envelope address of the transaction is non-ASCII and the server lacks SMTPUTF8";
	}
	if (why) {
		for (int i = 0; i < t->nrcpt; i++)
			set_result(&t->res[i], SMTP_PERM, code, esc, why, true);
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
	arm(s, exp_info[s->exp[0].kind].timeout);
	issue(s);
}

static void on_txn_reply(struct smtp_session *s, const struct smtp_reply *r)
{
	struct smtp_txn *t = s->txn;
	if (s->head >= s->issued) {
		out_of_step(s, "a reply with no command outstanding", r->code, r->text);
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
		snprintf(what, sizeof(what), "%s answered", exp_info[e->kind].verb);
		out_of_step(s, what, r->code, r->text);
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
					set_result(&t->res[i], SMTP_TEMP, 451, "4.7.0", txt, true);
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
			s->body_off = s->txn->wire->len;
			s->accepted = -1;
			s->issued++; /* E_DOT */
			s->body_done = true;
			enter(s, S_DOT);
			issue(s);
			return;
		}
		if (r->code == 354) {
			enter(s, S_BODY);
			body_pump(s);
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
			fail(s, SMTP_FAIL_LOST, SMTP_TEMP, r->code, r->esc[0] ? r->esc : "4.0.0",
			     "BDAT answered before the chunk was sent: %d %s", r->code, r->text);
			return;
		}
		if (r->code == 500 || r->code == 502 || r->code == 504) {
			/* CHUNKING offered, BDAT not understood (RFC 5321 4.2.4):
			 * the chunk was read as command lines, so nothing after
			 * it can be trusted. The owner resends with DATA on a
			 * new connection. */
			s->status.bdat_refused = true;
			out_of_step(s, "BDAT refused although CHUNKING was offered", r->code, r->text);
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
			arm(s, exp_info[s->exp[s->head].kind].timeout);
			return;
		}
	}
	/* Nothing more is expected: the transaction is decided. */
	txn_done(s);
}

/* ---- session set-up ---- */

/* RFC 4954: AUTH only over TLS (credentials never travel in plaintext),
 * PLAIN when offered, else LOGIN. A refusal is a temporary failure for the
 * messages: the operator must fix the credentials, the mail must not bounce.
 * DESIGN: credentials only to a peer whose certificate verified for the relay's
 * name, under the verify context; config.c demands tls = verify already, but
 * the verdict of THIS connection is what is checked here, right before AUTH
 * (`send --tls`, a weaker pooled context, or a future code path cannot
 * slip through). auth_insecure = yes relaxes the certificate, never the TLS. */
static void start_auth(struct smtp_session *s, bool tls_on)
{
	char raw[600], b64[820];
	if (!tls_on || !s->status.tls) {
		fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.0",
		     "AUTH configured but no TLS with %s: credentials are never sent in plaintext",
		     s->mx_host);
		return;
	}
	if (!s->p.auth_insecure && (s->p.level != TLS_LEVEL_VERIFY || !s->status.verdict.verified)) {
		fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.0",
		     "AUTH configured but the certificate of %s was not verified (tls=%s): "
		     "credentials go only to a verified relay", s->mx_host, tls_level_name(s->p.level));
		return;
	}
	if (s->ehlo.auth & SMTP_AUTH_PLAIN) {
		size_t ul = strlen(s->auth_user), pl = strlen(s->auth_pass);
		raw[0] = '\0';
		memcpy(raw + 1, s->auth_user, ul);
		raw[1 + ul] = '\0';
		memcpy(raw + 2 + ul, s->auth_pass, pl);
		util_base64(raw, 2 + ul + pl, b64, sizeof(b64));
		enter(s, S_AUTH);
		cmd_secret(s, "AUTH PLAIN %s", b64);
	} else if (s->ehlo.auth & SMTP_AUTH_LOGIN) {
		enter(s, S_AUTH_USER);
		cmd(s, "AUTH LOGIN");
	} else {
		fail(s, SMTP_FAIL_GREETING, SMTP_TEMP, 451, "4.7.0",
		     "%s offers no AUTH PLAIN or LOGIN", s->mx_host);
		return;
	}
	memset(raw, 0, sizeof(raw));
	memset(b64, 0, sizeof(b64));
}

static void after_ehlo(struct smtp_session *s)
{
	bool tls_on = conn_tls(s->conn) != NULL;
	enum tls_level lvl = s->p.level;
	if (!tls_on && lvl != TLS_LEVEL_NONE && (s->ehlo.ext & SMTP_EXT_STARTTLS)) {
		enter(s, S_STARTTLS);
		cmd(s, "STARTTLS");
		return;
	}
	if (!tls_on && lvl >= TLS_LEVEL_ENCRYPT) {
		s->status.no_starttls = true;
		fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.5", "STARTTLS not offered by %s (tls=%s required)",
		     s->mx_host, tls_level_name(lvl));
		return;
	}
	s->status.ext = s->ehlo.ext;
	if (!s->m_tls) { /* the session's TLS outcome, once: TLS, or plaintext allowed */
		s->m_tls = true;
		const struct tls_verdict *v = &s->status.verdict;
		metrics_tls(s->p.metrics,
			    s->status.tls ? metrics_tls_version_parse(v->version) : METRICS_TLS_NONE,
			    v->verified, v->resumed);
	}
	if (s->auth_user[0] && !s->authed) {
		start_auth(s, tls_on);
		return;
	}
	enter(s, S_READY);
	emit(s, SMTP_EV_READY);
}

/* The TLS session for this MX, resumable under (host, port, SNI, verify). */
static void begin_tls(struct smtp_session *s)
{
	char key[600];
	int port = s->p.addr.ss_family == AF_INET6
			   ? ntohs(((struct sockaddr_in6 *)&s->p.addr)->sin6_port)
			   : ntohs(((struct sockaddr_in *)&s->p.addr)->sin_port);
	bool verify = s->p.level == TLS_LEVEL_VERIFY;
	snprintf(key, sizeof(key), "%s:%d:%s:%s", s->mx_host, port, s->mx_host,
		 verify ? "verify" : "none");
	struct tls *t = tls_new(s->p.tc, s->mx_host, s->mx_host, verify, key);
	conn_starttls(s->conn, t);
}

static void start_tls(struct smtp_session *s)
{
	enter(s, S_TLS);
	if (hs_gate_enter(s))
		begin_tls(s);
}

static void on_reply(struct smtp_session *s, const struct smtp_reply *r)
{
	log_trace("smtp %016llx: <<< %d %s", (unsigned long long)s->p.id, r->code, r->text);
	/* 421: the server is closing the channel, whatever we asked (RFC 5321 3.8). */
	if (r->code == 421 && s->st != S_QUIT) {
		fail(s, s->st <= S_AUTH_PASS ? SMTP_FAIL_GREETING : SMTP_FAIL_LOST, SMTP_TEMP, 421,
		     r->esc[0] ? r->esc : "4.0.0", "%s", r->text);
		return;
	}
	int cls = smtp_classify(r->code);
	switch (s->st) {
	case S_BANNER:
		if (r->code != 220) {
			/* A 5xx greeting is a refusal by this host; the owner moves on
			 * (like Postfix smtp_skip_5xx_greeting). */
			cmd(s, "QUIT");
			fail(s, SMTP_FAIL_GREETING, cls == SMTP_PERM ? SMTP_PERM : SMTP_TEMP, r->code,
			     r->esc[0] ? r->esc : (cls == SMTP_PERM ? "5.0.0" : "4.0.0"), "greeting: %s",
			     r->text);
			return;
		}
		enter(s, S_EHLO);
		cmd(s, "EHLO %s", s->helo);
		return;
	case S_EHLO:
	case S_EHLO_TLS:
		if (cls == SMTP_OK) {
			smtp_ehlo_parse(r, &s->ehlo);
			after_ehlo(s);
			return;
		}
		if (s->st == S_EHLO && cls == SMTP_PERM) {
			enter(s, S_HELO);
			cmd(s, "HELO %s", s->helo);
			return;
		}
		fail(s, SMTP_FAIL_GREETING, cls == SMTP_PERM ? SMTP_PERM : SMTP_TEMP, r->code,
		     r->esc[0] ? r->esc : "4.0.0", "EHLO refused: %s", r->text);
		return;
	case S_HELO:
		if (cls != SMTP_OK) {
			fail(s, SMTP_FAIL_GREETING, cls == SMTP_PERM ? SMTP_PERM : SMTP_TEMP, r->code,
			     r->esc[0] ? r->esc : "4.0.0", "HELO refused: %s", r->text);
			return;
		}
		memset(&s->ehlo, 0, sizeof(s->ehlo));
		after_ehlo(s);
		return;
	case S_STARTTLS:
		if (r->code != 220) {
			if (s->p.level == TLS_LEVEL_MAY) {
				s->ehlo.ext &= ~SMTP_EXT_STARTTLS;
				after_ehlo(s);
				return;
			}
			s->status.no_starttls = true;
			fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.5", "STARTTLS refused: %d %s", r->code,
			     r->text);
			return;
		}
		/* RFC 3207 5: discard anything the server sent after its 220; it
		 * could only be an injection attempt. */
		s->ilen = 0;
		start_tls(s);
		return;
	case S_AUTH_USER:
	case S_AUTH_PASS:
		if (r->code == 334) {
			char b64[400];
			const char *v = s->st == S_AUTH_USER ? s->auth_user : s->auth_pass;
			util_base64(v, strlen(v), b64, sizeof(b64));
			enter(s, s->st == S_AUTH_USER ? S_AUTH_PASS : S_AUTH);
			cmd_secret(s, "%s", b64);
			memset(b64, 0, sizeof(b64));
			return;
		}
		/* a refusal */
		__attribute__((fallthrough));
	case S_AUTH:
		if (r->code == 235) {
			s->authed = true;
			enter(s, S_READY);
			emit(s, SMTP_EV_READY);
			return;
		}
		/* reported as a temporary failure (451 4.7.8): the credentials
		 * need fixing, the mail must not bounce; the server's reply stays
		 * in the text */
		fail(s, SMTP_FAIL_GREETING, SMTP_TEMP, 451, "4.7.8", "AUTH refused: %d %s", r->code,
		     r->text);
		return;
	case S_TXN:
		on_txn_reply(s, r);
		return;
	case S_DOT:
		on_txn_reply(s, r);
		return;
	case S_QUIT:
		enter(s, S_DEAD);
		conn_close(s->conn);
		s->conn = NULL;
		loop_defer(s->l, &s->task);
		return;
	default:
		fail(s, SMTP_FAIL_LOST, SMTP_TEMP, 451, "4.5.0", "unexpected reply %d in state %s",
		     r->code, states[s->st].name);
		return;
	}
}

/* ---- conn callbacks ---- */

static void c_connect(void *arg, int err)
{
	struct smtp_session *s = arg;
	if (err < 0) {
		fail(s, SMTP_FAIL_CONNECT, SMTP_TEMP, 451, "4.4.1", "connect to %s failed: %s",
		     conn_peer(s->conn), strerror(-err));
		return;
	}
	if (s->p.implicit_tls) { /* RFC 8314: TLS first, then the greeting */
		start_tls(s);
		return;
	}
	enter(s, S_BANNER);
}

/* Frame replies. Complete replies are parsed straight from the received bytes;
 * only an incomplete tail is kept, in ibuf, allocated while it is needed (most
 * sessions wait on a reply with nothing buffered). */
static void c_read(void *arg, const char *data, size_t n)
{
	struct smtp_session *s = arg;
	if (s->st == S_TLS || s->dead)
		return; /* plaintext after STARTTLS 220: discarded (RFC 3207) */
	while (n > 0 && !s->dead) {
		const char *p = data;
		size_t len = n;
		if (s->ilen > 0) {
			/* join the kept tail with new bytes (bounded by IBUF_CAP) */
			size_t take = IBUF_CAP - s->ilen < n ? IBUF_CAP - s->ilen : n;
			memcpy(s->ibuf + s->ilen, data, take);
			s->ilen += take;
			data += take;
			n -= take;
			p = s->ibuf;
			len = s->ilen;
		} else {
			data += n;
			n = 0;
		}
		size_t off = 0;
		for (;;) {
			struct smtp_reply r;
			size_t used = 0;
			const char *err = NULL;
			enum smtp_parse_rc rc = smtp_reply_parse(p + off, len - off, &r, &used, &err);
			if (rc == SMTP_PARSE_AGAIN) {
				if (len - off >= IBUF_CAP)
					rc = SMTP_PARSE_ERR, err = "reply too long";
				else
					break;
			}
			if (rc == SMTP_PARSE_ERR) {
				fail(s, SMTP_FAIL_LOST, SMTP_TEMP, 451, "4.5.0", "protocol error %s: %s",
				     states[s->st].action, err ? err : "malformed reply");
				return;
			}
			off += used;
			if (s->st == S_BODY) { /* DATA's 354 came; the end of data is not sent */
				out_of_step(s, "a reply while the body is sent", r.code, r.text);
				return;
			}
			if (s->st == S_READY || s->st == S_CONNECTING) {
				/* idle (in the pool): nothing was asked; the connection
				 * is closed, never reused */
				fail(s, SMTP_FAIL_LOST, SMTP_TEMP, r.code == 421 ? 421 : 451, "4.5.0",
				     "unexpected reply in state %s: %d %s", states[s->st].name, r.code, r.text);
				return;
			}
			s->rx_more = off < len || n > 0;
			on_reply(s, &r);
			s->rx_more = false;
			if (s->dead || s->conn == NULL || s->st == S_TLS) {
				s->ilen = 0;
				return;
			}
		}
		/* keep the incomplete tail */
		size_t rest = len - off;
		if (rest == 0) {
			s->ilen = 0;
			free(s->ibuf);
			s->ibuf = NULL;
		} else if (p == s->ibuf) {
			memmove(s->ibuf, s->ibuf + off, rest);
			s->ilen = rest;
		} else {
			if (s->ibuf == NULL)
				s->ibuf = xmalloc(IBUF_CAP);
			memcpy(s->ibuf, p + off, rest);
			s->ilen = rest;
		}
	}
	/* A pipelined transaction still waits for replies the server may be
	 * holding back until it sees our ACK (Nagle: Postfix writes the MAIL/RCPT
	 * replies, then the BDAT reply): ACK this read now, not in 40 ms. */
	if (s->st == S_TXN && s->head < s->issued)
		conn_quickack(s->conn);
}

static void c_tls(void *arg, int err)
{
	struct smtp_session *s = arg;
	struct tls *t = conn_tls(s->conn);
	s->status.tls_tried = true;
	tls_get_verdict(t, &s->status.verdict);
	if (err < 0) {
		const char *why = tls_error(t);
		if (s->p.level == TLS_LEVEL_MAY)
			fail(s, SMTP_FAIL_TLS_MAY, SMTP_TEMP, 451, "4.7.5", "%s", why);
		else
			fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.5", "%s", why);
		return;
	}
	s->status.tls = true;
	/* Rule min_tls = 1.3: a TLS 1.2 session does not count as the TLS
	 * required. Under `may` it is kept (better than the plaintext fallback). */
	if (s->p.min_tls >= 13 && s->p.level >= TLS_LEVEL_ENCRYPT &&
	    strcmp(s->status.verdict.version, "TLSv1.3") != 0) {
		fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.5", "%s negotiated, min_tls 1.3 required",
		     s->status.verdict.version);
		return;
	}
	if (s->p.level == TLS_LEVEL_VERIFY && !s->status.verdict.verified) {
		fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.5", "certificate verify failed: %s",
		     s->status.verdict.verify_text);
		return;
	}
	log_debug("evt=tls id=%016llx peer=%s[%s] version=%s cipher=%s verified=%s resumed=%s",
		  (unsigned long long)s->p.id, s->mx_host, conn_peer(s->conn), s->status.verdict.version,
		  s->status.verdict.cipher, s->status.verdict.verified ? "yes" : "no",
		  s->status.verdict.resumed ? "yes" : "no");
	memset(&s->ehlo, 0, sizeof(s->ehlo));
	if (s->p.implicit_tls) {
		enter(s, S_BANNER); /* the greeting comes over TLS */
		return;
	}
	enter(s, S_EHLO_TLS);
	cmd(s, "EHLO %s", s->helo);
}

static void c_error(void *arg, int err)
{
	struct smtp_session *s = arg;
	if (s->st == S_QUIT) {
		enter(s, S_DEAD);
		conn_close(s->conn);
		s->conn = NULL;
		loop_defer(s->l, &s->task);
		return;
	}
	if (s->st == S_TLS) {
		/* Cut in the handshake (a reset or close after the ClientHello): a
		 * failed handshake like any other, so `may` goes on in plaintext. */
		s->status.tls_tried = true;
		fail(s, s->p.level == TLS_LEVEL_MAY ? SMTP_FAIL_TLS_MAY : SMTP_FAIL_TLS, SMTP_TEMP, 451,
		     "4.7.5", "connection lost in the TLS handshake: %s",
		     err == 0 ? "closed by peer" : strerror(-err));
		return;
	}
	fail(s, SMTP_FAIL_LOST, SMTP_TEMP, 451, "4.4.2", "connection lost %s: %s", states[s->st].action,
	     err == 0 ? "closed by peer" : strerror(-err));
}

static void c_drain(void *arg)
{
	struct smtp_session *s = arg;
	if (s->st == S_BODY || (s->st == S_TXN && s->body_on))
		body_pump(s);
}

static const struct conn_cb conn_cbs = {
	.on_connect = c_connect,
	.on_read = c_read,
	.on_tls = c_tls,
	.on_error = c_error,
	.on_drain = c_drain,
};

static void timer_fn(struct loop_timer *t)
{
	struct smtp_session *s = container_of(t, struct smtp_session, timer);
	if (s->st == S_QUIT) {
		enter(s, S_DEAD);
		conn_close(s->conn);
		s->conn = NULL;
		loop_defer(s->l, &s->task);
		return;
	}
	const char *what = states[s->st].action;
	char buf[64];
	if (s->st == S_TXN && s->head < s->nexp) {
		snprintf(buf, sizeof(buf), "waiting for the reply to %s", exp_info[s->exp[s->head].kind].verb);
		what = buf;
	}
	fail(s, s->st == S_CONNECTING ? SMTP_FAIL_CONNECT : (s->st == S_TLS ? (s->p.level == TLS_LEVEL_MAY ? SMTP_FAIL_TLS_MAY : SMTP_FAIL_TLS) : SMTP_FAIL_LOST),
	     SMTP_TEMP, 451, "4.4.2", "timeout %s", what);
}

/* Deferred work: a transaction decided before it started (SIZE/8BITMIME/
 * SMTPUTF8), or freeing a session that finished QUIT. */
static void task_fn(struct loop_task *t)
{
	struct smtp_session *s = container_of(t, struct smtp_session, task);
	if (s->st == S_DEAD && (s->quitting || s->free_pending)) {
		loop_timer_stop(s->l, &s->timer);
		if (s->p.live && --*s->p.live == 0 && s->p.live_zero)
			s->p.live_zero(s->p.live_arg);
		if (s->m_opened)
			metrics_conn(s->p.metrics, METRICS_CONN_CLOSED);
		if (s->gone)
			s->gone(s->gone_arg, s->mx_host);
		explicit_bzero(s->auth_pass, strlen(s->auth_pass));
		free(s->strs);
		free(s->exp);
		free(s->ibuf);
		free(s);
		return;
	}
	if (s->txn != NULL && s->exp == NULL && s->st == S_READY) {
		s->txn = NULL;
		emit(s, SMTP_EV_TXN_DONE);
	}
}

struct smtp_session *smtp_session_new(struct loop *l, const struct smtp_params *p,
				      smtp_event_fn *cb, void *arg)
{
	struct smtp_session *s = xcalloc(1, sizeof(*s));
	s->l = l;
	s->p = *p;
	const char *src[4] = { p->mx_host, p->helo, p->auth_user ? p->auth_user : "",
			       p->auth_password ? p->auth_password : "" };
	size_t len[4], all = 0;
	for (int i = 0; i < 4; i++)
		all += (len[i] = strlen(src[i]) + 1);
	char *b = s->strs = xmalloc(all), **dst[4] = { &s->mx_host, &s->helo, &s->auth_user,
						       &s->auth_pass };
	for (int i = 0; i < 4; i++) {
		*dst[i] = memcpy(b, src[i], len[i]);
		b += len[i];
	}
	s->p.mx_host = s->mx_host;
	s->p.helo = s->helo;
	s->p.auth_user = NULL;
	s->p.auth_password = NULL;
	s->cb = cb;
	s->arg = arg;
	loop_timer_init(&s->timer, timer_fn);
	loop_task_init(&s->task, task_fn);
	loop_task_init(&s->hs_task, hs_task_fn);
	s->st = S_CONNECTING;
	s->born = loop_now(l);
	if (s->p.live)
		(*s->p.live)++;
	return s;
}

int smtp_session_start(struct smtp_session *s)
{
	s->conn = conn_new(s->l, &conn_cbs, s);
	int r = conn_connect(s->conn, (struct sockaddr *)&s->p.addr, s->p.addrlen);
	if (r < 0) {
		conn_close(s->conn);
		s->conn = NULL;
		return r;
	}
	enter(s, S_CONNECTING);
	s->m_opened = true;
	metrics_conn(s->p.metrics, METRICS_CONN_OPENED);
	return 0;
}

void smtp_session_quit(struct smtp_session *s)
{
	if (s == NULL)
		return;
	s->quitting = true;
	if (s->st == S_READY && s->conn != NULL && s->quit_acked) {
		/* the QUIT behind the last message is answered: just close */
		enter(s, S_DEAD);
		conn_close(s->conn);
		s->conn = NULL;
		loop_defer(s->l, &s->task);
		return;
	}
	if (s->st == S_READY && s->conn != NULL) {
		enter(s, S_QUIT);
		if (!s->quit_sent)
			cmd(s, "QUIT");
		return;
	}
	smtp_session_free(s);
}

void smtp_session_quit_notify(struct smtp_session *s, void (*gone)(void *arg, const char *mx_host),
			      void *arg)
{
	s->gone = gone;
	s->gone_arg = arg;
	smtp_session_quit(s);
}

void smtp_session_set_owner(struct smtp_session *s, smtp_event_fn *cb, void *arg)
{
	s->cb = cb;
	s->arg = arg;
}

const struct smtp_status *smtp_session_status(const struct smtp_session *s)
{
	return &s->status;
}

unsigned smtp_session_txns(const struct smtp_session *s)
{
	return s->ntxn;
}

uint64_t smtp_session_born(const struct smtp_session *s)
{
	return s->born;
}

void smtp_session_free(struct smtp_session *s)
{
	if (s == NULL)
		return;
	s->free_pending = true;
	s->dead = true;
	conn_close(s->conn);
	s->conn = NULL;
	if (s->st == S_TLS)
		hs_gate_leave(s);
	s->st = S_DEAD;
	loop_timer_stop(s->l, &s->timer);
	loop_defer(s->l, &s->task);
}
