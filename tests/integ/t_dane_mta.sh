#!/usr/bin/env bash
# tests/integ/t_dane_mta.sh: DANE (RFC 7672) against real receiving MTAs behind a signed zone and
# a validating resolver (tests/integ/dnssec.sh: test. signed per run, unbound validating it with
# the run's DS as trust anchor; [dns] dane left at its default, auto: the resolver is loopback).
# The MTAs are the suite's own private instances, with the run's certificate:
#   127.0.80.1  Postfix 3.7 (tests/integ/postfix.sh, pf_receiver: Maildirs in the work directory)
#   127.0.80.2  Exim 4.96, GnuTLS (tests/integ/interop.sh, queue_only: copies read back)
#   127.0.80.3  OpenSMTPD 6.8, no STARTTLS offered
#   127.0.80.4  OpenSMTPD 6.8 with STARTTLS, whose handshake always fails (see t_interop.sh)
#   127.0.80.5  a man in the middle (tests/integ/striptls.py) stripping STARTTLS, to Postfix
#   127.0.80.6  the same, to Exim
# Cases: a DANE-EE 3 1 1 record of the MTA's key: delivered, policy=dane, the MTA stored the
# message (Postfix, Exim); a record of another key (a wrong certificate): deferred, nothing
# stored, and with a second MX whose record matches, delivered there; STARTTLS stripped by the
# man in the middle (Postfix, Exim) or not offered (OpenSMTPD): deferred, no MAIL ever sent in
# plaintext, nothing stored, while the control (the same relay for an unsigned domain)
# delivers in plaintext; a failing handshake under DANE: deferred, no plaintext retry; a TLSA
# record with a broken signature (bogus): deferred 4.7.5, no MTA contacted. Each case < 5 s.
# shellcheck disable=SC2317,SC2031,SC2119 # case functions run indirectly, each in its run_case subshell;
# pf_start and integ_timeouts take optional arguments
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integ/dnssec.sh
. "$INTEG_LIB_DIR/dnssec.sh"
# shellcheck source=tests/integ/postfix.sh
. "$INTEG_LIB_DIR/postfix.sh"
# shellcheck source=tests/integ/interop.sh
. "$INTEG_LIB_DIR/interop.sh"

integ_setup mx.pf.test mx.ex.test
integ_require mxsend unbound unbound-checkconf ldns-keygen ldns-signzone dig perl openssl python3 timeout
pf_require
interop_require

P=$SINK_PORT          # every MTA's port, and the relays' (the TLSA names: _$P._tcp.HOST)
A_PF=127.0.80.1
A_EX=127.0.80.2
A_SM=127.0.80.3
A_SMT=127.0.80.4
A_MITM=127.0.80.5     # -> Postfix
A_MITMX=127.0.80.6    # -> Exim
FROM=sender@client.test
STRIP=$INTEG_LIB_DIR/striptls.py
# the recipient domains of each MTA (all mail goes to u@DOMAIN)
PF_DOMAINS="pf.test pfbad.test next.test strip.test pfbog.test strip.insec.test"
EX_DOMAINS="ex.test exbad.test next.test stripx.test exbog.test"
SM_DOMAINS="sm.test smt.test smbog.test"

if [ -z "$INTEG_MISSING" ]; then
	EE=$(tlsa_spki "$CERTS/server.pem")   # the MTAs' key
	WRONG=$(tlsa_spki "$CERTS/wrong.pem") # another key (bench/mkcerts.sh's wrong.pem)
	T=_$P._tcp
	dnssec_start "
; (a) DANE-EE records of the MTAs' key
pf.test. MX 10 mx.pf.test.
mx.pf.test. A $A_PF
$T.mx.pf.test. TLSA $EE
ex.test. MX 10 mx.ex.test.
mx.ex.test. A $A_EX
$T.mx.ex.test. TLSA $EE
; (b) records of another key: one MX; a second MX that matches
pfbad.test. MX 10 bad.pf.test.
bad.pf.test. A $A_PF
$T.bad.pf.test. TLSA $WRONG
exbad.test. MX 10 bad.ex.test.
bad.ex.test. A $A_EX
$T.bad.ex.test. TLSA $WRONG
next.test. MX 10 bad.pf.test.
next.test. MX 20 mx.ex.test.
; (c) STARTTLS stripped in front of Postfix and Exim, not offered, failing
strip.test. MX 10 mitm.pf.test.
mitm.pf.test. A $A_MITM
$T.mitm.pf.test. TLSA $EE
stripx.test. MX 10 mitm.ex.test.
mitm.ex.test. A $A_MITMX
$T.mitm.ex.test. TLSA $EE
sm.test. MX 10 mx.sm.test.
mx.sm.test. A $A_SM
$T.mx.sm.test. TLSA $EE
smt.test. MX 10 mx.smt.test.
mx.smt.test. A $A_SMT
$T.mx.smt.test. TLSA $EE
; (d) the TLSA records' signatures broken
pfbog.test. MX 10 bog.pf.test.
bog.pf.test. A $A_PF
$T.bog.pf.test. TLSA $EE
exbog.test. MX 10 bog.ex.test.
bog.ex.test. A $A_EX
$T.bog.ex.test. TLSA $EE
smbog.test. MX 10 bog.sm.test.
bog.sm.test. A $A_SMT
$T.bog.sm.test. TLSA $EE" "
; the control: the relay in front of Postfix for a domain without DNSSEC
strip.insec.test. MX 10 mitm.insec.test.
mitm.insec.test. A $A_MITM
$T.mitm.insec.test. TLSA $EE" "$T.bog.pf.test TLSA
$T.bog.ex.test TLSA
$T.bog.sm.test TLSA" || integ_missing "the DNSSEC set-up (tests/integ/dnssec.sh)"
fi
if [ -z "$INTEG_MISSING" ]; then
	{ pf_receiver "$INTEG_DIR/postfix" mx.pf.test "$PF_DOMAINS" u &&
		pf_listen "$A_PF:$P" && pf_start; } || integ_missing "the Postfix instance did not start (see above)"
	ex_start "$A_EX" "$EX_DOMAINS" || integ_missing "the Exim instance did not start (see above)"
	sm_start "$A_SM $A_SMT" "$SM_DOMAINS" "listen on $A_SM port $P hostname mx.sm.test" \
		"listen on $A_SMT port $P tls pki server hostname mx.smt.test" ||
		integ_missing "the OpenSMTPD instance did not start (see above)"
fi
# start_strip NAME ADDR UPSTREAM: striptls.py on ADDR:$P to UPSTREAM:$P, its log $INTEG_DIR/NAME.log.
start_strip() {
	integ_spawn "$1" "$INTEG_DIR/$1.log" python3 -u "$STRIP" "$2:$P" "$3:$P" || return 1
	wait_listen "$SPAWN_PID" "$2:$P" || { tail -n 5 "$INTEG_DIR/$1.log" >&2; return 1; }
}
if [ -z "$INTEG_MISSING" ]; then
	if ! start_strip strip "$A_MITM" "$A_PF" || ! start_strip stripx "$A_MITMX" "$A_EX"; then
		integ_missing "the STARTTLS-stripping relays (tests/integ/striptls.py)"
	fi
	CONF=$INTEG_DIR/mxsend.conf
	integ_config "$CONF" "$(integ_timeouts)"
fi

SEND_ARGS=(-c "$INTEG_DIR/mxsend.conf" --log info)
PFLOG=$INTEG_DIR/postfix/log/maillog

# The MTAs log the start-up probes (wait_listen's connections: to each listener, and
# through each relay) when they like: wait for them (5 s), so that no case sees them.
probes_logged() {
	[ "$(grep -c ': disconnect from ' "$PFLOG")" -ge 2 ] &&
		[ "$(grep -c 'SMTP connection from .* lost' "$EXLOG")" -ge 2 ] &&
		[ "$(grep -c 'smtp disconnected' "$SMLOG")" -ge 2 ]
}
if [ -z "$INTEG_MISSING" ] && ! wait_until 5 probes_logged; then
	integ_missing "the MTAs' logs of the start-up probes (Postfix: $(grep -c ': disconnect from ' "$PFLOG"),\
 Exim: $(grep -c 'SMTP connection from .* lost' "$EXLOG"), OpenSMTPD: $(grep -c 'smtp disconnected' "$SMLOG"); 2 each)"
fi
TLSOK='tls=TLSv1\.3 cipher=[A-Za-z0-9_-]+ verified=yes'
TLSNV='tls=TLSv1\.[23] cipher=[A-Za-z0-9_-]+ verified=no'
PLAIN='tls=none cipher=- verified=no'
DEF='deferred 4[0-9]{2} 4\.[0-9]{1,3}\.[0-9]{1,3}'

# deliver DOMAIN RC: one message to u@DOMAIN (the case's m.eml), exit status RC; the MTA logs
# are marked first (log_mark), so case_log holds what the MTAs saw of it.
deliver() {
	local f
	for f in "$PFLOG" "$EXLOG" "$SMLOG"; do
		log_mark "$f"
	done
	msg "$CASE_DIR/m.eml" "DANE to $1"
	send --from "$FROM" --to "u@$1" "$CASE_DIR/m.eml"
	expect_rc "$2"
}
# nothing_stored DOMAIN: no MTA stored a message for u@DOMAIN (Postfix's Maildir, Exim's
# log, OpenSMTPD's mail/ and log); waits 0.5 s for a late write.
nothing_stored() {
	sleep 0.5
	assert_eq "Postfix's Maildir for u@$1" "" "$(find "$PF_MAIL/$1" -type f 2>/dev/null)"
	assert_no_match "Exim received no message for u@$1" " <= .* for u@$(re_escape "$1")\$" "$(case_log "$EXLOG")"
	assert_no_match "OpenSMTPD saw no MAIL" 'mail-from=' "$(case_log "$SMLOG")"
	assert_eq "OpenSMTPD's mail/u" "" "$(find "$SM_DIR/mail" -name u 2>/dev/null)"
}
# pf_no_mail: Postfix logged one finished session of the case, without MAIL.
pf_no_mail() {
	pf_wait_sessions 1 || fail "Postfix logged no session end" "$(case_log "$PFLOG" | tail -n 5)"
	assert_no_match "Postfix: no MAIL in the session" ' mail=' "$(pf_sessions)"
}

t_fixture() {
	assert_eq "TLSA of mx.pf.test" secure "$(dnssec_status "$T.mx.pf.test" TLSA)"
	assert_eq "TLSA of bog.pf.test (broken RRSIG)" bogus "$(dnssec_status "$T.bog.pf.test" TLSA)"
	assert_eq "MX of strip.insec.test (unsigned delegation)" insecure "$(dnssec_status strip.insec.test MX)"
	# the records are those of the certificate the MTAs present
	local out
	out=$(printf 'QUIT\r\n' | timeout 10 openssl s_client -starttls smtp -connect "$A_PF:$P" \
		-dane_tlsa_domain mx.pf.test -dane_tlsa_rrdata "$EE" 2>&1)
	assert_match "openssl s_client: Postfix's certificate matches $EE" 'Verification: OK' "$out"
	assert_match "openssl s_client: by the DANE-EE record" 'Verified peername: mx\.pf\.test|DANE TLSA 3 1 1' "$out"
}
run_case "fixture: TLSA records secure / bogus / insecure; the MTAs' certificate matches the DANE-EE record" t_fixture

# (a) ---------------------------------------------------------------------------

t_pf_ee() {
	deliver pf.test 0 || return 1
	expect_line u@pf.test "delivered 250 2\.0\.0 $(mx mx.pf.test "$A_PF") $TLSOK policy=dane reply=\"[^\"]*queued as [0-9A-F]+\""
	local f
	f=$(pf_maildir_files pf.test u 1) || fail "Maildir pf.test/u: expected 1 message, got: $f" || return 1
	assert_copy "$CASE_DIR/m.eml" "$f"
	assert_match "Postfix's Received: field says TLS 1.3" '^[[:space:]]+\(using TLSv1\.3 with cipher ' \
		"$(cat "$CASE_DIR/trace")"
	assert_match "Postfix logged the TLS session" 'TLS connection established from .*: TLSv1\.3' "$(case_log "$PFLOG")"
}
run_case "Postfix, DANE-EE 3 1 1 of its key: delivered, policy=dane, stored in its Maildir" t_pf_ee

# ex_stored DOMAIN: u@DOMAIN delivered to mx.ex.test under DANE, and Exim's copy exact.
ex_stored() {
	expect_line "u@$1" "delivered 250 2\.0\.0 $(mx mx.ex.test "$A_EX") $TLSOK policy=dane reply=\"[^\"]*OK id=[-0-9A-Za-z]+\""
	ex_copy "u@$1" || return 1
	assert_copy "$CASE_DIR/m.eml" "$CASE_DIR/copy" Received
}

t_ex_ee() {
	deliver ex.test 0 || return 1
	ex_stored ex.test || return 1
	assert_match "Exim logged the message over TLS 1.3" '<= sender@client\.test .* P=esmtps X=TLS1\.3:[^ ]+ .* for u@ex\.test' \
		"$(case_log "$EXLOG")"
}
run_case "Exim (GnuTLS), DANE-EE 3 1 1 of its key: delivered, policy=dane, stored" t_ex_ee

# (b) ---------------------------------------------------------------------------

t_pf_wrong() {
	deliver pfbad.test 75
	expect_line u@pfbad.test "$DEF $(mx bad.pf.test "$A_PF") $TLSNV policy=dane reply=\"DANE: no TLSA record matches[^\"]*\""
	pf_no_mail
	# mxsend ended the handshake when the certificate did not match
	assert_match "Postfix: the session ended in STARTTLS" ' ehlo=1 starttls=0/1 commands=1/2$' "$(pf_sessions)"
	nothing_stored pfbad.test
}
run_case "Postfix, a TLSA record of another key (wrong certificate): deferred, no MAIL, nothing stored" t_pf_wrong

t_ex_wrong() {
	deliver exbad.test 75
	expect_line u@exbad.test "$DEF $(mx bad.ex.test "$A_EX") $TLSNV policy=dane reply=\"DANE: no TLSA record matches[^\"]*\""
	nothing_stored exbad.test
	assert_match "Exim saw the connection" "SMTP connection from .*\\[127\\.0\\.0\\.1\\]" "$(case_log "$EXLOG")"
}
run_case "Exim, a TLSA record of another key (wrong certificate): deferred, nothing stored" t_ex_wrong

t_next_mx() {
	deliver next.test 0 || return 1
	ex_stored next.test || return 1
	pf_no_mail
	assert_eq "Postfix's Maildir for u@next.test" "" "$(find "$PF_MAIL/next.test" -type f 2>/dev/null)"
	assert_match "the log names the mismatch at MX 10" 'bad\.pf\.test.*DANE: no TLSA record matches' "$(cat "$CASE_DIR/err")"
}
run_case "wrong certificate at MX 10 (Postfix), DANE match at MX 20 (Exim): delivered at MX 20 only" t_next_mx

# (c) ---------------------------------------------------------------------------

t_strip_control() {
	log_mark "$INTEG_DIR/strip.log"
	deliver strip.insec.test 0 || return 1
	expect_line u@strip.insec.test "delivered 250 2\.0\.0 $(mx mitm.insec.test "$A_MITM") $PLAIN policy=may reply=\"[^\"]*queued as [0-9A-F]+\""
	local f
	f=$(pf_maildir_files strip.insec.test u 1) || fail "Maildir strip.insec.test/u: expected 1 message, got: $f" || return 1
	assert_copy "$CASE_DIR/m.eml" "$f"
	assert_match "the relay removed STARTTLS" '^strip [0-9]+ 250.STARTTLS$' "$(case_log "$INTEG_DIR/strip.log")"
	assert_match "the relay passed MAIL on" '^client [0-9]+ MAIL FROM:' "$(case_log "$INTEG_DIR/strip.log")"
}
run_case "control: the stripping relay to Postfix, unsigned domain: delivered in plaintext (what DANE prevents)" t_strip_control

t_strip() { # NAME DOMAIN MXHOST ADDR
	log_mark "$INTEG_DIR/$1.log"
	deliver "$2" 75
	expect_line "u@$2" "$DEF $(mx "$3" "$4") $PLAIN policy=dane reply=\"[^\"]*\""
	nothing_stored "$2"
	local rl
	rl=$(case_log "$INTEG_DIR/$1.log")
	assert_match "the relay removed STARTTLS" '^strip [0-9]+ 250.STARTTLS$' "$rl"
	assert_match "mxsend sent EHLO through the relay" '^client [0-9]+ EHLO ' "$rl"
	assert_no_match "mxsend sent no MAIL in plaintext" '^client [0-9]+ (MAIL|RCPT|DATA|BDAT)' "$rl"
	[ "$1" = strip ] && pf_no_mail
	return 0
}
run_case "man in the middle stripping STARTTLS before Postfix: deferred, never plaintext, nothing stored" \
	t_strip strip strip.test mitm.pf.test "$A_MITM"
run_case "man in the middle stripping STARTTLS before Exim: deferred, never plaintext, nothing stored" \
	t_strip stripx stripx.test mitm.ex.test "$A_MITMX"

t_sm_notls() {
	deliver sm.test 75
	expect_line u@sm.test "$DEF $(mx mx.sm.test "$A_SM") $PLAIN policy=dane reply=\"[^\"]*\""
	nothing_stored sm.test
	assert_match "OpenSMTPD saw the connection" 'smtp connected address=127\.0\.0\.1' "$(case_log "$SMLOG")"
}
run_case "OpenSMTPD offering no STARTTLS, DANE-EE record published: deferred, nothing sent, nothing stored" t_sm_notls

t_sm_badtls() {
	deliver smt.test 75
	expect_line u@smt.test "deferred 4[0-9]{2} 4\.7\.[0-9]+ $(mx mx.smt.test "$A_SMT") tls=TLSv1\.3 cipher=[^ ]+ verified=no policy=dane reply=\"TLS handshake: [^\"]*alert internal error\""
	nothing_stored smt.test
	# verified=no: the chain matched, but the handshake never ended (the server did not prove its key)
	# under tls = may the same server gets the message in plaintext (t_interop.sh): not under DANE
	assert_eq "OpenSMTPD sessions (no plaintext retry)" 1 "$(case_log "$SMLOG" | grep -c 'smtp connected')"
}
run_case "OpenSMTPD whose STARTTLS handshake fails, DANE: deferred, no plaintext retry" t_sm_badtls

# (d) ---------------------------------------------------------------------------

t_bogus() {
	local f d a
	for f in "$PFLOG" "$EXLOG" "$SMLOG"; do
		log_mark "$f"
	done
	msg "$CASE_DIR/m.eml" "DANE, bogus TLSA"
	send --from "$FROM" --to u@pfbog.test --to u@exbog.test --to u@smbog.test "$CASE_DIR/m.eml"
	expect_rc 75
	for d in "pf $A_PF" "ex $A_EX" "sm $A_SMT"; do
		a=${d#* }
		d=${d%% *}
		expect_line "u@${d}bog.test" "deferred 451 4\.7\.5 $(mx "bog.$d.test" "$a") $PLAIN policy=dane-fail reply=\"TLSA lookup for bog\.$d\.test failed[^\"]*\""
	done
	sleep 0.5
	assert_eq "Postfix: no connection" "" "$(case_log "$PFLOG" | grep -E 'connect from' )"
	assert_no_match "Exim: no connection" 'SMTP connection from' "$(case_log "$EXLOG")"
	assert_no_match "OpenSMTPD: no connection" 'smtp connected' "$(case_log "$SMLOG")"
}
run_case "TLSA records with a broken signature (bogus) for Postfix, Exim, OpenSMTPD: deferred 4.7.5, none contacted" t_bogus

integ_finish
