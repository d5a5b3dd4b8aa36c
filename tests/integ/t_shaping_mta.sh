#!/usr/bin/env bash
# t_shaping_mta.sh: shaping (issue 20) against a receiver this project did not write: Debian 12's
# Exim 4.96 (tests/integ/interop.sh: `make deps` unpacks it; a private instance, queue_only, on
# loopback). Exim's own `ratelimit` ACL condition plays the rate-limiting provider: on
# 127.0.12.1 (mx.rl.exim.test, domains r1..r4.exim.test) its MAIL ACL defers every MAIL past
# R messages per second per client address (smoothed over 2 s, leaky: refused MAILs do not
# count) with `421 4.7.28 ... unusual rate ...`, as Gmail words it. On 127.0.12.2
# (mx.bl.exim.test, domain bl.exim.test) it blocks the client: `550 5.7.1 ... blocked`.
# mxsend has a provider for each and the rules `^4[0-9][0-9] 4\.7\.28` -> throttle and
# `^550 5\.7\.1 .*blocked` -> suspend 1h.
# Cases:
#   throttle  `mxsend run` of N jobs, starting at 4 x R: nothing lost (every job delivered,
#             each once, counted in Exim's log), Exim's 4xx share after the first window is
#             lower than in it and under 10 % (without the rule: about 68 %), results of the deferrals say shaped=exim-rate:throttle and class
#             rate-limited; the rate in force (metrics) ends below the start.
#   block     Exim's 550 5.7.1 for the client: the recipient is deferred (not bounced), shaped
#             names the suspension, class reputation; a second job waits without a connection.
# The figures (4xx shares, delivered rate against R) go to the output. About 35 s.
# shellcheck disable=SC2317,SC2031 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integ/interop.sh
. "$INTEG_LIB_DIR/interop.sh"

integ_setup mx.rl.exim.test mx.bl.exim.test
exec 3>&1 # figure: the figures of a case, on the script's output whatever the verdict
figure() { diag "$@" >&3; }
integ_require mxsend unbound redis-server redis-cli python3
interop_require

P=$SINK_PORT
A_RL=127.0.12.1 # mx.rl.exim.test: R MAILs/s per client address, 421 4.7.28 above
A_BL=127.0.12.2 # mx.bl.exim.test: 550 5.7.1 ... blocked
R=10            # Exim's limit, messages per second per client address
RL_DOMAINS="r1.exim.test r2.exim.test r3.exim.test r4.exim.test"

if [ -z "$INTEG_MISSING" ]; then
	start_unbound "
mx.rl.exim.test. A $A_RL
mx.bl.exim.test. A $A_BL
$(for d in $RL_DOMAINS; do echo "$d. MX 10 mx.rl.exim.test."; done)
bl.exim.test. MX 10 mx.bl.exim.test.
" || integ_missing "unbound"
	# Exim's ratelimit (spec ch. "Access control lists", "Rate limiting incoming messages"):
	# m / p is m per smoothing period p; leaky (the default) leaves the client's measured rate
	# alone while it is over the limit. A message starting with a code whose first digit is
	# the verb's own (4 for defer) replaces the default code.
	ex_start "$A_RL $A_BL" "$RL_DOMAINS bl.exim.test" "acl_smtp_mail = acl_mail" "
acl_mail:
  deny    condition = \${if eq{\$received_ip_address}{$A_BL}}
          message = 550 5.7.1 Service unavailable; client [\$sender_host_address] blocked using test.rbl
  defer   ratelimit = $((2 * R)) / 2s / per_mail / \$sender_host_address
          message = 421 4.7.28 [\$sender_host_address] Our system has detected an unusual rate of mail from your IP address; try again later
  accept" || integ_missing "the Exim instance did not start (see above)"
fi

# conf FILE: mxsend's config: Redis, short retries, the two providers and their rules
conf() {
	integ_config "$1" "$(printf '[redis]\nurl = %s\n\n[retry]\nschedule = 2s\nlifetime = 1h\njitter = 0\n' "$REDIS_URL")

[shaping]
providers = none
hold = 1s

[provider exim-rl]
mx = mx.rl.exim.test
max_rate = $((4 * R))
max_connections = 4

[provider exim-bl]
mx = mx.bl.exim.test

[response exim-rate]
provider = exim-rl
match = ^4[0-9][0-9] 4\\.7\\.28
action = throttle
class = rate-limited

[response exim-blocked]
match = ^550 5\\.7\\.1 .*blocked
action = suspend 1h
class = reputation"
	sed -i "s/^helo = client.test\$/helo = client.test\\nlog = info\\nworkers = 2\\nmetrics = 127.0.0.1:$MPORT/" "$1"
}

# Exim's log of this case: MAILs it took ("<=" lines) and MAILs its ratelimit deferred
ex_taken() { case_log "$EXLOG" | grep -c ' <= '; }
ex_limited() { case_log "$EXLOG" | grep -c 'temporarily rejected MAIL.*4\.7\.28'; }
delivered_ge() { [ "$(results "$1" status | grep -c '^delivered$')" -ge "$2" ]; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b ? 100 * a / b : 0 }'; }

t_throttle() {
	start_redis -n exthrottle || { fail "redis"; return; }
	MPORT=$(integ_port) || { fail "port"; return; }
	local c=$CASE_DIR/c.ini port=$REDIS_PORT n=300 m
	conf "$c"
	pipe_jobs "$port" "$n" "$RL_DOMAINS" xr
	log_mark "$EXLOG"
	integ_spawn run "$CASE_DIR/err" "$MXSEND" run -c "$c"
	# the first window: mxsend starts at 4 x R; Exim's ratelimit answers 421 4.7.28 past R
	sleep 10
	local a1 l1 t1 t2 a2 l2
	a1=$(ex_taken) l1=$(ex_limited) t1=$(date +%s%N)
	wait_until 80 delivered_ge "$port" "$n" || fail "not every job delivered within 90 s"
	t2=$(date +%s%N)
	a2=$(ex_taken) l2=$(ex_limited)
	m=$(scrape "$MPORT") || fail "no /metrics from 127.0.0.1:$MPORT"
	stop_proc run
	local first later rate
	first=$(pct "$l1" "$((a1 + l1))")
	later=$(pct "$((l2 - l1))" "$((a2 - a1 + l2 - l1))")
	rate=$(awk -v d="$((a2 - a1))" -v t="$(((t2 - t1) / 1000000))" 'BEGIN { printf "%.2f", t ? d * 1000 / t : 0 }')
	figure "Exim's 421 4.7.28 share: first 10 s $l1/$((a1 + l1)) MAILs ($first %), afterwards $((l2 - l1))/$((a2 - a1 + l2 - l1)) ($later %)"
	figure "after the first 10 s: $((a2 - a1)) taken in $(((t2 - t1) / 1000000)) ms: $rate/s (R = $R/s)"
	assert_ge "Exim's ratelimit deferred MAILs at first" 1 "$l1"
	awk -v a="$later" -v b="$first" 'BEGIN { exit !(a < b) }' ||
		fail "the 4xx share did not fall after the first window ($first % -> $later %)"
	awk -v a="$later" 'BEGIN { exit !(a < 10) }' || fail "4xx share after the first window $later % (>= 10 %)"
	# nothing lost: every job delivered once, and Exim took each exactly once
	assert_eq "every job delivered" "$n" \
		"$(results "$port" id,status | grep '|delivered$' | cut -d'|' -f1 | sort -u | wc -l)"
	assert_eq "no job delivered twice" "$n" "$(results "$port" status | grep -c '^delivered$')"
	assert_eq "Exim took every message once" "$n" "$a2"
	assert_eq "Exim took every recipient (u1..uN), each once" "$n" \
		"$(case_log "$EXLOG" | awk '$4 == "<=" { for (i = 5; i <= NF; i++) if ($i ~ /^for$/) print $(i + 1) }' | sort -u | wc -l)"
	assert_match "a deferral names the throttle and the state, class rate-limited" \
		'^deferred\|421\|4\.7\.28\|exim-rate:throttle rate=[0-9.]+/s conns=[0-9]+\|rate-limited$' \
		"$(results "$port" status,code,dsn,shaped,class | grep '^deferred|421|' | head -n 1)"
	assert_match "the throttle logged" \
		'evt=shaping_throttle rule=exim-rate source=- provider=exim-rl code=421 dsn=4\.7\.28' \
		"$(cat "$CASE_DIR/err")"
	assert_ge "metrics: exim-rate matches" 1 \
		"$(mval "$m" 'mxsend_shaping_matches_total{provider="exim-rl",rule="exim-rate",action="throttle"}')"
	awk -v r="$(mval "$m" 'mxsend_shaping_rate{source="-",provider="exim-rl"}')" -v mx="$((4 * R))" \
		'BEGIN { exit !(r > 0 && r < mx) }' ||
		fail "metrics: the rate in force is not below the start ($((4 * R))/s): $(grep '^mxsend_shaping_rate' <<<"$m")"
}
run_case "throttle: Exim's ratelimit (R = 10/s per client, 421 4.7.28 above): the 4xx share falls after the first window, nothing lost, deferrals say shaped=exim-rate:throttle, class rate-limited" t_throttle

has_status() { results "$1" status "$2" | grep -qx "$3"; }

t_block() {
	start_redis -n exblock || { fail "redis"; return; }
	MPORT=$(integ_port) || { fail "port"; return; }
	local c=$CASE_DIR/c.ini port=$REDIS_PORT m
	conf "$c"
	log_mark "$EXLOG"
	integ_spawn run "$CASE_DIR/err" "$MXSEND" run -c "$c"
	local data=$'Subject: b\r\n\r\nbody\r\n'
	rcli "$port" XADD mxsend:jobs '*' from s@client.test to u1@bl.exim.test data "$data" id bl-1 >/dev/null
	wait_until 10 has_status "$port" bl-1 deferred || fail "bl-1 not deferred"
	assert_match "Exim's 550 5.7.1: deferred (not bounced), shaped names the suspension, class reputation" \
		'^deferred\|550\|5\.7\.1\|exim-blocked:suspend until=20[0-9-]+T[0-9:]+Z\|reputation$' \
		"$(results "$port" status,code,dsn,shaped,class bl-1)"
	assert_eq "bl-1: no bounce" "" "$(results "$port" status bl-1 | grep bounced)"
	# a second job to the blocked provider waits for the suspension's end without a connection
	rcli "$port" XADD mxsend:jobs '*' from s@client.test to u2@bl.exim.test data "$data" id bl-2 >/dev/null
	wait_until 10 has_status "$port" bl-2 deferred || fail "bl-2 not deferred"
	assert_match "bl-2: held back (451 4.4.5) by the suspension" \
		'^deferred\|451\|4\.4\.5\|exim-blocked:suspend until=' "$(results "$port" status,code,dsn,shaped bl-2)"
	m=$(scrape "$MPORT") || fail "no /metrics from 127.0.0.1:$MPORT"
	stop_proc run
	assert_eq "Exim saw one MAIL only (the first job's)" 1 \
		"$(case_log "$EXLOG" | grep -c 'rejected MAIL.*blocked using test\.rbl')"
	assert_eq "Exim took nothing" 0 "$(ex_taken)"
	assert_eq "metrics: one recipient held back by the suspension" 1 \
		"$(mval "$m" 'mxsend_shaping_deferred_total{provider="exim-bl",reason="suspend"}')"
	assert_match "state in Redis: the suspension" '^exim-blocked$' \
		"$(rcli "$port" HGET mxsend:jobs:shape:-:exim-bl rule)"
}
run_case "block: Exim's 550 5.7.1 for the client suspends (source, provider): deferred, not bounced; the next job waits without a connection" t_block

integ_finish
