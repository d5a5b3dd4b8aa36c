#!/usr/bin/env bash
# bench/shaping.sh [--rate R] [--duration S] [--procs "1 2"] [--receiver sink|exim]: the closed
# loop against a rate-limiting receiver (issue 20's measured target; bench/run.sh --only s runs it).
#
# The receiver: mxsink --limit R (R MAILs per second per client address, a token bucket of
# R; above it `421 4.7.28 ... unusual rate ...` and the connection closed, as Gmail does) on
# 127.0.68.1, MX host mx.rl.bench.test of 50 domains r<i>.bench.test. mxsend's config: one
# provider over them ([provider rl] mx = .rl.bench.test, max_rate = 4 x R: it starts four
# times too fast; --max-rate N another, 0 none: as fast as it goes until the first 421;
# max_connections = 10), the rule `^421 4\.7\.28` -> throttle, retries every
# 5 s, defaults for [shaping] (decrease 0.8, increase 0.01, hold 2 s, sync 1 s).
# For each process count in --procs (default "1 2": one `mxsend run`, then two sharing the
# Redis, each with 2 workers), the queue is filled with more jobs than S seconds can carry,
# the processes run S seconds (default 150) and stop (SIGTERM), and the sink's counters
# are sampled every 5 s. Reported per run, from the sink's counters (what the receiver saw):
#   first minute: MAILs, 421s;  after the first minute: the 421 share of the MAILs and the
#   delivered rate (messages accepted per second) against R;  nothing lost: every job is
#   delivered, or back in the queue (J, J:retry) after the stop, none twice.
# --receiver exim: the receiver is a private Exim 4.96 (Debian 12's, tests/integ/interop.sh;
# root, `make deps`) whose own `ratelimit` ACL condition defers MAIL past R per second per client
# address (2R / 2s, leaky) with `421 4.7.28 ... unusual rate ...`; its log is counted instead of
# the sink's counters (taken: "<=", 421s: "temporarily rejected MAIL"). Output: shaping-exim.txt.
# Target (issue 20): after the first minute at most 2 % 421 and at least 85 % of R, for one
# process and for the sum of two. Output: build/bench/shaping.txt (and the 5 s timeline,
# shaping-P.csv). Loopback only; everything started is stopped at exit.
set -u
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests/integ/lib.sh
. "$BENCH_DIR/../tests/integ/lib.sh"
BENCH_NAME=shaping
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
OUT=$INTEG_ROOT/build/bench
R=20 DUR=150 PROCS="1 2" MAXR="" RX=sink
while [ $# -gt 0 ]; do
	case $1 in
	--rate) R=$2; shift ;;
	--duration) DUR=$2; shift ;;
	--procs) PROCS=$2; shift ;;
	--max-rate) MAXR=$2; shift ;;
	--receiver) RX=$2; shift ;;
	*) echo "usage: bench/shaping.sh [--rate R] [--duration S (>= 90)] [--procs \"1 2\"] [--max-rate N (0: none)] [--receiver sink|exim]" >&2; exit 64 ;;
	esac
	shift
done
MAXR=${MAXR:-$((4 * R))}
[ "$DUR" -ge 90 ] || die "--duration must be at least 90 s (the first minute is not judged)"
mkdir -p "$OUT"

integ_setup mx.rl.bench.test
integ_require mxsend mxsink unbound redis-server redis-cli
case $RX in
sink) ;;
exim)
	# shellcheck source=tests/integ/interop.sh
	. "$INTEG_LIB_DIR/interop.sh"
	interop_require
	;;
*) die "--receiver: sink or exim" ;;
esac
[ -z "$INTEG_MISSING" ] || die "missing: $INTEG_MISSING"
ZONE=$INTEG_DIR/zone.txt
{
	echo "mx.rl.bench.test. A 127.0.68.1"
	for i in $(seq 0 49); do echo "r$i.bench.test. MX 10 mx.rl.bench.test."; done
} >"$ZONE"
start_unbound "$ZONE" || die "unbound"
if [ "$RX" = sink ]; then
	SPORT=$(integ_port) || die "port"
	integ_spawn sink.rl "$INTEG_DIR/sink.log" "$MXSINK" --listen "127.0.68.1:$SINK_PORT" --threads 2 \
		--limit "$R" --cert "$CERTS/server.pem" --key "$CERTS/server.key" --stats "127.0.0.1:$SPORT" --quiet
	mkdir -p "$INTEG_DIR/sink.rl"
	echo "$SPORT" >"$INTEG_DIR/sink.rl/stats_port"
	wait_until 5 sink_stat rl >/dev/null || die "sink"
	RXDESC="mxsink --limit $R"
else
	P=$SINK_PORT ex_start 127.0.68.1 "$(seq -f 'r%g.bench.test' 0 49 | tr '\n' ' ')" "acl_smtp_mail = acl_mail" "
acl_mail:
  defer   ratelimit = $((2 * R)) / 2s / per_mail / \$sender_host_address
          message = 421 4.7.28 [\$sender_host_address] Our system has detected an unusual rate of mail from your IP address; try again later
  accept" || die "exim"
	RXDESC="Exim 4.96 ratelimit $((2 * R)) / 2s per_mail, leaky"
fi
# rx_stat mails|limited|messages: the receiver's count (MAILs, 421s, messages taken)
rx_stat() {
	if [ "$RX" = sink ]; then
		sink_stat rl "$1"
		return
	fi
	local taken limited
	taken=$(grep -c ' <= ' "$EXLOG")
	limited=$(grep -c 'temporarily rejected MAIL' "$EXLOG")
	case $1 in
	mails) echo $((taken + limited)) ;;
	limited) echo "$limited" ;;
	messages) echo "$taken" ;;
	esac
}
start_redis -n shaping || die "redis"

conf() {
	integ_config "$1" "$(printf '[redis]\nurl = %s\n\n[retry]\nschedule = 5s\nlifetime = 1d\n\n' "$REDIS_URL")
$(printf '[shaping]\nproviders = none\n\n[provider rl]\nmx = .rl.bench.test\nmax_rate = %s\nmax_connections = 10\n\n' "$MAXR")
$(printf '[response rl-rate]\nmatch = ^421 4\\.7\\.28\naction = throttle\nclass = rate-limited\n')"
	sed -i 's/^helo = client.test$/helo = client.test\nworkers = 2\nmax_inflight = 2000/' "$1"
}

REPORT=$OUT/shaping.txt
[ "$RX" = sink ] || REPORT=$OUT/shaping-$RX.txt
{
	echo "mxsend shaping bench $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n), $(nproc) CPUs: receiver R = $R/s per client address ($RXDESC), provider max_rate $MAXR, run $DUR s per case"
} >"$REPORT"

for P in $PROCS; do
	rcli "$REDIS_PORT" FLUSHALL >/dev/null
	N=$((R * (DUR + 60)))
	pipe_jobs "$REDIS_PORT" "$N" "$(seq -f 'r%g.bench.test' 0 49 | tr '\n' ' ')" "s$P"
	[ "$(rcli "$REDIS_PORT" XLEN mxsend:jobs)" = "$N" ] || die "queue: $(rcli "$REDIS_PORT" XLEN mxsend:jobs) of $N"
	c=$INTEG_DIR/c$P.ini
	conf "$c"
	m0=$(rx_stat mails) l0=$(rx_stat limited) d0=$(rx_stat messages)
	for k in $(seq 1 "$P"); do
		integ_spawn "run$P.$k" "$INTEG_DIR/run$P.$k.log" "$MXSEND" run -c "$c"
	done
	t0=$(now_ms)
	csv=$OUT/shaping-$P.csv
	[ "$RX" = sink ] || csv=$OUT/shaping-$RX-$P.csv
	echo "t_s,mails,limited,delivered" >"$csv"
	while :; do
		t=$(($(now_ms) - t0))
		echo "$((t / 1000)),$(($(rx_stat mails) - m0)),$(($(rx_stat limited) - l0)),$(($(rx_stat messages) - d0))" >>"$csv"
		[ "$t" -ge $((DUR * 1000)) ] && break
		sleep 5
	done
	for k in $(seq 1 "$P"); do stop_proc "run$P.$k"; done
	# the first sample at or after 60 s, and the last
	read -r res < <(awk -F, -v r="$R" 'NR > 1 && $1 >= 60 && !a { a = 1; t1 = $1; m1 = $2; l1 = $3; d1 = $4 }
		NR > 1 { t2 = $1; m2 = $2; l2 = $3; d2 = $4 }
		NR > 1 && $1 < 65 { fm = $2; fl = $3 }
		END { dm = m2 - m1; dl = l2 - l1; dd = d2 - d1; dt = t2 - t1
			printf "first_min_mails=%d first_min_421=%d after_mails=%d after_421=%d share_421_pct=%.2f delivered_per_s=%.2f pct_of_R=%.1f\n", \
				fm, fl, dm, dl, dm ? 100 * dl / dm : 0, dt ? dd / dt : 0, dt ? 100 * dd / dt / r : 0 }' "$csv")
	# nothing lost: delivered (unique ids) + still queued = N, none delivered twice
	dl=$(results "$REDIS_PORT" id,status | grep '|delivered$' | cut -d'|' -f1 | sort | uniq -c | awk '{ n++; if ($1 > 1) d++ } END { printf "%d %d", n, d }')
	queued=$(($(rcli "$REDIS_PORT" XLEN mxsend:jobs) + $(rcli "$REDIS_PORT" ZCARD mxsend:jobs:retry)))
	line="procs=$P R=$R $res delivered_jobs=${dl% *} twice=${dl#* } queued_after=$queued lost=$((N - ${dl% *} - queued))"
	say "shaping: $line"
	echo "$line" >>"$REPORT"
done
state=$(timeout 10 "$MXSEND" shaping -c "$INTEG_DIR/c${PROCS##* }.ini" 2>&1)
echo "mxsend shaping at the end: $state" >>"$REPORT"
cat "$REPORT"
