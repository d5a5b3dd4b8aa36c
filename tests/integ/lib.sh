# shellcheck shell=bash
# shellcheck disable=SC2034 # the globals set here are read by the t_*.sh scripts
# tests/integ/lib.sh: the integration-test harness (sourced, never run).
#
# Real servers on loopback only (127.0.0.0/8), each started from a config
# generated in a private work directory, each stopped at exit:
#   unbound      DNS for the test zones        start_unbound
#   mxsink       the TLS SMTP sink (bench/)     start_sink, sink_stat, sink_find_msg
#   redis-server the job queue                  start_redis, start_redis_tls (TLS only)
# plus TAP-like reporting (ok/not_ok, run_case, run_case_bg/wait_cases),
# assertions that explain themselves on failure, and the fixtures the scripts
# share (defined here once): send, msg, mx, expect_rc/expect_line/expect_out,
# expect_sink, expect_mail/expect_no_mail, rcli, results, pipe_jobs, start_nginx,
# integ_config, body_gen.
# A feature whose cases need several set-ups keeps them as parts
# (tests/integ/FEATURE/*.sh) that its t_FEATURE.sh runs (integ_parts).
#
# Usage, in tests/integ/t_NAME.sh:
#   . "$(dirname "$0")/lib.sh"
#   integ_setup                      # workdir, ports, binaries, certs, traps
#   integ_require mxsend mxsink      # a missing piece turns every case into "not ok"
#   start_unbound "ok.test. MX 10 mx1.test." "mx1.test. A 127.0.3.1" || ...
#   start_sink good --listen "127.0.3.1:$SINK_PORT"
#   t_something() { ...; assert_eq "exit" 0 "$RUN_RC"; }
#   run_case "something works" t_something
#   integ_finish                     # "# N passed, M failed"; exit 1 on failure
#
# One case by name, or the list of cases (every t_*.sh, parsed here from the
# script's own arguments, or ONLY in the environment):
#   bash tests/integ/t_x.sh -k PATTERN   only the cases whose function matches
#   ONLY=PATTERN bash tests/integ/t_x.sh   the glob PATTERN or whose name contains
#                                          it (e.g. -k t_enforce_ok, -k 'enforce*MX 20');
#                                          the others are not run and not counted
#   bash tests/integ/t_x.sh --list       print "FUNCTION<TAB>NAME" per case; starts no
#                                          server, runs no case, exits 0
# A case that builds on an earlier one's state (sts/run.sh's numbered
# cases) needs that one selected too.
#
# Rules kept by every function here: every wait is bounded in count and time,
# every process started is registered and killed at exit (SIGTERM, SIGKILL
# after 3 s), and nothing listens or connects outside 127.0.0.0/8.
# KEEP=1 keeps the work directory (its path is printed on stderr);
# MXSEND=... / MXSINK=... test other binaries (default build/mxsend, build/mxsink).

INTEG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
INTEG_LIB_DIR=$INTEG_ROOT/tests/integ
MXSEND=${MXSEND:-$INTEG_ROOT/build/mxsend} # overridable, e.g. an ASan build
MXSINK=${MXSINK:-$INTEG_ROOT/build/mxsink}
MKCERTS=$INTEG_ROOT/bench/mkcerts.sh
DNSQ=$INTEG_LIB_DIR/dnsq.pl

# A t_*.sh script's (or a part's, tests/integ/FEATURE/*.sh) arguments (lib.sh
# is sourced without any: "$@" is the script's; demo.sh and bench/ keep theirs).
INTEG_ONLY=${ONLY:-} # a case's function glob or part of its name (-k, ONLY)
INTEG_LIST=0         # --list: print the cases, run nothing
integ_args() {
	while [ $# -gt 0 ]; do
		case $1 in
		-k) [ $# -ge 2 ] || { echo "-k needs a PATTERN" >&2; exit 2; }; INTEG_ONLY=$2; shift ;;
		-k*) INTEG_ONLY=${1#-k} ;;
		--list | -l) INTEG_LIST=1 ;;
		-h | --help)
			echo "usage: bash $0 [-k PATTERN] [--list]  (or ONLY=PATTERN; see tests/integ/lib.sh)"
			exit 0
			;;
		*) echo "$0: unknown argument '$1' (usage: [-k PATTERN] [--list])" >&2; exit 2 ;;
		esac
		shift
	done
}
[[ ${0##*/} == t_*.sh || $0 == *integ/*/*.sh ]] && integ_args "$@"

INTEG_DIR=""        # the run's work directory (mktemp -d)
INTEG_MISSING=""    # what integ_require / integ_setup could not find or start
INTEG_PASS=0
INTEG_FAIL=0
INTEG_NCASE=0
INTEG_BG=()         # case directories of run_case_bg jobs not yet collected
CERTS=""            # directory with ca.pem server.pem wrong.pem expired.pem selfsigned.pem (+ .key)
CA=""               # $CERTS/ca.pem
SINK_PORT=""        # one SMTP port shared by every sink (sinks differ by address)
DNS=""              # ADDR:PORT of the last unbound started
CASE_DIR=""         # inside a case: its private directory

# Default MX host names in the run's server certificate (besides *.test and
# localhost); integ_setup's arguments replace them. List every name a test
# verifies: OpenSSL never matches the *.test SAN (a wildcard needs at least two
# labels after it), so only the explicit names verify.
INTEG_CERT_NAMES=(mx1.test mx2.test mx3.test mx4.test mx5.test mx6.test mx7.test mx8.test mx9.test)

# ---------------------------------------------------------------------------
# Set-up and clean-up

# integ_setup [CERT_NAME...]
# Creates the work directory, installs the traps, picks a random block of
# free ports (20000-40000) and SINK_PORT, and makes the run's certificates with
# bench/mkcerts.sh (names: the arguments, or INTEG_CERT_NAMES). Never fails
# hard: a missing piece is recorded in INTEG_MISSING.
integ_setup() {
	INTEG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mxsend-integ.XXXXXX") || {
		echo "integ_setup: mktemp failed" >&2
		exit 1
	}
	: >"$INTEG_DIR/procs"
	trap integ_cleanup EXIT
	if [ "$INTEG_LIST" = 1 ]; then
		# --list: no certificates, no servers (start_* return at once); the
		# scripts' "[ -z "$INTEG_MISSING" ]" guards skip the rest of their set-up
		INTEG_MISSING="(--list)"
		echo 20000 >"$INTEG_DIR/next_port"
		echo 20400 >"$INTEG_DIR/end_port"
		SINK_PORT=20000
		CERTS=$INTEG_DIR/certs
		CA=$CERTS/ca.pem
		return 0
	fi
	trap 'exit 143' TERM
	trap 'exit 130' INT
	trap 'exit 129' HUP
	# A block of 400 ports; integ_port hands them out in order, skipping busy ones.
	local base=$((20000 + (RANDOM % 49) * 400 + (RANDOM % 4) * 100))
	echo "$base" >"$INTEG_DIR/next_port"
	echo "$((base + 400))" >"$INTEG_DIR/end_port"
	SINK_PORT=$(integ_port) || integ_missing "no free port"
	if [ $# -gt 0 ]; then
		INTEG_CERT_NAMES=("$@")
	fi
	CERTS=$INTEG_DIR/certs
	CA=$CERTS/ca.pem
	if [ ! -x "$MKCERTS" ] && [ ! -f "$MKCERTS" ]; then
		integ_missing "bench/mkcerts.sh"
	elif ! sh "$MKCERTS" "$CERTS" "${INTEG_CERT_NAMES[@]}" >"$INTEG_DIR/mkcerts.log" 2>&1 ||
		[ ! -s "$CA" ] || [ ! -s "$CERTS/server.pem" ]; then
		integ_missing "certificates (bench/mkcerts.sh failed: $(tail -n 3 "$INTEG_DIR/mkcerts.log" | tr '\n' ' '))"
	fi
	return 0
}

# integ_missing TEXT: record a missing prerequisite (every later run_case fails).
integ_missing() {
	[ "$INTEG_LIST" = 1 ] && return 0
	INTEG_MISSING="${INTEG_MISSING:+$INTEG_MISSING; }$1"
	echo "# missing: $1" >&2
}

# integ_require PROGRAM...: PROGRAM is mxsend, mxsink (build/) or any command.
integ_require() {
	local p
	for p in "$@"; do
		case $p in
		mxsend) [ -x "$MXSEND" ] || integ_missing "$MXSEND (not built)" ;;
		mxsink) [ -x "$MXSINK" ] || integ_missing "$MXSINK (not built)" ;;
		*) command -v "$p" >/dev/null 2>&1 || integ_missing "command $p" ;;
		esac
	done
}

# Ports handed out are reserved machine-wide until the run exits: test
# scripts run side by side (blocks overlap) and a port is not always bound
# while it is ours (a metrics port before mxsend starts, a Redis stopped on
# purpose while mxsend reconnects to it: t_redis_down). Without the
# reservation another run could take such a port, and its mxsend or its
# redis-cli would then work on this run's Redis (same key names).
# INTEG_PORTS_DIR/PORT is a directory (mkdir is atomic) holding "owner", the
# pid of the script that reserved it; one whose owner is gone is taken over.
INTEG_PORTS_DIR=${INTEG_PORTS_DIR:-/tmp/mxsend-integ-ports}

# port_reserve PORT: reserve PORT for this run; 1 if another live run holds it.
port_reserve() {
	local d=$INTEG_PORTS_DIR/$1 owner
	mkdir -p "$INTEG_PORTS_DIR" 2>/dev/null
	if ! mkdir "$d" 2>/dev/null; then
		owner=$(cat "$d/owner" 2>/dev/null)
		# a live owner: taken; no owner: being reserved right now (or its
		# run died in between: taken over once a minute old)
		if [ -n "$owner" ]; then
			! kill -0 "$owner" 2>/dev/null || return 1
		else
			[ -n "$(find "$d" -maxdepth 0 -mmin +1 2>/dev/null)" ] || return 1
		fi
		# the owner is gone: take it over (of racing runs, one wins the
		# rename, then one the mkdir)
		mv -T "$d" "$d.gone.$$" 2>/dev/null || return 1
		rm -rf "$d.gone.$$"
		mkdir "$d" 2>/dev/null || return 1
	fi
	echo "$$" >"$d/owner"
	echo "$1" >>"$INTEG_DIR/ports"
}

# integ_port: print the next free TCP/UDP port of the run's block (not bound,
# not reserved by another run), reserved for this run until it exits.
integ_port() {
	local p end busy
	p=$(<"$INTEG_DIR/next_port")
	end=$(<"$INTEG_DIR/end_port")
	busy=$(ss -Htuan 2>/dev/null | awk '{ n = split($5, a, ":"); print a[n] }')
	while [ "$p" -lt "$end" ]; do
		if ! grep -qx "$p" <<<"$busy" && port_reserve "$p"; then
			echo "$((p + 1))" >"$INTEG_DIR/next_port"
			echo "$p"
			return 0
		fi
		p=$((p + 1))
	done
	echo "integ_port: no free port left in the block" >&2
	return 1
}

# integ_spawn NAME LOGFILE COMMAND [ARG...]
# Start COMMAND in the background (stdin /dev/null, stdout+stderr to LOGFILE)
# and register it for clean-up under NAME. Sets SPAWN_PID.
integ_spawn() {
	local name=$1 log=$2
	shift 2
	"$@" </dev/null >"$log" 2>&1 &
	SPAWN_PID=$!
	disown "$SPAWN_PID" # no "Killed" job reports; clean-up goes by the registry
	echo "$SPAWN_PID $name" >>"$INTEG_DIR/procs"
}

# proc_pid NAME: print the pid of the live process registered as NAME.
proc_pid() {
	local pid
	pid=$(awk -v n="$1" '$2 == n { p = $1 } $2 == "-" && $1 == p { p = "" } END { print p }' \
		"$INTEG_DIR/procs")
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# stop_proc NAME [SIGNAL]: send SIGNAL (default TERM) to NAME and wait (at
# most 3 s, then SIGKILL) until it is gone. SIGNAL KILL simulates a crash.
stop_proc() {
	local name=$1 sig=${2:-TERM} pid i
	pid=$(proc_pid "$name") || return 0
	kill "-$sig" "$pid" 2>/dev/null
	for ((i = 0; i < 30; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	echo "$pid -" >>"$INTEG_DIR/procs" # tombstone: already stopped
}

# integ_cleanup: the EXIT trap. Stops every registered process (SIGTERM, then
# SIGKILL after 3 s), then removes the work directory unless KEEP=1.
integ_cleanup() {
	local rc=$? pids pid i alive
	trap - EXIT
	[ -n "$INTEG_DIR" ] && [ -d "$INTEG_DIR" ] || exit "$rc"
	# background cases first (their processes are registered too)
	for pid in $(jobs -p); do kill -TERM "$pid" 2>/dev/null; done
	pids=$(awk '$2 == "-" { dead[$1] = 1; next } { p[NR] = $1 }
		END { for (i in p) if (!(p[i] in dead)) print p[i] }' "$INTEG_DIR/procs")
	for pid in $pids; do kill -TERM "$pid" 2>/dev/null; done
	for ((i = 0; i < 30; i++)); do
		alive=""
		for pid in $pids; do
			kill -0 "$pid" 2>/dev/null && alive="$alive $pid"
		done
		pids=$alive
		[ -z "$pids" ] && break
		sleep 0.1
	done
	for pid in $pids; do
		echo "# cleanup: pid $pid ignored SIGTERM for 3 s, SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null
	done
	wait 2>/dev/null
	# release our port reservations (only those still ours)
	local port
	while read -r port; do
		[ "$(cat "$INTEG_PORTS_DIR/$port/owner" 2>/dev/null)" = "$$" ] &&
			rm -f "$INTEG_PORTS_DIR/$port/owner" && rmdir "$INTEG_PORTS_DIR/$port" 2>/dev/null
	done < <(cat "$INTEG_DIR/ports" 2>/dev/null)
	if [ "${KEEP:-0}" = 1 ]; then
		echo "# KEEP=1: work directory kept: $INTEG_DIR" >&2
	else
		rm -rf "$INTEG_DIR"
	fi
	exit "$rc"
}

# ---------------------------------------------------------------------------
# DNS: unbound

# start_unbound [-a ADDR] [-n NAME] SPEC...
# Runs unbound on ADDR (default 127.0.2.53) at a private port; sets DNS_ADDR,
# DNS_PORT and DNS=ADDR:PORT (the value for --dns / "dns ="). Each SPEC is a
# readable file or literal text; both hold lines of:
#   ok.test. 60 IN MX 10 mx1.test.     a resource record (absolute names; TTL, class optional)
#   servfail NAME                      names at and under NAME answer SERVFAIL (< 1 s)
#   drop NAME                          queries at and under NAME get no answer (client times out)
#   refuse NAME                        ... answer REFUSED
#   server-option: value               passed into unbound's server: clause as is
#   ; or # comments, blank lines
# Built in: "test." is a static zone (unknown names under test. are NXDOMAIN),
# "servfail.test." answers SERVFAIL, "drop.test." never answers, and the root
# is static too, so nothing ever leaves the machine.
# SERVFAIL works with a stub zone whose only server is 127.0.2.1 port 1, where
# nothing listens: the ICMP port-unreachable makes unbound give up at once
# (unknown-server-time-limit 50 ms, infra-host-ttl 1 s keep it from backing off).
# Waits (at most 5 s) until unbound answers. Returns 1 (log on stderr) on failure.
start_unbound() {
	[ "$INTEG_LIST" = 1 ] && return 0 # --list: nothing starts
	local addr=127.0.2.53 name=dns OPTIND opt
	while getopts a:n: opt; do
		case $opt in
		a) addr=$OPTARG ;;
		n) name=$OPTARG ;;
		*) return 2 ;;
		esac
	done
	shift $((OPTIND - 1))
	local dir=$INTEG_DIR/unbound.$name port spec line conf z zones="" data="" opts="" stubs=""
	mkdir -p "$dir"
	port=$(integ_port) || return 1
	zones+=$'\tlocal-zone: "." static\n\tlocal-zone: "test." static\n'
	for spec in $'servfail servfail.test.\ndrop drop.test.' "$@"; do
		[ -r "$spec" ] && [ -f "$spec" ] && spec=$(<"$spec")
		while IFS= read -r line; do
			line=${line%$'\r'}
			line=${line#"${line%%[![:space:]]*}"}
			if [[ -z $line || $line == ';'* || $line == '#'* ]]; then
				continue
			elif [[ $line =~ ^(servfail|drop|refuse)[[:space:]]+([^[:space:]]+)$ ]]; then
				z=${BASH_REMATCH[2]%.}.
				case ${BASH_REMATCH[1]} in
				servfail)
					zones+=$'\tlocal-zone: "'"$z"$'" transparent\n'
					stubs+=$'stub-zone:\n\tname: "'"$z"$'"\n\tstub-addr: 127.0.2.1@1\n'
					;;
				drop) zones+=$'\tlocal-zone: "'"$z"$'" deny\n' ;;
				refuse) zones+=$'\tlocal-zone: "'"$z"$'" refuse\n' ;;
				esac
			elif [[ $line =~ ^[a-z-]+:[[:space:]] ]]; then
				opts+=$'\t'"$line"$'\n'
			elif [[ $line == *'"'* ]]; then
				data+=$'\tlocal-data: \''"$line"$'\'\n'
			else
				data+=$'\tlocal-data: "'"$line"$'"\n'
			fi
		done <<<"$spec"
	done
	conf=$dir/unbound.conf
	cat >"$conf" <<EOF
server:
	interface: $addr@$port
	port: $port
	do-ip4: yes
	do-ip6: no
	do-udp: yes
	do-tcp: yes
	num-threads: 1
	do-daemonize: no
	username: ""
	chroot: ""
	directory: "$dir"
	pidfile: "$dir/unbound.pid"
	logfile: "$dir/unbound.log"
	use-syslog: no
	log-time-ascii: yes
	verbosity: 1
	access-control: 127.0.0.0/8 allow
	do-not-query-localhost: no
	module-config: "iterator"
	auto-trust-anchor-file: ""
	unknown-server-time-limit: 50
	infra-host-ttl: 1
	outbound-msg-retry: 1
$opts$zones$data
$stubs
EOF
	if ! unbound-checkconf "$conf" >"$dir/checkconf.log" 2>&1; then
		echo "start_unbound: bad config:" >&2
		cat "$dir/checkconf.log" >&2
		return 1
	fi
	integ_spawn "unbound.$name" "$dir/stderr.log" unbound -d -c "$conf"
	local pid=$SPAWN_PID i
	for ((i = 0; i < 25; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "start_unbound: unbound exited:" >&2
			tail -n 20 "$dir/stderr.log" "$dir/unbound.log" >&2 2>/dev/null
			return 1
		fi
		if perl "$DNSQ" "$addr" "$port" ready.test A 0.2 >/dev/null 2>&1; then
			DNS_ADDR=$addr
			DNS_PORT=$port
			DNS=$addr:$port
			return 0
		fi
	done
	echo "start_unbound: no answer from $addr:$port within 5 s" >&2
	tail -n 20 "$dir/stderr.log" "$dir/unbound.log" >&2 2>/dev/null
	return 1
}

# dns_query NAME [TYPE]: ask the last unbound started; prints dnsq.pl's line
# ("rcode=NOERROR ancount=1 MX:10:mx1.test.").
dns_query() {
	perl "$DNSQ" "$DNS_ADDR" "$DNS_PORT" "$1" "${2:-A}" 3
}

# ---------------------------------------------------------------------------
# SMTP sink: build/mxsink

# start_sink NAME ARG...
# Starts build/mxsink with ARG... plus, unless ARG... already has them:
#   --cert/--key (the run's server.pem), --threads 1, --maildir (sink_maildir NAME);
# always --pidfile and --stats 127.0.0.1:<fresh port>. The caller gives --listen
# (e.g. --listen "127.0.3.1:$SINK_PORT"). Waits (at most 5 s) for the pidfile
# and the stats port. Returns 1 (log on stderr) on failure.
start_sink() {
	[ "$INTEG_LIST" = 1 ] && return 0 # --list: nothing starts
	local name=$1
	shift
	local dir=$INTEG_DIR/sink.$name sport a extra=()
	mkdir -p "$dir"
	sport=$(integ_port) || return 1
	local has_cert=0 has_threads=0 has_maildir=0
	for a in "$@"; do
		case $a in
		--cert) has_cert=1 ;;
		--threads) has_threads=1 ;;
		--maildir) has_maildir=1 ;;
		esac
	done
	[ "$has_cert" = 1 ] || extra+=(--cert "$CERTS/server.pem" --key "$CERTS/server.key")
	[ "$has_threads" = 1 ] || extra+=(--threads 1)
	[ "$has_maildir" = 1 ] || {
		mkdir -p "$dir/maildir"
		extra+=(--maildir "$dir/maildir")
	}
	echo "$sport" >"$dir/stats_port"
	integ_spawn "sink.$name" "$dir/log" "$MXSINK" "$@" "${extra[@]}" \
		--pidfile "$dir/pid" --stats "127.0.0.1:$sport"
	local pid=$SPAWN_PID i fd
	for ((i = 0; i < 50; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "start_sink $name: mxsink exited:" >&2
			tail -n 20 "$dir/log" >&2
			return 1
		fi
		if [ -s "$dir/pid" ] && { exec {fd}<>"/dev/tcp/127.0.0.1/$sport"; } 2>/dev/null; then
			exec {fd}<&-
			return 0
		fi
		sleep 0.1
	done
	echo "start_sink $name: not ready within 5 s:" >&2
	tail -n 20 "$dir/log" >&2
	return 1
}

# stop_sink NAME: SIGTERM (the sink prints its stats into its log), wait.
stop_sink() {
	stop_proc "sink.$1" TERM
}

# sink_maildir NAME: print the sink's maildir (<n>.eml + <n>.env per message).
sink_maildir() {
	echo "$INTEG_DIR/sink.$1/maildir"
}

# sink_log NAME: print the path of the sink's stdout/stderr log.
sink_log() {
	echo "$INTEG_DIR/sink.$1/log"
}

# sink_stat NAME [KEY]: print counter KEY (connections handshakes resumed
# messages recipients bytes active rejected) of sink NAME, or the whole stats
# line without KEY. Returns 1 if the stats port does not answer (2 s).
sink_stat() {
	local port fd line kv
	[ -r "$INTEG_DIR/sink.$1/stats_port" ] || return 1
	port=$(<"$INTEG_DIR/sink.$1/stats_port") || return 1
	{ exec {fd}<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
	IFS= read -r -t 2 line <&"$fd"
	exec {fd}<&-
	line=${line%$'\r'}
	[ -n "$line" ] || return 1
	if [ $# -lt 2 ]; then
		echo "$line"
		return 0
	fi
	for kv in $line; do
		if [ "${kv%%=*}" = "$2" ]; then
			echo "${kv#*=}"
			return 0
		fi
	done
	return 1
}

# sink_find_msg NAME RCPT [TIMEOUT_S]: print the .eml path of the message
# sink NAME received for RCPT (an "rcpt=" line of its .env, with or without
# <>); waits up to TIMEOUT_S (default 3) for the .env (written last).
sink_find_msg() {
	local md i f
	md=$(sink_maildir "$1")
	for ((i = 0; i < ${3:-3} * 10; i++)); do
		for f in "$md"/*.env; do
			[ -f "$f" ] || continue
			if awk -v r="$2" 'sub(/^rcpt=/, "") { gsub(/^<|>$/, ""); if ($0 == r) f = 1 }
				END { exit !f }' "$f"; then
				echo "${f%.env}.eml"
				return 0
			fi
		done
		sleep 0.1
	done
	return 1
}

# sink_count NAME: number of complete messages (.env files) in the maildir.
sink_count() {
	local md n=0 f
	md=$(sink_maildir "$1")
	for f in "$md"/*.env; do
		[ -f "$f" ] && n=$((n + 1))
	done
	echo "$n"
}

# expect_no_mail SINK: the sink stored nothing and counted no message.
expect_no_mail() {
	expect_sink "$1" messages 0
	assert_eq "messages in sink $1's maildir" 0 "$(sink_count "$1")"
}

# expect_mail SINK RCPT [ERE]: the sink stored a message for RCPT; its .env
# (tls=, sni=, ...) has a line matching ERE.
expect_mail() {
	local got
	got=$(sink_find_msg "$1" "$2") || {
		fail "sink $1 has no message for $2"
		return 1
	}
	[ -z "${3:-}" ] || assert_match "sink $1's envelope for $2" "$3" "$(cat "${got%.eml}.env")"
}

# ---------------------------------------------------------------------------
# Redis

# start_redis [-n NAME] [--aof] [-- ARG...]
# redis-server on 127.0.0.1 at a private port, no RDB snapshots, AOF off (or
# on, fsync always, with --aof), dir in the work directory, in the foreground
# of a background job; ARG... after "--" are more redis-server options (e.g.
# --replicaof 127.0.0.1 PORT). Sets REDIS_PORT and REDIS_URL. Starting a NAME again
# after stop_proc redis.NAME reuses its port and directory (so an AOF run
# reloads its data: a crash-restart test). Waits (at most 5 s) for PING.
start_redis() {
	[ "$INTEG_LIST" = 1 ] && return 0 # --list: nothing starts
	local name=redis aof=no more=()
	while [ $# -gt 0 ]; do
		case $1 in
		-n) name=$2; shift ;;
		--aof) aof=yes ;;
		--) shift; more=("$@"); break ;;
		*) echo "start_redis: unknown argument $1" >&2; return 2 ;;
		esac
		shift
	done
	local dir=$INTEG_DIR/redis.$name port
	mkdir -p "$dir"
	if [ -s "$dir/port" ]; then
		port=$(<"$dir/port")
	else
		port=$(integ_port) || return 1
		echo "$port" >"$dir/port"
	fi
	integ_spawn "redis.$name" "$dir/stderr.log" redis-server \
		--bind 127.0.0.1 --port "$port" --daemonize no --save "" \
		--appendonly "$aof" --appendfsync always --dir "$dir" \
		--pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "${more[@]}"
	local pid=$SPAWN_PID i
	for ((i = 0; i < 50; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "start_redis: redis-server exited:" >&2
			tail -n 20 "$dir/stderr.log" "$dir/redis.log" >&2 2>/dev/null
			return 1
		fi
		if [ "$(redis_ping "$port")" = PONG ]; then
			# the PONG must be our server's: one that could not bind
			# (another server holds the port) answers nothing, and the
			# case would silently share that other server's queue
			local who=$pid
			command -v redis-cli >/dev/null 2>&1 &&
				who=$(timeout 2 redis-cli -h 127.0.0.1 -p "$port" INFO server 2>/dev/null |
					tr -d '\r' | sed -n 's/^process_id://p')
			if [ "$who" != "$pid" ]; then
				echo "start_redis: 127.0.0.1:$port is answered by another redis-server (pid ${who:-?}), not ours (pid $pid)" >&2
				kill -TERM "$pid" 2>/dev/null
				return 1
			fi
			REDIS_PORT=$port
			REDIS_URL=redis://127.0.0.1:$port/0
			return 0
		fi
		sleep 0.1
	done
	echo "start_redis: no PONG from 127.0.0.1:$port within 5 s" >&2
	tail -n 20 "$dir/redis.log" >&2 2>/dev/null
	return 1
}

# start_sentinel NAME MASTER MASTER_PORT [QUORUM]: redis-sentinel on
# 127.0.0.1 at a private port, watching master MASTER (a name) at
# 127.0.0.1:MASTER_PORT with QUORUM (default 2): down after 1 s, failover
# timeout 3 s. Its config file (Sentinel rewrites it) and log in the work
# directory. Sets SENTINEL_PORT. Waits (at most 5 s) for PING.
start_sentinel() {
	[ "$INTEG_LIST" = 1 ] && return 0 # --list: nothing starts
	local name=$1 master=$2 mport=$3 quorum=${4:-2} dir=$INTEG_DIR/sentinel.$1 port
	mkdir -p "$dir"
	port=$(integ_port) || return 1
	cat >"$dir/sentinel.conf" <<EOC
port $port
bind 127.0.0.1
daemonize no
dir $dir
logfile $dir/sentinel.log
pidfile $dir/sentinel.pid
sentinel monitor $master 127.0.0.1 $mport $quorum
sentinel down-after-milliseconds $master 1000
sentinel failover-timeout $master 3000
sentinel parallel-syncs $master 1
EOC
	integ_spawn "sentinel.$name" "$dir/stderr.log" redis-sentinel "$dir/sentinel.conf"
	local pid=$SPAWN_PID
	# ours answers (the port is reserved for this run), or it exited
	wait_until 5 sh -c "! kill -0 $pid 2>/dev/null || [ \"\$(timeout 2 redis-cli -p $port ping 2>/dev/null)\" = PONG ]"
	if kill -0 "$pid" 2>/dev/null && [ "$(redis_ping "$port")" = PONG ]; then
		SENTINEL_PORT=$port
		return 0
	fi
	echo "start_sentinel: redis-sentinel exited, or no PONG from 127.0.0.1:$port within 5 s:" >&2
	tail -n 20 "$dir/stderr.log" "$dir/sentinel.log" >&2 2>/dev/null
	return 1
}

# redis_results PORT: one line per entry of mxsend:results, " field=value" pairs.
redis_results() {
	timeout 10 redis-cli -p "$1" --raw XRANGE mxsend:results - + | awk '
		k == "" && /^[0-9]+-[0-9]+$/ { if (l != "") print l; l = ""; next }
		k == "" { k = $0; next }
		{ l = l " " k "=" $0; k = "" }
		END { if (l != "") print l }'
}

# rcli PORT ARG...: redis-cli on 127.0.0.1:PORT (10 s bound), raw replies.
rcli() {
	local p=$1
	shift
	timeout 10 redis-cli -h 127.0.0.1 -p "$p" --raw "$@"
}

# results PORT [FIELDS [ID]]: one line per entry of mxsend:results (only job
# ID's, by its `id` field, when ID is given), the values of FIELDS (names,
# comma-separated; default id,job,rcpt,status,code,attempt,reply) joined by
# '|', a field the entry lacks as empty. One EVAL (stay well under Redis's 5 s
# busy-script limit: a few tens of thousands of entries).
RESULTS_LUA="local want, o = {}, {} for w in string.gmatch(ARGV[1], '[^,]+') do want[#want + 1] = w end
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
local f, m = e[2], {} for i = 1, #f, 2 do m[f[i]] = f[i + 1] end
if ARGV[2] == nil or m.id == ARGV[2] then local l = {} for i, w in ipairs(want) do l[i] = m[w] or '' end
o[#o + 1] = table.concat(l, '|') end end return o"
results() {
	rcli "$1" EVAL "$RESULTS_LUA" 1 mxsend:results "${2:-id,job,rcpt,status,code,attempt,reply}" \
		${3+"$3"}
}

# mx_start NAME CONF [ARG...]: `mxsend run` in the background (log, pid and
# exit status in $CASE_DIR/NAME/), registered for clean-up. Sets MX_PID.
mx_start() {
	local name=$1 conf=$2 dir=$CASE_DIR/$1
	shift 2
	mkdir -p "$dir"
	rm -f "$dir/rc" "$dir/pid"
	(
		"$MXSEND" run -c "$conf" "$@" </dev/null >>"$dir/log" 2>&1 &
		echo $! >"$dir/pid"
		wait $!
		echo $? >"$dir/rc"
	) &
	wait_until 5 test -s "$dir/pid" || return 1
	MX_PID=$(<"$dir/pid")
	echo "$MX_PID mx.$name" >>"$INTEG_DIR/procs"
}

# mx_stop NAME [SIGNAL] [LIMIT_S]: signal it and wait (LIMIT_S, default 20)
# for it to exit; prints its exit status (or "timeout").
mx_stop() {
	local dir=$CASE_DIR/$1 sig=${2:-TERM} limit=${3:-20}
	kill "-$sig" "$(<"$dir/pid")" 2>/dev/null
	if wait_until "$limit" test -s "$dir/rc"; then
		cat "$dir/rc"
	else
		kill -KILL "$(<"$dir/pid")" 2>/dev/null
		echo timeout
	fi
}

# pipe_jobs PORT N DOMAINS PREFIX [PAD [RCPTS [HEADERS]]]: XADD N jobs through
# redis-cli --pipe, job i to u<i>@<domain i % DOMAINS>, with a unique "X-Job:
# PREFIX-i" header (and PAD more bytes of body). DOMAINS is a space-separated
# list. RCPTS > 1: job i goes to u<i>.<k>@<domain (i + k) % DOMAINS>, k < RCPTS.
# HEADERS: more header lines first (CRLF-terminated, e.g. a From: field).
# PIPE_STREAM (variable): the stream (a lane's, README "Lanes"), default mxsend:jobs.
pipe_jobs() {
	awk -v n="$2" -v doms="$3" -v pre="$4" -v pad="${5:-0}" -v nr="${6:-1}" -v hdr="${7:-}" \
		-v st="${PIPE_STREAM:-mxsend:jobs}" 'BEGIN {
		nd = split(doms, d, " ")
		fill = ""
		while (length(fill) < pad)
			fill = fill "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxy\r\n"
		for (i = 1; i <= n; i++) {
			to = "u" i "@" d[(i % nd) + 1]
			if (nr > 1)
				for (k = 0; k < nr; k++)
					to = (k ? to "," : "") "u" i "." k "@" d[((i + k) % nd) + 1]
			data = hdr "X-Job: " pre "-" i "\r\nSubject: test " i "\r\n\r\nbody " i "\r\n" fill
			id = pre "-" i
			printf "*11\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n", length(st), st
			printf "$4\r\nfrom\r\n$15\r\nsender@src.test\r\n"
			printf "$2\r\nto\r\n$%d\r\n%s\r\n", length(to), to
			printf "$4\r\ndata\r\n$%d\r\n%s\r\n", length(data), data
			printf "$2\r\nid\r\n$%d\r\n%s\r\n", length(id), id
		}
	}' | timeout 60 redis-cli -p "$1" --pipe >/dev/null
}

# redis_ping PORT: print the reply to PING (PONG when up).
redis_ping() {
	if command -v redis-cli >/dev/null 2>&1; then
		timeout 2 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null
	else
		local fd line
		{ exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
		printf 'PING\r\n' >&"$fd"
		IFS= read -r -t 2 line <&"$fd"
		exec {fd}<&-
		line=${line%$'\r'}
		echo "${line#+}"
	fi
}

# start_redis_tls [-n NAME] [--auth-clients no|yes] [--port PORT]: like
# start_redis, with a TLS port only (--port 0): the run's server certificate
# ($CERTS/server.pem; integ_setup's names, e.g. 127.0.0.1), clients verified
# against $CA when --auth-clients yes (default no). PORT: the same port again
# (a restart). Sets REDIS_PORT and REDIS_URL (rediss://127.0.0.1:PORT/0).
# Waits (at most 5 s) for PING over TLS (tcli). Makes the client certificate
# tcli uses ($CERTS/client.pem, .key: clientAuth, from the run's CA) once.
start_redis_tls() {
	[ "$INTEG_LIST" = 1 ] && return 0 # --list: nothing starts
	local name=redis-tls auth=no port="" i
	while [ $# -gt 0 ]; do
		case $1 in
		-n) name=$2; shift ;;
		--auth-clients) auth=$2; shift ;;
		--port) port=$2; shift ;;
		*) echo "start_redis_tls: unknown argument $1" >&2; return 2 ;;
		esac
		shift
	done
	integ_client_cert || return 1
	local dir=$INTEG_DIR/redis.$name
	mkdir -p "$dir"
	[ -n "$port" ] || port=$(integ_port) || return 1
	integ_spawn "redis.$name" "$dir/stderr.log" redis-server \
		--bind 127.0.0.1 --port 0 --tls-port "$port" --daemonize no --save "" --appendonly no \
		--tls-cert-file "$CERTS/server.pem" --tls-key-file "$CERTS/server.key" \
		--tls-ca-cert-file "$CA" --tls-auth-clients "$auth" \
		--dir "$dir" --logfile "$dir/redis.log"
	for ((i = 0; i < 50; i++)); do
		if [ "$(REDISCLI_AUTH="" tcli "$port" PING 2>/dev/null)" = PONG ]; then
			REDIS_PORT=$port
			REDIS_URL=rediss://127.0.0.1:$port/0
			return 0
		fi
		sleep 0.1
	done
	echo "start_redis_tls: no PONG from 127.0.0.1:$port (TLS) within 5 s" >&2
	tail -n 20 "$dir/stderr.log" "$dir/redis.log" >&2 2>/dev/null
	return 1
}

# integ_client_cert: $CERTS/client.pem and client.key, a client certificate
# (extendedKeyUsage clientAuth; mkcerts' leaves are serverAuth only) from the
# run's CA, made once.
integ_client_cert() {
	[ -s "$CERTS/client.pem" ] && return 0
	local c=$CERTS/client
	{
		openssl ecparam -name prime256v1 -genkey -noout -out "$c.key" &&
			openssl req -new -key "$c.key" -subj /CN=mxsend-client -out "$c.csr" &&
			printf 'basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = clientAuth\n' >"$c.ext" &&
			openssl x509 -req -in "$c.csr" -CA "$CA" -CAkey "$CERTS/ca.key" -CAcreateserial \
				-days 2 -extfile "$c.ext" -out "$c.pem.tmp" && mv "$c.pem.tmp" "$c.pem"
	} >"$INTEG_DIR/client-cert.log" 2>&1 || {
		echo "integ_client_cert: openssl failed:" >&2
		cat "$INTEG_DIR/client-cert.log" >&2
		return 1
	}
}

# tcli PORT ARG...: redis-cli over TLS to 127.0.0.1:PORT (the run's CA, the
# client certificate of integ_client_cert), 10 s bound, raw replies.
tcli() {
	local p=$1
	shift
	timeout 10 redis-cli --tls --cacert "$CA" --cert "$CERTS/client.pem" --key "$CERTS/client.key" \
		-h 127.0.0.1 -p "$p" --raw "$@"
}

# ---------------------------------------------------------------------------
# mxsend helpers

# send ARG...: `mxsend send SEND_ARGS... ARG...` under SEND_LIMIT seconds
# (default 10: a normal case takes well under a second); stdout in
# $CASE_DIR/out, stderr in $CASE_DIR/err (show_run, expect_rc, expect_line
# read them); sets RUN_RC and RUN_MS. A script sets SEND_ARGS (an array) to
# what every call shares, e.g. (-c "$CONF") or (--dns "$DNS" --ca "$CA").
SEND_LIMIT=10
SEND_ARGS=()
send() {
	timed_run "$SEND_LIMIT" "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" send "${SEND_ARGS[@]}" "$@"
}

# msg FILE [SUBJECT [BODY]]: a small LF message from $FROM (default
# sender@client.test) with a fresh Message-ID; SUBJECT default "test", BODY
# default "Hello.".
msg() {
	printf 'From: %s\nTo: someone@example.test\nSubject: %s\nMessage-ID: <%s@client.test>\n\n%s\n' \
		"${FROM:-sender@client.test}" "${2:-test}" "$RANDOM$RANDOM" "${3:-Hello.}" >"$1"
}

# mx HOST IP: the ERE for a result line's "mx=HOST[IP]:PORT" (PORT: $P, else
# SINK_PORT).
mx() {
	printf 'mx=%s\\[%s\\]:%s' "$(re_escape "$1")" "$(re_escape "$2")" "${P:-$SINK_PORT}"
}

# start_nginx [MAIN] <SERVERS: nginx (nginx_start) on HTTPS_ADDR:NGINX_PORT,
# both set by the script, in $INTEG_DIR/nginx; the policy server of the MTA-STS
# tests and the https: rua of the TLSRPT ones. Its http { } holds what they
# share, then the script's server blocks read from stdin:
#   access log $INTEG_DIR/nginx/access.log, format NGINX_LOG_FORMAT (default
#   '$host "$request" $status'); .txt served as text/plain, the rest as
#   application/octet-stream; unless NGINX_DEFAULT=no, a default server that
#   answers 421 to names no block serves.
# MAIN goes at nginx.conf's top level (e.g. "load_module ...;").
# shellcheck disable=SC2016 # nginx's variables, not the shell's
NGINX_LOG_FORMAT='$host "$request" $status'
NGINX_DEFAULT=yes
start_nginx() {
	[ "$INTEG_LIST" = 1 ] && return 0 # --list: nothing starts
	local dir=$INTEG_DIR/nginx
	mkdir -p "$dir"
	{
		printf "\tlog_format integ '%s';\n\taccess_log %s/access.log integ;\n" "$NGINX_LOG_FORMAT" "$dir"
		printf '\ttypes { text/plain txt; }\n\tdefault_type application/octet-stream;\n'
		[ "$NGINX_DEFAULT" = no ] ||
			printf '\tserver {\n\t\tlisten %s:%s ssl default_server;\n\t\tserver_name _;\n\t\treturn 421;\n\t}\n' \
				"$HTTPS_ADDR" "$NGINX_PORT"
		cat
	} >"$dir/http.conf"
	nginx_start "$dir" "$HTTPS_ADDR" "$NGINX_PORT" "${1:-}"
}

# nginx_start DIR ADDR PORT [MAIN]: a real nginx (Debian) in the foreground on a
# throwaway config in DIR. The caller first writes the inside of `http { }`
# (server blocks, log formats, access_log) to DIR/http.conf; MAIN goes at the
# top level (e.g. "load_module ...;"). The run's server certificate is the
# default. Returns once ADDR:PORT accepts connections (5 s at most).
nginx_start() {
	[ "$INTEG_LIST" = 1 ] && return 0 # --list: nothing starts
	local dir=$1 addr=$2 port=$3 main=${4:-} conf=$1/nginx.conf
	mkdir -p "$dir/tmp"
	cat >"$conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log info;
$main
events { worker_connections 256; }
http {
	client_body_temp_path $dir/tmp/body;
	proxy_temp_path $dir/tmp/proxy;
	fastcgi_temp_path $dir/tmp/fastcgi;
	uwsgi_temp_path $dir/tmp/uwsgi;
	scgi_temp_path $dir/tmp/scgi;
	ssl_certificate $CERTS/server.pem;
	ssl_certificate_key $CERTS/server.key;
	include $dir/http.conf;
}
EOF
	if ! nginx -t -c "$conf" -p "$dir" >"$dir/check.log" 2>&1; then
		echo "nginx_start: bad config:" >&2
		cat "$dir/check.log" >&2
		return 1
	fi
	integ_spawn nginx "$dir/stderr.log" nginx -c "$conf" -p "$dir"
	if ! wait_listen "$SPAWN_PID" "$addr:$port"; then
		echo "nginx_start: nginx is not listening on $addr:$port:" >&2
		tail -n 20 "$dir/stderr.log" "$dir/error.log" >&2 2>/dev/null
		return 1
	fi
}

# wait_listen PID ADDR:PORT...: wait until every ADDR:PORT accepts a TCP
# connection (5 s in all); returns 1 at once if process PID exits first.
wait_listen() {
	local pid=$1 l fd n=0
	shift
	for l in "$@"; do
		until { exec {fd}<>"/dev/tcp/${l%:*}/${l##*:}"; } 2>/dev/null; do
			n=$((n + 1))
			[ "$n" -le 50 ] && kill -0 "$pid" 2>/dev/null || return 1
			sleep 0.1
		done
		exec {fd}<&-
	done
}

# integ_timeouts [QUIT]: a [timeouts] section for configs whose servers stall
# or misbehave on purpose: connect 2 s, every stage 5 s, QUIT as given (2s).
integ_timeouts() {
	local k
	printf '[timeouts]\nconnect = 2s\n'
	for k in banner helo starttls mail rcpt data block dot rset; do
		printf '%s = 5s\n' "$k"
	done
	printf 'quit = %s\n' "${1:-2s}"
}

# integ_config FILE [EXTRA]: write an mxsend config pointing at the last
# unbound (dns), the run's CA (ca_file) and the sinks' port ([domain *] port),
# with helo client.test, then EXTRA (more INI text, e.g. a [timeouts] section;
# do not repeat [mxsend] or [domain *] there).
integ_config() {
	{
		printf '[mxsend]\ndns = %s\nca_file = %s\nhelo = client.test\n\n' "$DNS" "$CA"
		printf '[domain *]\nport = %s\n\n' "$SINK_PORT"
		[ $# -ge 2 ] && printf '%s\n' "$2"
	} >"$1"
}

# timed_run LIMIT_S OUT ERR COMMAND [ARG...]: run COMMAND under timeout
# (SIGTERM at LIMIT_S, SIGKILL 2 s later), stdout to OUT, stderr to ERR.
# Sets RUN_RC (124/137: timed out) and RUN_MS (wall time, milliseconds).
timed_run() {
	local limit=$1 out=$2 err=$3 t0 t1
	shift 3
	t0=$(date +%s%N)
	timeout -k 2 "$limit" "$@" >"$out" 2>"$err"
	RUN_RC=$?
	t1=$(date +%s%N)
	RUN_MS=$(((t1 - t0) / 1000000))
}

# wire_expect IN OUT: what an SMTP server must receive for message file IN:
# every bare CR and every bare LF becomes CRLF, and a final CRLF is added when
# missing.
wire_expect() {
	perl -0777 -pe 's/\r(?!\n)/\r\n/g; s/(?<!\r)\n/\r\n/g; $_ .= "\r\n" unless /\r\n\z/' <"$1" >"$2"
}

# log_mark [FILE]: the case's part of log FILE (default $CASE_LOG) starts here.
# case_log [FILE]: FILE's lines written since the case's log_mark of it.
CASE_LOG=""
log_mark() {
	local f=${1:-$CASE_LOG}
	stat -c %s "$f" >"$CASE_DIR/mark.${f##*/}" 2>/dev/null || echo 0 >"$CASE_DIR/mark.${f##*/}"
}
case_log() {
	local f=${1:-$CASE_LOG}
	tail -c "+$(($(<"$CASE_DIR/mark.${f##*/}") + 1))" "$f" 2>/dev/null
}

# run_body_cases TITLE FUNC [ARG...]: one run_case per awkward message of
# body_gen, named "TITLE: what it is", each running FUNC ARG... KIND (and 1 for
# big: a 1 MB message).
run_body_cases() {
	local title=$1 k w
	shift
	for k in dots lf mixed-eol nofinal nofinal-dot longline 8bit smuggle big; do
		case $k in
		dots) w="dot lines" ;;
		lf) w="bare LF line ends" ;;
		mixed-eol) w="mixed CRLF and LF line ends" ;;
		nofinal) w="missing final newline" ;;
		nofinal-dot) w="missing final newline after a lone '.'" ;;
		longline) w="998-octet lines" ;;
		8bit) w="8-bit body" ;;
		smuggle) w="bare CR and '\\r.\\r' then SMTP commands: one message, the commands as text" ;;
		big) w="1 MB message" ;;
		esac
		if [ "$k" = big ]; then
			run_case "$title: $w" "$@" "$k" 1
		else
			run_case "$title: $w" "$@" "$k"
		fi
	done
}

# run_body_both MTA WHAT FUNC DOMAIN: run_body_cases for DOMAIN (the MTA offers
# CHUNKING: BDAT) and for data.DOMAIN (CHUNKING withheld: DATA), FUNC getting
# the domain; titles "MTA, BDAT (CHUNKING), WHAT: ...".
run_body_both() {
	run_body_cases "$1, BDAT (CHUNKING), $2" "$3" "$4"
	run_body_cases "$1, DATA (CHUNKING withheld), $2" "$3" "data.$4"
}

# assert_copy MSG FILE [TRACE]: FILE, a receiving MTA's stored copy of message
# MSG (line ends LF), holds MSG as sent. From MSG's first header line on it must
# equal what went on the wire (wire_expect: bare LF to CRLF, a final CRLF added)
# with CRLF stored as LF; before that only the trace fields the MTA prepends,
# their names an ERE alternation TRACE (default Postfix's: Return-Path,
# X-Original-To, Delivered-To, Received). Leaves the prepended part in
# $CASE_DIR/trace.
assert_copy() {
	local msg=$1 got=$2 trace=${3:-Return-Path|X-Original-To|Delivered-To|Received}
	local exp=$CASE_DIR/exp.mbox part=$CASE_DIR/got.mbox
	wire_expect "$msg" "$exp.wire"
	perl -0777 -pe 's/\r\n/\n/g' <"$exp.wire" >"$exp"
	if ! perl -0777 -e 'open(my $e, "<:raw", $ARGV[0]) or die; my ($first) = <$e> =~ /\A([^\n]*\n)/;
		open(my $g, "<:raw", $ARGV[1]) or die; my $y = "\n" . <$g>; my $i = index($y, "\n$first");
		exit 2 if $i < 0; open(my $t, ">:raw", $ARGV[2]) or die; print $t substr($y, 1, $i);
		open(my $p, ">:raw", $ARGV[3]) or die; print $p substr($y, $i + 1)' "$exp" "$got" "$CASE_DIR/trace" "$part"; then
		fail "copy $got: the message's first line is not there" "$(head -c 600 "$got")"
		return 1
	fi
	assert_eq "copy: fields before the message's own" "" \
		"$(grep -Ev "^($trace):|^[[:space:]]" "$CASE_DIR/trace")"
	assert_file_eq "copy, from the first header line on" "$exp" "$part"
}

# re_escape TEXT: print TEXT with ERE metacharacters escaped.
re_escape() {
	printf '%s' "$1" | sed 's/[][\.*^$+?(){}|/]/\\&/g'
}

# A command run by timed_run with stdout in $CASE_DIR/out and stderr in
# $CASE_DIR/err (for expect_line: `mxsend send`'s result lines).
# show_run: its exit, time, stdout and stderr tail, as diagnostics; a test sets
# SHOW_RUN_CMD (what ran), SHOW_RUN_OUT / SHOW_RUN_ERR (lines shown) and
# SHOW_RUN_MASK (a secret shown as <SECRET>) when the defaults do not fit.
SHOW_RUN_CMD=mxsend
SHOW_RUN_OUT=20
SHOW_RUN_ERR=15
SHOW_RUN_MASK=""
show_run() {
	local mask=""
	[ -n "$SHOW_RUN_MASK" ] && mask="s/$SHOW_RUN_MASK/<SECRET>/g; "
	diag "$SHOW_RUN_CMD exit $RUN_RC after $RUN_MS ms; stdout:"
	head -n "$SHOW_RUN_OUT" "$CASE_DIR/out" | sed 's/^/  | /; s/^/# /'
	diag "stderr (last $SHOW_RUN_ERR lines${mask:+, secret masked}):"
	tail -n "$SHOW_RUN_ERR" "$CASE_DIR/err" | sed "${mask}s/^/  | /; s/^/# /"
}

# expect_rc CODE: the last run exited with CODE.
expect_rc() {
	[ "$RUN_RC" = "$1" ] && return 0
	fail "exit status: expected $1, got $RUN_RC"
	show_run
	return 1
}

# expect_out ERE: some stdout line matches ERE.
expect_out() {
	grep -Eq -- "$1" "$CASE_DIR/out" && return 0
	fail "no output line matches /$1/"
	show_run
	return 1
}

# expect_sink SINK KEY VALUE: counter KEY of sink SINK.
expect_sink() {
	local v
	v=$(sink_stat "$1" "$2") || {
		fail "sink $1: stats port did not answer"
		return 1
	}
	assert_eq "sink $1 $2" "$3" "$v"
}

# expect_line RCPT ERE: stdout has exactly one line for RCPT and it matches
# ^RCPT ERE$ (ERE covers "STATUS CODE DSN mx=... reply=..."). The line's last
# field, " dkim=..." (DKIM signing, t_dkim.sh), may follow unless ERE names it.
expect_line() {
	local rcpt=$1 re=$2 lines n
	[[ $re == *dkim=* ]] || re+='( dkim=(none|d=[^ ]+ s=[^ ;]+(; d=[^ ]+ s=[^ ;]+)*))?'

	lines=$(grep -F -- "$rcpt " "$CASE_DIR/out" | grep -E -- "^$(re_escape "$rcpt") ")
	n=$(grep -c . <<<"$lines")
	if [ "$n" != 1 ]; then
		fail "expected one result line for $rcpt, got $n"
		show_run
		return 1
	fi
	# `send` ends each line with source=NAME[ADDR] (or source=-), and a failed
	# one with class=CLASS: a pattern that does not name them matches without
	[[ $re == *class=* ]] || re+='( source=[^ ]+)?( class=[a-z-]+)?'
	grep -Eq -- "^$(re_escape "$rcpt") $re\$" <<<"$lines" && return 0
	fail "result line for $rcpt does not match" "  want: ^$rcpt $re\$" "  got:  $lines"
	show_run
	return 1
}

# expect_class RCPT CLASS: stdout's result line for RCPT ends with class=CLASS
# (the bounce class of a failed line); CLASS "-": it has no class at all.
expect_class() {
	local rcpt=$1 want=$2 line got
	line=$(grep -E -- "^$(re_escape "$rcpt") " "$CASE_DIR/out" | head -n 1)
	got=-
	[[ $line =~ \ class=([a-z-]+)$ ]] && got=${BASH_REMATCH[1]}
	assert_eq "class of $rcpt" "$want" "$got"
}

# body_gen KIND FILE [MB]: write an awkward input message (LF line ends unless
# said) for the byte-exact body cases of t_send.sh and t_mta.sh. KIND:
#   dots         lines starting with '.', lone '.', '..', a '.' line ending CRLF
#   lf           bare LF line ends only
#   mixed-eol    CRLF and LF line ends mixed
#   nofinal      no newline after the last line
#   nofinal-dot  the last line is a lone '.' without newline
#   longline     998-octet lines (one of them starting with '.')
#   8bit         UTF-8 and raw 0x80-0xff in the body (needs BODY=8BITMIME)
#   smuggle      bare CRs, "\r.\r" and "\n.\r\n" followed by SMTP commands (one message)
#   utf8         UTF-8 header fields and body (SMTPUTF8 with a UTF-8 envelope)
#   big          MB (default 5) MB of 80-octet lines, some starting with '.', some lone '.'
body_gen() {
	case $1 in
	dots)
		printf 'Subject: dots\n\n.\n..\n...\n.leading dot\nmiddle . dot\n. space\n.\r\nx\n.\n' >"$2"
		;;
	lf)
		printf 'Subject: bare LF\nX-Test: yes\n\nline 1\nline 2\n\nline 4\n' >"$2"
		;;
	mixed-eol)
		printf 'Subject: mixed\r\n\r\ncrlf line\r\nlf line\ncrlf again\r\n\nend\n' >"$2"
		;;
	nofinal)
		printf 'Subject: no final newline\n\nthe last line has no newline' >"$2"
		;;
	nofinal-dot)
		printf 'Subject: ends in a dot\n\nlast line is a lone dot without newline\n.' >"$2"
		;;
	longline)
		{
			printf 'Subject: 998\n\n'
			head -c 998 /dev/zero | tr '\0' 'x'
			printf '\n.%s\nshort\n' "$(head -c 996 /dev/zero | tr '\0' 'y')"
		} >"$2"
		;;
	8bit)
		perl -e 'print "Subject: =?UTF-8?Q?gr=C3=BC=C3=9Fe?=\nContent-Type: text/plain; charset=utf-8\n",
			"Content-Transfer-Encoding: 8bit\n\n",
			"gr\xc3\xbc\xc3\x9fe \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x93\xa8\n",
			(map { chr } 0x80 .. 0xff), "\n",
			(grep { $_ ne "\r" && $_ ne "\n" } map { chr } 0x01 .. 0x7f), "\n",
			".", (map { chr } 0xa0 .. 0xbf), "\n"' >"$2"
		;;
	smuggle)
		# SMTP smuggling: "\r.\r" and "\n.\r\n" followed by commands; every
		# bare CR and LF must reach the server as CRLF (wire_expect)
		printf 'Subject: smuggle\r\n\r\nhi\r.\rMAIL FROM:<x@smuggle.test>\r\nRCPT TO:<victim@smuggle.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\n.\r\nQUIT\r\nend\rdone\n' >"$2"
		;;
	utf8)
		perl -e 'print "From: J\xc3\xb6s\xc3\xa9 <j\xc3\xb6s\xc3\xa9\@client.test>\n",
			"Subject: gr\xc3\xbc\xc3\x9fe \xe2\x9c\x89\nMIME-Version: 1.0\n",
			"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n",
			"H\xc3\xa9llo J\xc3\xb6ran \xf0\x9f\x93\xa8\n"' >"$2"
		;;
	big)
		# MB of 80-octet lines; every 97th starts with "." and every 1009th is "." alone
		perl -e 'my ($n, $out, $mb) = (0, "Subject: big\n\n", $ARGV[0]);
			while (length($out) < $mb * 1024 * 1024) {
				$n++;
				if ($n % 1009 == 0) { $out .= ".\n"; next }
				$out .= ($n % 97 == 0 ? "." : "") . sprintf("%09d ", $n) . ("0123456789" x 7) . "\n";
			}
			print $out' "${3:-5}" >"$2"
		;;
	esac
}

# ---------------------------------------------------------------------------
# Reporting and assertions

# ok NAME / not_ok NAME [REASON...]: the lines tests/run.sh counts.
ok() {
	INTEG_PASS=$((INTEG_PASS + 1))
	echo "ok - $1"
}
not_ok() {
	local name=$1
	shift
	INTEG_FAIL=$((INTEG_FAIL + 1))
	echo "not ok - $name"
	[ $# -gt 0 ] && printf '%s\n' "$@" | sed 's/^/#   /'
	return 0
}

# diag TEXT...: diagnostic lines (shown under a failing case).
diag() {
	printf '%s\n' "$@" | sed 's/^/# /'
}

# fail TEXT...: mark the current case failed, say why, return 1.
fail() {
	CASE_FAILED=1
	diag "$@"
	return 1
}

# assert_eq WHAT EXPECTED ACTUAL
assert_eq() {
	[ "$2" == "$3" ] && return 0
	if [[ $2 == *$'\n'* || $3 == *$'\n'* ]]; then
		diag "$1: differs (- expected, + actual):"
		diff -u <(printf '%s\n' "$2") <(printf '%s\n' "$3") | tail -n +3 | head -n 40 | sed 's/^/# /'
	else
		diag "$1: expected '$2', got '$3'"
	fi
	CASE_FAILED=1
	return 1
}

# wait_until SECONDS COMMAND...: poll every 0.2 s; 1 on timeout.
wait_until() {
	local limit=$1 i
	shift
	for ((i = 0; i < limit * 5; i++)); do
		"$@" && return 0
		sleep 0.2
	done
	return 1
}

# scrape PORT: the Prometheus text of a running mxsend (GET /metrics).
scrape() {
	python3 -c 'import sys, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode())' "$1"
}

# mval TEXT SERIES: the value of one series line (exact name with labels), or "".
mval() { awk -v k="$2" '$1 == k { print $2 }' <<<"$1"; }

# assert_match WHAT ERE TEXT: some line of TEXT matches ERE (grep -E).
assert_match() {
	grep -Eq -- "$2" <<<"$3" && return 0
	diag "$1: no line matches /$2/ in:"
	printf '%s\n' "$3" | head -n 20 | sed 's/^/#   | /'
	CASE_FAILED=1
	return 1
}

# assert_no_match WHAT ERE TEXT: no line of TEXT matches ERE.
assert_no_match() {
	grep -Eq -- "$2" <<<"$3" || return 0
	diag "$1: unexpected line matching /$2/:"
	grep -E -- "$2" <<<"$3" | head -n 5 | sed 's/^/#   | /'
	CASE_FAILED=1
	return 1
}

# assert_lt WHAT LIMIT VALUE / assert_ge WHAT LIMIT VALUE (integers)
assert_lt() {
	[ "$3" -lt "$2" ] 2>/dev/null && return 0
	fail "$1: expected < $2, got $3"
}
assert_ge() {
	[ "$3" -ge "$2" ] 2>/dev/null && return 0
	fail "$1: expected >= $2, got $3"
}

# assert_file_eq WHAT EXPECTED_FILE ACTUAL_FILE: byte-exact (cmp), with the
# first difference shown as escaped bytes on failure.
assert_file_eq() {
	local what=$1 exp=$2 act=$3 c off
	if [ ! -f "$act" ]; then
		fail "$what: no file $act"
		return 1
	fi
	c=$(cmp -- "$exp" "$act" 2>&1) && return 0
	diag "$what: $c (sizes: expected $(stat -c %s "$exp"), got $(stat -c %s "$act"))"
	off=$(sed -n 's/.* byte \([0-9]*\),.*/\1/p' <<<"$c")
	off=${off:-1}
	off=$((off > 40 ? off - 40 : 1))
	diag "expected from byte $off: $(tail -c "+$off" "$exp" | head -c 80 | od -An -c | tr -s ' \n' ' ')"
	diag "actual   from byte $off: $(tail -c "+$off" "$act" | head -c 80 | od -An -c | tr -s ' \n' ' ')"
	CASE_FAILED=1
	return 1
}

# run_case NAME FUNC [ARG...]: run FUNC in a subshell with its own CASE_DIR;
# "ok - NAME" if it returns 0 and no assertion failed (assertions set
# CASE_FAILED=1, so a case may go on checking after a failure), else
# "not ok - NAME" followed by everything the case printed, as '#' lines.
# Every case fails at once while INTEG_MISSING is set.
run_case() {
	case_selected "$@" || return 0
	if [ -n "$INTEG_MISSING" ]; then
		not_ok "$1" "skipped, missing: $INTEG_MISSING"
		return 0
	fi
	INTEG_NCASE=$((INTEG_NCASE + 1))
	case_exec "$INTEG_DIR/case.$INTEG_NCASE" "$@"
}

# case_selected NAME FUNC [ARG...]: whether the case runs (-k / ONLY: FUNC
# matches the glob, or NAME contains it); under --list, prints it and says no.
case_selected() {
	# shellcheck disable=SC2053 # INTEG_ONLY is a glob on purpose
	[ -z "$INTEG_ONLY" ] || [[ $2 == $INTEG_ONLY ]] || [[ $1 == *$INTEG_ONLY* ]] || return 1
	if [ "$INTEG_LIST" = 1 ]; then
		printf '%s\t%s\n' "$2" "$1"
		return 1
	fi
	return 0
}

# case_exec DIR NAME FUNC [ARG...]: the body of run_case (DIR is created).
case_exec() {
	local dir=$1 name=$2
	shift 2
	mkdir -p "$dir"
	if (
		CASE_DIR=$dir
		CASE_FAILED=0
		"$@" && [ "$CASE_FAILED" = 0 ]
	) >"$dir/log" 2>&1; then
		ok "$name"
	else
		not_ok "$name"
		sed -e '/^# /!s/^/# /' "$dir/log" | head -n 80
	fi
}

# run_case_bg NAME FUNC [ARG...]: run_case in a background job; wait_cases
# prints the reports in start order. For slow, independent cases.
run_case_bg() {
	case_selected "$@" || return 0
	if [ -n "$INTEG_MISSING" ]; then
		run_case "$@"
		return 0
	fi
	INTEG_NCASE=$((INTEG_NCASE + 1))
	local dir=$INTEG_DIR/case.$INTEG_NCASE
	mkdir -p "$dir"
	case_exec "$dir" "$@" >"$dir/report" 2>&1 &
	echo "$!" >"$dir/bg_pid"
	INTEG_BG+=("$dir")
}

# wait_cases [LIMIT_S]: wait (at most LIMIT_S in all, default 120 s) for the
# run_case_bg jobs, print their reports in start order and count them.
wait_cases() {
	local limit=${1:-120} dir pid t0=$SECONDS
	for dir in "${INTEG_BG[@]}"; do
		pid=$(<"$dir/bg_pid")
		while kill -0 "$pid" 2>/dev/null && [ $((SECONDS - t0)) -lt "$limit" ]; do
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null
			echo "not ok - case in $dir still running after $limit s" >>"$dir/report"
		fi
		wait "$pid" 2>/dev/null
		cat "$dir/report"
		INTEG_PASS=$((INTEG_PASS + $(grep -c '^ok - ' "$dir/report")))
		INTEG_FAIL=$((INTEG_FAIL + $(grep -c '^not ok - ' "$dir/report")))
	done
	INTEG_BG=()
}

# integ_parts PART...: the body of a feature script whose cases live in parts,
# tests/integ/FEATURE/PART.sh, each a complete script (its own work directory,
# servers and set-up, as if run alone; `bash tests/integ/FEATURE/PART.sh -k ...`
# works too). Runs them one after the other with this script's -k / --list,
# prints their lines, and ends as integ_finish does with the sum. A part that
# exits non-zero without a "not ok" line counts as one failure.
integ_parts() {
	local part out rc p f args=()
	[ -n "$INTEG_ONLY" ] && args+=(-k "$INTEG_ONLY")
	[ "$INTEG_LIST" = 1 ] && args+=(--list)
	out=$(mktemp "${TMPDIR:-/tmp}/mxsend-parts.XXXXXX") || exit 1
	for part in "$@"; do
		[ "$INTEG_LIST" = 1 ] || echo "# part ${part#"$INTEG_LIB_DIR"/}"
		bash "$part" "${args[@]}" >"$out" 2>&1
		rc=$?
		grep -v '^# no case matches\|^# [0-9]* passed, [0-9]* failed$' "$out"
		p=$(grep -c '^ok - ' "$out")
		f=$(grep -c '^not ok - ' "$out")
		# (-k selecting nothing in this part is no failure)
		if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && ! grep -q '^# no case matches' "$out"; then
			not_ok "part ${part#"$INTEG_LIB_DIR"/} (exit $rc)"
		fi
		INTEG_PASS=$((INTEG_PASS + p))
		INTEG_FAIL=$((INTEG_FAIL + f))
	done
	rm -f "$out"
	[ "$INTEG_LIST" = 1 ] && exit 0
	if [ -n "$INTEG_ONLY" ] && [ $((INTEG_PASS + INTEG_FAIL)) -eq 0 ]; then
		echo "# no case matches '$INTEG_ONLY' (--list shows them)"
		exit 1
	fi
	echo "# $INTEG_PASS passed, $INTEG_FAIL failed"
	[ "$INTEG_FAIL" -eq 0 ] && [ "$INTEG_PASS" -gt 0 ] && exit 0
	exit 1
}

# integ_finish: print "# N passed, M failed" and exit (1 if anything failed).
integ_finish() {
	[ "$INTEG_LIST" = 1 ] && exit 0
	[ ${#INTEG_BG[@]} -gt 0 ] && wait_cases 120
	if [ -n "$INTEG_ONLY" ] && [ $((INTEG_PASS + INTEG_FAIL)) -eq 0 ]; then
		echo "# no case matches '$INTEG_ONLY' (--list shows them)"
		exit 1
	fi
	echo "# $INTEG_PASS passed, $INTEG_FAIL failed"
	[ "$INTEG_FAIL" -eq 0 ] && [ "$INTEG_PASS" -gt 0 ] && exit 0
	exit 1
}
