#!/usr/bin/env bash
# bench/postfix.sh [--messages N] [--only LIST] [--keep-postfix]: Postfix and mxsend side by side.
#
# One run, one neutral receiver: the project's TLS sink (build/mxsink, 2 threads, CHUNKING offered
# as in bench/run.sh), one certificate from bench/mkcerts.sh (SAN *.bench.test), unbound serving
# D domains d<i>.bench.test (100), each MX 10 mx<i>.bench.test at its own address 127.0.9.<10+i>.
# Every sender delivers N messages of 4 KB (one recipient each, spread evenly over the D domains)
# at TLS level verify (chain against the sink's CA, name = the MX host name), reusing connections
# and resuming TLS sessions as far as each sender can. Rows:
#   pf-in   Postfix receives N messages (smtp-source, D parallel clients, on 127.0.9.1:2525) and
#           parks them on hold: smtpd + cleanup + queue-file writes (the cost of its queue input)
#   pf-out  Postfix delivers them (postsuper -H ALL; postqueue -f) to the sink: qmgr + smtp +
#           tlsproxy + tlsmgr + scache + logging (the queue drain, like q1)
#   pf      pf-in + pf-out: everything Postfix spent per message
#   a2      mxsend fed directly by build/mxload (bench/run.sh scenario a2: --domains D
#           --concurrency 200 --workers 2), no queue
#   q1      mxsend run --until-empty draining N jobs queued in Redis (bench/qload.sh, as scenario
#           q1 of bench/run.sh but to D domains): claim, parse, results and XACK included;
#           redis-server's own CPU per message is shown beside it (redis_us)
# Columns: msgs/s (pf-in: accepted by smtpd; pf-out and q1: first to last delivery; a2: mxload),
# CPU us/msg of the sender (Postfix: every process of the instance, master and all its children,
# from a cgroup v1 cpuacct group they are started in; mxsend: getrusage of its own threads), the
# sink's and the rest of the machine's CPU meanwhile (200% = 2 cores), TLS handshakes the sink
# counted (full / resumed), connections it accepted, and bytes per message it received (Postfix
# adds a Received: header). Both Postfix phases also get a per-program split of Postfix's CPU
# (sampled from /proc every second: processes that exit between samples lose their last second).
#
# Postfix: from `make deps`; if missing, installed with apt-get ('No configuration': no system
# instance is set up) and purged again at exit, unless --keep-postfix (then it is left installed
# and stopped). The instance is private (tests/integ/postfix.sh, shared with tests/integ/t_mta.sh):
# its main.cf, master.cf, queue and logs live in the run's work directory (postfix -c DIR),
# smtpd listens on 127.0.9.1:2525 only, local delivery and address rewriting are off, and every
# d<i>.bench.test goes to [127.0.9.<10+i>]:PORT (transport_maps; no DNS in Postfix: it would ask
# /etc/resolv.conf, not our unbound) under smtp_tls_policy_maps
# "verify match=mx<i>.bench.test", with the TLS session cache, TLS connection reuse through
# tlsproxy (smtp_tls_connection_reuse), the connection cache, destination concurrency 100,
# 100 delivery processes (PF_PROCS) of 1000 deliveries each (max_use), and in_flow_delay 0.
# Postfix's SMTP client has no CHUNKING: it sends DATA where mxsend sends BDAT to the same sink.
#
# Environment: KEEP=1 keeps the work directory (Postfix's maillog, main.cf, the sink's log);
# PF_PROCS=N Postfix's default_process_limit (100); MXLOAD, MXSEND, MXSINK other builds.
# Needs root (apt-get, cgroups, postfix), unbound, redis-server, build/ (make all). Everything
# listens on 127.0.0.0/8 (the sink and Postfix on 127.0.9.x, the sink's stats port and Redis on
# 127.0.0.1 at free private ports); everything started is stopped at exit; every wait is bounded.
set -u

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../tests/integ/lib.sh
. "$BENCH_DIR/../tests/integ/lib.sh"
MXLOAD=${MXLOAD:-$INTEG_ROOT/build/mxload}

N=20000
ONLY=""
KEEP_PF=0
while [ $# -gt 0 ]; do
	case $1 in
	--messages) N=$2; shift ;;
	--only) ONLY=",$2,"; shift ;;
	--keep-postfix) KEEP_PF=1 ;;
	-h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "usage: bench/postfix.sh [--messages N] [--only pf,a2,q1] [--keep-postfix]" >&2; exit 64 ;;
	esac
	shift
done
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "bench/postfix.sh: --messages wants a positive number" >&2; exit 64; }

NDOM=100                 # recipient domains = MX hosts = sink addresses
SIZE=4096                # message size on the wire (bytes, CRLF lines, as bench/qload.sh makes them)
CONC=200                 # mxload's concurrency (bench/run.sh a2), and mxsend run's max_inflight in q1
                         # (bench/run.sh's q1 uses 1000 to one domain; to 100 domains that opens
                         # ~3x the connections: the same 200 in flight as a2 is the fairer match)
PF_PROCS=${PF_PROCS:-100}
PF_ADDR=127.0.9.1        # Postfix's smtpd (injection)
PF_PORT=2525
LIMIT=$((120 + N / 50))  # seconds allowed to each phase
SINK_FIRST=10            # sink addresses 127.0.9.10 ...
[ $((SINK_FIRST + NDOM - 1)) -le 254 ] || { echo "bench/postfix.sh: too many domains for 127.0.9.x" >&2; exit 64; }

BENCH_NAME=bench/postfix
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

# ---------------------------------------------------------------------------
# Postfix: package, private instance (tests/integ/postfix.sh), cgroup

# shellcheck source=tests/integ/postfix.sh
. "$INTEG_LIB_DIR/postfix.sh"
CG=""            # the cpuacct cgroup of the instance

# shellcheck disable=SC2317 # pf_cleanup and on_exit run from the EXIT trap
# pf_cleanup: stop the instance, empty and remove its cgroup, purge the package if ours.
# Runs from the EXIT trap, before lib.sh's integ_cleanup (which stops the sink, unbound, Redis).
pf_cleanup() {
	local i pids
	pf_stop
	if [ -n "$CG" ] && [ -d "$CG" ]; then
		for ((i = 0; i < 50; i++)); do # postfix stop lets children finish: 5 s at most
			pids=$(cat "$CG/cgroup.procs" 2>/dev/null)
			[ -z "$pids" ] && break
			# shellcheck disable=SC2086 # one pid per word
			[ "$i" = 30 ] && kill -TERM $pids 2>/dev/null
			sleep 0.1
		done
		pids=$(cat "$CG/cgroup.procs" 2>/dev/null)
		# shellcheck disable=SC2086 # one pid per word
		[ -n "$pids" ] && kill -KILL $pids 2>/dev/null && sleep 0.2
		rmdir "$CG" 2>/dev/null || say "bench/postfix: could not remove cgroup $CG"
	fi
	if [ "$PF_INSTALLED" = 1 ] && [ "$KEEP_PF" = 0 ]; then
		say "bench/postfix: purging the postfix package this run installed"
		pf_purge || say "bench/postfix: apt-get purge postfix failed"
	fi
}
# shellcheck disable=SC2317
on_exit() {
	local rc=$?
	pf_cleanup
	(exit "$rc") # integ_cleanup exits with the status it finds in $?
	integ_cleanup
}

# pf_setup: the private instance (pf_init's basics plus the bench's settings and maps).
pf_setup() {
	pf_init "$INTEG_DIR/postfix" postfix.bench.test || return 1
	# transport and TLS policy: d<i> -> [127.0.9.<10+i>]:PORT, verified as mx<i>.bench.test
	awk -v nd="$NDOM" -v first="$SINK_FIRST" -v port="$SINK_PORT" -v dir="$PF_DIR/etc" 'BEGIN {
		for (i = 0; i < nd; i++) {
			printf "d%d.bench.test smtp:[127.0.9.%d]:%d\n", i, first + i, port > (dir "/transport")
			printf "[127.0.9.%d]:%d verify match=mx%d.bench.test servername=mx%d.bench.test\n", \
				first + i, port, i, i > (dir "/tls_policy")
		}
	}'
	cat >>"$PF_DIR/etc/main.cf" <<EOF
# bench/postfix.sh
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
# phase 1 parks every message on hold (released in phase 2: postsuper -H ALL)
smtpd_end_of_data_restrictions = check_client_access static:HOLD
smtpd_tls_security_level = none
in_flow_delay = 0
# delivery: every domain to its sink address, TLS verify against the sink's CA
transport_maps = texthash:$PF_DIR/etc/transport
smtp_tls_security_level = verify
smtp_tls_policy_maps = texthash:$PF_DIR/etc/tls_policy
smtp_tls_CAfile = $CA
smtp_tls_session_cache_database = btree:\${data_directory}/smtp_scache
smtp_tls_connection_reuse = yes
smtp_tls_loglevel = 0
smtp_connection_cache_on_demand = yes
smtp_connection_reuse_time_limit = 300s
smtp_dns_support_level = disabled
smtp_host_lookup = native
default_destination_concurrency_limit = 100
smtp_destination_concurrency_limit = 100
initial_destination_concurrency = 20
default_process_limit = $PF_PROCS
# a delivery process serves 1000 deliveries before it exits (default 100: master's re-spawns and
# each new process's TLS set-up are not what the comparison is about)
max_use = 1000
qmgr_message_active_limit = $((N > 20000 ? N : 20000))
qmgr_message_recipient_limit = $((N > 20000 ? N : 20000))
EOF
	# the only listener (tlsproxy, in pf_init's master.cf, serves smtp_tls_connection_reuse)
	pf_listen "$PF_ADDR:$PF_PORT"
}

# bench_pf_start: start the master inside a fresh cpuacct cgroup (its children inherit it).
bench_pf_start() {
	local root=/sys/fs/cgroup/cpuacct
	[ -w "$root/cgroup.procs" ] || { say "bench/postfix: $root (cgroup v1 cpuacct) is not mounted"; return 1; }
	CG=$root/mxsend-postfix-bench.$$
	mkdir "$CG" || return 1
	pf_start "$CG"
}

cg_ns() { cat "$CG/cpuacct.usage"; } # CPU of the instance so far, nanoseconds

# queue_count DIR...: files in those queue directories.
queue_count() {
	local d n=0 c
	for d in "$@"; do
		c=$(find "$PF_DIR/spool/$d" -type f 2>/dev/null | wc -l)
		n=$((n + c))
	done
	echo "$n"
}

# Sample the CPU of every process in the cgroup (every second, until $1.stop exists): lines of
# "/proc/PID/stat PROGRAM TICKS" (Postfix daemons' comm is the program name). The first sample
# (marked B) is the baseline: processes alive before the phase count only what they spent in it.
cg_sample() {
	# shellcheck disable=SC2046 # one file argument per pid
	awk -v tag="$1" '{ l = $0; sub(/^[^(]*\(/, "", l); name = substr(l, 1, index(l, ")") - 1)
		sub(/^[^)]*\) /, "", l); split(l, a, " "); print tag, FILENAME, name, a[12] + a[13] }' \
		$(sed 's#.*#/proc/&/stat#' "$CG/cgroup.procs") 2>/dev/null
}
cg_sampler() {
	local f=$1 i
	for ((i = 0; i < LIMIT + 60; i++)); do
		[ -e "$f.stop" ] && break
		sleep 1
		cg_sample S >>"$f.raw"
	done
}
# cg_split FILE N: CPU per message by program over the phase ("name:us ..."): per pid the highest
# count seen minus its baseline, summed by program name.
cg_split() {
	awk -v n="$2" -v hz="$(getconf CLK_TCK)" '$1 == "B" { base[$2] = $4; next }
		{ k = $2 " " $3; if ($4 > m[k]) m[k] = $4; pid[k] = $2 }
		END { for (k in m) { split(k, a, " "); d = m[k] - base[pid[k]]; if (d > 0) t[a[2]] += d }
			for (p in t) printf "%s %.0f\n", p, t[p] / hz * 1e6 / n }' "$1.raw" 2>/dev/null |
		sort -k2,2nr | awk '{ printf "%s%s:%s", (NR > 1 ? " " : ""), $1, $2 }'
}

# ---------------------------------------------------------------------------
# Rows: "id|description|msgs_per_s|cpu_us|sink_pct|other_pct|hs_full|hs_res|conns|bytes_per_msg|delivered|note"
ROWS=()
row() { ROWS+=("$(printf '%s|' "$@")"); }

# measure_begin / measure_end SINK: sink counters, sink CPU, machine CPU, wall clock.
measure_begin() {
	M_S0=$(sink_stat fast) || die "the sink does not answer"
	M_K0=$(cpu_ticks "$(proc_pid sink.fast)")
	M_B0=$(busy_ticks)
	M_T0=$(now_ms)
}
# measure_end SENDER_CPU_S: sets M_SINK% M_OTHER% M_HSF M_HSR M_CONN M_MSGS M_BPM
measure_end() {
	local s1 k1 b1 t1 hz wall
	s1=$(sink_stat fast) || die "the sink does not answer"
	k1=$(cpu_ticks "$(proc_pid sink.fast)")
	b1=$(busy_ticks)
	t1=$(now_ms)
	hz=$(getconf CLK_TCK)
	wall=$((t1 - M_T0))
	[ "$wall" -gt 0 ] || wall=1
	read -r M_SINK M_OTHER < <(awk -v k=$((k1 - M_K0)) -v b=$((b1 - M_B0)) -v hz="$hz" -v w="$wall" \
		-v snd="$1" 'BEGIN { s = k / hz / (w / 1000) * 100; o = b / hz / (w / 1000) * 100 - s - snd / (w / 1000) * 100
			if (o < 0) o = 0; printf "%.0f %.0f\n", s, o }')
	M_HSR=$(($(kv resumed "$s1") - $(kv resumed "$M_S0")))
	M_HSF=$(($(kv handshakes "$s1") - $(kv handshakes "$M_S0") - M_HSR))
	M_CONN=$(($(kv connections "$s1") - $(kv connections "$M_S0")))
	M_MSGS=$(($(kv messages "$s1") - $(kv messages "$M_S0")))
	M_BPM=$(awk -v b=$(($(kv bytes "$s1") - $(kv bytes "$M_S0"))) -v m="$M_MSGS" 'BEGIN { printf "%.0f", (m > 0 ? b / m : 0) }')
}

# wait_sink_count TARGET LIMIT_S: until the sink has counted TARGET messages in all (polled every
# 0.1 s); prints the ms timestamp when it got there. Returns 1 on time-out.
wait_sink_count() {
	local target=$1 limit=$2 t0=$SECONDS m
	while [ $((SECONDS - t0)) -lt "$limit" ]; do
		m=$(kv messages "$(sink_stat fast)")
		if [ "${m:-0}" -ge "$target" ]; then
			now_ms
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# ---------------------------------------------------------------------------
# Set-up

for b in "$MXLOAD" "$MXSEND" "$MXSINK"; do
	[ -x "$b" ] || die "$b not built (make all)"
done
[ "$(id -u)" = 0 ] || die "needs root (apt-get, cgroups, postfix)"
command -v unbound >/dev/null || die "unbound missing (make deps)"
command -v redis-server >/dev/null || die "redis-server missing (make deps)"

integ_setup '*.bench.test' mx0.bench.test
trap on_exit EXIT
[ -z "$INTEG_MISSING" ] || die "set-up: $INTEG_MISSING"
T_START=$SECONDS

# the zone: d<i> -> mx<i> -> 127.0.9.<10+i>
awk -v nd="$NDOM" -v first="$SINK_FIRST" 'BEGIN {
	for (i = 0; i < nd; i++) {
		printf "local-data: \"d%d.bench.test. 3600 IN MX 10 mx%d.bench.test.\"\n", i, i
		printf "local-data: \"mx%d.bench.test. 3600 IN A 127.0.9.%d\"\n", i, first + i
	}
}' >"$INTEG_DIR/zone.conf"
start_unbound -a 127.0.9.53 -n dns "include: $INTEG_DIR/zone.conf" "msg-cache-size: 32m" \
	"so-rcvbuf: 8m" || die "unbound did not start"
dns_query "d$((NDOM - 1)).bench.test" MX | grep -q 'MX:10:mx' || die "the bench zone does not answer"

# the sink, as bench/run.sh's fast sink (no maildir: counters only)
SINK_DIR=$INTEG_DIR/sink.fast
mkdir -p "$SINK_DIR"
SPORT=$(integ_port) || die "no port"
echo "$SPORT" >"$SINK_DIR/stats_port"
integ_spawn sink.fast "$SINK_DIR/log" "$MXSINK" --listen "127.0.9.$SINK_FIRST-$((SINK_FIRST + NDOM - 1)):$SINK_PORT" \
	--threads 2 --quiet --chunking --cert "$CERTS/server.pem" --key "$CERTS/server.key" \
	--pidfile "$SINK_DIR/pid" --stats "127.0.0.1:$SPORT"
for ((i = 0; i < 50; i++)); do
	sink_stat fast >/dev/null && break
	kill -0 "$SPAWN_PID" 2>/dev/null || { tail -n 5 "$SINK_DIR/log" >&2; die "the sink exited"; }
	sleep 0.1
done
sink_stat fast >/dev/null || die "the sink did not start"

# one message file for smtp-source (LF lines: it sends CRLF), SIZE bytes on the wire like qload.sh's
awk -v size="$SIZE" 'BEGIN {
	line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor."
	hdr = "From: news@sender.test\r\nTo: user@bench.test\r\nSubject: bench\r\n\r\n"; body = ""
	while (length(hdr) + length(body) + length(line) + 2 <= size) body = body line "\r\n"
	m = hdr body; gsub(/\r/, "", m); printf "%s", m
}' >"$INTEG_DIR/msg.txt"

# ---------------------------------------------------------------------------
# Postfix

if want pf; then
	pf_install "$INTEG_DIR/apt.log" || die "could not install postfix"
	[ "$PF_INSTALLED" = 0 ] || say "bench/postfix: installed postfix (apt-get, 'No configuration'); purged at exit"
	pf_setup || die "could not write the Postfix instance"
	bench_pf_start || die "Postfix did not start"
	say "bench/postfix: Postfix $(pfconf -h mail_version) on $PF_ADDR:$PF_PORT (config $PF_DIR/etc), $N messages"

	# phase 1: injection (D smtp-source clients at once, one per domain, each reusing its connection)
	cg_sample B >"$INTEG_DIR/cgin.raw"
	cg_sampler "$INTEG_DIR/cgin" &
	sampler=$!
	measure_begin
	c0=$(cg_ns)
	per=$((N / NDOM)) rem=$((N % NDOM))
	pids=()
	for ((i = 0; i < NDOM; i++)); do
		m=$((per + (i < rem ? 1 : 0)))
		[ "$m" -gt 0 ] || continue
		timeout -k 2 "$LIMIT" smtp-source -4 -d -N -m "$m" -s 1 -F "$INTEG_DIR/msg.txt" \
			-f news@sender.test -t "user@d$i.bench.test" -M client.bench.test "$PF_ADDR:$PF_PORT" \
			>>"$INTEG_DIR/smtp-source.log" 2>&1 &
		pids+=($!)
	done
	fails=0
	for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
	t_in=$(now_ms)
	# the last queue files are written when smtp-source has its 250s: count them (5 s at most)
	for ((i = 0; i < 50; i++)); do
		held=$(queue_count hold)
		[ "$held" -ge "$N" ] && break
		sleep 0.1
	done
	c1=$(cg_ns)
	: >"$INTEG_DIR/cgin.stop"
	wait "$sampler"
	PF_SPLIT_IN=$(cg_split "$INTEG_DIR/cgin" "$N")
	measure_end "$(awk -v c=$((c1 - c0)) 'BEGIN { print c / 1e9 }')"
	[ "$fails" = 0 ] || say "bench/postfix: $fails smtp-source clients failed: $(tail -n 3 "$INTEG_DIR/smtp-source.log" | tr '\n' ' ')"
	in_rate=$(awk -v n="$held" -v ms=$((t_in - M_T0)) 'BEGIN { printf "%.0f", (ms > 0 ? n / (ms / 1000) : 0) }')
	in_cpu=$(awk -v c=$((c1 - c0)) -v n="$N" 'BEGIN { printf "%.1f", c / 1e3 / n }')
	row pf-in "Postfix receives (smtpd+cleanup+queue)" "$in_rate" "$in_cpu" "$M_SINK" "$M_OTHER" - - - - "$held" "on hold, of $N"
	[ "$held" -ge "$N" ] || die "only $held of $N messages reached Postfix's queue (see $INTEG_DIR/smtp-source.log; KEEP=1)"

	# phase 2: delivery of the whole queue
	cg_sample B >"$INTEG_DIR/cg.raw"
	cg_sampler "$INTEG_DIR/cg" &
	sampler=$!
	base=$(kv messages "$(sink_stat fast)")
	measure_begin
	c0=$(cg_ns)
	postsuper -c "$PF_DIR/etc" -H ALL >>"$PF_DIR/log/postsuper.log" 2>&1
	postqueue -c "$PF_DIR/etc" -f
	t_done=$(wait_sink_count $((base + N)) "$LIMIT") || say "bench/postfix: the sink did not count $N messages within $LIMIT s"
	# then until Postfix has removed its queue files (its own bookkeeping is part of the cost)
	for ((i = 0; i < 300; i++)); do
		[ "$(queue_count incoming active deferred)" = 0 ] && break
		sleep 0.1
	done
	c1=$(cg_ns)
	: >"$INTEG_DIR/cg.stop"
	wait "$sampler"
	measure_end "$(awk -v c=$((c1 - c0)) 'BEGIN { print c / 1e9 }')"
	out_rate=$(awk -v n="$M_MSGS" -v ms=$((${t_done:-$(now_ms)} - M_T0)) 'BEGIN { printf "%.0f", (ms > 0 ? n / (ms / 1000) : 0) }')
	out_cpu=$(awk -v c=$((c1 - c0)) -v n="$N" 'BEGIN { printf "%.1f", c / 1e3 / n }')
	left=$(queue_count incoming active deferred hold)
	row pf-out "Postfix delivers (qmgr+smtp+tlsproxy...)" "$out_rate" "$out_cpu" "$M_SINK" "$M_OTHER" \
		"$M_HSF" "$M_HSR" "$M_CONN" "$M_BPM" "$M_MSGS" "left in queue: $left"
	PF_SPLIT=$(cg_split "$INTEG_DIR/cg" "$N")
	tot_cpu=$(awk -v a="$in_cpu" -v b="$out_cpu" 'BEGIN { printf "%.1f", a + b }')
	tot_rate=$(awk -v a="$in_rate" -v b="$out_rate" 'BEGIN { if (a > 0 && b > 0) printf "%.0f", 1 / (1 / a + 1 / b); else print "-" }')
	row pf "Postfix in + out (one after the other)" "$tot_rate" "$tot_cpu" - - "$M_HSF" "$M_HSR" "$M_CONN" "$M_BPM" "$M_MSGS" ""
	# (tlsproxy warns once per process that its server role is off: expected)
	PF_LOG_ERR=$(grep -E 'warning|error|fatal|panic|status=(deferred|bounced)' "$PF_DIR/log/maillog" |
		grep -vc 'TLS server role is disabled')
	pf_stop
fi

# ---------------------------------------------------------------------------
# mxsend

# a2: mxload, as bench/run.sh a2 (no queue)
if want a2; then
	say "bench/postfix: mxsend a2 (mxload, $N messages)"
	measure_begin
	line=$(timeout -k 3 "$LIMIT" "$MXLOAD" --dns "$DNS" --ca "$CA" --port "$SINK_PORT" --size "$SIZE" \
		--domains "$NDOM" --messages "$N" --concurrency "$CONC" --workers 2 --tls verify \
		2>"$INTEG_DIR/mxload.err" | grep -m1 '^messages=')
	measure_end "$(kv cpu_s "$line")"
	if [ -n "$line" ]; then
		row a2 "mxsend, mxload feeding workers (no queue)" "$(kv msgs_per_s "$line")" "$(kv cpu_us_per_msg "$line")" \
			"$M_SINK" "$M_OTHER" "$M_HSF" "$M_HSR" "$M_CONN" "$M_BPM" "$(kv delivered "$line")" ""
	else
		row a2 "mxsend, mxload feeding workers (no queue)" - - - - - - - - - "failed: $(tail -n 2 "$INTEG_DIR/mxload.err" | tr '\n' ' ')"
	fi
fi

# q1: mxsend run draining Redis (bench/qload.sh)
if want q1; then
	start_redis -n q || die "redis-server did not start"
	integ_config "$INTEG_DIR/q.ini" "$(printf '[redis]\nurl = %s\n' "$REDIS_URL")"
	sed -i "s/^port = .*/port = $SINK_PORT\ntls = verify/; /^\[mxsend\]/a workers = 2\nmax_inflight = $CONC" "$INTEG_DIR/q.ini"
	say "bench/postfix: mxsend q1 (queueing $N jobs in Redis, then mxsend run --until-empty)"
	"$BENCH_DIR/qload.sh" fill "$REDIS_PORT" "$N" "$NDOM" "$SIZE" || die "q1: could not queue the jobs"
	measure_begin
	line=$(timeout -k 3 "$LIMIT" "$BENCH_DIR/qload.sh" run "$MXSEND" "$REDIS_PORT" "$INTEG_DIR/q.ini" "$N" \
		2>"$INTEG_DIR/qload.err" | grep -m1 '^messages=')
	measure_end "$(kv cpu_s "$line")"
	if [ -n "$line" ]; then
		row q1 "mxsend run, from Redis (claim..XACK)" "$(kv msgs_per_s "$line")" "$(kv cpu_us_per_msg "$line")" \
			"$M_SINK" "$M_OTHER" "$M_HSF" "$M_HSR" "$M_CONN" "$M_BPM" "$(kv delivered "$line")" \
			"redis_us=$(kv redis_cpu_us_per_msg "$line")"
	else
		row q1 "mxsend run, from Redis (claim..XACK)" - - - - - - - - - "failed: $(tail -n 2 "$INTEG_DIR/qload.err" | tr '\n' ' ')"
	fi
fi

# ---------------------------------------------------------------------------
# Report

{
	echo "bench/postfix.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n): $(nproc) CPUs, $N messages of $SIZE bytes to $NDOM domains, TLS verify, sink: mxsink 2 threads --chunking"
	printf '%-6s %-42s %7s %8s %5s %4s %7s %6s %6s %6s %9s  %s\n' id sender msgs/s us/msg sink% oth% hs_full hs_res conns B/msg delivered note
	for r in "${ROWS[@]}"; do
		IFS='|' read -r id d rate cpu sk ot hf hr cn bpm dl note <<<"$r"
		printf '%-6s %-42s %7s %8s %5s %4s %7s %6s %6s %6s %9s  %s\n' "$id" "$d" "$rate" "$cpu" "$sk" "$ot" "$hf" "$hr" "$cn" "$bpm" "$dl" "$note"
	done
	if [ -n "${PF_SPLIT:-}" ]; then
		echo "Postfix CPU by program (us/msg; sampled each second, so a little under the totals above):"
		echo "  receiving: ${PF_SPLIT_IN:-}"
		echo "  delivering: $PF_SPLIT"
		echo "Postfix maillog lines with warning/error/deferred/bounced: $PF_LOG_ERR"
	fi
	awk -v rows="$(printf '%s\n' "${ROWS[@]}")" 'BEGIN {
		n = split(rows, r, "\n")
		for (i = 1; i <= n; i++) { split(r[i], f, "|"); rate[f[1]] = f[3]; cpu[f[1]] = f[4] }
		if ((cpu["pf"] + 0) > 0 && (cpu["q1"] + 0) > 0)
			printf "ratio CPU/msg: Postfix in+out / mxsend q1 = %.1fx; Postfix delivery only / mxsend q1 = %.1fx\n", cpu["pf"] / cpu["q1"], cpu["pf-out"] / cpu["q1"]
		if ((cpu["pf-out"] + 0) > 0 && (cpu["a2"] + 0) > 0)
			printf "ratio CPU/msg: Postfix delivery only / mxsend a2 = %.1fx\n", cpu["pf-out"] / cpu["a2"]
		if ((rate["pf-out"] + 0) > 0 && (rate["q1"] + 0) > 0)
			printf "ratio msgs/s: mxsend q1 / Postfix delivery = %.1fx\n", rate["q1"] / rate["pf-out"]
	}'
	echo "columns: us/msg = sender CPU per message (Postfix: cgroup cpuacct of the whole instance; mxsend: its own"
	echo "  getrusage); sink%/oth% = the sink's / everything else's CPU meanwhile (200% = both cores; oth% includes"
	echo "  smtp-source in pf-in, redis-server and unbound); hs_full/hs_res = TLS handshakes the sink counted;"
	echo "  conns = connections the sink accepted; B/msg = bytes per message the sink received."
	echo "elapsed: $((SECONDS - T_START)) s"
} | tee "$INTEG_DIR/results.txt"
mkdir -p "$INTEG_ROOT/build/bench" && cp "$INTEG_DIR/results.txt" "$INTEG_ROOT/build/bench/postfix.txt"
exit 0
