#!/usr/bin/env bash
# tests/integ/t_redis_tls.sh: Redis over TLS (rediss://, [redis] tls_*), as a
# managed Redis runs it: redis-server with a TLS port only (--port 0), an ACL
# user of sender/dist/mxsend.acl, the default user locked. Every command
# that talks to Redis works over it (enqueue, run, held, release, suppress,
# send, tlsrpt); the server's certificate must verify (a wrong CA, a wrong
# name: refused, exit 75 for commands, a log line and retries in run, never
# plaintext); a server that requires client certificates takes ours
# (tls_cert/tls_key) and refuses us without, its alert named every time; a
# restarted server is reconnected to; volume goes through both relays
# (sender/redis_tls.c); a plaintext port is timed out within bounds; bad
# tls_* settings stop start-up; the password appears nowhere, even at log
# level trace.
# shellcheck disable=SC2317 # case functions run indirectly, each in its run_case subshell
set -u
. "$(dirname "$0")/lib.sh"

# the server's certificate: 127.0.0.1 (an IP SAN) and redis.test
integ_setup mx1.test 127.0.0.1 redis.test
integ_require mxsend mxsink redis-server redis-cli unbound openssl

ACL_FILE=$INTEG_ROOT/sender/dist/mxsend.acl
ADMIN_PW=admin-Secret-1       # the default user's, once locked (redis-cli: REDISCLI_AUTH)
USER_PW='u5er:pa@ss-Secret-2' # mxsend's: ':' and '@' in it, as a URL allows
CLIENT=$CERTS/client           # client certificate and key (lib.sh integ_client_cert)
if [ -z "$INTEG_MISSING" ]; then
	start_unbound "ok.test. MX 10 mx1.test.
mx1.test. A 127.0.76.1
held.test. MX 10 mx2.test.
mx2.test. A 127.0.76.2" || integ_missing "unbound"
	start_sink good --listen "127.0.76.1:$SINK_PORT" || integ_missing "sink good"
	start_sink plain --listen "127.0.76.2:$SINK_PORT" --no-starttls || integ_missing "sink plain"
	integ_client_cert || integ_missing "client certificate (openssl)"
fi
MSG=$INTEG_DIR/msg.eml
printf 'Subject: redis tls test\nFrom: a@src.test\n\nhello\n' >"$MSG"

# redis_acl NAME AUTH_CLIENTS [PORT]: start_redis_tls (NAME, AUTH_CLIENTS
# no|yes; PORT: a restart on that port), then the ACL user of mxsend.acl
# with USER_PW; the first time (no PORT) also the default user locked with
# ADMIN_PW (REDISCLI_AUTH for tcli). Sets TPORT.
redis_acl() {
	local line rules
	unset REDISCLI_AUTH
	start_redis_tls -n "$1" --auth-clients "$2" ${3:+--port "$3"} || return 1
	TPORT=$REDIS_PORT
	line=$(grep -v '^#' "$ACL_FILE" | grep '^user ') || return 1
	read -r -a rules <<<"${line#user }"
	rules=("${rules[@]/#>CHANGE-ME/>$USER_PW}")
	assert_eq "ACL SETUSER" OK "$(tcli "$TPORT" ACL SETUSER "${rules[@]}")"
	[ $# -ge 3 ] && return 0
	assert_eq "lock the default user" OK "$(tcli "$TPORT" ACL SETUSER default on ">$ADMIN_PW")"
	export REDISCLI_AUTH=$ADMIN_PW
}

# run_refused NAME CONF N: `mxsend run -c CONF` until its log
# ($CASE_DIR/NAME.log) has N evt=redis_tls_failed lines (15 s bound), and
# it is still running then (retrying); then stopped.
run_refused() {
	local log=$CASE_DIR/$1.log pid
	integ_spawn "mx.$1" "$log" "$MXSEND" run -c "$2"
	pid=$SPAWN_PID
	# shellcheck disable=SC2317 # called through wait_until
	fails() { [ "$(grep -c 'evt=redis_tls_failed' "$log")" -ge "$3" ]; }
	wait_until 15 fails "$@" || fail "run: fewer than $3 evt=redis_tls_failed within 15 s"
	assert_eq "run is still running (retrying)" 0 "$(kill -0 "$pid" 2>/dev/null; echo $?)"
	stop_proc "mx.$1"
}

# tresults PORT: the results, "id|rcpt|status" a line.
tresults() {
	tcli "$1" EVAL "$RESULTS_LUA" 1 mxsend:results id,rcpt,status
}

# conf FILE URL [REDIS_KEYS] [MORE]: a config for Redis at URL (1 s retries,
# no jitter, log info), REDIS_KEYS more [redis] lines, MORE more sections.
conf() {
	integ_config "$1" "$(printf '[redis]\nurl = %s\nvisibility_timeout = 2s\n%s\n\n[retry]\nschedule = 1s\njitter = 0\n\n%s\n' \
		"$2" "${3:-}" "${4:-}")"
	sed -i '/^\[mxsend\]/a log = info' "$1"
}

# mxrun NAME CONF: `mxsend run --until-empty` (30 s bound), output in
# $CASE_DIR/NAME.log; its exit status must be 0.
mxrun() {
	timed_run 30 "$CASE_DIR/$1.out" "$CASE_DIR/$1.log" "$MXSEND" run -c "$2" --until-empty
	assert_eq "run $1: exit status" 0 "$RUN_RC"
}

# no_secret: the password is in no output or log of the case, nor a key.
no_secret() {
	local all
	all=$(cat "$CASE_DIR"/*.out "$CASE_DIR"/*.log "$CASE_DIR"/*.err 2>/dev/null)
	assert_no_match "the password in some output" 'pa@ss-Secret|u5er:pa' "$all"
	assert_no_match "key material in some output" 'PRIVATE KEY' "$all"
}

# The whole flow over TLS under the ACL user: the user and password in the
# URL, and in [redis] keys with tls_name (the URL names 127.0.0.1, the
# certificate also redis.test); nothing in plaintext (the server has no
# plaintext port).
t_tls_flow() {
	redis_acl flow no || return 1
	local p=$TPORT cu=$CASE_DIR/url.conf ck=$CASE_DIR/keys.conf hold out r
	hold=$(printf '[domain held.test]\ntls = encrypt\non_tls_failure = hold\n')
	tcli "$p" CONFIG RESETSTAT >/dev/null
	conf "$cu" "rediss://mxsend:$USER_PW@127.0.0.1:$p/0" "tls_ca = $CERTS/ca.pem" "$hold"
	conf "$ck" "rediss://127.0.0.1:$p/0" \
		"$(printf 'username = mxsend\npassword = %s\ntls_ca = %s\ntls_name = redis.test' "$USER_PW" "$CERTS/ca.pem")" \
		"$hold"
	timed_run 10 "$CASE_DIR/enq.out" "$CASE_DIR/enq.err" "$MXSEND" enqueue -c "$cu" \
		--from a@src.test --to d1@ok.test --id t-d "$MSG"
	assert_eq "enqueue (URL user): exit status" 0 "$RUN_RC"
	timed_run 10 "$CASE_DIR/enq2.out" "$CASE_DIR/enq2.err" "$MXSEND" enqueue -c "$ck" \
		--from a@src.test --to h1@held.test --id t-h --count 3 "$MSG"
	assert_eq "enqueue (keys, tls_name, 3 pipelined): exit status" 0 "$RUN_RC"
	assert_eq "jobs queued" 4 "$(tcli "$p" XLEN mxsend:jobs)"
	mxrun run1 "$cu"
	assert_match "run: the URL shown redacted" 'redis=rediss://mxsend:\*\*\*@127\.0\.0\.1' \
		"$(cat "$CASE_DIR/run1.log")"
	out=$("$MXSEND" held -c "$ck" 2>&1)
	assert_match "held lists the held job" 'id="t-h"' "$out"
	assert_eq "release" "released 3" "$("$MXSEND" release -c "$ck" --domain held.test 2>&1)"
	# held.test refuses STARTTLS: held again, by the second run (keys config,
	# at log level trace: the password is in no line of it either)
	sed -i 's/^log = info$/log = trace/' "$ck"
	mxrun run2 "$ck"
	sed -i 's/^log = trace$/log = info/' "$ck"
	assert_match "run2 logged at trace" ' trace ' "$(cat "$CASE_DIR/run2.log")"
	"$MXSEND" suppress add -c "$ck" --reason tls --expires 1d x1@ok.test >"$CASE_DIR/sup.out" 2>&1 ||
		fail "suppress add: $(cat "$CASE_DIR/sup.out")"
	assert_match "suppress list" '^x1@ok\.test ' "$("$MXSEND" suppress list -c "$ck" 2>&1)"
	assert_eq "suppress del" "deleted 1" "$("$MXSEND" suppress del -c "$ck" x1@ok.test 2>&1)"
	timed_run 20 "$CASE_DIR/send.out" "$CASE_DIR/send.err" "$MXSEND" send -c "$ck" \
		--from a@src.test --to s1@ok.test "$MSG"
	assert_eq "send: exit status" 0 "$RUN_RC"
	assert_no_match "send: TLSRPT counters written" 'warning' "$(cat "$CASE_DIR/send.err")"
	timed_run 20 "$CASE_DIR/rpt.out" "$CASE_DIR/rpt.err" "$MXSEND" tlsrpt -c "$ck" --dry-run \
		--day "$(date -u +%F)"
	assert_eq "tlsrpt --dry-run: exit status" 0 "$RUN_RC"
	assert_match "tlsrpt read the counters" 'ok\.test' "$(cat "$CASE_DIR/rpt.out" "$CASE_DIR/rpt.err")"
	# what mxsend ran (INFO commandstats; but this script's own redis-cli
	# commands): only what the ACL file lists (the blocking relay's bare
	# AUTH, its TLS check, is an arity error, never a denied command)
	local used
	used=$(tcli "$p" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([^:]*\):.*/\1/p' |
		grep -Ev '^(auth|acl\|.*|config\|.*|info|hello|ping)$' | sort)
	assert_eq "commands used that the ACL file does not list" "" \
		"$(comm -23 <(echo "$used") <(grep '^user ' "$ACL_FILE" | tr ' ' '\n' | sed -n 's/^+//p' | sort))"
	r=$(tresults "$p")
	assert_match "delivered" '^t-d\|d1@ok\.test\|delivered$' "$r"
	assert_eq "held, three times, then held again" 6 "$(grep -c '^t-h|h1@held\.test|held$' <<<"$r")"
	assert_eq "commands denied to the ACL user (ACL LOG)" "" \
		"$(tcli "$p" ACL LOG | awk 'o { print; o = 0 } $0 == "object" { o = 1 }' | grep -v '^config|get$')"
	no_secret
}

# The server's certificate does not verify: a CA that did not sign it, a
# name it does not hold. Commands exit 75 naming the reason; run logs it and
# keeps retrying (nothing delivered, nothing sent in plaintext).
t_tls_refused() {
	redis_acl refused no || return 1
	local p=$TPORT cw=$CASE_DIR/wrongca.conf cn=$CASE_DIR/wrongname.conf cs=$CASE_DIR/system.conf
	conf "$cw" "rediss://mxsend:$USER_PW@127.0.0.1:$p/0" "tls_ca = $CERTS/selfsigned.pem"
	conf "$cn" "rediss://mxsend:$USER_PW@127.0.0.1:$p/0" \
		"$(printf 'tls_ca = %s\ntls_name = wrong.invalid' "$CERTS/ca.pem")"
	conf "$cs" "rediss://mxsend:$USER_PW@127.0.0.1:$p/0"
	timed_run 10 "$CASE_DIR/e1.out" "$CASE_DIR/e1.err" "$MXSEND" enqueue -c "$cw" --from a@src.test \
		--to x@ok.test "$MSG"
	assert_eq "enqueue, wrong CA: exit status" 75 "$RUN_RC"
	assert_match "enqueue, wrong CA: why" \
		'redis: connect to rediss://mxsend:\*\*\*@127\.0\.0\.1:[0-9]+/0: TLS with "127\.0\.0\.1": TLS handshake: certificate verify failed: .* \(tls_ca .*selfsigned\.pem\)$' \
		"$(cat "$CASE_DIR/e1.err")"
	timed_run 10 "$CASE_DIR/e2.out" "$CASE_DIR/e2.err" "$MXSEND" held -c "$cn"
	assert_eq "held, wrong name: exit status" 75 "$RUN_RC"
	assert_match "held, wrong name: why" 'TLS with "wrong\.invalid": TLS handshake: certificate verify failed: hostname mismatch' \
		"$(cat "$CASE_DIR/e2.err")"
	timed_run 10 "$CASE_DIR/e3.out" "$CASE_DIR/e3.err" "$MXSEND" suppress list -c "$cs"
	assert_eq "suppress list, the system store (no tls_ca): exit status" 75 "$RUN_RC"
	assert_match "suppress list, system store: why" 'certificate verify failed.*the system store' \
		"$(cat "$CASE_DIR/e3.err")"
	tcli "$p" XADD mxsend:jobs '*' from a@src.test to r1@ok.test data hello >/dev/null
	run_refused run "$cw" 4
	assert_match "run: the reason logged" \
		'evt=redis_tls_failed server=127\.0\.0\.1:[0-9]+ name=127\.0\.0\.1 err="TLS handshake: certificate verify failed: self-signed certificate in certificate chain"' \
		"$(cat "$CASE_DIR/run.log")"
	assert_match "run: Redis down, retried" 'evt=redis_down conn=' "$(cat "$CASE_DIR/run.log")"
	assert_eq "nothing delivered" 0 "$(tcli "$p" XLEN mxsend:results)"
	assert_eq "the job still queued" 1 "$(tcli "$p" XLEN mxsend:jobs)"
	no_secret
}

# A server that requires client certificates (--tls-auth-clients yes): ours
# (tls_cert/tls_key) is taken by every command and run; without it, refused
# with the server's alert named.
t_tls_client_cert() {
	redis_acl certs yes || return 1
	local p=$TPORT cc=$CASE_DIR/cert.conf cn=$CASE_DIR/nocert.conf
	conf "$cc" "rediss://mxsend:$USER_PW@127.0.0.1:$p/0" \
		"$(printf 'tls_ca = %s\ntls_cert = %s\ntls_key = %s' "$CERTS/ca.pem" "$CLIENT.pem" "$CLIENT.key")"
	conf "$cn" "rediss://mxsend:$USER_PW@127.0.0.1:$p/0" "tls_ca = $CERTS/ca.pem"
	timed_run 10 "$CASE_DIR/e1.out" "$CASE_DIR/e1.err" "$MXSEND" enqueue -c "$cc" --from a@src.test \
		--to c1@ok.test --id t-c "$MSG"
	assert_eq "enqueue with a client certificate: exit status" 0 "$RUN_RC"
	mxrun run1 "$cc"
	assert_match "run with a client certificate: delivered" '^t-c\|c1@ok\.test\|delivered$' "$(tresults "$p")"
	timed_run 10 "$CASE_DIR/e2.out" "$CASE_DIR/e2.err" "$MXSEND" enqueue -c "$cn" --from a@src.test \
		--to c2@ok.test --id t-n "$MSG"
	assert_eq "enqueue without a client certificate: exit status" 75 "$RUN_RC"
	assert_match "enqueue without: the server's refusal named" 'TLS with "127\.0\.0\.1": TLS (read|handshake): .*certificate required' \
		"$(cat "$CASE_DIR/e2.err")"
	tcli "$p" XADD mxsend:jobs '*' from a@src.test to c3@ok.test data hello >/dev/null
	run_refused run "$cn" 4
	assert_match "run without: why" 'evt=redis_tls_failed .*err="[^"]*certificate required' "$(cat "$CASE_DIR/run.log")"
	# every time: the alert, not the reset that may overtake it (a race once)
	assert_eq "run without: every failure names the alert" "" \
		"$(grep 'evt=redis_tls_failed' "$CASE_DIR/run.log" | grep -v 'certificate required')"
	local i
	for ((i = 0; i < 8; i++)); do
		"$MXSEND" held -c "$cn" 2>&1
	done >"$CASE_DIR/held8.err"
	assert_eq "held without, 8 times: every one names the alert" 8 \
		"$(grep -c 'TLS (read|handshake): .*certificate required' -E "$CASE_DIR/held8.err")"
	assert_eq "run without: nothing more delivered" 1 "$(tcli "$p" XLEN mxsend:results)"
	no_secret
}

# A restarted server: run reconnects over TLS and delivers what came after.
t_tls_reconnect() {
	redis_acl again no || return 1
	local p=$TPORT c=$CASE_DIR/again.conf
	conf "$c" "rediss://mxsend:$USER_PW@127.0.0.1:$p/0" "tls_ca = $CERTS/ca.pem"
	integ_spawn mx.again "$CASE_DIR/run.log" "$MXSEND" run -c "$c"
	# shellcheck disable=SC2317 # called through wait_until
	ready() { [ "$(grep -c 'evt=redis_ready' "$CASE_DIR/run.log")" -ge 2 ]; }
	wait_until 10 ready || fail "run: not ready within 10 s"
	stop_proc redis.again
	redis_acl again no "$p" || return 1 # the same port, a new server
	tcli "$p" XADD mxsend:jobs '*' from a@src.test to a1@ok.test id t-a data hello >/dev/null
	# shellcheck disable=SC2317 # called through wait_until
	done1() { [ "$(tcli "$p" XLEN mxsend:results)" = 1 ] 2>/dev/null; }
	wait_until 20 done1 || fail "no result within 20 s after the restart" "$(tail -n 5 "$CASE_DIR/run.log")"
	stop_proc mx.again
	assert_match "delivered after the restart" '^t-a\|a1@ok\.test\|delivered$' \
		"$(tresults "$p")"
	assert_match "reconnected" 'evt=redis_down' "$(cat "$CASE_DIR/run.log")"
	no_secret
}

# Volume through both relays: one pipelined enqueue of N jobs of ~6 KiB
# (the blocking relay: megabytes up before any reply is read), then run
# claims them in large replies (the ring relay) and delivers every one once.
t_tls_volume() {
	redis_acl volume no || return 1
	local p=$TPORT c=$CASE_DIR/vol.conf n=1500 big=$CASE_DIR/big.eml
	conf "$c" "rediss://mxsend:$USER_PW@127.0.0.1:$p/0" "tls_ca = $CERTS/ca.pem"
	{ printf 'Subject: big\nFrom: a@src.test\n\n'; head -c 4500 /dev/zero | base64 -w 76; } >"$big"
	timed_run 60 "$CASE_DIR/enq.out" "$CASE_DIR/enq.err" "$MXSEND" enqueue -c "$c" --from a@src.test \
		--to v@ok.test --count "$n" "$big"
	assert_eq "enqueue --count $n: exit status" 0 "$RUN_RC"
	assert_eq "jobs queued" "$n" "$(tcli "$p" XLEN mxsend:jobs)"
	timed_run 120 "$CASE_DIR/run.out" "$CASE_DIR/run.log" "$MXSEND" run -c "$c" --until-empty
	assert_eq "run: exit status" 0 "$RUN_RC"
	assert_eq "delivered" "$n" "$(tcli "$p" EVAL "$RESULTS_LUA" 1 mxsend:results status | grep -c '^delivered$')"
	assert_eq "jobs with two results" "" \
		"$(tcli "$p" EVAL "$RESULTS_LUA" 1 mxsend:results job | sort | uniq -d | head -n 3)"
	assert_no_match "no TLS failure" 'redis_tls_failed|redis_down' "$(cat "$CASE_DIR/run.log")"
}

# rediss:// to a plaintext Redis port (a misconfiguration): Redis reads our
# ClientHello as the start of an inline command and waits for its end, so
# nothing comes back. The commands time out within bounds (exit 75), run
# drops the connection after its connect timeout and retries, stops on
# SIGTERM; nothing is sent in plaintext but the ClientHello.
t_tls_not_tls() {
	start_redis -n plain || return 1
	local pp=$REDIS_PORT c=$CASE_DIR/plain.conf pid
	conf "$c" "rediss://127.0.0.1:$pp/0" "tls_ca = $CERTS/ca.pem"
	timed_run 20 "$CASE_DIR/e1.out" "$CASE_DIR/e1.err" "$MXSEND" enqueue -c "$c" --from a@src.test \
		--to x@ok.test "$MSG"
	assert_eq "plaintext port: exit status" 75 "$RUN_RC"
	assert_match "plaintext port: timed out" 'TLS handshake with "127\.0\.0\.1": timed out \(5 s\)' \
		"$(cat "$CASE_DIR/e1.err")"
	assert_lt "plaintext port: within 8 s" 8000 "$RUN_MS"
	assert_eq "plaintext port: no job added" 0 "$(rcli "$pp" XLEN mxsend:jobs)"
	integ_spawn mx.plain "$CASE_DIR/run.log" "$MXSEND" run -c "$c"
	pid=$SPAWN_PID
	# shellcheck disable=SC2317 # called through wait_until
	timeouts() { grep -q 'evt=redis_timeout conn=.* what=connect' "$CASE_DIR/run.log"; }
	wait_until 15 timeouts || fail "run: no evt=redis_timeout what=connect within 15 s"
	kill -TERM "$pid"
	# shellcheck disable=SC2317 # called through wait_until
	gone() { ! kill -0 "$pid" 2>/dev/null; }
	wait_until 10 gone || fail "run: still running 10 s after SIGTERM"
	assert_eq "run: no job added, nothing else written" "" "$(rcli "$pp" KEYS '*')"
	no_secret
}

# Configuration: tls_* keys need a rediss:// URL, tls_key needs tls_cert,
# files that do not load are named; all exit 78 before any connection.
t_tls_config() {
	local c=$CASE_DIR/c.conf
	conf "$c" "redis://127.0.0.1:1/0" "tls_ca = $CERTS/ca.pem"
	timed_run 10 "$CASE_DIR/a.out" "$CASE_DIR/a.err" "$MXSEND" held -c "$c"
	assert_eq "tls_ca with redis://: exit status" 78 "$RUN_RC"
	assert_match "tls_ca with redis://: why" 'tls_ca is for TLS: the url must be rediss://' "$(cat "$CASE_DIR/a.err")"
	conf "$c" "rediss://127.0.0.1:1/0" "tls_key = $CLIENT.key"
	timed_run 10 "$CASE_DIR/b.out" "$CASE_DIR/b.err" "$MXSEND" run -c "$c"
	assert_eq "tls_key alone: exit status" 78 "$RUN_RC"
	assert_match "tls_key alone: why" 'tls_key without tls_cert' "$(cat "$CASE_DIR/b.err")"
	conf "$c" "rediss://127.0.0.1:1/0" "tls_ca = $CASE_DIR/none.pem"
	timed_run 10 "$CASE_DIR/c.out" "$CASE_DIR/c.err" "$MXSEND" enqueue -c "$c" --from a@src.test \
		--to x@ok.test "$MSG"
	assert_eq "tls_ca missing: exit status" 78 "$RUN_RC"
	assert_match "tls_ca missing: why" '\[redis\] TLS: CA file .*none\.pem: cannot load: No such file or directory' "$(cat "$CASE_DIR/c.err")"
	conf "$c" "rediss://127.0.0.1:1/0" \
		"$(printf 'tls_ca = %s\ntls_cert = %s\ntls_key = %s' "$CERTS/ca.pem" "$CLIENT.pem" "$CERTS/server.key")"
	timed_run 10 "$CASE_DIR/d.out" "$CASE_DIR/d.err" "$MXSEND" run -c "$c"
	assert_eq "key of another certificate: exit status" 78 "$RUN_RC"
	assert_match "key of another certificate: why" '\[redis\] TLS: key .*server\.key is not the key of certificate .*client\.pem' \
		"$(cat "$CASE_DIR/d.err")"
	no_secret
}

run_case "TLS only, ACL user, default user locked: enqueue (URL user; [redis] keys + tls_name), run, held, release, suppress, send, tlsrpt over rediss://; nothing denied, no password shown" t_tls_flow
run_case "server certificate not verified (wrong CA, wrong tls_name, system store): commands exit 75 naming why, run logs evt=redis_tls_failed and retries, nothing delivered" t_tls_refused
run_case "server requires client certificates: tls_cert/tls_key taken by enqueue and run; without, exit 75 / evt=redis_tls_failed naming 'certificate required'" t_tls_client_cert
run_case "redis-server restarted under a running run: reconnects over TLS, delivers what came after" t_tls_reconnect
run_case "1500 jobs of 6 KiB: one pipelined enqueue (blocking relay), run claims and delivers each once (ring relay)" t_tls_volume
run_case "rediss:// to a plaintext Redis port: enqueue times out (exit 75, < 8 s), run drops and retries, stops on SIGTERM; nothing written" t_tls_not_tls
run_case "config: tls_* without rediss://, tls_key without tls_cert, a CA file missing, a key not the certificate's: exit 78" t_tls_config
integ_finish
