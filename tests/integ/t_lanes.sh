#!/usr/bin/env bash
# tests/integ/t_lanes.sh: priority lanes (README "Lanes"): `mxsend run` with
# [redis] lanes against a real redis-server: claims shared by weight, a
# transactional job behind a bulk backlog delivered before the backlog drains
# (claimed at the next claim, first in line for a connection to its MX host),
# retries and held jobs kept in their lane, enqueue --lane, bad lane config.
. "$(dirname "$0")/lib.sh"

integ_setup
integ_require mxsend mxsink redis-server redis-cli unbound

DNS_SPEC="
fast.test. MX 10 mx1.test.
mx1.test. A 127.0.4.1
slow.test. MX 10 mx2.test.
mx2.test. A 127.0.4.2
flaky.test. MX 10 mx3.test.
mx3.test. A 127.0.4.3
held.test. MX 10 mx4.test.
mx4.test. A 127.0.4.4
"
if [ -z "$INTEG_MISSING" ]; then
	start_unbound "$DNS_SPEC" || integ_missing "unbound"
	start_sink fast --listen "127.0.4.1:$SINK_PORT" --threads 2 || integ_missing "sink fast"
	start_sink slow --listen "127.0.4.2:$SINK_PORT" --threads 2 --delay-ms 10 || integ_missing "sink slow"
	start_sink flaky --listen "127.0.4.3:$SINK_PORT" --rcpt 'later*=451 4.3.0 not now' ||
		integ_missing "sink flaky"
	start_sink plain --listen "127.0.4.4:$SINK_PORT" --no-starttls || integ_missing "sink plain"
fi

FIG=$INTEG_DIR/figures
: >"$FIG"

MSG=$INTEG_DIR/msg.eml
printf 'Subject: lanes test\nFrom: a@src.test\n\nhello\n' >"$MSG"

# mkconf FILE REDIS_URL LANES [MORE]: the run's config with [redis] lanes =
# LANES (none when empty), retries every second, then MORE (INI text).
mkconf() {
	local lanes=
	[ -n "$3" ] && lanes="lanes = $3"
	integ_config "$1" "$(printf '[redis]\nurl = %s\nvisibility_timeout = 5s\n%s\n\n[retry]\nschedule = 1s\njitter = 0\n\n%s\n' \
		"$2" "$lanes" "${4:-}")"
}

# Predicates for wait_until.
results_has() { results "$1" | grep -Eq -- "$2"; }              # PORT ERE
results_ge() { [ "$(results "$1" | grep -Ec -- "$2")" -ge "$3" ]; } # PORT ERE MIN
redis_is() { [ "$(rcli "$1" "${@:3}")" = "$2" ]; }              # PORT VALUE ARG...

# latency_ms PORT ID: ms from the XADD of job ID (its entry id) to its
# `delivered` result (the result entry's id), both Redis's clock.
LAT_LUA="for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
local f, m = e[2], {} for i = 1, #f, 2 do m[f[i]] = f[i + 1] end
if m.id == ARGV[1] and m.status == 'delivered' then
return tonumber(string.match(e[1], '^(%d+)')) - tonumber(string.match(m.job, '^(%d+)')) end end
return -1"
latency_ms() {
	rcli "$1" EVAL "$LAT_LUA" 1 mxsend:results "$2"
}

# ---------------------------------------------------------------------------
# cases

# Lanes a:3 and b:1, 400 jobs queued in each, claims of 4 at a time: a lane
# gets its weight's share of the claims while both have jobs (3 of every 4),
# then the other drains; each job once.
t_weights() {
	start_redis -n weights || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/w.conf
	mkconf "$conf" "$REDIS_URL" "a:3 b:1" "$(printf '[pool]\nreuse_max = 1000\n')"
	sed -i '/^\[mxsend\]/a max_inflight = 16\nworkers = 1' "$conf"
	sed -i '/^\[redis\]/a batch = 4' "$conf"
	PIPE_STREAM=mxsend:jobs:lane:a pipe_jobs "$p" 400 fast.test a || fail "queue a"
	PIPE_STREAM=mxsend:jobs:lane:b pipe_jobs "$p" 400 fast.test b || fail "queue b"
	assert_eq "lane a queued" 400 "$(rcli "$p" XLEN mxsend:jobs:lane:a)"
	mx_start run "$conf" || return 1
	wait_until 60 results_ge "$p" '\|delivered\|' 800 || fail "not all 800 delivered within 60 s"
	assert_eq "exit status" 0 "$(mx_stop run)"
	local r first na
	r=$(results "$p" id,status)
	assert_eq "delivered" 800 "$(grep -c '|delivered$' <<<"$r")"
	assert_eq "each once" 800 "$(cut -d'|' -f1 <<<"$r" | sort -u | grep -c .)"
	# the first 400 results: 3 of every 4 from a (300), give or take the first claim
	first=$(head -n 400 <<<"$r")
	na=$(grep -c '^a-' <<<"$first")
	echo "lanes: weights a:3 b:1: the first 400 results, $na from a, $((400 - na)) from b" >>"$FIG"
	assert_ge "lane a's share of the first 400 (about 300)" 270 "$na"
	assert_ge "lane b's share of the first 400 (about 100)" 70 "$((400 - na))"
	assert_eq "lanes empty" "0 0" "$(rcli "$p" XLEN mxsend:jobs:lane:a) $(rcli "$p" XLEN mxsend:jobs:lane:b)"
	assert_eq "the default lane's stream exists (group made)" 0 "$(rcli "$p" XLEN mxsend:jobs)"
}

# 20,000 bulk jobs on one MX host that takes ~10 ms a reply, two connections
# (max_connections = 2): the backlog takes minutes. A transactional job to the
# same host, enqueued with --lane, is claimed at once (the first lane's
# reserve of max_inflight) and takes the next free connection ahead of the
# bulk jobs already waiting for one: it is delivered within 1 s while most of
# the backlog still waits.
t_behind_backlog() {
	start_redis -n backlog || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/b.conf id lat left
	mkconf "$conf" "$REDIS_URL" "transactional:8 bulk:1" \
		"$(printf '[domain slow.test]\nmax_connections = 2\n')"
	# bulk jobs fill max_inflight for good: without the first lane's reserve
	# a claim would wait for a quarter of it (250 jobs, ~10 s here) to finish
	sed -i '/^\[mxsend\]/a max_inflight = 1000' "$conf"
	PIPE_STREAM=mxsend:jobs:lane:bulk pipe_jobs "$p" 20000 slow.test bulk || fail "queue bulk"
	mx_start run "$conf" || return 1
	wait_until 30 results_ge "$p" '^bulk-.*\|delivered\|' 20 || fail "no bulk delivered within 30 s"
	local k
	for k in 1 2 3; do
		id=$("$MXSEND" enqueue -c "$conf" --lane transactional --from a@src.test --to tx@slow.test \
			--id "tx$k" "$MSG") || fail "enqueue tx$k"
		assert_match "tx$k: an entry id of the transactional lane" '^[0-9]+-[0-9]+$' "$id"
		wait_until 10 results_has "$p" "^tx$k\|.*\|delivered\|" || fail "tx$k not delivered within 10 s"
		lat=$(latency_ms "$p" "tx$k")
		echo "lanes: tx$k behind the bulk backlog: XADD to delivered ${lat} ms" >>"$FIG"
		assert_ge "tx$k delivered (latency known)" 0 "$lat"
		assert_lt "tx$k: XADD to delivered under 1 s" 1000 "$lat"
	done
	left=$(rcli "$p" XLEN mxsend:jobs:lane:bulk)
	echo "lanes: bulk jobs not yet delivered then: $left of 20000" >>"$FIG"
	assert_ge "bulk jobs still queued (not delivered before tx)" 15000 "$left"
	assert_eq "exit status" 0 "$(mx_stop run TERM 40)"
}

# A deferred job of a lane parks in that lane's retry set and comes back to
# that lane; a held one goes to the lane's held set, `mxsend held` names the
# lane, `mxsend release` puts it back in the lane.
t_retry_held() {
	start_redis -n retry || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/r.conf
	mkconf "$conf" "$REDIS_URL" "tx:2 default:1" \
		"$(printf '[domain held.test]\ntls = encrypt\non_tls_failure = hold\n')"
	"$MXSEND" enqueue -c "$conf" --lane tx --from a@src.test --to later@flaky.test --id r1 \
		--expires 4 "$MSG" >/dev/null || fail "enqueue r1"
	"$MXSEND" enqueue -c "$conf" --lane tx --from a@src.test --to h@held.test --id h1 \
		"$MSG" >/dev/null || fail "enqueue h1"
	mx_start run "$conf" || return 1
	wait_until 15 results_has "$p" '^r1\|.*\|deferred\|' || fail "r1 not deferred"
	wait_until 5 redis_is "$p" 1 ZCARD mxsend:jobs:lane:tx:retry || fail "r1 not in the lane's retry set"
	assert_eq "nothing in the default lane's retry set" 0 "$(rcli "$p" ZCARD mxsend:jobs:retry)"
	wait_until 15 results_has "$p" '^r1\|.*\|expired\|' || fail "r1 not expired after its retries"
	wait_until 10 redis_is "$p" 1 ZCARD mxsend:jobs:lane:tx:held || fail "h1 not in the lane's held set"
	assert_eq "nothing in the default lane's held set" 0 "$(rcli "$p" ZCARD mxsend:jobs:held)"
	assert_eq "exit status" 0 "$(mx_stop run)"
	local r
	r=$(results "$p" id,status,attempt)
	assert_match "r1 retried (attempt 2 or more)" '^r1\|(deferred|expired)\|[2-9]$' "$r"
	assert_match "held lists the lane" '^[0-9]+-[0-9]+/held\.test domain=held\.test .* lane=tx$' \
		"$("$MXSEND" held -c "$conf")"
	assert_eq "release" "released 1" "$("$MXSEND" release -c "$conf" --domain held.test)"
	assert_eq "back in the lane's stream" 1 "$(rcli "$p" XLEN mxsend:jobs:lane:tx)"
	assert_eq "not in the default lane's" 0 "$(rcli "$p" XLEN mxsend:jobs)"
}

# enqueue --lane: a configured lane's stream; an unknown lane exits 64 and
# queues nothing; without lanes only `default` exists.
t_enqueue_lane() {
	start_redis -n enqueue || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/e.conf none=$CASE_DIR/n.conf
	mkconf "$conf" "$REDIS_URL" "transactional:8 bulk:1"
	mkconf "$none" "$REDIS_URL" ""
	timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" enqueue -c "$conf" --lane bulk \
		--from a@src.test --to u@fast.test "$MSG"
	assert_eq "bulk: exit status" 0 "$RUN_RC"
	assert_eq "in the bulk lane" 1 "$(rcli "$p" XLEN mxsend:jobs:lane:bulk)"
	timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" enqueue -c "$conf" --lane default \
		--from a@src.test --to u@fast.test "$MSG"
	assert_eq "default: exit status" 0 "$RUN_RC"
	assert_eq "default is mxsend:jobs" 1 "$(rcli "$p" XLEN mxsend:jobs)"
	timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" enqueue -c "$conf" --lane nosuch \
		--from a@src.test --to u@fast.test "$MSG"
	assert_eq "unknown lane: exit status" 64 "$RUN_RC"
	assert_match "unknown lane: said" 'unknown lane "nosuch"' "$(cat "$CASE_DIR/err")"
	timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" enqueue -c "$none" --lane bulk \
		--from a@src.test --to u@fast.test "$MSG"
	assert_eq "no lanes configured, --lane bulk: exit status" 64 "$RUN_RC"
	assert_eq "nothing queued by them" "" "$(rcli "$p" KEYS '*nosuch*')"
	assert_eq "bulk lane unchanged" 1 "$(rcli "$p" XLEN mxsend:jobs:lane:bulk)"
	# both delivered by run
	mx_start run "$conf" || return 1
	wait_until 15 results_ge "$p" '\|delivered\|' 2 || fail "not both delivered"
	assert_eq "exit status" 0 "$(mx_stop run)"
}

# kill -9 with jobs of two lanes in flight, then a new process: the dead
# one's pending entries of each lane are claimed from that lane within 15 s
# (heartbeat), every job ends with one delivered result, nothing is left
# pending in any lane.
t_kill_restart() {
	start_redis -n kill || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/k.conf pa pb ln
	mkconf "$conf" "$REDIS_URL" "tx:4 bulk:1" "$(printf '[domain slow.test]\nmax_connections = 4\n')"
	sed -i 's/^visibility_timeout = 5s$/visibility_timeout = 5m/' "$conf"
	PIPE_STREAM=mxsend:jobs:lane:bulk pipe_jobs "$p" 1500 slow.test kb || fail "queue bulk"
	PIPE_STREAM=mxsend:jobs:lane:tx pipe_jobs "$p" 300 slow.test kt || fail "queue tx"
	mx_start run0 "$conf" || return 1
	wait_until 60 results_ge "$p" '\|delivered\|' 100 || fail "fewer than 100 delivered in 60 s"
	assert_eq "run0 killed" 137 "$(mx_stop run0 KILL)"
	pa=$(rcli "$p" XPENDING mxsend:jobs:lane:bulk mxsend | head -n 1)
	pb=$(rcli "$p" XPENDING mxsend:jobs:lane:tx mxsend | head -n 1)
	assert_ge "bulk entries left pending by the killed process" 1 "$pa"
	mx_start run1 "$conf" || return 1
	wait_until 240 results_ge "$p" '\|delivered\|' 1800 || fail "not all 1800 delivered within 240 s"
	assert_eq "run1 exit status" 0 "$(mx_stop run1)"
	assert_match "run1 claimed the dead consumer's bulk entries" \
		'evt=dead_consumers claimed=[1-9][0-9]* .* lane=bulk' "$(cat "$CASE_DIR/run1/log")"
	local r
	r=$(results "$p" id,status | grep '|delivered$' | cut -d'|' -f1)
	assert_eq "distinct jobs delivered" 1800 "$(sort -u <<<"$r" | grep -c .)"
	assert_eq "delivered results (one each)" 1800 "$(grep -c . <<<"$r")"
	for ln in bulk tx; do
		assert_eq "lane $ln: nothing left" "0 0" \
			"$(rcli "$p" XLEN "mxsend:jobs:lane:$ln") $(rcli "$p" XPENDING "mxsend:jobs:lane:$ln" mxsend | head -n 1)"
	done
	echo "lanes: kill -9 left $pa bulk and $pb tx entries pending; all 1800 delivered once after the restart" >>"$FIG"
}

# A bad lanes value is a start-up error naming the file and line (exit 78).
t_bad_config() {
	local conf=$CASE_DIR/bad.conf v
	for v in "tx:0 bulk" "tx tx" "a/b:1" "tx:8 bulk:1001"; do
		mkconf "$conf" "redis://127.0.0.1:1/0" "$v"
		timed_run 10 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" run -c "$conf"
		assert_eq "lanes = $v: exit status" 78 "$RUN_RC"
		assert_match "lanes = $v: file and line" "$(re_escape "$conf"):[0-9]+: lanes: lane " \
			"$(cat "$CASE_DIR/err")"
	done
}

run_case "weights a:3 b:1: 3 of every 4 claims from a while both have jobs; all delivered once" t_weights
run_case "a transactional job behind 20,000 bulk jobs on one slow MX host: delivered within 1 s" t_behind_backlog
run_case "retries and held jobs stay in their lane; held names it; release puts it back there" t_retry_held
run_case "enqueue --lane: the lane's stream; unknown lane exits 64" t_enqueue_lane
run_case "kill -9 with two lanes in flight, restart: each lane's pending entries taken back, one result each" t_kill_restart
run_case "bad [redis] lanes: exit 78 naming file:line" t_bad_config
sed 's/^/# /' "$FIG"
integ_finish
