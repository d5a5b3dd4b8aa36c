#!/usr/bin/env bash
# tests/integ/t_mta.sh: mxsend against a real MTA, Debian's Postfix 3.7 (installed by make deps),
# as a private instance (tests/integ/postfix.sh) with its queue, Maildirs and log in the work
# directory. Two smtpd listeners on one port: 127.0.9.201 (mx.mta.test, CHUNKING: mxsend sends
# BDAT) and 127.0.9.202 (mxd.mta.test, CHUNKING withheld: DATA), both with STARTTLS and the run's
# certificate, smtpd_forbid_bare_newline = reject (with no exclusions), smtpd_forbid_unauth_
# pipelining = yes, and an smtpd_command_filter that turns MAIL FROM:<eightbit@...> without
# BODY=8BITMIME into an unknown command. virtual(8) delivers each case's recipient to the
# Maildir mail/DOMAIN/LOCAL/ (nobody@ is unknown: 550 at RCPT); nothing is sent out.
# Cases: TLS 1.3 verified delivery; byte-exact Maildir copies (dot lines, bare LF, mixed line ends,
# no final newline, 998-octet lines, 8-bit, 1 MB) over BDAT and over DATA; a UTF-8 envelope
# (SMTPUTF8); 250/550 recipients in one transaction; a certificate for another name under verify
# (deferred) and under may (delivered); `mxsend run` from Redis with [pool] reuse_max = 1 (QUIT
# pipelined behind every message) and no pipelining complaint from Postfix. Every Postfix session
# of a case is checked in its log: the command counts of the "disconnect" line, and no warning.
# Addresses: Postfix and DNS on 127.0.9.x only (unbound 127.0.9.253); Redis on 127.0.0.1 (lib.sh).
# An egress source: Received: records its address and EHLO name.
# Controls: a raw client's bare LF and improper pipelining are refused and logged. About 10 s.
# shellcheck disable=SC2317,SC2031,SC2119 # case functions run indirectly, each in its run_case subshell;
# log_mark and case_log take an optional FILE (default CASE_LOG)
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integ/postfix.sh
. "$INTEG_LIB_DIR/postfix.sh"

integ_setup mx.mta.test mxd.mta.test
integ_require mxsend unbound unbound-checkconf perl python3 ss timeout redis-server redis-cli
pf_require

P=$SINK_PORT          # Postfix's port on both addresses (mxsend: --port / [domain *] port)
A_BDAT=127.0.9.201    # mx.mta.test: CHUNKING offered
A_DATA=127.0.9.202    # mxd.mta.test: CHUNKING withheld
FROM=sender@client.test
MAILDIRS=""           # Postfix's virtual_mailbox_base

# result-line pieces (mxsend send's stdout)
TLS13Y='tls=TLSv1\.3 cipher=[A-Za-z0-9_-]+ verified=yes'
TLS13N='tls=TLSv1\.3 cipher=[A-Za-z0-9_-]+ verified=no'
D250='delivered 250 2\.0\.0'
QUEUED='reply="[^"]*queued as [0-9A-F]+"'

if [ -z "$INTEG_MISSING" ]; then
	start_unbound -a 127.0.9.253 -n mta "
mta.test. MX 10 mx.mta.test.
data.mta.test. MX 10 mxd.mta.test.
mm.mta.test. MX 10 bad.mta.test.
mx.mta.test. A $A_BDAT
mxd.mta.test. A $A_DATA
bad.mta.test. A $A_BDAT
" || integ_missing "unbound did not start"
fi

# mta_postfix: write and start the instance (see the top of the file).
mta_postfix() {
	# the recipients of the cases, each with the Maildir DOMAIN/LOCAL/; nobody@ is unknown
	pf_receiver "$INTEG_DIR/postfix" mx.mta.test "mta.test data.mta.test mm.mta.test" \
		"tls b-dots b-lf b-mixed-eol b-nofinal b-nofinal-dot b-longline b-8bit b-smuggle b-big
		jöran mixed1 mixed2 mmv mmm q1 q2 q3 q4 ctl src" || return 1
	MAILDIRS=$PF_MAIL
	cat >"$PF_DIR/etc/command_filter" <<'EOF'
if /^MAIL FROM:<eightbit@/
!/ BODY=8BITMIME( |$)/	X-MISSING-BODY-8BITMIME
endif
EOF
	cat >>"$PF_DIR/etc/main.cf" <<EOF
# tests/integ/t_mta.sh: the receiving MTA
smtputf8_enable = yes
smtpd_forbid_bare_newline = reject
smtpd_forbid_bare_newline_exclusions =
smtpd_forbid_unauth_pipelining = yes
smtpd_command_filter = regexp:$PF_DIR/etc/command_filter
EOF
	pf_listen "$A_BDAT:$P" -o syslog_name=postfix-bdat
	pf_listen "$A_DATA:$P" -o syslog_name=postfix-data -o smtpd_discard_ehlo_keywords=chunking
	# shellcheck disable=SC2119 # no cgroup
	pf_start
}
if [ -z "$INTEG_MISSING" ]; then
	mta_postfix || integ_missing "the Postfix instance did not start (see above)"
fi

# ---------------------------------------------------------------------------
# helpers

# send (lib.sh): `mxsend send` with the run's DNS, CA and port (20 s bound).
SEND_LIMIT=20
SEND_ARGS=(--dns "$DNS" --ca "$CA" --port "$P" --helo client.test)

# mx_re DOMAIN: the ERE for "mx=HOST[IP]:PORT" of DOMAIN's MX.
mx_re() {
	case $1 in
	mta.test) printf 'mx=mx\\.mta\\.test\\[127\\.0\\.9\\.201\\]:%s' "$P" ;;
	data.mta.test) printf 'mx=mxd\\.mta\\.test\\[127\\.0\\.9\\.202\\]:%s' "$P" ;;
	mm.mta.test) printf 'mx=bad\\.mta\\.test\\[127\\.0\\.9\\.201\\]:%s' "$P" ;;
	esac
}

# log_mark / case_log (lib.sh): the case's part of Postfix's maillog (pf_sessions reads it).
CASE_LOG=$INTEG_DIR/postfix/log/maillog

# check_session DOMAIN [ERE...]: Postfix logged one finished session of the
# case, on DOMAIN's listener, its "disconnect" line matching every ERE (after
# the listener's own: bdat= for mta.test, data=1 and no bdat for data.mta.test),
# and no warning, rejection (but RCPT nobody@) or pipelining/bare-LF complaint.
check_session() {
	local dom=$1 name=postfix-bdat line re
	shift
	[ "$dom" = data.mta.test ] && name=postfix-data
	if ! pf_wait_sessions 1; then
		fail "Postfix logged no disconnect for the case's session"
		case_log | tail -n 20 | sed 's/^/#   | /'
		return 1
	fi
	line=$(pf_sessions)
	assert_eq "Postfix sessions of the case" 1 "$(grep -c . <<<"$line")"
	assert_match "the session's listener" " $name/smtpd\[" "$line"
	if [ "$name" = postfix-data ]; then
		assert_match "DATA used" ' data=1 ' "$line"
		assert_no_match "no BDAT without CHUNKING" ' bdat=' "$line"
	else
		assert_match "BDAT used" ' bdat=[1-9]' "$line"
	fi
	for re in "$@"; do
		assert_match "the session's commands" "$re" "$line"
	done
	# (the one refusal a case asks for: RCPT nobody@, unknown)
	assert_no_match "Postfix's complaints" 'warning:|improper command pipelining|bare <LF>|reject:' \
		"$(case_log | grep -v ' reject: RCPT from .* to=<nobody@')"
}

# ---------------------------------------------------------------------------
# cases

t_tls() {
	local m=$CASE_DIR/m.eml f
	printf 'From: %s\nTo: tls@mta.test\nSubject: TLS 1.3 verified\n\nhello\n' "$FROM" >"$m"
	log_mark
	send --tls verify --from "$FROM" --to tls@mta.test "$m"
	expect_rc 0 || return 1
	expect_line tls@mta.test "$D250 $(mx_re mta.test) $TLS13Y policy=verify $QUEUED"
	f=$(pf_maildir_files mta.test tls 1) || fail "Maildir mta.test/tls: expected 1 message, got: $f" || return 1
	assert_copy "$m" "$f"
	assert_match "Postfix's Received: field says TLS 1.3" '^[[:space:]]+\(using TLSv1\.3 with cipher ' \
		"$(cat "$CASE_DIR/trace")"
	assert_match "Postfix logged the TLS 1.3 session" \
		'postfix-bdat/smtpd\[[0-9]+\]: Anonymous TLS connection established from .*: TLSv1\.3 with cipher' "$(case_log)"
	check_session mta.test ' starttls=1 ' ' mail=1 ' ' rcpt=1 '
}
run_case "STARTTLS to Postfix: tls=TLSv1.3 verified=yes policy=verify, Maildir copy exact" t_tls

# An egress source (issue 19): Postfix's Received: field records the client
# address mxsend bound and the source's EHLO name.
t_source() {
	local m=$CASE_DIR/m.eml conf=$CASE_DIR/src.ini f
	printf '[source out1]\naddress = 127.0.64.11\nehlo = out1.client.test\n' >"$conf"
	printf 'From: %s\nTo: src@mta.test\nSubject: source\n\nhello\n' "$FROM" >"$m"
	log_mark
	send -c "$conf" --from "$FROM" --to src@mta.test "$m"
	expect_rc 0 || return 1
	expect_line src@mta.test "$D250 .* source=out1\\[127\\.0\\.64\\.11\\]"
	f=$(pf_maildir_files mta.test src 1) || fail "Maildir mta.test/src: expected 1 message, got: $f" || return 1
	assert_copy "$m" "$f"
	assert_match "Received: from the source's EHLO name and address" \
		'^Received: from out1\.client\.test \([^)]*\[127\.0\.64\.11\]\)' "$(cat "$CASE_DIR/trace")"
	assert_match "Postfix logged the client address" 'connect from [^ ]*\[127\.0\.64\.11\]' "$(case_log)"
}
run_case "egress source: bound to 127.0.64.11, EHLO out1.client.test; Postfix's Received: field records both" t_source

t_body() { # DOMAIN KIND [MB]
	local dom=$1 kind=$2 m=$CASE_DIR/in.eml f rcpt from=$FROM
	rcpt=b-$kind@$dom
	body_gen "$kind" "$m" "${3:-}"
	if [ "$kind" = 8bit ]; then
		# the command filter refuses this sender's MAIL without BODY=8BITMIME: check that it is armed
		from=eightbit@client.test
		assert_eq "command filter, MAIL without BODY=8BITMIME" X-MISSING-BODY-8BITMIME \
			"$(postmap -c "$PF_DIR/etc" -q "MAIL FROM:<$from> SIZE=9" "regexp:$PF_DIR/etc/command_filter")"
		assert_eq "command filter, MAIL with BODY=8BITMIME" "" \
			"$(postmap -c "$PF_DIR/etc" -q "MAIL FROM:<$from> SIZE=9 BODY=8BITMIME" "regexp:$PF_DIR/etc/command_filter")"
	fi
	log_mark
	send --tls verify --from "$from" --to "$rcpt" "$m"
	expect_rc 0 || return 1
	expect_line "$rcpt" "$D250 $(mx_re "$dom") $TLS13Y policy=verify $QUEUED"
	if [ "$dom" = mta.test ]; then # Postfix counts the octets BDAT brought: the wire form exactly
		wire_expect "$m" "$CASE_DIR/wire"
		assert_match "Postfix's count of the BDAT octets" "reply=\"Ok: $(stat -c %s "$CASE_DIR/wire") bytes queued as " \
			"$(cat "$CASE_DIR/out")"
	fi
	f=$(pf_maildir_files "$dom" "b-$kind" 1) || fail "Maildir $dom/b-$kind: expected 1 message, got: $f" || return 1
	assert_copy "$m" "$f"
	check_session "$dom" ' mail=1 ' ' rcpt=1 '
}
run_body_both Postfix "Maildir copy exact" t_body mta.test

t_utf8() {
	local m=$CASE_DIR/m.eml f rcpt='jöran@mta.test'
	body_gen utf8 "$m"
	log_mark
	send --tls verify --from 'jösé@client.test' --to "$rcpt" "$m"
	expect_rc 0 || return 1
	expect_line "$rcpt" "$D250 $(mx_re mta.test) $TLS13Y policy=verify $QUEUED"
	f=$(pf_maildir_files mta.test jöran 1) || fail "Maildir mta.test/jöran: expected 1 message, got: $f" || return 1
	assert_copy "$m" "$f"
	assert_match "Return-Path: the UTF-8 sender" '^Return-Path: <jösé@client\.test>$' "$(cat "$CASE_DIR/trace")"
	# Postfix refuses a UTF-8 address in MAIL/RCPT unless MAIL has SMTPUTF8
	assert_match "Postfix delivered to the UTF-8 address" 'to=<jöran@mta\.test>.*status=sent' "$(case_log)"
	check_session mta.test ' mail=1 ' ' rcpt=1 '
}
run_case "UTF-8 envelope (SMTPUTF8) to Postfix: delivered, Maildir copy exact" t_utf8

t_mixed() {
	local m=$CASE_DIR/m.eml f r
	printf 'From: %s\nSubject: three recipients, one unknown\n\nhello\n' "$FROM" >"$m"
	log_mark
	send --tls verify --from "$FROM" --to mixed1@mta.test --to nobody@mta.test --to mixed2@mta.test "$m"
	expect_rc 69
	expect_line mixed1@mta.test "$D250 $(mx_re mta.test) $TLS13Y policy=verify $QUEUED"
	expect_line nobody@mta.test "bounced 550 5\.1\.1 $(mx_re mta.test) $TLS13Y policy=verify reply=\"[^\"]*User unknown in virtual mailbox table[^\"]*\""
	expect_line mixed2@mta.test "$D250 $(mx_re mta.test) $TLS13Y policy=verify $QUEUED"
	assert_eq "result lines" 3 "$(grep -c . "$CASE_DIR/out")"
	for r in mixed1 mixed2; do
		f=$(pf_maildir_files mta.test "$r" 1) || fail "Maildir mta.test/$r: expected 1 message, got: $f" || continue
		assert_copy "$m" "$f"
	done
	assert_eq "Maildir of nobody" "" "$(find "$MAILDIRS/mta.test/nobody" -type f 2>/dev/null)"
	check_session mta.test ' mail=1 ' ' rcpt=2/3 '
}
run_case "250/550/250 recipients in one transaction: exit 69, one line each" t_mixed

t_mismatch_verify() {
	local m=$CASE_DIR/m.eml
	printf 'From: %s\nSubject: name mismatch, verify\n\nhello\n' "$FROM" >"$m"
	log_mark
	send --tls verify --from "$FROM" --to mmv@mm.mta.test "$m"
	expect_rc 75
	expect_line mmv@mm.mta.test "deferred 4[0-9]{2} 4\.[0-9]{1,3}\.[0-9]{1,3} $(mx_re mm.mta.test) $TLS13N policy=verify reply=\"[^\"]*hostname mismatch[^\"]*\""
	pf_wait_sessions 1 || fail "Postfix logged no disconnect"
	assert_match "Postfix saw the session end in STARTTLS" 'lost connection after STARTTLS' "$(case_log)"
	assert_match "the session's commands: EHLO, STARTTLS, no MAIL" ' ehlo=1 starttls=0/1 commands=1/2$' "$(pf_sessions)"
	assert_eq "Maildir of mmv" "" "$(find "$MAILDIRS/mm.mta.test" -type f 2>/dev/null)"
}
run_case "certificate for another name, --tls verify: deferred (75), tls=TLSv1.3 verified=no" t_mismatch_verify

t_mismatch_may() {
	local m=$CASE_DIR/m.eml f
	printf 'From: %s\nSubject: name mismatch, may\n\nhello\n' "$FROM" >"$m"
	log_mark
	send --tls may --from "$FROM" --to mmm@mm.mta.test "$m"
	expect_rc 0 || return 1
	expect_line mmm@mm.mta.test "$D250 $(mx_re mm.mta.test) $TLS13N policy=may $QUEUED"
	f=$(pf_maildir_files mm.mta.test mmm 1) || fail "Maildir mm.mta.test/mmm: expected 1 message, got: $f" || return 1
	assert_copy "$m" "$f"
	check_session mta.test ' starttls=1 ' ' mail=1 '
}
run_case "certificate for another name, --tls may: delivered, tls=TLSv1.3 verified=no" t_mismatch_may

# raw_smtp ADDR MODE: a plaintext SMTP client that breaks the rules Postfix is set to
# enforce; prints every reply line. MODE bare-lf: a message with bare LF line ends;
# pipelining: MAIL pipelined behind EHLO (which must end a group, RFC 2920). 10 s bound.
raw_smtp() {
	timeout 10 python3 - "$1" "$P" "$2" <<'EOF'
import socket, sys
addr, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((addr, port), timeout=5)
f = s.makefile("rb")
def reply():
    while True:
        line = f.readline()
        if not line:
            print("(closed)")
            return False
        print(line.decode("latin-1").rstrip("\r\n"))
        if line[3:4] != b"-":
            return True
try:
    reply()
    if mode == "bare-lf":
        for c in (b"EHLO control.test", b"MAIL FROM:<c@client.test>", b"RCPT TO:<ctl@mta.test>", b"DATA"):
            s.sendall(c + b"\r\n")
            reply()
        s.sendall(b"Subject: bare LF\n\nbare LF line\r\n.\r\n")
        reply()
        s.sendall(b"QUIT\r\n")
    else:
        s.sendall(b"EHLO control.test\r\nMAIL FROM:<c@client.test>\r\n")
    while reply():
        pass
except OSError as e:
    print("(error: %s)" % e)
EOF
}

# The controls of the cases above: this Postfix does refuse bare LF and improper
# pipelining (so their absence in the other cases' logs means something).
t_controls() {
	log_mark
	assert_match "bare LF: refused at the end of DATA" '^550 5\.5\.2 .*bare <LF> received' \
		"$(raw_smtp "$A_DATA" bare-lf)"
	assert_match "pipelining after EHLO: refused" '^554 5\.5\.0 Error: SMTP protocol synchronization' \
		"$(raw_smtp "$A_BDAT" pipelining)"
	pf_wait_sessions 2 || fail "Postfix logged fewer than 2 sessions"
	assert_match "Postfix logged the bare LF" 'postfix-data/smtpd.*: reject: END-OF-MESSAGE .*bare <LF> received' \
		"$(case_log)"
	assert_match "Postfix logged the pipelining" \
		'postfix-bdat/smtpd.*: improper command pipelining after EHLO .*: MAIL FROM:' "$(case_log)"
	assert_eq "Maildir of ctl" "" "$(find "$MAILDIRS/mta.test/ctl" -type f 2>/dev/null)"
}
run_case "controls: Postfix refuses bare LF and MAIL pipelined behind EHLO from a raw client" t_controls

t_run_reuse1() {
	local n=4 conf=$CASE_DIR/run.ini i dom m res f lines
	start_redis -n mta || return 1
	integ_config "$conf" "$(printf '[redis]\nurl = %s\n\n[pool]\nreuse_max = 1\n' "$REDIS_URL")"
	for dom in mta.test data.mta.test; do
		for ((i = 1; i <= n; i++)); do
			m=$CASE_DIR/q$i.$dom.eml
			printf 'From: %s\nSubject: run %s %d\n\nmessage %d of %d\n' "$FROM" "$dom" "$i" "$i" "$n" >"$m"
			timeout 10 "$MXSEND" enqueue -c "$conf" --from "$FROM" --to "q$i@$dom" --id "q$i-$dom" \
				--tls verify "$m" >/dev/null || fail "enqueue q$i@$dom" || return 1
		done
	done
	log_mark
	timed_run 40 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" run -c "$conf" --until-empty
	expect_rc 0
	res=$(redis_results "$REDIS_PORT")
	assert_eq "results" $((2 * n)) "$(grep -c . <<<"$res")"
	assert_eq "results delivered, TLS 1.3 verified, policy verify" $((2 * n)) \
		"$(grep -E ' status=delivered .* tls=TLSv1\.3 .* verified=yes policy=verify ' <<<"$res" | grep -c .)" ||
		diag "$res"
	for dom in mta.test data.mta.test; do
		for ((i = 1; i <= n; i++)); do
			f=$(pf_maildir_files "$dom" "q$i" 1) || fail "Maildir $dom/q$i: expected 1 message, got: $f" || continue
			assert_copy "$CASE_DIR/q$i.$dom.eml" "$f"
		done
	done
	pf_wait_sessions $((2 * n)) || fail "Postfix logged fewer than $((2 * n)) sessions"
	lines=$(pf_sessions)
	# reuse_max = 1: a connection per message, each ended by the QUIT sent behind the message
	assert_eq "sessions with one message and a QUIT (BDAT)" "$n" \
		"$(grep -E 'postfix-bdat/smtpd.* mail=1 rcpt=1 bdat=[1-9][0-9]* quit=1 ' <<<"$lines" | grep -c .)"
	assert_eq "sessions with one message and a QUIT (DATA)" "$n" \
		"$(grep -E 'postfix-data/smtpd.* mail=1 rcpt=1 data=1 quit=1 ' <<<"$lines" | grep -c .)"
	assert_eq "sessions" $((2 * n)) "$(grep -c . <<<"$lines")"
	assert_no_match "Postfix's complaints" 'improper command pipelining|warning:|bare <LF>|reject:' "$(case_log)"
}
run_case "mxsend run, [pool] reuse_max = 1: QUIT pipelined behind each message, no Postfix complaint" t_run_reuse1

integ_finish
