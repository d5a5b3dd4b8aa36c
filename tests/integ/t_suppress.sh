#!/usr/bin/env bash
# tests/integ/t_suppress.sh: the suppression list (README "Suppression")
# against a real redis-server and the sink: a hard invalid-recipient bounce
# suppresses the address, the next job to it is `suppressed` with no
# connection at all; a job with suppressed and normal recipients delivers only
# the others; domain entries; expiry (and the prune); entries an application
# writes itself; `mxsend suppress add|del|list|check` round trip and hostile
# input (control bytes, no '@', a list over the cap) refused before anything
# is written.
# Each case has its own redis-server; the sinks and DNS are shared.
. "$(dirname "$0")/lib.sh"

integ_setup
integ_require mxsend mxsink redis-server redis-cli unbound

DNS_SPEC="
ok.test. MX 10 mx1.test.
mx1.test. A 127.0.4.1
other.test. MX 10 mx2.test.
mx2.test. A 127.0.4.2
blocked.test. MX 10 mx2.test.
"
if [ -z "$INTEG_MISSING" ]; then
	start_unbound "$DNS_SPEC" || integ_missing "unbound"
	start_sink one --listen "127.0.4.1:$SINK_PORT" --rcpt 'bad*=550 5.1.1 <bad> no such user' \
		--rcpt 'full*=552 5.2.2 mailbox full' --rcpt 'soft*=450 4.1.1 unverified address' ||
		integ_missing "sink one"
	start_sink two --listen "127.0.4.2:$SINK_PORT" || integ_missing "sink two"
fi
MSG=$INTEG_DIR/msg.eml
printf 'From: a@src.test\r\nSubject: s\r\n\r\nbody\r\n' >"$MSG"

# mkconf FILE [EXTRA]: Redis at $REDIS_URL, retries every second, EXTRA INI.
mkconf() {
	integ_config "$1" "$(printf '[redis]\nurl = %s\nvisibility_timeout = 2s\n\n[retry]\nschedule = 1s\njitter = 0\n\n%s\n%s\n' \
		"$REDIS_URL" "$(integ_timeouts)" "${2:-}")"
}

# drain CONF: `mxsend run --until-empty` (30 s bound); 0 when it exited 0.
drain() {
	timeout -k 2 30 "$MXSEND" run -c "$1" --until-empty </dev/null >>"$CASE_DIR/run.log" 2>&1 ||
		fail "mxsend run --until-empty: exit $? (log: $(tail -n 3 "$CASE_DIR/run.log" | tr '\n' ' '))"
}

# mx_start_bg CONF: `mxsend run` in the background (log in run.log), pid in MX_BG.
mx_start_bg() {
	"$MXSEND" run -c "$1" </dev/null >>"$CASE_DIR/run.log" 2>&1 &
	MX_BG=$!
	echo "$MX_BG mx.bg" >>"$INTEG_DIR/procs"
}

enqueue() { # CONF ID TO...
	local conf=$1 id=$2 to=() a
	shift 2
	for a in "$@"; do to+=(--to "$a"); done
	"$MXSEND" enqueue -c "$conf" --from a@src.test "${to[@]}" --id "$id" "$MSG" >/dev/null ||
		fail "enqueue $id"
}

# res PORT ID: rcpt|status|code|dsn|class|reply of job ID's results
res() { results "$1" rcpt,status,code,dsn,class,reply "$2"; }

t_auto() {
	start_redis -n auto || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/c.conf r before
	mkconf "$conf"
	enqueue "$conf" j1 bad1@ok.test full1@ok.test
	drain "$conf"
	r=$(res "$p" j1)
	assert_match "550 5.1.1: bounced, invalid-recipient" '^bad1@ok\.test\|bounced\|550\|5\.1\.1\|invalid-recipient\|' "$r"
	assert_match "552 5.2.2: bounced, mailbox-full" '^full1@ok\.test\|bounced\|552\|5\.2\.2\|mailbox-full\|' "$r"
	assert_match "bad1 suppressed automatically" '^0\|[0-9]+\|550 5\.1\.1\|invalid-recipient \(auto\): ' \
		"$(rcli "$p" HGET mxsend:jobs:suppress bad1@ok.test)"
	assert_eq "mailbox-full is not an automatic class" 0 "$(rcli "$p" HEXISTS mxsend:jobs:suppress full1@ok.test)"
	before=$(sink_stat one connections)
	# the next job to that address (written in another case): suppressed, no connection
	enqueue "$conf" j2 BAD1@ok.test
	drain "$conf"
	r=$(res "$p" j2)
	assert_match "suppressed, with the entry's code" \
		'^BAD1@ok\.test\|suppressed\|550\|5\.1\.1\|\|suppressed \(address\): invalid-recipient \(auto\): .*no such user' "$r"
	assert_eq "sink connections (none for a suppressed job)" "$before" "$(sink_stat one connections)"
	assert_eq "one result for j2" 1 "$(grep -c . <<<"$r")"
	assert_eq "jobs left" 0 "$(rcli "$p" XLEN mxsend:jobs)"
	# a temporary invalid-recipient (450 4.1.1) is not hard: deferred, expired, never suppressed
	rcli "$p" XADD mxsend:jobs '*' from a@src.test to soft1@ok.test data "$(cat "$MSG")" id j3 expires 1 >/dev/null
	drain "$conf"
	r=$(res "$p" j3)
	assert_match "450 4.1.1: deferred, invalid-recipient" '^soft1@ok\.test\|deferred\|450\|4\.1\.1\|invalid-recipient\|' "$r"
	assert_match "then expired, same class" '^soft1@ok\.test\|expired\|450\|4\.1\.1\|invalid-recipient\|' "$r"
	assert_eq "4xx: no entry" 0 "$(rcli "$p" HEXISTS mxsend:jobs:suppress soft1@ok.test)"
}
run_case "550 5.1.1: bounced class=invalid-recipient and suppressed; the next job to it: suppressed, no connection" t_auto

t_auto_expires() {
	start_redis -n autoexp || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/c.conf v now
	mkconf "$conf" $'[suppress]\nauto = invalid-recipient mailbox-full\nauto_expires = 1h'
	now=$(date +%s)
	enqueue "$conf" a1 bad2@ok.test full2@ok.test
	drain "$conf"
	for a in bad2@ok.test full2@ok.test; do
		v=$(rcli "$p" HGET mxsend:jobs:suppress "$a")
		assert_match "$a: entry" '^[0-9]+\|[0-9]+\|55[02] 5\.[12]\.[12]\|' "$v"
		assert_ge "$a: expires in about an hour" $((now + 3590)) "${v%%|*}"
		assert_lt "$a: expires in about an hour" $((now + 3700)) "${v%%|*}"
		assert_eq "$a: in the expiry set" "${v%%|*}" "$(rcli "$p" ZSCORE mxsend:jobs:suppress:exp "$a")"
	done
}
run_case "[suppress] auto = two classes, auto_expires = 1h: both entries, expiring, in the expiry set" t_auto_expires

t_mixed() {
	start_redis -n mixed || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/c.conf r
	mkconf "$conf"
	"$MXSEND" suppress add -c "$conf" --reason complaint --code "550 5.7.1" no1@ok.test no2@other.test \
		>"$CASE_DIR/out" || fail "suppress add"
	assert_eq "suppress add" "added 2" "$(cat "$CASE_DIR/out")"
	local r1 r2
	r1=$(sink_stat one recipients)
	r2=$(sink_stat two recipients)
	enqueue "$conf" m1 no1@ok.test yes1@ok.test no2@other.test yes2@other.test yes3@other.test
	drain "$conf"
	r=$(res "$p" m1)
	assert_match "no1 suppressed" '^no1@ok\.test\|suppressed\|550\|5\.7\.1\|\|suppressed \(address\): complaint$' "$r"
	assert_match "no2 suppressed" '^no2@other\.test\|suppressed\|' "$r"
	assert_eq "delivered" 3 "$(grep -c '|delivered|' <<<"$r")"
	assert_eq "results" 5 "$(grep -c . <<<"$r")"
	assert_eq "sink one recipients (yes1 only)" $((r1 + 1)) "$(sink_stat one recipients)"
	assert_eq "sink two recipients (yes2, yes3)" $((r2 + 2)) "$(sink_stat two recipients)"
	sink_find_msg one no1@ok.test >/dev/null 2>&1 && fail "no1@ok.test reached the sink"
	sink_find_msg two no2@other.test >/dev/null 2>&1 && fail "no2@other.test reached the sink"
	# every recipient of a job suppressed: committed without delivery
	enqueue "$conf" m2 no1@ok.test NO2@Other.Test
	drain "$conf"
	assert_eq "m2: two suppressed results" 2 "$(res "$p" m2 | grep -c '|suppressed|')"
	assert_eq "jobs left" 0 "$(rcli "$p" XLEN mxsend:jobs)"
}
run_case "a job with suppressed and normal recipients: only the others are delivered" t_mixed

t_domain() {
	start_redis -n domain || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/c.conf r c2
	mkconf "$conf"
	"$MXSEND" suppress add -c "$conf" --domain Blocked.Test. --reason "no mail there" >/dev/null ||
		fail "suppress add --domain"
	assert_match "stored as @domain" '^0\|[0-9]+\|\|no mail there$' "$(rcli "$p" HGET mxsend:jobs:suppress @blocked.test)"
	c2=$(sink_stat two connections)
	enqueue "$conf" d1 a@blocked.test b@blocked.test
	drain "$conf"
	r=$(res "$p" d1)
	assert_eq "both suppressed by the domain" 2 "$(grep -c '|suppressed|0||\|suppressed (domain): no mail there$' <<<"$r")"
	assert_eq "no connection to its MX" "$c2" "$(sink_stat two connections)"
	# an application's own entry, a bare reason (no '|'): never expires
	rcli "$p" HSET mxsend:jobs:suppress app@other.test "unsubscribed in the app" >/dev/null
	enqueue "$conf" d2 app@other.test
	drain "$conf"
	assert_match "application entry" '^app@other\.test\|suppressed\|0\|\|\|suppressed \(address\): unsubscribed in the app$' \
		"$(res "$p" d2)"
	"$MXSEND" suppress del -c "$conf" --domain blocked.test >"$CASE_DIR/out" || fail "suppress del"
	assert_eq "suppress del" "deleted 1" "$(cat "$CASE_DIR/out")"
	enqueue "$conf" d3 a@blocked.test
	drain "$conf"
	assert_match "deleted: delivered again" '^a@blocked\.test\|delivered\|250\|' "$(res "$p" d3)"
}
run_case "domain entry (--domain), an application's HSET, del" t_domain

t_expiry() {
	start_redis -n expiry || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/c.conf now
	mkconf "$conf"
	"$MXSEND" suppress add -c "$conf" --expires 3s soon@ok.test >/dev/null || fail "suppress add --expires"
	assert_eq "in the expiry set" 1 "$(rcli "$p" ZCARD mxsend:jobs:suppress:exp)"
	enqueue "$conf" e1 soon@ok.test
	drain "$conf"
	assert_match "within its lifetime: suppressed" '^soon@ok\.test\|suppressed\|' "$(res "$p" e1)"
	wait_until 5 bash -c "[ \$(date +%s) -ge $(($(date +%s) + 4)) ]"
	assert_match "list marks it" '^soon@ok\.test \(expired\) expires=' "$("$MXSEND" suppress list -c "$conf")"
	enqueue "$conf" e2 soon@ok.test
	drain "$conf"
	assert_match "expired: delivered" '^soon@ok\.test\|delivered\|' "$(res "$p" e2)"
	# the prune (every minute, first at start): expired entries deleted, a
	# fresh one and one written again without expiry kept
	now=$(date +%s)
	rcli "$p" HSET mxsend:jobs:suppress old@ok.test "$((now - 5))|1|550|old" kept@ok.test "0|1|550|again" >/dev/null
	rcli "$p" ZADD mxsend:jobs:suppress:exp "$((now - 5))" old@ok.test "$((now - 5))" kept@ok.test >/dev/null
	drain "$conf"
	assert_eq "old entry pruned" 0 "$(rcli "$p" HEXISTS mxsend:jobs:suppress old@ok.test)"
	assert_eq "soon entry pruned" 0 "$(rcli "$p" HEXISTS mxsend:jobs:suppress soon@ok.test)"
	assert_eq "entry without expiry kept" 1 "$(rcli "$p" HEXISTS mxsend:jobs:suppress kept@ok.test)"
	assert_eq "expiry set emptied" 0 "$(rcli "$p" ZCARD mxsend:jobs:suppress:exp)"
}
run_case "expiry: suppressed until --expires, then delivered; the prune deletes expired entries" t_expiry

t_cli() {
	start_redis -n cli || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/c.conf out rc
	mkconf "$conf"
	"$MXSEND" suppress add -c "$conf" --reason "hard bounce" --code "550 5.1.1" --expires 30d U1@Ok.Test u2@ok.test \
		>/dev/null || fail "add"
	out=$("$MXSEND" suppress list -c "$conf" | sort)
	assert_match "list u1 (lowercased)" '^u1@ok\.test expires=20[0-9-]+T[0-9:]+Z added=20[0-9-]+T[0-9:]+Z code="550 5\.1\.1" reason="hard bounce"$' "$out"
	assert_eq "list count" 2 "$(grep -c . <<<"$out")"
	out=$("$MXSEND" suppress check -c "$conf" u1@ok.test nobody@ok.test)
	rc=$?
	assert_eq "check: exit 1 when one is not suppressed" 1 "$rc"
	assert_match "check u1" '^u1@ok\.test suppressed by u1@ok\.test expires=' "$out"
	assert_match "check nobody" '^nobody@ok\.test not-suppressed$' "$out"
	"$MXSEND" suppress add -c "$conf" --domain ok.test >/dev/null || fail "add --domain"
	"$MXSEND" suppress check -c "$conf" nobody@ok.test >"$CASE_DIR/out"
	assert_eq "check: exit 0 when all are (by domain)" 0 "$?"
	assert_match "check by domain" '^nobody@ok\.test suppressed by @ok\.test ' "$(cat "$CASE_DIR/out")"
	printf 'u1@ok.test\r\n\nu2@ok.test\n' | "$MXSEND" suppress del -c "$conf" - >"$CASE_DIR/out" || fail "del -"
	assert_eq "del from stdin (CRLF, blank line)" "deleted 2" "$(cat "$CASE_DIR/out")"
	assert_eq "expiry set follows" 0 "$(rcli "$p" ZCARD mxsend:jobs:suppress:exp)"
	# hostile input: refused with exit 65 naming it, nothing written
	rcli "$p" DEL mxsend:jobs:suppress >/dev/null
	printf 'a@ok.test\nb\x01c@ok.test\n' | "$MXSEND" suppress add -c "$conf" - 2>"$CASE_DIR/err"
	assert_eq "control byte: exit 65" 65 "$?"
	assert_match "names the line, escaped" 'line 2 "b\\x01c@ok\.test": a control byte in it' "$(cat "$CASE_DIR/err")"
	"$MXSEND" suppress add -c "$conf" a@ok.test nodomain 2>"$CASE_DIR/err"
	assert_eq "no @: exit 65" 65 "$?"
	assert_match "names the operand" 'operand 2 "nodomain": not an address' "$(cat "$CASE_DIR/err")"
	"$MXSEND" suppress add -c "$conf" --domain 'a@b.test' 2>/dev/null
	assert_eq "--domain with @: exit 65" 65 "$?"
	head -c 600 /dev/zero | tr '\0' a | "$MXSEND" suppress add -c "$conf" - 2>"$CASE_DIR/err"
	assert_eq "overlong line: exit 65" 65 "$?"
	assert_match "overlong named" 'line 1: longer than' "$(cat "$CASE_DIR/err")"
	awk 'BEGIN { for (i = 0; i <= 1000000; i++) print "u" i "@big.test" }' |
		timeout 60 "$MXSEND" suppress add -c "$conf" - 2>"$CASE_DIR/err"
	assert_eq "1,000,001 entries: exit 65" 65 "$?"
	assert_match "over the cap" 'more than 1000000 entries' "$(cat "$CASE_DIR/err")"
	assert_eq "nothing written" 0 "$(rcli "$p" HLEN mxsend:jobs:suppress)"
	"$MXSEND" suppress add -c "$conf" --code 'x' a@ok.test 2>/dev/null
	assert_eq "bad --code: exit 64" 64 "$?"
	"$MXSEND" suppress bogus -c "$conf" 2>/dev/null
	assert_eq "unknown action: exit 64" 64 "$?"
	# a large list in one go: pipelined
	awk 'BEGIN { for (i = 0; i < 20000; i++) print "u" i "@big.test" }' |
		timeout 60 "$MXSEND" suppress add -c "$conf" - >"$CASE_DIR/out" || fail "add 20000"
	assert_eq "20,000 added" "added 20000" "$(cat "$CASE_DIR/out")"
	assert_eq "HLEN" 20000 "$(rcli "$p" HLEN mxsend:jobs:suppress)"
}
run_case "mxsend suppress add/del/list/check round trip; hostile input refused before writing" t_cli

t_off() {
	start_redis -n off || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/c.conf
	mkconf "$conf" $'[suppress]\ncheck = no\nauto = none'
	"$MXSEND" suppress add -c "$conf" x1@ok.test >/dev/null || fail "add"
	enqueue "$conf" o1 x1@ok.test bad9@ok.test
	drain "$conf"
	assert_match "check = no: delivered" '^x1@ok\.test\|delivered\|' "$(res "$p" o1)"
	assert_eq "auto = none: no entry" 0 "$(rcli "$p" HEXISTS mxsend:jobs:suppress bad9@ok.test)"
}
run_case "[suppress] check = no, auto = none" t_off

t_failclosed() {
	start_redis -n failclosed || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/c.conf d1
	mkconf "$conf"
	# the list's key holds the wrong type: every lookup fails (WRONGTYPE)
	rcli "$p" SET mxsend:jobs:suppress oops >/dev/null
	d1=$(sink_stat one recipients)
	enqueue "$conf" f1 w1@ok.test
	mx_start_bg "$conf"
	wait_until 10 grep -q 'evt=suppress_check_failed' "$CASE_DIR/run.log" ||
		fail "no evt=suppress_check_failed within 10 s"
	sleep 1
	assert_eq "nothing sent while the list cannot be read" "$d1" "$(sink_stat one recipients)"
	assert_eq "no result" "" "$(res "$p" f1)"
	rcli "$p" DEL mxsend:jobs:suppress >/dev/null
	wait_until 10 bash -c "[ -n \"\$(redis-cli -p $p --raw XLEN mxsend:results | grep -v '^0$')\" ]" ||
		fail "not delivered within 10 s of the key's repair"
	kill -TERM "$MX_BG" 2>/dev/null
	wait_until 15 bash -c "! kill -0 $MX_BG 2>/dev/null" || fail "mxsend run did not stop"
	assert_match "delivered once the list reads" '^w1@ok\.test\|delivered\|250\|' "$(res "$p" f1)"
	assert_eq "one result" 1 "$(res "$p" f1 | grep -c .)"
}
run_case "the list cannot be read (WRONGTYPE): nothing sent, the job waits (fail closed), then goes" t_failclosed

t_big_job() {
	start_redis -n bigjob || return 1
	local p=$REDIS_PORT conf=$CASE_DIR/c.conf to r1 r
	mkconf "$conf"
	# 3,000 recipients in one job, every other one suppressed (1,500 in one add)
	seq -f 'b%g@ok.test' 1 2 3000 | "$MXSEND" suppress add -c "$conf" - >/dev/null || fail "add"
	to=$(seq -f 'b%g@ok.test' 1 3000 | paste -sd,)
	r1=$(sink_stat one recipients)
	rcli "$p" XADD mxsend:jobs '*' from a@src.test to "$to" data "$(cat "$MSG")" id big >/dev/null
	drain "$conf"
	r=$(res "$p" big)
	assert_eq "suppressed" 1500 "$(grep -c '|suppressed|' <<<"$r")"
	assert_eq "delivered" 1500 "$(grep -c '|delivered|' <<<"$r")"
	assert_eq "no even one suppressed" 0 "$(grep -E '^b[0-9]*[02468]@ok\.test\|suppressed' <<<"$r" | grep -c .)"
	assert_eq "sink recipients" $((r1 + 1500)) "$(sink_stat one recipients)"
}
run_case "3,000 recipients in one job, 1,500 suppressed: one lookup, the others delivered" t_big_job

integ_finish
