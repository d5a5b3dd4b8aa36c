#!/usr/bin/env bash
# tests/integ/t_asan.sh: mxsend built with ASan/UBSan (build/asan/mxsend, no
# jemalloc) through its start-up and shutdown paths: `mxsend send` (delivered,
# DNS failure), `mxsend run --until-empty`, and SIGTERM while idle, while
# many jobs are in flight, and twice while DKIM-signed jobs are being signed;
# Redis over TLS (rediss://: both relays, and SIGTERM while TLS keeps failing). Every case asserts the exit status, the results
# written, and a stderr free of AddressSanitizer, UBSan ("runtime error") and
# LeakSanitizer reports (detect_leaks=1).
# shellcheck disable=SC2317 # case functions run indirectly, each in its run_case subshell
set -u
MXSEND=${MXSEND_ASAN:-$(cd "$(dirname "$0")/../.." && pwd)/build/asan/mxsend}
# shellcheck source=tests/integ/lib.sh
. "$(dirname "$0")/lib.sh"

integ_setup mx1.test mx2.test 127.0.0.1
integ_require mxsend mxsink redis-server redis-cli unbound timeout
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=exitcode=98

if [ -z "$INTEG_MISSING" ]; then
	start_unbound "ok.test. MX 10 mx1.test.
mx1.test. A 127.0.3.1
slow.test. MX 10 mx2.test.
mx2.test. A 127.0.3.2
squit.test. MX 10 mx3.test.
mx3.test. A 127.0.3.3" || integ_missing "unbound"
	start_sink good --listen "127.0.3.1:$SINK_PORT" --threads 2 --rcpt 'bounce*=550 5.1.1 no such user' ||
		integ_missing "sink good"
	start_sink slow --listen "127.0.3.2:$SINK_PORT" --threads 2 --delay-ms 300 || integ_missing "sink slow"
	start_sink squit --listen "127.0.3.3:$SINK_PORT" --stall quit || integ_missing "sink squit"
fi
MSG=$INTEG_DIR/msg.eml
printf 'Subject: asan test\nFrom: a@src.test\n\nhello\n' >"$MSG"

# clean_stderr FILE: no sanitizer report in FILE.
clean_stderr() {
	local what=$1 f=$2
	assert_no_match "$what: sanitizer report" 'ERROR: AddressSanitizer|runtime error|LeakSanitizer|SUMMARY: (Address|Undefined)' \
		"$(cat "$f" 2>/dev/null)" || { diag "stderr tail:"; tail -n 40 "$f" | sed 's/^/  | /'; }
}

# pipe_jobs PORT N DOMAIN PREFIX (lib.sh): N jobs to u<i>@DOMAIN.

# status_count PORT STATUS: results with STATUS.
status_count() {
	rcli "$1" EVAL "local n = 0 for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
		if e[2][8] == ARGV[1] then n = n + 1 end end return n" 1 mxsend:results "$2"
}

runconf() {
	integ_config "$1" "$(printf '[redis]\nurl = %s\n\n[retry]\nschedule = 1s\njitter = 0\n\n%s' "$2" "${3:-}")"
	[ -n "${4:-}" ] && sed -i "/^\[mxsend\]/a $4" "$1"
	return 0
}

# mx_bg NAME CONF ARG...: `mxsend run` in the background, stdout+stderr in
# $CASE_DIR/NAME.err, its exit status (once it exits) in $CASE_DIR/NAME.rc.
mx_bg() {
	local name=$1 conf=$2
	shift 2
	rm -f "$CASE_DIR/$name.rc" "$CASE_DIR/$name.pid"
	(
		"$MXSEND" run -c "$conf" "$@" </dev/null >"$CASE_DIR/$name.err" 2>&1 &
		echo $! >"$CASE_DIR/$name.pid"
		wait $!
		echo $? >"$CASE_DIR/$name.rc"
	) &
	for ((MX_I = 0; MX_I < 50; MX_I++)); do
		[ -s "$CASE_DIR/$name.pid" ] && break
		sleep 0.1
	done
	MX_PID=$(<"$CASE_DIR/$name.pid")
	echo "$MX_PID asan.$name" >>"$INTEG_DIR/procs"
}

# mx_wait NAME LIMIT_S: wait for it to exit; prints its exit status or "timeout".
mx_wait() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		[ -s "$CASE_DIR/$1.rc" ] && break
		sleep 0.1
	done
	if [ -s "$CASE_DIR/$1.rc" ]; then
		cat "$CASE_DIR/$1.rc"
	else
		kill -KILL "$(<"$CASE_DIR/$1.pid")" 2>/dev/null
		echo timeout
	fi
}

t_send_ok() {
	timed_run 60 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" send --dns "$DNS" --ca "$CA" --port "$SINK_PORT" \
		--from a@src.test --to u1@ok.test --to bounce1@ok.test "$MSG"
	assert_eq "exit status (one bounced)" 69 "$RUN_RC" || show_run
	assert_match "delivered line" '^u1@ok.test delivered 250 ' "$(cat "$CASE_DIR/out")"
	assert_match "bounced line" '^bounce1@ok.test bounced 550 ' "$(cat "$CASE_DIR/out")"
	clean_stderr "send" "$CASE_DIR/err"
}

t_send_dnsfail() {
	timed_run 60 "$CASE_DIR/out" "$CASE_DIR/err" "$MXSEND" send --dns "$DNS" --ca "$CA" --port "$SINK_PORT" \
		--from a@src.test --to u1@servfail.test --to u2@ok.test "$MSG"
	assert_eq "exit status (one deferred)" 75 "$RUN_RC" || show_run
	assert_match "deferred line" '^u1@servfail.test deferred ' "$(cat "$CASE_DIR/out")"
	assert_match "delivered line" '^u2@ok.test delivered 250 ' "$(cat "$CASE_DIR/out")"
	clean_stderr "send" "$CASE_DIR/err"
}

t_until_empty() {
	start_redis -n empty || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/m.conf rc n=300
	runconf "$conf" "$REDIS_URL"
	pipe_jobs "$p" "$n" ok.test ue || fail "enqueue"
	"$MXSEND" enqueue -c "$conf" --from a@src.test --to bounce9@ok.test --id b9 "$MSG" >/dev/null || fail "enqueue"
	mx_bg run "$conf" --until-empty
	rc=$(mx_wait run 60)
	assert_eq "exit status" 0 "$rc"
	assert_eq "delivered results" "$n" "$(status_count "$p" delivered)"
	assert_eq "bounced results" 1 "$(status_count "$p" bounced)"
	assert_eq "pending" 0 "$(rcli "$p" XPENDING mxsend:jobs mxsend | head -n 1)"
	clean_stderr "run --until-empty" "$CASE_DIR/run.err"
}

# rediss:// (sender/redis_tls.c): the blocking relay of enqueue and held, the
# ring relay of run --until-empty, and run SIGTERMed while its relays fail
# verification over and over (a CA that did not sign the server's).
t_rediss() {
	start_redis_tls -n tls || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/t.conf bad=$CASE_DIR/bad.conf rc n=200
	runconf "$conf" "$REDIS_URL"
	sed -i "/^url = /a tls_ca = $CA" "$conf"
	sed "s|^tls_ca = .*|tls_ca = $CERTS/selfsigned.pem|" "$conf" >"$bad"
	timed_run 60 "$CASE_DIR/enq.out" "$CASE_DIR/enq.err" "$MXSEND" enqueue -c "$conf" --from a@src.test \
		--to u@ok.test --count "$n" "$MSG"
	assert_eq "enqueue: exit status" 0 "$RUN_RC"
	clean_stderr "enqueue" "$CASE_DIR/enq.err"
	timed_run 60 "$CASE_DIR/held.out" "$CASE_DIR/held.err" "$MXSEND" held -c "$bad"
	assert_eq "held, wrong CA: exit status" 75 "$RUN_RC"
	clean_stderr "held" "$CASE_DIR/held.err"
	mx_bg run "$conf" --until-empty
	rc=$(mx_wait run 60)
	assert_eq "run: exit status" 0 "$rc"
	assert_eq "delivered results" "$n" "$(tcli "$p" XLEN mxsend:results)"
	clean_stderr "run --until-empty" "$CASE_DIR/run.err"
	mx_bg bad "$bad"
	# shellcheck disable=SC2317 # called through wait_until
	refused() { [ "$(grep -c 'evt=redis_tls_failed' "$CASE_DIR/bad.err")" -ge 3 ]; }
	wait_until 20 refused || fail "run, wrong CA: fewer than 3 evt=redis_tls_failed within 20 s"
	kill -TERM "$MX_PID"
	assert_eq "run, wrong CA, SIGTERM: exit status" 0 "$(mx_wait bad 20)"
	clean_stderr "run, wrong CA" "$CASE_DIR/bad.err"
}

t_term_idle() {
	start_redis -n idle || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/m.conf rc i
	runconf "$conf" "$REDIS_URL"
	"$MXSEND" enqueue -c "$conf" --from a@src.test --to one@ok.test --id i1 "$MSG" >/dev/null || fail "enqueue"
	mx_bg run "$conf"
	for ((i = 0; i < 150; i++)); do
		[ "$(status_count "$p" delivered)" = 1 ] && break
		sleep 0.2
	done
	assert_eq "delivered before SIGTERM" 1 "$(status_count "$p" delivered)"
	sleep 1
	kill -TERM "$MX_PID"
	rc=$(mx_wait run 20)
	assert_eq "exit status" 0 "$rc"
	clean_stderr "run, SIGTERM while idle" "$CASE_DIR/run.err"
}

# A server that never answers QUIT (the sink stalls there): at SIGTERM the
# sessions handed back for QUIT belong to no job and no pool; they were left
# running past the engine's end (evt=deliver_abandon_sessions_left, then a
# LeakSanitizer report). Now closed at once.
t_term_quit_stall() {
	start_redis -n quit || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/m.conf rc i t0
	runconf "$conf" "$REDIS_URL" "$(printf '[timeouts]\nquit = 60s')"
	pipe_jobs "$p" 5 squit.test sq || fail "enqueue"
	mx_bg run "$conf"
	for ((i = 0; i < 150; i++)); do
		[ "$(status_count "$p" delivered)" = 5 ] && break
		sleep 0.1
	done
	assert_eq "delivered before SIGTERM" 5 "$(status_count "$p" delivered)"
	t0=$(date +%s%3N)
	kill -TERM "$MX_PID"
	rc=$(mx_wait run 20)
	assert_eq "exit status" 0 "$rc"
	assert_lt "ms from SIGTERM to exit" 10000 "$(($(date +%s%3N) - t0))"
	assert_no_match "sessions left at exit" 'deliver_abandon_sessions_left' "$(cat "$CASE_DIR/run.err")"
	clean_stderr "run, SIGTERM with QUIT unanswered" "$CASE_DIR/run.err"
}

# all_accounted PORT N MIN: after a SIGTERM, nothing pending, at least MIN
# delivered, and delivered + queued + parked for retry = N (none lost).
all_accounted() {
	local fin left retry
	fin=$(status_count "$1" delivered)
	left=$(rcli "$1" XLEN mxsend:jobs)
	retry=$(rcli "$1" ZCARD mxsend:jobs:retry)
	assert_ge "delivered" "$3" "$fin"
	assert_eq "pending after SIGTERM" 0 "$(rcli "$1" XPENDING mxsend:jobs mxsend | head -n 1)"
	assert_eq "delivered + queued + parked for retry" "$2" "$((fin + left + retry))"
}

# With the metrics listener on (its accept and connections on the feeder's ring
# at exit), one scrape while busy, and 200 jobs whose DNS never answers
# (drop.test: lookups in flight at SIGTERM, deferred during the shutdown).
t_term_busy() {
	start_redis -n busy || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/m.conf rc i n=3000 mport
	mport=$(integ_port) || return 1
	runconf "$conf" "$REDIS_URL" "" "max_inflight = 1000\nmetrics = 127.0.0.1:$mport"
	pipe_jobs "$p" 200 x.drop.test td || fail "enqueue"
	pipe_jobs "$p" "$((n - 200))" slow.test tb || fail "enqueue"
	mx_bg run "$conf"
	for ((i = 0; i < 300; i++)); do
		[ "$(rcli "$p" XLEN mxsend:results)" -ge 50 ] 2>/dev/null && break
		sleep 0.1
	done
	assert_ge "results before SIGTERM" 50 "$(rcli "$p" XLEN mxsend:results)"
	assert_match "metrics scraped while busy" '^mxsend_' "$(python3 -c 'import sys, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode())' "$mport")"
	assert_ge "pending (in flight) at SIGTERM" 100 "$(rcli "$p" XPENDING mxsend:jobs mxsend | head -n 1)"
	kill -TERM "$MX_PID"
	rc=$(mx_wait run 30)
	assert_eq "exit status" 0 "$rc"
	all_accounted "$p" "$n" 50
	clean_stderr "run, SIGTERM while busy" "$CASE_DIR/run.err"
}

# DKIM-signed jobs (mxsend run's signing threads), a slow server, and two
# SIGTERMs: at the second, jobs are still with the signing threads (handed
# back at exit) and with the workers (their signed copies were leaked at
# exit until the fix: LeakSanitizer).
t_term_twice_dkim() {
	start_redis -n dkim || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/m.conf rc i n=3000
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$CASE_DIR/k.pem" 2>/dev/null ||
		fail "openssl genpkey" || return 1
	runconf "$conf" "$REDIS_URL" "$(printf '[dkim src.test]\nkey = %s\nselector = s1' "$CASE_DIR/k.pem")" \
		"log = info"
	pipe_jobs "$p" "$n" slow.test tk 4000 1 $'From: a@src.test\r\n' || fail "enqueue"
	mx_bg run "$conf"
	for ((i = 0; i < 300; i++)); do
		[ "$(rcli "$p" XLEN mxsend:results)" -ge 20 ] 2>/dev/null && break
		sleep 0.1
	done
	kill -TERM "$MX_PID"
	sleep 1.2
	kill -TERM "$MX_PID" # the second: no waiting for deliveries or signatures
	rc=$(mx_wait run 30)
	assert_eq "exit status" 0 "$rc"
	assert_match "released with work out" 'evt=releasing' "$(cat "$CASE_DIR/run.err")"
	grep -h 'evt=signing_abandoned' "$CASE_DIR/run.err" | sed 's/^/# /'
	all_accounted "$p" "$n" 20
	clean_stderr "run, DKIM, SIGTERM twice" "$CASE_DIR/run.err"
}

run_case "ASan: mxsend send, one delivered one bounced: exit 69, no leak" t_send_ok
run_case "ASan: mxsend send, DNS SERVFAIL + delivered: exit 75, no leak" t_send_dnsfail
run_case "ASan: mxsend run --until-empty: exit 0, results written, no report" t_until_empty
run_case "ASan: rediss:// enqueue, held (wrong CA), run --until-empty, run SIGTERMed while TLS keeps failing: no report" t_rediss
run_case "ASan: mxsend run, SIGTERM while idle: exit 0, no report" t_term_idle
run_case "ASan: mxsend run, SIGTERM while sessions wait for a QUIT reply that never comes: exit 0 within 10 s, none left behind, no report" t_term_quit_stall
run_case "ASan: mxsend run, SIGTERM with ~1,000 jobs in flight: exit 0, nothing pending, no report" t_term_busy
run_case "ASan: mxsend run, DKIM-signed jobs, SIGTERM twice while jobs are with the signing threads and a slow server: exit 0, nothing pending or lost, no leak" t_term_twice_dkim
integ_finish
