/* smtp_int.h: private to the smtp module (sender/smtp.c, sender/smtp_txn.c).
 * Never include it from outside the module (STYLE §2); the public contract is
 * sender/smtp.h. It holds the session struct, the state and expectation
 * tables, the small helpers both files run on the per-message path (static
 * inline: deadline, state entry, owner callback) and the functions one file
 * calls in the other:
 *   smtp.c      the session's life: connect, greeting, EHLO/HELO, STARTTLS
 *               and the handshake gate, AUTH, QUIT, deadlines, framing
 *               replies (c_read), failing the session;
 *   smtp_txn.c  the transaction: the expectation list, pipelined MAIL/RCPT/
 *               DATA/BDAT, body streaming and dot-stuffing, "Replies in
 *               step", per-recipient results. */
#ifndef SENDER_SMTP_INT_H
#define SENDER_SMTP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "sender/log.h"
#include "sender/loop.h"
#include "sender/smtp.h"
#include "sender/smtp_reply.h"

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

struct smtp_state_info {
	const char *name;
	const char *action;
	size_t timeout; /* offset in struct smtp_timeouts */
};
extern const struct smtp_state_info smtp_states[]; /* by enum state; smtp.c */

/* A transaction's expected replies, in order: MAIL, one per RCPT, DATA and the
 * end of data (DOT), or BDAT; then RSET, or QUIT when nothing follows on the
 * session. That last command is the check that the replies were in step: see
 * "Replies in step" below. */
enum exp_kind { E_RSET, E_MAIL, E_RCPT, E_DATA, E_DOT, E_BDAT, E_QUIT };
struct smtp_exp_info {
	const char *verb;
	size_t timeout;
};
extern const struct smtp_exp_info smtp_exp_info[]; /* by enum exp_kind; smtp_txn.c */

struct expect {
	enum exp_kind kind;
	int rcpt;
};

struct smtp_session {
	struct loop *l;
	struct smtp_params p;
	/* copies, in one allocation (strs); auth_pass is wiped before free */
	char *strs, *mx_host, *helo, *auth_user, *auth_pass, *slot;
	void (*gone)(void *, const char *); /* smtp_session_quit_notify */
	void *gone_arg;
	struct smtp_session *all_next, **all_pprev; /* smtp_params.all */
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

/* ---- smtp.c ---- */

/* Leave the handshake gate (S_TLS left): the next waiting session may start. */
void smtp_hs_gate_leave(struct smtp_session *s);
/* The session cannot go on: stop I/O and tell the owner once (SMTP_EV_FAIL,
 * from inside this call; nobody when the owner already quit). */
void smtp_sess_fail(struct smtp_session *s, enum smtp_fail why, enum smtp_class cls, int code,
		    const char *esc, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Write one command line (CRLF added); logged at trace. */
void smtp_cmd(struct smtp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- smtp_txn.c ---- */

/* Fill r; multi-line reply text becomes one line. */
void smtp_set_result(struct smtp_result *r, enum smtp_class cls, int code, const char *esc,
		     const char *text, bool final);
/* A reply in S_TXN or S_DOT: what it means for the command it answers. */
void smtp_txn_reply(struct smtp_session *s, const struct smtp_reply *r);
/* The replies went out of step ("Replies in step"): nothing stands; fails s. */
void smtp_out_of_step(struct smtp_session *s, const char *what, int code, const char *text);
/* Stream the body while output drains (conn on_drain). */
void smtp_body_pump(struct smtp_session *s);

/* ---- on every state change and reply: inline in both files ---- */

static inline uint32_t timeout_of(const struct smtp_session *s, size_t off)
{
	return *(const uint32_t *)(const void *)((const char *)s->p.to + off);
}

static inline void arm(struct smtp_session *s, size_t off)
{
	loop_timer_arm(s->l, &s->timer, timeout_of(s, off));
}

static inline void enter(struct smtp_session *s, enum state st)
{
	if (s->st == S_TLS && st != S_TLS)
		smtp_hs_gate_leave(s);
	if (s->st != st)
		log_trace("smtp %016llx: %s -> %s", (unsigned long long)s->p.id, smtp_states[s->st].name,
			  smtp_states[st].name);
	s->st = st;
	if (st == S_READY || st == S_DEAD)
		loop_timer_stop(s->l, &s->timer);
	else
		arm(s, smtp_states[st].timeout);
}

static inline void emit(struct smtp_session *s, enum smtp_event ev)
{
	s->in_cb = true;
	s->cb(s->arg, s, ev, &s->status);
	s->in_cb = false;
}

#endif
