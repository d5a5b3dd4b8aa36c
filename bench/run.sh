#!/usr/bin/env bash
# bench/run.sh [--quick] [--perf] [--only LIST]: mxsend delivery benchmarks on loopback (make bench).
#
# Starts (tests/integ/lib.sh): unbound serving the bench zone, two mxsink instances (a fast
# one, and a slow one with --delay-ms for the "many open sessions" case), then drives
# build/mxload through the scenarios below and prints one table row per scenario. Writes
# build/bench/results.txt (the table, the configuration, the verdicts), results.csv and,
# with gnuplot, bench.svg. Everything listens on 127.0.0.0/8; everything started is stopped
# at exit (lib.sh's trap); every run is under `timeout`.
#
# The zone: D domains d<i>.bench.test (10,000), each MX 10 mx<i % H>.bench.test; H MX host
# names (100, as providers share MX hosts), each with A addresses (10) in 127.0.4.1-127.0.7.250
# (1,000 addresses: connections spread over many MX addresses). One certificate,
# SAN *.bench.test, from bench/mkcerts.sh.
#
# Scenarios (--quick: small numbers, one pass, < 1 minute; default: full sizes, the throughput
# scenarios 3 times interleaved, keeping each one's median pass: ~3-4 minutes):
#   a1  4 KB messages to 1 domain over reused connections
#   a2  4 KB messages to 100 domains over reused connections
#   a3  a1 against a sink without CHUNKING (DATA; the fast sink offers CHUNKING like Postfix/Exim)
#   q1  a1's load queued in Redis and drained by `mxsend run --until-empty` (bench/qload.sh):
#       mxsend's CPU includes claiming, parsing, results and XACK; redis-server's is beside it
#   qk1 q1 with every job DKIM-signed (RSA-2048, [dkim sender.test]): `mxsend run` signs on
#       its signing threads (sender/sign_pool.h), not on the feeder
#   b1  one message to each of 10,000 domains, --no-reuse, TLS resumption on
#   b0  the same, --no-resume (every handshake full; a chain already verified for that MX
#       name is not verified again: tlscache's verified-chain cache)
#   bx  b0 with every chain verified afresh (--no-verify-cache), as mxhscost's handshake does
#   k1/k2  a1 with every message DKIM-signed (mxload --config [dkim mxload.test]: RSA-2048 /
#       Ed25519; signed in mxload's feeder thread, as `mxsend send` signs; qk1 measures `mxsend
#       run`'s signing threads); k0 a1 at 20 KB
#       unsigned, k3/k4 the same signed; k6 100 recipients per message unsigned, k5 signed (one
#       signature per message). Verdict: CPU/msg <= the unsigned row + 1.15 x OpenSSL's own
#       cost of signing that message (sign_us, measured by mxload in the same run: SHA-256
#       over the message's bytes, as bh= needs, and one signature).
#   c   10,000 TLS sessions open at once against the slow sink (--delay-ms), --no-reuse
#   d1  = a2's load with 1 worker, d2 with 2 workers (throughput ratio, CPU split)
#   s   (only with --only s: minutes long) the shaping closed loop, bench/shaping.sh: a receiver
#       at R messages/s per client address answering 421 4.7.28 above it; one process, then
#       two sharing the Redis; the 421 share and the delivered rate after the first minute
#       (SHAPING_ARGS="--rate R --duration S" passes options)
#   l   (only with --only l: a million jobs) priority lanes, bench/lanes.sh: 1,000,000 bulk jobs
#       queued, `mxsend run` saturated, transactional jobs trickled in; median and p99 from
#       XADD to delivered (target < 1 s; LANES_ARGS="--bulk N --tx N --every MS" passes options)
# Verdicts against the targets: mxsend CPU per message / OpenSSL full client handshake
# (build/mxhscost, same machine, same certificate) <= 1.2 in b0; RSS per open session
# <= 32 KB in c; d2/d1 >= 1.8 (reachable only when the sink is not the limit: on this
# 2-core machine the sink shares the cores, the CPU columns say who used them).
# --perf[=a2,b0]: record those scenarios (default a2 and b0) with `perf record -e cpu-clock -g`
# and write the top of each report to build/bench/perf-ID.txt (perf slows them down a little).
# PERF_CG=dwarf: unwind with DWARF (PERF_FREQ samples/s, default 300; mxsend and libcrypto have
# no frame pointers, so only then does the inclusive "children" view say which of our functions
# the time is spent under).
# --only a1,b0,...: run just those scenarios.
# Environment: KEEP=1 keeps the work directory (logs of unbound, sinks, mxload, perf.data);
# BENCH_REPS=N passes (default 3); BENCH_SIZE=BYTES message size (default 4096);
# MXLOAD=/path/to/mxload (and MXHSCOST) to compare another build on the same machine.
# The machine is shared: every row says how much CPU the rest of the machine used meanwhile
# (oth%), and carries OpenSSL's handshake cost measured just before it (ossl_*_us in the CSV:
# 1,000 handshakes right before each b row and c, at the start of its repetition for the others).
set -u

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests/integ/lib.sh
. "$BENCH_DIR/../tests/integ/lib.sh"
MXLOAD=${MXLOAD:-$INTEG_ROOT/build/mxload}       # MXLOAD=/other/build/mxload: A/B a patched build
MXHSCOST=${MXHSCOST:-$INTEG_ROOT/build/mxhscost}
OUT=$INTEG_ROOT/build/bench

QUICK=0
PERF=0
PERF_IDS=",a2,b0,"
ONLY=""
while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1 ;;
	--perf) PERF=1 ;;
	--perf=*) PERF=1 PERF_IDS=",${1#--perf=}," ;;
	--only) ONLY=",$2,"; shift ;;
	-h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "usage: bench/run.sh [--quick] [--perf[=IDS]] [--only a1,a2,a3,q1,qk1,b1,b0,bx,c,d1,d2,k0,k1,k2,k3,k4,k5,k6,s,l]" >&2; exit 64 ;;
	esac
	shift
done
# s: its own receiver, Redis and report (build/bench/shaping.txt); then the others asked for
if [[ $ONLY == *",s,"* ]]; then
	# shellcheck disable=SC2086 # options, split on purpose
	"$BENCH_DIR/shaping.sh" ${SHAPING_ARGS:-} || exit 1
	ONLY=${ONLY//,s,/,}
	[ "$ONLY" = "," ] && exit 0
fi
# l: the same, bench/lanes.sh (build/bench/lanes.txt)
if [[ $ONLY == *",l,"* ]]; then
	# shellcheck disable=SC2086 # options, split on purpose
	"$BENCH_DIR/lanes.sh" ${LANES_ARGS:-} || exit 1
	ONLY=${ONLY//,l,/,}
	[ "$ONLY" = "," ] && exit 0
fi

# ---------------------------------------------------------------------------
# Sizes. Everything else is derived from these.
NMX=100            # MX host names shared by the domains
APH=10             # addresses per MX host name (NMX * APH <= 1000)
SIZE=${BENCH_SIZE:-4096} # message size (bytes)
if [ "$QUICK" = 1 ]; then
	NDOM=1000 A_MSGS=3000 A_CONC=100 B_CONC=100 C_SESS=500 C_DELAY=1000 D_MSGS=3000
	HS_N=300 HS_CAL_N=100 LIMIT=40 C_LIMIT=60 REPS=1
else
	NDOM=10000 A_MSGS=50000 A_CONC=200 B_CONC=200 C_SESS=10000 C_DELAY=4000 D_MSGS=30000
	HS_N=2000 HS_CAL_N=1000 LIMIT=240 C_LIMIT=180 REPS=${BENCH_REPS:-3}
fi
C_SESS=$((C_SESS > NDOM ? NDOM : C_SESS))

BENCH_NAME=bench
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

# ---------------------------------------------------------------------------
# Helpers

# udp_drops: the kernel's UDP RcvbufErrors counter (all sockets: a DNS client or server that
# cannot keep up drops answers; mxsend then sees DNS timeouts).
udp_drops() {
	awk '$1 == "Udp:" && $2 ~ /^[0-9]+$/ { print $6; exit }' /proc/net/snmp
}

# thread_ticks PID: "tid:ticks ..." for every thread of PID.
thread_ticks() {
	local f line rest tid out=""
	for f in /proc/"$1"/task/*/stat; do
		read -r line 2>/dev/null <"$f" || continue
		tid=${line%% *}
		rest=${line##*) }
		# shellcheck disable=SC2086
		set -- $rest
		out+="$tid:$((${12} + ${13})) "
	done
	echo "$out"
}

# bench_sink NAME ARG...: start_sink without the maildir (a benchmark must not write every
# message to disk; start_sink always adds --maildir). Same files, so sink_stat NAME works.
bench_sink() {
	local name=$1
	shift
	local dir=$INTEG_DIR/sink.$name sport pid i fd
	mkdir -p "$dir"
	sport=$(integ_port) || return 1
	echo "$sport" >"$dir/stats_port"
	integ_spawn "sink.$name" "$dir/log" "$MXSINK" "$@" --cert "$CERTS/server.pem" \
		--key "$CERTS/server.key" --pidfile "$dir/pid" --stats "127.0.0.1:$sport"
	pid=$SPAWN_PID
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || { tail -n 20 "$dir/log" >&2; return 1; }
		if [ -s "$dir/pid" ] && { exec {fd}<>"/dev/tcp/127.0.0.1/$sport"; } 2>/dev/null; then
			exec {fd}<&-
			return 0
		fi
		sleep 0.1
	done
	say "bench_sink $name: not ready within 5 s"
	return 1
}

# The zone, as an unbound include file of local-data lines (awk: 10,000 domains in ms).
make_zone() {
	awk -v nd="$NDOM" -v nmx="$NMX" -v aph="$APH" 'BEGIN {
		for (d = 0; d < nd; d++)
			printf "local-data: \"d%d.bench.test. 3600 IN MX 10 mx%d.bench.test.\"\n", d, d % nmx
		for (h = 0; h < nmx; h++)
			for (k = 0; k < aph; k++) {
				i = h * aph + k
				printf "local-data: \"mx%d.bench.test. 3600 IN A 127.0.%d.%d\"\n", h, 4 + int(i / 250), 1 + i % 250
			}
	}' >"$1"
}

# Poll (every 0.25 s, until the file $1.stop exists) the sink's counters and mxload's
# threads; keep in $1 the maxima of open sessions and of TLS sessions open, and the CPU
# ticks of each mxload thread (sampled, so the last 0.25 s may be missing).
# Args: FILE SINKNAME LOADPID
poll_run() {
	local f=$1 sink=$2 lpid=$3 line act conns hs tls max_act=0 max_tls=0 tt tid v
	local -A thr=() # tid -> most ticks seen (threads vanish when mxload joins them at exit)
	while [ ! -e "$f.stop" ]; do
		if line=$(sink_stat "$sink"); then
			act=$(kv active "$line")
			conns=$(kv connections "$line")
			hs=$(kv handshakes "$line")
			tls=$((hs - (conns - act) - ${POLL_HS0:-0} + ${POLL_CONN0:-0}))
			[ "${act:-0}" -gt "$max_act" ] && max_act=$act
			[ "$tls" -gt "$max_tls" ] && max_tls=$tls
		fi
		if kill -0 "$lpid" 2>/dev/null; then
			for tt in $(thread_ticks "$lpid"); do
				tid=${tt%%:*} v=${tt#*:}
				[ "$v" -ge "${thr[$tid]:-0}" ] && thr[$tid]=$v
			done
		fi
		tt=""
		for tid in "${!thr[@]}"; do tt+="$tid:${thr[$tid]},"; done
		echo "max_active=$max_act max_tls_open=$max_tls threads=$tt" >"$f.tmp"
		mv -f "$f.tmp" "$f"
		sleep 0.25
	done
}

# calibrate LABEL N: OpenSSL's handshake cost right now (mxhscost -n N): HS_NOW, HS_NOW_RES. The
# machine's speed drifts (other guests on the host, other processes here), so each row carries
# the yardstick measured just before it. 1,000 handshakes (0.5 s): with 500, five measurements
# in one run spread 481-530 us; with 1,000 and right before each b row, 481-520.
calibrate() {
	local l
	l=$(timeout 120 "$MXHSCOST" --certs "$CERTS" --name mx0.bench.test -n "$2") || die "mxhscost failed"
	echo "hscost($1) $l" >>"$OUT/raw.txt"
	HS_NOW=$(kv full_client_us "$l")
	HS_NOW_RES=$(kv resumed_client_us "$l")
}

# ---------------------------------------------------------------------------
# One scenario: run_scn ID SINK PORT LIMIT_S DESCRIPTION -- MXLOAD_ARGS...
# Appends one row to $ROWS (CSV) and prints it; the raw mxload line goes to raw.txt.
HDR="id,description,workers,messages,msgs_per_s,cpu_us_per_msg,sender_cpu_pct,sink_cpu_pct,dns_cpu_pct,other_cpu_pct,rss_mb,hwm_mb,opened,hs_full,hs_resumed,reused,p50_ms,p99_ms,peak_inflight,max_open,max_tls_open,kb_per_session,delivered,udp_drops,ossl_full_us,ossl_res_us,thread_split,redis_us_per_msg,sys_us_per_msg,sign_us"
run_scn() {
	local id=$1 sink=$2 port=$3 limit=$4 desc=${5//,/;} # no commas inside CSV fields
	shift 6
	local dir=$INTEG_DIR/run.$id.${rep:-1} s0 s1 k0 k1 u0 u1 m0 m1 w0 w1 d0 d1 line
	mkdir -p "$dir"
	say "bench: $id: $desc"
	s0=$(sink_stat "$sink") || die "$id: sink $sink does not answer"
	k0=$(cpu_ticks "$(proc_pid "sink.$sink")")
	u0=$(cpu_ticks "$(proc_pid unbound.dns)")
	m0=$(busy_ticks) w0=$(date +%s%N) d0=$(udp_drops)
	POLL_HS0=$(kv handshakes "$s0") POLL_CONN0=$(kv connections "$s0")
	local cmd=("$MXLOAD" --dns "$DNS" --ca "$CA" --port "$port" --size "$SIZE" "$@") pname=mxload
	# q: the queue path (bench/qload.sh runs `mxsend run` on jobs queued in Redis)
	[ "${id#q}" != "$id" ] && cmd=("$BENCH_DIR/qload.sh" run "$MXSEND" "$@") pname=mxsend
	local pre=()
	if [ "$PERF" = 1 ] && [[ $PERF_IDS == *",$id,"* ]] && [ "${rep:-1}" = 1 ]; then # the first repetition only
		if [ "${PERF_CG:-fp}" = dwarf ]; then
			pre=(perf record -e cpu-clock -F "${PERF_FREQ:-300}" --call-graph "dwarf,16384" -o "$dir/perf.data" --)
		else
			pre=(perf record -e cpu-clock -g -o "$dir/perf.data" --)
		fi
	fi
	echo "${pre[*]} ${cmd[*]}" >"$dir/cmd"
	local t0=$SECONDS
	timeout -k 3 "$limit" "${pre[@]}" "${cmd[@]}" >"$dir/out" 2>"$dir/err" &
	local lpid=$! rc
	# perf/timeout are parents: poll the mxload process itself
	local mpid="" i=0
	while [ -z "$mpid" ] && [ $((i++)) -lt 100 ]; do
		mpid=$(pgrep -n -P "$lpid" -x "$pname" 2>/dev/null)
		[ -z "$mpid" ] && [ "$pname" != mxload ] && mpid=$(pgrep -n -x "$pname" 2>/dev/null)
		[ -z "$mpid" ] && [ ${#pre[@]} -gt 0 ] && mpid=$(pgrep -n -x "$pname" 2>/dev/null)
		[ -z "$mpid" ] && sleep 0.02
	done
	POLL_HS0=$POLL_HS0 POLL_CONN0=$POLL_CONN0 poll_run "$dir/poll" "$sink" "${mpid:-0}" &
	local ppid=$!
	wait "$lpid"
	rc=$?
	: >"$dir/poll.stop"
	wait "$ppid" 2>/dev/null
	s1=$(sink_stat "$sink")
	k1=$(cpu_ticks "$(proc_pid "sink.$sink")")
	u1=$(cpu_ticks "$(proc_pid unbound.dns)")
	m1=$(busy_ticks) w1=$(date +%s%N) d1=$(udp_drops)
	line=$(grep -m1 '^messages=' "$dir/out")
	{
		echo "$id rc=$rc wall_s=$((SECONDS - t0)) pid=$mpid $line"
		grep -v '^messages=' "$dir/out"
		echo "$id sink_before $s0"
		echo "$id sink_after  $s1"
		tail -n 5 "$dir/err"
	} >>"$OUT/raw.txt"
	if [ -z "$line" ]; then
		say "bench: $id: mxload failed (exit $rc):"
		tail -n 5 "$dir/err" >&2
		local ncol empty
		ncol=$(awk -F, '{ print NF }' <<<"$HDR")
		empty=$(printf ',%.0s' $(seq 1 $((ncol - 3))))
		echo "$id,\"$desc\"$empty,\"failed rc=$rc\"" >>"$ROWS"
		return 1
	fi
	[ "$rc" = 0 ] || say "bench: $id: mxload exit $rc (not every message delivered: $(grep -m1 last_failure "$dir/out"))"
	local el hz=100 poll
	hz=$(getconf CLK_TCK)
	el=$(kv elapsed_s "$line")
	poll=$(cat "$dir/poll" 2>/dev/null)
	# feeder/worker split from the last thread sample (the main thread is the feeder)
	local split
	split=$(awk -v tt="$(kv threads "$poll")" -v pid="$mpid" -v el="$el" -v hz="$hz" 'BEGIN {
		n = split(tt, a, ","); s = ""; w = 0; m = 0
		for (i = 1; i <= n; i++) if (a[i] != "") { split(a[i], b, ":"); tid[++m] = b[1] + 0; tk[b[1] + 0] = b[2] }
		for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (tid[j] < tid[i]) { x = tid[i]; tid[i] = tid[j]; tid[j] = x }
		for (i = 1; i <= m; i++) {
			p = tk[tid[i]] / hz / el * 100
			if (tid[i] == pid) f = sprintf("feeder %.0f%%", p)
			else if (p >= 1) s = s sprintf(" w%d %.0f%%", w++, p)
		}
		print f s
	}')
	awk -F, -v OFS=, -v id="$id" -v desc="$desc" -v line="$line" -v s0="$s0" -v s1="$s1" \
		-v k="$((k1 - k0))" -v u="$((u1 - u0))" -v m="$((m1 - m0))" -v wall="$(((w1 - w0) / 1000000))" \
		-v hz="$hz" -v poll="$poll" -v tsplit="$split" -v drops="$((d1 - d0))" \
		-v osf="$HS_NOW" -v osr="$HS_NOW_RES" '
	function kv(l, key,   n, i, a) { n = split(l, a, " "); for (i = 1; i <= n; i++) if (index(a[i], key "=") == 1) return substr(a[i], length(key) + 2); return "" }
	BEGIN {
		el = kv(line, "elapsed_s"); if (el <= 0) el = 1e-9
		wall = wall / 1000; if (wall <= 0) wall = 1e-9
		snd = kv(line, "cpu_s") / el * 100; sink = k / hz / wall * 100; dns = u / hz / wall * 100
		# everything else the machine did meanwhile (other sessions, perf, this script)
		other = m / hz / wall * 100 - kv(line, "cpu_s") / wall * 100 - sink - dns
		if (other < 0) other = 0
		hsf = (kv(s1, "handshakes") - kv(s0, "handshakes")) - (kv(s1, "resumed") - kv(s0, "resumed"))
		hsr = kv(s1, "resumed") - kv(s0, "resumed")
		peak = kv(poll, "max_tls_open") + 0; act = kv(poll, "max_active") + 0
		kbs = peak > 0 ? (kv(line, "hwm_kb") - kv(line, "base_rss_kb")) / peak : ""
		printf "%s,\"%s\",%s,%s,%s,%s,%.0f,%.0f,%.0f,%.0f,%.1f,%.1f,%s,%d,%d,%s,%s,%s,%s,%d,%d,%s,%s,%s,%s,%s,\"%s\",%s,%s,%s\n", \
			id, desc, kv(line, "workers"), kv(line, "messages"), kv(line, "msgs_per_s"), \
			kv(line, "cpu_us_per_msg"), snd, sink, dns, other, \
			kv(line, "rss_kb") / 1024, kv(line, "hwm_kb") / 1024, kv(line, "opened"), hsf, hsr, \
			kv(line, "reused"), kv(line, "p50_ms"), kv(line, "p99_ms"), kv(line, "peak_inflight"), \
			act, peak, kbs == "" ? "" : sprintf("%.1f", kbs), kv(line, "delivered") / (kv(line, "rcpts") > 0 ? kv(line, "rcpts") : 1), drops, osf, osr, tsplit, \
			kv(line, "redis_cpu_us_per_msg"), kv(line, "sys_us_per_msg"), kv(line, "sign_us")
	}' >>"$ROWS"
	tail -n 1 "$ROWS" >&2
	if [ ${#pre[@]} -gt 0 ] && [ -s "$dir/perf.data" ]; then
		{
			echo "# ${pre[*]:0:6} ..., scenario $id: $desc"
			echo "# by object (self time)"
			perf report -i "$dir/perf.data" --no-children -g none --sort dso --stdio 2>/dev/null |
				grep -E '^ +[0-9]' | head -n 12
			echo "# top symbols (self time; libcrypto has no symbols without its -dbgsym package)"
			perf report -i "$dir/perf.data" --no-children -g none --sort dso,symbol --stdio 2>/dev/null |
				grep -E '^ +[0-9]' | head -n 40
			echo "# mxsend/mxload functions, inclusive time (children; meaningful with PERF_CG=dwarf)"
			perf report -i "$dir/perf.data" --children -g none --sort dso,symbol --stdio 2>/dev/null |
				grep -E '^ +[0-9]' | grep -E ' (mxload|mxsend) +\[' | head -n 50
		} >"$OUT/perf-$id.txt"
		say "bench: perf profile of $id in $OUT/perf-$id.txt"
	fi
	return 0
}

# ---------------------------------------------------------------------------
# Set-up

for b in "$MXLOAD" "$MXSINK" "$MXHSCOST"; do
	[ -x "$b" ] || die "$b not built (make all)"
done
command -v unbound >/dev/null || die "unbound missing (make deps)"
[ "$PERF" = 1 ] && ! command -v perf >/dev/null && die "--perf: perf is not installed"
mkdir -p "$OUT"
rm -f "$OUT/raw.txt" "$OUT/perf-"*.txt

# What else runs here: the CPU the machine spends in one second before we start anything.
IDLE_B0=$(busy_ticks)
sleep 1
BUSY_BEFORE=$(($(busy_ticks) - IDLE_B0))
BUSY_BEFORE=$((BUSY_BEFORE * 100 / $(getconf CLK_TCK)))
[ "$BUSY_BEFORE" -gt 20 ] &&
	say "bench: warning: the machine is already ${BUSY_BEFORE}% busy (of $(($(nproc) * 100))%) before the benchmark starts: other processes will compete (the oth% column)"

integ_setup '*.bench.test' mx0.bench.test
[ -z "$INTEG_MISSING" ] || die "set-up: $INTEG_MISSING"
ROWS=$INTEG_DIR/rows.csv
echo "$HDR" >"$ROWS"
T_START=$SECONDS

make_zone "$INTEG_DIR/zone.conf"
start_unbound -n dns "include: $INTEG_DIR/zone.conf" "rrset-roundrobin: yes" "msg-cache-size: 32m" \
	"rrset-cache-size: 64m" "so-rcvbuf: 8m" "so-sndbuf: 8m" || die "unbound did not start"
dns_query d$((NDOM - 1)).bench.test MX | grep -q 'MX:10:mx' || die "the bench zone does not answer"
SLOW_PORT=$(integ_port) || die "no port"
ADDRS=127.0.4.1-127.0.7.250
# The fast sink offers CHUNKING as Postfix (3.0 on) and Exim (4.88 on) do by default: mxsend
# then sends MAIL, RCPT and BDAT with the message in one write (one round trip per message).
# a3 measures the same load against a server without it (DATA: two round trips).
bench_sink fast --listen "$ADDRS:$SINK_PORT" --threads 2 --quiet --chunking || die "sink did not start"
if want a3; then
	NOCHUNK_PORT=$(integ_port) || die "no port"
	bench_sink nochunk --listen "$ADDRS:$NOCHUNK_PORT" --threads 2 --quiet || die "sink did not start"
fi
if want q1 || want qk1; then
	start_redis -n bench || die "redis-server did not start"
	integ_config "$INTEG_DIR/q.ini" "$(printf '[redis]\nurl = %s\n' "$REDIS_URL")"
	sed -i "s/^port = .*/port = $SINK_PORT/; /^\[mxsend\]/a workers = 2\nmax_inflight = 1000" "$INTEG_DIR/q.ini"
fi
bench_sink slow --listen "$ADDRS:$SLOW_PORT" --threads 2 --quiet --delay-ms "$C_DELAY" ||
	die "slow sink did not start"

# OpenSSL's own cost (same certificate and name shape as the sink's).
say "bench: mxhscost (OpenSSL TLS 1.3 handshake cost, in-process, n=$HS_N)"
HS=$(timeout 120 "$MXHSCOST" --certs "$CERTS" --name mx0.bench.test -n "$HS_N") || die "mxhscost failed"
echo "hscost $HS" >>"$OUT/raw.txt"
HS_NOW=$(kv full_client_us "$HS") HS_NOW_RES=$(kv resumed_client_us "$HS")
say "bench: $HS"

# ---------------------------------------------------------------------------
# Scenarios

B_MSGS=$NDOM
# c holds every session open at once: lift the default max_connections (20 per
# MX host and worker), which would otherwise queue most of them.
printf '[domain *]\nmax_connections = 10000\n' >"$INTEG_DIR/c.ini"
# DKIM (k*): mxload signs every message with the [dkim mxload.test] key (its From: domain)
if [ "$INTEG_LIST" != 1 ]; then
	if ! openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$INTEG_DIR/k-rsa.pem" 2>/dev/null ||
		! openssl genpkey -algorithm ED25519 -out "$INTEG_DIR/k-ed.pem" 2>/dev/null; then
		die "openssl genpkey (DKIM keys)"
	fi
	printf '[dkim mxload.test]\nkey = %s\nselector = b1\n' "$INTEG_DIR/k-rsa.pem" >"$INTEG_DIR/k-rsa.ini"
	printf '[dkim mxload.test]\nkey = %s\nselector = b2\n' "$INTEG_DIR/k-ed.pem" >"$INTEG_DIR/k-ed.ini"
	# qk1: the jobs qload.sh queues are From: news@sender.test
	if want qk1; then
		cp "$INTEG_DIR/q.ini" "$INTEG_DIR/qk.ini"
		printf '\n[dkim sender.test]\nkey = %s\nselector = b1\n' "$INTEG_DIR/k-rsa.pem" >>"$INTEG_DIR/qk.ini"
	fi
fi
K_RCPT_MSGS=$((A_MSGS / 100 > 10 ? A_MSGS / 100 : 10))
# scn ID: run scenario ID once (its row goes to $ROWS).
scn() {
	case $1 in
	a1) run_scn a1 fast "$SINK_PORT" "$LIMIT" "4KB, 1 domain, reused connections" -- \
		--domains 1 --messages "$A_MSGS" --concurrency "$A_CONC" --workers 2 ;;
	a2) run_scn a2 fast "$SINK_PORT" "$LIMIT" "4KB, 100 domains, reused connections" -- \
		--domains 100 --messages "$A_MSGS" --concurrency "$A_CONC" --workers 2 ;;
	b1) run_scn b1 fast "$SINK_PORT" "$LIMIT" "1 msg x $NDOM domains, no reuse, resumption" -- \
		--domains "$NDOM" --messages "$B_MSGS" --concurrency "$B_CONC" --workers 2 --no-reuse ;;
	b0) run_scn b0 fast "$SINK_PORT" "$LIMIT" "1 msg x $NDOM domains, no reuse, no resumption" -- \
		--domains "$NDOM" --messages "$B_MSGS" --concurrency "$B_CONC" --workers 2 --no-reuse --no-resume ;;
	bx) run_scn bx fast "$SINK_PORT" "$LIMIT" "b0, every chain verified (no verify cache)" -- \
		--domains "$NDOM" --messages "$B_MSGS" --concurrency "$B_CONC" --workers 2 --no-reuse --no-resume \
		--no-verify-cache ;;
	c) run_scn c slow "$SLOW_PORT" "$C_LIMIT" "$C_SESS sessions open at once, sink delay ${C_DELAY}ms" -- \
		--domains "$C_SESS" --messages "$C_SESS" --concurrency "$C_SESS" --workers 2 --no-reuse \
		--config "$INTEG_DIR/c.ini" ;;
	a3) run_scn a3 nochunk "$NOCHUNK_PORT" "$LIMIT" "4KB, 1 domain, reused, server without CHUNKING" -- \
		--domains 1 --messages "$A_MSGS" --concurrency "$A_CONC" --workers 2 ;;
	q1) "$BENCH_DIR/qload.sh" fill "$REDIS_PORT" "$A_MSGS" 1 "$SIZE" || die "q1: could not queue the jobs"
		run_scn q1 fast "$SINK_PORT" "$LIMIT" "4KB, 1 domain, reused, from Redis (mxsend run)" -- \
		"$REDIS_PORT" "$INTEG_DIR/q.ini" "$A_MSGS" ;;
	qk1) "$BENCH_DIR/qload.sh" fill "$REDIS_PORT" "$A_MSGS" 1 "$SIZE" || die "qk1: could not queue the jobs"
		run_scn qk1 fast "$SINK_PORT" "$LIMIT" "q1 + DKIM RSA-2048 (mxsend run)" -- \
		"$REDIS_PORT" "$INTEG_DIR/qk.ini" "$A_MSGS" ;;
	k1) run_scn k1 fast "$SINK_PORT" "$LIMIT" "a1 + DKIM RSA-2048 ($SIZE B)" -- \
		--domains 1 --messages "$A_MSGS" --concurrency "$A_CONC" --workers 2 --config "$INTEG_DIR/k-rsa.ini" ;;
	k2) run_scn k2 fast "$SINK_PORT" "$LIMIT" "a1 + DKIM Ed25519 ($SIZE B)" -- \
		--domains 1 --messages "$A_MSGS" --concurrency "$A_CONC" --workers 2 --config "$INTEG_DIR/k-ed.ini" ;;
	k0) run_scn k0 fast "$SINK_PORT" "$LIMIT" "a1 at 20 KB, unsigned" -- \
		--domains 1 --messages "$A_MSGS" --concurrency "$A_CONC" --workers 2 --size 20480 ;;
	k3) run_scn k3 fast "$SINK_PORT" "$LIMIT" "a1 at 20 KB + DKIM RSA-2048" -- \
		--domains 1 --messages "$A_MSGS" --concurrency "$A_CONC" --workers 2 --size 20480 \
		--config "$INTEG_DIR/k-rsa.ini" ;;
	k4) run_scn k4 fast "$SINK_PORT" "$LIMIT" "a1 at 20 KB + DKIM Ed25519" -- \
		--domains 1 --messages "$A_MSGS" --concurrency "$A_CONC" --workers 2 --size 20480 \
		--config "$INTEG_DIR/k-ed.ini" ;;
	k6) run_scn k6 fast "$SINK_PORT" "$LIMIT" "100 rcpts per message, unsigned" -- \
		--domains 1 --messages "$K_RCPT_MSGS" --concurrency 20 --workers 2 --rcpts 100 ;;
	k5) run_scn k5 fast "$SINK_PORT" "$LIMIT" "100 rcpts per message, DKIM RSA-2048 once" -- \
		--domains 1 --messages "$K_RCPT_MSGS" --concurrency 20 --workers 2 --rcpts 100 \
		--config "$INTEG_DIR/k-rsa.ini" ;;
	d1) run_scn d1 fast "$SINK_PORT" "$LIMIT" "4KB, 100 domains, reused, 1 worker" -- \
		--domains 100 --messages "$D_MSGS" --concurrency "$A_CONC" --workers 1 ;;
	d2) run_scn d2 fast "$SINK_PORT" "$LIMIT" "4KB, 100 domains, reused, 2 workers" -- \
		--domains 100 --messages "$D_MSGS" --concurrency "$A_CONC" --workers 2 ;;
	esac
}

# The throughput scenarios run REPS times, interleaved (so a burst of outside load hits every
# scenario alike); each row is the median repetition by CPU per message. All repetitions are
# in reps.csv. c runs once: it is latency-bound by design.
ALL_ROWS=$ROWS
REPS_CSV=$INTEG_DIR/reps.csv
echo "rep,$HDR" >"$REPS_CSV"
for ((rep = 1; rep <= REPS; rep++)); do
	calibrate "repetition $rep" "$HS_CAL_N"
	for id in a1 a2 a3 q1 qk1 b1 b0 bx d1 d2 k1 k2 k0 k3 k4 k6 k5; do
		want "$id" || continue
		ROWS=$INTEG_DIR/rows.$id
		[ "$rep" = 1 ] && echo "$HDR" >"$ROWS"
		[ "$REPS" -gt 1 ] && say "bench: repetition $rep of $REPS"
		# the handshake scenarios are judged against the yardstick: measure it right
		# before each of them, not a minute earlier (the machine's speed drifts)
		case $id in b*) calibrate "repetition $rep, before $id" "$HS_CAL_N" ;; esac
		scn "$id"
		tail -n 1 "$ROWS" | sed "s/^/$rep,/" >>"$REPS_CSV"
	done
done
ROWS=$ALL_ROWS
for id in a1 a2 a3 q1 qk1 b1 b0 bx c d1 d2 k1 k2 k0 k3 k4 k6 k5; do
	want "$id" || continue
	if [ "$id" = c ]; then
		calibrate "before c" "$HS_CAL_N"
		scn c
		continue
	fi
	# the median good repetition by CPU per message (failed ones have no msgs/s), else the
	# first: on a shared machine the spread between passes is wide (20%), and neither the best
	# nor the worst pass is the figure to quote
	awk -F, 'NR == 2 { first = $0 } NR > 1 && $5 != "" { n++; cpu[n] = $6 + 0; row[n] = $0 }
		END {
			if (n == 0) { print first; exit }
			for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
				if (cpu[j] < cpu[i]) { t = cpu[i]; cpu[i] = cpu[j]; cpu[j] = t; t = row[i]; row[i] = row[j]; row[j] = t }
			print row[int((n + 1) / 2)]
		}' "$INTEG_DIR/rows.$id" >>"$ROWS"
done

# ---------------------------------------------------------------------------
# Report

cp "$ROWS" "$OUT/results.csv"
cp "$REPS_CSV" "$OUT/reps.csv"
FULL_US=$(kv full_client_us "$HS")
RES_US=$(kv resumed_client_us "$HS")
{
	echo "mxsend bench $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n): $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -r)"
	echo "config: $([ "$QUICK" = 1 ] && echo "--quick ")reps=$REPS domains=$NDOM mx_hosts=$NMX addrs_per_mx=$APH size=$SIZE tls=may(verdict computed) sinks: fast 2 threads, slow 2 threads --delay-ms $C_DELAY (every reply); unbound 1 thread"
	echo "machine busy before the start: ${BUSY_BEFORE}% of $(($(nproc) * 100))% (1 s sample; other processes compete for the same cores: oth% below)"
	echo "openssl (mxhscost, one thread, memory BIOs, ECDSA P-256 cert, X25519): $HS"
	echo
	awk -F, '
	function c(name) { v = $(col[name]); gsub(/"/, "", v); return v }
	NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i
		printf "%-3s %-46s %2s %7s %8s %5s %5s %4s %4s %6s %6s %7s %6s %7s %6s %6s %7s %7s %7s  %s\n", \
			"id", "scenario", "w", "msgs/s", "us/msg", "snd%", "sink%", "dns%", "oth%", "hwm_MB", \
			"opened", "hs_full", "hs_res", "reused", "p50ms", "p99ms", "max_tls", "KB/sess", "undeliv", \
			"sender threads (CPU% of wall)"
		next }
	c("msgs_per_s") == "" { printf "%-3s %-46s  %s\n", c("id"), c("description"), c("thread_split"); next }
	{ printf "%-3s %-46s %2s %7s %8s %5s %5s %4s %4s %6s %6s %7s %6s %7s %6s %6s %7s %7s %7s  %s\n", \
		c("id"), substr(c("description"), 1, 46), c("workers"), c("msgs_per_s"), c("cpu_us_per_msg"), \
		c("sender_cpu_pct"), c("sink_cpu_pct"), c("dns_cpu_pct"), c("other_cpu_pct"), int(c("hwm_mb") + 0.5), \
		c("opened"), c("hs_full"), c("hs_resumed"), c("reused"), c("p50_ms"), c("p99_ms"), \
		(c("max_tls_open") > 0 ? c("max_tls_open") : "-"), (c("kb_per_session") != "" ? c("kb_per_session") : "-"), \
		c("messages") - c("delivered"), c("thread_split") }' "$ROWS"
	echo
	echo "columns: msgs/s and cpu_us/msg (all mxload threads: feeder + workers, getrusage) from mxload;"
	echo "  snd%/sink%/dns%/oth% = CPU of mxload / the sink (both threads) / unbound / everything else on the"
	echo "  machine (other processes, perf) over the run (200% = both cores);"
	echo "  rss/hwm = mxload VmRSS at the end / VmHWM; opened = new SMTP connections; hs_full/hs_res ="
	echo "  TLS handshakes the sink counted (full / resumed); reused = messages on a pooled connection;"
	echo "  max_tls = most TLS sessions open at the sink at one time (polled every 0.25 s);"
	echo "  KB/sess = (hwm - rss before the load) / max_tls; undeliv = messages not delivered (deferred:"
	echo "  see last_failure in raw.txt)."
	echo
	echo "verdicts:"
	awk -F, -v full="$FULL_US" -v res="$RES_US" -v idle="$(kv idle_client_kb "$HS")" \
		-v idlefb="$(kv idle_client_freebuf_kb "$HS")" -v size="$SIZE" '
	function c(name) { v = $(col[name]); gsub(/"/, "", v); return v }
	NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
	c("msgs_per_s") == "" { next }
	{ id = c("id"); cpu[id] = c("cpu_us_per_msg"); rate[id] = c("msgs_per_s"); snd[id] = c("sender_cpu_pct")
	  sink[id] = c("sink_cpu_pct"); dns[id] = c("dns_cpu_pct"); oth[id] = c("other_cpu_pct")
	  kb[id] = c("kb_per_session"); tls[id] = c("max_tls_open"); hsr[id] = c("hs_resumed"); hsf[id] = c("hs_full")
	  und[id] = c("messages") - c("delivered"); drops[id] = c("udp_drops")
	  of[id] = c("ossl_full_us"); orr[id] = c("ossl_res_us"); rds[id] = c("redis_us_per_msg")
	  sys[id] = c("sys_us_per_msg"); sg[id] = c("sign_us") }
	function bott(i) {
		tot = snd[i] + sink[i] + dns[i] + oth[i]
		if (tot >= 170) return sprintf("machine CPU-bound: sender %s%% + sink %s%% + dns %s%% + other %s%% of 200%%", snd[i], sink[i], dns[i], oth[i])
		if (sink[i] >= 90 && sink[i] >= snd[i]) return sprintf("sink-bound (%s%%)", sink[i])
		return sprintf("not CPU-bound (sender %s%%, sink %s%%): latency/concurrency-bound", snd[i], sink[i])
	}
	END {
		if ("a1" in cpu)
			printf "  a1 (reused connections, 4 KB, CHUNKING offered): %s us/msg (target <= 25) %s\n", cpu["a1"], (cpu["a1"] <= 25 ? "PASS" : "FAIL")
		# issue 19 part 3: CPU per signed message <= 1.15 x the OpenSSL signature + the unsigned cost
		if ("k1" in cpu && "a1" in cpu)
			printf "  k1 (a1 + DKIM RSA-2048): %s us/msg; a1 %s + 1.15 x OpenSSL sign %s = %.1f us (target) %s\n", cpu["k1"], cpu["a1"], sg["k1"], cpu["a1"] + 1.15 * sg["k1"], (cpu["k1"] <= cpu["a1"] + 1.15 * sg["k1"] ? "PASS" : "FAIL")
		if ("k2" in cpu && "a1" in cpu)
			printf "  k2 (a1 + DKIM Ed25519): %s us/msg; a1 %s + 1.15 x OpenSSL sign %s = %.1f us (target) %s\n", cpu["k2"], cpu["a1"], sg["k2"], cpu["a1"] + 1.15 * sg["k2"], (cpu["k2"] <= cpu["a1"] + 1.15 * sg["k2"] ? "PASS" : "FAIL")
		if ("k3" in cpu && "k0" in cpu)
			printf "  k3 (20 KB + DKIM RSA-2048): %s us/msg; k0 %s + 1.15 x OpenSSL sign %s = %.1f us (target) %s\n", cpu["k3"], cpu["k0"], sg["k3"], cpu["k0"] + 1.15 * sg["k3"], (cpu["k3"] <= cpu["k0"] + 1.15 * sg["k3"] ? "PASS" : "FAIL")
		if ("k4" in cpu && "k0" in cpu)
			printf "  k4 (20 KB + DKIM Ed25519): %s us/msg; k0 %s + 1.15 x OpenSSL sign %s = %.1f us (target) %s\n", cpu["k4"], cpu["k0"], sg["k4"], cpu["k0"] + 1.15 * sg["k4"], (cpu["k4"] <= cpu["k0"] + 1.15 * sg["k4"] ? "PASS" : "FAIL")
		if ("k5" in cpu && "k6" in cpu)
			printf "  k5 (100 rcpts, signed once): %s us/msg; unsigned k6 %s + 1.15 x OpenSSL sign %s = %.1f us (target: one signature per message) %s\n", cpu["k5"], cpu["k6"], sg["k5"], cpu["k6"] + 1.15 * sg["k5"], (cpu["k5"] <= cpu["k6"] + 1.15 * sg["k5"] ? "PASS" : "FAIL")
		if ("a3" in cpu)
			printf "  a3 (the same, server without CHUNKING: DATA, two round trips): %s us/msg\n", cpu["a3"]
		if ("q1" in cpu)
			printf "  q1 (a1 fed from Redis by mxsend run: claim, parse, results, XACK included): %s us/msg (target <= 25) %s; redis-server meanwhile: %s us/msg\n", cpu["q1"], (cpu["q1"] <= 25 ? "PASS" : "FAIL"), rds["q1"]
		if ("qk1" in cpu && "q1" in cpu && "k1" in cpu)
			printf "  qk1 (q1 + DKIM RSA-2048 on the signing threads of mxsend run): %s us/msg; q1 %s + 1.15 x OpenSSL sign %s (k1 row) = %.1f us (target) %s\n", cpu["qk1"], cpu["q1"], sg["k1"], cpu["q1"] + 1.15 * sg["k1"], (cpu["qk1"] <= cpu["q1"] + 1.15 * sg["k1"] ? "PASS" : "FAIL")
		else if ("qk1" in cpu && "q1" in cpu)
			printf "  qk1 (q1 + DKIM RSA-2048 on the signing threads of mxsend run): %s us/msg (q1 %s)\n", cpu["qk1"], cpu["q1"]
		if ("b0" in cpu && of["b0"] > 0)
			printf "  b0 (full handshakes): mxsend CPU/msg %s us / OpenSSL full client handshake %s us (measured just before) = %.2fx (target <= 1.2x) %s\n", \
				cpu["b0"], of["b0"], cpu["b0"] / of["b0"], (cpu["b0"] / of["b0"] <= 1.2 ? "PASS" : "FAIL")
		if ("b0" in cpu && full > 0)
			printf "     (against the start-of-run yardstick, %s us: %.2fx)\n", full, cpu["b0"] / full
		if ("b0" in cpu && sys["b0"] != "" && of["b0"] > 0)
			printf "     of which kernel %s us/msg (TCP and UDP over loopback: the receivers\x27 packet processing runs in the sender\x27s context too); user space %.1f us = %.2fx\n", \
				sys["b0"], cpu["b0"] - sys["b0"], (cpu["b0"] - sys["b0"]) / of["b0"]
		if ("bx" in cpu && of["bx"] > 0)
			printf "  bx (b0 with every chain verified, as the yardstick): %s us / %s us = %.2fx%s\n", cpu["bx"], of["bx"], cpu["bx"] / of["bx"], \
				("b0" in cpu ? sprintf("; the verified-chain cache saves %.0f us/msg", cpu["bx"] - cpu["b0"]) : "")
		if ("b1" in cpu && of["b1"] > 0)
			printf "  b1 (resumption on, %s of %s handshakes resumed): %s us/msg = %.2fx full, %.2fx resumed client handshake (%s us)\n", \
				hsr["b1"], hsr["b1"] + hsf["b1"], cpu["b1"], cpu["b1"] / of["b1"], cpu["b1"] / orr["b1"], orr["b1"]
		if ("c" in cpu) {
			printf "  c: %s TLS sessions open at once, %s KB RSS per session (target <= 32 KB) %s\n", \
				tls["c"], kb["c"], (kb["c"] != "" && kb["c"] <= 32 ? "PASS" : "FAIL")
			printf "     (OpenSSL alone, mxhscost: %s KB heap per idle client session, %s KB after SSL_free_buffers)\n", idle, idlefb
		}
		if ("d1" in rate && "d2" in rate && rate["d1"] > 0)
			printf "  d: 2 workers / 1 worker = %.0f / %.0f msgs/s = %.2fx measured (target >= 1.8x where the sink is not the limit)\n     d1: %s\n     d2: %s\n     if the sender had both cores to itself (CPU per message: %s us with 1 worker, %s us with 2): %.0f / %.0f msgs/s = %.2fx\n", \
				rate["d2"], rate["d1"], rate["d2"] / rate["d1"], bott("d1"), bott("d2"), cpu["d1"], cpu["d2"], \
				2e6 / cpu["d2"], 1e6 / cpu["d1"], (2e6 / cpu["d2"]) / (1e6 / cpu["d1"])
		for (i in rate) if (i != "d1" && i != "d2") printf "  %s: %s\n", i, bott(i)
		for (i in und) if (und[i] > 0) printf "  %s: %d messages not delivered (kernel UDP receive-buffer drops meanwhile: %s)\n", i, und[i], drops[i]
	}' "$ROWS"
	echo
	if [ "$REPS" -gt 1 ]; then
		echo "repetitions (msgs/s, oth%; the row above is the median by CPU per message):"
		awk -F, 'NR > 1 && $6 != "" { r[$2] = r[$2] sprintf(" %s (%s%%)", $6, $11) } END { for (i in r) print "  " i ":" r[i] }' "$REPS_CSV" | sort
	fi
	echo "elapsed: $((SECONDS - T_START)) s; raw mxload lines: build/bench/raw.txt; every repetition: build/bench/reps.csv"
} >"$OUT/results.txt"
cat "$OUT/results.txt"

# The plot: throughput and CPU per message per scenario, the OpenSSL handshake costs as lines.
if command -v gnuplot >/dev/null; then
	awk -F, 'NR > 1 && $5 != "" { print $1, $5, $6 }' "$ROWS" >"$INTEG_DIR/plot.dat" # id msgs/s us/msg
	gnuplot <<EOF 2>"$INTEG_DIR/gnuplot.err" || say "bench: gnuplot failed: $(head -n 3 "$INTEG_DIR/gnuplot.err")"
set terminal svg size 1000,480 dynamic font "sans,11"
set output "$OUT/bench.svg"
set multiplot layout 1,2 title "mxsend on $(nproc) CPUs, sink and DNS on the same machine$( [ "$QUICK" = 1 ] && echo ' (--quick)')"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.7
set grid ytics
set key top right
set logscale y
set yrange [10:*]
set title "throughput (msgs/s, log scale)"
plot "$INTEG_DIR/plot.dat" using 2:xtic(1) lc rgb "#4472c4" notitle
unset logscale y
set yrange [0:*]
set key below
set title "mxsend CPU per message (us)"
plot "$INTEG_DIR/plot.dat" using 3:xtic(1) lc rgb "#ed7d31" notitle, \
     $FULL_US with lines lw 2 lc rgb "#c00000" title "OpenSSL full handshake (client)", \
     $RES_US with lines lw 2 dt 2 lc rgb "#70ad47" title "OpenSSL resumed handshake (client)"
unset multiplot
EOF
	[ -s "$OUT/bench.svg" ] && say "bench: wrote $OUT/results.txt results.csv bench.svg"
else
	say "bench: gnuplot not installed (make deps): no bench.svg; wrote $OUT/results.txt results.csv"
fi
exit 0
