/* smtp.h: one SMTP client session (RFC 5321) over a conn, with STARTTLS (RFC
 * 3207), PIPELINING (RFC 2920), SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES.
 *
 * Life of a session: smtp_session_new + smtp_session_start connects; the owner
 * hears SMTP_EV_READY once the greeting, EHLO and (per the TLS level) STARTTLS
 * are done, then hands it one transaction at a time with smtp_session_send
 * (each ends with RSET, or QUIT when it is the last, pipelined behind the
 * message: its 2xx shows the replies were in step; see smtp_txn.c). SMTP_EV_TXN_DONE: the transaction's
 * per-recipient results are filled and the session is READY again.
 * SMTP_EV_FAIL: the session is unusable; results of the current transaction
 * that are not marked final must be tried elsewhere. After EV_FAIL the owner
 * calls smtp_session_free. smtp_session_quit sends QUIT and frees the session
 * itself when done; no callback follows either call. Callbacks run only from
 * loop completions, never inside smtp_* calls. */
#ifndef SENDER_SMTP_H
#define SENDER_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sender/config.h"
#include "sender/tls.h"

struct loop;
struct tlscache;
struct msg_wire;
struct smtp_session;

enum smtp_class { SMTP_OK, SMTP_TEMP, SMTP_PERM };

struct smtp_result {
	enum smtp_class cls;
	int code;
	char esc[16];
	char text[400];
	bool final; /* decided for this attempt; do not retry on another MX */
};

struct smtp_txn {
	const char *from;           /* "" for <> */
	const char *const *rcpts;
	int nrcpt;
	const struct msg_wire *wire; /* CRLF body, NOT dot-stuffed (borrowed); the
	                             * session stuffs for DATA, sends as is for BDAT */
	bool smtputf8_needed;       /* envelope has non-ASCII: SMTPUTF8 required */
	struct smtp_result *res;    /* nrcpt entries, filled by the session */
	bool last;                  /* nothing follows on this session: QUIT ends
	                             * the transaction (pipelined behind the message
	                             * where the server offers PIPELINING, RFC 2920)
	                             * and its 221 is awaited before TXN_DONE; the
	                             * owner must then end the session with
	                             * smtp_session_quit */
	bool no_bdat;               /* send with DATA even where CHUNKING is offered
	                             * (the server refused BDAT before) */
};

struct metrics_shard;

struct smtp_params {
	const char *helo;
	const char *mx_host;        /* for SNI, verification and logs */
	struct sockaddr_storage addr; /* with port */
	socklen_t addrlen;
	enum tls_level level;       /* none, may, encrypt, verify */
	struct tlscache *tc;
	const struct smtp_timeouts *to;
	uint64_t id;                /* for logs */
	unsigned *live;             /* optional: incremented while the session exists */
	void (*live_zero)(void *);  /* optional: called when a session's end brings *live to 0 */
	void *live_arg;
	struct smtp_session **all;  /* optional: list of the sessions alive (smtp_sessions_close) */
	bool implicit_tls;          /* TLS from the first byte (port 465, RFC 8314) */
	int min_tls;                /* 12 or 13: enforced at encrypt/verify (below: reported) */
	const char *auth_user;      /* AUTH PLAIN/LOGIN after TLS when set (RFC 4954);
	                             * never over plaintext, never logged */
	const char *auth_password;
	bool auth_insecure;         /* AUTH also when the certificate did not verify
	                            * (still never without TLS); else only at
	                            * level verify with a verified certificate */
	unsigned max_handshakes;    /* TLS handshakes at once in this thread; 0: no cap */
	struct metrics_shard *metrics; /* optional: connections opened/open, TLS sessions */
	const struct source *source; /* egress source (config.h): bind to its address,
	                             * EHLO is the caller's helo; NULL: the kernel's choice */
	const struct tls_dane *dane; /* DANE (RFC 7672): TLS authenticated by these TLSA
	                            * records, SNI their base domain (level verify; NULL:
	                            * none); borrowed for the session's life */
	const char *slot;           /* the connection slot key given to quit_notify's
	                             * gone (NULL: mx_host) */
};

enum smtp_event { SMTP_EV_READY, SMTP_EV_TXN_DONE, SMTP_EV_FAIL };

/* Why a session failed (SMTP_EV_FAIL). */
enum smtp_fail {
	SMTP_FAIL_CONNECT,   /* could not connect */
	SMTP_FAIL_GREETING,  /* 4xx/5xx greeting or EHLO/HELO refused */
	SMTP_FAIL_TLS,       /* the TLS the level requires could not be had */
	SMTP_FAIL_TLS_MAY,   /* opportunistic TLS handshake failed: retry in plaintext */
	SMTP_FAIL_LOST,      /* timeout, disconnect, 421, protocol error mid-session */
};

struct smtp_status {
	enum smtp_fail fail;        /* for SMTP_EV_FAIL */
	struct smtp_result why;     /* for SMTP_EV_FAIL */
	bool tls;                   /* TLS active */
	bool no_starttls;           /* SMTP_FAIL_TLS because STARTTLS was not offered/refused */
	bool tls_tried;             /* a handshake was attempted (verdict valid even on failure) */
	bool bdat_refused;          /* SMTP_FAIL_LOST: BDAT answered 500/502/504 although
	                             * CHUNKING was offered; resend with DATA (no_bdat) */
	struct tls_verdict verdict; /* valid when tls */
	unsigned ext;               /* SMTP_EXT_* from the last EHLO */
};

typedef void smtp_event_fn(void *arg, struct smtp_session *s, enum smtp_event ev,
			   const struct smtp_status *st);

struct smtp_session *smtp_session_new(struct loop *l, const struct smtp_params *p,
				      smtp_event_fn *cb, void *arg);
/* Connect. Returns 0, or -errno (no callback follows then). */
int smtp_session_start(struct smtp_session *s);
/* Start a transaction (session must be READY). txn is borrowed until TXN_DONE/FAIL. */
void smtp_session_send(struct smtp_session *s, struct smtp_txn *txn);
void smtp_session_quit(struct smtp_session *s);
/* smtp_session_quit, then gone(arg, slot) (smtp_params.slot, else mx_host) once the connection is closed
 * and the session freed: a connection slot held for it is free only then
 * (the server counts the connection until it closes). From a deferred task,
 * never inside this call. */
void smtp_session_quit_notify(struct smtp_session *s, void (*gone)(void *arg, const char *mx_host),
			      void *arg);
/* Hand a READY session to a new owner (connection reuse): later events go to
 * cb(arg). */
void smtp_session_set_owner(struct smtp_session *s, smtp_event_fn *cb, void *arg);
/* What the session knows now (TLS verdict, extensions). Borrowed. */
const struct smtp_status *smtp_session_status(const struct smtp_session *s);
/* Transactions completed on this session. */
unsigned smtp_session_txns(const struct smtp_session *s);
/* loop_now() when the session was created. */
uint64_t smtp_session_born(const struct smtp_session *s);
void smtp_session_free(struct smtp_session *s);
/* At exit: close at once every session of the list (smtp_params.all) still
 * waiting for the reply to its QUIT (no owner can reach those; without this
 * a server that never answers QUIT kept them past the engine's end). */
void smtp_sessions_close(struct smtp_session *all);
/* State name for logs. */
const char *smtp_session_state(const struct smtp_session *s);

/* Pure helper (unit-tested): classify a reply code into SMTP_OK/TEMP/PERM. */
enum smtp_class smtp_classify(int code);

#endif
