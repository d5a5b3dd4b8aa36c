#!/usr/bin/env bash
# tests/integ/sts/run.sh, part of t_sts.sh: MTA-STS and TLSRPT in
# `mxsend run --until-empty` (the queue
# path), against a real redis-server, unbound, nginx (the policy server) and
# mxsink sinks on loopback:
#   1. one run delivers to an enforce domain (valid certificate) and a testing
#      domain (certificate for another name): the result stream's policy and
#      verified fields, the persisted policy (mxsend:sts:DOMAIN, with a TTL),
#      the TLSRPT counters of the UTC day (tlscache/tlsrpt.h key scheme) and
#      `mxsend tlsrpt --dry-run` reports that agree with them;
#   2. the persisted policy survives a restart: nginx stopped (no fetch can
#      succeed) and the enforce domain's MX now shows a wrong-name certificate:
#      a new process defers (policy=sts-enforce), never delivers; control: the
#      key deleted, nothing cached, nothing fetchable -> delivered policy=may;
#   3. exempt=tlsrpt skips MTA-STS only for a report `mxsend tlsrpt` queued (its
#      exempt_mac verifies): an application job asking for it stays under the
#      enforce policy (deferred, policy=sts-enforce);
#   4. the report's proof survives the queue's retries (MX down, then back).
# The cases build on each other (one redis-server, one zone), in order.
#
# Addresses: unbound 127.0.80.53, nginx 127.0.81.1 (private port; every
# mta-sts.D.test resolves there), sinks 127.0.82.1 (the enforce domain's MX)
# and 127.0.82.2 (the testing domain's MX, wrong certificate), all on
# SINK_PORT; redis-server on 127.0.0.1 at a private port. Whole file: ~20 s
# (each run is bounded at 15 s, each tlsrpt at 10 s: at most ~85 s).
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
. "$(dirname "$0")/../lib.sh"

E=enf-run.test
T=tst-run.test
E_ID=runE1
T_ID=runT1
E_MX=mx1.$E
T_MX=mx1.$T
E_IP=127.0.82.1
T_IP=127.0.82.2
DNS_ADDR_RUN=127.0.80.53
HTTPS_ADDR=127.0.81.1
FROM=sender@client.test

# The enforce MX and both policy hosts must verify; T's MX gets wrong.pem anyway.
integ_setup "$E_MX" "mta-sts.$E" "mta-sts.$T"
integ_require mxsend mxsink unbound unbound-checkconf nginx redis-server redis-cli python3 perl ss timeout openssl
NGINX_PORT=$(integ_port) || integ_missing "no free port"
STATE=$INTEG_DIR/state # what one case leaves for the next
mkdir -p "$STATE"

# --- DNS ------------------------------------------------------------------------------
ZONE=$INTEG_DIR/zone.txt
cat >"$ZONE" <<EOF
$E. MX 10 $E_MX.
$E_MX. A $E_IP
_mta-sts.$E. TXT "v=STSv1; id=$E_ID"
mta-sts.$E. A $HTTPS_ADDR
_smtp._tls.$E. TXT "v=TLSRPTv1; rua=mailto:tlsrpt@$E"
$T. MX 10 $T_MX.
$T_MX. A $T_IP
_mta-sts.$T. TXT "v=STSv1; id=$T_ID"
mta-sts.$T. A $HTTPS_ADDR
_smtp._tls.$T. TXT "v=TLSRPTv1; rua=mailto:tlsrpt@$T"
EOF
if [ -z "$INTEG_MISSING" ]; then
	start_unbound -a "$DNS_ADDR_RUN" "$ZONE" || integ_missing "unbound did not start"
	start_redis -n run || integ_missing "redis-server did not start"
	start_sink e --listen "$E_IP:$SINK_PORT" || integ_missing "sink e"
	start_sink t --listen "$T_IP:$SINK_PORT" --cert "$CERTS/wrong.pem" --key "$CERTS/wrong.key" ||
		integ_missing "sink t"
fi

# --- nginx: the two policies -------------------------------------------------------------
WWW=$INTEG_DIR/nginx/www
put_policy() { # DOMAIN MODE MX
	mkdir -p "$WWW/mta-sts.$1/.well-known"
	printf 'version: STSv1\nmode: %s\nmx: %s\nmax_age: 86400\n' "$2" "$3" \
		>"$WWW/mta-sts.$1/.well-known/mta-sts.txt"
}
# nginx (lib.sh's start_nginx): one foreground process on HTTPS_ADDR:NGINX_PORT.
if [ -z "$INTEG_MISSING" ]; then
	put_policy "$E" enforce "$E_MX"
	put_policy "$T" testing "$T_MX"
	start_nginx <<EOF || integ_missing "nginx did not start"
	server {
		listen $HTTPS_ADDR:$NGINX_PORT ssl;
		server_name mta-sts.$E mta-sts.$T;
		root $WWW/\$host;
	}
EOF
fi

# --- config ---------------------------------------------------------------------------------
CONF=$INTEG_DIR/run.ini
integ_config "$CONF" "$(
	cat <<EOF
[redis]
url = ${REDIS_URL:-redis://127.0.0.1:1/0}
visibility_timeout = 5s

[retry]
schedule = 1s
jitter = 0

[tls]
sts_https_port = $NGINX_PORT

$(integ_timeouts)
EOF
)"
sed -i '/^\[mxsend\]/a log = info' "$CONF"

# --- helpers -----------------------------------------------------------------------------------
# job_results ID: one line per result entry of job ID (the `id` field), from
# lib.sh's results: rcpt|status|tls|verified|policy|mx|ip|attempt|reply
job_results() {
	results "${REDIS_PORT:-1}" rcpt,status,tls,verified,policy,mx,ip,attempt,reply "$1"
}

# enqueue ID RCPT [ARG...]: `mxsend enqueue` one job.
enqueue() {
	local id=$1 rcpt=$2 m=$CASE_DIR/m-$1.eml
	shift 2
	msg "$m" "run policy"
	"$MXSEND" enqueue -c "$CONF" --from "$FROM" --to "$rcpt" --id "$id" "$@" "$m" \
		>"$CASE_DIR/enqueue-$id.out" 2>&1 || fail "enqueue $id failed: $(cat "$CASE_DIR/enqueue-$id.out")"
}

# run_until_empty NAME: `mxsend run --until-empty` (15 s bound); stdout+stderr
# in $CASE_DIR/NAME.log; sets RUN_RC, RUN_MS.
run_until_empty() {
	timed_run 15 "$CASE_DIR/$1.out" "$CASE_DIR/$1.log" "$MXSEND" run -c "$CONF" --until-empty
	if [ "$RUN_RC" != 0 ]; then
		fail "mxsend run --until-empty ($1): exit $RUN_RC after $RUN_MS ms (124/137: timed out)"
		show_log "$1"
	fi
}

show_log() { # NAME
	diag "run log ($1), last 25 lines:"
	tail -n 25 "$CASE_DIR/$1.log" | sed 's/^/  | /; s/^/# /'
}

# expect_result ID RCPT ERE: some result of job ID for RCPT matches ^RCPT|ERE$.
expect_result() {
	local r
	r=$(job_results "$1")
	grep -Eq -- "^$(re_escape "$2")\|$3\$" <<<"$r" && return 0
	fail "job $1: no result for $2 matching ^$2|$3\$; results:"
	printf '  | %s\n' "${r:-(none)}" | sed 's/^/# /'
	return 1
}

# expect_sink (lib.sh)
TLSV='TLSv1\.[23]'
DAY_NOW() { date -u +%F; }

# --- 1. one run: enforce (verified) and testing (name mismatch) ------------------------------
t_run_enforce_testing() {
	local t0 t1 day v ttl h at
	t0=$(date +%s)
	enqueue c1e "u1@$E" || return 1
	enqueue c1t "u1@$T" || return 1
	run_until_empty run1 || return 1
	t1=$(date +%s)
	day=$(DAY_NOW)
	echo "$day" >"$STATE/day"
	# the result stream
	expect_result c1e "u1@$E" "delivered\|$TLSV\|yes\|sts-enforce\|$(re_escape "$E_MX")\|$E_IP\|1\|.*"
	expect_result c1t "u1@$T" "delivered\|$TLSV\|no\|sts-testing\|$(re_escape "$T_MX")\|$T_IP\|1\|.*"
	assert_eq "results of c1e" 1 "$(job_results c1e | grep -c .)"
	assert_eq "results of c1t" 1 "$(job_results c1t | grep -c .)"
	sink_find_msg e "u1@$E" 3 >/dev/null || fail "sink e has no message for u1@$E"
	sink_find_msg t "u1@$T" 3 >/dev/null || fail "sink t has no message for u1@$T"
	assert_match "nginx served E's policy" "^mta-sts\.$(re_escape "$E") \"GET /\.well-known/mta-sts\.txt HTTP/1\.[01]\" 200\$" \
		"$(cat "$INTEG_DIR/nginx/access.log" 2>/dev/null)"
	# the persisted policies
	v=$(rcli "$REDIS_PORT" GET "mxsend:sts:$E")
	echo "$v" >"$STATE/sts_e"
	assert_match "mxsend:sts:$E" "^1 [0-9]+ enforce 86400 $E_ID $(re_escape "$E_MX")\$" "$v"
	at=$(cut -d' ' -f2 <<<"$v")
	if [[ $at =~ ^[0-9]+$ ]]; then
		{ [ "$at" -ge "$((t0 - 1))" ] && [ "$at" -le "$((t1 + 1))" ]; } ||
			fail "fetched_at $at not within the run ($t0..$t1)"
	fi
	ttl=$(rcli "$REDIS_PORT" TTL "mxsend:sts:$E")
	assert_ge "TTL of mxsend:sts:$E" 1 "$ttl"
	assert_lt "TTL of mxsend:sts:$E" 86401 "$ttl"
	assert_match "mxsend:sts:$T" "^1 [0-9]+ testing 86400 $T_ID $(re_escape "$T_MX")\$" \
		"$(rcli "$REDIS_PORT" GET "mxsend:sts:$T")"
	# TLSRPT counters of the day (tlscache/tlsrpt.h)
	h=$(rcli "$REDIS_PORT" HKEYS "mxsend:tlsrpt:$day:$E" | sort)
	assert_eq "E: hash fields" "$(printf 'mx:sts:%s\nok:sts:%s\npolicy:sts:%s' "$E_ID" "$E_ID" "$E_ID")" "$h"
	assert_eq "E: ok:sts:$E_ID" 1 "$(rcli "$REDIS_PORT" HGET "mxsend:tlsrpt:$day:$E" "ok:sts:$E_ID")"
	assert_eq "E: mx:sts:$E_ID" "$E_MX" "$(rcli "$REDIS_PORT" HGET "mxsend:tlsrpt:$day:$E" "mx:sts:$E_ID")"
	assert_eq "E: policy-string" "$(printf 'version: STSv1\nmode: enforce\nmx: %s\nmax_age: 86400' "$E_MX")" \
		"$(rcli "$REDIS_PORT" HGET "mxsend:tlsrpt:$day:$E" "policy:sts:$E_ID")"
	local tf="sts:$T_ID|certificate-host-mismatch|$T_MX|$T_IP|"
	h=$(rcli "$REDIS_PORT" HKEYS "mxsend:tlsrpt:$day:$T" | sort)
	assert_eq "T: hash fields" "$(printf 'fail:%s\nmx:sts:%s\npolicy:sts:%s\nwhy:%s' "$tf" "$T_ID" "$T_ID" "$tf")" "$h"
	assert_eq "T: fail:$tf" 1 "$(rcli "$REDIS_PORT" HGET "mxsend:tlsrpt:$day:$T" "fail:$tf")"
	assert_match "T: why:$tf (a reason text)" '.' "$(rcli "$REDIS_PORT" HGET "mxsend:tlsrpt:$day:$T" "why:$tf")"
	assert_eq "T: policy-string" "$(printf 'version: STSv1\nmode: testing\nmx: %s\nmax_age: 86400' "$T_MX")" \
		"$(rcli "$REDIS_PORT" HGET "mxsend:tlsrpt:$day:$T" "policy:sts:$T_ID")"
	assert_eq "days set" "$(printf '%s\n%s' "$E" "$T")" "$(rcli "$REDIS_PORT" SMEMBERS "mxsend:tlsrpt:days:$day" | sort)"
	assert_ge "TTL of the day's counters" 1 "$(rcli "$REDIS_PORT" TTL "mxsend:tlsrpt:$day:$E")"
	# the reports
	check_dry "$day" "$E" 1 0 "" || return 1
	check_dry "$day" "$T" 0 1 "certificate-host-mismatch $T_MX $T_IP" || return 1
}

# check_dry DAY DOMAIN OK FAILED FAILURE: `mxsend tlsrpt --dry-run --day DAY
# DOMAIN` prints one JSON report with these counts (FAILURE: "RESULT MX IP"
# of the only failure-details entry, "" for none).
check_dry() {
	local out=$CASE_DIR/dry-$2.out err=$CASE_DIR/dry-$2.err why
	timed_run 10 "$out" "$err" "$MXSEND" tlsrpt -c "$CONF" --dry-run --day "$1" "$2"
	if [ "$RUN_RC" != 0 ]; then
		fail "mxsend tlsrpt --dry-run --day $1 $2: exit $RUN_RC" "$(head -c 2000 "$err")"
		return 1
	fi
	assert_match "tlsrpt line for $2" "^tlsrpt day=$1 domain=$(re_escape "$2") rua=mailto:tlsrpt@$(re_escape "$2") result=dry-run\$" \
		"$(cat "$out")"
	why=$(python3 - "$out" "$1" "$2" "$3" "$4" "$5" <<'EOF'
import json, sys
path, day, dom, ok, failed, failure = sys.argv[1:7]
text = "".join(l for l in open(path) if not l.startswith("tlsrpt "))
bad = []
try:
    r = json.loads(text)
except ValueError as e:
    print("not one JSON document: %s" % e)
    sys.exit(1)
def want(what, got, exp):
    if got != exp:
        bad.append("%s: expected %r, got %r" % (what, exp, got))
want("date-range", r.get("date-range"), {"start-datetime": day + "T00:00:00Z",
                                         "end-datetime": day + "T23:59:59Z"})
pols = r.get("policies", [])
want("number of policies", len(pols), 1)
p = pols[0] if pols else {}
pol, s, fd = p.get("policy", {}), p.get("summary", {}), p.get("failure-details", [])
want("policy-type", pol.get("policy-type"), "sts")
want("policy-domain", pol.get("policy-domain"), dom)
want("total-successful-session-count", s.get("total-successful-session-count"), int(ok))
want("total-failure-session-count", s.get("total-failure-session-count"), int(failed))
got = [" ".join([f.get("result-type", ""), f.get("receiving-mx-hostname", ""),
                 f.get("receiving-ip", "")]) for f in fd]
want("failure-details", got, [failure] if failure else [])
if failure and fd:
    want("failed-session-count", fd[0].get("failed-session-count"), 1)
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
EOF
	) && return 0
	fail "tlsrpt --dry-run report for $2: $why"
	return 1
}

# --- 1b. policy fetches in the metrics -------------------------------------------------------
# A process that has to fetch E's policy (its persisted copy deleted; T's is
# loaded at start) counts the fetch in mxsend_sts_policy_fetches_total. It
# persists E's policy again, as case 2 needs.
t_fetch_metrics() {
	local mport conf=$CASE_DIR/m.ini dir=$CASE_DIR/mrun m r pid
	mport=$(integ_port) || return 1
	cp "$CONF" "$conf" && sed -i "/^\[mxsend\]/a metrics = 127.0.0.1:$mport" "$conf"
	assert_eq "DEL mxsend:sts:$E" 1 "$(rcli "$REDIS_PORT" DEL "mxsend:sts:$E")"
	enqueue c1m "u1m@$E" || return 1
	mkdir -p "$dir"
	"$MXSEND" run -c "$conf" </dev/null >"$dir/log" 2>&1 &
	pid=$!
	echo "$pid mx.metrics" >>"$INTEG_DIR/procs"
	wait_until 15 eval '[ -n "$(job_results c1m)" ]' || fail "no result for c1m within 15 s"
	m=$(scrape "$mport") || fail "no /metrics from 127.0.0.1:$mport"
	assert_eq "policy fetches ok" 1 "$(mval "$m" 'mxsend_sts_policy_fetches_total{result="ok"}')"
	assert_eq "policy fetches failed" 0 "$(mval "$m" 'mxsend_sts_policy_fetches_total{result="error"}')"
	kill -TERM "$pid" 2>/dev/null
	wait_until 20 eval '! kill -0 '"$pid"' 2>/dev/null' || fail "mxsend run did not stop on SIGTERM"
	r=$(job_results c1m)
	expect_result c1m "u1m@$E" "delivered\|$TLSV\|yes\|sts-enforce\|$(re_escape "$E_MX")\|$E_IP\|1\|.*"
	assert_match "mxsend:sts:$E persisted again" "^1 [0-9]+ enforce " "$(rcli "$REDIS_PORT" GET "mxsend:sts:$E")"
	rcli "$REDIS_PORT" GET "mxsend:sts:$E" >"$STATE/sts_e"
}

# --- 2. the persisted policy after a restart, nothing fetchable ---------------------------------
t_cache_restart() {
	local r fd
	[ -s "$STATE/sts_e" ] || fail "no policy left by case 1 (its key was empty)" || return 1
	# no policy can be fetched any more
	stop_proc nginx
	if { exec {fd}<>"/dev/tcp/$HTTPS_ADDR/$NGINX_PORT"; } 2>/dev/null; then
		exec {fd}<&-
		fail "nginx still listening after stop" || return 1
	fi
	# E's MX (same name, same address) now presents a certificate for another name
	stop_sink e
	start_sink e-wrong --listen "$E_IP:$SINK_PORT" --cert "$CERTS/wrong.pem" --key "$CERTS/wrong.key" ||
		fail "sink e-wrong did not start" || return 1
	assert_match "mxsend:sts:$E still there" "^1 [0-9]+ enforce " "$(rcli "$REDIS_PORT" GET "mxsend:sts:$E")"
	# a job that expires after ~5 s: deferred, retried (1 s), then expired
	enqueue c2a "u2@$E" --expires 5 || return 1
	run_until_empty run2a
	assert_match "policies loaded at start" 'evt=sts_loaded policies=2' "$(cat "$CASE_DIR/run2a.log")"
	r=$(job_results c2a)
	# tls=none here: verification fails inside the handshake, so no TLS
	# session is reported; plaintext is ruled out by the sink (no message)
	expect_result c2a "u2@$E" "deferred\|[^|]*\|no\|sts-enforce\|$(re_escape "$E_MX")\|$E_IP\|1\|.*(certificate|hostname).*"
	assert_no_match "c2a: never delivered" '\|delivered\|' "$r"
	assert_eq "c2a: results under another policy than sts-enforce" "" \
		"$(awk -F'|' '$5 != "sts-enforce"' <<<"$r")"
	assert_match "c2a: finally expired" "^u2@$(re_escape "$E")\|expired\|" "$r"
	expect_sink e-wrong messages 0
	assert_eq "messages in sink e-wrong's maildir" 0 "$(sink_count e-wrong)"
	assert_ge "sink e-wrong connections (the MX was reached)" 1 "$(sink_stat e-wrong connections)"
	expect_sink e-wrong recipients 0
	# control: no cached policy, none fetchable -> no policy
	assert_eq "DEL mxsend:sts:$E" 1 "$(rcli "$REDIS_PORT" DEL "mxsend:sts:$E")"
	enqueue c2b "u2b@$E" --expires 10 || return 1
	run_until_empty run2b
	assert_match "one policy loaded at start (T's)" 'evt=sts_loaded policies=1' "$(cat "$CASE_DIR/run2b.log")"
	assert_match "the fetch for E was tried and failed" \
		"evt=sts_fetch_failed domain=$(re_escape "$E") id=$E_ID .*fallback=none" "$(cat "$CASE_DIR/run2b.log")"
	expect_result c2b "u2b@$E" "delivered\|$TLSV\|no\|may\|$(re_escape "$E_MX")\|$E_IP\|1\|.*"
	assert_eq "results of c2b" 1 "$(job_results c2b | grep -c .)"
	sink_find_msg e-wrong "u2b@$E" 3 >/dev/null || fail "sink e-wrong has no message for u2b@$E"
	assert_eq "mxsend:sts:$E after the control run" "" "$(rcli "$REDIS_PORT" GET "mxsend:sts:$E")"
}

# --- 3. exempt=tlsrpt: only for the reports `mxsend tlsrpt` queues ------------------------------------
# E's MX now offers no STARTTLS (and the enforce policy is persisted again):
# an application job carrying `exempt tlsrpt` (no proof, a forged proof, or a
# real report's proof replayed for another recipient) keeps the policy: deferred
# policy=sts-enforce, nothing at the sink, a warning naming the job. A real
# report, queued by `mxsend tlsrpt` with the config's DKIM key, is delivered
# exempt (policy=may, in plaintext here: the MX has no STARTTLS).
t_exempt() {
	local v at ttl data conf3=$CASE_DIR/run3.ini key=$CASE_DIR/dkim.pem day r mac id
	v=$(<"$STATE/sts_e")
	at=$(cut -d' ' -f2 <<<"$v")
	[[ $at =~ ^[0-9]+$ ]] || fail "no policy saved by case 1" || return 1
	ttl=$((at + 86400 - $(date +%s)))
	assert_eq "SET mxsend:sts:$E" OK "$(rcli "$REDIS_PORT" SET "mxsend:sts:$E" "$v" EX "$ttl")"
	stop_sink e-wrong
	start_sink e-plain --listen "$E_IP:$SINK_PORT" --no-starttls ||
		fail "sink e-plain did not start" || return 1
	openssl genpkey -algorithm ED25519 -out "$key" 2>/dev/null || fail "openssl genpkey" || return 1
	cp "$CONF" "$conf3"
	printf '\n[tlsrpt]\ndkim_key = %s\ndkim_selector = s3\ndkim_domain = client.test\n' "$key" >>"$conf3"
	data=$(printf 'From: %s\r\nTo: tlsrpt@%s\r\nSubject: Report Domain: %s\r\n\r\nreport\r\n' "$FROM" "$E" "$E")
	# the id with a quote and a backslash: logged escaped (a control byte
	# would reject the job: t_queue t_content)
	id='c3a"\x'
	assert_match "XADD without proof" '^[0-9]+-[0-9]+$' \
		"$(rcli "$REDIS_PORT" XADD mxsend:jobs '*' from "$FROM" to "u3@$E" data "$data" id "$id" exempt tlsrpt expires 3)"
	assert_match "XADD with a forged proof" '^[0-9]+-[0-9]+$' \
		"$(rcli "$REDIS_PORT" XADD mxsend:jobs '*' from "$FROM" to "u3b@$E" data "$data" id c3b exempt tlsrpt \
			exempt_mac "$(printf '%064d' 0)" expires 3)"
	# a real report for E (counters from case 1), its proof read back from the stream
	day=$(<"$STATE/day")
	timed_run 10 "$CASE_DIR/rpt.out" "$CASE_DIR/rpt.err" "$MXSEND" tlsrpt -c "$conf3" --day "$day" "$E"
	assert_eq "mxsend tlsrpt exit" 0 "$RUN_RC" || diag "$(cat "$CASE_DIR/rpt.out" "$CASE_DIR/rpt.err")"
	assert_match "report queued" "^tlsrpt day=$day domain=$(re_escape "$E") .*result=queued " "$(cat "$CASE_DIR/rpt.out")"
	mac=$(rcli "$REDIS_PORT" XRANGE mxsend:jobs - + | awk 'p == "exempt_mac" { print; exit } { p = $0 }')
	assert_match "the report job's exempt_mac" '^[0-9a-f]{64}$' "$mac"
	# that proof replayed on an application job to another recipient
	assert_match "XADD with a replayed proof" '^[0-9]+-[0-9]+$' \
		"$(rcli "$REDIS_PORT" XADD mxsend:jobs '*' from "tlsrpt-noreply@client.test" to "u3c@$E" data "$data" id c3c \
			exempt tlsrpt exempt_mac "$mac" expires 3)"
	cp "$conf3" "$STATE/run3.ini" # case 4 takes its [tlsrpt] section
	timed_run 20 "$CASE_DIR/run3.out" "$CASE_DIR/run3.log" "$MXSEND" run -c "$conf3" --until-empty
	assert_eq "mxsend run --until-empty exit" 0 "$RUN_RC" || show_log run3
	for id in c3a c3b c3c; do
		r=$(job_results "$id")
		[ "$id" = c3a ] && r=$(job_results 'c3a"\x')
		assert_match "$id: deferred under the enforce policy" "^u3[a-c]?@$(re_escape "$E")\|deferred\|[^|]*\|no\|sts-enforce\|" "$r"
		assert_no_match "$id: never delivered" '\|delivered\|' "$r"
		assert_eq "$id: results under another policy than sts-enforce" "" "$(awk -F'|' '$5 != "sts-enforce"' <<<"$r")"
	done
	local log
	log=$(cat "$CASE_DIR/run3.log")
	assert_match "warning for the job without proof (id escaped)" \
		'evt=exempt_ignored job=[0-9]+-[0-9]+ id="c3a\\"\\\\x" why="no valid exempt_mac field"' "$log"
	assert_match "warning for the forged proof" 'evt=exempt_ignored job=[0-9-]+ id="c3b" why="exempt_mac does not verify"' "$log"
	assert_match "warning for the replayed proof" 'evt=exempt_ignored job=[0-9-]+ id="c3c" why="exempt_mac does not verify"' "$log"
	assert_eq "warnings for other jobs (none for the real report)" 0 \
		"$(grep 'evt=exempt_ignored' <<<"$log" | grep -cv 'id="c3')"
	# the real report: exempt, delivered at the MX without STARTTLS
	expect_result "$(sed -n 's/.* report_id=\([^ ]*\)$/\1/p' "$CASE_DIR/rpt.out")" "tlsrpt@$E" \
		"delivered\|none\|no\|may\|$(re_escape "$E_MX")\|$E_IP\|1\|.*"
	sink_find_msg e-plain "tlsrpt@$E" 3 >/dev/null || fail "sink e-plain has no report for tlsrpt@$E"
	assert_eq "messages at E's MX (the report only)" 1 "$(sink_count e-plain)"
}
# --- 4. the proof survives a retry ------------------------------------------------------------------
# The report for E queued again (its sent mark dropped) while E's MX is down:
# the first attempts are deferred; the retries (written back by the queue with
# exempt and exempt_mac) still verify: delivered exempt once the MX is back.
t_exempt_retry() {
	local conf3=$CASE_DIR/run4.ini day rid r pid i
	day=$(<"$STATE/day")
	sed -n '/^\[tlsrpt\]/,$p' "$STATE/run3.ini" >"$CASE_DIR/tlsrpt.part"
	cp "$CONF" "$conf3"
	{ echo; cat "$CASE_DIR/tlsrpt.part"; } >>"$conf3"
	grep -q '^dkim_key' "$conf3" || fail "no [tlsrpt] section from case 3" || return 1
	stop_sink e-plain
	rcli "$REDIS_PORT" DEL "mxsend:tlsrpt:sent:$day:$E" >/dev/null
	timed_run 10 "$CASE_DIR/rpt.out" "$CASE_DIR/rpt.err" "$MXSEND" tlsrpt -c "$conf3" --day "$day" "$E"
	assert_eq "mxsend tlsrpt exit" 0 "$RUN_RC" || diag "$(cat "$CASE_DIR/rpt.out" "$CASE_DIR/rpt.err")"
	rid=$(sed -n 's/.* report_id=\([^ ]*\)$/\1/p' "$CASE_DIR/rpt.out")
	[ -n "$rid" ] || fail "no report queued" || return 1
	timeout 30 "$MXSEND" run -c "$conf3" --until-empty >"$CASE_DIR/run4.out" 2>"$CASE_DIR/run4.log" &
	pid=$!
	for ((i = 0; i < 100; i++)); do # the first attempt deferred (10 s at most)
		grep -q '|deferred|' <<<"$(job_results "$rid")" && break
		sleep 0.1
	done
	sleep 1.5 # a retry or two while the MX is still down
	start_sink e-back --listen "$E_IP:$SINK_PORT" --no-starttls || fail "sink e-back did not start"
	wait "$pid"
	assert_eq "mxsend run --until-empty exit" 0 "$?" || show_log run4
	r=$(job_results "$rid")
	assert_match "deferred while the MX was down (exempt: policy may)" "^tlsrpt@$(re_escape "$E")\|deferred\|none\|no\|may\|" "$r"
	assert_match "delivered exempt on a retry" "^tlsrpt@$(re_escape "$E")\|delivered\|none\|no\|may\|$(re_escape "$E_MX")\|$E_IP\|[2-9]\|" "$r"
	assert_no_match "never under sts-enforce" '\|sts-enforce\|' "$r"
	assert_eq "exemption warnings" 0 "$(grep -c 'evt=exempt_ignored' "$CASE_DIR/run4.log")"
	sink_find_msg e-back "tlsrpt@$E" 3 >/dev/null || fail "sink e-back has no report"
}

T_START=$SECONDS
run_case "1. run --until-empty: enforce (verified) and testing (name mismatch) delivered; policy persisted with TTL; TLSRPT counters and --dry-run reports agree" \
	t_run_enforce_testing
run_case "1b. a fetched policy counted in mxsend_sts_policy_fetches_total{result=\"ok\"} (metrics of a running mxsend run)" \
	t_fetch_metrics
run_case "2. restart with nginx down, E's MX on a wrong-name cert: the persisted enforce policy defers; control (key deleted): delivered as may" \
	t_cache_restart
run_case "3. exempt=tlsrpt: application jobs (no proof, forged, replayed) to the enforce domain whose MX lacks STARTTLS: deferred policy=sts-enforce; the real report from mxsend tlsrpt: delivered exempt" \
	t_exempt
run_case "4. the real report deferred (MX down), its retries keep exempt and exempt_mac: delivered exempt on a retry" \
	t_exempt_retry
[ "$INTEG_LIST" = 1 ] || echo "# elapsed: $((SECONDS - T_START)) s"
integ_finish
