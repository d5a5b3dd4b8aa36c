#!/usr/bin/env bash
# tests/integ/sts/check.sh, part of t_sts.sh: MTA-STS policy fetching over
# HTTPS (sender/policy/https.c) and `mxsend
# check`, against real unbound, nginx and mxsink processes on loopback.
# One nginx (127.0.44.1, private port) serves the policy of every test domain
# by name (SNI + Host): a good policy (CRLF, charset parameter), a chunked one
# (echo module), one of exactly 64 KiB, a redirect, a 404, a wrong media type,
# a body over 64 KiB, a certificate for another name, an expired certificate,
# an invalid policy, a slow server. `openssl s_server -WWW` (127.0.44.2, same
# port) answers HTTP/1.0 with a body that ends at close. Whole file: seconds.
# MXSEND_BIN=path runs another mxsend binary (one with `check` wired in).
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/../lib.sh"

STS_DOMAINS=(sts-ok sts-chunked sts-64k sts-redir sts-404 sts-type sts-big sts-cert sts-expired
	sts-mismatch sts-none sts-badpolicy sts-slow sts-close)
names=(mx1.test mx3.test mx4.test)
for d in "${STS_DOMAINS[@]}"; do names+=("mta-sts.$d.test"); done
integ_setup "${names[@]}"
integ_require mxsend mxsink unbound unbound-checkconf nginx openssl perl ss timeout
[ -n "${MXSEND_BIN:-}" ] && MXSEND=$MXSEND_BIN
if [ -x "$MXSEND" ] && ! "$MXSEND" check --help >/dev/null 2>&1; then
	integ_missing "mxsend check (not wired into main.c; MXSEND_BIN=... to test another binary)"
fi

P=$SINK_PORT
HTTPS_ADDR=127.0.44.1
HTTP10_ADDR=127.0.44.2
NGINX_PORT=$(integ_port) || integ_missing "no free port"
ECHO_MOD=/usr/lib/nginx/modules/ngx_http_echo_module.so
[ -f "$ECHO_MOD" ] || integ_missing "nginx echo module (libnginx-mod-http-echo)"

# --- DNS ------------------------------------------------------------------------
ZONE=$INTEG_DIR/zone.txt
{
	cat <<'EOF'
mx1.test. A 127.0.3.1
mx3.test. A 127.0.3.3
mx4.test. A 127.0.3.4
notls.test. MX 10 mx3.test.
wrongmx.test. MX 10 mx4.test.
; two MX hosts, one verified: exit 0
mixed.test. MX 10 mx4.test.
mixed.test. MX 20 mx1.test.
; two STSv1 records: invalid, no policy fetched
sts-two.test. MX 10 mx1.test.
_mta-sts.sts-two.test. TXT "v=STSv1; id=one;"
_mta-sts.sts-two.test. TXT "v=STSv1; id=two;"
; an id of 33 characters
sts-longid.test. MX 10 mx1.test.
_mta-sts.sts-longid.test. TXT "v=STSv1; id=123456789012345678901234567890123;"
EOF
	for d in "${STS_DOMAINS[@]}"; do
		echo "$d.test. MX 10 mx1.test."
		if [ "$d" = sts-close ]; then
			echo "mta-sts.$d.test. A $HTTP10_ADDR"
		else
			echo "mta-sts.$d.test. A $HTTPS_ADDR"
		fi
		echo "_mta-sts.$d.test. TXT \"v=STSv1; id=20240601T0000; ext=1\""
	done
	echo '_smtp._tls.sts-ok.test. TXT "v=spf1 -all"'
	echo '_smtp._tls.sts-ok.test. TXT "v=TLSRPTv1; rua=mailto:tlsrpt@sts-ok.test,https://report.sts-ok.test/v1"'
	echo '_smtp._tls.sts-none.test. TXT "v=TLSRPTv1; ext=1"'
} >"$ZONE"
start_unbound "$ZONE" || integ_missing "unbound did not start"

# --- SMTP sinks ------------------------------------------------------------------
if [ -x "$MXSINK" ] && [ -s "$CA" ]; then
	start_sink good --listen "127.0.3.1:$P" || integ_missing "sink good"
	start_sink notls --listen "127.0.3.3:$P" --no-starttls || integ_missing "sink notls"
	start_sink wrong --listen "127.0.3.4:$P" --cert "$CERTS/wrong.pem" --key "$CERTS/wrong.key" \
		--threads 1 || integ_missing "sink wrong"
fi

# --- nginx ----------------------------------------------------------------------
# policy_file DOMAIN: where nginx serves DOMAIN's policy from.
WWW=$INTEG_DIR/nginx/www
policy_file() {
	echo "$WWW/$1/.well-known/mta-sts.txt"
}

# write_policies: the files behind the static policies.
write_policies() {
	local d
	for d in "${STS_DOMAINS[@]}"; do mkdir -p "$WWW/$d/.well-known"; done
	printf 'version: STSv1\r\nmode: enforce\r\nmx: mx1.test\r\nmx: *.other.test\r\nmax_age: 86400\r\n' \
		>"$(policy_file sts-ok)"
	# exactly 65536 bytes: a valid policy, then unknown keys
	perl -e 'my $s = "version: STSv1\nmode: testing\nmx: mx1.test\nmax_age: 600\n";
		$s .= "x-pad: " . ("p" x 30) . "\n" while length($s) < 65000;
		print $s, "x-end: ", "e" x (65536 - length($s) - 8), "\n"' >"$(policy_file sts-64k)"
	cp "$(policy_file sts-ok)" "$(policy_file sts-type)"
	cp "$(policy_file sts-ok)" "$(policy_file sts-cert)"
	cp "$(policy_file sts-ok)" "$(policy_file sts-expired)"
	perl -e 'my $s = "version: STSv1\nmode: enforce\nmx: mx1.test\nmax_age: 600\n";
		$s .= "x-pad: " . ("p" x 60) . "\n" while length($s) <= 70000; print $s' >"$(policy_file sts-big)"
	printf 'version: STSv1\nmode: enforce\nmx: mx2.other.test\nmax_age: 86400\n' >"$(policy_file sts-mismatch)"
	printf 'version: STSv1\nmode: none\nmax_age: 86400\n' >"$(policy_file sts-none)"
	printf 'version: STSv1\nmode: enforce\nmx: mx1.test\n' >"$(policy_file sts-badpolicy)"
	printf 'version: STSv1\nmode: testing\nmx: *.test\nmax_age: 120\n' >"$(policy_file sts-close)"
}

# policy_server: the policies, then nginx (lib.sh's start_nginx: one foreground
# process on HTTPS_ADDR:NGINX_PORT, a default server answering 421) with a
# server block per kind of answer.
policy_server() {
	local d
	write_policies
	# \$host below is for nginx: the server block serves mta-sts.D.test from $WWW/mta-sts.D.test
	for d in sts-ok sts-64k sts-big sts-mismatch sts-none sts-badpolicy; do
		ln -sfn "$WWW/$d" "$WWW/mta-sts.$d.test"
	done
	start_nginx "load_module $ECHO_MOD;" <<EOF
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.sts-ok.test mta-sts.sts-64k.test mta-sts.sts-big.test
			mta-sts.sts-mismatch.test mta-sts.sts-none.test mta-sts.sts-badpolicy.test;
		root $WWW/\$host;
		charset utf-8;
	}
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.sts-chunked.test;
		location = /.well-known/mta-sts.txt {
			default_type text/plain;
			echo "version: STSv1";
			echo "mode: enforce";
			echo_flush;
			echo "mx: mx1.test";
			echo "max_age: 3600";
		}
	}
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.sts-slow.test;
		location = /.well-known/mta-sts.txt {
			default_type text/plain;
			echo_sleep 10;
			echo "version: STSv1";
		}
	}
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.sts-redir.test;
		return 301 https://mta-sts.sts-ok.test:$NGINX_PORT/.well-known/mta-sts.txt;
	}
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.sts-404.test;
		root $WWW/nonexistent;
	}
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.sts-type.test;
		root $WWW/sts-type;
		types { text/html txt; }
	}
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.sts-cert.test;
		ssl_certificate $CERTS/wrong.pem;
		ssl_certificate_key $CERTS/wrong.key;
		root $WWW/sts-cert;
	}
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.sts-expired.test;
		ssl_certificate $CERTS/expired.pem;
		ssl_certificate_key $CERTS/expired.key;
		root $WWW/sts-expired;
	}
EOF
}
# start_s_server: `openssl s_server -WWW` serving $WWW/sts-close on
# HTTP10_ADDR:NGINX_PORT (one connection at a time; HTTP/1.0, no length).
start_s_server() {
	local dir=$INTEG_DIR/s_server i fd
	mkdir -p "$dir"
	# shellcheck disable=SC2016 # $1.. expand in the inner sh
	integ_spawn s_server "$dir/log" sh -c 'cd "$1" && exec openssl s_server -quiet -WWW \
		-accept "$2" -cert "$3/server.pem" -key "$3/server.key"' sh "$WWW/sts-close" \
		"$HTTP10_ADDR:$NGINX_PORT" "$CERTS"
	for ((i = 0; i < 50; i++)); do
		kill -0 "$SPAWN_PID" 2>/dev/null || break
		if { exec {fd}<>"/dev/tcp/$HTTP10_ADDR/$NGINX_PORT"; } 2>/dev/null; then
			exec {fd}<&-
			return 0
		fi
		sleep 0.1
	done
	echo "start_s_server: not listening:" >&2
	tail -n 5 "$dir/log" >&2
	return 1
}
if [ -s "$CA" ] && command -v nginx >/dev/null 2>&1 && [ -f "$ECHO_MOD" ]; then
	policy_server || integ_missing "nginx did not start"
	start_s_server || integ_missing "openssl s_server did not start"
fi

CONF=$INTEG_DIR/check.ini
integ_config "$CONF" $'[timeouts]\nconnect = 2s\nbanner = 5s\nhelo = 5s\nstarttls = 5s\nquit = 2s'

# --- helpers --------------------------------------------------------------------

# check ARG...: `mxsend check -c CONF --https-port NGINX_PORT ARG...` (30 s
# bound); stdout in $CASE_DIR/out, stderr in $CASE_DIR/err; RUN_RC, RUN_MS.
check() {
	timed_run 30 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" check -c "$CONF" --https-port "$NGINX_PORT" "$@"
}

# show_run, expect_rc (lib.sh): for `mxsend check`
SHOW_RUN_CMD="mxsend check"
SHOW_RUN_OUT=40
SHOW_RUN_ERR=10

# expect_out (lib.sh): some stdout line matches ERE.

# expect_no_out ERE: no stdout line matches ERE.
expect_no_out() {
	grep -Eq -- "$1" "$CASE_DIR/out" || return 0
	fail "unexpected output line matching /$1/"
	show_run
	return 1
}

# json_get PATH: print the value at PATH (perl expression on $j, e.g.
# '{mta_sts}{fetch}{result}') of the JSON in $CASE_DIR/out; "null" for undef,
# 1/0 for booleans; exit 1 if stdout is not JSON.
json_get() {
	perl -MJSON::PP -e 'local $/; my $j = eval { JSON::PP->new->decode(<STDIN>) } or exit 1;
		my $v = eval "\$j->$ARGV[0]"; print defined($v) ? (ref($v) eq "JSON::PP::Boolean" ? ($v ? 1 : 0) : $v) : "null"' \
		"$1" <"$CASE_DIR/out"
}

# expect_json PATH VALUE
expect_json() {
	local v
	v=$(json_get "$1") || {
		fail "stdout is not JSON"
		show_run
		return 1
	}
	[ "$v" = "$2" ] && return 0
	fail "JSON $1: expected '$2', got '$v'"
	show_run
	return 1
}

FETCH_LINE='^mta-sts url=https://mta-sts\.'

# --- 1. a good policy ------------------------------------------------------------
t_ok_text() {
	check sts-ok.test
	expect_rc 0
	expect_out '^domain sts-ok\.test$'
	expect_out '^mx status=ok hosts=1 implicit=no dnssec=insecure$'
	expect_out "^mx host=mx1\.test pref=10 addr=127\.0\.3\.1 port=$P probe=ok starttls=yes tls=TLSv1\.[23] cipher=[^ ]+ verified=yes verify=\"ok\" cn=\"[^\"]*\" expires=[0-9-]+T[0-9:]+Z days=(9|10) sts=allowed dnssec=insecure dane=none$"
	expect_out '^mta-sts txt=ok id=20240601T0000 record="v=STSv1; id=20240601T0000; ext=1"$'
	expect_out "${FETCH_LINE}sts-ok\.test:$NGINX_PORT/\.well-known/mta-sts\.txt fetch=ok status=200 bytes=$(stat -c %s "$(policy_file sts-ok)") policy=ok mode=enforce max_age=86400 mx=mx1\.test,\*\.other\.test$"
	expect_out '^tlsrpt txt=ok rua=mailto:tlsrpt@sts-ok\.test,https://report\.sts-ok\.test/v1$'
	expect_out '^result exit=0 summary="receives mail over verified TLS"$'
}
run_case "check: good policy (CRLF, charset=utf-8), verified MX, TLSRPT rua; exit 0" t_ok_text

t_ok_json() {
	check --json sts-ok.test
	expect_rc 0
	expect_json '{domain}' sts-ok.test
	expect_json '{mx}{status}' ok
	expect_json '{mx}{hosts}[0]{host}' mx1.test
	expect_json '{mx}{hosts}[0]{port}' "$P"
	expect_json '{mx}{hosts}[0]{starttls}' 1
	expect_json '{mx}{hosts}[0]{tls}{verified}' 1
	expect_json '{mx}{hosts}[0]{tls}{verify}' ok
	expect_json '{mx}{hosts}[0]{sts_allowed}' 1
	expect_json '{mta_sts}{txt}' ok
	expect_json '{mta_sts}{id}' 20240601T0000
	expect_json '{mta_sts}{fetch}{result}' ok
	expect_json '{mta_sts}{fetch}{status}' 200
	expect_json '{mta_sts}{fetch}{content_type}' 'text/plain; charset=utf-8'
	expect_json '{mta_sts}{fetch}{tlsrpt_result}' null
	expect_json '{mta_sts}{policy}{mode}' enforce
	expect_json '{mta_sts}{policy}{max_age}' 86400
	expect_json '{mta_sts}{policy}{mx}[1]' '*.other.test'
	expect_json '{tlsrpt}{txt}' ok
	expect_json '{tlsrpt}{rua}[0]' mailto:tlsrpt@sts-ok.test
	expect_json '{exit}' 0
	local days
	days=$(json_get '{mx}{hosts}[0]{tls}{days_left}')
	assert_ge "days_left of a 10-day certificate" 9 "$days"
	assert_lt "days_left of a 10-day certificate" 11 "$days"
}
run_case "check --json: the same facts as JSON" t_ok_json

t_chunked() {
	check --json sts-chunked.test
	expect_rc 0
	expect_json '{mta_sts}{fetch}{result}' ok
	expect_json '{mta_sts}{policy}{mode}' enforce
	expect_json '{mta_sts}{policy}{max_age}' 3600
	expect_json '{mta_sts}{policy}{mx}[0]' mx1.test
	# the same request by hand: the answer really is chunked
	local raw
	raw=$(printf 'GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.sts-chunked.test\r\nConnection: close\r\n\r\n' |
		timeout 5 openssl s_client -quiet -connect "$HTTPS_ADDR:$NGINX_PORT" \
			-servername mta-sts.sts-chunked.test -CAfile "$CA" 2>/dev/null | tr -d '\r')
	assert_match "nginx answers with Transfer-Encoding: chunked" '^Transfer-Encoding: chunked$' "$raw"
	assert_no_match "and without Content-Length" '^Content-Length:' "$raw"
}
run_case "https: chunked transfer coding (nginx echo module)" t_chunked

t_64k() {
	check --json sts-64k.test
	expect_rc 0
	expect_json '{mta_sts}{fetch}{result}' ok
	expect_json '{mta_sts}{fetch}{bytes}' 65536
	expect_json '{mta_sts}{policy}{mode}' testing
}
run_case "https: a body of exactly 64 KiB is accepted" t_64k

t_close() {
	check --json sts-close.test
	expect_rc 0
	expect_json '{mta_sts}{fetch}{result}' ok
	expect_json '{mta_sts}{fetch}{content_type}' text/plain
	expect_json '{mta_sts}{fetch}{bytes}' "$(stat -c %s "$(policy_file sts-close)")"
	expect_json '{mta_sts}{policy}{mode}' testing
	expect_json '{mta_sts}{policy}{mx}[0]' '*.test'
	expect_json '{mx}{hosts}[0]{sts_allowed}' 1
}
run_case "https: HTTP/1.0 body delimited by close (openssl s_server)" t_close

# --- 2. fetch failures --------------------------------------------------------------
t_fetch_fail() { # DOMAIN RESULT TLSRPT WHY_ERE
	check "$1"
	expect_rc 0 # the MX itself is fine; a failed fetch means no policy
	expect_out "${FETCH_LINE}$(re_escape "$1"):$NGINX_PORT/\.well-known/mta-sts\.txt fetch=$2 status=[0-9]+ tlsrpt=$3 why=\"$4\"$"
	expect_no_out ' sts=(allowed|not-allowed)'
	check --json "$1"
	expect_json '{mta_sts}{fetch}{result}' "$2"
	expect_json '{mta_sts}{fetch}{tlsrpt_result}' "$3"
	expect_json '{mta_sts}{policy}' null
}
run_case "https: redirect (301) is a failure, not followed" t_fetch_fail sts-redir.test status \
	sts-policy-fetch-error "redirect \(HTTP 301\) not followed: Location https://mta-sts\.sts-ok\.test:[0-9]+/[^\"]*"
run_case "https: 404 is a failure" t_fetch_fail sts-404.test status sts-policy-fetch-error "HTTP 404 Not Found"
run_case "https: text/html is a failure" t_fetch_fail sts-type.test content-type sts-policy-fetch-error \
	'Content-Type is \\"text/html\\", not text/plain'
run_case "https: body over 64 KiB is a failure" t_fetch_fail sts-big.test too-big sts-policy-fetch-error \
	'body larger than 65536 bytes.*'
run_case "https: certificate for another name: sts-webpki-invalid" t_fetch_fail sts-cert.test certificate \
	sts-webpki-invalid '.*certificate verify failed.*[Hh]ostname mismatch.*'
run_case "https: expired certificate: sts-webpki-invalid" t_fetch_fail sts-expired.test certificate \
	sts-webpki-invalid '.*certificate verify failed.*expired.*'

t_slow() {
	check --timeout 3 --json sts-slow.test
	expect_rc 0
	expect_json '{mta_sts}{fetch}{result}' timeout
	expect_json '{mta_sts}{fetch}{error}' 'timeout after 2000 ms waiting for the response'
	expect_json '{mta_sts}{fetch}{tlsrpt_result}' sts-policy-fetch-error
	assert_lt "elapsed ms (3 s bound)" 4500 "$RUN_MS"
}
run_case "https: a server that stalls times out within the bound" t_slow

# --- 3. policies and records ---------------------------------------------------------
t_badpolicy() {
	check sts-badpolicy.test
	expect_rc 0
	expect_out "${FETCH_LINE}sts-badpolicy\.test:$NGINX_PORT/\.well-known/mta-sts\.txt fetch=ok status=200 bytes=[0-9]+ policy=invalid tlsrpt=sts-policy-invalid why=\"missing max_age\"$"
}
run_case "invalid policy body: sts-policy-invalid" t_badpolicy

t_mismatch() {
	check sts-mismatch.test
	expect_rc 69
	expect_out '^mx host=mx1\.test .* verified=yes .* sts=not-allowed dnssec=[a-z]+ dane=[a-z]+$'
	expect_out 'policy=ok mode=enforce max_age=86400 mx=mx2\.other\.test$'
	expect_out '^result exit=69 summary="no MX host allowed by the MTA-STS policy offers verified TLS"$'
}
run_case "enforce policy that allows no MX host: exit 69" t_mismatch

t_none() {
	check --json sts-none.test
	expect_rc 0
	expect_json '{mta_sts}{policy}{mode}' none
	expect_json '{mx}{hosts}[0]{sts_allowed}' null
	expect_json '{tlsrpt}{txt}' invalid
	expect_json '{tlsrpt}{error}' 'no rua field'
}
run_case "mode none policy; TLSRPT record without rua is invalid" t_none

t_txt_invalid() { # DOMAIN WHY_ERE
	check "$1"
	expect_rc 0
	expect_out "^mta-sts txt=invalid record=\"[^\"]*\" why=\"$2\"$"
	expect_no_out "$FETCH_LINE"
}
run_case "two v=STSv1 TXT records: invalid, nothing fetched" t_txt_invalid sts-two.test 'more than one.*'
run_case "TXT id of 33 characters: invalid, nothing fetched" t_txt_invalid sts-longid.test 'id longer than 32 characters'

t_no_sts() {
	check --json mixed.test
	expect_rc 0
	expect_json '{mta_sts}{txt}' none
	expect_json '{mta_sts}{fetch}' null
	expect_json '{tlsrpt}{txt}' none
	expect_json '{mx}{hosts}[0]{host}' mx4.test
	expect_json '{mx}{hosts}[0]{tls}{verified}' 0
	expect_json '{mx}{hosts}[1]{tls}{verified}' 1
}
run_case "no MTA-STS: one MX with a bad certificate, one verified: exit 0" t_no_sts

# --- 4. MX without verified TLS, DNS failures ------------------------------------------
t_notls() {
	check notls.test
	expect_rc 69
	expect_out "^mx host=mx3\.test pref=10 addr=127\.0\.3\.3 port=$P probe=ok starttls=no tls=none dnssec=insecure dane=none$"
	expect_out '^result exit=69 summary="no MX host offers TLS with a verified certificate"$'
}
run_case "MX without STARTTLS: exit 69" t_notls

t_wrongmx() {
	check wrongmx.test
	expect_rc 69
	expect_out '^mx host=mx4\.test .* starttls=yes tls=TLSv1\.[23] cipher=[^ ]+ verified=no verify="[Hh]ostname mismatch" cn="wrong\.invalid" '
}
run_case "MX certificate for another name: verified=no, exit 69" t_wrongmx

t_dns() { # DOMAIN RC STATUS
	check "$1"
	expect_rc "$2"
	expect_out "^mx status=$3 hosts=0 "
	expect_out "^result exit=$2 "
}
run_case "SERVFAIL: exit 75" t_dns servfail.test 75 temp
run_case "NXDOMAIN: exit 69" t_dns nosuch.test 69 nxdomain

t_usage() {
	timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" check
	expect_rc 64
	timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" check --port 0 x.test
	expect_rc 64
}
run_case "usage errors: exit 64" t_usage

integ_finish
