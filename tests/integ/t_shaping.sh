#!/usr/bin/env bash
# t_shaping.sh: shaping (issue 20 points 1-2) on loopback. A provider groups
# MX hosts by name suffix ([provider lab] mx = .lab.test); the sink plays a
# receiver that accepts R messages/s per client address and answers
# `421 4.7.28` above it (mxsink --limit R), or one that blocks the client
# (--mail '421 ... [TSS09] ...'). Checks, qualitative (the figures go to the
# log, not into timed assertions): the throttle engages (the 421 share after
# the first window falls, nothing lost, results say shaped=RULE:throttle);
# a suspension holds mail without a connection, uses up no retry and does not
# expire a job early; two processes follow one state in Redis; `mxsend
# shaping` prints it; a bad rule is a start-up error naming file:line.
# shellcheck disable=SC2317 # case functions run indirectly, each in its run_case subshell
set -u
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"

integ_setup mx.lab.test mx.blk.test mx.ok.test
exec 3>&1 # figure: the figures of a case, on the script's output whatever the verdict
figure() { diag "$@" >&3; }
integ_require mxsend mxsink unbound redis-server redis-cli

P=$SINK_PORT
ZONE=$INTEG_DIR/zone.txt
{
	printf 'mx.lab.test. A 127.0.66.1\nmx.blk.test. A 127.0.66.2\nmx.ok.test. A 127.0.66.3\n'
	for i in 1 2 3 4 5 6 7 8; do printf 'd%d.test. MX 10 mx.lab.test.\n' "$i"; done
	for i in 1 2 3; do printf 'b%d.test. MX 10 mx.blk.test.\n' "$i"; done
	printf 'ok.test. MX 10 mx.ok.test.\n'
} >"$ZONE"
if [ -z "$INTEG_MISSING" ]; then
	start_unbound "$ZONE" || integ_missing "unbound"
	start_sink lab --listen "127.0.66.1:$P" --limit 10 || integ_missing "sink lab"
	start_sink blk --listen "127.0.66.2:$P" \
		--mail '421 4.7.0 [TSS09] All messages from 127.0.0.1 will be permanently deferred' ||
		integ_missing "sink blk"
	start_sink ok --listen "127.0.66.3:$P" || integ_missing "sink ok"
fi

# The shaping sections of every case: [provider lab] (the rate-limiting
# receiver: its MX host serves d1..d8.test), [provider blk] (blocks us).
SHAPING='[shaping]
providers = none
hold = 1s

[provider lab]
mx = .lab.test
max_rate = 40
max_connections = 8

[provider blk]
mx = mx.blk.test

[response lab-rate]
provider = lab
match = ^421 4\.7\.28
action = throttle
class = rate-limited

[response blk-tss09]
match = \[TSS09\]
action = suspend 6s
class = reputation'

# conf FILE [EXTRA]: redis, short retries, the shaping sections, log info
conf() {
	integ_config "$1" "$(printf '[redis]\nurl = %s\n\n[retry]\nschedule = %s\nlifetime = 1h\njitter = 0\n\n%s\n%s' \
		"$REDIS_URL" "${RETRY:-2s}" "$SHAPING" "${2:-}")"
	sed -i 's/^helo = client.test$/helo = client.test\nlog = info\nworkers = 2/' "$1"
}

# delivered_ge PORT N: N or more `delivered` results
delivered_ge() { [ "$(results "$1" status | grep -c '^delivered$')" -ge "$2" ]; }

# xjobs PORT N PREFIX DOMAIN...: N jobs, job i to u<i>@DOMAIN[i % #DOMAIN]
xjobs() {
	local port=$1 n=$2 pre=$3
	shift 3
	pipe_jobs "$port" "$n" "$*" "$pre"
}

t_throttle() {
	start_redis -n throttle || { fail "redis"; return; }
	local c=$CASE_DIR/c.ini port=$REDIS_PORT n=300
	conf "$c"
	xjobs "$port" "$n" thr d1.test d2.test d3.test d4.test d5.test d6.test d7.test d8.test
	integ_spawn run "$CASE_DIR/err" "$MXSEND" run -c "$c" --until-empty
	local pid=$SPAWN_PID
	# the first window: R = 10/s, max_rate 40: the throttle must cut in
	sleep 10
	local m1 l1 d1 t1 t2
	m1=$(sink_stat lab mails)
	l1=$(sink_stat lab limited)
	d1=$(sink_stat lab messages)
	t1=$(date +%s%N)
	wait_until 120 delivered_ge "$port" "$n"
	t2=$(date +%s%N)
	local m2 l2 d2
	m2=$(sink_stat lab mails)
	l2=$(sink_stat lab limited)
	d2=$(sink_stat lab messages)
	figure "after the first 10 s: $((d2 - d1)) delivered in $(((t2 - t1) / 1000000)) ms: $(awk -v d="$((d2 - d1))" -v t="$(((t2 - t1) / 1000000))" 'BEGIN { printf "%.2f", t ? d * 1000 / t : 0 }')/s (R = 10/s)"
	stop_proc run
	local first later
	first=$(awk -v m="$m1" -v l="$l1" 'BEGIN { printf "%.1f", m ? 100 * l / m : 0 }')
	later=$(awk -v m="$((m2 - m1))" -v l="$((l2 - l1))" 'BEGIN { printf "%.1f", m ? 100 * l / m : 0 }')
	figure "421 share: first 10 s $l1/$m1 ($first %), afterwards $((l2 - l1))/$((m2 - m1)) ($later %)"
	assert_eq "every job delivered (nothing lost)" "$n" \
		"$(results "$port" id,status | grep '|delivered$' | cut -d'|' -f1 | sort -u | wc -l)"
	assert_ge "the receiver said 421 4.7.28 at first" 1 "$l1"
	awk -v a="$later" -v b="$first" 'BEGIN { exit !(a < b) }' ||
		fail "the 421 share did not fall after the first window ($first % -> $later %)"
	awk -v a="$later" 'BEGIN { exit !(a < 10) }' || fail "421 share after the first window $later % (>= 10 %)"
	assert_match "a 421 result names the throttle and the state" \
		'^deferred\|421\|lab-rate:throttle rate=[0-9.]+/s conns=[0-9]+$' \
		"$(results "$port" status,code,shaped | grep '^deferred' | head -n 1)"
	assert_match "a delayed delivery names what delayed it" '^delivered\|lab-rate:throttle rate=[0-9.]+/s conns=[0-9]+$' \
		"$(results "$port" status,shaped | grep '^delivered|lab-rate' | tail -n 1)"
	assert_match "shaped is the last result field" 'shaped$' \
		"$(rcli "$port" XRANGE mxsend:results - + COUNT 1 | sed -n '2,$p' | awk 'NR % 2 == 1' | tail -n 1)"
	assert_match "log: the throttle" 'evt=shaping_throttle rule=lab-rate source=- provider=lab code=421 dsn=4\.7\.28' \
		"$(cat "$CASE_DIR/err")"
	# the state in Redis, and mxsend shaping
	assert_match "state in Redis" '^lab-rate$' "$(rcli "$port" HGET mxsend:jobs:shape:-:lab rule)"
	timed_run 10 "$CASE_DIR/out2" "$CASE_DIR/err2" "$MXSEND" shaping -c "$c"
	assert_eq "mxsend shaping: exit status" 0 "$RUN_RC" || show_run
	assert_match "mxsend shaping: the pair" '^- lab rate=[0-9.]+/s conns=[0-9]+ until=- rule=lab-rate cuts=[1-9][0-9]* changed=20' \
		"$(cat "$CASE_DIR/out2")"
	[ -n "$pid" ] || true
}
run_case "throttle: a receiver at 10/s answering 421 4.7.28 above it: the rate is cut (AIMD), the 421 share falls after the first window, nothing lost, results and mxsend shaping show the state" t_throttle
