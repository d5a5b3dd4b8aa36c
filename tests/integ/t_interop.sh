#!/usr/bin/env bash
# tests/integ/t_interop.sh: mxsend against two more real receiving MTAs, Exim 4.96 (its TLS is
# GnuTLS 3.7) and OpenSMTPD 6.8.0p2, both Debian 12's builds. They cannot be installed beside
# postfix (all three provide mail-transport-agent), so `make deps` unpacks their packages into
# $INTEROP_ROOT (dpkg -x) and each runs here as a private instance from a generated config:
#   Exim       exim4 -C exim.conf -bdf, spool and logs in the work directory, queue_only (nothing
#              is delivered or sent on; the stored copy is read back with exim -Mvc). One daemon,
#              three addresses: 127.0.9.221 mx.exim.test (CHUNKING: mxsend sends BDAT),
#              127.0.9.222 mxd.exim.test (CHUNKING withheld: DATA), 127.0.9.223 mx12.exim.test
#              (GnuTLS limited to TLS 1.2). RCPT nobody@ gets 550 5.1.1, later@ 451 4.2.0.
#   OpenSMTPD  smtpd -d in a private mount namespace (unshare -m): its compiled-in paths
#              (/var/spool/smtpd, /var/lib/opensmtpd/empty, /var/run, /usr/libexec/opensmtpd)
#              and its two users (opensmtpd, opensmtpq: /etc/passwd and /etc/group copies) are
#              bind mounts of work-directory files, so nothing outside the work directory
#              changes. An mda action writes each recipient's copy to mail/LOCAL. 127.0.9.231
#              mx.smtpd.test offers no STARTTLS; 127.0.9.232 mxt.smtpd.test offers it, and its
#              handshake fails for every client: Debian 12's OpenSMTPD 6.8 cannot sign with its
#              privilege-separated key under OpenSSL 3 (OpenSMTPD issues #1171, #1239; the
#              control case shows openssl s_client failing the same way).
# Cases: TLS 1.3 verified delivery to Exim; byte-exact copies (dot lines, bare LF, mixed line
# ends, no final newline, 998-octet lines, 8-bit, 1 MB) over BDAT and DATA to Exim and in
# plaintext to OpenSMTPD; SMTPUTF8 (Exim has it, OpenSMTPD has not: a clear 553 5.6.7); TLS 1.2;
# 250/550/451 in one transaction; `mxsend run` to Exim with connection reuse and with TLS session
# resumption (GnuTLS tickets); OpenSMTPD's broken STARTTLS: plaintext retry under may, deferred
# under verify and under encrypt. DNS: unbound on 127.0.9.254. About 10 s.
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integ/interop.sh
. "$INTEG_LIB_DIR/interop.sh"

integ_setup mx.exim.test mxd.exim.test mx12.exim.test mx.smtpd.test mxt.smtpd.test
integ_require mxsend unbound unbound-checkconf perl python3 ss timeout openssl redis-server redis-cli
interop_require

P=$SINK_PORT        # every MTA's port (mxsend: --port / [domain *] port)
A_EX=127.0.9.221    # mx.exim.test: CHUNKING
A_EXD=127.0.9.222   # mxd.exim.test: no CHUNKING
A_EX12=127.0.9.223  # mx12.exim.test: TLS 1.2 only
A_SM=127.0.9.231    # mx.smtpd.test: OpenSMTPD without STARTTLS
A_SMT=127.0.9.232   # mxt.smtpd.test: OpenSMTPD with a STARTTLS that always fails
FROM=sender@client.test

# result-line pieces (mxsend send's stdout)
TLS13Y='tls=TLSv1\.3 cipher=[A-Za-z0-9_-]+ verified=yes'
PLAIN='tls=none cipher=- verified=no'
D250='delivered 250 2\.0\.0'
EXOK='reply="([0-9]+ byte chunk, total [0-9]+ )?OK id=[-0-9A-Za-z]+"' # Exim's 250 to BDAT LAST / DATA
SMOK='reply="[0-9a-f]+ Message accepted for delivery"'       # OpenSMTPD's

if [ -z "$INTEG_MISSING" ]; then
	start_unbound -a 127.0.9.254 -n interop "
exim.test. MX 10 mx.exim.test.
data.exim.test. MX 10 mxd.exim.test.
tls12.exim.test. MX 10 mx12.exim.test.
smtpd.test. MX 10 mx.smtpd.test.
tls.smtpd.test. MX 10 mxt.smtpd.test.
mx.exim.test. A $A_EX
mxd.exim.test. A $A_EXD
mx12.exim.test. A $A_EX12
mx.smtpd.test. A $A_SM
mxt.smtpd.test. A $A_SMT
" || integ_missing "unbound did not start"
fi

# ---------------------------------------------------------------------------
# the MTAs (tests/integ/interop.sh): Exim on three addresses, CHUNKING withheld on
# mxd, GnuTLS limited to TLS 1.2 on mx12; OpenSMTPD without STARTTLS on mx.smtpd.test,
# with it (always failing) on mxt.smtpd.test

if [ -z "$INTEG_MISSING" ]; then
	ex_start "$A_EX $A_EXD $A_EX12" "exim.test data.exim.test tls12.exim.test" \
		"chunking_advertise_hosts = \${if eq{\$received_ip_address}{$A_EXD}{}{*}}
tls_require_ciphers = \${if eq{\$received_ip_address}{$A_EX12}{NORMAL:-VERS-TLS1.3}{NORMAL}}" ||
		integ_missing "the Exim instance did not start (see above)"
	sm_start "$A_SM $A_SMT" "smtpd.test tls.smtpd.test" \
		"listen on $A_SM port $P hostname mx.smtpd.test" \
		"listen on $A_SMT port $P tls pki server hostname mxt.smtpd.test" ||
		integ_missing "the OpenSMTPD instance did not start (see above)"
fi

# ---------------------------------------------------------------------------
# helpers

# send (lib.sh): `mxsend send` with the run's DNS, CA and port (20 s bound).
SEND_LIMIT=20
SEND_ARGS=(--dns "$DNS" --ca "$CA" --port "$P" --helo client.test)

# mx_re HOST: the ERE for "mx=HOST[ADDR]:PORT" of MX host HOST.
mx_re() {
	local a
	case $1 in
	mx.exim.test) a=$A_EX ;;
	mxd.exim.test) a=$A_EXD ;;
	mx12.exim.test) a=$A_EX12 ;;
	mx.smtpd.test) a=$A_SM ;;
	mxt.smtpd.test) a=$A_SMT ;;
	esac
	printf 'mx=%s\\[%s\\]:%s' "$(re_escape "$1")" "$(re_escape "$a")" "$P"
}

# trace fields the MTAs put before the message
EX_TRACE='Received'
SM_TRACE='Return-Path|Delivered-To|Received'

# ---------------------------------------------------------------------------
# Exim

t_ex_tls() {
	local m=$CASE_DIR/m.eml
	printf 'From: %s\nTo: tls@exim.test\nSubject: TLS 1.3 verified\n\nhello\n' "$FROM" >"$m"
	log_mark "$EXLOG"
	send --tls verify --from "$FROM" --to tls@exim.test "$m"
	expect_rc 0 || return 1
	expect_line tls@exim.test "$D250 $(mx_re mx.exim.test) $TLS13Y policy=verify reply=\"[0-9]+ byte chunk, total [0-9]+ OK id=[-0-9A-Za-z]+\""
	ex_copy tls@exim.test || return 1
	assert_copy "$m" "$CASE_DIR/copy" "$EX_TRACE"
	assert_match "Exim's Received: field says esmtps over TLS 1.3" 'with esmtps +\(TLS1\.3\)' "$(cat "$CASE_DIR/trace")"
	assert_match "Exim logged the message over TLS 1.3 (GnuTLS names)" \
		'<= sender@client\.test H=\(client\.test\) \[127\.0\.0\.1\] I=\[127\.0\.9\.221\]:[0-9]+ P=esmtps X=TLS1\.3:[A-Z0-9_]+:256 CV=no .* for tls@exim\.test' \
		"$(case_log "$EXLOG")"
}

run_case "STARTTLS to Exim (GnuTLS): tls=TLSv1.3 verified=yes, stored copy exact" t_ex_tls

t_ex_body() { # DOMAIN KIND [MB]
	local dom=$1 kind=$2 m=$CASE_DIR/in.eml rcpt n
	rcpt=b-$kind@$dom
	body_gen "$kind" "$m" "${3:-}"
	log_mark "$EXLOG"
	send --tls verify --from "$FROM" --to "$rcpt" "$m"
	expect_rc 0 || return 1
	if [ "$dom" = exim.test ]; then # BDAT: Exim counts the octets of the chunk, the wire form
		wire_expect "$m" "$CASE_DIR/wire"
		n=$(stat -c %s "$CASE_DIR/wire")
		expect_line "$rcpt" "$D250 $(mx_re mx.exim.test) $TLS13Y policy=verify reply=\"$n byte chunk, total $n OK id=[-0-9A-Za-z]+\""
	else
		expect_line "$rcpt" "$D250 $(mx_re mxd.exim.test) $TLS13Y policy=verify reply=\"OK id=[-0-9A-Za-z]+\""
	fi
	ex_copy "$rcpt" || return 1
	assert_copy "$m" "$CASE_DIR/copy" "$EX_TRACE"
}
run_body_both Exim "stored copy exact" t_ex_body exim.test

t_ex_utf8() {
	local m=$CASE_DIR/m.eml rcpt='jöran@exim.test'
	body_gen utf8 "$m"
	log_mark "$EXLOG"
	send --tls verify --from 'jösé@client.test' --to "$rcpt" "$m"
	expect_rc 0 || return 1
	expect_line "$rcpt" "$D250 $(mx_re mx.exim.test) $TLS13Y policy=verify $EXOK"
	ex_copy "$rcpt" || return 1
	assert_copy "$m" "$CASE_DIR/copy" "$EX_TRACE"
	assert_match "Exim took the message as SMTPUTF8 (P=utf8esmtps)" '<= jösé@client\.test .* P=utf8esmtps .* for jöran@exim\.test' \
		"$(case_log "$EXLOG")"
}
run_case "UTF-8 envelope to Exim: SMTPUTF8, delivered, stored copy exact" t_ex_utf8

t_ex_tls12() {
	local m=$CASE_DIR/m.eml
	printf 'From: %s\nSubject: TLS 1.2\n\nhello\n' "$FROM" >"$m"
	log_mark "$EXLOG"
	send --tls verify --from "$FROM" --to t12@tls12.exim.test "$m"
	expect_rc 0 || return 1
	expect_line t12@tls12.exim.test "$D250 $(mx_re mx12.exim.test) tls=TLSv1\.2 cipher=ECDHE-ECDSA-[A-Z0-9-]+ verified=yes policy=verify $EXOK"
	ex_copy t12@tls12.exim.test || return 1
	assert_copy "$m" "$CASE_DIR/copy" "$EX_TRACE"
	assert_match "Exim logged TLS 1.2" ' P=esmtps X=TLS1\.2:ECDHE_[A-Z0-9]+__ECDSA_[A-Z0-9_]+:256 CV=no .* for t12@tls12\.exim\.test' \
		"$(case_log "$EXLOG")"
}
run_case "Exim limited to TLS 1.2: tls=TLSv1.2 ECDHE-ECDSA verified=yes" t_ex_tls12

t_ex_mixed() {
	local m=$CASE_DIR/m.eml
	printf 'From: %s\nSubject: four recipients\n\nhello\n' "$FROM" >"$m"
	log_mark "$EXLOG"
	send --tls verify --from "$FROM" --to mixed1@exim.test --to nobody@exim.test --to later@exim.test \
		--to mixed2@exim.test "$m"
	expect_rc 69
	expect_line mixed1@exim.test "$D250 $(mx_re mx.exim.test) $TLS13Y policy=verify $EXOK"
	expect_line nobody@exim.test "bounced 550 5\.1\.1 $(mx_re mx.exim.test) $TLS13Y policy=verify reply=\"no such user here\""
	expect_line later@exim.test "deferred 451 4\.2\.0 $(mx_re mx.exim.test) $TLS13Y policy=verify reply=\"mailbox busy, try later\""
	expect_line mixed2@exim.test "$D250 $(mx_re mx.exim.test) $TLS13Y policy=verify $EXOK"
	assert_eq "result lines" 4 "$(grep -c . "$CASE_DIR/out")"
	ex_copy mixed2@exim.test || return 1
	assert_copy "$m" "$CASE_DIR/copy" "$EX_TRACE"
	assert_match "one message for the two accepted recipients" '<= sender@client\.test .* for mixed1@exim\.test mixed2@exim\.test$' \
		"$(case_log "$EXLOG")"
}
run_case "250/550/451/250 recipients in one transaction to Exim: exit 69, one line each" t_ex_mixed

# t_ex_run REUSE_MAX MAX_CONN: `mxsend run` of 6 jobs to exim.test with [pool] reuse_max =
# REUSE_MAX and [domain exim.test] max_connections = MAX_CONN.
t_ex_run() {
	local n=6 conf=$CASE_DIR/run.ini i m res
	start_redis -n "ex$1" || return 1
	integ_config "$conf" "$(printf '[redis]\nurl = %s\n\n[pool]\nreuse_max = %s\n\n[domain exim.test]\nmax_connections = %s\n' \
		"$REDIS_URL" "$1" "$2")"
	for ((i = 1; i <= n; i++)); do
		m=$CASE_DIR/q$i.eml
		printf 'From: %s\nSubject: run %d\n\nmessage %d of %d\n' "$FROM" "$i" "$i" "$n" >"$m"
		timeout 10 "$MXSEND" enqueue -c "$conf" --from "$FROM" --to "r$1-$i@exim.test" --id "q$i" \
			--tls verify "$m" >/dev/null || fail "enqueue r$1-$i@exim.test" || return 1
	done
	log_mark "$EXLOG"
	timed_run 40 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" run -c "$conf" --until-empty
	expect_rc 0
	res=$(redis_results "$REDIS_PORT")
	assert_eq "results delivered, TLS 1.3 verified" "$n" \
		"$(grep -E ' status=delivered .* tls=TLSv1\.3 .* verified=yes policy=verify ' <<<"$res" | grep -c .)" ||
		diag "$res"
	for ((i = 1; i <= n; i++)); do
		ex_copy "r$1-$i@exim.test" && assert_copy "$CASE_DIR/q$i.eml" "$CASE_DIR/copy" "$EX_TRACE"
	done
	printf '%s\n' "$res" >"$CASE_DIR/results"
}

t_ex_run_reuse() {
	t_ex_run 0 2 || return 1
	local res sessions
	res=$(<"$CASE_DIR/results")
	# Exim logs "SMTP connection from ... closed by QUIT" per session: one or two connections
	# carried the 6 messages (the results say reused=yes for all but each one's first)
	sessions=$(case_log "$EXLOG" | grep -c 'closed by QUIT')
	assert_ge "Exim sessions for 6 messages (max_connections = 2)" 1 "$sessions"
	assert_lt "Exim sessions for 6 messages (max_connections = 2)" 3 "$sessions"
	assert_eq "results with reused=yes = messages - sessions" "$((6 - sessions))" "$(grep -c ' reused=yes' <<<"$res")"
}
run_case "mxsend run to Exim, max_connections = 2: 6 messages on 1-2 connections, reused=yes" t_ex_run_reuse

t_ex_run_resume() {
	t_ex_run 1 1 || return 1
	local res log
	res=$(<"$CASE_DIR/results")
	log=$(case_log "$EXLOG")
	assert_eq "Exim sessions (one per message)" 6 "$(grep -c 'closed by QUIT' <<<"$log")"
	assert_eq "results with reused=yes" 0 "$(grep -c ' reused=yes' <<<"$res")"
	# Exim (tls_resumption_hosts = *) issues TLS 1.3 tickets; mxsend offers one on its next
	# connection to the MX (one at a time here). Exim's tls_resumption log selector marks a
	# resumed session's X= with a '*'
	assert_ge "results with resumed=yes" 1 "$(grep -c ' resumed=yes' <<<"$res")"
	assert_eq "Exim's resumed sessions = results with resumed=yes" "$(grep -c ' resumed=yes' <<<"$res")" \
		"$(grep -cE '<= .* X=TLS1\.3:[^ ]*:256\* CV=no ' <<<"$log")"
}
run_case "mxsend run to Exim, reuse_max = 1, max_connections = 1: a session per message, TLS resumed (GnuTLS tickets)" t_ex_run_resume

# ---------------------------------------------------------------------------
# OpenSMTPD

t_sm_body() { # KIND [MB]
	local kind=$1 m=$CASE_DIR/in.eml rcpt
	rcpt=p-$kind@smtpd.test
	body_gen "$kind" "$m" "${2:-}"
	send --tls may --from "$FROM" --to "$rcpt" "$m"
	expect_rc 0 || return 1
	expect_line "$rcpt" "$D250 $(mx_re mx.smtpd.test) $PLAIN policy=may $SMOK"
	sm_copy "p-$kind" || return 1
	assert_copy "$m" "$CASE_DIR/copy" "$SM_TRACE"
}
run_body_cases "OpenSMTPD, plaintext (no STARTTLS offered), may, stored copy exact" t_sm_body

t_sm_utf8() {
	local m=$CASE_DIR/m.eml
	body_gen utf8 "$m"
	log_mark "$SMLOG"
	send --tls may --from "$FROM" --to 'jöran@smtpd.test' --to p-ascii@smtpd.test "$m"
	expect_rc 69
	local r
	for r in 'jöran@smtpd.test' p-ascii@smtpd.test; do
		expect_line "$r" "bounced 553 5\.6\.7 $(mx_re mx.smtpd.test) $PLAIN policy=may reply=\"[^\"]*lacks SMTPUTF8\""
	done
	assert_no_match "OpenSMTPD saw no MAIL" 'mail-from=' "$(case_log "$SMLOG")"
}
run_case "UTF-8 envelope to OpenSMTPD (no SMTPUTF8): every recipient 553 5.6.7, nothing sent" t_sm_utf8

t_sm_mixed() {
	local m=$CASE_DIR/m.eml
	printf 'From: %s\nSubject: two recipients\n\nhello\n' "$FROM" >"$m"
	send --tls may --from "$FROM" --to p-mixed@smtpd.test --to nobody@smtpd.test "$m"
	expect_rc 69
	expect_line p-mixed@smtpd.test "$D250 $(mx_re mx.smtpd.test) $PLAIN policy=may $SMOK"
	expect_line nobody@smtpd.test "bounced 550 5\.0\.0 $(mx_re mx.smtpd.test) $PLAIN policy=may reply=\"Invalid recipient: <nobody@smtpd\.test>\""
	sm_copy p-mixed && assert_copy "$m" "$CASE_DIR/copy" "$SM_TRACE"
}
run_case "250/550 recipients to OpenSMTPD: exit 69, the 250 one delivered" t_sm_mixed

t_sm_encrypt() {
	local m=$CASE_DIR/m.eml
	printf 'From: %s\nSubject: encrypt\n\nhello\n' "$FROM" >"$m"
	log_mark "$SMLOG"
	send --tls encrypt --from "$FROM" --to p-enc@smtpd.test "$m"
	expect_rc 75
	expect_line p-enc@smtpd.test "deferred 4[0-9]{2} 4\.7\.[0-9]+ $(mx_re mx.smtpd.test) $PLAIN policy=encrypt reply=\"[^\"]*STARTTLS[^\"]*\""
	assert_no_match "OpenSMTPD saw no MAIL" 'mail-from=' "$(case_log "$SMLOG")"
}
run_case "OpenSMTPD without STARTTLS, --tls encrypt: deferred (75), nothing sent" t_sm_encrypt

# The control: OpenSMTPD's STARTTLS fails for openssl s_client too (the server ends the
# handshake with an internal_error alert), so what the next cases see is the server's fault.
t_sm_broken_tls_control() {
	local out
	log_mark "$SMLOG"
	out=$(printf 'QUIT\r\n' | timeout 10 openssl s_client -starttls smtp -connect "$A_SMT:$P" \
		-servername mxt.smtpd.test -CAfile "$CA" 2>&1)
	assert_match "s_client: the server's alert" 'alert internal error' "$out"
	assert_match "OpenSMTPD logged its own failure" 'smtp disconnected reason="io-error: .*(EVP lib|internal error)' \
		"$(case_log "$SMLOG")"
}
run_case "control: Debian 12's OpenSMTPD fails every STARTTLS handshake (openssl s_client)" t_sm_broken_tls_control

t_sm_broken_tls() { # LEVEL
	local m=$CASE_DIR/m.eml
	printf 'From: %s\nSubject: broken STARTTLS, %s\n\nhello\n' "$FROM" "$1" >"$m"
	send --tls "$1" --from "$FROM" --to "t-$1@tls.smtpd.test" "$m"
	if [ "$1" = may ]; then
		# RFC 7435 opportunistic TLS: a failed handshake is retried on a new connection
		# without STARTTLS
		expect_rc 0 || return 1
		expect_line "t-$1@tls.smtpd.test" "$D250 $(mx_re mxt.smtpd.test) $PLAIN policy=may $SMOK"
		sm_copy "t-$1" && assert_copy "$m" "$CASE_DIR/copy" "$SM_TRACE"
	else
		expect_rc 75
		expect_line "t-$1@tls.smtpd.test" "deferred 451 4\.7\.5 $(mx_re mxt.smtpd.test) tls=TLSv1\.3 cipher=[A-Za-z0-9_-]+ verified=(yes|no) policy=$1 reply=\"TLS handshake: [^\"]*alert internal error\""
		sleep 0.3
		assert_eq "nothing delivered" "" "$(ls "$SM_DIR/mail/t-$1" 2>/dev/null)"
	fi
}
run_case "OpenSMTPD's failing STARTTLS, --tls may: retried in plaintext, delivered" t_sm_broken_tls may
run_case "OpenSMTPD's failing STARTTLS, --tls encrypt: deferred 4.7.5 (75)" t_sm_broken_tls encrypt
run_case "OpenSMTPD's failing STARTTLS, --tls verify: deferred 4.7.5 (75)" t_sm_broken_tls verify

integ_finish
