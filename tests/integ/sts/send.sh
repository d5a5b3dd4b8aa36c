#!/usr/bin/env bash
# tests/integ/sts/send.sh, part of t_sts.sh: TLS policy in delivery
# (DESIGN.md "TLS policy") with `mxsend
# send`: MTA-STS enforce/testing/none as discovered through real DNS (unbound)
# and a real HTTPS policy server (nginx), and the per-domain on_tls_failure
# rules without MTA-STS, against mxsink processes on loopback.
#
# Addresses: unbound 127.0.69.53 (a second one, 127.0.69.54, for the policy
# change case), nginx 127.0.70.1 (private port; every mta-sts.D.test resolves
# there), one mxsink per case on 127.0.60.x / 127.0.61.x / 127.0.62.x (all on
# SINK_PORT), so a case can say "this sink got nothing" without racing the
# others. The cases run in parallel (run_case_bg); whole file: a few seconds.
#
# Not covered here: the policy cache across restarts (it lives in `mxsend run`
# with Redis; `send` is one-shot, its cache is per process), and the broken-TLS
# host memory across deliveries (per process as well).
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/../lib.sh"

# Domains whose policy nginx serves (mta-sts.D.test -> 127.0.70.1).
STS_DOMAINS=(enf-ok enf-wrong enf-strip enf-prune enf-nomatch tst-wrong redir p404 ptype chg pnone
	enf-bounce enf-next enf-none enf-sh)
# Every name a case verifies must be in the certificate (OpenSSL never matches
# the *.test SAN): the MX hosts that should verify, and every mta-sts.D.test.
names=(mx1.enf-ok.test mx1.enf-prune.test evil.enf-prune.test evil.enf-nomatch.test
	mx1.enf-strip.test mx2.fb-next.test mx1.chg.test mx2.enf-next.test mx1.enf-none.test)
for d in "${STS_DOMAINS[@]}"; do names+=("mta-sts.$d.test"); done
integ_setup "${names[@]}"
integ_require mxsend mxsink unbound unbound-checkconf nginx perl ss timeout

FROM=sender@client.test
P=$SINK_PORT
DNS_MAIN_ADDR=127.0.69.53
DNS_CHG_ADDR=127.0.69.54
HTTPS_ADDR=127.0.70.1
NGINX_PORT=$(integ_port) || integ_missing "no free port"

# --- DNS --------------------------------------------------------------------------
# sts_zone D ID: the MTA-STS records of D.test (TXT id ID, policy host at nginx).
sts_zone() {
	echo "_mta-sts.$1.test. TXT \"v=STSv1; id=$2\""
	echo "mta-sts.$1.test. A $HTTPS_ADDR"
}
ZONE=$INTEG_DIR/zone.txt
{
	cat <<'EOF'
; 1. enforce, everything right
enf-ok.test. MX 10 mx1.enf-ok.test.
mx1.enf-ok.test. A 127.0.60.1
; 2. enforce, certificate for another name
enf-wrong.test. MX 10 mx1.enf-wrong.test.
mx1.enf-wrong.test. A 127.0.60.2
; 3. enforce, STARTTLS stripped
enf-strip.test. MX 10 mx1.enf-strip.test.
mx1.enf-strip.test. A 127.0.60.3
; 4. enforce, MX 10 not in the policy (valid certificate all the same), MX 20 in it
enf-prune.test. MX 10 evil.enf-prune.test.
enf-prune.test. MX 20 mx1.enf-prune.test.
evil.enf-prune.test. A 127.0.60.4
mx1.enf-prune.test. A 127.0.60.5
; 4b. enforce, the only MX is not in the policy
enf-nomatch.test. MX 10 evil.enf-nomatch.test.
evil.enf-nomatch.test. A 127.0.60.6
; 5. testing, certificate for another name
tst-wrong.test. MX 10 mx1.tst-wrong.test.
mx1.tst-wrong.test. A 127.0.60.7
; 6. policy URL redirects; 7. 404, text/html; 9. mode none (all: wrong certificate)
redir.test. MX 10 mx1.redir.test.
mx1.redir.test. A 127.0.60.8
p404.test. MX 10 mx1.p404.test.
mx1.p404.test. A 127.0.60.9
ptype.test. MX 10 mx1.ptype.test.
mx1.ptype.test. A 127.0.60.10
pnone.test. MX 10 mx1.pnone.test.
mx1.pnone.test. A 127.0.60.12
; 12. SERVFAIL on the _mta-sts TXT lookup (wrong certificate)
sf.test. MX 10 mx1.sf.test.
mx1.sf.test. A 127.0.60.13
servfail _mta-sts.sf.test
; 10. on_tls_failure without MTA-STS (no TXT records)
fb-defer.test. MX 10 mx1.fb-defer.test.
mx1.fb-defer.test. A 127.0.61.1
fb-bounce.test. MX 10 mx1.fb-bounce.test.
mx1.fb-bounce.test. A 127.0.61.2
fb-hold.test. MX 10 mx1.fb-hold.test.
mx1.fb-hold.test. A 127.0.61.3
fb-next.test. MX 10 mx1.fb-next.test.
fb-next.test. MX 20 mx2.fb-next.test.
mx1.fb-next.test. A 127.0.61.4
mx2.fb-next.test. A 127.0.61.5
fb-plain.test. MX 10 mx1.fb-plain.test.
mx1.fb-plain.test. A 127.0.61.6
; 2b. enforce, wrong certificate, on_tls_failure = bounce in the domain rule
enf-bounce.test. MX 10 mx1.enf-bounce.test.
mx1.enf-bounce.test. A 127.0.62.1
; 4c. enforce ("mx: *.enf-next.test"), MX 10 wrong certificate, MX 20 verified
enf-next.test. MX 10 mx1.enf-next.test.
enf-next.test. MX 20 mx2.enf-next.test.
mx1.enf-next.test. A 127.0.62.2
mx2.enf-next.test. A 127.0.62.3
; 13. enforce, but the domain rule says tls = none
enf-none.test. MX 10 mx1.enf-none.test.
mx1.enf-none.test. A 127.0.62.4
; 14. one MX host (wrong certificate) for a domain without policy and an enforce one
may-sh.test. MX 10 mx1.sh.test.
enf-sh.test. MX 10 mx1.sh.test.
mx1.sh.test. A 127.0.62.5
EOF
	for d in "${STS_DOMAINS[@]}"; do
		[ "$d" = chg ] || sts_zone "$d" 1 # chg.test: the second unbound
	done
} >"$ZONE"
# 8. the policy change: its own unbound, started again with a new TXT id
chg_zone() { # ID
	echo "chg.test. MX 10 mx1.chg.test."
	echo "mx1.chg.test. A 127.0.60.11"
	sts_zone chg "$1"
}
chg_zone 1 >"$INTEG_DIR/zone-chg1.txt"
chg_zone 2 >"$INTEG_DIR/zone-chg2.txt"

start_unbound -a "$DNS_CHG_ADDR" -n chg1 "$INTEG_DIR/zone-chg1.txt" || integ_missing "unbound (chg) did not start"
DNS_CHG1=$DNS
start_unbound -a "$DNS_MAIN_ADDR" "$ZONE" || integ_missing "unbound did not start"

# --- SMTP sinks: one per case ------------------------------------------------------
WRONG=(--cert "$CERTS/wrong.pem" --key "$CERTS/wrong.key")
if [ -x "$MXSINK" ] && [ -s "$CA" ]; then
	while read -r name addr args; do
		# shellcheck disable=SC2086 # args: word splitting wanted
		case $args in
		wrong) set -- "${WRONG[@]}" ;;
		*) set -- $args ;;
		esac
		start_sink "$name" --listen "$addr:$P" "$@" || integ_missing "sink $name"
	done <<'EOF'
enf-ok 127.0.60.1
enf-wrong 127.0.60.2 wrong
enf-strip 127.0.60.3 --no-starttls
prune-evil 127.0.60.4
prune-mx1 127.0.60.5
nomatch-evil 127.0.60.6
tst-wrong 127.0.60.7 wrong
redir 127.0.60.8 wrong
p404 127.0.60.9 wrong
ptype 127.0.60.10 wrong
chg 127.0.60.11 wrong
pnone 127.0.60.12 wrong
sf 127.0.60.13 wrong
fb-defer 127.0.61.1 --no-starttls
fb-bounce 127.0.61.2 --no-starttls
fb-hold 127.0.61.3 --no-starttls
fb-next1 127.0.61.4 --no-starttls
fb-next2 127.0.61.5
fb-plain 127.0.61.6 --tls-fail
enf-bounce 127.0.62.1 wrong
enf-next1 127.0.62.2 wrong
enf-next2 127.0.62.3
enf-none 127.0.62.4
sh 127.0.62.5 wrong
EOF
	set --
fi

# --- nginx: the policies ---------------------------------------------------------------
WWW=$INTEG_DIR/nginx/www
# policy_file D: the file nginx serves as D.test's policy.
policy_file() {
	echo "$WWW/mta-sts.$1.test/.well-known/mta-sts.txt"
}
# put_policy D MODE [MX...]: write D.test's policy.
put_policy() {
	local d=$1 mode=$2 m
	shift 2
	mkdir -p "$WWW/mta-sts.$d.test/.well-known"
	{
		printf 'version: STSv1\nmode: %s\n' "$mode"
		for m in "$@"; do printf 'mx: %s\n' "$m"; done
		printf 'max_age: 86400\n'
	} >"$(policy_file "$d")"
}
write_policies() {
	put_policy enf-ok enforce mx1.enf-ok.test
	put_policy enf-wrong enforce mx1.enf-wrong.test
	put_policy enf-strip enforce mx1.enf-strip.test
	put_policy enf-prune enforce mx1.enf-prune.test
	put_policy enf-nomatch enforce mx1.enf-nomatch.test
	put_policy tst-wrong testing mx1.tst-wrong.test
	# 6./7.: what would apply if the answer were followed or taken
	put_policy redir enforce mx1.redir.test
	put_policy ptype enforce mx1.ptype.test
	put_policy chg enforce mx1.chg.test
	put_policy pnone none
	put_policy enf-bounce enforce mx1.enf-bounce.test
	put_policy enf-next enforce '*.enf-next.test'
	put_policy enf-none enforce mx1.enf-none.test
	put_policy enf-sh enforce mx1.sh.test
}

# policy_server: the policies (files under $WWW/$host), then nginx (lib.sh's
# start_nginx: one foreground process on HTTPS_ADDR:NGINX_PORT, access log
# '$host "$request" $status', a default server answering 421).
policy_server() {
	write_policies
	mkdir -p "$WWW/mta-sts.redir.test/elsewhere"
	cp "$(policy_file redir)" "$WWW/mta-sts.redir.test/elsewhere/mta-sts.txt"
	start_nginx "" <<EOF
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.enf-ok.test mta-sts.enf-wrong.test mta-sts.enf-strip.test
			mta-sts.enf-prune.test mta-sts.enf-nomatch.test mta-sts.tst-wrong.test
			mta-sts.chg.test mta-sts.pnone.test mta-sts.enf-bounce.test mta-sts.enf-next.test
			mta-sts.enf-none.test mta-sts.enf-sh.test;
		root $WWW/\$host;
	}
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.redir.test;
		# to a server that would answer with a valid policy: still no policy
		return 301 https://mta-sts.redir.test:$NGINX_PORT/elsewhere/mta-sts.txt;
	}
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.p404.test;
		root $WWW/nonexistent;
	}
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.ptype.test;
		root $WWW/\$host;
		types { text/html txt; }
	}
EOF
}
if [ -s "$CA" ] && command -v nginx >/dev/null 2>&1; then
	policy_server || integ_missing "nginx did not start"
fi

# --- configs ---------------------------------------------------------------------------
COMMON=$(
	cat <<EOF
[tls]
sts_https_port = $NGINX_PORT

$(integ_timeouts)

[domain fb-defer.test]
tls = encrypt
on_tls_failure = defer

[domain fb-bounce.test]
tls = encrypt
on_tls_failure = bounce

[domain fb-hold.test]
tls = encrypt
on_tls_failure = hold

[domain fb-next.test]
tls = encrypt
on_tls_failure = next-mx

[domain fb-plain.test]
tls = may
on_tls_failure = plaintext

[domain enf-bounce.test]
on_tls_failure = bounce

[domain enf-none.test]
tls = none
EOF
)
CONF=$INTEG_DIR/policy.ini
integ_config "$CONF" "$COMMON"
CONF_CHG1=$INTEG_DIR/policy-chg1.ini
sed "s/^dns = .*/dns = $DNS_CHG1/" "$CONF" >"$CONF_CHG1"

# --- helpers ------------------------------------------------------------------------------

# send -c CONF ARG... (lib.sh): `mxsend send --log info -c CONF ARG...` (10 s
# bound); show_run, expect_rc, expect_line: lib.sh.
SEND_ARGS=(--log info)

# expect_field RCPT KEY VALUE: the result line of RCPT has KEY=VALUE.
expect_field() {
	local line
	line=$(grep -E -- "^$(re_escape "$1") " "$CASE_DIR/out" | head -n 1)
	[[ " $line " == *" $2=$3 "* ]] && return 0
	fail "result line for $1: expected $2=$3" "  got: $line"
	return 1
}

# mx HOST IP, expect_sink SINK KEY VALUE (lib.sh)

# expect_no_mail SINK, expect_mail SINK RCPT [ERE] (lib.sh)

# expect_fetch D STATUS: nginx answered a GET of D.test's policy with STATUS.
expect_fetch() {
	assert_match "nginx log: policy fetch for $1.test answered $2" \
		"^mta-sts\.$(re_escape "$1")\.test \"GET /\.well-known/mta-sts\.txt HTTP/1\.[01]\" $2\$" \
		"$(cat "$INTEG_DIR/nginx/access.log")"
}

TLSOK='tls=TLSv1\.[23] cipher=[A-Za-z0-9_-]+ verified=yes'
TLSBAD='tls=TLSv1\.[23] cipher=[A-Za-z0-9_-]+ verified=no'
TLSANY='tls=[^ ]+ cipher=[^ ]+ verified=(yes|no)'
PLAIN='tls=none cipher=- verified=no'
REPLY='reply="[^"]*"'
D250='delivered 250 2\.[0-9]{1,3}\.[0-9]{1,3}'
DEF='deferred 4[0-9]{2} 4\.[0-9]{1,3}\.[0-9]{1,3}'

# --- 1. enforce, all right --------------------------------------------------------------
t_enforce_ok() {
	local m=$CASE_DIR/m.eml r=u@enf-ok.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc 0
	expect_line "$r" "$D250 $(mx mx1.enf-ok.test 127.0.60.1) $TLSOK policy=sts-enforce $REPLY"
	expect_mail enf-ok "$r" '^tls=TLSv1\.[23]$'
	expect_fetch enf-ok 200
}
run_case_bg "1. enforce, verified MX in the policy: delivered, policy=sts-enforce verified=yes" t_enforce_ok

# --- 2. enforce + certificate for another name --------------------------------------------
t_enforce_wrong() {
	local m=$CASE_DIR/m.eml r=u@enf-wrong.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc 75
	expect_line "$r" "$DEF $(mx mx1.enf-wrong.test 127.0.60.2) $TLSANY policy=sts-enforce $REPLY"
	expect_field "$r" verified no
	expect_no_mail enf-wrong
	# it did reach the MX (so the deferral is the certificate's doing)
	assert_ge "sink enf-wrong connections" 1 "$(sink_stat enf-wrong connections)"
}
run_case_bg "2. enforce, certificate for another name: deferred 75, nothing delivered (not in plaintext either)" \
	t_enforce_wrong

t_enforce_bounce() {
	local m=$CASE_DIR/m.eml r=u@enf-bounce.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc 75
	expect_line "$r" "$DEF $(mx mx1.enf-bounce.test 127.0.62.1) $TLSANY policy=sts-enforce $REPLY"
	expect_no_mail enf-bounce
}
run_case_bg "2b. enforce, wrong certificate, domain rule on_tls_failure=bounce: still deferred 75 (RFC 8461 5.1)" \
	t_enforce_bounce

# --- 3. enforce + STARTTLS stripped ----------------------------------------------------------
t_enforce_strip() {
	local m=$CASE_DIR/m.eml r=u@enf-strip.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc 75
	expect_line "$r" "$DEF $(mx mx1.enf-strip.test 127.0.60.3) $PLAIN policy=sts-enforce $REPLY"
	expect_no_mail enf-strip
	assert_ge "sink enf-strip connections" 1 "$(sink_stat enf-strip connections)"
}
run_case_bg "3. enforce, STARTTLS stripped: deferred 75, nothing delivered in plaintext" t_enforce_strip

# --- 4. enforce prunes MX hosts the policy does not name -----------------------------------------
t_enforce_prune() {
	local m=$CASE_DIR/m.eml r=u@enf-prune.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc 0
	expect_line "$r" "$D250 $(mx mx1.enf-prune.test 127.0.60.5) $TLSOK policy=sts-enforce $REPLY"
	expect_mail prune-mx1 "$r"
	expect_no_mail prune-evil
	# pruned before connecting (DESIGN: "prune non-matching MX hosts before connecting")
	expect_sink prune-evil connections 0
}
run_case_bg "4. enforce, MX 10 not in the policy: delivered via MX 20 only, MX 10 never contacted" t_enforce_prune

t_enforce_nomatch() {
	local m=$CASE_DIR/m.eml r=u@enf-nomatch.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc 75
	expect_line "$r" "$DEF mx=- $PLAIN policy=[a-z-]+ $REPLY"
	expect_no_mail nomatch-evil
	expect_sink nomatch-evil connections 0
	# the policy that caused the deferral is the one reported
	expect_field "$r" policy sts-enforce || show_run
}
run_case_bg "4b. enforce, the only MX not in the policy: deferred 75 (policy=sts-enforce), never contacted" \
	t_enforce_nomatch

t_enforce_next() {
	local m=$CASE_DIR/m.eml r=u@enf-next.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc 0
	expect_line "$r" "$D250 $(mx mx2.enf-next.test 127.0.62.3) $TLSOK policy=sts-enforce $REPLY"
	expect_mail enf-next2 "$r"
	expect_no_mail enf-next1
	assert_ge "sink enf-next1 connections (MX 10 was tried)" 1 "$(sink_stat enf-next1 connections)"
	# exactly one: no plaintext retry on MX 10 ([domain *] says plaintext)
	expect_sink enf-next1 connections 1
}
run_case_bg "4c. enforce (mx: *.D), MX 10 wrong certificate: no plaintext retry, delivered via MX 20 verified" \
	t_enforce_next

# --- 5. testing + bad certificate --------------------------------------------------------------
t_testing_wrong() {
	local m=$CASE_DIR/m.eml r=u@tst-wrong.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc 0
	expect_line "$r" "$D250 $(mx mx1.tst-wrong.test 127.0.60.7) $TLSBAD policy=sts-testing $REPLY"
	expect_mail tst-wrong "$r" '^tls=TLSv1\.[23]$'
}
run_case_bg "5. testing, certificate for another name: delivered over TLS, verified=no, policy=sts-testing" \
	t_testing_wrong

# --- 6./7./9. answers that mean "no policy" ---------------------------------------------------------
t_no_policy() { # D SINK IP NGINX_STATUS
	local m=$CASE_DIR/m.eml r=u@$1.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc 0
	expect_line "$r" "$D250 $(mx "mx1.$1.test" "$3") $TLSBAD policy=may $REPLY"
	expect_mail "$2" "$r" '^tls=TLSv1\.[23]$'
	# the fetch happened: "no policy" is the answer's doing, not a missed fetch
	expect_fetch "$1" "$4"
}
run_case_bg "6. policy URL redirects (301): not followed, no policy: delivered as may to a wrong-cert MX" \
	t_no_policy redir redir 127.0.60.8 301
run_case_bg "7. policy URL answers 404: no policy: delivered as may to a wrong-cert MX" \
	t_no_policy p404 p404 127.0.60.9 404
run_case_bg "7b. policy served as text/html: no policy: delivered as may to a wrong-cert MX" \
	t_no_policy ptype ptype 127.0.60.10 200
run_case_bg "9. mode: none: no policy: delivered as may to a wrong-cert MX" \
	t_no_policy pnone pnone 127.0.60.12 200

# --- 8. a policy change reaches delivery through a new id ---------------------------------------
# Each `send` is a new process with an empty policy cache, so this shows the
# changed policy is what the next delivery applies, not that a cached policy
# is replaced on an id change (that needs one long-lived process: `mxsend run`).
t_policy_change() {
	local m=$CASE_DIR/m.eml r1=u1@chg.test r2=u2@chg.test c2=$CASE_DIR/chg2.ini
	msg "$m" policy
	send -c "$CONF_CHG1" --from "$FROM" --to "$r1" "$m"
	expect_rc 75
	expect_line "$r1" "$DEF $(mx mx1.chg.test 127.0.60.11) $TLSANY policy=sts-enforce $REPLY"
	expect_no_mail chg
	# the domain moves to testing: new policy, new id, unbound restarted with it
	put_policy chg testing mx1.chg.test
	stop_proc unbound.chg1
	start_unbound -a "$DNS_CHG_ADDR" -n chg2 "$INTEG_DIR/zone-chg2.txt" || fail "unbound (chg2) did not start" || return 1
	assert_match "the restarted unbound answers" 'rcode=NOERROR ancount=1' "$(dns_query _mta-sts.chg.test TXT)"
	sed "s/^dns = .*/dns = $DNS/" "$CONF" >"$c2"
	send -c "$c2" --from "$FROM" --to "$r2" "$m"
	expect_rc 0
	expect_line "$r2" "$D250 $(mx mx1.chg.test 127.0.60.11) $TLSBAD policy=sts-testing $REPLY"
	expect_mail chg "$r2"
	expect_sink chg messages 1
}
run_case_bg "8. enforce (id=1) defers to a wrong-cert MX; after the change to testing (id=2): delivered" \
	t_policy_change

# --- 10. on_tls_failure without MTA-STS -----------------------------------------------------------------
t_fb_simple() { # D ACTION RC STATUS_ERE
	local m=$CASE_DIR/m.eml r=u@$1.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc "$3"
	expect_line "$r" "$4 $(mx "mx1.$1.test" "127.0.61.$5") $PLAIN policy=encrypt $REPLY"
	expect_no_mail "$1"
	assert_ge "sink $1 connections" 1 "$(sink_stat "$1" connections)"
}
run_case_bg "10a. tls=encrypt, no STARTTLS, on_tls_failure=defer: deferred 75" \
	t_fb_simple fb-defer defer 75 "$DEF" 1
run_case_bg "10b. tls=encrypt, no STARTTLS, on_tls_failure=bounce: bounced 550 5.7.10, exit 69" \
	t_fb_simple fb-bounce bounce 69 'bounced 550 5\.7\.10' 2
# sender/cmd/send.c counts DELIVER_HELD with the deferred (exit 75) and prints "held".
run_case_bg "10c. tls=encrypt, no STARTTLS, on_tls_failure=hold: held (4xx), exit 75" \
	t_fb_simple fb-hold hold 75 'held 4[0-9]{2} 4\.[0-9]{1,3}\.[0-9]{1,3}' 3

t_fb_next() {
	local m=$CASE_DIR/m.eml r=u@fb-next.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc 0
	expect_line "$r" "$D250 $(mx mx2.fb-next.test 127.0.61.5) $TLSANY policy=encrypt $REPLY"
	expect_field "$r" tls TLSv1.3 || expect_field "$r" tls TLSv1.2
	expect_mail fb-next2 "$r" '^tls=TLSv1\.[23]$'
	expect_no_mail fb-next1
	assert_ge "sink fb-next1 connections (MX 10 was tried first)" 1 "$(sink_stat fb-next1 connections)"
}
run_case_bg "10d. tls=encrypt, MX 10 without STARTTLS, on_tls_failure=next-mx: delivered via MX 20 over TLS" t_fb_next

t_fb_plain() {
	local m=$CASE_DIR/m.eml r=u@fb-plain.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc 0
	expect_line "$r" "$D250 $(mx mx1.fb-plain.test 127.0.61.6) $PLAIN policy=may $REPLY"
	expect_mail fb-plain "$r" '^tls=none$'
	# a TLS attempt that failed, then the plaintext session on the same host
	expect_sink fb-plain connections 2
	expect_sink fb-plain messages 1
}
run_case_bg "10e. tls=may, on_tls_failure=plaintext, broken handshake: delivered in plaintext on a second connection" \
	t_fb_plain

# --- 11. an invalid combination in one section -----------------------------------------------------------
t_bad_combo() { # FIRST SECOND
	local m=$CASE_DIR/m.eml c=$CASE_DIR/combo.ini line
	msg "$m" policy
	integ_config "$c" "$(printf '[domain combo.test]\n%s\n%s\n' "$1" "$2")"
	line=$(grep -nxF -- "$2" "$c" | cut -d: -f1)
	send -c "$c" --from "$FROM" --to u@fb-defer.test "$m"
	expect_rc 78
	assert_eq "stdout" "" "$(cat "$CASE_DIR/out")"
	assert_match "stderr names file:line of the offending key" \
		"$(re_escape "$c"):$line: .*plaintext.*" "$(cat "$CASE_DIR/err")"
}
run_case_bg "11. tls=verify with on_tls_failure=plaintext in one section: exit 78, file:line" \
	t_bad_combo 'tls = verify' 'on_tls_failure = plaintext'
run_case_bg "11b. the same, keys in the other order (and encrypt): exit 78, file:line" \
	t_bad_combo 'on_tls_failure = plaintext' 'tls = encrypt'

# --- 12. SERVFAIL on the TXT lookup, nothing cached ---------------------------------------------------------
t_txt_servfail() {
	local m=$CASE_DIR/m.eml r=u@sf.test
	msg "$m" policy
	assert_match "unbound answers SERVFAIL for _mta-sts.sf.test" 'rcode=SERVFAIL' \
		"$(dns_query _mta-sts.sf.test TXT)"
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc 0
	expect_line "$r" "$D250 $(mx mx1.sf.test 127.0.60.13) $TLSBAD policy=may $REPLY"
	expect_mail sf "$r"
	assert_lt "elapsed ms" 5000 "$RUN_MS"
}
run_case_bg "12. SERVFAIL on _mta-sts TXT with nothing cached: no policy, delivered as may" t_txt_servfail

# --- 13. a domain rule cannot switch TLS off for an enforce domain -------------------------------------
# DESIGN: "the stricter of config, job and discovered policy applies";
# "Never: deliver in plaintext to an MTA-STS enforce domain".
t_enforce_rule_none() {
	local m=$CASE_DIR/m.eml r=u@enf-none.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r" "$m"
	expect_rc 0
	expect_line "$r" "$D250 $(mx mx1.enf-none.test 127.0.62.4) $TLSOK policy=sts-enforce $REPLY"
	expect_mail enf-none "$r" '^tls=TLSv1\.[23]$'
}
run_case_bg "13. enforce domain with a domain rule tls=none: the policy wins, delivered over verified TLS" \
	t_enforce_rule_none

# --- 14. one MX host for a domain without policy and an enforce domain, one process ---------------------
t_shared_mx() {
	local m=$CASE_DIR/m.eml r1=u@may-sh.test r2=u@enf-sh.test
	msg "$m" policy
	send -c "$CONF" --from "$FROM" --to "$r1" --to "$r2" "$m"
	expect_rc 75
	expect_line "$r1" "$D250 $(mx mx1.sh.test 127.0.62.5) $TLSBAD policy=may $REPLY"
	expect_line "$r2" "$DEF $(mx mx1.sh.test 127.0.62.5) $TLSANY policy=sts-enforce $REPLY"
	expect_mail sh "$r1"
	expect_sink sh messages 1
	expect_sink sh recipients 1
}
run_case_bg "14. shared MX, may domain and enforce domain in one send: no connection or session carried over" \
	t_shared_mx

integ_finish
