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
	printf 'mx2.blk.test. A 127.0.66.4\nmx.ms.test. A 127.0.66.5\nms.test. MX 10 mx.ms.test.\n'
	for i in 1 2 3 4 5 6 7 8; do printf 'd%d.test. MX 10 mx.lab.test.\n' "$i"; done
	for i in 1 2 3; do printf 'b%d.test. MX 10 mx.blk.test.\nc%d.test. MX 10 mx2.blk.test.\n' "$i" "$i"; done
	printf 'ok.test. MX 10 mx.ok.test.\n'
} >"$ZONE"
if [ -z "$INTEG_MISSING" ]; then
	start_unbound "$ZONE" || integ_missing "unbound"
	start_sink lab --listen "127.0.66.1:$P" --limit 10 || integ_missing "sink lab"
	start_sink blk --listen "127.0.66.2:$P" \
		--mail '421 4.7.0 [TSS09] All messages from 127.0.0.1 will be permanently deferred' ||
		integ_missing "sink blk"
	start_sink ok --listen "127.0.66.3:$P" || integ_missing "sink ok"
	start_sink blk2 --listen "127.0.66.4:$P" \
		--mail '421 4.7.0 [TSS09] All messages from 127.0.0.1 will be permanently deferred' ||
		integ_missing "sink blk2"
	start_sink ms --listen "127.0.66.5:$P" \
		--mail "550 5.7.1 Unfortunately, messages from [127.0.0.1] weren't sent. (S3150)" ||
		integ_missing "sink ms"
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
mx = .blk.test

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

# with_metrics FILE: the config serves /metrics on a fresh port (echoed)
with_metrics() {
	local mp
	mp=$(integ_port) || return 1
	sed -i "s/^log = info\$/log = info\nmetrics = 127.0.0.1:$mp/" "$1"
	echo "$mp"
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
	local c=$CASE_DIR/c.ini port=$REDIS_PORT n=300 mp m
	conf "$c"
	mp=$(with_metrics "$c") || { fail "metrics port"; return; }
	xjobs "$port" "$n" thr d1.test d2.test d3.test d4.test d5.test d6.test d7.test d8.test
	integ_spawn run "$CASE_DIR/err" "$MXSEND" run -c "$c" --until-empty
	local pid=$SPAWN_PID
	# the first window: R = 10/s, max_rate 40: the throttle must cut in
	sleep 10
	# the metrics per provider and rule (labels from the config's names)
	m=$(scrape "$mp") || fail "no /metrics from 127.0.0.1:$mp"
	assert_ge "metrics: lab-rate matches" 1 \
		"$(mval "$m" 'mxsend_shaping_matches_total{provider="lab",rule="lab-rate",action="throttle"}')"
	assert_eq "metrics: a rule without provider= has a series per provider, at 0" "0 0 0" \
		"$(for p in lab blk -; do mval "$m" "mxsend_shaping_matches_total{provider=\"$p\",rule=\"blk-tss09\",action=\"suspend\"}"; done | xargs)"
	assert_eq "metrics: no series names a reply (only config names)" "" \
		"$(grep '^mxsend_shaping' <<<"$m" | grep -v -E 'provider="(lab|blk|-)"' | head -n 3)"
	assert_ge "metrics: deferred, class rate-limited" 1 \
		"$(mval "$m" 'mxsend_bounce_class_total{status="deferred",class="rate-limited"}')"
	awk -v r="$(mval "$m" 'mxsend_shaping_rate{source="-",provider="lab"}')" \
		'BEGIN { exit !(r > 0 && r < 40) }' ||
		fail "metrics: the rate gauge of (-, lab) is not cut below max_rate 40: $(grep '^mxsend_shaping_rate' <<<"$m")"
	assert_eq "metrics: no rate gauge for blk (no rate in force)" "" \
		"$(mval "$m" 'mxsend_shaping_rate{source="-",provider="blk"}')"
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

# retry_park PORT ID: job ID's park in J:retry: "member=M attempt=A"
retry_park() {
	local m
	for m in $(rcli "$1" ZRANGE mxsend:jobs:retry 0 -1); do
		if [ "$(rcli "$1" HGET "mxsend:jobs:retry:$m" id)" = "$2" ]; then
			echo "member=$m attempt=$(rcli "$1" HGET "mxsend:jobs:retry:$m" attempt)"
			return 0
		fi
	done
	return 1
}

# result_of PORT ID FIELDS: the results of job ID (results' format), one a line
result_of() { results "$1" "$3" "$2"; }
has_result() { [ -n "$(result_of "$1" "$2" status)" ]; }
has_status() { result_of "$1" "$2" status | grep -qx "$3"; }

t_suspend() {
	start_redis -n suspend || { fail "redis"; return; }
	local c=$CASE_DIR/c.ini port=$REDIS_PORT mp m
	RETRY=1h conf "$c"
	mp=$(with_metrics "$c") || { fail "metrics port"; return; }
	integ_spawn run "$CASE_DIR/err" "$MXSEND" run -c "$c"
	local data=$'Subject: s\r\n\r\nbody\r\n'
	rcli "$port" XADD mxsend:jobs '*' from s@client.test to u1@b1.test data "$data" id blk-1 >/dev/null
	wait_until 10 has_result "$port" blk-1 || { fail "no result for blk-1"; return; }
	assert_match "the block reply: deferred, suspend" \
		'^deferred\|421\|4\.7\.0\|blk-tss09:suspend until=20[0-9-]+T[0-9:]+Z$' \
		"$(result_of "$port" blk-1 status,code,dsn,shaped)"
	assert_eq "one MAIL at the blocking receiver" 1 "$(sink_stat blk mails)"
	# the receiver stops blocking; mail queued during the suspension waits
	# for its end without a connection, uses no retry and (expires = 5 s,
	# less than the suspension) does not expire
	stop_proc sink.blk
	start_sink blkok --listen "127.0.66.2:$P" || { fail "sink blkok"; return; }
	rcli "$port" XADD mxsend:jobs '*' from s@client.test to u2@b2.test data "$data" id blk-2 \
		expires 5 >/dev/null
	wait_until 10 has_result "$port" blk-2 || { fail "no result for blk-2"; return; }
	assert_match "held back: deferred 451 4.4.5, shaped names the suspension" \
		'^deferred\|451\|4\.4\.5\|blk-tss09:suspend until=20[0-9-]+T[0-9:]+Z$' \
		"$(result_of "$port" blk-2 status,code,dsn,shaped)"
	assert_eq "no connection while suspended" 0 "$(sink_stat blkok connections)"
	local park
	park=$(retry_park "$port" blk-2) || fail "blk-2 not parked in J:retry"
	assert_match "parked apart (:s), attempt not counted" '^member=[0-9]+-[0-9]+:s attempt=0$' "$park"
	m=$(scrape "$mp") || fail "no /metrics from 127.0.0.1:$mp"
	assert_eq "metrics: the block reply matched blk-tss09 once" 1 \
		"$(mval "$m" 'mxsend_shaping_matches_total{provider="blk",rule="blk-tss09",action="suspend"}')"
	assert_eq "metrics: one recipient held back by the suspension" 1 \
		"$(mval "$m" 'mxsend_shaping_deferred_total{provider="blk",reason="suspend"}')"
	assert_eq "metrics: none held back by rate" 0 \
		"$(mval "$m" 'mxsend_shaping_deferred_total{provider="blk",reason="rate"}')"
	assert_ge "metrics: the block reply's class" 1 \
		"$(mval "$m" 'mxsend_bounce_class_total{status="deferred",class="reputation"}')"
	wait_until 20 has_status "$port" blk-2 delivered || fail "blk-2 not delivered after the suspension"
	assert_match "after the suspension: delivered on its first attempt, not expired" \
		'^delivered\|1$' "$(result_of "$port" blk-2 status,attempt | tail -n 1)"
	assert_eq "blk-2: no expired result" "" "$(result_of "$port" blk-2 status | grep expired)"
	assert_match "state in Redis: the suspension" '^blk-tss09$' \
		"$(rcli "$port" HGET mxsend:jobs:shape:-:blk rule)"
	stop_proc run
}
run_case "suspend: a block reply suspends (source, provider); mail queued meanwhile waits without a connection, uses no retry, does not expire early, and goes once it ends" t_suspend

t_two() {
	start_redis -n two || { fail "redis"; return; }
	local c=$CASE_DIR/c.ini port=$REDIS_PORT i
	RETRY=1h conf "$c"
	integ_spawn runa "$CASE_DIR/erra" "$MXSEND" run -c "$c"
	integ_spawn runb "$CASE_DIR/errb" "$MXSEND" run -c "$c"
	local data=$'Subject: s\r\n\r\nbody\r\n'
	rcli "$port" XADD mxsend:jobs '*' from s@client.test to u0@c1.test data "$data" id two-0 >/dev/null
	wait_until 10 has_result "$port" two-0 || { fail "no result for two-0"; return; }
	assert_match "one process met the block: suspend" '^deferred\|421\|blk-tss09:suspend ' \
		"$(result_of "$port" two-0 status,code,shaped)"
	sleep 3 # two syncs: both processes hold the state from Redis
	for i in $(seq 1 20); do
		rcli "$port" XADD mxsend:jobs '*' from s@client.test to "u$i@c$((i % 3 + 1)).test" \
			data "$data" id "two-$i" >/dev/null
	done
	wait_until 20 two_done "$port" || fail "not every job has a result"
	assert_eq "all 20 held back by the shared suspension" 20 \
		"$(results "$port" id,status,dsn,shaped | grep -Ec '^two-([1-9]|1[0-9]|20)\|deferred\|4\.4\.5\|blk-tss09:suspend ')"
	assert_eq "still one MAIL at the blocking receiver" 1 "$(sink_stat blk2 mails)"
	local na nb
	na=$(grep -c 'evt=delivery.* dsn=4\.4\.5 ' "$CASE_DIR/erra")
	nb=$(grep -c 'evt=delivery.* dsn=4\.4\.5 ' "$CASE_DIR/errb")
	figure "held back by process A: $na, by process B: $nb"
	assert_eq "both processes' deferrals add up" 20 "$((na + nb))"
	timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" shaping -c "$c"
	assert_match "mxsend shaping: the suspended pair" \
		'^- blk rate=max conns=max until=20[0-9-]+T[0-9:]+Z rule=blk-tss09 cuts=0 changed=' "$(cat "$CASE_DIR/out")"
	stop_proc runa
	stop_proc runb
}
two_done() { [ "$(results "$1" id | grep -c '^two-')" -ge 21 ]; }
run_case "two processes share one Redis: a suspension met by one holds the other's mail too (state in Redis, followed within a sync), mxsend shaping shows it" t_two

t_restart() {
	start_redis -n restart || { fail "redis"; return; }
	local c=$CASE_DIR/c.ini port=$REDIS_PORT m0
	RETRY=1h conf "$c"
	local data=$'Subject: s\r\n\r\nbody\r\n'
	integ_spawn runa "$CASE_DIR/erra" "$MXSEND" run -c "$c"
	rcli "$port" XADD mxsend:jobs '*' from s@client.test to u0@c2.test data "$data" id rs-0 >/dev/null
	wait_until 10 has_result "$port" rs-0 || { fail "no result for rs-0"; return; }
	stop_proc runa
	m0=$(sink_stat blk2 mails)
	# a new process: the suspension holds from its first job on (loaded
	# from Redis at start, before the first claim)
	rcli "$port" XADD mxsend:jobs '*' from s@client.test to u1@c3.test data "$data" id rs-1 >/dev/null
	integ_spawn runb "$CASE_DIR/errb" "$MXSEND" run -c "$c"
	wait_until 10 has_result "$port" rs-1 || { fail "no result for rs-1"; return; }
	assert_match "after the restart: held back by the suspension" '^deferred\|4\.4\.5\|blk-tss09:suspend until=' \
		"$(result_of "$port" rs-1 status,dsn,shaped)"
	assert_eq "no MAIL at the blocking receiver after the restart" "$m0" "$(sink_stat blk2 mails)"
	assert_match "log: the state loaded" 'evt=shaping_loaded pairs=1' "$(cat "$CASE_DIR/errb")"
	stop_proc runb
}
run_case "restart: a suspension in Redis holds for a process started during it, from its first job" t_restart

t_config() {
	local c=$CASE_DIR/c.ini
	integ_config "$c" "$(printf '[response bad]\nmatch = ^421 (\naction = throttle\n')"
	timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" shaping -c "$c"
	assert_eq "bad regex: exit 78" 78 "$RUN_RC"
	assert_match "bad regex: file:line" "c\.ini:[0-9]+: bad match in \[response bad\]" "$(cat "$CASE_DIR/err")"
	integ_config "$c" "$(printf '[shaping]\nproviders = %s/nonexistent.conf\n' "$CASE_DIR")"
	timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" shaping -c "$c"
	assert_eq "missing providers file: exit 78" 78 "$RUN_RC"
	# the shipped file loads beside the config (default path), and a main
	# file section replaces the shipped one of the same name
	cp "$INTEG_ROOT/sender/providers.conf" "$CASE_DIR/providers.conf"
	integ_config "$c" "$(printf '[provider google]\nmx = .google.test\nmax_rate = 1\n')"
	local m=$CASE_DIR/m.eml
	msg "$m"
	timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" send -c "$c" --from s@client.test --to u@ok.test "$m"
	assert_eq "shipped providers + override: send works" 0 "$RUN_RC" || show_run
}
run_case "configuration: a bad match is exit 78 naming file:line; a missing providers file is an error; the shipped file loads beside the config and a main-file section overrides it" t_config

t_suspend_5xx() {
	local c=$CASE_DIR/c.ini m=$CASE_DIR/m.eml
	integ_config "$c" "$(printf '[shaping]\nproviders = none\n\n[provider ms]\nmx = mx.ms.test\n\n[response ms-s3150]\nprovider = ms\nmatch = ^550 5\\.7\\.1 .*S3150\naction = suspend 1h\nclass = reputation\n')"
	msg "$m"
	send -c "$c" --from s@client.test --to u@ms.test "$m"
	assert_eq "exit status: deferred, not bounced" 75 "$RUN_RC" || show_run
	assert_match "the 550 is a deferral (the suspension's mail waits)" '^u@ms\.test deferred 550 5\.7\.1 ' \
		"$(cat "$CASE_DIR/out")"
	# without the rule the same reply bounces
	integ_config "$c" "$(printf '[shaping]\nproviders = none\n')"
	send -c "$c" --from s@client.test --to u@ms.test "$m"
	assert_eq "without the rule: bounced (69)" 69 "$RUN_RC"
}
run_case "suspend on a 5xx (Microsoft S3150): the recipient is deferred, not bounced" t_suspend_5xx

t_warmup() {
	start_redis -n warmup || { fail "redis"; return; }
	local c=$CASE_DIR/c.ini port=$REDIS_PORT i r
	local src='[source s1]
address = 127.0.64.1
warmup = 3 10

[source s2]
address = 127.0.64.2
%s

[pool wp]
sources = s1 s2

[domain ok.test]
pool = wp

[provider okp]
mx = mx.ok.test'
	# s2 without warm-up: s1's budget (3 today) spent, the rest goes through
	# s2 (jobs queued once the process knows today's counts: before its first
	# sync a source with warm-up lends its turn to the others)
	RETRY=1h conf "$c" "$(printf "$src" "")"
	integ_spawn run "$CASE_DIR/err" "$MXSEND" run -c "$c"
	sleep 2
	pipe_jobs "$port" 10 ok.test wa
	wait_until 20 n_done "$port" wa 10 || fail "not every wa job has a result"
	stop_proc run
	r=$(results "$port" id,status,source | grep '^wa-')
	assert_eq "every job delivered (none waits while s2 has room)" 10 "$(grep -c '|delivered|' <<<"$r")"
	assert_eq "s1 sent its day-0 budget, no more" 3 "$(grep -c "|s1\\[" <<<"$r")"
	assert_eq "s2 sent the rest" 7 "$(grep -c '|s2\[' <<<"$r")"
	local today=$(($(date +%s) / 86400))
	assert_eq "Redis: s1's first day" "$today" "$(rcli "$port" HGET mxsend:jobs:warmup:s1 first)"
	assert_eq "Redis: s1's count today for okp" 3 "$(rcli "$port" HGET mxsend:jobs:warmup:s1 "okp:$today")"
	# s2 with a budget too (2): the counts of today are in Redis (another
	# process): 2 more go, the rest waits for the next UTC day, no retry used
	RETRY=1h conf "$c" "$(printf "$src" "warmup = 2")"
	local mp m
	mp=$(with_metrics "$c") || { fail "metrics port"; return; }
	integ_spawn run "$CASE_DIR/err2" "$MXSEND" run -c "$c"
	sleep 2
	pipe_jobs "$port" 6 ok.test wb
	wait_until 20 n_done "$port" wb 6 || fail "not every wb job has a result"
	m=$(scrape "$mp") || fail "no /metrics from 127.0.0.1:$mp"
	stop_proc run
	assert_eq "metrics: four held back by warm-up" 4 \
		"$(mval "$m" 'mxsend_shaping_deferred_total{provider="okp",reason="warmup"}')"
	r=$(results "$port" id,status,source,dsn,shaped | grep '^wb-')
	assert_eq "two delivered, through s2" 2 "$(grep -c '|delivered|s2\[' <<<"$r")"
	assert_eq "four wait for tomorrow: 451 4.4.5, shaped=warmup" 4 \
		"$(grep -Ec '\|deferred\|s[12]\[[0-9.]+\]\|4\.4\.5\|warmup:s[12]/okp day=0 limit=[23]$' <<<"$r")"
	local due mid=$(((today + 1) * 86400000))
	due=$(rcli "$port" ZRANGE mxsend:jobs:retry 0 0 WITHSCORES | tail -n 1)
	assert_ge "parked until the next UTC day" "$mid" "${due%.*}"
}
n_done() { [ "$(results "$1" id | grep -c "^$2-")" -ge "$3" ]; }
run_case "warm-up: a source's daily budget per provider (day count in Redis) overflows to the pool's other source; with every source spent mail waits for the next day without using a retry" t_warmup

integ_finish
