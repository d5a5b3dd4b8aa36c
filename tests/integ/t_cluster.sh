#!/usr/bin/env bash
# tests/integ/t_cluster.sh: mxsend on Redis Cluster ([redis] cluster = yes,
# prefix = {mxsend}; README "Redis Cluster").
#   t_keys      one node serving every slot, watched with MONITOR through a
#               whole flow, with lanes (enqueue, delivery, bounce with automatic
#               suppression, a suppressed job, retries moved back, expiry,
#               held/release, TLSRPT counters, MTA-STS load, shaping list):
#               every key of every command is in the queue's slot and every
#               key a script touches was declared in its KEYS
#               (tests/integ/cluster_keys.py); a config whose keys would span
#               slots is refused.
#   t_failover  three masters and three replicas (redis-cli --cluster create),
#               a few thousand jobs: the queue's master handed over to its
#               replica (CLUSTER FAILOVER: MOVED) and later killed with -9
#               (promotion: connection lost) mid-run; no job lost, one final
#               result each; duplicates and the time without deliveries are
#               reported.
#   t_migrate   three masters: the queue's slot migrated key by key to another
#               master mid-run (ASK, TRYAGAIN, then MOVED): no job lost, one
#               final result each.
# shellcheck disable=SC2317 # case functions run indirectly, each in its run_case subshell
set -u
. "$(dirname "$0")/lib.sh"

integ_setup
integ_require mxsend mxsink redis-server redis-cli unbound python3
CHECK_KEYS=$INTEG_LIB_DIR/cluster_keys.py
FIG=$INTEG_DIR/figures
: >"$FIG"

if [ -z "$INTEG_MISSING" ]; then
	start_unbound "ok.test. MX 10 mx1.test.
mx1.test. A 127.0.77.1
held.test. MX 10 mx2.test.
mx2.test. A 127.0.77.2
big.test. MX 10 mx3.test.
mx3.test. A 127.0.77.3" || integ_missing "unbound"
	start_sink good --listen "127.0.77.1:$SINK_PORT" \
		--rcpt 'bounce*=550 5.1.1 no such user' --rcpt 'defer*=451 4.2.0 try later' ||
		integ_missing "sink good"
	start_sink plain --listen "127.0.77.2:$SINK_PORT" --no-starttls || integ_missing "sink plain"
	start_sink big --listen "127.0.77.3:$SINK_PORT" --threads 2 || integ_missing "sink big"
fi
MSG=$INTEG_DIR/msg.eml
printf 'Subject: cluster test\nFrom: a@src.test\n\nhello\n' >"$MSG"

# cnode NAME [ARG...]: a redis-server in cluster mode on 127.0.0.1 (its port and
# bus port from the run's block), node timeout 1 s; prints the port.
cnode() {
	local name=$1 dir=$CASE_DIR/$1 port bus i
	shift
	mkdir -p "$dir"
	port=$(integ_port) && bus=$(integ_port) || return 1
	integ_spawn "cnode.$name" "$dir/stderr.log" redis-server --bind 127.0.0.1 --port "$port" \
		--cluster-enabled yes --cluster-port "$bus" --cluster-config-file "$dir/nodes.conf" \
		--cluster-node-timeout 1000 --save "" --appendonly no --dir "$dir" \
		--logfile "$dir/redis.log" "$@"
	echo "$SPAWN_PID" >"$dir/pid"
	for ((i = 0; i < 50; i++)); do
		[ "$(redis_ping "$port")" = PONG ] && { echo "$port"; return 0; }
		sleep 0.1
	done
	return 1
}

role_is() { [ "$(rcli "$1" ROLE 2>/dev/null | head -n 1)" = "$2" ]; } # PORT master|slave
link_up() { rcli "$1" INFO replication | tr -d '\r' | grep -qx 'master_link_status:up'; } # PORT
cstate_ok() { rcli "$1" CLUSTER INFO | tr -d '\r' | grep -qx 'cluster_state:ok'; }

# make_cluster NODES REPLICAS: NODES nodes (cnode n1, n2...) made a cluster by
# redis-cli --cluster create with REPLICAS replicas per master; waits until
# every node says ok. Sets PORTS (array) and CLUSTER_PORTS (a string).
make_cluster() {
	local i p addrs=()
	PORTS=()
	for ((i = 1; i <= $1; i++)); do
		p=$(cnode "n$i") || { fail "node $i did not start"; return 1; }
		PORTS+=("$p")
		addrs+=("127.0.0.1:$p")
	done
	CLUSTER_PORTS="${PORTS[*]}"
	timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$2" --cluster-yes \
		>"$CASE_DIR/create.log" 2>&1 || { fail "cluster create failed" "$(tail -n 5 "$CASE_DIR/create.log")"; return 1; }
	for p in "${PORTS[@]}"; do
		wait_until 20 cstate_ok "$p" || { fail "node $p not ok within 20 s"; return 1; }
	done
}

# conf FILE SEED_PORT [REDIS_KEYS] [MORE]: a config for the cluster node at SEED_PORT.
conf() {
	integ_config "$1" "$(printf '[redis]\nurl = redis://127.0.0.1:%s\ncluster = yes\nprefix = {mxsend}\nvisibility_timeout = 5s\n%s\n\n[retry]\nschedule = 1s\njitter = 0\n\n%s\n' \
		"$2" "${3:-}" "${4:-}")"
	sed -i '/^\[mxsend\]/a log = info' "$1"
}

K='{mxsend}'
# results PORT: id|rcpt|status of every entry of {mxsend}:results at PORT.
cresults() {
	rcli "$1" EVAL "$RESULTS_LUA" 1 "$K:results" id,rcpt,status
}
results_has() { cresults "$1" | grep -Eq -- "$2"; }
redis_is() { [ "$(rcli "$1" "${@:3}")" = "$2" ]; } # PORT VALUE ARG...

t_keys() {
	local p mon conf=$CASE_DIR/c.conf bad=$CASE_DIR/bad.conf slot out
	p=$(cnode one) || return 1
	rcli "$p" CLUSTER ADDSLOTSRANGE 0 16383 >/dev/null
	wait_until 10 cstate_ok "$p" || { fail "one-node cluster not ok within 10 s"; return 1; }
	# the slot function against the server's
	slot=$(rcli "$p" CLUSTER KEYSLOT "$K:jobs")
	assert_eq "CLUSTER KEYSLOT {mxsend}:jobs = KEYSLOT mxsend" "$(rcli "$p" CLUSTER KEYSLOT mxsend)" "$slot"
	assert_eq "CLUSTER KEYSLOT foo{}{bar} (test_cluster.c)" 8363 "$(rcli "$p" CLUSTER KEYSLOT 'foo{}{bar}')"
	# keys that would span slots are refused up front
	conf "$bad" "$p" "jobs = mxsend:jobs"
	out=$("$MXSEND" run -c "$bad" 2>&1)
	assert_eq "untagged jobs key with cluster = yes: exit" 78 "$?"
	assert_match "it says why" 'must share the hash tag' "$out"

	conf "$conf" "$p" "lanes = transactional:3 bulk:1" \
		"$(printf '[domain held.test]\ntls = encrypt\non_tls_failure = hold\n')"
	mon=$CASE_DIR/monitor.txt
	timeout 120 redis-cli -h 127.0.0.1 -p "$p" MONITOR >"$mon" 2>&1 &
	local monpid=$!
	sleep 0.3
	"$MXSEND" enqueue -c "$conf" --from a@src.test --to u1@ok.test --to bounce1@ok.test --id k1 "$MSG" \
		>/dev/null || fail "enqueue k1"
	"$MXSEND" enqueue -c "$conf" --from a@src.test --to defer1@ok.test --id k2 --expires 3 "$MSG" \
		>/dev/null || fail "enqueue k2"
	"$MXSEND" enqueue -c "$conf" --from a@src.test --to h1@held.test --id k3 --lane transactional \
		"$MSG" >/dev/null || fail "enqueue k3"
	"$MXSEND" suppress add -c "$conf" --reason test blocked@ok.test >/dev/null || fail "suppress add"
	mx_start run "$conf" || return 1
	wait_until 20 results_has "$p" '^k1\|bounce1@ok\.test\|bounced$' || fail "k1 not bounced"
	"$MXSEND" enqueue -c "$conf" --from a@src.test --to bounce1@ok.test --to blocked@ok.test \
		--id k4 "$MSG" >/dev/null || fail "enqueue k4"
	wait_until 20 results_has "$p" '^k2\|defer1@ok\.test\|expired$' || fail "k2 not expired"
	wait_until 10 results_has "$p" '^k4\|bounce1@ok\.test\|suppressed$' || fail "k4 not suppressed"
	wait_until 10 results_has "$p" '^k3\|h1@held\.test\|held$' || fail "k3 not held"
	assert_match "held list" 'domain=held\.test' "$("$MXSEND" held -c "$conf")"
	assert_eq "release" "released 1" "$("$MXSEND" release -c "$conf" --domain held.test)"
	wait_until 10 redis_is "$p" 1 ZCARD "$K:jobs:lane:transactional:held" || fail "k3 not held again"
	assert_eq "release by id" "released 1" "$("$MXSEND" release -c "$conf" k3)"
	"$MXSEND" suppress list -c "$conf" >"$CASE_DIR/supp" || fail "suppress list"
	assert_match "automatic suppression" 'bounce1@ok\.test' "$(cat "$CASE_DIR/supp")"
	"$MXSEND" shaping -c "$conf" >/dev/null 2>&1
	sleep 1.5 # a heartbeat, a retry move and a stats round more
	assert_eq "exit status" 0 "$(mx_stop run)"
	"$MXSEND" tlsrpt -c "$conf" --dry-run >"$CASE_DIR/tlsrpt" 2>&1
	kill "$monpid" 2>/dev/null
	wait "$monpid" 2>/dev/null
	assert_match "delivered" '^k1\|u1@ok\.test\|delivered$' "$(cresults "$p")"
	assert_match "suppressed by the list" '^k4\|blocked@ok\.test\|suppressed$' "$(cresults "$p")"
	assert_ge "TLSRPT counters written under the prefix" 1 \
		"$(rcli "$p" EVAL "return #redis.call('KEYS', ARGV[1])" 0 "$K:tlsrpt:*")"
	assert_no_match "no cluster errors in the log" 'CROSSSLOT|non local key|MOVED|evt=redis_cluster_redirect' \
		"$(cat "$CASE_DIR/run/log")"
	# the checker bites: a key built in Lua, a key of another slot
	printf '%s\n' '1.1 [0 127.0.0.1:1] "EVAL" "x" "1" "{mxsend}:b"' '1.2 [0 lua] "SET" "{mxsend}:b" "x"' \
		'1.3 [0 lua] "SET" "{mxsend}:b:y" "z"' '1.4 [0 127.0.0.1:1] "HSET" "mxsend:tlsrpt:x" "z" "1"' \
		>"$CASE_DIR/bad.mon"
	out=$(python3 "$CHECK_KEYS" "$CASE_DIR/bad.mon" "$slot")
	assert_eq "checker on a bad flow: exit" 1 "$?"
	assert_match "checker: undeclared key" "undeclared key '\\{mxsend\\}:b:y'" "$out"
	assert_match "checker: other slot" "key 'mxsend:tlsrpt:x' in slot" "$out"
	out=$(python3 "$CHECK_KEYS" "$mon" "$slot")
	local rc=$?
	diag "$(head -n 1 <<<"$out")"
	[ "$rc" = 0 ] || fail "MONITOR check:" "$out"
	assert_match "scripts ran" ' [1-9][0-9]* script commands' "$out"
	local n
	for n in EVALSHA EVAL MULTI XREADGROUP; do
		grep -q "\"$n\"" "$mon" || fail "no $n seen: the flow did not cover it"
	done
}

# master_of PORT SLOT: "port id" of the master serving SLOT (CLUSTER NODES at PORT).
master_of() {
	rcli "$1" CLUSTER NODES | tr -d '\r' | awk -v s="$2" '$3 ~ /master/ && $3 !~ /fail/ {
		for (i = 9; i <= NF; i++) { n = split($i, r, "-"); lo = r[1]; hi = (n > 1 ? r[2] : r[1])
			if (s >= lo + 0 && s <= hi + 0) { split($2, a, "[:@]"); print a[2], $1; exit } } }'
}
# replica_of PORT ID: the port of a replica of master ID.
replica_of() {
	rcli "$1" CLUSTER NODES | tr -d '\r' | awk -v m="$2" '$4 == m && $3 !~ /fail/ { split($2, a, "[:@]"); print a[2]; exit }'
}
finals() { # PORT: recipients with a final result
	rcli "$1" EVAL "local n = 0 for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
		local s = e[2][8] if s == 'delivered' or s == 'bounced' or s == 'expired' or s == 'rejected' then n = n + 1 end end
		return n" 1 "$K:results"
}
rep_xlen_is() { [ "$(printf 'READONLY\nXLEN %s:jobs\n' "$K" | timeout 5 redis-cli -p "$1" --raw | tail -n 1)" = "$2" ]; }
# gap PORT: the longest pause between two results (entry ids are ms timestamps).
gap() {
	rcli "$1" EVAL "local prev, gap = nil, 0 for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
		local t = tonumber(string.match(e[1], '^(%d+)')) if prev and t - prev > gap then gap = t - prev end prev = t end
		return gap" 1 "$K:results"
}
finals_ge() { local n; n=$(finals "$1" 2>/dev/null) && [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge "$2" ]; }

t_failover() {
	local ports=() i p n=${CLUSTER_N:-3000} conf=$CASE_DIR/c.conf slot m mid rep t0 owner
	make_cluster 6 1 || return 1
	ports=("${PORTS[@]}")
	slot=$(rcli "${ports[0]}" CLUSTER KEYSLOT "$K:jobs")
	read -r m mid <<<"$(master_of "${ports[0]}" "$slot")"
	rep=$(replica_of "${ports[0]}" "$mid")
	if [ -z "$m" ] || [ -z "$rep" ]; then
		fail "no master/replica for slot $slot"
		return 1
	fi
	diag "slot $slot: master $m, replica $rep"
	# the seed is a node that does not serve the slot: mxsend must find the master
	local seed=${ports[0]}
	for p in "${ports[@]}"; do [ "$p" != "$m" ] && [ "$p" != "$rep" ] && { seed=$p; break; }; done
	conf "$conf" "$seed"
	sed -i '/^\[mxsend\]/a max_inflight = 500' "$conf"
	"$MXSEND" enqueue -c "$conf" --from a@src.test --to u@big.test --count "$n" "$MSG" \
		>/dev/null || { fail "enqueue --count $n"; return 1; }
	assert_eq "queued (on the master)" "$n" "$(rcli "$m" XLEN "$K:jobs")"
	wait_until 10 rep_xlen_is "$rep" "$n" || fail "not replicated"
	t0=$(date +%s%3N)
	mx_start run "$conf" || return 1
	# 1: hand the slot over to the replica (CLUSTER FAILOVER): the old master
	# answers MOVED
	wait_until 60 finals_ge "$m" $((n / 4)) || fail "fewer than $((n / 4)) results in 60 s"
	assert_eq "CLUSTER FAILOVER" OK "$(rcli "$rep" CLUSTER FAILOVER)"
	wait_until 10 role_is "$rep" master || fail "replica not promoted in 10 s"
	wait_until 60 finals_ge "$rep" $((n / 2)) || fail "no progress after CLUSTER FAILOVER"
	# 2: kill the new master with -9: the cluster promotes the old one back
	# (once it replicates from it: a replica without a link cannot be elected)
	wait_until 20 link_up "$m" || fail "old master not replicating from the new one in 20 s"
	owner=$rep
	for i in 1 2 3 4 5 6; do
		[ "${ports[i - 1]}" = "$rep" ] && kill -KILL "$(<"$CASE_DIR/n$i/pid")"
	done
	wait_until 20 role_is "$m" master ||
		fail "old master not promoted again in 20 s" "$(rcli "$m" CLUSTER NODES)" \
			"$(tail -n 15 "$CASE_DIR/n1/redis.log" "$CASE_DIR"/n*/redis.log 2>/dev/null | grep -i fail | tail -n 15)"
	owner=$m
	wait_until 120 finals_ge "$owner" "$n" || fail "not all $n finished in 120 s ($(finals "$owner"))"
	local ms=$(($(date +%s%3N) - t0))
	assert_eq "exit status" 0 "$(mx_stop run)"
	# one final result per job, none lost
	local all dups fin msgs gap
	all=$(cresults "$owner")
	fin=$(grep -Ec '\|(delivered|bounced|expired|rejected)$' <<<"$all")
	dups=$(grep -E '\|(delivered|bounced|expired|rejected)$' <<<"$all" | cut -d'|' -f1 | sort | uniq -d | head -n 5)
	assert_eq "jobs with two final results" "" "$dups"
	assert_eq "final results" "$n" "$fin"
	assert_eq "all delivered" "$n" "$(grep -c '|delivered$' <<<"$all")"
	assert_eq "nothing left in the stream" 0 "$(rcli "$owner" XLEN "$K:jobs")"
	msgs=$(find "$(sink_maildir big)" -name '*.eml' | wc -l)
	gap=$(gap "$owner")
	local log
	log=$(cat "$CASE_DIR/run/log")
	assert_match "log: from the seed to the slot's master" "evt=redis_cluster_route slot=$slot from=127.0.0.1:$seed to=127.0.0.1:$m why=cluster_slots" "$log"
	assert_match "log: MOVED followed to the replica" "to=127.0.0.1:$rep why=moved" "$log"
	assert_match "log: a lost node left for the next one" 'why=node_lost' "$log"
	echo "cluster failover: $n jobs, CLUSTER FAILOVER then kill -9 of the new master, $ms ms; sink got $msgs messages (duplicates $((msgs - n))); longest time without results ${gap} ms; lost 0" >>"$FIG"
	diag "$(cat "$FIG")"
	assert_lt "longest time without results (ms)" 15000 "$gap"
	assert_ge "messages at the sink" "$n" "$msgs"
	# a short-lived command after the failovers: through the seed to the new master
	"$MXSEND" enqueue -c "$conf" --from a@src.test --to late@big.test --id late "$MSG" >/dev/null ||
		fail "enqueue after the failovers"
	assert_eq "enqueued on the slot's master now" 1 "$(rcli "$owner" XLEN "$K:jobs")"
	# the URL names the dead node: cluster_nodes gets both the tools and the
	# queue to the master
	local conf2=$CASE_DIR/dead.conf
	conf "$conf2" "$rep" "cluster_nodes = 127.0.0.1:$rep, 127.0.0.1:$seed"
	"$MXSEND" enqueue -c "$conf2" --from a@src.test --to late2@big.test --id late2 "$MSG" >/dev/null ||
		fail "enqueue with the URL's node down"
	mx_start run2 "$conf2" || return 1
	wait_until 20 redis_is "$owner" 0 XLEN "$K:jobs" || fail "late jobs not taken with the URL's node down"
	wait_until 10 results_has "$owner" '^late2\|late2@big\.test\|delivered$' || fail "late2 not delivered"
	assert_eq "exit status (URL's node down)" 0 "$(mx_stop run2)"
	assert_no_match "start-up checks reached a node" 'evt=redis_unreachable' "$(cat "$CASE_DIR/run2/log")"
}

# migrate_slot SRC DST SLOT: move SLOT from master SRC to master DST (ports)
# as redis-cli --cluster reshard does: IMPORTING/MIGRATING, MIGRATE the keys
# in batches, then SETSLOT NODE everywhere. 0, or 1 (diag) on a failure.
migrate_slot() {
	local src=$1 dst=$2 slot=$3 sid did keys k p i
	sid=$(rcli "$src" CLUSTER MYID) && did=$(rcli "$dst" CLUSTER MYID) || return 1
	[ "$(rcli "$dst" CLUSTER SETSLOT "$slot" IMPORTING "$sid")" = OK ] || return 1
	[ "$(rcli "$src" CLUSTER SETSLOT "$slot" MIGRATING "$did")" = OK ] || return 1
	for ((i = 0; i < 1000; i++)); do
		mapfile -t keys < <(rcli "$src" CLUSTER GETKEYSINSLOT "$slot" 1 | grep -v "^$")
		[ "${#keys[@]}" -eq 0 ] && break
		k=$(rcli "$src" MIGRATE 127.0.0.1 "$dst" "" 0 10000 KEYS "${keys[@]}")
		[ "$k" = OK ] || [ "$k" = NOKEY ] || { diag "MIGRATE: $k"; return 1; }
		sleep 0.5 # a window with the slot half-migrated (ASK, TRYAGAIN)
	done
	for p in $CLUSTER_PORTS; do
		rcli "$p" CLUSTER SETSLOT "$slot" NODE "$did" >/dev/null
	done
}

t_migrate() {
	local ports=() i p n=${CLUSTER_N:-3000} conf=$CASE_DIR/c.conf slot m mid dst t0
	make_cluster 3 0 || return 1
	ports=("${PORTS[@]}")
	slot=$(rcli "${ports[0]}" CLUSTER KEYSLOT "$K:jobs")
	read -r m mid <<<"$(master_of "${ports[0]}" "$slot")"
	for p in "${ports[@]}"; do [ "$p" != "$m" ] && { dst=$p; break; }; done
	conf "$conf" "$m"
	sed -i '/^\[mxsend\]/a max_inflight = 200' "$conf"
	"$MXSEND" enqueue -c "$conf" --from a@src.test --to u@big.test --count "$n" "$MSG" \
		>/dev/null || { fail "enqueue --count $n"; return 1; }
	t0=$(date +%s%3N)
	mx_start run "$conf" || return 1
	wait_until 60 finals_ge "$m" $((n / 4)) || fail "fewer than $((n / 4)) results in 60 s"
	migrate_slot "$m" "$dst" "$slot" || fail "slot migration failed"
	wait_until 20 redis_is "$dst" 1 EXISTS "$K:jobs" || fail "the stream did not move"
	wait_until 120 finals_ge "$dst" "$n" || fail "not all $n finished in 120 s ($(finals "$dst"))"
	local ms=$(($(date +%s%3N) - t0))
	assert_eq "exit status" 0 "$(mx_stop run)"
	local all dups fin log
	all=$(cresults "$dst")
	fin=$(grep -Ec '\|(delivered|bounced|expired|rejected)$' <<<"$all")
	dups=$(grep -E '\|(delivered|bounced|expired|rejected)$' <<<"$all" | cut -d'|' -f1 | sort | uniq -d | head -n 5)
	assert_eq "jobs with two final results" "" "$dups"
	assert_eq "final results" "$n" "$fin"
	assert_eq "nothing left in the stream" 0 "$(rcli "$dst" XLEN "$K:jobs")"
	assert_eq "nothing left on the old master" 0 "$(rcli "$m" CLUSTER COUNTKEYSINSLOT "$slot")"
	log=$(cat "$CASE_DIR/run/log")
	assert_match "log: MOVED followed to the new owner" "to=127.0.0.1:$dst why=moved" "$log"
	echo "cluster slot migration: $n jobs, the queue's slot migrated mid-run, $ms ms; commands answered ASK $(grep -c 'err="ASK ' <<<"$log"), TRYAGAIN $(grep -c 'err="TRYAGAIN' <<<"$log"), MOVED $(grep -c 'err="MOVED ' <<<"$log"); longest time without results $(gap "$dst") ms; lost 0" >>"$FIG"
}

run_case "keys: one slot, every script key declared (MONITOR), untagged keys refused" t_keys
run_case "three masters + replicas: CLUSTER FAILOVER (MOVED) then kill -9 of the queue's master mid-run: no job lost, one final result each" t_failover
run_case "three masters: the queue's slot migrated to another master mid-run (ASK, TRYAGAIN, then MOVED): no job lost, one final result each" t_migrate
[ -s "$FIG" ] && sed 's/^/# /' "$FIG"
integ_finish
