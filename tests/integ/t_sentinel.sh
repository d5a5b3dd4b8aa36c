#!/usr/bin/env bash
# tests/integ/t_sentinel.sh: Redis Sentinel (README "Sentinel"). A master, a
# replica and three redis-sentinel processes on loopback:
#   - failover: the master is killed (SIGKILL) in the middle of a run of a
#     few thousand jobs to a slow sink; mxsend follows the sentinels to the
#     promoted replica without a restart; every job ends with exactly one
#     final result on the new master, none is lost, deliveries resume; the
#     figures (time without deliveries, duplicate deliveries) are printed;
#   - SENTINEL FAILOVER during a run (the old master stays up): one final
#     result per job; duplicates measured, and none beyond the jobs in
#     flight with min-replicas-to-write 1 on the servers;
#   - commands: enqueue, held, release, suppress, shaping, tlsrpt and run
#     find the master through the sentinels (the first one listed is down),
#     and after a failover (SENTINEL FAILOVER) write to the new master;
#   - hostile: sentinels that answer a bad address, or name a replica, are
#     not used: the job still goes to the master.
# shellcheck disable=SC2317 # case functions run indirectly, each in its run_case subshell
set -u
. "$(dirname "$0")/lib.sh"

integ_setup
integ_require mxsend mxsink redis-server redis-sentinel redis-cli unbound python3

N=${SENTINEL_JOBS:-3000} # jobs in the failover case
WAITN=${SENTINEL_WAIT:-1} # [redis] wait_replicas there (0: none, to compare)
if [ -z "$INTEG_MISSING" ]; then
	start_unbound "fo.test. MX 10 mx1.test.
mx1.test. A 127.0.76.1" || integ_missing "unbound"
	start_sink slow --listen "127.0.76.1:$SINK_PORT" --delay-ms 20 --threads 2 ||
		integ_missing "sink slow"
fi
MSG=$INTEG_DIR/msg.eml
printf 'Subject: sentinel test\nFrom: a@src.test\n\nhello\n' >"$MSG"

# setup NAME [ARG...]: a master (redis.NAME-m), its replica (redis.NAME-r) and three
# sentinels watching master NAME; ARG... more redis-server options for both.
# Sets M (master port), R (replica port) and SENTINELS (the [redis] sentinels value).
setup() {
	local name=$1
	shift
	start_redis -n "$name-m" -- "$@" || return 1
	M=$REDIS_PORT
	start_redis -n "$name-r" -- --replicaof 127.0.0.1 "$M" "$@" || return 1
	R=$REDIS_PORT
	wait_until 10 sh -c "redis-cli -p $R INFO replication | grep -q 'master_link_status:up'" ||
		{ fail "replica not in sync"; return 1; }
	SENTINELS=""
	local i
	for i in 1 2 3; do
		start_sentinel "$name-$i" "$name" "$M" 2 || return 1
		SENTINELS="${SENTINELS:+$SENTINELS,}127.0.0.1:$SENTINEL_PORT"
		eval "S$i=$SENTINEL_PORT"
	done
	# every sentinel knows the replica and the others (they find them in a
	# few seconds), so a failover can be agreed
	wait_until 20 sh -c "for s in $S1 $S2 $S3; do
		redis-cli -p \$s SENTINEL master $name | grep -qx 'num-other-sentinels' || exit 1
		[ \"\$(redis-cli -p \$s SENTINEL master $name | sed -n '/^num-other-sentinels\$/{n;p}')\" = 2 ] || exit 1
		[ \"\$(redis-cli -p \$s SENTINEL master $name | sed -n '/^num-slaves\$/{n;p}')\" = 1 ] || exit 1
	done" || { fail "sentinels did not find each other and the replica in 20 s"; return 1; }
}

# master_port NAME SENTINEL_PORT: the master's port, as that sentinel says.
master_port() {
	rcli "$2" SENTINEL get-master-addr-by-name "$1" | sed -n 2p
}

# conf FILE NAME SENTINELS [MORE]: mxsend with Sentinel (log info), MORE more [redis] lines.
conf() {
	integ_config "$1" "$(printf '[redis]\nsentinels = %s\nmaster_name = %s\nvisibility_timeout = 30s\n%s\n\n[retry]\nschedule = 1s\njitter = 0\n' \
		"$3" "$2" "${4:-}")"
	sed -i '/^\[mxsend\]/a log = info' "$1"
}

# The master killed mid-run: one final result per job, none lost, deliveries go on.
t_failover() {
	setup fo || return 1
	local c=$CASE_DIR/fo.conf md kill_at new
	conf "$c" fo "$SENTINELS" "$(printf 'wait_replicas = %s\nwait_timeout = 200ms' "$WAITN")"
	sed -i '/^\[mxsend\]/a max_inflight = 100' "$c"
	pipe_jobs "$M" "$N" "fo.test" fo
	assert_eq "jobs queued" "$N" "$(rcli "$M" XLEN mxsend:jobs)"
	assert_eq "jobs replicated" 1 "$(rcli "$M" WAIT 1 5000)"
	md=$(sink_maildir slow)
	local before
	before=$(sink_count slow)
	mx_start fo "$c" || return 1
	# mid-run: a third of the jobs delivered
	wait_until 60 sh -c "[ \$(ls $md | grep -c '\\.env\$') -ge $((before + N / 3)) ]" ||
		{ fail "not a third delivered in 60 s"; return 1; }
	kill_at=$(date +%s.%N)
	stop_proc "redis.fo-m" KILL
	wait_until 20 sh -c "[ \"\$(redis-cli -p $S1 SENTINEL get-master-addr-by-name fo | sed -n 2p)\" = $R ]" ||
		{ fail "no failover to the replica in 20 s"; return 1; }
	local switched_at
	switched_at=$(date +%s.%N)
	new=$R
	assert_eq "the replica is the master now" master "$(rcli "$new" ROLE | head -n 1)"
	# all of it done on the new master: nothing queued, pending or parked,
	# a result for each job
	wait_until 120 sh -c "[ \"\$(redis-cli -p $new XLEN mxsend:jobs)\" = 0 ] &&
		[ \"\$(redis-cli -p $new ZCARD mxsend:jobs:retry)\" = 0 ] &&
		[ \"\$(redis-cli -p $new XLEN mxsend:results)\" -ge $N ]" ||
		fail "not finished on the new master in 120 s (jobs $(rcli "$new" XLEN mxsend:jobs), results $(rcli "$new" XLEN mxsend:results))"
	sleep 1 # commits of duplicates on the wire, if any
	assert_eq "mxsend still running (no restart)" "" "$(cat "$CASE_DIR/fo/rc" 2>/dev/null)"
	assert_eq "mxsend stops cleanly" 0 "$(mx_stop fo TERM 20)"
	# one final result per job
	local res per lost dup_res
	res=$(results "$new" id,status)
	per=$(grep -c . <<<"$res")
	lost=$(awk -F'|' -v n="$N" '{ seen[$1] = 1 } END { m = 0; for (i = 1; i <= n; i++) if (!(("fo-" i) in seen)) m++; print m }' <<<"$res")
	dup_res=$(awk -F'|' '$2 != "deferred" { c[$1]++ } END { d = 0; for (k in c) if (c[k] > 1) d++; print d }' <<<"$res")
	assert_eq "jobs without a result on the new master (lost)" 0 "$lost"
	assert_eq "jobs with more than one final result" 0 "$dup_res"
	assert_eq "every result is delivered" 0 "$(grep -vc '|delivered$' <<<"$res")"
	assert_eq "results" "$N" "$per"
	# deliveries: duplicates (messages on the wire at the kill), and the gap
	local delivered dups gap after
	delivered=$(cat "$md"/*.eml | grep -c '^X-Job: fo-')
	dups=$(cat "$md"/*.eml | grep '^X-Job: fo-' | sort | uniq -d | wc -l)
	after=$(find "$md" -name '*.env' -newermt "@${switched_at%.*}" | wc -l)
	gap=$(find "$md" -name '*.env' -printf '%T@\n' | sort -n | awk -v k="$kill_at" '
		$1 >= k - 1 { if (p != "" && $1 - p > g) g = $1 - p; p = $1 } END { printf "%.2f", g }')
	assert_ge "deliveries after the failover" 1 "$after"
	assert_lt "duplicate deliveries at most the jobs in flight (100)" 101 "$dups"
	assert_match "mxsend followed the sentinels" 'evt=redis_(switch_master|master_changed)' \
		"$(cat "$CASE_DIR/fo/log")"
	local failover_s
	failover_s=$(awk -v a="$kill_at" -v b="$switched_at" 'BEGIN { printf "%.2f", b - a }')
	diag "failover figures: jobs=$N delivered=$delivered duplicates=$dups lost=$lost" \
		"longest time without deliveries=${gap}s (kill to sentinel switch ${failover_s}s)"
	echo "jobs=$N delivered=$delivered duplicates=$dups lost=$lost gap_s=$gap switch_s=$failover_s" \
		>>"$INTEG_DIR/failover.figures"
	return 0
}

# fake_sentinel NAME REPLY: a server on a fresh port that answers every
# command with REPLY (raw RESP, printf escapes): a sentinel gone bad. Sets FAKE_PORT.
fake_sentinel() {
	FAKE_PORT=$(integ_port) || return 1
	integ_spawn "fake.$1" "$INTEG_DIR/fake.$1.log" python3 -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
s.settimeout(120)
reply = sys.argv[2].encode().decode("unicode_escape").encode("latin-1")
def commands(buf):
    # complete RESP arrays of bulk strings in buf: (count, rest)
    n = 0
    while buf.startswith(b"*") and b"\r\n" in buf:
        head, rest = buf.split(b"\r\n", 1)
        ok = True
        for _ in range(int(head[1:])):
            if b"\r\n" not in rest:
                ok = False
                break
            ln, rest2 = rest.split(b"\r\n", 1)
            k = int(ln[1:])
            if len(rest2) < k + 2:
                ok = False
                break
            rest = rest2[k + 2:]
        if not ok:
            break
        buf = rest
        n += 1
    return n, buf
while True:
    c, _ = s.accept()
    c.settimeout(5)
    buf = b""
    try:
        while True:
            d = c.recv(4096)
            if not d:
                break
            n, buf = commands(buf + d)
            c.sendall(reply * n)
    except OSError:
        pass
    c.close()
' "$FAKE_PORT" "$2"
	wait_until 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$FAKE_PORT" 2>/dev/null ||
		fail "fake sentinel $1 not listening in 5 s: $(cat "$INTEG_DIR/fake.$1.log")"
}

# Every command that talks to Redis finds the master through the sentinels
# (the first one listed is down), and after a failover writes to the new one.
t_commands() {
	setup cm || return 1
	local c=$CASE_DIR/cm.conf dead out day
	dead=$(integ_port) || return 1 # reserved, nothing listens
	conf "$c" cm "127.0.0.1:$dead,$SENTINELS"
	day=$(date -u +%F)
	"$MXSEND" enqueue -c "$c" --from a@src.test --to c1@fo.test --id cm-1 "$MSG" >"$CASE_DIR/enq.out" 2>&1 ||
		fail "enqueue: $(cat "$CASE_DIR/enq.out")"
	assert_eq "enqueue wrote to the master" 1 "$(rcli "$M" XLEN mxsend:jobs)"
	assert_eq "held" 0 "$("$MXSEND" held -c "$c" >/dev/null 2>&1; echo $?)"
	assert_eq "release" "released 0" "$("$MXSEND" release -c "$c" --domain none.test 2>&1)"
	"$MXSEND" suppress add -c "$c" --reason t x1@fo.test >/dev/null 2>&1 || fail "suppress add"
	assert_match "suppress list" '^x1@fo\.test ' "$("$MXSEND" suppress list -c "$c" 2>&1)"
	assert_eq "suppress del" "deleted 1" "$("$MXSEND" suppress del -c "$c" x1@fo.test 2>&1)"
	assert_eq "shaping" 0 "$("$MXSEND" shaping -c "$c" >/dev/null 2>&1; echo $?)"
	timed_run 30 "$CASE_DIR/run1.out" "$CASE_DIR/run1.log" "$MXSEND" run -c "$c" --until-empty
	assert_eq "run: exit status" 0 "$RUN_RC"
	assert_eq "run delivered, result on the master" "cm-1|delivered" "$(results "$M" id,status)"
	timed_run 20 "$CASE_DIR/send.out" "$CASE_DIR/send.err" "$MXSEND" send -c "$c" \
		--from a@src.test --to s1@fo.test "$MSG"
	assert_eq "send: exit status" 0 "$RUN_RC"
	assert_no_match "send: TLSRPT counters written" 'warning' "$(cat "$CASE_DIR/send.err")"
	timed_run 20 "$CASE_DIR/rpt.out" "$CASE_DIR/rpt.err" "$MXSEND" tlsrpt -c "$c" --dry-run --day "$day"
	assert_eq "tlsrpt --dry-run: exit status" 0 "$RUN_RC"
	assert_match "tlsrpt read the counters" 'fo\.test' "$(cat "$CASE_DIR/rpt.out" "$CASE_DIR/rpt.err")"
	# a failover (the old master becomes a replica): the same config goes to the new one
	assert_eq "SENTINEL FAILOVER" OK "$(rcli "$S1" SENTINEL FAILOVER cm)"
	wait_until 20 sh -c "[ \"\$(redis-cli -p $S2 SENTINEL get-master-addr-by-name cm | sed -n 2p)\" = $R ] &&
		redis-cli -p $R ROLE | head -n 1 | grep -qx master &&
		redis-cli -p $M ROLE | head -n 1 | grep -qx slave" || { fail "no failover in 20 s"; return 1; }
	"$MXSEND" enqueue -c "$c" --from a@src.test --to c2@fo.test --id cm-2 "$MSG" >"$CASE_DIR/enq2.out" 2>&1 ||
		fail "enqueue after the failover: $(cat "$CASE_DIR/enq2.out")"
	timed_run 30 "$CASE_DIR/run2.out" "$CASE_DIR/run2.log" "$MXSEND" run -c "$c" --until-empty
	assert_eq "run after the failover: exit status" 0 "$RUN_RC"
	assert_match "run after the failover: the new master" "evt=redis_master addr=127\.0\.0\.1:$R " \
		"$(cat "$CASE_DIR/run2.log")"
	out=$(results "$R" id,status)
	assert_match "results on the new master" 'cm-1\|delivered' "$out"
	assert_match "the job queued after the failover delivered" 'cm-2\|delivered' "$out"
}

# Sentinels that answer a bad address (port out of range, not a host name)
# or name a replica are not used: the job goes to the real master.
t_hostile() {
	setup ho || return 1
	local c=$CASE_DIR/ho.conf f1 f2 f3
	fake_sentinel badport '*2\r\n$9\r\n127.0.0.1\r\n$5\r\n99999\r\n' || return 1
	f1=$FAKE_PORT
	fake_sentinel badhost '*2\r\n$11\r\nevil host!\n\r\n$4\r\n6379\r\n' || return 1
	f2=$FAKE_PORT
	fake_sentinel replica "*2\r\n\$9\r\n127.0.0.1\r\n\$${#R}\r\n$R\r\n" || return 1
	f3=$FAKE_PORT
	conf "$c" ho "127.0.0.1:$f1,127.0.0.1:$f2,127.0.0.1:$f3,$SENTINELS"
	"$MXSEND" enqueue -c "$c" --from a@src.test --to h1@fo.test --id ho-1 "$MSG" >"$CASE_DIR/enq.out" 2>&1 ||
		fail "enqueue: $(cat "$CASE_DIR/enq.out")"
	assert_eq "enqueue wrote to the master" 1 "$(rcli "$M" XLEN mxsend:jobs)"
	timed_run 30 "$CASE_DIR/run.out" "$CASE_DIR/run.log" "$MXSEND" run -c "$c" --until-empty
	assert_eq "run: exit status" 0 "$RUN_RC"
	assert_eq "delivered, result on the master" "ho-1|delivered" "$(results "$M" id,status)"
	assert_match "the replica a sentinel named was not used" "evt=redis_not_master .*addr=127\.0\.0\.1:$R" \
		"$(cat "$CASE_DIR/run.log")"
	assert_match "then the master" "evt=redis_master_changed from=127\.0\.0\.1:$R to=127\.0\.0\.1:$M" \
		"$(cat "$CASE_DIR/run.log")"
	assert_match "the bad answers skipped" "evt=sentinel_skipped sentinel=127\.0\.0\.1:$f2 err=\"bad answer" \
		"$(cat "$CASE_DIR/run.log")"
}

# A failover by the operator (SENTINEL FAILOVER) in the middle of a run: the
# old master stays up as a replica (its clients see READONLY, a blocked read
# UNBLOCKED); mxsend moves to the new one, one final result per job.
t_graceful() {
	local gf=$1 most=$2 # most: duplicate deliveries allowed
	shift 2
	setup "$gf" "$@" || return 1
	local c=$CASE_DIR/gf.conf md n=1000 before res dups
	conf "$c" "$gf" "$SENTINELS"
	sed -i '/^\[mxsend\]/a max_inflight = 50' "$c"
	pipe_jobs "$M" "$n" "fo.test" "$gf"
	assert_eq "jobs replicated" 1 "$(rcli "$M" WAIT 1 5000)"
	md=$(sink_maildir slow)
	before=$(sink_count slow)
	mx_start "$gf" "$c" || return 1
	wait_until 60 sh -c "[ \$(ls $md | grep -c '\\.env\$') -ge $((before + n / 3)) ]" ||
		{ fail "not a third delivered in 60 s"; return 1; }
	assert_eq "SENTINEL FAILOVER" OK "$(rcli "$S1" SENTINEL FAILOVER "$gf")"
	wait_until 90 sh -c "[ \"\$(redis-cli -p $R XLEN mxsend:jobs)\" = 0 ] &&
		[ \"\$(redis-cli -p $R XLEN mxsend:results)\" -ge $n ]" ||
		fail "not finished on the new master in 90 s (jobs $(rcli "$R" XLEN mxsend:jobs), results $(rcli "$R" XLEN mxsend:results))"
	sleep 1
	assert_eq "mxsend stops cleanly" 0 "$(mx_stop "$gf" TERM 20)"
	wait_until 20 sh -c "redis-cli -p $M ROLE | head -n 1 | grep -qx slave" ||
		fail "the old master is not a replica 20 s later"
	res=$(results "$R" id,status)
	assert_eq "jobs without a result (lost)" 0 "$(awk -F'|' -v n="$n" -v g="$gf" '{ s[$1] = 1 } END { m = 0
		for (i = 1; i <= n; i++) if (!((g "-" i) in s)) m++; print m }' <<<"$res")"
	assert_eq "jobs with more than one final result" 0 \
		"$(awk -F'|' '{ c[$1]++ } END { d = 0; for (k in c) if (c[k] > 1) d++; print d }' <<<"$res")"
	assert_eq "every result is delivered" 0 "$(grep -vc '|delivered$' <<<"$res")"
	assert_match "mxsend followed the switch" 'evt=redis_(switch_master|master_changed|readonly)' \
		"$(cat "$CASE_DIR/$gf/log")"
	dups=$(cat "$md"/*.eml | grep "^X-Job: $gf-" | sort | uniq -d | wc -l)
	assert_lt "duplicate deliveries" "$((most + 1))" "$dups"
	echo "SENTINEL FAILOVER ($*): duplicates=$dups" >>"$INTEG_DIR/failover.figures"
}

# wait_replicas: the replica stalls (SIGSTOP), so a commit's WAIT is pending
# when the master is killed; mxsend sends that commit again to the promoted
# replica (evt=commit_unconfirmed) instead of taking it as done. The old
# master comes back as a replica of the new one, so WAITs succeed again.
t_wait() {
	setup wt || return 1
	local c=$CASE_DIR/wt.conf md n=300 before res rpid
	conf "$c" wt "$SENTINELS" "$(printf 'wait_replicas = 1\nwait_timeout = 10s')"
	sed -i '/^\[mxsend\]/a max_inflight = 20' "$c"
	pipe_jobs "$M" "$n" "fo.test" wt
	assert_eq "jobs replicated" 1 "$(rcli "$M" WAIT 1 5000)"
	md=$(sink_maildir slow)
	before=$(sink_count slow)
	mx_start wt "$c" || return 1
	wait_until 60 sh -c "[ \$(ls $md | grep -c '\\.env\$') -ge $((before + n / 3)) ]" ||
		{ fail "not a third delivered in 60 s"; return 1; }
	rpid=$(proc_pid redis.wt-r) || { fail "no replica pid"; return 1; }
	kill -STOP "$rpid"
	sleep 1 # commits wait for the stalled replica (up to 10 s)
	stop_proc "redis.wt-m" KILL
	kill -CONT "$rpid"
	wait_until 30 sh -c "[ \"\$(redis-cli -p $S1 SENTINEL get-master-addr-by-name wt | sed -n 2p)\" = $R ]" ||
		{ fail "no failover to the replica in 30 s"; return 1; }
	start_redis -n wt-m -- --replicaof 127.0.0.1 "$R" || return 1
	wait_until 90 sh -c "[ \"\$(redis-cli -p $R XLEN mxsend:jobs)\" = 0 ] &&
		[ \"\$(redis-cli -p $R XLEN mxsend:results)\" -ge $n ]" ||
		fail "not finished on the new master in 90 s (jobs $(rcli "$R" XLEN mxsend:jobs), results $(rcli "$R" XLEN mxsend:results))"
	sleep 1
	assert_eq "mxsend stops cleanly" 0 "$(mx_stop wt TERM 20)"
	res=$(results "$R" id,status)
	assert_eq "jobs without a result (lost)" 0 "$(awk -F'|' -v n="$n" '{ s[$1] = 1 } END { m = 0
		for (i = 1; i <= n; i++) if (!(("wt-" i) in s)) m++; print m }' <<<"$res")"
	assert_eq "jobs with more than one final result" 0 \
		"$(awk -F'|' '{ c[$1]++ } END { d = 0; for (k in c) if (c[k] > 1) d++; print d }' <<<"$res")"
	assert_match "the unconfirmed commit was sent again" 'evt=commit_unconfirmed' "$(cat "$CASE_DIR/wt/log")"
	local dups
	dups=$(cat "$md"/*.eml | grep '^X-Job: wt-' | sort | uniq -d | wc -l)
	assert_lt "duplicate deliveries (at most the jobs claimed while the replica stalled)" 21 "$dups"
	echo "replica stalled, master killed, wait_replicas = 1: duplicates=$dups" >>"$INTEG_DIR/failover.figures"
}

run_case "commands find the master through the sentinels, and follow a failover" t_commands
run_case "wait_replicas: a commit not yet on the replica is sent again to the new master" t_wait
run_case "SENTINEL FAILOVER during a run: one final result per job on the new master" t_graceful gf 1000
run_case "... with min-replicas-to-write 1: no duplicate beyond the jobs in flight (50)" t_graceful gm 50 \
	--min-replicas-to-write 1
run_case "sentinels naming a bad address or a replica are not used" t_hostile
run_case "master killed mid-run: one final result per job, none lost, deliveries resume" t_failover
[ -s "$INTEG_DIR/failover.figures" ] && sed 's/^/# failover: /' "$INTEG_DIR/failover.figures"
integ_finish
