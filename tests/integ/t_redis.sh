#!/usr/bin/env bash
# tests/integ/t_redis.sh: Redis as production runs it. An ACL user allowed
# only what mxsend needs (sender/dist/mxsend.acl, the README's "Redis in
# production") carries every command that talks to Redis (enqueue, run, held,
# release, tlsrpt, send; a crashed process's jobs taken over), given in the
# URL or as [redis] username/password, with the default user locked; a wrong password is refused without being
# shown; `mxsend run` warns at start-up when maxmemory-policy evicts keys,
# or says it could not tell (CONFIG refused).
# shellcheck disable=SC2317 # case functions run indirectly, each in its run_case subshell
set -u
. "$(dirname "$0")/lib.sh"

integ_setup
integ_require mxsend mxsink redis-server redis-cli unbound

ACL_FILE=$INTEG_ROOT/sender/dist/mxsend.acl
ADMIN_PW=admin-Secret-1 # the default user's, once locked (redis-cli: REDISCLI_AUTH)
USER_PW='u5er:pa@ss-Secret-2' # mxsend's: ':' and '@' in it, as a URL allows
if [ -z "$INTEG_MISSING" ]; then
	start_unbound "ok.test. MX 10 mx1.test.
mx1.test. A 127.0.75.1
held.test. MX 10 mx2.test.
mx2.test. A 127.0.75.2
slow.test. MX 10 mx3.test.
mx3.test. A 127.0.75.3" || integ_missing "unbound"
	start_sink good --listen "127.0.75.1:$SINK_PORT" \
		--rcpt 'bounce*=550 5.1.1 no such user' --rcpt 'defer*=451 4.2.0 try later' ||
		integ_missing "sink good"
	start_sink plain --listen "127.0.75.2:$SINK_PORT" --no-starttls || integ_missing "sink plain"
	start_sink slow --listen "127.0.75.3:$SINK_PORT" --delay-ms 200 || integ_missing "sink slow"
fi
MSG=$INTEG_DIR/msg.eml
printf 'Subject: redis test\nFrom: a@src.test\n\nhello\n' >"$MSG"

# conf FILE URL [REDIS_KEYS] [MORE]: a config for Redis at URL (1 s retries,
# no jitter, log info), REDIS_KEYS more [redis] lines, MORE more sections.
conf() {
	integ_config "$1" "$(printf '[redis]\nurl = %s\nvisibility_timeout = 2s\n%s\n\n[retry]\nschedule = 1s\njitter = 0\n\n%s\n' \
		"$2" "${3:-}" "${4:-}")"
	sed -i '/^\[mxsend\]/a log = info' "$1"
}

# acl_setuser PORT PASSWORD: the user of sender/dist/mxsend.acl (aclfile
# syntax: "user NAME RULE..."), with PASSWORD for its placeholder.
acl_setuser() {
	local line rules
	line=$(grep -v '^#' "$ACL_FILE" | grep '^user ') || return 1
	read -r -a rules <<<"${line#user }"
	rules=("${rules[@]/#>CHANGE-ME/>$2}")
	assert_eq "ACL SETUSER" OK "$(rcli "$1" ACL SETUSER "${rules[@]}")"
}

# acl_allowed: the commands the ACL file allows ("+cmd" or "+cmd|sub"), one a line.
acl_allowed() {
	grep '^user ' "$ACL_FILE" | tr ' ' '\n' | sed -n 's/^+//p' | sort
}

# used_commands PORT: the commands the server ran since CONFIG RESETSTAT
# (INFO commandstats: "cmdstat_xadd", "cmdstat_client|setname"), one a line,
# without the ones this script's own redis-cli issues (auth, acl, config, info).
used_commands() {
	rcli "$1" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([^:]*\):.*/\1/p' |
		grep -Ev '^(auth|acl\|.*|config\|.*|info|hello)$' | sort
}

# mxrun NAME CONF: `mxsend run --until-empty` (30 s bound), output in
# $CASE_DIR/NAME.log; its exit status must be 0.
mxrun() {
	timed_run 30 "$CASE_DIR/$1.out" "$CASE_DIR/$1.log" "$MXSEND" run -c "$2" --until-empty
	assert_eq "run $1: exit status" 0 "$RUN_RC"
}

# The whole queue flow under the ACL user, the default user locked: every
# command mxsend issued was allowed (ACL LOG empty) and is one the ACL file
# lists; the password appears nowhere.
t_acl_flow() {
	start_redis -n acl || return 1
	local p=$REDIS_PORT out
	acl_setuser "$p" "$USER_PW" || return 1
	assert_eq "lock the default user" OK "$(rcli "$p" ACL SETUSER default on ">$ADMIN_PW")"
	export REDISCLI_AUTH=$ADMIN_PW
	rcli "$p" CONFIG RESETSTAT >/dev/null
	rcli "$p" ACL LOG RESET >/dev/null
	local cu=$CASE_DIR/url.conf ck=$CASE_DIR/keys.conf ck2=$CASE_DIR/keys2.conf
	local hold
	hold=$(printf '[domain held.test]\ntls = encrypt\non_tls_failure = hold\n')
	# the user in the URL (the password holds ':' and '@'), and in [redis] keys
	conf "$cu" "redis://mxsend:$USER_PW@127.0.0.1:$p/0" "" "$hold"
	conf "$ck" "redis://127.0.0.1:$p/0" "$(printf 'username = mxsend\npassword = %s' "$USER_PW")" "$hold"
	conf "$ck2" "redis://127.0.0.1:$p/0" "$(printf 'username = mxsend\npassword = %s' "$USER_PW")"
	"$MXSEND" enqueue -c "$cu" --from a@src.test --to d1@ok.test --id a-d "$MSG" >"$CASE_DIR/enq.out" 2>&1 ||
		fail "enqueue (URL user): $(cat "$CASE_DIR/enq.out")"
	"$MXSEND" enqueue -c "$ck" --from a@src.test --to bounce1@ok.test --to defer1@ok.test \
		--expires 3 --id a-bf "$MSG" >>"$CASE_DIR/enq.out" 2>&1 || fail "enqueue (keys)"
	"$MXSEND" enqueue -c "$ck" --from a@src.test --to h1@held.test --id a-h "$MSG" >>"$CASE_DIR/enq.out" 2>&1 ||
		fail "enqueue (held)"
	mxrun run1 "$cu"
	out=$("$MXSEND" held -c "$ck" 2>&1)
	assert_match "held lists the held job" 'id="a-h"' "$out"
	assert_eq "release" "released 1" "$("$MXSEND" release -c "$ck" --domain held.test 2>&1)"
	mxrun run2 "$ck2"
	# the suppression list's commands (mxsend suppress, README "Suppression")
	"$MXSEND" suppress add -c "$ck" --reason acl --expires 1d x1@ok.test >/dev/null 2>&1 || fail "suppress add"
	assert_match "suppress list" '^x1@ok\.test ' "$("$MXSEND" suppress list -c "$ck" 2>&1)"
	"$MXSEND" suppress check -c "$ck" x1@ok.test >/dev/null 2>&1 || fail "suppress check"
	assert_eq "suppress del" "deleted 1" "$("$MXSEND" suppress del -c "$ck" x1@ok.test 2>&1)"
	# send with Redis named: its TLS outcomes go to the TLSRPT counters
	timed_run 20 "$CASE_DIR/send.out" "$CASE_DIR/send.err" "$MXSEND" send -c "$ck2" \
		--from a@src.test --to s1@ok.test "$MSG"
	assert_eq "send: exit status" 0 "$RUN_RC"
	assert_no_match "send: counters written" 'warning' "$(cat "$CASE_DIR/send.err")"
	timed_run 20 "$CASE_DIR/rpt.out" "$CASE_DIR/rpt.err" "$MXSEND" tlsrpt -c "$ck2" --dry-run \
		--day "$(date -u +%F)"
	assert_eq "tlsrpt --dry-run: exit status" 0 "$RUN_RC"
	assert_match "tlsrpt read the counters" 'ok\.test' "$(cat "$CASE_DIR/rpt.out" "$CASE_DIR/rpt.err")"
	# what the ACL allowed and what mxsend used, before this script reads results
	local denied used extra
	# the commands refused (ACL LOG's "object"), but CONFIG GET: the start-up
	# check of maxmemory-policy is refused on purpose (t_evict_check)
	denied=$(rcli "$p" ACL LOG | awk 'o { print; o = 0 } $0 == "object" { o = 1 }' | grep -v '^config|get$')
	used=$(used_commands "$p")
	assert_eq "commands denied to the ACL user (ACL LOG)" "" "$denied"
	extra=$(comm -23 <(echo "$used") <(acl_allowed))
	assert_eq "commands used that the ACL file does not list" "" "$extra"
	diag "commands used: $(paste -sd' ' <<<"$used")"
	echo "# ACL commands the flow did not use (t_acl_takeover: xclaim, xgroup|delconsumer, select): $(comm -13 <(echo "$used") <(acl_allowed) | paste -sd' ')" \
		>>"$INTEG_DIR/figures"
	# every client mxsend opened was the ACL user (CLIENT LIST while a run is up is
	# racy; the results prove the work was done, the locked default user that
	# nothing else could have done it)
	local r
	r=$(results "$p" id,rcpt,status)
	assert_match "delivered" '^a-d\|d1@ok\.test\|delivered$' "$r"
	assert_match "bounced" '^a-bf\|bounce1@ok\.test\|bounced$' "$r"
	assert_match "deferred, then expired" '^a-bf\|defer1@ok\.test\|expired$' "$r"
	assert_match "held" '^a-h\|h1@held\.test\|held$' "$r"
	assert_match "released, delivered" '^a-h\|h1@held\.test\|delivered$' "$r"
	assert_eq "held left" 0 "$(rcli "$p" ZCARD mxsend:jobs:held)"
	# no secret anywhere: outputs, logs, configs aside
	local all
	all=$(cat "$CASE_DIR"/*.out "$CASE_DIR"/*.log "$CASE_DIR"/*.err 2>/dev/null)
	assert_no_match "the password in some output" 'pa@ss-Secret|u5er:pa' "$all"
	assert_match "the URL shown redacted" 'redis=redis://mxsend:\*\*\*@127\.0\.0\.1' "$all"
}

# A process killed (-9) with jobs claimed, under the ACL user: another takes
# them over (the dead-consumer script: XPENDING, XCLAIM), one final result
# each, nothing denied; and a database other than 0 (SELECT).
t_acl_takeover() {
	start_redis -n take || return 1
	local p=$REDIS_PORT c=$CASE_DIR/take.conf n=40 pid
	acl_setuser "$p" "$USER_PW" || return 1
	assert_eq "lock the default user" OK "$(rcli "$p" ACL SETUSER default on ">$ADMIN_PW")"
	export REDISCLI_AUTH=$ADMIN_PW
	rcli "$p" CONFIG RESETSTAT >/dev/null
	conf "$c" "redis://mxsend:$USER_PW@127.0.0.1:$p/1" "" "$(printf '[domain slow.test]\nmax_connections = 2\n')"
	# the dead-consumer takeover, not XAUTOCLAIM after the visibility timeout
	sed -i 's/^visibility_timeout = 2s$/visibility_timeout = 5m/' "$c"
	"$MXSEND" enqueue -c "$c" --from a@src.test --to t@slow.test --count "$n" "$MSG" >/dev/null ||
		fail "enqueue"
	integ_spawn mx.take "$CASE_DIR/a.log" "$MXSEND" run -c "$c"
	pid=$SPAWN_PID
	# shellcheck disable=SC2317 # called through wait_until
	some_done() { [ "$(rcli "$p" -n 1 XLEN mxsend:results)" -ge 2 ] 2>/dev/null; }
	wait_until 15 some_done || fail "no delivery within 15 s"
	kill -KILL "$pid"
	assert_ge "claimed and unfinished at the kill" 1 "$(rcli "$p" -n 1 XLEN mxsend:jobs)"
	mxrun b "$c"
	local denied used
	denied=$(rcli "$p" ACL LOG | awk 'o { print; o = 0 } $0 == "object" { o = 1 }' | grep -v '^config|get$')
	used=$(used_commands "$p") # before this script's own reads
	local fin dups
	fin=$(rcli "$p" -n 1 EVAL "$RESULTS_LUA" 1 mxsend:results id,job,rcpt,status | grep -c '|delivered$')
	dups=$(rcli "$p" -n 1 EVAL "$RESULTS_LUA" 1 mxsend:results job | sort | uniq -d | head -n 3)
	assert_eq "delivered results" "$n" "$fin"
	assert_eq "jobs with two results" "" "$dups"
	assert_match "the dead consumer's jobs taken over" 'evt=dead_consumers claimed=[1-9]' "$(cat "$CASE_DIR/b.log")"
	assert_eq "commands denied to the ACL user (ACL LOG)" "" "$denied"
	assert_eq "commands used that the ACL file does not list" "" "$(comm -23 <(echo "$used") <(acl_allowed))"
	diag "commands used: $(paste -sd' ' <<<"$used")"
	assert_match "XCLAIM used" '^xclaim$' "$used"
	assert_match "SELECT used" '^select$' "$used"
}

# Wrong credentials: run exits 78 at start-up naming AUTH, the short-lived
# commands fail; the password is never shown.
t_acl_refused() {
	start_redis -n refused || return 1
	local p=$REDIS_PORT c1=$CASE_DIR/u.conf c2=$CASE_DIR/k.conf all
	acl_setuser "$p" "$USER_PW" || return 1
	rcli "$p" ACL SETUSER default off >/dev/null
	conf "$c1" "redis://mxsend:Wrong-Secret-3@127.0.0.1:$p/0"
	conf "$c2" "redis://127.0.0.1:$p/0" "$(printf 'username = nosuchuser\npassword = %s' "$USER_PW")"
	timed_run 10 "$CASE_DIR/r1.out" "$CASE_DIR/r1.err" "$MXSEND" run -c "$c1"
	assert_eq "run, wrong password: exit status" 78 "$RUN_RC"
	assert_match "run: AUTH refused" 'redis: AUTH: WRONGPASS' "$(cat "$CASE_DIR/r1.err")"
	timed_run 10 "$CASE_DIR/r2.out" "$CASE_DIR/r2.err" "$MXSEND" run -c "$c2"
	assert_eq "run, unknown user: exit status" 78 "$RUN_RC"
	timed_run 10 "$CASE_DIR/e.out" "$CASE_DIR/e.err" "$MXSEND" enqueue -c "$c1" --from a@src.test \
		--to x@ok.test "$MSG"
	assert_eq "enqueue, wrong password: exit status" 75 "$RUN_RC"
	timed_run 10 "$CASE_DIR/h.out" "$CASE_DIR/h.err" "$MXSEND" held -c "$c2"
	assert_match "held, unknown user: AUTH refused" 'AUTH' "$(cat "$CASE_DIR/h.err")"
	all=$(cat "$CASE_DIR"/*.out "$CASE_DIR"/*.err)
	assert_no_match "a password shown" 'Wrong-Secret|pa@ss-Secret' "$all"
}

# maxmemory-policy: an evicting policy is warned about (escaped, at the default
# log level), noeviction is not, and a user refused CONFIG is told we could not
# check.
t_evict_check() {
	start_redis -n evict || return 1
	local p=$REDIS_PORT c0=$CASE_DIR/c0.conf ca=$CASE_DIR/acl.conf
	conf "$c0" "$REDIS_URL"
	sed -i '/^log = info/d' "$c0" # the default level: warn
	rcli "$p" CONFIG SET maxmemory-policy allkeys-lru >/dev/null
	timed_run 15 "$CASE_DIR/a.out" "$CASE_DIR/a.err" "$MXSEND" run -c "$c0" --until-empty
	assert_eq "allkeys-lru: exit status" 0 "$RUN_RC"
	assert_match "allkeys-lru: warned" 'evt=redis_evicts policy="allkeys-lru" .*noeviction' "$(cat "$CASE_DIR/a.err")"
	rcli "$p" CONFIG SET maxmemory-policy volatile-ttl >/dev/null
	timed_run 15 "$CASE_DIR/v.out" "$CASE_DIR/v.err" "$MXSEND" run -c "$c0" --until-empty
	assert_match "volatile-ttl: warned" 'evt=redis_evicts policy="volatile-ttl"' "$(cat "$CASE_DIR/v.err")"
	rcli "$p" CONFIG SET maxmemory-policy noeviction >/dev/null
	timed_run 15 "$CASE_DIR/n.out" "$CASE_DIR/n.err" "$MXSEND" run -c "$c0" --until-empty
	assert_eq "noeviction: exit status" 0 "$RUN_RC"
	assert_no_match "noeviction: no warning" 'evt=redis_evict' "$(cat "$CASE_DIR/n.err")"
	# the ACL user may not run CONFIG: we say so (the error escaped, quotes and all)
	acl_setuser "$p" "$USER_PW" || return 1
	conf "$ca" "redis://mxsend:$USER_PW@127.0.0.1:$p/0"
	sed -i '/^log = info/d' "$ca"
	timed_run 15 "$CASE_DIR/u.out" "$CASE_DIR/u.err" "$MXSEND" run -c "$ca" --until-empty
	assert_eq "ACL user: exit status" 0 "$RUN_RC"
	assert_match "ACL user: could not check" \
		'evt=redis_evict_unchecked err="redis: CONFIG GET: NOPERM [^"]*'"'"'config\|get'"'"' command" \(could not read maxmemory-policy' \
		"$(cat "$CASE_DIR/u.err")"
	assert_no_match "no raw control byte" $'[\x01-\x08\x0b-\x1f\x7f]' "$(cat "$CASE_DIR/u.err")"
}

# Every command a Lua script of queue/ calls (redis.call('X', ...)) is one the
# ACL user may run: a script runs its calls under the caller's ACL, and a
# missing one fails only when that script runs (HSETNX and PEXPIRE of the
# shaping state were missing until this case)
t_acl_scripts() {
	local cmds c missing=""
	cmds=$(grep -oh "redis\.call('[A-Z]*'" "$INTEG_ROOT"/queue/*.c | sed "s/.*('//; s/'//" | sort -u)
	assert_ge "script commands found" 10 "$(wc -l <<<"$cmds")"
	for c in $cmds; do
		c=$(tr 'A-Z' 'a-z' <<<"$c")
		grep -Eq "(^| )\+$c( |\||\$)" "$ACL_FILE" || missing="$missing $c"
	done
	assert_eq "script commands not in mxsend.acl" "" "$missing"
	assert_eq "README's copy of the ACL is the file's" "$(grep '^user mxsend' "$ACL_FILE")" \
		"$(grep '^user mxsend' "$INTEG_ROOT/README.md")"
}
run_case "every command queue/'s Lua scripts call is allowed by mxsend.acl (and README shows the same line)" t_acl_scripts
run_case "an ACL user with only sender/dist/mxsend.acl's commands, default user locked: enqueue, run (delivered, bounced, deferred/expired, held), held, release, send, tlsrpt; nothing denied, nothing used beyond the file, no password shown" t_acl_flow
run_case "kill -9 under the ACL user, database 1: another process takes the jobs over (XCLAIM), one result each, nothing denied" t_acl_takeover
run_case "wrong ACL credentials: run exits 78 naming AUTH, enqueue 75, held fails; no password shown" t_acl_refused
run_case "maxmemory-policy: allkeys-lru and volatile-ttl warned, noeviction not; CONFIG refused to the ACL user: could not check" t_evict_check
[ -s "$INTEG_DIR/figures" ] && cat "$INTEG_DIR/figures"
integ_finish
