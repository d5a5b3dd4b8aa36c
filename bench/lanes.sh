#!/usr/bin/env bash
# bench/lanes.sh [--bulk N] [--tx N] [--every MS]: priority lanes under a bulk backlog (issue 22
# point 4's measured target; bench/run.sh --only l runs it).
#
# Lanes `transactional:8 bulk:1` ([redis] lanes). N bulk jobs (default 1,000,000, one
# recipient each, to b<i % 50>.bench.test) are queued on mxsend:jobs:lane:bulk with
# redis-cli --pipe before the run (the time that takes is reported). One `mxsend run` (2
# workers, default max_inflight 20,000) drains them into one fast sink (127.0.69.1, every
# domain's MX host, max_connections 20): the sender is saturated (max_inflight full, jobs
# waiting for connection slots). After 5 s, --tx transactional jobs (default 200) go to
# the same MX host through mxsend:jobs:lane:transactional, one every --every ms (default
# 50), each XADDed by redis-cli. Reported: each transactional job's time from its XADD to
# its `delivered` result (the two stream entry ids, Redis's clock): median, p99, max;
# the bulk jobs delivered meanwhile (msgs/s: the sender was saturated) and still queued.
# Target (issue 22): median and p99 under 1,000 ms. Output: build/bench/lanes.txt.
# Loopback only; everything started is stopped at exit.
set -u
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests/integ/lib.sh
. "$BENCH_DIR/../tests/integ/lib.sh"
BENCH_NAME=lanes
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
OUT=$INTEG_ROOT/build/bench
NB=1000000 NT=200 EVERY=50
while [ $# -gt 0 ]; do
	case $1 in
	--bulk) NB=$2; shift ;;
	--tx) NT=$2; shift ;;
	--every) EVERY=$2; shift ;;
	*) echo "usage: bench/lanes.sh [--bulk N] [--tx N] [--every MS]" >&2; exit 64 ;;
	esac
	shift
done
mkdir -p "$OUT"

integ_setup mx.lanes.bench.test
integ_require mxsend mxsink unbound redis-server redis-cli
[ -z "$INTEG_MISSING" ] || die "missing: $INTEG_MISSING"
ZONE=$INTEG_DIR/zone.txt
{
	echo "mx.lanes.bench.test. A 127.0.69.1"
	echo "t.bench.test. MX 10 mx.lanes.bench.test."
	for i in $(seq 0 49); do echo "b$i.bench.test. MX 10 mx.lanes.bench.test."; done
} >"$ZONE"
start_unbound "$ZONE" || die "unbound"
SPORT=$(integ_port) || die "port"
integ_spawn sink.ln "$INTEG_DIR/sink.log" "$MXSINK" --listen "127.0.69.1:$SINK_PORT" --threads 2 \
	--cert "$CERTS/server.pem" --key "$CERTS/server.key" --stats "127.0.0.1:$SPORT" --quiet
mkdir -p "$INTEG_DIR/sink.ln"
echo "$SPORT" >"$INTEG_DIR/sink.ln/stats_port"
wait_until 5 sink_stat ln >/dev/null || die "sink"
start_redis -n lanes || die "redis"
P=$REDIS_PORT

C=$INTEG_DIR/lanes.ini
integ_config "$C" "$(printf '[redis]\nurl = %s\nlanes = transactional:8 bulk:1\n' "$REDIS_URL")"
sed -i 's/^helo = client.test$/helo = client.test\nworkers = 2/' "$C"

REPORT=$OUT/lanes.txt
echo "mxsend lanes bench $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n), $(nproc) CPUs" >"$REPORT"

t0=$(now_ms)
PIPE_STREAM=mxsend:jobs:lane:bulk pipe_jobs "$P" "$NB" "$(seq -f 'b%g.bench.test' 0 49 | tr '\n' ' ')" bulk
fill_ms=$(($(now_ms) - t0))
[ "$(rcli "$P" XLEN mxsend:jobs:lane:bulk)" = "$NB" ] ||
	die "queue: $(rcli "$P" XLEN mxsend:jobs:lane:bulk) of $NB"
say "lanes: $NB bulk jobs queued in $fill_ms ms"

integ_spawn run "$INTEG_DIR/run.log" "$MXSEND" run -c "$C"
sleep 5
d0=$(sink_stat ln messages) tw0=$(now_ms)
last=$(rcli "$P" XREVRANGE mxsend:results + - COUNT 1 | head -n 1)
[ -n "$last" ] || die "no result within 5 s of the start (see $INTEG_DIR/run.log)"
PAUSE=$(awk -v ms="$EVERY" 'BEGIN { printf "%.3f", ms / 1000 }')
for k in $(seq 1 "$NT"); do
	rcli "$P" XADD mxsend:jobs:lane:transactional '*' from tx@sender.test to "tx$k@t.bench.test" \
		data "$(printf 'Subject: tx %d\r\n\r\nhello\r\n' "$k")" id "tx-$k" >/dev/null ||
		die "XADD tx-$k"
	sleep "$PAUSE"
done

# tx_lat: one line per delivered transactional job: XADD-to-result ms, from the results
# after $last, 20,000 entries per script (Redis's busy-script limit).
tx_lat() {
	local start="($last" out n
	for ((n = 0; n < 1000; n++)); do
		out=$(rcli "$P" EVAL "local es = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', 20000)
			local o = {} for _, e in ipairs(es) do local f, m = e[2], {}
			for i = 1, #f, 2 do m[f[i]] = f[i + 1] end
			if m.status == 'delivered' and string.sub(m.id, 1, 3) == 'tx-' then
			o[#o + 1] = (tonumber(string.match(e[1], '^(%d+)')) - tonumber(string.match(m.job, '^(%d+)'))) ..
				' ' .. m.id .. ' elapsed_ms=' .. m.elapsed_ms .. ' reused=' .. m.reused end end
			if #es == 0 then return {'-'} end o[#o + 1] = 'next ' .. es[#es][1] .. ' ' .. #es return o" 1 mxsend:results "$start")
		grep -v '^next \|^-$' <<<"$out"
		grep -q '^next ' <<<"$out" || break
		local _w nid got
		read -r _w nid got < <(grep '^next ' <<<"$out")
		[ "$got" -lt 20000 ] && break
		start="($nid"
	done
}
for ((k = 0; k < 60; k++)); do
	[ "$(tx_lat | grep -c .)" -ge "$NT" ] && break
	sleep 1
done
tw1=$(now_ms) d1=$(sink_stat ln messages)
stop_proc run
tx_lat | sort -n >"$INTEG_DIR/lat.txt"
n=$(grep -c . "$INTEG_DIR/lat.txt")
left=$(rcli "$P" XLEN mxsend:jobs:lane:bulk)
line=$(awk -v n="$n" -v nt="$NT" -v nb="$NB" -v fill="$fill_ms" -v left="$left" \
	-v rate="$(( (d1 - d0) * 1000 / (tw1 - tw0) ))" '{ v[NR] = $1 }
	END { p50 = n ? v[int((n + 1) / 2)] : -1; i99 = int(n * 0.99 + 0.999); if (i99 < 1) i99 = 1
		p99 = n ? v[i99] : -1; mx = n ? v[n] : -1
		printf "bulk_queued=%d fill_ms=%d tx_sent=%d tx_delivered=%d tx_p50_ms=%d tx_p99_ms=%d tx_max_ms=%d bulk_msgs_per_s=%d bulk_left=%d verdict=%s\n", \
			nb, fill, nt, n, p50, p99, mx, rate, left, (n == nt && p50 < 1000 && p99 < 1000) ? "PASS" : "FAIL" }' \
	"$INTEG_DIR/lat.txt")
say "lanes: $line"
echo "$line" >>"$REPORT"
echo "slowest: $(tail -n 5 "$INTEG_DIR/lat.txt" | tac | paste -sd';')" >>"$REPORT"
cat "$REPORT"
