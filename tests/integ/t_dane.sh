#!/usr/bin/env bash
# tests/integ/t_dane.sh: DANE for SMTP (RFC 7672) against a real validating
# resolver (tests/integ/dnssec.sh): test. signed per run with ldns-signzone,
# served by an authority-only unbound, validated by a second unbound whose trust
# anchor is the run's DS; insec.test. is an unsigned delegation; bogus names
# have their RRSIG corrupted. MX hosts are mxsink processes on 127.0.78.x.
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integ/dnssec.sh
. "$INTEG_LIB_DIR/dnssec.sh"

integ_setup mx1.ta.test mx1.tanx.test mta-sts.both.test
integ_require mxsend mxsink unbound unbound-checkconf ldns-keygen ldns-signzone dig perl openssl \
	redis-server redis-cli python3 nginx
HTTPS_ADDR=127.0.79.1
NGINX_PORT=$(integ_port) || integ_missing "no free port"

FROM=sender@client.test
P=$SINK_PORT
SEND_ARGS=(--log ${DANE_LOG:-info})

# Certificates beside the run's (lib.sh): nomatch.pem, self-signed for a name no
# MX has; chain.pem, server.pem with the CA behind it (DANE-TA needs the
# chain on the wire when the record is a digest of the CA).
if [ -z "$INTEG_MISSING" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-keyout "$CERTS/nomatch.key" -out "$CERTS/nomatch.pem" -subj /CN=nomatch.invalid \
		-addext subjectAltName=DNS:nomatch.invalid >"$INTEG_DIR/nomatch.log" 2>&1 ||
		integ_missing "openssl req (nomatch.pem)"
	cat "$CERTS/server.pem" "$CA" >"$CERTS/chain.pem"
fi
# tlsa_spki CERT (dnssec.sh): "3 1 1 HEX"; tlsa_ca: "2 0 1 HEX" for the run's CA.
tlsa_ca() {
	echo "2 0 1 $(openssl x509 -in "$CA" -outform DER | sha256sum | cut -c1-64)"
}

SIGNED=$INTEG_DIR/signed.txt
if [ -z "$INTEG_MISSING" ]; then
	EE=$(tlsa_spki "$CERTS/nomatch.pem")
	TA=$(tlsa_ca)
	cat >"$SIGNED" <<EOF2
sec.test. 300 IN A 127.0.78.250
bog.test. 300 IN A 127.0.78.251
; DANE-EE matching a self-signed certificate for another name
ee.test. MX 10 mx1.ee.test.
mx1.ee.test. A 127.0.78.1
_$P._tcp.mx1.ee.test. TLSA $EE
; DANE-EE mismatch at MX 10, a match at MX 20
eemis.test. MX 10 mx1.eemis.test.
eemis.test. MX 20 mx2.eemis.test.
mx1.eemis.test. A 127.0.78.2
mx2.eemis.test. A 127.0.78.3
_$P._tcp.mx1.eemis.test. TLSA $EE
_$P._tcp.mx2.eemis.test. TLSA $EE
; DANE-EE mismatch, one MX: deferred
eeone.test. MX 10 mx1.eeone.test.
mx1.eeone.test. A 127.0.78.2
_$P._tcp.mx1.eeone.test. TLSA $EE
; DANE-TA, the name in the certificate / not in it
ta.test. MX 10 mx1.ta.test.
mx1.ta.test. A 127.0.78.4
_$P._tcp.mx1.ta.test. TLSA $TA
tawrong.test. MX 10 mx1.tawrong.test.
mx1.tawrong.test. A 127.0.78.4
_$P._tcp.mx1.tawrong.test. TLSA $TA
; PKIX-EE and PKIX-TA only: unusable, TLS without authentication
unus.test. MX 10 mx1.unus.test.
mx1.unus.test. A 127.0.78.5
_$P._tcp.mx1.unus.test. TLSA 1 1 1 ${EE#3 1 1 }
_$P._tcp.mx1.unus.test. TLSA 0 0 1 ${TA#2 0 1 }
; bogus TLSA (broken RRSIG)
bog2.test. MX 10 mx1.bog2.test.
mx1.bog2.test. A 127.0.78.6
_$P._tcp.mx1.bog2.test. TLSA $EE
; STARTTLS stripped in front of a DANE host
strip.test. MX 10 mx1.strip.test.
mx1.strip.test. A 127.0.78.7
_$P._tcp.mx1.strip.test. TLSA $EE
; an MX host that is a CNAME: the TLSA at the expansion (RFC 7672 2.2.3)
alias.test. MX 10 mx1.alias.test.
mx1.alias.test. CNAME real.alias.test.
real.alias.test. A 127.0.78.8
_$P._tcp.real.alias.test. TLSA $EE
; resumption within the DANE context
res.test. MX 10 mx1.res.test.
mx1.res.test. A 127.0.78.9
_$P._tcp.mx1.res.test. TLSA $EE
res2.test. MX 10 mx1.res.test.
; a day with DANE failures: bogus TLSA at MX 10, a mismatch at MX 20, a match at MX 30
rpt.test. MX 10 mx1.bog2.test.
rpt.test. MX 20 mx1.eemis.test.
rpt.test. MX 30 mx2.eemis.test.
_smtp._tls.rpt.test. TXT "v=TLSRPTv1; rua=mailto:tls@rpt.test"
; DANE and MTA-STS (enforce, naming another host) on one domain: DANE wins
both.test. MX 10 mx1.both.test.
mx1.both.test. A 127.0.78.12
_$P._tcp.mx1.both.test. TLSA $EE
_mta-sts.both.test. TXT "v=STSv1; id=1"
mta-sts.both.test. A $HTTPS_ADDR
; one MX host reached under two contexts: DANE (secure MX) and not (insecure MX)
ctx.test. MX 10 mx1.ctx.test.
ctx2.test. MX 10 mx1.ctx.test.
mx1.ctx.test. A 127.0.78.11
_$P._tcp.mx1.ctx.test. TLSA $EE
; tls = dane-only: an MX with unusable records skipped, a DANE one used
donly.test. MX 10 mx1.unus.test.
donly.test. MX 20 mx1.ee.test.
; the TLSA lookup times out (the validator drops it): deferred like a bogus one
tmo.test. MX 10 mx1.tmo.test.
mx1.tmo.test. A 127.0.78.13
_$P._tcp.mx1.tmo.test. TLSA $EE
EOF2
	INSECURE="ins.insec.test. MX 10 mx1.insec.test.
mx1.insec.test. A 127.0.78.10
_$P._tcp.mx1.insec.test. TLSA 3 1 1 $(printf '%064d' 0)
ctx.insec.test. MX 10 mx1.ctx.test.
donly.insec.test. MX 10 mx1.insec.test."
	BOGUS="bog.test. A
_$P._tcp.mx1.bog2.test. TLSA"
	dnssec_start "$SIGNED" "$INSECURE" "$BOGUS" "local-zone: \"_$P._tcp.mx1.tmo.test.\" deny" || integ_missing "the DNSSEC set-up (tests/integ/dnssec.sh)"
fi
if [ -z "$INTEG_MISSING" ]; then
	NM=(--cert "$CERTS/nomatch.pem" --key "$CERTS/nomatch.key")
	SS=(--cert "$CERTS/selfsigned.pem" --key "$CERTS/selfsigned.key")
	start_sink ee --listen "127.0.78.1:$P" "${NM[@]}" &&
		start_sink eemis1 --listen "127.0.78.2:$P" "${SS[@]}" &&
		start_sink eemis2 --listen "127.0.78.3:$P" "${NM[@]}" &&
		start_sink ta --listen "127.0.78.4:$P" --cert "$CERTS/chain.pem" --key "$CERTS/server.key" &&
		start_sink unus --listen "127.0.78.5:$P" "${NM[@]}" &&
		start_sink bog2 --listen "127.0.78.6:$P" "${NM[@]}" &&
		start_sink strip --listen "127.0.78.7:$P" "${NM[@]}" --no-starttls &&
		start_sink alias --listen "127.0.78.8:$P" "${NM[@]}" &&
		start_sink res --listen "127.0.78.9:$P" "${NM[@]}" &&
		start_sink insec --listen "127.0.78.10:$P" "${NM[@]}" &&
		start_sink ctx --listen "127.0.78.11:$P" "${NM[@]}" &&
		start_sink both --listen "127.0.78.12:$P" "${NM[@]}" ||
		integ_missing "the sinks"
	mkdir -p "$INTEG_DIR/www/mta-sts.both.test/.well-known"
	printf 'version: STSv1\nmode: enforce\nmx: other.both.test\nmax_age: 86400\n' \
		>"$INTEG_DIR/www/mta-sts.both.test/.well-known/mta-sts.txt"
	start_nginx "" <<EOF2 || integ_missing "nginx"
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.both.test;
		root $INTEG_DIR/www/\$host;
	}
EOF2
	CONF=$INTEG_DIR/mxsend.conf
	integ_config "$CONF" "[tls]
sts_https_port = $NGINX_PORT
"'[dns]
dane = yes

[domain donly.test]
tls = dane-only

[domain donly.insec.test]
tls = dane-only

[domain strip.test]
tls = may
on_tls_failure = plaintext

[mx mx1.res.test]
max_connections = 1

[pool]
reuse_max = 1'
fi

TLSOK='tls=TLSv1\.[23] cipher=[A-Za-z0-9_-]+ verified=yes'
TLSNV='tls=TLSv1\.[23] cipher=[A-Za-z0-9_-]+ verified=no'
TLSANY='tls=[^ ]+ cipher=[^ ]+ verified=(yes|no)'
PLAIN='tls=none cipher=- verified=no'
REPLY='reply="[^"]*"'
D250='delivered 250 2\.[0-9]{1,3}\.[0-9]{1,3}'
DEF='deferred 4[0-9]{2} 4\.[0-9]{1,3}\.[0-9]{1,3}'

# deliver RCPT: one message to RCPT through `mxsend send` (the run's config).
deliver() {
	local m=$CASE_DIR/m.eml
	msg "$m"
	send -c "$CONF" --from "$FROM" --to "$1" "$m"
}
# deliver_expect RCPT RC ERE: deliver, exit status RC, RCPT's result line matches ERE.
deliver_expect() {
	deliver "$1"
	expect_rc "$2"
	expect_line "$1" "$3"
}

# The fixture itself: secure, insecure and bogus answers as a DANE sender sees them.
t_dnssec_fixture() {
	assert_eq "sec.test A" secure "$(dnssec_status sec.test A)"
	assert_eq "mx1.insec.test A (unsigned delegation)" insecure "$(dnssec_status mx1.insec.test A)"
	assert_eq "bog.test A (broken RRSIG)" bogus "$(dnssec_status bog.test A)"
	assert_eq "nx.test A (signed denial)" secure "$(dnssec_status nx.test A)"
	assert_eq "TLSA of mx1.ee.test" secure "$(dnssec_status "_$P._tcp.mx1.ee.test" TLSA)"
	assert_eq "TLSA of mx1.bog2.test" bogus "$(dnssec_status "_$P._tcp.mx1.bog2.test" TLSA)"
	assert_match "sec.test answer" '^sec\.test\..*IN[[:space:]]+A[[:space:]]+127\.0\.78\.250' \
		"$(dnssec_dig sec.test A)"
}
run_case "dnssec fixture: secure (AD), insecure delegation (no AD), bogus (SERVFAIL)" t_dnssec_fixture

t_ee_match() {
	deliver_expect u@ee.test 0 "$D250 $(mx mx1.ee.test 127.0.78.1) $TLSOK policy=dane $REPLY"
	expect_mail ee u@ee.test '^sni=mx1\.ee\.test$'
}
run_case "DANE-EE match: delivered, policy=dane, self-signed certificate for another name" t_ee_match

t_ee_mismatch_next() {
	deliver_expect u@eemis.test 0 "$D250 $(mx mx2.eemis.test 127.0.78.3) $TLSOK policy=dane $REPLY"
	expect_no_mail eemis1
	expect_sink eemis1 connections 1
	assert_match "log: the mismatch at MX 10" 'mx1\.eemis\.test.*DANE: no TLSA record matches' "$(cat "$CASE_DIR/err")"
}
run_case "DANE-EE mismatch at MX 10: not delivered there, MX 20 tried (delivered)" t_ee_mismatch_next

t_ee_mismatch_defer() {
	deliver_expect u@eeone.test 75 "$DEF $(mx mx1.eeone.test 127.0.78.2) $TLSNV policy=dane reply=\"DANE: no TLSA record matches[^\"]*\""
}
run_case "DANE-EE mismatch, one MX: deferred (not bounced, not plaintext)" t_ee_mismatch_defer

t_ta_name() {
	deliver_expect u@ta.test 0 "$D250 $(mx mx1.ta.test 127.0.78.4) $TLSOK policy=dane $REPLY"
	deliver_expect u@tawrong.test 75 "$DEF $(mx mx1.tawrong.test 127.0.78.4) $TLSNV policy=dane $REPLY"
}
run_case "DANE-TA: the MX name in the certificate delivered, another name deferred" t_ta_name

t_unusable() {
	deliver_expect u@unus.test 0 "$D250 $(mx mx1.unus.test 127.0.78.5) $TLSNV policy=dane-unusable $REPLY"
}
run_case "only PKIX-TA/PKIX-EE TLSA records: encrypted, not authenticated" t_unusable

t_insecure() {
	deliver_expect u@ins.insec.test 0 "$D250 $(mx mx1.insec.test 127.0.78.10) $TLSNV policy=may $REPLY"
}
run_case "insecure zone with a (wrong) TLSA record: ignored, delivered as tls = may" t_insecure

t_bogus() {
	deliver_expect u@bog2.test 75 "deferred 451 4\.7\.5 $(mx mx1.bog2.test 127.0.78.6) $PLAIN policy=dane-fail reply=\"TLSA lookup for [^\"]*\""
	expect_sink bog2 connections 0
}
run_case "bogus TLSA (broken signature): deferred, the host not contacted" t_bogus

t_strip() {
	deliver_expect u@strip.test 75 "$DEF $(mx mx1.strip.test 127.0.78.7) $PLAIN policy=dane $REPLY"
	expect_no_mail strip
}
run_case "STARTTLS stripped before a DANE host: deferred, never plaintext (on_tls_failure = plaintext)" t_strip

t_alias() {
	deliver_expect u@alias.test 0 "$D250 $(mx mx1.alias.test 127.0.78.8) $TLSOK policy=dane $REPLY"
	expect_mail alias u@alias.test '^sni=real\.alias\.test$'
}
run_case "MX host is a CNAME: TLSA at the expansion, SNI the TLSA base domain" t_alias

t_resume() {
	local m=$CASE_DIR/m.eml
	msg "$m"
	# two domains behind one DANE host, one connection at a time, none reused:
	# the second handshake resumes the first's session (same TLSA context)
	send -c "$CONF" --from "$FROM" --to a@res.test --to b@res2.test "$m"
	expect_rc 0
	expect_line a@res.test "$D250 $(mx mx1.res.test 127.0.78.9) $TLSOK policy=dane $REPLY"
	expect_line b@res2.test "$D250 $(mx mx1.res.test 127.0.78.9) $TLSOK policy=dane $REPLY"
	expect_sink res handshakes 2
	expect_sink res resumed 1
}
run_case "TLS resumption within the DANE context" t_resume

t_tlsrpt_day() {
	start_redis || return 1
	local conf=$CASE_DIR/rpt.conf m=$CASE_DIR/m.eml day
	{ cat "$CONF"; printf '\n[redis]\nurl = %s\n' "$REDIS_URL"; } >"$conf"
	msg "$m"
	send -c "$conf" --from "$FROM" --to u@rpt.test "$m"
	expect_rc 0
	expect_line u@rpt.test "$D250 $(mx mx2.eemis.test 127.0.78.3) $TLSOK policy=dane $REPLY"
	day=$(date -u +%F)
	timed_run 30 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" tlsrpt -c "$conf" --day "$day" \
		--timeout 10 --dry-run rpt.test
	expect_rc 0 || return 1
	# the JSON document after the "tlsrpt day=..." line
	python3 - "$CASE_DIR/out" <<'EOF3' >"$CASE_DIR/check" 2>&1 || fail "report: $(cat "$CASE_DIR/check")"
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):text.rindex("}") + 1])
pols = doc["policies"]
types = sorted(p["policy"]["policy-type"] for p in pols)
assert types == ["tlsa", "tlsa", "tlsa"], types
res, ok = {}, 0
for p in pols:
    pol = p["policy"]
    assert pol["policy-domain"] == "rpt.test", pol
    ok += p["summary"]["total-successful-session-count"]
    for f in p.get("failure-details", []):
        res[f["result-type"]] = pol.get("mx-host", [""])[0] or f.get("receiving-mx-hostname")
        if f["result-type"] == "tlsa-invalid":
            strings = pol["policy-string"]
            assert len(strings) == 1 and strings[0].startswith("3 1 1 "), strings
assert ok == 1, ok
assert res.get("dnssec-invalid") == "mx1.bog2.test", res
assert res.get("tlsa-invalid") == "mx1.eemis.test", res
EOF3
}
run_case "TLSRPT for a day with DANE failures: tlsa policies, dnssec-invalid and tlsa-invalid" t_tlsrpt_day

t_check() {
	SHOW_RUN_CMD="mxsend check"
	timed_run 20 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" check -c "$CONF" --timeout 10 ee.test
	expect_rc 0
	expect_out '^mx status=ok hosts=1 implicit=no dnssec=secure$'
	expect_out "^mx host=mx1\.ee\.test .* dnssec=secure dane=dane tlsa=\"$(re_escape "$EE")\" tlsa_match=yes tlsa_matched=\"3 1 1\" depth=0$"
	timed_run 20 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" check -c "$CONF" --timeout 10 eeone.test
	expect_out '^mx host=mx1\.eeone\.test .* dnssec=secure dane=dane tlsa="3 1 1 [0-9a-f]{64}" tlsa_match=no error="DANE: no TLSA record matches'
	timed_run 20 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" check -c "$CONF" --timeout 10 bog2.test
	expect_out '^mx host=mx1\.bog2\.test .* dnssec=secure dane=dane-fail tlsa="TLSA lookup for mx1\.bog2\.test failed'
	timed_run 20 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" check -c "$CONF" --timeout 10 ins.insec.test
	expect_out '^mx status=ok hosts=1 implicit=no dnssec=insecure$'
	expect_out '^mx host=mx1\.insec\.test .* dnssec=insecure dane=none$'
}
run_case "mxsend check: DNSSEC status, TLSA records, whether the chain matches them" t_check

t_sts_and_dane() {
	deliver_expect u@both.test 0 "$D250 $(mx mx1.both.test 127.0.78.12) $TLSOK policy=dane $REPLY"
	assert_match "the MTA-STS policy was fetched" 'mta-sts\.both\.test "GET /\.well-known/mta-sts\.txt' \
		"$(cat "$INTEG_DIR/nginx/access.log")"
}
run_case "DANE and MTA-STS enforce on one domain (the policy names another host): DANE wins" t_sts_and_dane

t_contexts() {
	local m=$CASE_DIR/m.eml conf=$CASE_DIR/ctx.conf
	msg "$m"
	# one connection at a time to the host, reused where the context allows
	{ sed '/^\[pool\]$/d; /^reuse_max/d' "$CONF"; printf '\n[mx mx1.ctx.test]\nmax_connections = 1\n'; } >"$conf"
	send -c "$conf" --from "$FROM" --to a@ctx.test --to b@ctx2.test "$m"
	expect_rc 0
	expect_sink ctx connections 1
	send -c "$conf" --from "$FROM" --to c@ctx.test --to d@ctx.insec.test "$m"
	expect_rc 0
	expect_line c@ctx.test "$D250 $(mx mx1.ctx.test 127.0.78.11) $TLSOK policy=dane $REPLY"
	expect_line d@ctx.insec.test "$D250 $(mx mx1.ctx.test 127.0.78.11) $TLSNV policy=may $REPLY"
	expect_sink ctx connections 3
	# and sessions resumed only within it (no reuse now)
	printf '\n[pool]\nreuse_max = 1\n' >>"$conf"
	send -c "$conf" --from "$FROM" --to e@ctx.test --to f@ctx.insec.test "$m"
	expect_rc 0
	expect_sink ctx connections 5
	expect_sink ctx resumed 0
}
run_case "one MX host under DANE and without: no connection reuse, no resumption across" t_contexts

t_dane_only() {
	local before
	before=$(sink_stat unus connections)
	deliver_expect u@donly.test 0 "$D250 $(mx mx1.ee.test 127.0.78.1) $TLSOK policy=dane $REPLY"
	expect_sink unus connections "$before"
	deliver_expect u@donly.insec.test 75 "deferred 451 4\.7\.5 $(mx mx1.insec.test 127.0.78.10) $PLAIN policy=dane-only reply=\"no DNSSEC-validated usable TLSA records[^\"]*\""
}
run_case "tls = dane-only: only MX hosts that TLSA records authenticate (else deferred)" t_dane_only

t_timeout() {
	deliver_expect u@tmo.test 75 "deferred 451 4\.7\.5 $(mx mx1.tmo.test 127.0.78.13) $PLAIN policy=dane-fail reply=\"TLSA lookup for mx1\.tmo\.test failed \(timeout[^\"]*\""
}
run_case "TLSA lookup timing out in a signed zone: deferred, the host not contacted" t_timeout

t_run_queue() {
	start_redis -n q || return 1
	local conf=$CASE_DIR/run.conf m=$CASE_DIR/m.eml r
	{ sed '/^\[mxsend\]$/a workers = 2' "$CONF"
	  printf '\n[redis]\nurl = %s\n\n[retry]\nschedule = 1s\njitter = 0\n' "$REDIS_URL"; } >"$conf"
	msg "$m"
	for r in q1@ee.test q2@eeone.test q3@bog2.test; do
		# deferred ones expire in 3 s (so --until-empty ends): retried once or twice first
		"$MXSEND" enqueue -c "$conf" --from "$FROM" --to "$r" --id "$r" --expires 3 "$m" \
			>>"$CASE_DIR/enqueue.out" 2>&1 ||
			fail "enqueue $r: $(cat "$CASE_DIR/enqueue.out")"
	done
	timed_run 20 "$CASE_DIR/run.out" "$CASE_DIR/run.log" "$MXSEND" run -c "$conf" --until-empty
	assert_eq "mxsend run --until-empty exit" 0 "$RUN_RC"
	r=$(results "$REDIS_PORT" rcpt,status,verified,policy,mx)
	assert_match "q1: delivered under DANE" '^q1@ee\.test\|delivered\|yes\|dane\|mx1\.ee\.test$' "$r"
	assert_match "q2: deferred, DANE mismatch" '^q2@eeone\.test\|deferred\|no\|dane\|mx1\.eeone\.test$' "$r"
	assert_match "q3: deferred, bogus TLSA" '^q3@bog2\.test\|deferred\|no\|dane-fail\|mx1\.bog2\.test$' "$r"
}
run_case "mxsend run (two workers, the queue): results carry policy=dane / dane-fail" t_run_queue

integ_finish
