/* smtp.c: the SMTP client session state machine: the session's life
 * (connect, greeting, EHLO/HELO, STARTTLS and the handshake gate, AUTH, QUIT,
 * deadlines, framing). The transaction (pipelined MAIL/RCPT/DATA/BDAT, the
 * body, "Replies in step", per-recipient results) is smtp_txn.c; the two
 * share smtp_int.h.
 *
 * Three jobs, kept apart (OpenSMTPD mta_session): c_read() frames bytes into
 * replies (smtp_reply_parse enforces the line and reply limits), on_reply()
 * decides what a reply means for the command it answers, and enter() runs a
 * state's entry action and arms its deadline (RFC 5321 4.5.3.2 timeouts from
 * the config, indexed by state in a table).
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
#include "sender/smtp_int.h"
#include "sender/smtp_reply.h"
#include "sender/util.h"

#define IBUF_CAP (SMTP_REPLY_MAX + SMTP_LINE_MAX)

const struct smtp_state_info smtp_states[] = {
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

void smtp_hs_gate_leave(struct smtp_session *s)
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

const char *smtp_session_state(const struct smtp_session *s)
{
	return smtp_states[s->st].name;
}

/* The session cannot go on: stop I/O and tell the owner once. */
void smtp_sess_fail(struct smtp_session *s, enum smtp_fail why, enum smtp_class cls, int code,
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
		 smtp_states[s->st].name, code, esc, log_q(qtext, sizeof(qtext), text));
	s->dead = true;
	enter(s, S_DEAD);
	conn_close(s->conn);
	s->conn = NULL;
	s->status.fail = why;
	smtp_set_result(&s->status.why, cls, code, esc, text, false);
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

void smtp_cmd(struct smtp_session *s, const char *fmt, ...)
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
		smtp_sess_fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.0",
			       "AUTH configured but no TLS with %s: credentials are never sent in plaintext",
			       s->mx_host);
		return;
	}
	if (!s->p.auth_insecure && (s->p.level != TLS_LEVEL_VERIFY || !s->status.verdict.verified)) {
		smtp_sess_fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.0",
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
		smtp_cmd(s, "AUTH LOGIN");
	} else {
		smtp_sess_fail(s, SMTP_FAIL_GREETING, SMTP_TEMP, 451, "4.7.0",
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
		smtp_cmd(s, "STARTTLS");
		return;
	}
	if (!tls_on && lvl >= TLS_LEVEL_ENCRYPT) {
		s->status.no_starttls = true;
		smtp_sess_fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.5",
			       "STARTTLS not offered by %s (tls=%s required)", s->mx_host,
			       tls_level_name(lvl));
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
	const struct tls_dane *dn = s->p.dane;
	/* DANE: resumption only within the same TLSA context (its tag) */
	snprintf(key, sizeof(key), "%s:%d:%s:%s%s%s", s->mx_host, port, dn ? dn->base : s->mx_host,
		 dn ? dn->tag : verify ? "verify" : "none", s->p.source ? ":" : "",
		 s->p.source ? s->p.source->name : ""); /* sessions per egress source */
	struct tls *t = dn ? tls_new_dane(s->p.tc, dn, key)
			   : tls_new(s->p.tc, s->mx_host, s->mx_host, verify, key);
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
		smtp_sess_fail(s, s->st <= S_AUTH_PASS ? SMTP_FAIL_GREETING : SMTP_FAIL_LOST, SMTP_TEMP,
			       421, r->esc[0] ? r->esc : "4.0.0", "%s", r->text);
		return;
	}
	int cls = smtp_classify(r->code);
	switch (s->st) {
	case S_BANNER:
		if (r->code != 220) {
			/* A 5xx greeting is a refusal by this host; the owner moves on
			 * (like Postfix smtp_skip_5xx_greeting). */
			smtp_cmd(s, "QUIT");
			smtp_sess_fail(s, SMTP_FAIL_GREETING, cls == SMTP_PERM ? SMTP_PERM : SMTP_TEMP, r->code,
				       r->esc[0] ? r->esc : (cls == SMTP_PERM ? "5.0.0" : "4.0.0"), "greeting: %s",
				       r->text);
			return;
		}
		enter(s, S_EHLO);
		smtp_cmd(s, "EHLO %s", s->helo);
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
			smtp_cmd(s, "HELO %s", s->helo);
			return;
		}
		smtp_sess_fail(s, SMTP_FAIL_GREETING, cls == SMTP_PERM ? SMTP_PERM : SMTP_TEMP, r->code,
			       r->esc[0] ? r->esc : "4.0.0", "EHLO refused: %s", r->text);
		return;
	case S_HELO:
		if (cls != SMTP_OK) {
			smtp_sess_fail(s, SMTP_FAIL_GREETING, cls == SMTP_PERM ? SMTP_PERM : SMTP_TEMP, r->code,
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
			smtp_sess_fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.5", "STARTTLS refused: %d %s",
				       r->code, r->text);
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
		smtp_sess_fail(s, SMTP_FAIL_GREETING, SMTP_TEMP, 451, "4.7.8", "AUTH refused: %d %s",
			       r->code, r->text);
		return;
	case S_TXN:
		smtp_txn_reply(s, r);
		return;
	case S_DOT:
		smtp_txn_reply(s, r);
		return;
	case S_QUIT:
		enter(s, S_DEAD);
		conn_close(s->conn);
		s->conn = NULL;
		loop_defer(s->l, &s->task);
		return;
	default:
		smtp_sess_fail(s, SMTP_FAIL_LOST, SMTP_TEMP, 451, "4.5.0",
			       "unexpected reply %d in state %s", r->code, smtp_states[s->st].name);
		return;
	}
}

/* ---- conn callbacks ---- */

static void c_connect(void *arg, int err)
{
	struct smtp_session *s = arg;
	if (err < 0) {
		smtp_sess_fail(s, SMTP_FAIL_CONNECT, SMTP_TEMP, 451, "4.4.1", "connect to %s failed: %s",
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
				smtp_sess_fail(s, SMTP_FAIL_LOST, SMTP_TEMP, 451, "4.5.0", "protocol error %s: %s",
					       smtp_states[s->st].action, err ? err : "malformed reply");
				return;
			}
			off += used;
			if (s->st == S_BODY) { /* DATA's 354 came; the end of data is not sent */
				smtp_out_of_step(s, "a reply while the body is sent", r.code, r.text);
				return;
			}
			if (s->st == S_READY || s->st == S_CONNECTING) {
				/* idle (in the pool): nothing was asked; the connection
				 * is closed, never reused */
				smtp_sess_fail(s, SMTP_FAIL_LOST, SMTP_TEMP, r.code == 421 ? 421 : 451, "4.5.0",
					       "unexpected reply in state %s: %d %s", smtp_states[s->st].name,
					       r.code, r.text);
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
		/* a chain that checked out proves nothing until the handshake ends
		 * (the server has not shown it holds the key): results say no */
		s->status.verdict.verified = false;
		const char *why = tls_error(t);
		if (s->p.dane && tls_failed_verify(t)) {
			smtp_sess_fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.5",
				       "DANE: no TLSA record matches the certificate chain of %s (%s)",
				       s->mx_host, why);
			return;
		}
		if (s->p.level == TLS_LEVEL_MAY)
			smtp_sess_fail(s, SMTP_FAIL_TLS_MAY, SMTP_TEMP, 451, "4.7.5", "%s", why);
		else
			smtp_sess_fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.5", "%s", why);
		return;
	}
	s->status.tls = true;
	/* Rule min_tls = 1.3: a TLS 1.2 session does not count as the TLS
	 * required. Under `may` it is kept (better than the plaintext fallback). */
	if (s->p.min_tls >= 13 && s->p.level >= TLS_LEVEL_ENCRYPT &&
	    strcmp(s->status.verdict.version, "TLSv1.3") != 0) {
		smtp_sess_fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.5",
			       "%s negotiated, min_tls 1.3 required", s->status.verdict.version);
		return;
	}
	if (s->p.dane && tls_dane_usable(conn_tls(s->conn)) == 0) {
		/* RFC 7672 3.1.3: no record OpenSSL could use: TLS, unauthenticated */
	} else if (s->p.level == TLS_LEVEL_VERIFY && !s->status.verdict.verified) {
		smtp_sess_fail(s, SMTP_FAIL_TLS, SMTP_TEMP, 451, "4.7.5", "%s: %s",
			       s->p.dane ? "DANE: no TLSA record matches the certificate chain"
					 : "certificate verify failed",
			       s->status.verdict.verify_text);
		return;
	}
	log_debug("evt=tls id=%016llx peer=%s[%s] version=%s cipher=%s verified=%s resumed=%s%s%s",
		  (unsigned long long)s->p.id, s->mx_host, conn_peer(s->conn), s->status.verdict.version,
		  s->status.verdict.cipher, s->status.verdict.verified ? "yes" : "no",
		  s->status.verdict.resumed ? "yes" : "no", s->p.dane ? " dane=" : "",
		  s->p.dane ? (s->status.verdict.dane_match[0] ? s->status.verdict.dane_match : "none") : "");
	memset(&s->ehlo, 0, sizeof(s->ehlo));
	if (s->p.implicit_tls) {
		enter(s, S_BANNER); /* the greeting comes over TLS */
		return;
	}
	enter(s, S_EHLO_TLS);
	smtp_cmd(s, "EHLO %s", s->helo);
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
		smtp_sess_fail(s, s->p.level == TLS_LEVEL_MAY ? SMTP_FAIL_TLS_MAY : SMTP_FAIL_TLS,
			       SMTP_TEMP, 451, "4.7.5", "connection lost in the TLS handshake: %s",
			       err == 0 ? "closed by peer" : strerror(-err));
		return;
	}
	smtp_sess_fail(s, SMTP_FAIL_LOST, SMTP_TEMP, 451, "4.4.2", "connection lost %s: %s",
		       smtp_states[s->st].action, err == 0 ? "closed by peer" : strerror(-err));
}

static void c_drain(void *arg)
{
	struct smtp_session *s = arg;
	if (s->st == S_BODY || (s->st == S_TXN && s->body_on))
		smtp_body_pump(s);
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
	const char *what = smtp_states[s->st].action;
	char buf[64];
	if (s->st == S_TXN && s->head < s->nexp) {
		snprintf(buf, sizeof(buf), "waiting for the reply to %s",
			 smtp_exp_info[s->exp[s->head].kind].verb);
		what = buf;
	}
	smtp_sess_fail(s, s->st == S_CONNECTING ? SMTP_FAIL_CONNECT : (s->st == S_TLS ? (s->p.level == TLS_LEVEL_MAY ? SMTP_FAIL_TLS_MAY : SMTP_FAIL_TLS) : SMTP_FAIL_LOST),
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
			s->gone(s->gone_arg, s->slot);
		if (s->all_pprev) {
			*s->all_pprev = s->all_next;
			if (s->all_next)
				s->all_next->all_pprev = s->all_pprev;
		}
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
	const char *src[5] = { p->mx_host, p->helo, p->auth_user ? p->auth_user : "",
			       p->auth_password ? p->auth_password : "",
			       p->slot ? p->slot : p->mx_host };
	size_t len[5], all = 0;
	for (int i = 0; i < 5; i++)
		all += (len[i] = strlen(src[i]) + 1);
	char *b = s->strs = xmalloc(all), **dst[5] = { &s->mx_host, &s->helo, &s->auth_user,
						       &s->auth_pass, &s->slot };
	for (int i = 0; i < 5; i++) {
		*dst[i] = memcpy(b, src[i], len[i]);
		b += len[i];
	}
	s->p.mx_host = s->mx_host;
	s->p.helo = s->helo;
	s->p.slot = s->slot;
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
	if (p->all) {
		s->all_next = *p->all;
		if (s->all_next)
			s->all_next->all_pprev = &s->all_next;
		s->all_pprev = p->all;
		*p->all = s;
	}
	return s;
}

int smtp_session_start(struct smtp_session *s)
{
	s->conn = conn_new(s->l, &conn_cbs, s);
	const struct source *src = s->p.source;
	int r = conn_connect_from(s->conn, (struct sockaddr *)&s->p.addr, s->p.addrlen,
				  src ? (const struct sockaddr *)&src->sa : NULL, src ? src->salen : 0);
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
			smtp_cmd(s, "QUIT");
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

static void quiet_cb(void *arg, struct smtp_session *s, enum smtp_event ev,
		     const struct smtp_status *st)
{
	(void)arg;
	(void)s;
	(void)ev;
	(void)st;
}

/* (smtp.h) Unlinking waits for each one's task_fn, so the walk is safe. */
void smtp_sessions_close(struct smtp_session *all)
{
	for (struct smtp_session *s = all; s != NULL; s = s->all_next)
		if (s->quitting && !s->free_pending && s->st != S_DEAD) {
			s->cb = quiet_cb;
			smtp_session_free(s);
		}
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
		smtp_hs_gate_leave(s);
	s->st = S_DEAD;
	loop_timer_stop(s->l, &s->timer);
	loop_defer(s->l, &s->task);
}
